"""Processes sharing one store (Redis standalone and Cluster, a disk folder): what one writes, another reads;
what they flood a disk folder with pushes out only their own entries."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from llm_cache.middleware.stores import DiskStore
from llm_cache.middleware.stores.redis import RedisClusterStore, RedisStore

from .conftest import SLACK, unique_prefix
from .test_tenants import tallies

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


OVERWRITER = """
import asyncio, json, sys
from llm_cache.middleware.stores import DiskStore
from llm_cache.middleware.stores.redis import RedisStore

async def main(config):
    if config["directory"]:
        store = DiskStore(config["directory"])
    else:
        store = RedisStore(config["url"], prefix=config["prefix"])
    value = bytes([config["byte"]]) * config["size"]
    for _ in range(config["writes"]):
        await store.set("one-key", value, 300)
    await store.close()

asyncio.run(main(json.loads(sys.argv[1])))
"""


@pytest.mark.parametrize("kind", ["disk", "redis"])
async def test_two_processes_overwriting_one_key_never_let_a_reader_see_a_mixed_value(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """Each writer's value is whole in what a third process reads: never half of one and half of the
    other, never cut short (the disk store's values of 100 KB and 40 KB live in files of their own)."""
    prefix = unique_prefix()
    url = request.getfixturevalue("redis_server").url if kind == "redis" else None
    directory = str(tmp_path / "cache") if kind == "disk" else None
    store: Any = DiskStore(directory) if directory else RedisStore(url, prefix=prefix, **SLACK)
    values = {byte: bytes([byte]) * size for byte, size in ((65, 100_000), (66, 40_000))}
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OVERWRITER,
            json.dumps(
                {"directory": directory, "url": url, "prefix": prefix, "byte": byte, "size": len(value), "writes": 300}
            ),
            stderr=subprocess.PIPE,
        )
        for byte, value in values.items()
    ]
    try:
        deadline = asyncio.get_running_loop().time() + 120.0
        while any(writer.returncode is None for writer in writers):
            assert asyncio.get_running_loop().time() < deadline, "the writers did not finish within 120 s"
            value = await store.get("one-key")
            assert value is None or value in values.values(), f"a mixed or cut value of {len(value)} bytes"
            await asyncio.sleep(0)  # lets the subprocess transports note an exit
        for writer in writers:
            _, stderr = await writer.communicate()
            assert writer.returncode == 0, stderr.decode()
        assert await store.get("one-key") in values.values()
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
        await store.close()


FLOODER = """
import asyncio, json, sys
from llm_cache.middleware.stores import DiskStore

async def main(config):
    store = DiskStore(config["directory"], size_limit=config["size_limit"])
    for i in range(config["writes"]):
        await store.set(f"v1:n{i % 3}:c{config['owner']}:{i}", b"f" * 4000, None)
    await store.close()

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def test_two_processes_flooding_one_disk_folder_push_out_only_their_own_entries(tmp_path: Any) -> None:
    """The owners' tally lives in the folder's database, kept by its triggers in each writer's
    transaction: two processes flooding it at once evict from the largest owner of all, and the tally
    is what the rows hold."""
    directory, size_limit = tmp_path / "cache", 600_000
    store = DiskStore(directory, size_limit=size_limit)
    for i in range(10):
        await store.set(f"v1:default:cbob:{i}", b"b" * 4000, None)
    config = {"directory": str(directory), "size_limit": size_limit, "writes": 300}
    results = await asyncio.gather(
        *(
            asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", FLOODER, json.dumps({**config, "owner": owner})],
                capture_output=True,
                text=True,
                timeout=120,
            )
            for owner in ("alice", "carol")
        )
    )
    try:
        assert [result.returncode for result in results] == [0, 0], [result.stderr for result in results]
        assert [await store.get(f"v1:default:cbob:{i}") for i in range(10)] == [b"b" * 4000] * 10
        kept, counted = tallies(directory)
        assert kept == counted and {owner for owner, _, _ in kept} == {"v1:calice", "v1:cbob", "v1:ccarol"}
    finally:
        await store.close()
