"""Isolation: who may see an entry.

The rules first (the transport and the middleware in front of an in-memory upstream), then the
suite: a hundred tenants asking identical and paraphrased questions through the exact and the
semantic path, through the real openai SDK over the caching transport, through an ASGI app behind
`CacheMiddleware` and through the gateway, against the fake provider. The fake provider gives
every answer a fresh id, so an answer served to one tenant that was produced for another shows.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx2
import numpy as np
import openai
import pytest
from fastapi import FastAPI, Request, Response

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware, CachingTransport, ScopeRequest
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import ConfigError, parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.semantic import InProcessIndex, SemanticCache, SentenceTransformerEmbedder
from llm_cache.middleware.stores import MemoryStore
from tests.middleware.test_engine import completion
from tests.support.fake_provider_fixtures import RunningFakeProvider

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2+2?"}]}
AZURE = "/openai/deployments/prod/chat/completions"
MESSAGES = "/v1/messages"
GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"
UPSTREAM = r"(?:u[0-9a-f]{32}\.)?"
"""The upstream's hash, which the transports put in front of the digest."""
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}]}


def answer(path: str, n: int) -> dict[str, Any]:
    """A success of the endpoint's own shape (only those are stored), with a fresh id."""
    if path.endswith("/messages"):
        content = [{"type": "text", "text": "4"}]
        usage = {"input_tokens": 9, "output_tokens": 1}
        return {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": "c", "content": content,
                "stop_reason": "end_turn", "usage": usage}  # fmt: skip
    if ":generateContent" in path:
        candidate = {"content": {"role": "model", "parts": [{"text": "4"}]}, "finishReason": "STOP", "index": 0}
        return {"responseId": f"r-{n}", "candidates": [candidate], "usageMetadata": {"promptTokenCount": 9}}
    return completion(n)


