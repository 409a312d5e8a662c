"""Redis specifics: key prefix, PX expiry, Cluster spread, Sentinel, per-loop clients, circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as syncredis

from llm_cache.middleware.stores import StoreError
from llm_cache.middleware.stores.breaker import CircuitBreaker, CircuitOpenError
from llm_cache.middleware.stores.redis import RedisClusterStore, RedisSentinelStore, RedisStore, glob_escape

from .conftest import SLACK, eventually, unique_prefix


async def test_prefix_and_px_expiry(redis_server: Any) -> None:
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, **SLACK)
    try:
        await store.set("k", b"v", 12.5)
        raw = syncredis.Redis.from_url(redis_server.url)
        assert raw.get(prefix + "k") == b"v"
        assert 11_000 < raw.pttl(prefix + "k") <= 12_500
        await store.set("forever", b"v", None)
        assert raw.pttl(prefix + "forever") == -1
        value, remaining = await store.get_with_ttl("k")
        assert value == b"v" and remaining is not None and 11 < remaining <= 12.5
        assert await store.get_with_ttl("forever") == (b"v", None)
        assert await store.get_with_ttl("missing") == (None, None)
        raw.close()
    finally:
        await store.close()


async def test_host_port_options(redis_server: Any) -> None:
    store = RedisStore(host=redis_server.host, port=redis_server.port, db=1, prefix=unique_prefix(), **SLACK)
    try:
        await store.set("k", b"v", 5)
        assert await store.get("k") == b"v"
        assert await store.ping()
    finally:
        await store.close()


def test_glob_escape() -> None:
    assert glob_escape("a*b?c[d]e\\") == "a\\*b\\?c\\[d\\]e\\\\"


async def test_clear_treats_prefix_literally(redis_server: Any) -> None:
    store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
    try:
        await store.set("a*:1", b"1", 60)
        await store.set("ab:1", b"2", 60)
        await store.clear("a*:")
        assert await store.get("a*:1") is None
        assert await store.get("ab:1") == b"2"
    finally:
        await store.close()


async def test_clear_in_many_batches(redis_server: Any) -> None:
    store = RedisStore(redis_server.url, prefix=unique_prefix(), scan_count=50, **SLACK)
    try:
        await store.set_many({f"x:{i}": b"v" for i in range(500)}, 60)
        await store.set("y:1", b"keep", 60)
        await store.clear("x:")
        assert await store.get_many([f"x:{i}" for i in range(500)]) == [None] * 500
        assert await store.get("y:1") == b"keep"
    finally:
        await store.close()


async def test_one_client_per_loop(redis_server: Any) -> None:
    store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
    try:
        await store.set("k", b"v", 60)
        first = store.client()
        await store.get("k")
        assert store.client() is first  # reused, not one per request

        result: dict[str, Any] = {}

        def other_loop() -> None:
            async def run() -> None:
                result["value"] = await store.get("k")
                result["client"] = store.client()

            asyncio.run(run())

        thread = threading.Thread(target=other_loop)
        thread.start()
        thread.join(timeout=10)
        assert result["value"] == b"v"
        assert result["client"] is not first
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def cluster_store(redis_cluster: Any) -> AsyncIterator[tuple[str, RedisClusterStore, list[syncredis.Redis]]]:
    """A Cluster store under a fresh prefix, and a plain client to each node to look behind it."""
    prefix = unique_prefix()
    store = RedisClusterStore(startup_nodes=redis_cluster.startup_nodes, prefix=prefix, **SLACK)
    raws = [syncredis.Redis(host=n.host, port=n.port) for n in redis_cluster.nodes]
    try:
        yield prefix, store, raws
    finally:
        await store.close()
        for raw in raws:
            raw.close()


async def test_cluster_keys_spread_over_all_nodes(redis_cluster: Any) -> None:
    async with cluster_store(redis_cluster) as (prefix, store, raws):
        keys = [f"ns:scope:{i:04d}" for i in range(300)]
        await store.set_many({key: key.encode() for key in keys}, 60)
        slots = {raws[0].cluster("keyslot", prefix + key) for key in keys}
        assert len(slots) > 250  # no hash tags: keys land on many slots
        per_node = [len(raw.keys(prefix.replace(":", "\\:") + "*")) for raw in raws]
        assert all(count > 0 for count in per_node), per_node
        assert sum(per_node) == 300
        assert await store.get_many(keys) == [key.encode() for key in keys]
        await store.clear("ns:")
        assert [len(raw.keys(prefix.replace(":", "\\:") + "*")) for raw in raws] == [0, 0, 0]


async def test_sentinel_discovers_master(redis_sentinel: Any) -> None:
    prefix = unique_prefix()
    store = RedisSentinelStore(redis_sentinel.service_name, redis_sentinel.sentinels, prefix=prefix, **SLACK)
    try:
        await store.set("k", b"v", 60)
        raw = syncredis.Redis(host=redis_sentinel.master.host, port=redis_sentinel.master.port)
        assert raw.get(prefix + "k") == b"v"  # written to the master the sentinel names
        raw.close()
    finally:
        await store.close()


async def test_unreachable_redis_raises_store_error_fast() -> None:
    from tests.support.servers import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", failure_threshold=100)
    try:
        with pytest.raises(StoreError):
            await store.get("k")
    finally:
        await store.close()


async def test_circuit_breaker_opens_and_recovers(redis_factory: Any) -> None:
    server = redis_factory()
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown=2.0, clock=lambda: now[0], name="redis")
    store = RedisStore(server.url, prefix=unique_prefix(), breaker=breaker, **SLACK)
    try:
        await store.set("k", b"v", 60)
        assert breaker.state == "closed"

        server.stop()
        server.wait_down()
        for _ in range(3):
            with pytest.raises(StoreError) as failure:
                await store.get("k")
            assert not isinstance(failure.value, CircuitOpenError)  # a real network failure
        assert breaker.state == "open" and breaker.opened == 1

        # open: skipped without touching the network, even once the server is back
        server.start()  # same port
        with pytest.raises(CircuitOpenError):
            await store.get("k")
        assert breaker.rejected == 1

        # after the cool-off one probe goes through; success closes the breaker
        now[0] += 2.0
        assert breaker.state == "half_open"
        assert await store.get("k") is None  # the restarted server is empty (no persistence)
        assert breaker.state == "closed"
        await store.set("k", b"again", 60)
        assert await store.get("k") == b"again"
    finally:
        await store.close()


async def test_half_open_probe_failure_reopens(redis_factory: Any) -> None:
    server = redis_factory()
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=lambda: now[0])
    store = RedisStore(server.url, prefix=unique_prefix(), breaker=breaker, **SLACK)
    try:
        server.stop()
        server.wait_down()
        with pytest.raises(StoreError):
            await store.get("k")
        assert breaker.state == "open"
        now[0] += 1.0
        with pytest.raises(StoreError) as probe:
            await store.get("k")  # the probe itself fails
        assert not isinstance(probe.value, CircuitOpenError)
        assert breaker.state == "open" and breaker.opened == 2
        with pytest.raises(CircuitOpenError):
            await store.get("k")
    finally:
        await store.close()


async def test_breaker_recovers_in_real_time(redis_factory: Any) -> None:
    """Wall-clock version: hits resume within a short cool-off after Redis comes back."""
    server = redis_factory()
    store = RedisStore(server.url, prefix=unique_prefix(), failure_threshold=2, cooldown=0.2, **SLACK)
    try:
        server.stop()
        server.wait_down()
        for _ in range(3):
            with pytest.raises(StoreError):
                await store.get("k")
        server.start()

        async def recovered() -> bool:
            try:
                await store.set("k", b"v", 60)
                return await store.get("k") == b"v"
            except StoreError:
                return False

        await eventually(recovered, deadline=5.0, what="redis store recovering")
    finally:
        await store.close()


async def test_a_hit_is_one_get_command(redis_factory: Any) -> None:
    server = redis_factory()  # private server: nobody else's commands in the stats
    store = RedisStore(server.url, prefix=unique_prefix(), **SLACK)
    raw = syncredis.Redis.from_url(server.url)
    try:
        await store.set("k", b"v" * 1000, 60)
        assert await store.get("k") == b"v" * 1000  # connection set up (HELLO/SETINFO) before counting
        raw.config_resetstat()
        for _ in range(10):
            assert await store.get("k") == b"v" * 1000
        stats = raw.info("commandstats")
        ignored = ("cmdstat_config", "cmdstat_info")
        ours = {name: s["calls"] for name, s in stats.items() if not name.startswith(ignored)}
        assert ours == {"cmdstat_get": 10}
    finally:
        raw.close()
        await store.close()


async def test_store_serves_the_sync_transports_background_loop(redis_server: Any) -> None:
    from llm_cache.middleware._loop_thread import LoopThread

    store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
    runner = LoopThread()
    try:
        await store.set("k", b"v", 60)
        assert await asyncio.to_thread(runner.run, store.get("k"), 5) == b"v"
        assert await asyncio.to_thread(runner.run, store.get("k"), 5) == b"v"
        assert len(store._clients) == 2  # one client per loop, reused across calls
        await asyncio.to_thread(runner.run, store.close(), 5)  # closes both loops' clients
        assert len(store._clients) == 0
    finally:
        runner.close()
        await store.close()


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_single_flight_lock_primitive(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "redis":
        store: RedisStore = RedisStore(request.getfixturevalue("redis_server").url, prefix=unique_prefix(), **SLACK)
    else:
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        store = RedisClusterStore(startup_nodes=nodes, prefix=unique_prefix(), **SLACK)
    try:
        token = await store.try_lock("k", 5.0)
        assert token is not None
        assert await store.try_lock("k", 5.0) is None  # held by someone else
        assert not await store.unlock("k", "not-the-owner")
        assert await store.unlock("k", token)
        short = await store.try_lock("k", 0.2)
        assert short is not None

        async def expired() -> bool:
            return await store.try_lock("k", 5.0) is not None

        await eventually(expired, deadline=5.0, what="lock expiring by PX")
    finally:
        await store.close()


async def test_a_cold_cluster_store_serves_a_burst_of_first_calls(redis_cluster: Any) -> None:
    """A pod's first requests arrive together: none may fail while the cluster client sets itself up."""
    store = RedisClusterStore(startup_nodes=redis_cluster.startup_nodes, prefix=unique_prefix(), **SLACK)
    try:
        await asyncio.gather(*(store.set(f"k:{i}", b"v", 60) for i in range(50)))
        assert await asyncio.gather(*(store.get(f"k:{i}") for i in range(50))) == [b"v"] * 50
    finally:
        await store.close()


