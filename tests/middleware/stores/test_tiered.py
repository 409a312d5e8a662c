"""TieredStore: back-fill TTL bound, writes to both tiers, cross-instance invalidation, staleness bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest

from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.stores.redis import RedisStore
from llm_cache.middleware.stores.tiered import TieredStore
from tests.support.servers import free_port
from tests.test_log_limit import Clock

from .conftest import SLACK, eventually, unique_prefix


def l1_remaining(store: MemoryStore, key: str) -> float | None:
    """Seconds left on an L1 entry (MemoryStore keeps monotonic deadlines)."""
    expires_at = store._data[key][1]
    return None if expires_at is None else expires_at - time.monotonic()


async def pair(url: str, prefix: str, **options: Any) -> tuple[TieredStore, TieredStore]:
    stores = []
    for _ in range(2):
        store = TieredStore(MemoryStore(), RedisStore(url, prefix=prefix, **SLACK), channel=f"{prefix}inval", **options)
        await store.start()
        stores.append(store)
    return stores[0], stores[1]


async def test_backfill_ttl_never_exceeds_remaining_l2_ttl(redis_server: Any) -> None:
    prefix = unique_prefix()
    l2 = RedisStore(redis_server.url, prefix=prefix, **SLACK)
    l1 = MemoryStore()
    store = TieredStore(l1, RedisStore(redis_server.url, prefix=prefix, **SLACK), l1_max_ttl=5.0, channel=f"{prefix}c")
    await store.start()
    try:
        await l2.set("short", b"s", 1.5)  # written by another pod: not in this L1
        await l2.set("long", b"l", 100)
        await l2.set("forever", b"f", None)
        assert await store.get("short") == b"s"
        assert await store.get("long") == b"l"
        assert await store.get("forever") == b"f"
        short, long_, forever = (l1_remaining(l1, k) for k in ("short", "long", "forever"))
        assert short is not None and 0 < short <= 1.5
        assert long_ is not None and 4.0 < long_ <= 5.0
        assert forever is not None and 4.0 < forever <= 5.0

        async def gone_from_both() -> bool:
            return await store.get("short") is None

        await eventually(gone_from_both, deadline=5.0, what="short entry expiring from L1 and L2")
    finally:
        await store.close()
        await l2.close()


async def test_backfill_from_non_redis_l2_uses_l1_cap() -> None:
    l1, l2 = MemoryStore(), MemoryStore()
    store = TieredStore(l1, l2, l1_max_ttl=2.0)
    await l2.set("k", b"v", 100)
    assert await store.get("k") == b"v"
    remaining = l1_remaining(l1, "k")
    assert remaining is not None and 1.0 < remaining <= 2.0
    await store.set("w", b"x", 60)
    assert await l2.get("w") == b"x" and await l1.get("w") == b"x"
    await store.close()


async def test_writes_reach_both_tiers(redis_server: Any) -> None:
    prefix = unique_prefix()
    l1 = MemoryStore()
    l2 = RedisStore(redis_server.url, prefix=prefix, **SLACK)
    store = TieredStore(l1, RedisStore(redis_server.url, prefix=prefix, **SLACK), channel=f"{prefix}c")
    await store.start()
    try:
        await store.set("k", b"v", 60)
        assert await l1.get("k") == b"v"
        assert await l2.get("k") == b"v"
        remaining = l1_remaining(l1, "k")
        assert remaining is not None and remaining <= store.l1_max_ttl
        await store.delete("k")
        assert await l1.get("k") is None and await l2.get("k") is None
    finally:
        await store.close()
        await l2.close()


async def test_delete_on_a_is_not_served_from_b_l1(redis_server: Any) -> None:
    a, b = await pair(redis_server.url, unique_prefix(), l1_max_ttl=60.0)
    try:
        await a.set("k", b"v1", 300)

        async def b_saw_the_write() -> bool:  # A's write is itself an invalidation for B
            return b.received >= 1

        await eventually(b_saw_the_write, deadline=2.0, what="B receiving A's write")
        assert await b.get("k") == b"v1"
        assert await b.l1.get("k") == b"v1"  # B's L1 holds it now

        await a.delete("k")

        async def b_l1_dropped() -> bool:
            return await b.l1.get("k") is None

        await eventually(b_l1_dropped, deadline=2.0, what="B's L1 receiving A's delete")
        assert await b.get("k") is None
        assert b.received >= 2
    finally:
        await a.close()
        await b.close()


async def test_clear_and_overwrite_on_a_reach_b(redis_server: Any) -> None:
    a, b = await pair(redis_server.url, unique_prefix(), l1_max_ttl=60.0)
    try:
        for key in ("ns1:x", "ns1:y", "ns2:x"):
            await a.set(key, b"old", 300)

        async def b_saw_the_writes() -> bool:
            return b.received >= 3

        await eventually(b_saw_the_writes, deadline=2.0, what="B receiving A's writes")
        for key in ("ns1:x", "ns1:y", "ns2:x"):
            assert await b.get(key) == b"old"
            assert await b.l1.get(key) == b"old"
        await a.clear("ns1:")

        async def cleared() -> bool:
            return await b.l1.get("ns1:x") is None and await b.l1.get("ns1:y") is None

        await eventually(cleared, deadline=2.0, what="B's L1 receiving A's prefix clear")
        assert await b.get("ns1:x") is None
        assert await b.get("ns2:x") == b"old"

        await a.set("ns2:x", b"new", 300)  # an overwrite (e.g. a forced refresh) invalidates too

        async def refreshed() -> bool:
            return await b.get("ns2:x") == b"new"

        await eventually(refreshed, deadline=2.0, what="B seeing A's overwrite")
    finally:
        await a.close()
        await b.close()


async def test_lost_invalidation_bounded_by_l1_max_ttl(redis_server: Any) -> None:
    """Worst case: B never hears of the delete (no bus); its L1 serves stale for at most l1_max_ttl."""
    prefix = unique_prefix()
    a = TieredStore(MemoryStore(), RedisStore(redis_server.url, prefix=prefix, **SLACK), bus=None, l1_max_ttl=0.5)
    b = TieredStore(MemoryStore(), RedisStore(redis_server.url, prefix=prefix, **SLACK), l1_max_ttl=0.5)
    b.bus = None  # simulate a lost message: B is not subscribed to anything
    try:
        await a.set("k", b"v", 300)
        assert await b.get("k") == b"v"
        filled_at = time.monotonic()
        await a.delete("k")
        assert await b.get("k") == b"v"  # stale, within the documented bound

        async def fresh() -> bool:
            return await b.get("k") is None

        await eventually(fresh, deadline=3.0, what="stale L1 entry expiring")
        assert time.monotonic() - filled_at <= 0.5 + 0.25
    finally:
        await a.close()
        await b.close()


async def test_resubscribe_after_outage_empties_l1(redis_factory: Any) -> None:
    server = redis_factory()
    prefix = unique_prefix()
    store = TieredStore(
        MemoryStore(),
        RedisStore(server.url, prefix=prefix, failure_threshold=1000, **SLACK),
        channel=f"{prefix}c",
        l1_max_ttl=60.0,
    )
    await store.start()
    try:
        await store.set("k", b"v", 300)
        assert await store.l1.get("k") == b"v"
        server.stop()
        server.wait_down()

        async def noticed() -> bool:
            return not store.subscribed

        await eventually(noticed, deadline=5.0, what="subscriber noticing the outage")
        assert await store.get("k") == b"v"  # L1 still serves while Redis is down (bounded)
        server.start()

        async def resubscribed() -> bool:
            return store.subscribed and store.resubscribed >= 2

        await eventually(resubscribed, deadline=10.0, what="subscriber reconnecting")
        assert await store.l1.get("k") is None  # messages missed while down: L1 started empty
    finally:
        await store.close()


async def test_invalidation_over_cluster_and_sentinel(redis_cluster: Any, redis_sentinel: Any) -> None:
    from llm_cache.middleware.stores.redis import RedisClusterStore, RedisSentinelStore

    prefix = unique_prefix()
    makers = [
        lambda: RedisClusterStore(startup_nodes=redis_cluster.startup_nodes, prefix=prefix, **SLACK),
        lambda: RedisSentinelStore(redis_sentinel.service_name, redis_sentinel.sentinels, prefix=prefix, **SLACK),
    ]
    for make in makers:
        a = TieredStore(MemoryStore(), make(), channel=f"{prefix}inval", invalidate_on_set=False)
        b = TieredStore(MemoryStore(), make(), channel=f"{prefix}inval", invalidate_on_set=False)
        await a.start()
        await b.start()
        try:
            await a.set("k", b"v", 300)
            assert await b.get("k") == b"v" and await b.l1.get("k") == b"v"
            await a.delete("k")

            async def dropped(store: TieredStore = b) -> bool:
                return await store.l1.get("k") is None

            await eventually(dropped, deadline=2.0, what=f"invalidation over {a.l2.name}")
        finally:
            await a.close()
            await b.close()


async def test_a_tiered_store_locks_in_its_shared_level_only_when_that_level_can(redis_server: Any) -> None:
    prefix = unique_prefix()
    first, second = await pair(redis_server.url, prefix)
    try:
        token = await first.try_lock("k", 5.0)
        assert token is not None
        assert await second.try_lock("k", 5.0) is None  # another pod sees the lock through L2
        assert await first.unlock("k", token)
    finally:
        await first.close()
        await second.close()
    unlockable = TieredStore(MemoryStore(), MemoryStore())
    assert not hasattr(unlockable, "try_lock") and not unlockable.abilities.locking


async def test_a_pod_never_serves_what_its_own_delete_or_overwrite_replaced(redis_server: Any) -> None:
    """A read that went to L2 before this pod's own delete or set must not write the old value back to L1."""
    prefix = unique_prefix()
    store = TieredStore(MemoryStore(), RedisStore(redis_server.url, prefix=prefix, **SLACK), channel=f"{prefix}c")
    await store.start()
    try:
        for round_ in range(100):
            key = f"k{round_}"
            await store.set(key, b"old", 60)
            await store.l1.delete(key)  # as on a pod that has not read it yet: the next read goes to L2
            if round_ % 2:
                await asyncio.gather(store.get(key), store.delete(key))
                assert await store.get(key) is None, f"round {round_}: deleted entry served"
            else:
                await asyncio.gather(store.get(key), store.set(key, b"new", 60))
                assert await store.get(key) == b"new", f"round {round_}: overwritten entry served"
    finally:
        await store.close()


