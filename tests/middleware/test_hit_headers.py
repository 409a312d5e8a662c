"""A hit's headers are the provider's: the content-type and cache-control each API family sends with
each form of answer, and the id of the provider call that produced the answer it replays.

What the providers send (read from recorded responses of the real APIs, 2025-2026):

| family    | JSON answer                       | stream                                              |
| --------- | --------------------------------- | --------------------------------------------------- |
| OpenAI    | `application/json`                | `text/event-stream; charset=utf-8`                  |
| Anthropic | `application/json`                | `text/event-stream; charset=utf-8`, `cache-control: no-cache` |
| Gemini    | `application/json; charset=UTF-8` | `text/event-stream` (`alt=sse`); the JSON array form as JSON |
| Bedrock   | `application/json`                | `application/vnd.amazon.eventstream` (+ x-amzn-bedrock-content-type) |
| Cohere    | `application/json`, `cache-control: no-cache, no-store, ...`, `expires`, `pragma` | |

OpenAI names the call in `x-request-id`, Anthropic in `request-id` (`req_...`); the SDKs read them
as `_request_id`, and support teams find a call by it. Bedrock names it in `x-amzn-requestid`
(boto3's `ResponseMetadata.RequestId`), Cohere in `x-debug-trace-id`.

The differential test sends every form of every endpoint the fake provider serves twice, through
the transport, `CacheMiddleware` and the gateway: the hit's headers are the miss's but for what a
hit says of itself and what measures the call (docs/providers.md, "Headers a hit does not replay").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anthropic
import boto3
import botocore.config
import httpx2
import openai
import orjson
import pytest

from llm_cache.middleware import Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.providers import DEFAULT_ENDPOINTS
from llm_cache.middleware.providers.base import AnswerHeaders
from llm_cache.middleware.providers.openai import ChatCompletions
from tests.middleware.test_engine import completion
from tests.support.fake_provider_fixtures import RunningFakeProvider

SDK = TypeVar("SDK")
OPENAI = {"authorization": "Bearer sk-alice"}
ANTHROPIC = {"x-api-key": "sk-ant-alice", "anthropic-version": "2023-06-01"}
GEMINI = {"x-goog-api-key": "AIza-alice"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
MESSAGES = {**CHAT, "model": "claude-sonnet-4-5", "max_tokens": 64}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]}
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash"
SIGNED = {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDALICE/20261207/us-east-1/bedrock/aws4_request"}
CLAUDE = "/model/anthropic.claude-3-5-sonnet-20241022-v2:0"
INVOKE = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": CHAT["messages"]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]}
RERANK = {"model": "rerank-v3.5", "query": "capital of France", "documents": ["Paris is in France", "Lyon"]}

FORMS: dict[str, tuple[str, dict[str, Any], dict[str, str], tuple[str, str | None]]] = {
    # name: (path and query, body, headers, (content-type, cache-control) the provider sends)
    "openai-json": ("/v1/chat/completions", CHAT, OPENAI, ("application/json", None)),
    "openai-stream": (
        "/v1/chat/completions",
        {**CHAT, "stream": True},
        OPENAI,
        ("text/event-stream; charset=utf-8", None),
    ),
    "anthropic-json": ("/v1/messages", MESSAGES, ANTHROPIC, ("application/json", None)),
    "anthropic-stream": (
        "/v1/messages",
        {**MESSAGES, "stream": True},
        ANTHROPIC,
        ("text/event-stream; charset=utf-8", "no-cache"),
    ),
    "gemini-json": (
        f"{GEMINI_PATH}:generateContent",
        CONTENTS,
        GEMINI,
        ("application/json; charset=UTF-8", "private"),
    ),
    "gemini-sse": (f"{GEMINI_PATH}:streamGenerateContent?alt=sse", CONTENTS, GEMINI, ("text/event-stream", None)),
    "gemini-array": (
        f"{GEMINI_PATH}:streamGenerateContent",
        CONTENTS,
        GEMINI,
        ("application/json; charset=UTF-8", "private"),
    ),
}


@pytest.fixture(params=["transport", "gateway"])
def post(
    request: pytest.FixtureRequest, fake_provider: RunningFakeProvider
) -> Iterator[Callable[..., httpx2.Response]]:
    """Posts through the caching transport straight to the fake provider, or through a gateway
    (a uvicorn server) in front of it."""
    if request.param == "transport":
        with httpx2.Client(transport=CachingTransport(cache=Cache()), base_url=fake_provider.url) as client:
            yield client.post
        return
    config = {
        "cache": {"store": {"type": "memory"}},
        "upstreams": {
            "openai": {"base_url": fake_provider.openai_base_url},
            "anthropic": {"base_url": fake_provider.anthropic_base_url},
            "gemini": {"base_url": fake_provider.url},
        },
    }
    server = BackgroundServer(create_gateway(parse_config(config))).start()
    try:
        with httpx2.Client(base_url=server.url, timeout=10) as client:
            yield client.post
    finally:
        server.stop()


@pytest.mark.parametrize(("path", "body", "headers", "sends"), FORMS.values(), ids=FORMS.keys())
def test_a_hit_has_the_content_type_and_cache_control_the_provider_sends(
    post: Callable[..., httpx2.Response],
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    sends: tuple[str, str | None],
) -> None:
    miss, hit = (post(path, content=orjson.dumps(body), headers=headers) for _ in range(2))
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert (hit.headers["content-type"], hit.headers.get("cache-control")) == sends


def through_a_cache(sdk: Callable[..., SDK], api_key: str, base_url: str) -> SDK:
    """An SDK client whose HTTP client goes through a caching transport of its own."""
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    return sdk(api_key=api_key, base_url=base_url, http_client=http_client, max_retries=0)


def test_a_hit_carries_the_request_id_of_the_openai_call_that_produced_its_answer(
    fake_provider: RunningFakeProvider,
) -> None:
    client = through_a_cache(openai.OpenAI, "sk-alice", fake_provider.openai_base_url)

    def ask(content: str, stream: bool = False) -> tuple[str, str | None]:
        said = [{"role": "user", "content": content}]
        if not stream:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=said)
            return raw.headers["x-cache"], raw.parse()._request_id
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=said, stream=True)
        for _ in raw.parse():  # read to its end: the answer is stored
            pass
        return raw.headers["x-cache"], raw.headers.get("x-request-id")

    miss, hit = ask("Hi"), ask("Hi")
    streamed, streamed_again, as_json = ask("Bye", stream=True), ask("Bye", stream=True), ask("Bye")
    assert miss[1] and streamed[1] and miss[1] != streamed[1]
    assert (miss[0], hit) == ("MISS", ("HIT", miss[1]))
    assert (streamed[0], streamed_again, as_json) == ("MISS", ("HIT", streamed[1]), ("HIT", streamed[1]))


def test_a_hit_carries_the_request_id_of_the_anthropic_call_that_produced_its_answer(
    fake_provider: RunningFakeProvider,
) -> None:
    client = through_a_cache(anthropic.Anthropic, "sk-ant-alice", fake_provider.anthropic_base_url)
    said = [{"role": "user", "content": "Plan a trip to Lyon"}]

    def ask(stream: bool = False) -> tuple[str, str | None]:
        if not stream:
            raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64, messages=said)
            return raw.headers["x-cache"], raw.parse()._request_id
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=said) as events:
            events.get_final_message()
            return events.response.headers["x-cache"], events.request_id

    streamed = ask(stream=True)
    assert streamed[0] == "MISS" and streamed[1] and streamed[1].startswith("req_")
    assert [ask(stream=True), ask()] == [("HIT", streamed[1])] * 2


def test_a_bedrock_hit_carries_the_request_id_boto3_reads_of_the_call_that_produced_its_answer(
    fake_provider: RunningFakeProvider,
) -> None:
    """boto3 (which does not send through HTTPX) against `CacheMiddleware` in front of the provider:
    `ResponseMetadata.RequestId` of a hit is the miss's, for each of the four actions."""
    server = BackgroundServer(CacheMiddleware(fake_provider.provider.app, cache=Cache())).start()
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDALICE",
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )
    model = CLAUDE.removeprefix("/model/")

    def invoke(action: str) -> tuple[str, str]:
        if action == "invoke":
            answer = client.invoke_model(modelId=model, body=orjson.dumps(INVOKE))
            answer["body"].read()
        elif action == "invoke-stream":
            answer = client.invoke_model_with_response_stream(modelId=model, body=orjson.dumps(INVOKE))
            list(answer["body"])  # read to its end: the answer is stored
        elif action == "converse":
            answer = client.converse(modelId=model, **CONVERSE)
        else:
            answer = client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": "Bye"}]}])
            list(answer["stream"])
        metadata = answer["ResponseMetadata"]
        return metadata["HTTPHeaders"]["x-cache"], metadata["RequestId"]

    try:
        calls = {
            action: (invoke(action), invoke(action)) for action in ("invoke", "invoke-stream", "converse", "stream")
        }
    finally:
        server.stop()
    ids = {miss[1] for miss, _ in calls.values()}
    assert len(ids) == 4 and all(ids)  # four calls, each its own id
    assert all((miss[0], hit) == ("MISS", ("HIT", miss[1])) for miss, hit in calls.values())


