"""MemcachedStore: long and odd keys hashed, oversize values skipped and counted, real prefix clears."""

from __future__ import annotations

from typing import Any

import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware.stores import MemoryStore, StoreError
from llm_cache.middleware.stores.memcached import MAX_KEY_BYTES, MemcachedStore, safe_key
from llm_cache.middleware.stores.tiered import TieredStore

from .conftest import unique_prefix


def test_safe_key() -> None:
    assert safe_key("llmc:ns:abc") == "llmc:ns:abc"
    long_key = "llmc:" + "x" * 400
    hashed = safe_key(long_key)
    assert len(hashed.encode()) <= MAX_KEY_BYTES and hashed.startswith("llmc:xxx")
    assert safe_key("a b\tc\x01") != "a b\tc\x01" and " " not in safe_key("a b")
    assert safe_key("é" * 200) != safe_key("é" * 201)  # 400 bytes: hashed, distinct
    assert safe_key(long_key + "1") != safe_key(long_key + "2")


async def test_long_and_odd_keys_round_trip(memcached_server: Any) -> None:
    store = MemcachedStore(memcached_server.host, memcached_server.port, prefix=unique_prefix(), timeout=2.0)
    try:
        keys = ["ns:" + "k" * 300, "ns:with space", "ns:tab\tand\nnewline", "ns:ünïcödé", "ns:" + "é" * 130]
        for index, key in enumerate(keys):
            await store.set(key, f"v{index}".encode(), 60)
        assert [await store.get(key) for key in keys] == [f"v{i}".encode() for i in range(len(keys))]
        assert await store.get("ns:" + "k" * 301) is None
    finally:
        await store.close()


async def test_oversize_values_are_skipped_and_counted(memcached_server: Any) -> None:
    store = MemcachedStore(memcached_server.host, memcached_server.port, prefix=unique_prefix(), timeout=2.0)
    try:
        await store.set("big", b"x" * (1024 * 1024), 60)  # not an error
        assert store.oversize_skipped == 1
        assert await store.get("big") is None
        await store.set("fits", b"x" * (1024 * 1024 - 4096), 60)
        assert store.oversize_skipped == 1
        assert await store.get("fits") == b"x" * (1024 * 1024 - 4096)

        small = MemcachedStore(memcached_server.host, memcached_server.port, prefix=unique_prefix(), max_item_size=1000)
        await small.set("k", b"y" * 2000, 60)
        assert small.oversize_skipped == 1 and await small.get("k") is None
        await small.close()
    finally:
        await store.close()


async def test_clear_prefix_is_real_across_instances(memcached_server: Any) -> None:
    prefix = unique_prefix()
    a = MemcachedStore(memcached_server.host, memcached_server.port, prefix=prefix, timeout=2.0)
    b = MemcachedStore(memcached_server.host, memcached_server.port, prefix=prefix, timeout=2.0)
    try:
        await a.set("v1:tenant:scope:1", b"1", 60)
        await a.set("v1:tenant:scope:2", b"2", 60)
        await a.set("v1:other:scope:1", b"3", 60)
        assert await b.get("v1:tenant:scope:1") == b"1"
        await b.clear("v1:tenant:")
        assert await a.get("v1:tenant:scope:1") is None
        assert await a.get("v1:tenant:scope:2") is None
        assert await a.get("v1:other:scope:1") == b"3"
        await a.set("v1:tenant:scope:1", b"new", 60)  # writes after a clear are visible again
        assert await b.get("v1:tenant:scope:1") == b"new"
        await a.clear("v1:")
        assert await b.get("v1:other:scope:1") is None
        with pytest.raises(StoreError):
            await a.clear("v1:ten")  # not a ':' boundary: refused, not faked
    finally:
        await a.close()
        await b.close()


async def test_evicted_generation_never_resurrects(memcached_server: Any) -> None:
    prefix = unique_prefix()
    store = MemcachedStore(memcached_server.host, memcached_server.port, prefix=prefix, timeout=2.0)
    try:
        await store.set("ns:k", b"v", 60)
        cache = store.cache
        await cache.delete(store._generation_key("ns:"))  # as if LRU evicted the token
        assert await store.get("ns:k") is None
        await store.set("ns:k", b"w", 60)
        assert await store.get("ns:k") == b"w"
    finally:
        await store.close()


async def test_down_memcached_raises_store_error() -> None:
    from tests.support.servers import free_port

    store = MemcachedStore("127.0.0.1", free_port(), prefix=unique_prefix(), failure_threshold=2)
    try:
        for _ in range(2):
            with pytest.raises(StoreError):
                await store.get("k")
        assert store.breaker.state == "open"
    finally:
        await store.close()


async def test_server_limit_below_configured_is_a_counted_skip(memcached_server: Any) -> None:
    store = MemcachedStore(
        memcached_server.host, memcached_server.port, prefix=unique_prefix(), max_item_size=4 * 1024 * 1024
    )
    try:
        await store.set("k", b"x" * (2 * 1024 * 1024), 60)  # the server's -I is 1 MiB: it refuses
        assert store.oversize_skipped == 1
        assert await store.get("k") is None
        assert store.breaker.state == "closed"  # a refusal is not a failure of the server
    finally:
        await store.close()


@pytest.mark.parametrize("key_prefix", ["v2", "a:b:c:d:e:f:g:h:"])
def test_any_key_prefix_fits_memcached_and_a_store_too_shallow_is_refused_when_the_cache_is_built(
    key_prefix: str,
) -> None:
    """A cache's key space is one `:`-terminated segment whatever its `key_prefix` (`_keys.key_space`), so
    memcached clears it; a store that versions fewer segments than a namespace's prefix is refused."""
    store = MemcachedStore("127.0.0.1", 11211, prefix="llmc:")  # no connection is made to build a cache
    assert Cache(store=store, key_prefix=key_prefix).key_space.count(":") == 1
    shallow = MemcachedStore("127.0.0.1", 11211, prefix="llmc:", generation_depth=1)
    with pytest.raises(ValueError, match="does not fit the memcached store"):
        Cache(store=shallow, key_prefix=key_prefix)
    with pytest.raises(ValueError, match="does not fit the tiered:memory[+]memcached store"):
        Cache(store=TieredStore(MemoryStore(), shallow), key_prefix=key_prefix)


async def test_a_colon_terminated_key_prefix_clears_everything_and_each_namespace(memcached_server: Any) -> None:
    store = MemcachedStore(memcached_server.host, memcached_server.port, prefix=unique_prefix(), timeout=2.0)
    cache = Cache(store=store, key_prefix="v2:")
    try:
        await store.set("v2:default:a", b"1", 60)
        await store.set("v2:other:b", b"2", 60)
        await cache.clear("default")
        assert (await store.get("v2:default:a"), await store.get("v2:other:b")) == (None, b"2")
        await cache.clear()
        assert await store.get("v2:other:b") is None
    finally:
        await store.close()