async def test_outage_under_load_fails_fast_and_recovers_within_5s(redis_factory: Any) -> None:
    """Store level of the issue's kill-Redis-under-load check, with the default breaker settings."""
    server = redis_factory()
    store = RedisStore(server.url, prefix=unique_prefix())  # defaults: 0.25 s timeouts, 5 failures, 2 s
    await store.set("hot", b"v", 300)
    outcomes = {"hit": 0, "error": 0}
    slowest = 0.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        nonlocal slowest
        while not stop.is_set():
            started = loop.time()
            try:
                value = await store.get("hot")
                if value == b"v":
                    outcomes["hit"] += 1
                else:  # the restarted server is empty: put it back, as the engine would on a miss
                    await store.set("hot", b"v", 300)
            except StoreError:
                outcomes["error"] += 1
            slowest = max(slowest, loop.time() - started)
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(20)]
    try:

        async def hits_before() -> bool:
            return outcomes["hit"] > 100

        await eventually(hits_before, what="hits before the outage")
        server.stop()
        server.wait_down()

        async def errors_counted() -> bool:
            return store.breaker.state != "closed" and outcomes["error"] > 0

        await eventually(errors_counted, what="errors while Redis is down")
        server.start()
        back = loop.time()
        hits_at_restart = outcomes["hit"]

        async def hits_resume() -> bool:
            return outcomes["hit"] > hits_at_restart + 100

        await eventually(hits_resume, deadline=5.0, what="hits resuming after Redis is back")
        assert loop.time() - back < 5.0
        assert slowest < 1.0  # no call hung: each failed within its socket timeout or fast
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await store.close()
    for task in workers:
        assert task.exception() is None  # only StoreError ever escaped the store


