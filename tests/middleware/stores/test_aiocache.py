"""AiocacheStore's clears: only what its prefix names, or a refusal that says why (real Redis and memcached)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from aiocache import MemcachedCache, RedisCache, SimpleMemoryCache

from llm_cache.middleware.stores import AiocacheStore, StoreError
from llm_cache.middleware.stores.memcached import BytesSerializer

from .conftest import unique_prefix


async def test_an_aiocache_redis_store_clears_its_own_prefix_and_nothing_else(redis_server: Any) -> None:
    """Two gateways share a Redis through aiocache, each in its own namespace, beside someone else's key:
    one's clear (everything, or one of its prefixes) never reaches the other's entries, nor the other key
    (aiocache's own `clear()` is a FLUSHDB)."""
    ours, theirs = unique_prefix().rstrip(":"), unique_prefix().rstrip(":")
    mine = AiocacheStore(RedisCache(serializer=BytesSerializer(), port=redis_server.port, namespace=ours))
    other = AiocacheStore(RedisCache(serializer=BytesSerializer(), port=redis_server.port, namespace=theirs))
    bystander = redis_asyncio.Redis(port=redis_server.port)
    try:
        await bystander.set(f"{theirs}-bystander", b"keep")
        for store in (mine, other):
            await store.set("app:default:k1", b"v", 60)
            await store.set("app:semantic:k2", b"v", 60)
        await mine.clear("app:default:")
        assert await mine.get("app:default:k1") is None
        assert await mine.get("app:semantic:k2") == b"v"
        await mine.clear(None)
        assert await mine.get("app:semantic:k2") is None
        assert await other.get("app:default:k1") == b"v" and await other.get("app:semantic:k2") == b"v"
        assert await bystander.get(f"{theirs}-bystander") == b"keep"
    finally:
        await bystander.delete(f"{theirs}-bystander")
        await other.clear(None)
        await bystander.aclose()
        await mine.close()
        await other.close()


async def test_an_aiocache_store_refuses_a_clear_it_cannot_scope_and_says_why(
    redis_server: Any, memcached_server: Any
) -> None:
    """A memcached cache can only flush its whole server; a Redis one without a namespace could only FLUSHDB,
    and matches by glob: each such clear is refused, naming why, and deletes nothing."""
    memcached = AiocacheStore(
        MemcachedCache(
            serializer=BytesSerializer(), endpoint=memcached_server.host, port=memcached_server.port, namespace="a:"
        )
    )
    bare_redis = AiocacheStore(RedisCache(serializer=BytesSerializer(), port=redis_server.port))
    prefix = unique_prefix()
    try:
        await memcached.set(prefix + "k", b"v", 60)
        await bare_redis.set(prefix + "k", b"v", 60)
        for store, clear, why in [
            (memcached, prefix, "memcached"),
            (memcached, None, "memcached"),
            (bare_redis, None, "FLUSHDB"),
            (bare_redis, prefix.rstrip(":"), "':'"),
            (bare_redis, prefix + "*:", "glob"),
        ]:
            with pytest.raises(StoreError, match=why):
                await store.clear(clear)
        assert await memcached.get(prefix + "k") == b"v"
        assert await bare_redis.get(prefix + "k") == b"v"
    finally:
        await bare_redis.delete(prefix + "k")
        await memcached.close()
        await bare_redis.close()


async def test_an_aiocache_memory_store_clears_by_any_prefix() -> None:
    store = AiocacheStore(SimpleMemoryCache(serializer=BytesSerializer(), namespace="ns"))
    await store.set("a:1", b"v", 60)
    await store.set("ab", b"v", 60)
    await store.set("b:1", b"v", 60)
    await store.clear("a")
    assert [await store.get(key) for key in ("a:1", "ab", "b:1")] == [None, None, b"v"]
    await store.clear(None)
    assert await store.get("b:1") is None