class Upstream:
    """Stands in for the provider: counts calls, answers every one with a fresh id."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.calls += 1
        return httpx2.Response(200, json=answer(request.url.path, self.calls))

    def answer_sync(self, request: Any) -> Any:
        """The same for a blocking client, in the type of the library that sent `request`."""
        request.read()
        self.calls += 1
        lib = httpx if isinstance(request, httpx.Request) else httpx2
        return lib.Response(200, json=answer(request.url.path, self.calls))


def sync_sent_twice(lib: Any, cache: Cache, upstream: Upstream, url: str, body: Any, headers: Any) -> list[Any]:
    """Two identical requests through the sync transport in a `lib` client."""
    transport = CachingTransport(cache=cache, inner=lib.MockTransport(upstream.answer_sync))
    with lib.Client(transport=transport, base_url="http://llm.test") as http:
        return [http.post(url, json=body, headers=headers) for _ in range(2)]


def transport_client(cache: Cache, upstream: Upstream) -> httpx2.AsyncClient:
    inner = httpx2.MockTransport(upstream)
    return httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=inner), base_url="http://llm.test")


def provider_app(upstream: Upstream) -> Any:
    """An ASGI app that answers like the provider (through `upstream`)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        url = "http://app.test" + scope["path"]
        response = await upstream(httpx2.Request("POST", url, content=body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": response.content})

    return app


def middleware_client(cache: Cache, upstream: Upstream) -> httpx2.AsyncClient:
    asgi = httpx2.ASGITransport(app=CacheMiddleware(provider_app(upstream), cache=cache))
    return httpx2.AsyncClient(transport=asgi, base_url="http://llm.test")


SYNC_LAYERS = {"sync-httpx2": httpx2, "sync-httpx": httpx}
"""The sync transport, in a client of each library."""


@pytest.fixture(params=["transport", *SYNC_LAYERS, "middleware"])
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def send_twice(
    layer: str, cache: Cache, headers: Any, path: str = CHAT, body: Any = BODY, query: str = ""
) -> tuple[list[Any], Upstream]:
    """Two identical requests: the answers, and the upstream that saw them."""
    upstream = Upstream()
    url = path + (f"?{query}" if query else "")
    if layer in SYNC_LAYERS:
        return sync_sent_twice(SYNC_LAYERS[layer], cache, upstream, url, body, headers), upstream
    make = transport_client if layer == "transport" else middleware_client
    async with make(cache, upstream) as http:
        answers = [await http.post(url, json=body, headers=headers) for _ in range(2)]
    return answers, upstream


async def twice(
    layer: str, cache: Cache, headers: Any, path: str = CHAT, body: Any = BODY, query: str = ""
) -> tuple[list[str], Upstream]:
    """Two identical requests: their `x-cache` answers, and the upstream that saw them."""
    answers, upstream = await send_twice(layer, cache, headers, path, body, query)
    return [a.headers.get("x-cache", "") for a in answers], upstream


# -- 1. no identity, no sharing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "path", "body", "query"),
    [
        ({}, CHAT, BODY, ""),
        ({"authorization": ""}, CHAT, BODY, ""),
        ({"authorization": "Bearer "}, CHAT, BODY, ""),
        ({"x-api-key": "sk-not-what-openai-reads"}, CHAT, BODY, ""),
        ({}, MESSAGES, {"model": "claude", "max_tokens": 8, "messages": BODY["messages"]}, ""),
        ({"x-goog-api-key": ""}, GEMINI, GEMINI_BODY, "key="),
        ({}, AZURE, BODY, "api-version=2024-10-21"),
    ],
    ids=["none", "empty", "empty-bearer", "another-familys-header", "anthropic", "gemini-empty", "azure"],
)
async def test_a_request_without_a_credential_is_never_stored_nor_served(
    layer: str, headers: dict[str, str], path: str, body: dict[str, Any], query: str
) -> None:
    store = MemoryStore()
    cache = Cache(store=store)
    results, upstream = await twice(layer, cache, headers, path, body, query)
    assert results == ["BYPASS", "BYPASS"]
    assert upstream.calls == 2
    assert (cache.stats.bypasses, cache.stats.stored, cache.stats.hits) == (2, 0, 0)
    assert len(store) == 0


async def test_an_anonymous_request_is_not_served_an_entry_a_tenant_stored(layer: str) -> None:
    cache = Cache()
    results, _ = await twice(layer, cache, {"authorization": "Bearer sk-alice"})
    assert results == ["MISS", "HIT"]
    anonymous, upstream = await twice(layer, cache, {})
    assert anonymous == ["BYPASS", "BYPASS"] and upstream.calls == 2


@pytest.mark.parametrize("settings", [{"scope": "shared"}, {"anonymous": "shared"}])
async def test_anonymous_requests_share_entries_only_when_the_operator_opts_in(
    layer: str, settings: dict[str, str]
) -> None:
    results, upstream = await twice(layer, Cache(**settings), {})
    assert results == ["MISS", "HIT"] and upstream.calls == 1


def test_the_anonymous_setting_can_be_set_from_a_config_file() -> None:
    from llm_cache.middleware.config import build_cache

    config = parse_config({"cache": {"store": {"type": "memory"}, "anonymous": "shared"}})
    assert build_cache(config).settings.anonymous == "shared"
    with pytest.raises(ConfigError, match="anonymous"):
        parse_config({"cache": {"anonymous": "sometimes"}})


async def test_a_header_scope_without_its_header_bypasses(layer: str) -> None:
    cache = Cache(scope="header:X-Tenant")  # header names are case-insensitive
    assert (await twice(layer, cache, {"authorization": "Bearer sk-alice"}))[0] == ["BYPASS", "BYPASS"]
    assert (await twice(layer, cache, {"x-tenant": ""}))[0] == ["BYPASS", "BYPASS"]
    assert (await twice(layer, cache, {"x-tenant": "acme"}))[0] == ["MISS", "HIT"]


async def test_the_bypass_reason_is_logged(layer: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="llm_cache.middleware"):
        await twice(layer, Cache(), {})
    assert any("no credential (authorization)" in record.getMessage() for record in caplog.records)


# -- 2. the scope is the credential the provider authenticates -------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "alice", "bob"),
    [
        (CHAT, BODY, {"authorization": "Bearer sk-alice"}, {"authorization": "Bearer sk-bob"}),
        (
            MESSAGES,
            {"model": "c", "max_tokens": 8, "messages": BODY["messages"]},
            {"x-api-key": "a"},
            {"x-api-key": "b"},
        ),
        (
            MESSAGES,
            {"model": "c", "max_tokens": 8, "messages": BODY["messages"]},
            {"x-api-key": "a"},
            {"authorization": "Bearer b"},
        ),
        (AZURE, BODY, {"api-key": "a"}, {"api-key": "b"}),
        (AZURE, BODY, {"api-key": "a"}, {"authorization": "Bearer entra-b"}),
        (GEMINI, GEMINI_BODY, {"x-goog-api-key": "a"}, {"x-goog-api-key": "b"}),
    ],
    ids=["openai", "anthropic", "anthropic-oauth", "azure", "azure-entra", "gemini"],
)
async def test_each_family_is_scoped_by_the_credential_it_authenticates(
    layer: str, path: str, body: dict[str, Any], alice: dict[str, str], bob: dict[str, str]
) -> None:
    cache = Cache()
    assert (await twice(layer, cache, alice, path, body))[0] == ["MISS", "HIT"]
    assert (await twice(layer, cache, bob, path, body))[0] == ["MISS", "HIT"]