async def test_a_tag_invalidation_on_one_pod_empties_the_other_pods_l1(redis_server: Any) -> None:
    a, b = await pair(redis_server.url, unique_prefix(), l1_max_ttl=60.0)
    try:
        for store in (a, b):
            assert store.abilities.tags  # L2 is Redis: its tag index serves both pods
        await a.tag("doc-entry", ["doc:1"], 300)
        await a.set("doc-entry", b"v1", 300)
        await a.set("other", b"v2", 300)

        async def b_saw_the_writes() -> bool:
            return b.received >= 2

        await eventually(b_saw_the_writes, deadline=2.0, what="B receiving A's writes")
        assert [await b.get("doc-entry"), await b.get("other")] == [b"v1", b"v2"]  # in B's L1 now

        assert await a.invalidate_tags(["doc:1"]) == ["doc-entry"]

        async def b_l1_dropped() -> bool:
            return await b.l1.get("doc-entry") is None

        await eventually(b_l1_dropped, deadline=2.0, what="B's L1 receiving A's tag invalidation")
        assert await b.get("doc-entry") is None
        assert await b.l1.get("other") == b"v2"  # untouched: it had no such tag
    finally:
        await a.close()
        await b.close()


class PausingRedisStore(RedisStore):
    """A real Redis L2 that holds each change after Redis applied it, until `resume` is set: the
    moment a caller's cancel (a client gone, a timeout) would land with the reply in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.applied = asyncio.Event()
        self.resume = asyncio.Event()
        self.pausing = False

    async def _paused(self) -> None:
        if self.pausing:
            self.applied.set()
            await self.resume.wait()

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await super().set(key, value, ttl)
        await self._paused()

    async def delete(self, key: str) -> None:
        await super().delete(key)
        await self._paused()

    async def clear(self, prefix: str | None = None) -> None:
        await super().clear(prefix)
        await self._paused()

    async def invalidate_tags(self, tags: Any) -> list[str]:
        keys = await super().invalidate_tags(tags)
        await self._paused()
        return keys


@pytest.mark.parametrize("change", ["delete", "clear", "invalidate_tags", "overwrite"])
async def test_a_change_cancelled_after_l2_applied_it_still_reaches_the_other_pods_l1(
    redis_server: Any, change: str
) -> None:
    """Before, the cancel landed between the L2 write and the invalidation message: L2 had the change,
    the other pods never heard of it and served the old entry from their L1 for up to `l1_max_ttl`."""
    prefix = unique_prefix()
    l2 = PausingRedisStore(redis_server.url, prefix=prefix, **SLACK)
    a = TieredStore(MemoryStore(), l2, channel=f"{prefix}inval", l1_max_ttl=60.0)
    b = TieredStore(
        MemoryStore(), RedisStore(redis_server.url, prefix=prefix, **SLACK), channel=f"{prefix}inval", l1_max_ttl=60.0
    )
    await a.start()
    await b.start()
    try:
        await a.tag("k", ["doc:1"], 300)
        await a.set("k", b"old", 300)

        async def b_saw_the_write() -> bool:
            return b.received >= 1

        await eventually(b_saw_the_write, deadline=2.0, what="B receiving A's write")
        assert await b.get("k") == b"old"
        assert await b.l1.get("k") == b"old"  # B's L1 holds it now, for 60 s

        l2.pausing = True
        operations = {
            "delete": lambda: a.delete("k"),
            "clear": lambda: a.clear(None),
            "invalidate_tags": lambda: a.invalidate_tags(["doc:1"]),
            "overwrite": lambda: a.set("k", b"new", 300),
        }
        caller = asyncio.ensure_future(operations[change]())
        await asyncio.wait_for(l2.applied.wait(), 10.0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        l2.resume.set()

        async def b_l1_dropped() -> bool:
            return await b.l1.get("k") is None

        await eventually(b_l1_dropped, deadline=5.0, what=f"B's L1 hearing of A's cancelled {change}")
        assert await b.get("k") == (b"new" if change == "overwrite" else None)
    finally:
        l2.resume.set()
        await a.close()
        await b.close()


async def test_a_redis_that_stays_down_is_one_warning_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The listener retries a lost channel every 2 s at most and logged a WARNING each time: one dead
    Redis wrote 1800 lines an hour. One an interval now, saying how many were not logged."""
    prefix = unique_prefix()
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}", prefix=prefix, failure_threshold=1000, **SLACK)
    store = TieredStore(MemoryStore(), dead, channel=f"{prefix}c")
    clock = Clock()
    store.warnings.clock = clock
    try:
        with caplog.at_level(logging.WARNING, "llm_cache.middleware.stores.tiered"):
            with contextlib.suppress(Exception):
                await store.get("k")  # starts the listener

            async def failed(times: int) -> bool:
                return store.lost >= times

            await eventually(lambda: failed(4), deadline=30.0, what="the listener failing four times")
            clock.now += 61
            lost = store.lost
            await eventually(lambda: failed(lost + 1), deadline=30.0, what="the listener failing once more")
    finally:
        await store.close()
    lines = [r.getMessage() for r in caplog.records if "invalidation channel lost" in r.getMessage()]
    assert len(lines) == 2
    assert "more like it since the last such WARNING" in lines[1]