async def test_a_tags_set_lives_as_long_as_its_longest_key(redis_server: Any) -> None:
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, **SLACK)
    raw = syncredis.Redis.from_url(redis_server.url)
    tag_key = prefix + "tags:{doc:1}"
    try:
        await store.tag("long", ["doc:1"], 300)
        await store.tag("short", ["doc:1"], 10)  # a shorter key never shortens the set's life
        assert 300_000 < raw.pttl(tag_key) <= 301_000
        await store.tag("forever", ["doc:1"], None)  # a key without expiry: the set keeps none either
        assert raw.pttl(tag_key) == -1
        await store.tag("later", ["doc:1"], 5)
        assert raw.pttl(tag_key) == -1
        assert set(raw.zrange(tag_key, 0, -1)) == {b"long", b"short", b"forever", b"later"}
    finally:
        await store.close()
        raw.close()


async def test_a_tags_index_drops_the_keys_whose_time_is_up_while_the_tag_is_written(redis_server: Any) -> None:
    """A tag written with every entry (`namespace:default`, `model:...`, a caller's `scope:`) is written
    again long before its set expires, so its set never expired: it kept every key ever written with the
    tag, entries long gone included. A caller sending new prompts grew Redis without bound (about 3 keys'
    names a request, for ever). The index now drops a key once its entry's time is up (+1 s)."""
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, **SLACK)
    raw = syncredis.Redis.from_url(redis_server.url)
    tag_key = prefix + "tags:{namespace:default}"
    try:
        for i in range(100):
            await store.tag(f"ns:s:{i:03d}", ["namespace:default"], 0.01)
        await store.tag("ns:s:long", ["namespace:default"], 300)
        await store.tag("ns:s:forever", ["namespace:default"], None)
        assert raw.zcard(tag_key) == 102

        async def trimmed() -> bool:
            await store.tag("ns:s:later", ["namespace:default"], 300)
            return int(raw.zcard(tag_key)) == 3

        await eventually(trimmed, deadline=10, what="the index dropping the keys whose time is up")
        assert raw.pttl(tag_key) == -1  # a key without expiry: the index keeps none either
        assert sorted(await store.invalidate_tags(["namespace:default"])) == ["ns:s:forever", "ns:s:later", "ns:s:long"]
    finally:
        await store.close()
        raw.close()