@pytest.mark.parametrize(
    "request_id",
    [b"x" * 10_000, b"req_1\r\nset-cookie: session=stolen", b"req 1", b"req_\xe9", b"", b"req_1, req_2"],
    ids=["10-kb", "cr-lf", "space", "non-ascii", "empty", "two-values"],
)
def test_a_request_id_that_is_not_a_short_header_token_is_never_stored(request_id: bytes) -> None:
    """The upstream's id is replayed to every caller served its answer: only a header token of at
    most 128 characters is stored with it."""

    def upstream(request: httpx2.Request) -> httpx2.Response:
        headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id)]
        return httpx2.Response(200, headers=headers, content=orjson.dumps(completion(1)))

    transport = CachingTransport(cache=Cache(), inner=httpx2.MockTransport(upstream))
    with httpx2.Client(transport=transport, base_url="http://llm.test") as client:
        miss, hit = (client.post("/v1/chat/completions", json=CHAT, headers=OPENAI) for _ in range(2))
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert "x-request-id" not in hit.headers


def test_a_router_header_an_upstream_makes_long_is_never_stored() -> None:
    """The router's `x-router-*` headers are replayed on hits; an upstream that is no router (or a hostile
    one) may send them too: a value past 256 characters is not stored, one within is."""

    def upstream(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "application/json", "x-router-model": "m" * 10_000, "x-router-group": "g" * 256}
        return httpx2.Response(200, headers=headers, content=orjson.dumps(completion(1)))

    transport = CachingTransport(cache=Cache(), inner=httpx2.MockTransport(upstream))
    with httpx2.Client(transport=transport, base_url="http://llm.test") as client:
        hit = [client.post("/v1/chat/completions", json=CHAT, headers=OPENAI) for _ in range(2)][-1]
    assert hit.headers["x-cache"] == "HIT" and "x-router-model" not in hit.headers
    assert hit.headers["x-router-group"] == "g" * 256


