"""A child forked from a process that used the cache (gunicorn `--preload`, `multiprocessing` with fork)
works as the parent does: no lock a parent thread held at the fork, and no state naming the parent's
threads, tasks or calls in flight, reaches it (`middleware/_fork.py`).

Real parts: a real fork, the sync openai SDK through the caching transport to the fake provider, real
Redis and memcached. A parent thread holding a lock at the fork is the test's own thread holding it
(as one inside the store does, for a few microseconds); every child answers within a bound or is killed.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware._loop_thread import LoopThread
from llm_cache.middleware.semantic import InProcessIndex, SemanticCache
from llm_cache.middleware.semantic._local_model import LocalModel
from llm_cache.middleware.stores import CircuitBreaker, CircuitOpenError, MemoryStore, RedisStore
from llm_cache.middleware.stores.tiered import TieredStore
from tests.support.embedders import WordsEmbedder
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.forked import BOUND, ForkedChild

from .stores.conftest import unique_prefix

Holder = Callable[[pytest.FixtureRequest], tuple[Cache, Callable[[], threading.Lock]]]


def asked(client: openai.OpenAI, questions: list[str]) -> list[str]:
    """The x-cache outcome of each question."""
    answers = [
        client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
        for question in questions
    ]
    return [answer.headers["x-cache"] for answer in answers]


def memory_store(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    store = MemoryStore()
    return Cache(store=store), lambda: store._lock


def redis_clients(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    store = RedisStore(request.getfixturevalue("redis_server").url, prefix=unique_prefix())
    return Cache(store=store), lambda: store._clients._lock  # a loop's client is made holding it


def redis_breaker(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    store = RedisStore(request.getfixturevalue("redis_server").url, prefix=unique_prefix())
    return Cache(store=store), lambda: store.breaker._lock


def memcached(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    from llm_cache.middleware.stores.memcached import MemcachedStore

    server = request.getfixturevalue("memcached_server")
    store = MemcachedStore(server.host, server.port, prefix=unique_prefix())
    return Cache(store=store), lambda: store._lock


def telemetry(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    cache = Cache()
    return cache, lambda: cache.telemetry._lock


def semantic_index(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    index = InProcessIndex()
    return Cache(semantic=SemanticCache(WordsEmbedder(), index, threshold=0.75)), lambda: index._lock


def semantic_bound(request: pytest.FixtureRequest) -> tuple[Cache, Callable[[], threading.Lock]]:
    semantic = SemanticCache(WordsEmbedder(), InProcessIndex(), max_error_rate=0.02)
    assert semantic.bound is not None
    bound = semantic.bound
    return Cache(semantic=semantic), lambda: bound._lock


HOLDERS: dict[str, Holder] = {
    "memory-store": memory_store,
    "redis-per-loop-clients": redis_clients,
    "redis-circuit-breaker": redis_breaker,
    "memcached-per-loop-caches": memcached,
    "telemetry": telemetry,
    "semantic-index": semantic_index,
    "semantic-bound": semantic_bound,
}


@pytest.mark.parametrize("holder", list(HOLDERS))
def test_a_child_forked_while_a_parent_thread_holds_a_lock_of_the_cache_is_not_wedged(
    holder: str, fake_provider: RunningFakeProvider, request: pytest.FixtureRequest
) -> None:
    """The parent used the cache, then forked while one of its threads held a lock of the cache's
    (a store's, its breaker's, a loop's client map, the telemetry's, the vector index's, the bounded
    mode's). The child has that lock held by a thread it does not have: before, its first call waited
    for ever."""
    cache, lock = HOLDERS[holder](request)
    transport = CachingTransport(cache=cache)
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=httpx2.Client(transport=transport)
    )
    try:
        assert asked(client, ["asked before the fork"]) == ["MISS"]
        with lock():
            child = ForkedChild(lambda: asked(client, ["asked before the fork", "asked in the child"]))
        assert child.result() == ["HIT", "MISS"]
    finally:
        cache.close_sync()
        transport.close()


def test_a_probe_in_flight_in_the_parent_leaves_the_childs_breaker_free_to_probe() -> None:
    """The parent's breaker was half-open with a probe in flight at the fork (a call of a parent thread,
    which the child does not have): before, every call of the child failed fast for ever, waiting for
    that probe's verdict, so the child never used its store again."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown=0.0)
    breaker.failure()
    breaker.before()  # the parent's probe, in flight
    with pytest.raises(CircuitOpenError):
        breaker.before()

    def probe_in_child() -> str:
        breaker.before()
        breaker.success()
        return breaker.state

    assert ForkedChild(probe_in_child).result() == "closed"


def test_a_tiered_store_used_before_the_fork_hears_invalidations_in_the_child(redis_server: Any) -> None:
    """The parent's tiered store listened for other pods' invalidations on a loop of its own (the sync
    transport's). In the child that listener is the parent's: before, the child never listened, and kept
    serving from its L1 an entry another pod had deleted until `l1_max_ttl`."""
    prefix = unique_prefix()
    channel = f"{prefix}invalidations"

    def tiered() -> TieredStore:
        return TieredStore(MemoryStore(), RedisStore(redis_server.url, prefix=prefix), channel=channel, l1_max_ttl=600)

    store = tiered()
    loop = LoopThread()
    try:
        loop.run(store.start(), BOUND)
        loop.run(store.set("k", b"before the fork", 300), BOUND)

        async def deleted_elsewhere() -> bytes | None:
            other = tiered()
            try:
                await store.start()
                assert await store.get("k") == b"before the fork"  # in the child's L1
                await other.delete("k")
                async with asyncio.timeout(BOUND / 2):
                    while await store.l1.get("k") is not None:
                        await asyncio.sleep(0.01)
                return await store.get("k")
            finally:
                await other.close()

        result = ForkedChild(lambda: asyncio.run(deleted_elsewhere())).result()
    finally:
        loop.run(store.close(), BOUND)
        loop.close()
    assert result is None


def test_a_local_model_used_before_the_fork_answers_in_the_child() -> None:
    """The parent's local model (an embedder, a reranker) ran calls on its own thread: the child
    inherits the list of those threads but not the threads. Before, the child queued its calls for a
    thread it did not have, and every semantic lookup waited out its timeout."""
    model = LocalModel("embedder", "a stand-in", build=lambda: "the model", idle=600)
    assert asyncio.run(model.run(lambda loaded: f"{loaded} in the parent")) == "the model in the parent"

    async def in_child() -> str:
        async with asyncio.timeout(BOUND / 2):
            return await model.run(lambda loaded: f"{loaded} in the child")

    try:
        assert ForkedChild(lambda: asyncio.run(in_child())).result() == "the model in the child"
    finally:
        model.close()


def test_what_is_renewed_after_a_fork_is_not_kept_alive_for_it() -> None:
    """A store made per request and dropped is not kept for the fork hooks' sake."""
    store = MemoryStore()
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None