async def test_a_tag_indexed_before_the_index_dropped_keys_is_still_invalidated(redis_server: Any) -> None:
    """A set written by an earlier version (`{prefix}tag:{<tag>}`, a plain set) is taken with the new index."""
    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, **SLACK)
    raw = syncredis.Redis.from_url(redis_server.url)
    try:
        raw.sadd(prefix + "tag:{doc:1}", "ns:s:old")
        raw.set(prefix + "ns:s:old", b"v")
        await store.tag("ns:s:new", ["doc:1"], 300)
        assert sorted(await store.invalidate_tags(["doc:1"])) == ["ns:s:new", "ns:s:old"]
        assert raw.exists(prefix + "ns:s:old", prefix + "tag:{doc:1}", prefix + "tags:{doc:1}") == 0
    finally:
        await store.close()
        raw.close()


async def test_a_cluster_tag_invalidation_reads_one_slot_and_deletes_keys_on_every_node(redis_cluster: Any) -> None:
    async with cluster_store(redis_cluster) as (prefix, store, raws):
        keys = [f"ns:scope:{i:04d}" for i in range(60)]
        for key in keys:
            await store.tag(key, ["doc:1"], 60)
        await store.set_many({key: key.encode() for key in keys}, 60)
        assert len({raws[0].cluster("keyslot", prefix + key) for key in keys}) > 50  # spread over the nodes
        holders = [raw for raw in raws if raw.keys(prefix.replace(":", "\\:") + "tags:*")]
        assert len(holders) == 1  # the tag's set is one key in one slot, on one node: no scan needed

        assert sorted(await store.invalidate_tags(["doc:1"])) == keys

        assert [len(raw.keys(prefix.replace(":", "\\:") + "*")) for raw in raws] == [0, 0, 0]


