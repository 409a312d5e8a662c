"""Stale-if-error (RFC 5861): an entry past its TTL answers only when the provider fails.

Entries are aged by rewriting their stored times (`age`), so no test waits for a clock. A failure is
whatever the layer below the cache finally answers: a 5xx, a timeout, a refused connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from starlette.types import Receive, Scope, Send

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._entry import pack, unpack
from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.stores.base import Store
from tests.middleware.asgi_apps import _chat_json
from tests.middleware.test_gateway import Gateway, chat, gateway_factory  # noqa: F401 (a fixture)
from tests.support.fake_provider_fixtures import FakeProviderServer, RunningFakeProvider
from tests.support.servers import wait_for
from tests.support.stores import CountingStore

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TTL, GRACE = 60.0, 300.0


async def age(store: Store, key: str, seconds: float) -> None:
    """Make the entry under `key` look stored `seconds` earlier (its TTL moves with it)."""
    entry = unpack(await store.get(key) or b"")
    assert entry.expires_at is not None
    older = dataclasses.replace(entry, created_at=entry.created_at - seconds, expires_at=entry.expires_at - seconds)
    await store.set(key, pack(older), None)


@pytest.fixture
def provider() -> Iterator[tuple[FakeProviderServer, RunningFakeProvider]]:
    server = FakeProviderServer()
    running = server.start()
    try:
        yield server, running
    finally:
        server.stop()


def sdk(cache: Cache, base_url: str, api_key: str = "sk-alice", timeout: float = 10.0) -> openai.OpenAI:
    http = httpx2.Client(transport=CachingTransport(cache=cache))
    return openai.OpenAI(api_key=api_key, base_url=base_url, http_client=http, max_retries=0, timeout=timeout)


def ask(client: openai.OpenAI, headers: dict[str, str] | None = None) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=QUESTION, extra_headers=headers or {}
    )


def fail(kind: str, server: FakeProviderServer, running: RunningFakeProvider) -> None:
    """Make the provider's next answer a failure of this kind."""
    if kind in ("500", "503"):
        running.fail_next(status=int(kind))
    elif kind == "timeout":
        running.delay(5.0)  # past the client's 0.5 s timeout
    else:
        server.stop()  # nothing listens on the port any more: the connection is refused


def primed(cache: Cache, running: RunningFakeProvider, aged_by: float) -> tuple[openai.OpenAI, str, bytes]:
    """A client whose question is stored and then aged by `aged_by` seconds; the stored answer's body."""
    client = sdk(cache, running.openai_base_url, timeout=0.5)
    first = ask(client)
    assert first.headers["x-cache"] == "MISS"
    key = first.headers["x-cache-key"]
    asyncio.run(age(cache.store, key, aged_by))
    return client, key, first.content


# -- through the sync transport, each kind of failure ----------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503", "timeout", "refused"])
def test_a_failing_provider_gets_the_stale_entry_with_its_age(
    kind: str, provider: tuple[FakeProviderServer, RunningFakeProvider]
) -> None:
    server, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=GRACE)
    client, key, body = primed(cache, running, 120)
    fail(kind, server, running)
    stale = ask(client)
    assert stale.headers["x-cache"] == "STALE"
    assert stale.headers["x-cache-key"] == key
    assert int(stale.headers["age"]) >= 120 > TTL
    assert stale.content == body
    assert cache.stats.stale == 1


async def test_the_async_transport_serves_it_too(provider: tuple[FakeProviderServer, RunningFakeProvider]) -> None:
    _, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=GRACE)
    http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = openai.AsyncOpenAI(api_key="sk-alice", base_url=running.openai_base_url, http_client=http, max_retries=0)
    create = client.chat.completions.with_raw_response.create
    first = await create(model="gpt-4o-mini", messages=QUESTION)
    await age(cache.store, first.headers["x-cache-key"], 120)
    running.fail_next(status=502)
    stale = await create(model="gpt-4o-mini", messages=QUESTION)
    assert stale.headers["x-cache"] == "STALE" and stale.content == first.content
    await client.close()


# -- never otherwise ---------------------------------------------------------------------------------


def test_a_provider_that_answers_replaces_the_expired_entry(
    provider: tuple[FakeProviderServer, RunningFakeProvider],
) -> None:
    _, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=GRACE)
    client, _, _ = primed(cache, running, 120)
    assert ask(client).headers["x-cache"] == "MISS"
    assert ask(client).headers["x-cache"] == "HIT"
    assert running.count() == 2 and cache.stats.stale == 0


def test_a_fresh_lookup_never_serves_an_entry_past_its_ttl(
    provider: tuple[FakeProviderServer, RunningFakeProvider],
) -> None:
    _, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=GRACE)
    client, _, _ = primed(cache, running, TTL + 1)  # still in the store (TTL + grace), no longer fresh
    assert ask(client).headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    ("grace", "aged_by"),
    [(0.0, 120), (GRACE, TTL + GRACE + 1)],
    ids=["without the setting or the directive", "past the grace period"],
)
def test_the_failure_is_relayed_without_an_entry_to_serve_stale(
    grace: float, aged_by: float, provider: tuple[FakeProviderServer, RunningFakeProvider]
) -> None:
    _, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=grace)
    client, _, _ = primed(cache, running, aged_by)
    running.fail_next(status=500)
    with pytest.raises(openai.InternalServerError):
        ask(client)