async def test_gemini_key_query_parameter_and_header_name_one_tenant(layer: str) -> None:
    cache = Cache()
    assert (await twice(layer, cache, {}, GEMINI, GEMINI_BODY, "key=a"))[0] == ["MISS", "HIT"]
    both = await twice(layer, cache, {"x-goog-api-key": "a"}, GEMINI, GEMINI_BODY, "key=a")
    assert both[0] == ["HIT", "HIT"]  # the same credential twice is one tenant


async def test_an_oauth_token_in_the_query_names_a_tenant_and_is_never_keyed_in_clear(layer: str) -> None:
    """Google's `access_token` system parameter is the token `Authorization: Bearer` carries: before, it was
    no credential (a request with only it was never cached) and was keyed in clear as any query parameter."""
    cache = Cache()
    assert (await twice(layer, cache, {}, GEMINI, GEMINI_BODY, "access_token=ya29.alice"))[0] == ["MISS", "HIT"]
    assert (await twice(layer, cache, {}, GEMINI, GEMINI_BODY, "access_token=ya29.bob"))[0] == ["MISS", "HIT"]
    header = {"authorization": "Bearer ya29.alice"}
    assert (await twice(layer, cache, header, GEMINI, GEMINI_BODY))[0] == ["HIT", "HIT"]  # one tenant, one key


async def test_a_header_the_family_does_not_authenticate_does_not_split_or_join_tenants(layer: str) -> None:
    cache = Cache()
    assert (await twice(layer, cache, {"authorization": "Bearer sk-alice", "x-api-key": "x"}))[0] == ["MISS", "HIT"]
    assert (await twice(layer, cache, {"authorization": "Bearer sk-alice", "x-api-key": "y"}))[0] == ["HIT", "HIT"]
    assert (await twice(layer, cache, {"authorization": "Bearer sk-bob", "x-api-key": "x"}))[0] == ["MISS", "HIT"]