def test_a_request_id_that_is_a_header_token_is_stored_as_sent() -> None:
    def upstream(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "application/json", "x-request-id": "req_7f3a-9c.0~Z"}
        return httpx2.Response(200, headers=headers, content=orjson.dumps(completion(1)))

    transport = CachingTransport(cache=Cache(), inner=httpx2.MockTransport(upstream))
    with httpx2.Client(transport=transport, base_url="http://llm.test") as client:
        hit = [client.post("/v1/chat/completions", json=CHAT, headers=OPENAI) for _ in range(2)][-1]
    assert (hit.headers["x-cache"], hit.headers["x-request-id"]) == ("HIT", "req_7f3a-9c.0~Z")


def test_bedrock_s_token_counts_are_kept_under_the_request_id_s_rule_and_its_latency_never() -> None:
    """InvokeModel's token-count headers describe the answer (the body's usage): kept when they are
    short header tokens, as a request id is; the invocation latency measures the call: never kept."""

    def upstream(request: httpx2.Request) -> httpx2.Response:
        headers = [
            (b"content-type", b"application/json"),
            (b"x-amzn-requestid", b"0b6c8e5e-2d1c-4f0e-9a57-1c3f4d5e6f70"),
            (b"x-amzn-bedrock-input-token-count", b"12"),
            (b"x-amzn-bedrock-output-token-count", b"6\r\nset-cookie: session=stolen"),
            (b"x-amzn-bedrock-invocation-latency", b"425"),
        ]
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": []}
        message |= {"stop_reason": "end_turn", "usage": {"input_tokens": 12, "output_tokens": 6}}
        return httpx2.Response(200, headers=headers, content=orjson.dumps(message))

    transport = CachingTransport(cache=Cache(), inner=httpx2.MockTransport(upstream))
    with httpx2.Client(transport=transport, base_url="http://bedrock.test") as client:
        hit = [client.post(f"{CLAUDE}/invoke", json=INVOKE, headers=SIGNED) for _ in range(2)][-1]
    kept = {name: value for name, value in hit.headers.items() if name.startswith("x-amzn")}
    assert (hit.headers["x-cache"], kept) == (
        "HIT",
        {"x-amzn-requestid": "0b6c8e5e-2d1c-4f0e-9a57-1c3f4d5e6f70", "x-amzn-bedrock-input-token-count": "12"},
    )