def test_the_request_directive_asks_for_it_and_sets_the_grace(
    provider: tuple[FakeProviderServer, RunningFakeProvider],
) -> None:
    _, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL)
    client, _, body = primed(cache, running, 120)
    running.fail_next(status=500)
    stale = ask(client, {"Cache-Control": "stale-if-error=300"})
    assert stale.headers["x-cache"] == "STALE" and stale.content == body
    running.fail_next(status=500)
    with pytest.raises(openai.InternalServerError):  # 60 s past its TTL: more than 30 s
        ask(client, {"Cache-Control": "stale-if-error=30"})


def test_never_to_another_credential(provider: tuple[FakeProviderServer, RunningFakeProvider]) -> None:
    _, running = provider
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=GRACE)
    primed(cache, running, 120)
    running.fail_next(status=500)
    with pytest.raises(openai.InternalServerError):
        ask(sdk(cache, running.openai_base_url, api_key="sk-bob"))


def test_the_store_keeps_an_entry_for_its_ttl_and_the_grace(
    provider: tuple[FakeProviderServer, RunningFakeProvider],
) -> None:
    _, running = provider
    store = CountingStore()
    cache = Cache(store=store, ttl=TTL, stale_if_error=GRACE)
    key = ask(sdk(cache, running.openai_base_url)).headers["x-cache-key"]
    entry = unpack(asyncio.run(store.get(key)) or b"")
    assert store.ttls == [TTL + GRACE]
    assert entry.expires_at == entry.created_at + TTL


# -- through the ASGI middleware and the gateway --------------------------------------------------------


class Provider:
    """An ASGI app standing for a provider: answers once, then fails as `failure` says."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        if self.calls > 1:
            if self.failure == "raises":
                raise ConnectionRefusedError("the provider is down")
            await send({"type": "http.response.start", "status": int(self.failure), "headers": []})
            await send({"type": "http.response.body", "body": b"upstream failed"})
            return
        body = json.dumps(_chat_json(1, "gpt-4o-mini")).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("failure", ["500", "503", "raises"])
async def test_the_asgi_middleware_serves_it_for_an_app_that_fails(failure: str) -> None:
    cache = Cache(store=MemoryStore(), ttl=TTL, stale_if_error=GRACE)
    app = CacheMiddleware(Provider(failure), cache=cache)
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://app") as http:
        post: Callable[[], Any] = lambda: http.post(  # noqa: E731
            "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-alice"}
        )
        first = await post()
        await age(cache.store, first.headers["x-cache-key"], 120)
        stale = await post()
    assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
    assert stale.content == first.content and int(stale.headers["age"]) >= 120


@pytest.mark.parametrize("failure", ["500", "timeout"])
def test_the_gateway_serves_it_when_its_upstream_fails(
    failure: str,
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
) -> None:
    cache = {"store": {"type": "memory"}, "ttl": TTL, "stale_if_error": GRACE}
    gateway = gateway_factory(
        {"cache": cache, "upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "timeout": 0.5}}}
    )
    first = chat(gateway.openai())
    wait_for(lambda: gateway.cache.stats.stored == 1, 10, "the first answer stored")  # after the caller's read
    asyncio.run(age(gateway.cache.store, first.headers["x-cache-key"], 120))
    if failure == "500":
        fake_provider.fail_next(status=500)
    else:
        fake_provider.delay(5.0)  # past the gateway's 0.5 s upstream timeout
    stale = chat(gateway.openai())
    assert stale.headers["x-cache"] == "STALE" and stale.content == first.content


async def test_an_entry_that_cannot_be_replayed_leaves_the_failure_as_it_came() -> None:
    """A stale entry whose body no stream can be made of (a corrupt one) is not served: the upstream's
    failure reaches the caller as it came, where before rendering it raised into the caller."""
    failing = [False]

    def upstream(request: httpx2.Request) -> httpx2.Response:
        if failing[0]:
            return httpx2.Response(503, json={"error": {"message": "overloaded"}})
        return httpx2.Response(200, json=_chat_json(1, "gpt-4o-mini"))

    store = MemoryStore()
    cache = Cache(store=store, ttl=TTL, stale_if_error=GRACE)
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(upstream))
    async with httpx2.AsyncClient(transport=transport) as http:
        url, auth = "http://llm.test/v1/chat/completions", {"authorization": "Bearer sk-a"}
        body = {"model": "gpt-4o-mini", "messages": QUESTION}
        key = (await http.post(url, json=body, headers=auth)).headers["x-cache-key"]
        await age(store, key, 120)
        entry = unpack(await store.get(key) or b"")
        await store.set(key, pack(dataclasses.replace(entry, body=b"[]")), None)
        failing[0] = True
        answer = await http.post(url, json={**body, "stream": True}, headers=auth)
    assert answer.status_code == 503 and answer.json() == {"error": {"message": "overloaded"}}
    assert answer.headers["x-cache"] == "MISS" and cache.stats.stale == 0
