"""A caller that cancels a miss at any await leaves the cache as if the call had failed or never started.

Each point holds one await of a miss until the test cancels the caller's task there: a Redis reply kept by
a real TCP proxy (the lookup, the lock, the tag and entry writes, the unlock), the fake provider holding
the request or stalling its body, a hook waiting. Then everything is let go, and the cache must hold no
single-flight slot, no lock and no task of that call, count the miss as stored or not stored, and answer
the next identical request as a fresh miss, or (once the answer was complete) as a complete hit. Both
ways in run every point: the async transport under the openai SDK, and the gateway (`CacheMiddleware`
in front of its proxy) in process, where the caller's cancel reaches the app's own awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import redis
import redis.asyncio as aioredis

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware._hooks import Hooks
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.semantic import SemanticCache
from llm_cache.middleware.semantic.redis_index import _ADD, RedisVectorIndex
from llm_cache.middleware.stores import DiskStore, MemoryStore, RedisStore
from tests.middleware.stores.conftest import SLACK, unique_prefix
from tests.support.embedders import WordsEmbedder
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.fault_proxy import HoldingProxy

DEADLINE = 10.0


@dataclass(frozen=True)
class Point:
    """Where a miss is held: the Redis reply to the request holding `redis` (past `skip` of them), the
    upstream (`hold`: the request; `stall`: the body, after a few bytes) or a hook; `stream`: the request
    asks for a stream; `complete`: the answer was whole by then, so the write goes on and is served."""

    stream: bool = False
    redis: bytes | None = None
    skip: int = 0
    upstream: str | None = None
    hook: str | None = None
    complete: bool = False
    semantic: bool = False
    """With a semantic cache, its vector index in the same Redis (Redis Stack)."""


POINTS = {
    "lookup": Point(redis=b"GET"),
    "lock": Point(redis=b"NX"),
    "hook-before-lookup": Point(hook="before_lookup"),
    "hook-before-forward": Point(hook="before_forward"),
    "upstream-send": Point(stream=True, upstream="hold"),
    "upstream-body": Point(upstream="stall"),
    "stream-half-read": Point(stream=True, upstream="stall"),
    "hook-after-answer": Point(stream=True, hook="after_answer", complete=True),
    "tag-write": Point(redis=b"EVAL", complete=True),
    "store-write": Point(stream=True, redis=b"chat.completion", complete=True),
    "unlock": Point(redis=b"EVAL", skip=1, complete=True),
    "semantic-search": Point(redis=b"FT.SEARCH", semantic=True),
    "semantic-index": Point(redis=_ADD.sha.encode(), semantic=True, complete=True),  # (the row's script, by digest)
}


def stalled(provider: RunningFakeProvider) -> None:
    """Wait until the upstream body stalled (the caller blocks reading it)."""
    end = time.monotonic() + DEADLINE
    while not provider.provider._waiters:
        assert time.monotonic() < end, "the upstream body never stalled"
        time.sleep(0.005)


async def upstream_waits(provider: RunningFakeProvider, how: str) -> None:
    """Until the upstream holds the request (`hold`) or has stalled its body (`stall`)."""
    if how == "hold":
        await provider.wait_for_in_flight_async(1, DEADLINE)
    else:
        await asyncio.to_thread(stalled, provider)


class Rig:
    """One Cache on a real Redis behind a `HoldingProxy`, hooks that wait at a point, and the fake provider."""

    def __init__(self, proxy: HoldingProxy, provider: RunningFakeProvider, prefix: str, semantic: bool) -> None:
        self.proxy = proxy
        self.provider = provider
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.held_hook: str | None = None
        hooks = Hooks({point: [self._hook(point)] for point in ("before_lookup", "before_forward", "after_answer")})
        hooks.timeout = DEADLINE
        store = RedisStore(host="127.0.0.1", port=proxy.port, prefix=prefix, **SLACK)
        meanings = None
        if semantic:
            url = f"redis://127.0.0.1:{proxy.port}/0"
            index = RedisVectorIndex(url, index_name=f"{prefix}idx", prefix=f"{prefix}rows:")
            meanings = SemanticCache(WordsEmbedder(), index, threshold=0.9)
        self.cache = Cache(store, hooks=hooks, semantic=meanings)
        self.lock_prefix = store.lock_prefix

    def _hook(self, point: str) -> Callable[[Any], Awaitable[None]]:
        async def wait_here(view: Any) -> None:
            if self.held_hook == point:
                self.held_hook = None
                self.entered.set()
                await self.gate.wait()

        return wait_here

    def hold(self, point: Point) -> None:
        if point.redis is not None:
            self.proxy.hold(on=point.redis, skip=point.skip)
        elif point.upstream == "hold":
            self.provider.hold()
        elif point.upstream == "stall":
            self.provider.break_body_after(40, stall=True)
        else:
            self.held_hook = point.hook

    async def reached(self, point: Point) -> None:
        async with asyncio.timeout(DEADLINE):
            if point.redis is not None:
                await self.proxy.held.wait()
            elif point.upstream is not None:
                await upstream_waits(self.provider, point.upstream)
            else:
                await self.entered.wait()

    def release(self) -> None:
        self.proxy.release()
        self.provider.release()
        self.gate.set()


async def ask(client: openai.AsyncOpenAI, content: str, stream: bool) -> tuple[str | None, str]:
    """(x-cache, the answer's text) of one chat completion, read to its end."""
    messages = [{"role": "user", "content": content}]
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=stream)
    answer = raw.parse()
    if not stream:
        assert answer.choices[0].finish_reason == "stop"
        return raw.headers.get("x-cache"), answer.choices[0].message.content
    text, ended = [], None
    async for chunk in answer:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            ended = choice.finish_reason or ended
    assert ended == "stop"
    return raw.headers.get("x-cache"), "".join(text)


