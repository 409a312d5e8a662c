"""What the upstream's `Cache-Control` makes the cache do (RFC 9111 as a shared cache reads it, for
answers that cannot be revalidated): `no-store` is never stored, `private` only in an entry scoped to
the caller's own credential, `s-maxage` / `max-age` (less the `Age`) cut the TTL. A directive the
family's API sends with every answer of a form (its `ANSWER_HEADERS`) says nothing about one answer
and is not read. Driven through the real openai and anthropic SDKs, by the caching transport and by
`CacheMiddleware`, against the fake provider made to send such headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.middleware import Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stores import CountingStore

QUESTION = "What is the capital of France?"
WAYS = [(sdk, layer) for layer in ("transport", "middleware") for sdk in ("openai", "anthropic")]


@contextmanager
def sdk_client(
    sdk: str, layer: str, cache: Cache, fake: RunningFakeProvider, headers: dict[str, str] | None = None
) -> Iterator[Any]:
    """The real `sdk`'s client, its calls cached by `layer`: the caching transport in its HTTP
    client, or `CacheMiddleware` around the provider's app (served by uvicorn)."""
    server = (
        BackgroundServer(CacheMiddleware(fake.provider.app, cache=cache)).start() if layer == "middleware" else None
    )
    http = httpx2.Client(transport=CachingTransport(cache=cache)) if server is None else httpx2.Client()
    root = fake.url if server is None else server.url
    try:
        if sdk == "openai":
            yield openai.OpenAI(
                api_key="sk-alice", base_url=f"{root}/v1", http_client=http, max_retries=0, default_headers=headers
            )
        else:
            yield anthropic.Anthropic(
                api_key="sk-ant-alice", base_url=root, http_client=http, max_retries=0, default_headers=headers
            )
    finally:
        http.close()
        if server is not None:
            server.stop()


def ask(client: Any, stream: bool) -> tuple[str, str]:
    """One question through the SDK: (`x-cache`, the answer's text as the SDK read it)."""
    messages = [{"role": "user", "content": QUESTION}]
    if isinstance(client, openai.OpenAI):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=stream)
        parsed = raw.parse()
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
        else:
            text = parsed.choices[0].message.content
    else:
        raw = client.messages.with_raw_response.create(
            model="claude-3-5-haiku-latest", max_tokens=64, messages=messages, stream=stream
        )
        parsed = raw.parse()
        if stream:
            text = "".join(e.delta.text for e in parsed if e.type == "content_block_delta")
        else:
            text = parsed.content[0].text
    return raw.headers["x-cache"], text


def not_stored_reasons(cache: Cache) -> set[str]:
    return {labels[0] for labels in cache.telemetry.snapshot().get("llm_cache_not_stored", {})}


def twice(
    sdk: str, layer: str, cache: Cache, fake: RunningFakeProvider, stream: bool, headers: dict[str, str] | None = None
) -> list[str]:
    """The same question asked twice (with these headers): the `x-cache` of each (each answered in full)."""
    with sdk_client(sdk, layer, cache, fake, headers) as client:
        answers = [ask(client, stream) for _ in range(2)]
    assert all(text.startswith("Answer #") and QUESTION in text for _, text in answers)
    return [outcome for outcome, _ in answers]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("value", ["no-store", "no-cache, no-store", 'public, NO-STORE="x", max-age=600'])
@pytest.mark.parametrize(("sdk", "layer"), WAYS)
def test_an_answer_the_upstream_marks_no_store_reaches_its_caller_and_is_never_stored(
    fake_provider_session: RunningFakeProvider, sdk: str, layer: str, stream: bool, value: str
) -> None:
    fake_provider_session.send_headers({"cache-control": value})
    cache = Cache()
    assert twice(sdk, layer, cache, fake_provider_session, stream) == ["MISS", "MISS"]
    assert (cache.stats.stored, cache.stats.not_stored) == (0, 2)
    assert not_stored_reasons(cache) == {"upstream-no-store"}
    assert fake_provider_session.count() == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("sdk", "layer"), WAYS)
