"""A command cancelled with its reply in flight never answers another command.

A client that puts a connection back in its pool with a reply still unread makes the next command on it
read that reply (redis-py's CVE-2023-28858 class): in a cache, caller B served caller A's entry, or every
later read a miss or an error. Each store talks to its real server through `HoldingProxy`, which keeps
the server's reply (all of it, or all but its first bytes) until the test has cancelled the command; the
reply then reaches the client's socket, and other commands on the same store must each get their own
answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from llm_cache.middleware.stores import AiocacheStore, MemoryStore, StoreError
from llm_cache.middleware.stores.redis import RedisClusterStore, RedisStore
from tests.support.fault_proxy import HoldingProxy

from .conftest import SLACK, object_store, unique_prefix

DEADLINE = 10.0
STORE_TIMEOUT = 1.0
"""The stores' own timeout where a test lets it cut a command: every command the test does not hold ends
well within it on a loaded machine, and a held one ends by it, well within `DEADLINE`."""
ANSWERS = {f"scope-{name}:chat:{name * 8}": f"answer of {name}".encode() * 20 for name in "abcd"}
"""Four callers' entries (distinct keys, as distinct scopes give)."""
KEYS = list(ANSWERS)
STORES = ["redis", "redis-cluster", "tiered", "memcached", "aiocache-memcached", "s3"]
OPERATIONS: dict[str, Callable[[Any], Awaitable[object]]] = {
    "get": lambda store: store.get(KEYS[0]),
    "set": lambda store: store.set(KEYS[0], ANSWERS[KEYS[0]], 300),
    "delete": lambda store: store.delete("scope-z:gone"),
}


@contextlib.asynccontextmanager
async def proxied(
    kind: str, request: pytest.FixtureRequest, timeout: float = 2.0
) -> AsyncIterator[tuple[Any, list[HoldingProxy]]]:
    """`kind`'s store on its real server with every connection through a `HoldingProxy`."""
    prefix = unique_prefix()
    slack = {**SLACK, "timeout": timeout}
    async with contextlib.AsyncExitStack() as stack:

        async def proxy(host: str, port: int) -> HoldingProxy:
            return await stack.enter_async_context(HoldingProxy(host, port))

        if kind in ("redis", "tiered"):
            server = request.getfixturevalue("redis_server")
            front = await proxy(server.host, server.port)
            store: Any = RedisStore(host="127.0.0.1", port=front.port, prefix=prefix, **slack)
            proxies = [front]
            if kind == "tiered":
                from llm_cache.middleware.stores.tiered import TieredStore

                store = TieredStore(MemoryStore(), store, bus=None)
        elif kind == "redis-cluster":
            cluster = request.getfixturevalue("redis_cluster")
            fronts = {node.port: await proxy(node.host, node.port) for node in cluster.nodes}
            proxies = list(fronts.values())

            def remap(address: tuple[str, int]) -> tuple[str, int]:
                front = fronts.get(address[1])
                return (address[0], front.port) if front is not None else address

            options = {"address_remap": remap}
            nodes = cluster.startup_nodes
            store = RedisClusterStore(startup_nodes=nodes, prefix=prefix, client_options=options, **slack)
        elif kind == "memcached":
            from llm_cache.middleware.stores.memcached import MemcachedStore

            server = request.getfixturevalue("memcached_server")
            front = await proxy(server.host, server.port)
            store = MemcachedStore("127.0.0.1", front.port, prefix=prefix, timeout=timeout, pool_size=1)
            proxies = [front]
        elif kind == "aiocache-memcached":  # a user's own aiocache cache, wrapped
            from aiocache import MemcachedCache

            from llm_cache.middleware.stores.memcached import BytesSerializer

            server = request.getfixturevalue("memcached_server")
            front = await proxy(server.host, server.port)
            own = MemcachedCache(
                serializer=BytesSerializer(), endpoint="127.0.0.1", port=front.port, pool_size=1, timeout=timeout
            )
            own.namespace = prefix
            store = AiocacheStore(own)
            proxies = [front]
        else:
            server = request.getfixturevalue("s3_server")
            front = await proxy(server.host, server.port)
            store = await object_store("s3", request, prefix)
            store.endpoint_url = f"http://127.0.0.1:{front.port}"
            proxies = [front]
        try:
            yield store, proxies
        finally:
            for each in proxies:
                each.release()
            await store.close()