# -- differential: a hit's headers are the miss's, but for a named few -------------------------------

EVERY_FORM: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    # name: (path and query, body, headers): each endpoint the fake provider serves, in each form
    "chat": ("/v1/chat/completions", CHAT, OPENAI),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}, OPENAI),
    "responses": ("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi"}, OPENAI),
    "responses-stream": ("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi", "stream": True}, OPENAI),
    "completions": ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}, OPENAI),
    "embeddings": ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "Hi"}, OPENAI),
    "embeddings-list": ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["Hi", "Bye"]}, OPENAI),
    "batch-embed-contents": (f"{GEMINI_PATH}:batchEmbedContents", {"requests": [CONTENTS]}, GEMINI),
    "messages": ("/v1/messages", MESSAGES, ANTHROPIC),
    "messages-stream": ("/v1/messages", {**MESSAGES, "stream": True}, ANTHROPIC),
    "generate-content": (f"{GEMINI_PATH}:generateContent", CONTENTS, GEMINI),
    "stream-generate-content-sse": (f"{GEMINI_PATH}:streamGenerateContent?alt=sse", CONTENTS, GEMINI),
    "stream-generate-content-array": (f"{GEMINI_PATH}:streamGenerateContent", CONTENTS, GEMINI),
    "bedrock-invoke": (f"{CLAUDE}/invoke", INVOKE, SIGNED),
    "bedrock-invoke-stream": (f"{CLAUDE}/invoke-with-response-stream", INVOKE, SIGNED),
    "bedrock-converse": (f"{CLAUDE}/converse", CONVERSE, SIGNED),
    "bedrock-converse-stream": (f"{CLAUDE}/converse-stream", CONVERSE, SIGNED),
    "rerank": ("/v1/rerank", RERANK, OPENAI),
}
HITS_OWN = frozenset({"date", "server", "age", "content-length", "transfer-encoding"})
"""What a hit says of itself: when and by whom it was answered (`date`, `server`: the gateway's, or
none from a transport), how old it is, that it is a hit (`x-cache`, `x-cache-key`, a list's
`x-cache-items-hit` ...: every `x-cache*`), and its own framing."""
CALL_MEASURES = frozenset(
    {
        "openai-processing-ms",
        "x-envoy-upstream-service-time",
        "server-timing",
        "x-amzn-bedrock-invocation-latency",
    }
)
CALL_MEASURE_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "x-trial-endpoint-call-", "x-endpoint-monthly-call-")
"""What measures the call that produced the answer (its time, the caller's rate limits left after
it): a hit is no call, and sends none (docs/providers.md, "Headers a hit does not replay")."""


