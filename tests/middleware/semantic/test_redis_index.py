"""Rows of a shared Redis vector index that no pod of this cache wrote (another program, or someone who
reached the Redis): what a search makes of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from llm_cache.middleware.semantic import RedisVectorIndex, SemanticCache
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