@contextlib.asynccontextmanager
async def way_in(way: str, rig: Rig, provider: RunningFakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    """An openai client whose requests reach `rig.cache` through the async transport or the gateway."""
    if way == "transport":
        http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=rig.cache))
        base_url = provider.openai_base_url
        lifespan: Any = contextlib.nullcontext()
    else:
        config = parse_config({"upstreams": {"openai": {"base_url": provider.openai_base_url}}})
        app = create_gateway(config, cache=rig.cache)
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
        base_url = "http://gateway/v1"
        lifespan = app.router.lifespan_context(app)
    async with lifespan:
        client = openai.AsyncOpenAI(api_key="sk-caller", base_url=base_url, http_client=http, max_retries=0)
        try:
            yield client
        finally:
            await client.close()


def others(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since `before`, but the proxy's own."""
    return {
        task
        for task in asyncio.all_tasks() - before
        if not getattr(task.get_coro(), "__qualname__", "").startswith("HoldingProxy.")
        and task is not asyncio.current_task()
    }


async def settled(before: set[asyncio.Task[Any]]) -> None:
    end = time.monotonic() + DEADLINE
    while others(before):
        if time.monotonic() > end:
            pytest.fail(f"tasks left behind: {others(before)}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("way", ["transport", "gateway"])
@pytest.mark.parametrize("name", list(POINTS))
async def test_a_miss_cancelled_at_any_await_leaves_no_trace_and_the_next_call_is_whole(
    name: str, way: str, fake_provider: RunningFakeProvider, request: pytest.FixtureRequest
) -> None:
    point = POINTS[name]
    prefix = unique_prefix()
    content = f"Cancelled at {name} through the {way}: what is the capital of France?"
    server = request.getfixturevalue("redis_stack_server" if point.semantic else "redis_server")
    direct = aioredis.Redis(host=server.host, port=server.port)
    async with HoldingProxy(server.host, server.port) as proxy:
        rig = Rig(proxy, fake_provider, prefix, point.semantic)
        try:
            async with way_in(way, rig, fake_provider) as client:
                await ask(client, "warm the connections up", point.stream)
                before = asyncio.all_tasks()
                rig.hold(point)
                caller = asyncio.ensure_future(ask(client, content, point.stream))
                try:
                    await rig.reached(point)
                    assert not caller.done(), caller
                    caller.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait_for(caller, DEADLINE)
                    assert caller.cancelled()
                finally:
                    rig.release()
                await settled(before)

                assert rig.cache._flights._flights == {}
                assert await direct.keys(rig.lock_prefix + "*") == []
                stats = rig.cache.stats
                assert stats.stored + stats.not_stored == stats.misses

                outcome, text = await ask(client, content, point.stream)
                assert outcome == ("HIT" if point.complete else "MISS")
                assert (await ask(client, content, point.stream)) == ("HIT", text)
                assert text
        finally:
            await rig.cache.close()
            await direct.aclose()


# -- the sync transport: a caller that closes a stream halfway or is interrupted ------------------------


class Interrupted(BaseException):
    """What a signal raises in the caller's thread here: a KeyboardInterrupt that pytest would not take
    for the user's."""


@contextlib.contextmanager
def interrupted_when(reached: Callable[[], None]) -> Iterator[None]:
    """Raise `Interrupted` in this (the main) thread, by a real signal, once `reached()` returns in another."""

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.get_ident()

    def watch() -> None:
        reached()
        signal.pthread_kill(main, signal.SIGUSR1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(Interrupted):
            yield
    finally:
        watcher.join(DEADLINE)
        signal.signal(signal.SIGUSR1, previous)


SYNC_POINTS = [
    "lookup-abandoned",
    "upstream-send-interrupted",
    "stream-read-interrupted",
    "stream-closed",
    "stream-dropped",
]


@pytest.mark.parametrize("name", SYNC_POINTS)
def test_a_sync_call_abandoned_halfway_leaves_no_trace_and_the_next_call_is_a_fresh_miss(
    name: str, fake_provider: RunningFakeProvider, redis_server: Any
) -> None:
    entered, gate = threading.Event(), threading.Event()
    holding = name == "lookup-abandoned"

    def wait_here(view: Any) -> None:  # a sync hook: it blocks a hook thread, not the engine's loop
        if holding and not entered.is_set():
            entered.set()
            gate.wait(DEADLINE)

    hooks = Hooks({"before_lookup": [wait_here]})
    hooks.timeout = DEADLINE
    store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
    cache = Cache(store, hooks=hooks)
    transport = CachingTransport(cache=cache)
    http = httpx2.Client(transport=transport)
    client = openai.OpenAI(api_key="sk-caller", base_url=fake_provider.openai_base_url, http_client=http, max_retries=0)
    messages = [{"role": "user", "content": f"Given up at {name}: what is the capital of France?"}]

    def ask(stream: bool) -> tuple[str | None, str]:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=stream)
        if not stream:
            return raw.headers.get("x-cache"), raw.parse().choices[0].message.content or ""
        text = [choice.delta.content or "" for chunk in raw.parse() for choice in chunk.choices]
        return raw.headers.get("x-cache"), "".join(text)

    try:
        if name == "lookup-abandoned":
            with interrupted_when(lambda: entered.wait(DEADLINE)):
                ask(stream=False)
        elif name == "upstream-send-interrupted":
            fake_provider.hold()
            with interrupted_when(lambda: fake_provider.wait_for_in_flight(1, DEADLINE)):
                ask(stream=True)
        elif name == "stream-read-interrupted":
            fake_provider.break_body_after(40, stall=True)
            with interrupted_when(lambda: stalled(fake_provider)):
                ask(stream=True)
        else:
            fake_provider.break_body_after(300, stall=True)
            stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            chunks = iter(stream)
            next(chunks)
            stalled(fake_provider)
            if name == "stream-closed":
                stream.close()
            else:  # dropped unread: the generators are closed as they are collected (GeneratorExit)
                del stream, chunks
                gc.collect()
        gate.set()
        fake_provider.release()
        loop = transport._loop._loop
        end = time.monotonic() + DEADLINE
        while loop is not None and asyncio.all_tasks(loop):  # what the caller left has run its course
            assert time.monotonic() < end, asyncio.all_tasks(loop)
            time.sleep(0.005)

        assert cache._flights._flights == {}
        assert cache.stats.stored == 0 and cache.stats.misses == cache.stats.not_stored
        assert redis.Redis.from_url(redis_server.url).keys(store.lock_prefix + "*") == []
        started = time.monotonic()
        outcome, text = ask(stream=True)
        # a slot left behind would hold this call for coalesce_timeout (120 s); a loaded machine takes seconds
        assert (outcome, time.monotonic() - started < 60.0) == ("MISS", True)
        assert ask(stream=False) == ("HIT", text)
    finally:
        gate.set()
        fake_provider.release()
        client.close()
        cache.close_sync()


# -- asyncio.timeout around an SDK call: the common real-world cancel -------------------------------------


async def sdk_answer(client: Any, content: str, stream: bool) -> tuple[str | None, str]:
    """(x-cache, text) of one call of the openai or anthropic SDK, read to its end."""
    messages = [{"role": "user", "content": content}]
    if isinstance(client, anthropic.AsyncAnthropic):
        create: Any = client.messages.with_raw_response.create
        raw = await create(model="claude-sonnet-4-6", max_tokens=64, messages=messages, stream=stream)
        parsed = await raw.parse()
        if not stream:
            return raw.headers.get("x-cache"), "".join(block.text for block in parsed.content)
        text = [event.delta.text async for event in parsed if event.type == "content_block_delta"]
        return raw.headers.get("x-cache"), "".join(text)
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=stream)
    if not stream:
        return raw.headers.get("x-cache"), raw.parse().choices[0].message.content or ""
    text = [choice.delta.content or "" async for chunk in raw.parse() for choice in chunk.choices]
    return raw.headers.get("x-cache"), "".join(text)


TIMED_OUT = {"upstream-send": (False, "hold"), "json-body": (False, "stall"), "stream-half-read": (True, "stall")}


@pytest.mark.parametrize("store_kind", ["memory", "disk"])
@pytest.mark.parametrize("where", list(TIMED_OUT))
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_an_sdk_call_under_asyncio_timeout_that_runs_out_leaves_no_trace(
    sdk: str, where: str, store_kind: str, fake_provider: RunningFakeProvider, tmp_path: Any
) -> None:
    stream, upstream = TIMED_OUT[where]
    store = MemoryStore() if store_kind == "memory" else DiskStore(tmp_path / "cache")
    cache = Cache(store)
    http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client: Any
    if sdk == "openai":
        client = openai.AsyncOpenAI(api_key="sk-a", base_url=fake_provider.openai_base_url, http_client=http)
    else:
        client = anthropic.AsyncAnthropic(api_key="sk-a", base_url=fake_provider.anthropic_base_url, http_client=http)
    client = client.with_options(max_retries=0)
    content = f"Timed out at {where}: what is the capital of France?"
    try:
        await sdk_answer(client, "warm the connections up", stream)
        before = asyncio.all_tasks()
        if upstream == "hold":
            fake_provider.hold()
        else:
            fake_provider.break_body_after(60, stall=True)
        deadlines: list[asyncio.Timeout] = []

        async def call_with_a_timeout() -> None:
            async with asyncio.timeout(None) as deadline:
                deadlines.append(deadline)
                await sdk_answer(client, content, stream)

        caller = asyncio.ensure_future(call_with_a_timeout())
        await upstream_waits(fake_provider, upstream)
        deadlines[0].reschedule(asyncio.get_running_loop().time())  # it runs out now, where the call waits
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(caller, DEADLINE)
        fake_provider.release()
        await settled(before)

        assert cache._flights._flights == {}
        assert (cache.stats.misses, cache.stats.not_stored, cache.stats.stored) == (2, 1, 1)  # the warm-up stored
        outcome, text = await sdk_answer(client, content, stream)
        assert (outcome, bool(text)) == ("MISS", True)
        assert await sdk_answer(client, content, stream) == ("HIT", text)
    finally:
        fake_provider.release()
        await client.close()
        await cache.close()


# -- the gateway behind a real server: a client that hangs up -----------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("when", ["upstream-held", "body-stalled"])
async def test_a_client_that_hangs_up_on_the_gateway_leaves_no_trace(
    when: str, stream: bool, fake_provider: RunningFakeProvider, redis_server: Any
) -> None:
    store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
    cache = Cache(store)
    config = parse_config({"upstreams": {"openai": {"base_url": fake_provider.openai_base_url}}})
    body = {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": f"Hung up {when}"}]}
    headers = {"authorization": "Bearer sk-caller"}
    with BackgroundServer(create_gateway(config, cache=cache)) as server:
        url = f"{server.url}/v1/chat/completions"
        async with httpx2.AsyncClient(timeout=DEADLINE) as http:
            if when == "upstream-held":
                fake_provider.hold()
                sending = asyncio.ensure_future(http.post(url, json=body, headers=headers))
                await fake_provider.wait_for_in_flight_async(1, DEADLINE)
                sending.cancel()  # the connection is closed under the gateway
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
            else:
                fake_provider.break_body_after(300 if stream else 60, stall=True)  # past the first event
                async with http.stream("POST", url, json=body, headers=headers) as response:
                    await response.aiter_raw().__anext__()  # the first bytes came: hang up halfway
            fake_provider.release()

            locks = redis.Redis.from_url(redis_server.url)
            end = time.monotonic() + DEADLINE
            while (
                cache._flights._flights
                or cache.stats.stored + cache.stats.not_stored < cache.stats.misses
                or locks.keys(store.lock_prefix + "*")
            ):  # the gateway's loop finishes with the call on its own time
                assert time.monotonic() < end, (cache._flights._flights, cache.stats)
                await asyncio.sleep(0.01)

            again = await http.post(url, json=body, headers=headers)
            assert again.status_code == 200
            if when == "upstream-held" and again.headers["x-cache"] == "HIT":  # answered, to a client gone
                assert again.text.endswith("data: [DONE]\n\n") if stream else again.json()["choices"][0]["message"]
            else:
                assert again.headers["x-cache"] == "MISS"
            assert (await http.post(url, json=body, headers=headers)).headers["x-cache"] == "HIT"
