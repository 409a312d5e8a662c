"""Two processes sharing one Redis (standalone and Cluster): what one writes, the other reads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from llm_cache.middleware.stores.redis import RedisClusterStore, RedisStore

from .conftest import SLACK, unique_prefix

WRITER = """
import asyncio, json, sys
from llm_cache.middleware.stores.redis import RedisClusterStore, RedisStore

async def main(config):
    if config["nodes"]:
        store = RedisClusterStore(startup_nodes=[tuple(n) for n in config["nodes"]], prefix=config["prefix"])
    else:
        store = RedisStore(config["url"], prefix=config["prefix"])
    await store.set_many({f"k:{i}": f"v{i}".encode() for i in range(config["count"])}, 300)
    await store.delete("k:0")
    await store.close()

asyncio.run(main(json.loads(sys.argv[1])))
"""


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_written_in_one_process_read_in_another(kind: str, request: pytest.FixtureRequest) -> None:
    prefix = unique_prefix()
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
        config: dict[str, Any] = {"url": url, "nodes": None, "prefix": prefix, "count": 200}
        store: RedisStore = RedisStore(url, prefix=prefix, **SLACK)
    else:
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        config = {"url": None, "nodes": nodes, "prefix": prefix, "count": 200}
        store = RedisClusterStore(startup_nodes=nodes, prefix=prefix, **SLACK)
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", WRITER, json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        values = await store.get_many([f"k:{i}" for i in range(200)])
        assert values == [None] + [f"v{i}".encode() for i in range(1, 200)]
    finally:
        await store.close()