def test_a_private_answer_is_stored_only_in_an_entry_of_the_callers_own_credential(
    fake_provider_session: RunningFakeProvider, sdk: str, layer: str, stream: bool
) -> None:
    """`private`: for a single user, which an entry scoped to the credential that got it is; an entry
    every caller shares (or a tenant's header, or a scope function's identity) may not be."""
    fake_provider_session.send_headers({"cache-control": "private, max-age=600"})
    own = Cache()
    assert twice(sdk, layer, own, fake_provider_session, stream) == ["MISS", "HIT"]
    for scope in ("shared", "header:x-tenant"):
        shared = Cache(scope=scope)
        with sdk_client(sdk, layer, shared, fake_provider_session, {"x-tenant": "acme"}) as client:
            outcomes = [ask(client, stream)[0] for _ in range(2)]
        assert outcomes == ["MISS", "MISS"]
        assert not_stored_reasons(shared) == {"upstream-private"}
    assert fake_provider_session.count() == 5


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ({"cache-control": "max-age=60"}, 60.0),
        ({"cache-control": "max-age=60, s-maxage=30"}, 30.0),
        ({"cache-control": "s-maxage=3000"}, 600.0),  # longer than the TTL: the TTL
        ({"cache-control": "max-age=120", "age": "100"}, 20.0),  # 100 of its 120 s spent upstream
        ({"cache-control": "max-age=60, max-age=30"}, 30.0),  # twice: the stricter
    ],
    ids=["max-age", "s-maxage-wins", "longer-than-ttl", "less-its-age", "repeated"],
)
@pytest.mark.parametrize(("sdk", "layer"), WAYS)
def test_an_upstream_max_age_cuts_the_ttl_an_answer_is_stored_with(
    fake_provider_session: RunningFakeProvider, sdk: str, layer: str, stream: bool, headers: dict[str, str], kept: float
) -> None:
    fake_provider_session.send_headers(headers)
    store = CountingStore()
    cache = Cache(store, ttl=600.0)
    assert twice(sdk, layer, cache, fake_provider_session, stream) == ["MISS", "HIT"]
    assert store.ttls == [kept]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    "headers",
    [
        {"cache-control": "max-age=0"},
        {"cache-control": "s-maxage=0, max-age=600"},
        {"cache-control": "max-age=60", "age": "61"},
        {"cache-control": "max-age=soon"},  # invalid freshness: stale (RFC 9111 4.2.1)
    ],
    ids=["max-age-0", "s-maxage-0", "spent-upstream", "invalid"],
)
@pytest.mark.parametrize(("sdk", "layer"), WAYS)
def test_an_answer_the_upstream_says_is_already_stale_is_never_stored(
    fake_provider_session: RunningFakeProvider, sdk: str, layer: str, stream: bool, headers: dict[str, str]
) -> None:
    fake_provider_session.send_headers(headers)
    cache = Cache()
    assert twice(sdk, layer, cache, fake_provider_session, stream) == ["MISS", "MISS"]
    assert not_stored_reasons(cache) == {"upstream-max-age"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    "value",
    ["no-cache", "no-cache, must-revalidate", "public, proxy-revalidate, no-transform", 'private="set-cookie"'],
)
@pytest.mark.parametrize(("sdk", "layer"), WAYS)
def test_directives_that_ask_for_revalidation_do_not_stop_storing(
    fake_provider_session: RunningFakeProvider, sdk: str, layer: str, stream: bool, value: str
) -> None:
    """An LLM answer cannot be revalidated (no validator; a POST sent again is a new generation), and
    Anthropic sends `no-cache` with every stream, as SSE servers commonly do: read as "never store",
    it would turn the cache off. A `private` naming header
    fields makes only those private, and a hit replays none of the upstream's other headers."""
    fake_provider_session.send_headers({"cache-control": value})
    cache = Cache(scope="shared")
    assert twice(sdk, layer, cache, fake_provider_session, stream) == ["MISS", "HIT"]