@pytest.mark.parametrize(
    ("headers", "path", "body", "query"),
    [
        ([("authorization", "Bearer sk-alice"), ("authorization", "Bearer sk-bob")], CHAT, BODY, ""),
        ([("authorization", "Bearer sk-alice"), ("Authorization", "Bearer sk-alice")], CHAT, BODY, ""),
        ([("x-goog-api-key", "a")], GEMINI, GEMINI_BODY, "key=b"),
        ([], GEMINI, GEMINI_BODY, "key=a&key=b"),
        ([("x-goog-api-key", "a")], GEMINI, GEMINI_BODY, "%6Bey=b"),
        ([], GEMINI, GEMINI_BODY, "key=a&k%65y=b"),
        ([("api-key", "a"), ("authorization", "Bearer entra-token")], AZURE, BODY, ""),
        ([("x-api-key", "a"), ("authorization", "Bearer b")], MESSAGES, {"model": "c", "messages": []}, ""),
        ([("x-api-key", "a"), ("x-api-key", "b")], MESSAGES, {"model": "c", "messages": []}, ""),
    ],
    ids=[
        "authorization-twice",
        "authorization-twice-same",
        "gemini-header-vs-query",
        "gemini-query-twice",
        "gemini-header-vs-escaped-query-name",
        "gemini-query-and-escaped-query-name",
        "azure-key-and-entra",
        "anthropic-key-and-bearer",
        "x-api-key-twice",
    ],
)
async def test_repeated_or_disagreeing_credentials_bypass(
    layer: str, headers: list[tuple[str, str]], path: str, body: dict[str, Any], query: str
) -> None:
    cache = Cache()
    results, upstream = await twice(layer, cache, headers, path, body, query)
    assert results == ["BYPASS", "BYPASS"] and upstream.calls == 2
    assert cache.stats.stored == 0


# -- scope functions ----------------------------------------------------------------------------------


def by_user_header(request: ScopeRequest) -> str | None:
    return request.headers.get("x-user") or None


async def test_a_scope_function_names_the_tenant_and_none_means_anonymous(layer: str) -> None:
    cache = Cache(scope=by_user_header)
    alice, _ = await send_twice(layer, cache, {"x-user": "alice"})
    assert [a.headers["x-cache"] for a in alice] == ["MISS", "HIT"]
    assert re.fullmatch(rf"default:u[0-9a-f]{{32}}:{UPSTREAM}[0-9a-f]{{64}}", alice[1].headers["x-cache-key"])  # hashed
    assert (await twice(layer, cache, {"x-user": "bob"}))[0] == ["MISS", "HIT"]
    assert (await twice(layer, cache, {"authorization": "Bearer sk-alice"}))[0] == ["BYPASS", "BYPASS"]


def scope_that_fails(request: ScopeRequest) -> str | None:
    raise RuntimeError("the session store is down")


def scope_that_answers_a_number(request: ScopeRequest) -> Any:
    return 42


@pytest.mark.parametrize("function", [scope_that_fails, scope_that_answers_a_number])
async def test_a_scope_function_that_fails_makes_the_request_bypass(
    layer: str, function: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(scope=function)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        results, upstream = await twice(layer, cache, {"authorization": "Bearer sk-alice"})
    assert results == ["BYPASS", "BYPASS"] and upstream.calls == 2
    assert cache.stats.bypasses == 2
    assert any("scope function" in record.getMessage() for record in caplog.records)


async def test_the_middleware_hands_the_asgi_scope_to_the_scope_function() -> None:
    def by_state(request: ScopeRequest) -> str | None:
        assert request.asgi_scope is not None
        return request.asgi_scope["state"].get("tenant")

    cached = CacheMiddleware(provider_app(Upstream()), cache=Cache(scope=by_state))

    async def sessions(scope: Any, receive: Any, send: Any) -> None:  # what a session middleware does
        tenant = dict(scope["headers"]).get(b"x-session")
        await cached({**scope, "state": {"tenant": tenant.decode() if tenant else None}}, receive, send)

    sent = [{"x-session": "s1"}, {"x-session": "s1"}, {"x-session": "s2"}, {}]
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sessions), base_url="http://app") as http:
        results = [(await http.post(CHAT, json=BODY, headers=headers)).headers["x-cache"] for headers in sent]
    assert results == ["MISS", "HIT", "MISS", "BYPASS"]


