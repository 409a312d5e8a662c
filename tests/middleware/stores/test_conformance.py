"""Every store honours the protocol: get/set/delete, TTL expiry, prefix-only clears, batches."""

from __future__ import annotations

from typing import Any

import pytest

from llm_cache.middleware.stores import StoreError
from llm_cache.middleware.stores.base import get_many, invalidate_tags, set_many
from tests.support.stores import declared_abilities_match_methods

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


# -- declared abilities: each store says what it can do, and does it -----------------------------


async def test_a_store_has_the_methods_of_exactly_the_abilities_it_declares(any_store: Any) -> None:
    assert declared_abilities_match_methods(any_store) == {}


async def test_a_store_that_declares_its_size_counts_what_it_holds(any_store: Any) -> None:
    if not any_store.abilities.size:
        pytest.skip(f"{any_store.name} does not declare its size")
    entries, size = any_store.current_size()
    await any_store.set("sized:a", b"x" * 100, 300)
    after = any_store.current_size()
    assert after[0] == entries + 1 and after[1] >= size + 100


async def test_a_store_that_declares_sync_reads_reads_without_an_await_what_get_reads(any_store: Any) -> None:
    if not any_store.abilities.sync_reads:
        pytest.skip(f"{any_store.name} does not declare sync reads")
    await any_store.set("now:a", b"v", 300)
    await any_store.set("now:gone", b"w", 300)
    await any_store.delete("now:gone")
    for key in ("now:a", "now:gone", "now:missing"):
        assert any_store.get_now(key) == await any_store.get(key)
    assert any_store.get_now("now:a") == b"v"


async def test_a_store_that_declares_ttl_reads_tells_the_time_left(any_store: Any) -> None:
    if not any_store.abilities.ttl_reads:
        pytest.skip(f"{any_store.name} does not declare ttl reads")
    await any_store.set("ttl:a", b"v", 300)
    await any_store.set("ttl:forever", b"w", None)
    value, left = await any_store.get_with_ttl("ttl:a")
    assert value == b"v" and left is not None and 0 < left <= 300
    assert await any_store.get_with_ttl("ttl:forever") == (b"w", None)
    assert (await any_store.get_with_ttl("ttl:missing"))[0] is None


async def test_a_store_that_declares_locking_lets_one_owner_hold_a_key(any_store: Any) -> None:
    if not any_store.abilities.locking:
        pytest.skip(f"{any_store.name} does not declare locking")
    token = await any_store.try_lock("lock:a", 30)
    assert token is not None
    assert await any_store.try_lock("lock:a", 30) is None
    assert await any_store.unlock("lock:a", "not-the-token") is False
    assert await any_store.unlock("lock:a", token) is True
    again = await any_store.try_lock("lock:a", 30)
    assert again is not None
    await any_store.unlock("lock:a", again)


async def test_a_store_that_declares_pubsub_delivers_a_published_message(any_store: Any) -> None:
    if not any_store.abilities.pubsub:
        pytest.skip(f"{any_store.name} does not declare pub/sub")
    channel = f"conformance:{any_store.name}:{id(any_store)}"
    client = any_store.pubsub_client()
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        confirmed = await pubsub.get_message(timeout=5.0)
        assert confirmed is not None and confirmed["type"] == "subscribe"
        await any_store.publish(channel, b"hello")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
        assert message is not None and message["data"] == b"hello"
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_a_store_that_declares_prefix_rules_accepts_the_cache_prefixes(any_store: Any) -> None:
    if not any_store.abilities.prefix_rules:
        pytest.skip(f"{any_store.name} declares no prefix rules")
    any_store.check_prefix("llmc:")  # the prefix a cache clears by default: never refused
    for prefix in ("no-colon", "a:b:c:d:e:f:g:h:"):
        try:
            any_store.check_prefix(prefix)
        except StoreError:
            with pytest.raises(StoreError):  # what it refuses up front, its clear refuses too
                await any_store.clear(prefix)


async def _tagged(store: Any, key: str, tags: list[str], ttl: float | None) -> None:
    """What the engine's store step does: index the tags, then write."""
    await store.tag(key, tags, ttl)
    await store.set(key, key.encode(), ttl)


async def test_a_store_that_declares_tags_deletes_exactly_the_keys_of_any_tag(every_store: Any) -> None:
    if not every_store.abilities.tags:
        with pytest.raises(StoreError, match="cannot invalidate by tag"):
            await invalidate_tags(every_store, ["doc:1"])
        return
    await _tagged(every_store, "ns:a", ["doc:1", "model:m"], 300)
    await _tagged(every_store, "ns:b", ["doc:2"], None)
    await _tagged(every_store, "ns:c", ["doc:3", "model:m"], 300)
    await _tagged(every_store, "ns:d", ["doc:4"], 300)
    await every_store.set("ns:untagged", b"v", 300)

    removed = await invalidate_tags(every_store, ["doc:1", "doc:2", "doc:none"])

    assert sorted(removed) == ["ns:a", "ns:b"]
    assert [await every_store.get(k) for k in ("ns:a", "ns:b")] == [None, None]
    assert [await every_store.get(k) for k in ("ns:c", "ns:d", "ns:untagged")] == [b"ns:c", b"ns:d", b"v"]
    assert sorted(await invalidate_tags(every_store, ["model:m"])) == ["ns:a", "ns:c"]  # a's own record was kept
    assert await every_store.get("ns:c") is None and await every_store.get("ns:d") == b"ns:d"
    assert await invalidate_tags(every_store, ["doc:1"]) == []  # taken by the first invalidation


async def test_a_tag_whose_entries_expired_on_their_own_still_invalidates(every_store: Any) -> None:
    if not every_store.abilities.tags:
        pytest.skip(f"{every_store.name} keeps no tag index")
    await _tagged(every_store, "ns:short", ["doc:1"], 0.3)
    await _tagged(every_store, "ns:long", ["doc:1"], 300)

    async def expired() -> bool:
        return await every_store.get("ns:short") is None

    await eventually(expired, what="the short entry expired")
    assert "ns:long" in await invalidate_tags(every_store, ["doc:1"])
    assert await every_store.get("ns:long") is None