@pytest.mark.parametrize(("sdk", "layer"), WAYS)
def test_an_operator_may_have_the_upstreams_cache_control_ignored(
    fake_provider_session: RunningFakeProvider, sdk: str, layer: str
) -> None:
    """For an upstream that sends `no-store` with every answer as a framework's default (Spring
    Security's `no-cache, no-store, max-age=0, must-revalidate`), `upstream_cache_control: ignore`."""
    fake_provider_session.send_headers({"cache-control": "no-cache, no-store, max-age=0, must-revalidate, private"})
    cache = Cache(scope="shared", upstream_cache_control="ignore")
    assert twice(sdk, layer, cache, fake_provider_session, False) == ["MISS", "HIT"]


GEMINI = {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}
RERANK = {"model": "rerank-v3.5", "query": QUESTION, "documents": ["Paris is the capital.", "Lyon is a city."]}


@pytest.mark.parametrize("layer", ["transport", "middleware"])
def test_what_an_api_sends_with_every_answer_does_not_stop_storing(
    fake_provider_session: RunningFakeProvider, layer: str
) -> None:
    """Google's front end marks every Gemini JSON answer `private`; Cohere sends `no-store, private,
    max-age=0` with every rerank answer. Each is the API's constant (its module's `ANSWER_HEADERS`,
    replayed on hits), not a word about one answer: read, neither API could be cached under a shared
    scope. The same directives from an upstream that does not always send them are honoured."""
    fake = fake_provider_session
    cache = Cache(scope="shared")
    server = (
        BackgroundServer(CacheMiddleware(fake.provider.app, cache=cache)).start() if layer == "middleware" else None
    )
    transport = CachingTransport(cache=cache) if server is None else None
    calls = [
        ("/v1beta/models/gemini-2.0-flash:generateContent", GEMINI, {"x-goog-api-key": "AIza-alice"}),
        ("/v2/rerank", RERANK, {"authorization": "Bearer co-alice"}),
    ]
    try:
        with httpx2.Client(transport=transport, base_url=fake.url if server is None else server.url) as http:
            answers = [http.post(path, json=body, headers=h) for path, body, h in calls for _ in range(2)]
            fake.send_headers({"cache-control": "private"})
            chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}
            proxied = [http.post("/v1/chat/completions", json=chat, headers={"authorization": "Bearer sk-a"})]
            proxied += [http.post("/v1/chat/completions", json=chat, headers={"authorization": "Bearer sk-a"})]
    finally:
        if server is not None:
            server.stop()
    assert [a.headers["cache-control"] for a in answers] == ["private"] * 2 + [answers[2].headers["cache-control"]] * 2
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "MISS", "HIT"]
    assert [a.headers["x-cache"] for a in proxied] == ["MISS", "MISS"]


def keep_an_hour(view: Any) -> None:
    view.ttl = 3600.0


@pytest.mark.parametrize("layer", ["transport", "middleware"])
def test_an_upstream_max_age_bounds_the_ttl_a_hook_or_a_caller_asks_for_too(
    fake_provider_session: RunningFakeProvider, layer: str
) -> None:
    """The upstream's word on its own answer is the last: an `after_answer` hook's TTL and a caller's
    `x-cache-ttl` are cut to it as the operator's `ttl` is."""
    fake_provider_session.send_headers({"cache-control": "max-age=60"})
    for cache_options, headers in (({"hooks": {"after_answer": [keep_an_hour]}}, None), ({}, {"x-cache-ttl": "3600"})):
        store = CountingStore()
        cache = Cache(store, ttl=None, **cache_options)
        assert twice("openai", layer, cache, fake_provider_session, False, headers) == ["MISS", "HIT"]
        assert store.ttls == [60.0]