async def test_a_write_the_server_refuses_is_not_stored_and_never_cuts_the_store_off(redis_factory: Any) -> None:
    """A Redis at `maxmemory` with `noeviction` answers each write with an OOM error, and keeps
    answering reads. Each refusal (of an entry's tag index, of the entry, of a lock) counted as a
    failure of the store, so a few misses in a row opened the breaker, and every caller's reads skipped
    a store that was answering them. A refused write is now not stored, and says so, without counting
    against the store."""
    from llm_cache.middleware import Cache
    from tests.middleware.test_engine import AUTH, BODY, URL, Upstream, client

    def ask(question: str) -> dict[str, Any]:
        return {**BODY, "messages": [{"role": "user", "content": question}]}

    server = redis_factory()
    raw = syncredis.Redis.from_url(server.url)
    store = RedisStore(server.url, prefix=unique_prefix(), failure_threshold=2, cooldown=3600, **SLACK)
    cache = Cache(store=store)
    try:
        async with client(cache, Upstream()) as http:
            await http.post(URL, json=ask("kept"), headers=AUTH)
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_set("maxmemory", 1)  # below what the server already uses: every write is refused
            for n in range(3):
                missed = await http.post(URL, json=ask(f"refused {n}"), headers=AUTH)
                assert missed.headers["x-cache"] == "MISS"
                with pytest.raises(StoreError, match="refused"):
                    await store.set(f"refused-{n}", b"x" * 1000, None)
            hit = await http.post(URL, json=ask("kept"), headers=AUTH)
        assert hit.headers["x-cache"] == "HIT" and store.breaker.state == "closed"
        assert cache.stats.stored == 1
    finally:
        raw.config_set("maxmemory", 0)
        raw.close()
        await cache.close()


async def test_an_answer_past_max_value_bytes_is_not_sent_and_the_next_call_is_served(redis_factory: Any) -> None:
    """A server whose `proto-max-bulk-len` (or a managed Redis's request limit) is below an answer
    refuses it and closes the connection, and redis-py handed that connection to the next call, which
    failed too. With `max_value_bytes` the store never sends such a value: it is not stored
    (`oversize_skipped`), and the calls after it are served as usual."""
    server = redis_factory()
    raw = syncredis.Redis.from_url(server.url)
    raw.config_set("proto-max-bulk-len", 1024 * 1024)
    store = RedisStore(server.url, prefix=unique_prefix(), max_value_bytes=1024 * 1024, **SLACK)
    try:
        for n in range(3):
            await store.set(f"big-{n}", b"x" * 2 * 1024 * 1024, None)
            await store.set(f"small-{n}", b"an answer", None)
            assert await store.get(f"small-{n}") == b"an answer" and await store.get(f"big-{n}") is None
        await store.set_many({"big": b"x" * 2 * 1024 * 1024, "small": b"v"}, None)
        assert await store.get_many(["big", "small"]) == [None, b"v"]
        assert store.oversize_skipped == 4 and store.breaker.state == "closed"
    finally:
        raw.close()
        await store.close()
