"""Store factories over the real servers of `tests/support/servers.py`, for protocol conformance."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.stores.redis import RedisClusterStore, RedisSentinelStore, RedisStore

# generous socket timeouts for tests that are not about timeouts: CI machines are shared and slow
SLACK = {"timeout": 2.0, "connect_timeout": 2.0}
OBJECT_STORES = ["s3", "gcs", "azure-blob"]
KINDS = ["memory", "redis", "redis-cluster", "redis-sentinel", "tiered", "memcached", "s3", "gcs", "azure-blob"]


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 5.0, what: str = "condition") -> None:
    """Poll an async check until it holds, failing after `deadline` seconds (no fixed sleeps)."""
    end = time.monotonic() + deadline
    while True:
        if await check():
            return
        if time.monotonic() > end:
            pytest.fail(f"{what} did not hold within {deadline}s")
        await asyncio.sleep(0.01)


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


async def build_store(kind: str, request: pytest.FixtureRequest, prefix: str) -> Any:
    if kind == "memory":
        return MemoryStore()
    if kind == "disk":
        from llm_cache.middleware.stores import DiskStore

        return DiskStore(request.getfixturevalue("tmp_path") / "disk")
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return RedisStore(server.url, prefix=prefix, **SLACK)
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return RedisClusterStore(startup_nodes=cluster.startup_nodes, prefix=prefix, **SLACK)
    if kind == "redis-sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        return RedisSentinelStore(sentinel.service_name, sentinel.sentinels, prefix=prefix, **SLACK)
    if kind == "tiered":
        from llm_cache.middleware.stores.tiered import TieredStore

        server = request.getfixturevalue("redis_server")
        store = TieredStore(MemoryStore(), RedisStore(server.url, prefix=prefix, **SLACK), channel=f"{prefix}inval")
        await store.start()
        return store
    if kind == "memcached":
        from llm_cache.middleware.stores.memcached import MemcachedStore

        server = request.getfixturevalue("memcached_server")
        return MemcachedStore(server.host, server.port, prefix=prefix, timeout=2.0)
    if kind in OBJECT_STORES:
        return await object_store(kind, request, prefix)
    raise AssertionError(kind)


async def object_store(
    kind: str, request: pytest.FixtureRequest, prefix: str, bucket: str | None = None, **options: Any
) -> Any:
    """An S3, GCS or Azure Blob store on its emulator, in the test bucket (created) or in `bucket` (not created)."""
    if kind == "s3":
        from llm_cache.middleware.stores.s3 import S3Store

        server = request.getfixturevalue("s3_server")
        return S3Store(
            bucket or await s3_bucket(server),
            prefix=prefix,
            endpoint_url=server.url,
            region="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **options,
        )
    if kind == "gcs":
        from llm_cache.middleware.stores.gcs import GCSStore

        server = request.getfixturevalue("gcs_server")
        # the emulator answers one connection at a time: 30 concurrent sets outwait the 1 s default on a busy machine
        slack = {"connect_timeout": 10.0, **options}
        return GCSStore(bucket or await gcs_bucket(server), prefix=prefix, endpoint_url=server.url, **slack)
    from llm_cache.middleware.stores.azure import AzureBlobStore

    server = request.getfixturevalue("azurite_server")
    container = bucket or await azure_container(server)
    return AzureBlobStore(container, prefix=prefix, connection_string=server.extra["connection_string"], **options)


def s3_client(server: Any) -> Any:
    """A boto3 client on moto_server (another pod, or the test looking at what the store wrote)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def s3_bucket(server: Any, name: str = "llmc-test") -> str:
    """Create the test bucket once (idempotent)."""

    def create() -> None:
        client = s3_client(server)
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)

    await asyncio.to_thread(create)
    return name


async def gcs_bucket(server: Any, name: str = "llmc-test") -> str:
    """Create the test bucket on the GCS emulator once (idempotent: 409 when it exists)."""
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.post(f"{server.url}/storage/v1/b", params={"project": "test"}, json={"name": name})
    assert response.status_code in (200, 409), response.text
    return name


async def azure_container(server: Any, name: str = "llmc-test") -> str:
    """Create the test container in Azurite once (idempotent)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(server.extra["connection_string"]) as service:
        with contextlib.suppress(ResourceExistsError):
            await service.create_container(name)
    return name


@pytest.fixture(params=KINDS)
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    store = await build_store(request.param, request, unique_prefix())
    yield store
    await store.close()


@pytest.fixture(params=[*KINDS, "disk"])
async def every_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`any_store`, and the disk store (whose size counts pages, not values: it sits out the byte-map checks)."""
    store = await build_store(request.param, request, unique_prefix())
    yield store
    await store.close()