def test_a_scope_function_can_be_named_by_dotted_path_in_a_config_file() -> None:
    from llm_cache.middleware.config import build_cache

    config = parse_config(
        {"cache": {"store": {"type": "memory"}, "scope": "tests.middleware.test_isolation:by_user_header"}}
    )
    assert build_cache(config).settings.scope is by_user_header
    with pytest.raises(ConfigError, match="scope"):
        parse_config({"cache": {"scope": "tests.middleware.test_isolation:no_such_function"}})


# -- the upstream is the driver's to name -------------------------------------------------------------


async def test_a_caller_naming_an_upstream_in_a_header_is_served_and_keyed_as_without_it(layer: str) -> None:
    """A driver names the upstream to the engine from what it trusts (the URL a transport sends to,
    the `upstream` a `CacheMiddleware` was given, the gateway's routing in the ASGI scope); a caller's
    `x-llm-cache-upstream` is just another header: it cannot file an answer under another upstream's
    key, nor reach one filed there. (The gateway's row: `test_gateway_security.py`.)"""
    cache = Cache()
    headers = {"authorization": "Bearer sk-alice"}
    plain, _ = await send_twice(layer, cache, headers)
    forged, upstream = await send_twice(
        layer, cache, {**headers, "x-llm-cache-upstream": "http://elsewhere.test/v1/chat/completions"}
    )
    assert [answer.headers["x-cache"] for answer in plain] == ["MISS", "HIT"]
    assert [answer.headers["x-cache"] for answer in forged] == ["HIT", "HIT"] and upstream.calls == 0
    assert {answer.headers["x-cache-key"] for answer in plain + forged} == {plain[0].headers["x-cache-key"]}


# -- 3. key builders cannot break isolation or the request -------------------------------------------


def constant_key(request: Any, default: Any) -> str:
    return "everyone-the-same"


def credential_in_key(request: Any, default: Any) -> str:
    return f"{request.headers.get('authorization')}-{default(request)}"


async def test_a_key_builder_chooses_what_is_compared_never_who_may_read_it(layer: str) -> None:
    cache = Cache(key_builder=constant_key)
    assert (await twice(layer, cache, {"authorization": "Bearer sk-alice"}))[0] == ["MISS", "HIT"]
    assert (await twice(layer, cache, {"authorization": "Bearer sk-bob"}))[0] == ["MISS", "HIT"]
    assert (await twice(layer, cache, {}))[0] == ["BYPASS", "BYPASS"]


async def test_nothing_from_the_headers_reaches_a_key_in_clear(layer: str) -> None:
    cache = Cache(key_builder=credential_in_key, store=MemoryStore())
    answers, _ = await send_twice(layer, cache, {"authorization": "Bearer sk-secret"})
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    key = answers[1].headers["x-cache-key"]
    assert "sk-secret" not in key and re.fullmatch(rf"default:c[0-9a-f]{{32}}:{UPSTREAM}[0-9a-f]{{64}}", key)


def builder_that_raises(request: Any, default: Any) -> str:
    raise KeyError("messages")


def builder_that_answers_bytes(request: Any, default: Any) -> Any:
    return b"bytes"


def builder_that_answers_unicode(request: Any, default: Any) -> str:
    return "clé"


@pytest.mark.parametrize("builder", [builder_that_raises, builder_that_answers_bytes, builder_that_answers_unicode])
async def test_a_broken_key_builder_fails_open(layer: str, builder: Any, caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(key_builder=builder)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        results, upstream = await twice(layer, cache, {"authorization": "Bearer sk-alice"})
    assert results == ["BYPASS", "BYPASS"] and upstream.calls == 2
    assert cache.stats.bypasses == 2 and cache.stats.stored == 0
    assert any("key builder" in record.getMessage() for record in caplog.records)


# -- 16. the suite: a hundred tenants through every layer ---------------------------------------------

TENANTS = 100
SUPPORT = "You are the support assistant of a bicycle shop."
QUESTION = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    model = SentenceTransformerEmbedder()
    model.warm_up()
    return model


async def ask(client: openai.AsyncOpenAI | openai.OpenAI, question: str, **options: Any) -> Any:
    messages = [{"role": "system", "content": SUPPORT}, {"role": "user", "content": question}]
    answer = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, **options)
    return await answer if inspect.isawaitable(answer) else answer