async def cancel_with_the_reply_held(
    proxies: list[HoldingProxy], after: int, command: Callable[[], Awaitable[object]]
) -> None:
    """Run `command` until its server has answered and the answer (past `after` bytes) is held; cancel it;
    let the answer through to the client's socket."""
    for each in proxies:
        each.hold(after)
    task = asyncio.ensure_future(command())
    held = [asyncio.ensure_future(each.held.wait()) for each in proxies]
    try:
        done, _ = await asyncio.wait([task, *held], timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
        assert done and task not in done, "the command ended although its reply was held"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE)
        assert task.cancelled()
    finally:
        for waiter in held:
            waiter.cancel()
        for each in proxies:
            each.release()


async def write_every_answer(store: Any) -> None:
    for key, value in ANSWERS.items():
        await store.set(key, value, 300)


async def each_read_gets_its_own_answer(store: Any) -> None:
    """Every caller's read, three rounds over the four keys, gets that caller's entry (not a miss either)."""
    got = [await store.get(key) for key in KEYS * 3]
    assert got == [ANSWERS[key] for key in KEYS * 3], [value[:12] if value else value for value in got]


@pytest.mark.parametrize("after", [0, 3], ids=["reply-held-whole", "reply-held-after-3-bytes"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("kind", STORES)
async def test_a_command_cancelled_with_its_reply_in_flight_never_answers_another(
    kind: str, operation: str, after: int, request: pytest.FixtureRequest
) -> None:
    async with proxied(kind, request) as (store, proxies):
        await write_every_answer(store)
        if kind == "tiered":
            await store.l1.clear()  # reads go to the L2, through the proxy, and fill the L1 again
        await cancel_with_the_reply_held(proxies, after, lambda: OPERATIONS[operation](store))

        await each_read_gets_its_own_answer(store)


@pytest.mark.parametrize("kind", ["redis", "memcached", "aiocache-memcached"])
async def test_a_command_cut_by_the_stores_own_timeout_never_answers_another(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with proxied(kind, request, timeout=STORE_TIMEOUT) as (store, proxies):
        await write_every_answer(store)
        proxies[0].hold()
        cut = asyncio.ensure_future(store.get(KEYS[0]))
        try:  # waited for, never cancelled here: the store's own timeout must end it
            done, _ = await asyncio.wait({cut}, timeout=DEADLINE)
        finally:
            cut.cancel()
        assert cut in done, f"the store's own timeout ({STORE_TIMEOUT}s) did not end the command in {DEADLINE}s"
        cut_by = TimeoutError if kind == "aiocache-memcached" else StoreError  # a user's aiocache raises its own
        assert isinstance(cut.exception(), cut_by), repr(cut.exception())
        assert proxies[0].held.is_set()
        proxies[0].release()

        await each_read_gets_its_own_answer(store)


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_a_lock_whose_taking_was_cancelled_with_its_reply_in_flight_is_released(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with proxied(kind, request) as (store, proxies):
        await store.get("lock:scope-a:key")  # the lock key's node connected: the reply held is the lock's
        await cancel_with_the_reply_held(proxies, 0, lambda: store.try_lock("scope-a:key", 30))
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*store._releasing)

        token = await store.try_lock("scope-a:key", 30)

        assert token is not None  # the next miss leads at once, not after the lock's 30 s
        assert await store.unlock("scope-a:key", token)


async def test_a_vector_search_cancelled_with_its_reply_in_flight_never_answers_another_context(
    redis_stack_server: Any,
) -> None:
    from llm_cache.middleware.semantic.redis_index import RedisVectorIndex

    prefix = unique_prefix()
    async with HoldingProxy(redis_stack_server.host, redis_stack_server.port) as front:
        index = RedisVectorIndex(f"redis://127.0.0.1:{front.port}/0", index_name=f"{prefix}idx", prefix=prefix)
        try:
            vector = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
            for context in ("ctx-a", "ctx-b"):
                await index.add(context, f"{context}-key", f"prompt of {context}", vector, 300)
            await cancel_with_the_reply_held([front], 0, lambda: index.search("ctx-a", vector, 1))

            found = [[n.key for n in await index.search(context, vector, 1)] for context in ("ctx-b", "ctx-a") * 2]

            assert found == [["ctx-b-key"], ["ctx-a-key"]] * 2
        finally:
            await index.clear()
            await index.close()
