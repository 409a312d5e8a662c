"""Every store honours the protocol: get/set/delete, TTL expiry, prefix-only clears, batches."""

from __future__ import annotations

from typing import Any

from llm_cache.middleware.stores.base import get_many, set_many

from .conftest import eventually


async def test_get_set_delete(any_store: Any) -> None:
    assert await any_store.get("missing") is None
    await any_store.set("a:1", b"\x00value\xff", None)
    assert await any_store.get("a:1") == b"\x00value\xff"
    await any_store.set("a:1", b"second", 60)
    assert await any_store.get("a:1") == b"second"
    await any_store.delete("a:1")
    assert await any_store.get("a:1") is None
    await any_store.delete("a:1")  # deleting a missing key is fine
    assert isinstance(any_store.name, str) and any_store.name


async def test_ttl_expiry(any_store: Any) -> None:
    await any_store.set("short", b"v", 0.3)
    await any_store.set("long", b"v", 300)
    assert await any_store.get("long") == b"v"

    async def expired() -> bool:
        return await any_store.get("short") is None

    await eventually(expired, deadline=5.0, what="short TTL entry expiring")
    assert await any_store.get("long") == b"v"


async def test_clear_prefix_only_removes_that_prefix(any_store: Any) -> None:
    for key in ("ns1:a", "ns1:b", "ns1:sub:c", "ns2:a", "ns10:a", "other"):
        await any_store.set(key, key.encode(), 300)
    await any_store.clear("ns1:")
    assert [await any_store.get(k) for k in ("ns1:a", "ns1:b", "ns1:sub:c")] == [None, None, None]
    assert await any_store.get("ns2:a") == b"ns2:a"
    assert await any_store.get("ns10:a") == b"ns10:a"
    assert await any_store.get("other") == b"other"
    await any_store.clear(None)
    assert [await any_store.get(k) for k in ("ns2:a", "ns10:a", "other")] == [None, None, None]
    await any_store.set("after", b"x", 300)  # the store still works after a full clear
    assert await any_store.get("after") == b"x"


async def test_batches(any_store: Any) -> None:
    items = {f"batch:{i}": f"value-{i}".encode() for i in range(25)}
    await set_many(any_store, items, 300)
    keys = [*items, "batch:missing"]
    assert await get_many(any_store, keys) == [*items.values(), None]
