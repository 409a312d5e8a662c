"""Rows of a shared Redis vector index that no pod of this cache wrote (another program, or someone who
reached the Redis): what a search makes of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from llm_cache.middleware.semantic import RedisVectorIndex, SemanticCache
from llm_cache.middleware.semantic._redis_fair import owner_id as _owner_id
from tests.support.embedders import WordsEmbedder, bag_of_words


@pytest.fixture
def stack_url(redis_stack_server: Any) -> Iterator[str]:
    yield redis_stack_server.url
    import redis

    redis.Redis.from_url(redis_stack_server.url).flushall()


QUESTION = "how do i reset my password"
FAR = bag_of_words(["opening hours on sunday"])[0].tobytes()


@pytest.mark.parametrize(
    "fields",
    [
        {"v": np.full(8, np.nan, dtype=np.float32).tobytes()},  # no vector at all
        {"v": np.ones(16, dtype=np.float32).tobytes()},  # another dimension
        {"v": b"\x00\x01"},  # not even a whole float
        {"v": FAR, "dist": b"0"},  # the query's own score field, written in for a row far away
    ],
    ids=["nan", "dimension", "ragged", "dist"],
)
async def test_a_row_no_pod_wrote_is_never_a_match(stack_url: str, fields: dict[str, Any]) -> None:
    import redis.asyncio as aioredis

    index = RedisVectorIndex(stack_url, index_name="test-hostile", prefix="test-hostile:")
    semantic = SemanticCache(WordsEmbedder(), index, threshold=0.5)
    honest = bag_of_words([QUESTION])[0]
    await index.add(
        "ctx", "honest", "how do i change my password", bag_of_words(["how do i change my password"])[0], 60
    )
    row = {"ctx": "ctx", "key": "planted", "text": QUESTION, "v": honest.tobytes()}
    row.update(fields)
    raw = aioredis.Redis.from_url(stack_url)
    await raw.hset("test-hostile:planted", mapping=row)

    found = semantic.matching(QUESTION, await semantic.nearest("ctx", honest))
    await raw.aclose()
    await index.close()

    assert [n.key for n in found if n.key != "honest"] == []


# -- a bounded index, fair to every caller --------------------------------------------------------------

NORTH, EAST = np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)


def rows_in(url: str, prefix: str) -> int:
    """The row hashes under `prefix` (not the bookkeeping kept beside them)."""
    import redis

    raw = redis.Redis.from_url(url)
    try:
        return sum(raw.type(key) == b"hash" for key in raw.scan_iter(f"{prefix}*", count=1000))
    finally:
        raw.close()


async def test_a_full_redis_index_gives_up_the_oldest_row_of_the_owner_holding_the_most(stack_url: str) -> None:
    index = RedisVectorIndex(stack_url, index_name="test-fair", prefix="test-fair:", max_entries=4)
    await index.add("alice's", "a1", "north", NORTH, ttl=None, owner="alice")
    await index.add("alice's", "a2", "east", EAST, ttl=None, owner="alice")
    for n in range(40):  # Mallory's flood, in contexts of its own: it only ever pushes out its own rows
        await index.add(f"mallory's {n}", f"m{n}", "north", NORTH, ttl=None, owner="mallory")

    assert rows_in(stack_url, "test-fair:") == 4
    assert sorted(n.key for n in await index.search("alice's", NORTH, 5)) == ["a1", "a2"]
    assert [n.key for n in await index.search("mallory's 39", NORTH, 5)] == ["m39"]
    assert await index.search("mallory's 37", NORTH, 5) == []  # its oldest went first
    await index.add("bob's", "b1", "north", NORTH, ttl=None, owner="bob")  # a newcomer: of the two largest,
    # Mallory's rows changed last: it gives way
    assert sorted(n.key for n in await index.search("alice's", NORTH, 5)) == ["a1", "a2"]
    assert await index.search("mallory's 38", NORTH, 5) == [] and rows_in(stack_url, "test-fair:") == 4
    await index.add("alice's", "a3", "north", NORTH, ttl=None, owner="alice")  # now Alice holds the most
    assert sorted(n.key for n in await index.search("alice's", NORTH, 5)) == ["a2", "a3"]
    await index.close()


async def test_a_row_added_again_by_another_owner_counts_once_and_as_the_new_owner_s(stack_url: str) -> None:
    index = RedisVectorIndex(stack_url, index_name="test-again", prefix="test-again:", max_entries=3)
    await index.add("shared", "k", "north", NORTH, ttl=None, owner="alice")
    await index.add("shared", "k", "north", NORTH, ttl=None, owner="bob")  # under a shared scope: one row
    await index.add("bob's", "b1", "east", EAST, ttl=None, owner="bob")
    await index.add("alice's", "a1", "east", EAST, ttl=None, owner="alice")
    await index.add("carol's", "c1", "east", EAST, ttl=None, owner="carol")  # 4 rows: Bob holds the most

    assert rows_in(stack_url, "test-again:") == 3
    assert await index.search("shared", NORTH, 5) == []  # Bob's oldest
    assert [n.key for n in await index.search("alice's", EAST, 5)] == ["a1"]
    await index.delete("a1")  # a deleted row is no longer counted: three more fit beside two
    await index.add("dave's", "d1", "east", EAST, ttl=None, owner="dave")
    assert rows_in(stack_url, "test-again:") == 3
    assert [n.key for n in await index.search("bob's", EAST, 5)] == ["b1"]
    await index.close()


async def test_rows_gone_by_their_ttl_neither_count_nor_stop_the_index_from_evicting(stack_url: str) -> None:
    import redis.asyncio as aioredis

    def pod(ahead: float = 0.0) -> RedisVectorIndex:
        index = RedisVectorIndex(stack_url, index_name="test-ghosts", prefix="test-ghosts:", max_entries=4)
        index._rows.clock = lambda: time.time() + ahead
        return index

    now, later = pod(), pod(ahead=120)  # `later`: a pod adding once the rows' time (60 s) is up
    raw = aioredis.Redis.from_url(stack_url)
    for n in range(2):
        await now.add("alice's", f"a{n}", "north", NORTH, ttl=60, owner="alice")
        await raw.delete(now._doc(f"a{n}"))  # gone with their time, as Redis drops them: nobody told the index
    for n in range(4):  # Bob holds the most from his third row on: Alice's ghosts would be counted for ever
        await later.add("bob's", f"b{n}", "east", EAST, ttl=None, owner="bob")

    assert int(await raw.get("test-ghosts:fair:rows")) == 4  # Bob's four: no ghost counts
    assert sorted(n.key for n in await now.search("bob's", EAST, 5)) == ["b0", "b1", "b2", "b3"]
    for n in range(4):  # rows deleted behind its back, with no time to sweep them by: met when evicting
        await raw.delete(now._doc(f"b{n}"))
    for n in range(2):
        await now.add("carol's", f"c{n}", "north", NORTH, ttl=None, owner="carol")
    assert sorted(n.key for n in await now.search("carol's", NORTH, 5)) == ["c0", "c1"]  # ghosts went, not rows
    assert int(await raw.get("test-ghosts:fair:rows")) == 4
    await raw.aclose()
    for index in (now, later):
        await index.close()


async def test_two_pods_adding_at_once_keep_the_index_at_its_cap(stack_url: str) -> None:
    pods = [RedisVectorIndex(stack_url, index_name="test-pods", prefix="test-pods:", max_entries=10) for _ in range(2)]

    async def flood(pod: RedisVectorIndex, name: str) -> None:
        for n in range(60):
            await pod.add(f"{name}'s {n}", f"{name}{n}", "north", NORTH, ttl=None, owner=name)

    await asyncio.gather(flood(pods[0], "alice"), flood(pods[1], "bob"), flood(pods[0], "carol"))

    assert rows_in(stack_url, "test-pods:") == 10
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(stack_url)
    assert int(await raw.get("test-pods:fair:rows")) == 10
    sizes = [await raw.zcard(f"test-pods:fair:o:{_owner_id(name)}") for name in ("alice", "bob", "carol")]
    assert sorted(sizes) == [3, 3, 4]  # the cap shared out evenly, whoever added last
    await raw.aclose()
    for pod in pods:
        await pod.close()


async def test_clear_forgets_the_count_with_the_rows(stack_url: str) -> None:
    index = RedisVectorIndex(stack_url, index_name="test-clear", prefix="test-clear:", max_entries=2)
    for n in range(3):
        await index.add("ctx", f"k{n}", "north", NORTH, ttl=None, owner="alice")
    await index.clear()
    await index.add("ctx", "k9", "north", NORTH, ttl=None, owner="alice")
    await index.add("ctx", "k8", "north", NORTH, ttl=None, owner="alice")

    assert sorted(n.key for n in await index.search("ctx", NORTH, 5)) == ["k8", "k9"]
    await index.close()


async def test_a_lost_total_is_counted_again_from_the_callers_rows(stack_url: str) -> None:
    import redis.asyncio as aioredis

    index = RedisVectorIndex(stack_url, index_name="test-total", prefix="test-total:", max_entries=3)
    for n in range(3):
        await index.add("alice's", f"a{n}", "north", NORTH, ttl=None, owner="alice")
    raw = aioredis.Redis.from_url(stack_url)
    await raw.delete("test-total:fair:rows")  # a server under maxmemory may evict it like any key
    await index.add("bob's", "b0", "east", EAST, ttl=None, owner="bob")

    assert int(await raw.get("test-total:fair:rows")) == 3 and rows_in(stack_url, "test-total:") == 3
    assert sorted(n.key for n in await index.search("alice's", NORTH, 5)) == ["a1", "a2"]
    await raw.aclose()
    await index.close()