class Tally:
    """What every tenant was served: hits must carry an answer produced for the same tenant."""

    def __init__(self) -> None:
        self.producer: dict[str, int] = {}
        """answer id -> the tenant the provider produced it for (on that tenant's miss)."""
        self.first_misses = 0
        self.own_hits = {"exact": 0, "semantic": 0}
        self.cross_tenant_hits = 0
        self.anonymous: list[str] = []

    def record(self, tenant: int, answer: Any) -> str:
        outcome = answer.headers["x-cache"]
        answer_id = answer.parse().id
        if outcome == "MISS":
            self.producer[answer_id] = tenant
        elif outcome == "HIT":
            if self.producer.get(answer_id) == tenant:
                self.own_hits[answer.headers.get("x-cache-match", "exact")] += 1
            else:
                self.cross_tenant_hits += 1
        return str(outcome)


async def hundred_tenants(connect: Any) -> Tally:
    """Each tenant asks the question or its paraphrase first (every other tenant has asked both by
    then), the other one next (its own semantic hit), then the first again (its own exact hit); an
    anonymous caller asks after each tenant."""
    tally = Tally()
    anonymous = connect("sk-unused")
    for tenant in range(TENANTS):
        client = connect(f"sk-tenant-{tenant:03d}")
        first, second = (QUESTION, PARAPHRASE) if tenant % 2 == 0 else (PARAPHRASE, QUESTION)
        if tally.record(tenant, await ask(client, first)) == "MISS":
            tally.first_misses += 1
        tally.record(tenant, await ask(client, second))
        tally.record(tenant, await ask(client, first))
        nobody = await ask(anonymous, first, extra_headers={"Authorization": openai.Omit()})
        tally.anonymous.append(nobody.headers["x-cache"])
    return tally


class RememberingEmbedder:
    """The real model, asked once per distinct text: the suite embeds two texts six hundred times,
    and the vectors are the model's own either way (this only keeps the suite bounded in time)."""

    def __init__(self, model: SentenceTransformerEmbedder) -> None:
        self.model = model
        self.name = model.name
        self.vectors: dict[str, np.ndarray] = {}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, await self.model.embed(missing), strict=True))
        return np.stack([self.vectors[text] for text in texts])


def semantic_cache(embedder: SentenceTransformerEmbedder) -> Cache:
    # Generous: the test is about who is served what, and a loaded machine must not turn a match into a miss.
    return Cache(semantic=SemanticCache(RememberingEmbedder(embedder), InProcessIndex(), timeout=60.0))