def a_hit_s_own(name: str) -> bool:
    return name in HITS_OWN or name.startswith("x-cache")


ACCOUNT_HEADERS = frozenset({"openai-organization", "openai-project", "openai-version", "anthropic-organization-id"})
"""Who was billed for the call (and OpenAI's API version, which compatible servers do not send): not
the answer's, so not replayed; in a store shared by scope they would name another tenant's account."""


def measures_a_call(name: str) -> bool:
    return name in CALL_MEASURES or name.startswith(CALL_MEASURE_PREFIXES)


def names_the_account(name: str) -> bool:
    return name in ACCOUNT_HEADERS


LAYERS = [
    pytest.param(layer, *form, id=f"{layer}-{name}")
    for layer in ("transport", "middleware", "gateway")
    for name, form in EVERY_FORM.items()
    if layer != "gateway" or not name.startswith("bedrock")  # the gateway proxies no Bedrock path
]


def serve_through(layer: str, fake: RunningFakeProvider) -> BackgroundServer | None:
    """A uvicorn server in front of the fake provider: `CacheMiddleware` around its app, or a gateway
    whose upstreams it is (None: the caching transport talks to it directly)."""
    if layer == "middleware":
        return BackgroundServer(CacheMiddleware(fake.provider.app, cache=Cache())).start()
    if layer == "gateway":
        upstreams = {"openai": fake.openai_base_url, "anthropic": fake.anthropic_base_url, "gemini": fake.url}
        config = {
            "cache": {"store": {"type": "memory"}},
            "upstreams": {family: {"base_url": url} for family, url in upstreams.items()},
        }
        return BackgroundServer(create_gateway(parse_config(config))).start()
    return None


