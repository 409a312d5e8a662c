"""The Redis Stack fixture: a real Redis 7.4 with RediSearch, answering vector KNN queries."""

from __future__ import annotations

from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.commands.search.query import Query

from .conftest import unique_prefix


async def test_search_module_loaded(redis_stack_server: Any) -> None:
    client = aioredis.Redis(host=redis_stack_server.host, port=redis_stack_server.port)
    try:
        modules = {entry[b"name"].decode() for entry in await client.module_list()}
        assert {"search", "ReJSON"} <= modules
        assert (await client.info("server"))["redis_version"].startswith("7.4")
    finally:
        await client.aclose()


async def test_vector_knn_returns_nearest(redis_stack_server: Any) -> None:
    client = aioredis.Redis.from_url(redis_stack_server.url)
    prefix = unique_prefix()
    index = f"{prefix}idx"
    try:
        schema = ["v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "4", "DISTANCE_METRIC", "COSINE"]
        await client.execute_command("FT.CREATE", index, "ON", "HASH", "PREFIX", "1", prefix, "SCHEMA", *schema)
        near = np.array([1.0, 0.1, 0.0, 0.0], dtype=np.float32)
        far = np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
        await client.hset(f"{prefix}near", mapping={"v": near.tobytes(), "name": "near"})
        await client.hset(f"{prefix}far", mapping={"v": far.tobytes(), "name": "far"})
        query = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32).tobytes()
        # FT.SEARCH idx "*=>[KNN 1 @v $q AS score]" PARAMS 2 q <bytes> DIALECT 2 (parsed for RESP2 and RESP3 alike)
        knn = Query("*=>[KNN 1 @v $q AS score]").return_fields("name", "score").dialect(2)
        result = await client.ft(index).search(knn, query_params={"q": query})
        assert [doc.id for doc in result.docs] == [f"{prefix}near"]
        assert result.docs[0].name == "near"
        assert float(result.docs[0].score) < 0.01  # cosine distance of two almost parallel vectors
    finally:
        await client.aclose()