def proxy_app(fake: RunningFakeProvider, upstream: httpx2.AsyncClient) -> FastAPI:
    """An app exposing an OpenAI-compatible route that forwards to the provider with the caller's key."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        headers = {"content-type": "application/json"}
        if "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        answer = await upstream.post(
            f"{fake.openai_base_url}/chat/completions", content=await request.body(), headers=headers
        )
        return Response(answer.content, answer.status_code, media_type="application/json")

    return app


@pytest.fixture
async def connect(
    request: pytest.FixtureRequest, fake_provider: RunningFakeProvider, embedder: SentenceTransformerEmbedder
) -> AsyncIterator[tuple[Cache, Any]]:
    """(the cache, tenant key -> an openai client) for one layer: transport (async, or sync in a client
    of either library), middleware or gateway."""
    cache = semantic_cache(embedder)
    upstream = httpx2.AsyncClient()
    server = None
    if request.param in SYNC_LAYERS:
        sync = SYNC_LAYERS[request.param].Client(transport=CachingTransport(cache=cache))
        try:
            yield (
                cache,
                lambda api_key: openai.OpenAI(
                    api_key=api_key, base_url=fake_provider.openai_base_url, http_client=sync, max_retries=0
                ),
            )
        finally:
            sync.close()
            await upstream.aclose()
        return
    if request.param == "transport":
        shared = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
        base_url = fake_provider.openai_base_url
    elif request.param == "middleware":
        app = proxy_app(fake_provider, upstream)
        app.add_middleware(CacheMiddleware, cache=cache)
        shared = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
        base_url = "http://app.test/v1"
    else:
        upstreams = {"openai": {"base_url": fake_provider.openai_base_url}}
        config = parse_config({"cache": {"store": {"type": "memory"}}, "upstreams": upstreams})
        server = BackgroundServer(create_gateway(config, cache=cache)).start()
        shared = httpx2.AsyncClient()
        base_url = f"{server.url}/v1"

    def client(api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, http_client=shared, max_retries=0)

    try:
        yield cache, client
    finally:
        await shared.aclose()
        await upstream.aclose()
        if server is not None:
            server.stop()


@pytest.mark.parametrize("connect", ["transport", *SYNC_LAYERS, "middleware", "gateway"], indirect=True)
async def test_a_hundred_tenants_never_see_each_others_answers(
    connect: tuple[Cache, Any], fake_provider: RunningFakeProvider
) -> None:
    cache, client = connect
    tally = await hundred_tenants(client)
    assert tally.cross_tenant_hits == 0
    assert tally.first_misses == TENANTS  # nobody was served what another tenant asked, word for word or in meaning
    assert tally.own_hits == {"exact": TENANTS, "semantic": TENANTS}  # both paths were live for each tenant
    assert tally.anonymous == ["BYPASS"] * TENANTS
    assert fake_provider.count("/chat/completions") == 2 * TENANTS
    assert cache.stats.semantic_hits == TENANTS and cache.stats.stored == TENANTS


# -- the README's FastAPI example ----------------------------------------------------------------------


def readme_example() -> str:
    """The code block under `<!-- isolation-example -->` in README.md."""
    after = (ROOT / "README.md").read_text().split("<!-- isolation-example -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


async def session_calls(code: str, fake: RunningFakeProvider, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run `code` (an app calling the provider with its own key) and post as alice (twice), bob and nobody (twice)."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-apps-own-key")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    answers: dict[str, Any] = {}
    transport = httpx2.ASGITransport(app=namespace["app"])
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://app") as http:
            for who, session in (("alice", "s-7f3a"), ("alice", "s-7f3a"), ("bob", "s-91cc"), ("nobody", None)):
                cookie = {"cookie": f"session={session}"} if session else {}
                answer = await http.post(CHAT, json=BODY, headers=cookie)
                answers.setdefault(who, []).append((answer.headers["x-cache"], answer.json()["id"]))
    finally:
        await namespace["llm"].close()
    return answers


async def test_the_readme_fastapi_example_caches_per_user(
    fake_provider: RunningFakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = await session_calls(readme_example(), fake_provider, monkeypatch)
    (alice_first, alice_id), (alice_again, alice_again_id) = answers["alice"]
    assert (alice_first, alice_again, alice_again_id) == ("MISS", "HIT", alice_id)
    assert answers["bob"][0][0] == "MISS" and answers["bob"][0][1] != alice_id
    assert answers["nobody"][0][0] == "BYPASS"


async def test_a_cookie_authenticated_app_is_safe_with_cache_defaults(
    fake_provider: RunningFakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = readme_example().replace("Cache(scope=per_user)", "Cache()")
    answers = await session_calls(code, fake_provider, monkeypatch)
    assert [outcome for who in ("alice", "bob", "nobody") for outcome, _ in answers[who]] == ["BYPASS"] * 4
    assert fake_provider.count("/chat/completions") == 4