@pytest.mark.parametrize(("layer", "path", "body", "headers"), LAYERS)
def test_a_hit_sends_the_headers_of_the_miss_but_its_own_the_call_s_measures_and_the_account_s(
    layer: str, fake_provider: RunningFakeProvider, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    server = serve_through(layer, fake_provider)
    transport = CachingTransport(cache=Cache()) if server is None else None
    base_url = fake_provider.url if server is None else server.url
    try:
        with httpx2.Client(transport=transport, base_url=base_url, timeout=10) as client:
            miss, hit = (client.post(path, content=orjson.dumps(body), headers=headers) for _ in range(2))
    finally:
        if server is not None:
            server.stop()

    assert (miss.status_code, miss.headers["x-cache"], hit.headers["x-cache"]) == (200, "MISS", "HIT")
    said, replayed = (
        sorted((name, value) for name, value in response.headers.multi_items() if not a_hit_s_own(name))
        for response in (miss, hit)
    )
    assert any(measures_a_call(name) for name, _ in said)  # the provider measured its call...
    assert replayed == [  # ...the hit did not, nor does it name the account billed for it
        (name, value) for name, value in said if not measures_a_call(name) and not names_the_account(name)
    ]


HOSTILE_HEADERS = {
    "set-cookie": "session=for-the-first-caller; Path=/",
    "content-location": "https://elsewhere.example/answer",
    "www-authenticate": 'Bearer realm="elsewhere"',
    "content-disposition": "attachment; filename=answer.html",
    "vary": "authorization",
    "access-control-allow-origin": "https://attacker.example",
    "access-control-allow-credentials": "true",
    "refresh": "0; url=https://elsewhere.example/",
    "link": "<https://elsewhere.example/>; rel=preload",
    "x-request-id": "req_1 with spaces",
}


@pytest.mark.parametrize("layer", ["transport", "middleware", "gateway"])
def test_an_upstreams_other_headers_reach_its_caller_and_are_never_replayed(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    """A hit is made of the entry (status, body, the family's content-type, the call's id), never of the
    upstream's other headers: a cookie, a challenge, CORS grants or a `Vary` one upstream
    answer carried go to the caller it answered, never to the next caller of its key. A 203 (a proxy's
    rewrite) is relayed and not stored."""
    server = serve_through(layer, fake_provider)
    transport = CachingTransport(cache=Cache()) if server is None else None
    base_url = fake_provider.url if server is None else server.url
    try:
        with httpx2.Client(transport=transport, base_url=base_url, timeout=10) as client:
            fake_provider.fail_next(1, status=200, body=completion(1), headers=HOSTILE_HEADERS)
            miss, hit = (client.post("/v1/chat/completions", json=CHAT, headers=OPENAI) for _ in range(2))
            fake_provider.fail_next(2, status=203, body=completion(2))
            rewritten = [client.post("/v1/chat/completions", json={**CHAT, "n": 1}, headers=OPENAI) for _ in range(2)]
    finally:
        if server is not None:
            server.stop()
    assert (miss.headers["x-cache"], hit.headers["x-cache"], hit.json()) == ("MISS", "HIT", miss.json())
    assert all(miss.headers.get(name) == value for name, value in HOSTILE_HEADERS.items())
    assert not set(HOSTILE_HEADERS) & set(hit.headers)
    assert [(r.status_code, r.headers["x-cache"]) for r in rewritten] == [(203, "MISS"), (203, "MISS")]


def test_a_list_served_item_by_item_names_a_call_only_when_one_call_answered_every_item(
    fake_provider: RunningFakeProvider,
) -> None:
    def embed(given: str | list[str]) -> httpx2.Response:
        return client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": given}, headers=OPENAI)

    with httpx2.Client(transport=CachingTransport(cache=Cache()), base_url=fake_provider.url) as client:
        lone, listed = embed("Hi"), embed(["Hi", "Bye"])  # "Bye" from a second call
        both, bye = embed(["Hi", "Bye"]), embed(["Bye"])
    assert (lone.headers["x-cache"], listed.headers["x-cache-items-hit"]) == ("MISS", "1")
    assert both.headers["x-cache"] == "HIT" and "x-request-id" not in both.headers  # two calls: neither named
    assert (bye.headers["x-cache"], bye.headers["x-request-id"]) == ("HIT", listed.headers["x-request-id"])


class OwnChat(ChatCompletions):
    """Chat completions as an operator's own adapter might be: it lists none of its family's headers."""

    answer_headers = AnswerHeaders({})


def test_an_adapter_that_lists_no_headers_still_sends_the_media_type_of_each_hit() -> None:
    """Without a table of what its provider sends (`AnswerHeaders({})`, the default), a hit still
    says what it is: `application/json`, or the stream's media type."""

    def upstream(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=orjson.dumps(completion(1)))

    cache = Cache(endpoints=(OwnChat(), *DEFAULT_ENDPOINTS))
    transport = CachingTransport(cache=cache, inner=httpx2.MockTransport(upstream))
    with httpx2.Client(transport=transport, base_url="http://llm.test") as client:
        miss, hit = (client.post("/v1/chat/completions", json=CHAT, headers=OPENAI) for _ in range(2))
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=OPENAI)
    assert [r.headers["x-cache"] for r in (miss, hit, streamed)] == ["MISS", "HIT", "HIT"]
    assert (hit.headers["content-type"], streamed.headers["content-type"]) == ("application/json", "text/event-stream")
