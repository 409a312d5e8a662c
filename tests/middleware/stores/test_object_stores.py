"""What S3, GCS and Azure Blob stores share beyond the protocol: clears that page, a missing bucket fails open."""

from __future__ import annotations

import asyncio

import pytest

from llm_cache.middleware.config.builders import build_store
from llm_cache.middleware.stores import StoreError
from llm_cache.middleware.stores.base import get_many

from .conftest import OBJECT_STORES, azure_container, gcs_bucket, object_store, unique_prefix


@pytest.mark.parametrize("kind", OBJECT_STORES)
async def test_clear_over_many_pages(kind: str, request: pytest.FixtureRequest) -> None:
    # 30 objects listed and deleted 7 at a time: 5 pages (and 5 batch deletes where the store batches)
    store = await object_store(kind, request, unique_prefix().replace(":", "/"), batch_size=7)
    try:
        await asyncio.gather(*(store.set(f"a/{i}", b"v", 60) for i in range(30)))
        await store.set("b/1", b"keep", 60)
        await store.clear("a/")
        assert await get_many(store, [f"a/{i}" for i in range(30)]) == [None] * 30
        assert await store.get("b/1") == b"keep"
    finally:
        await store.close()


@pytest.mark.parametrize("kind", OBJECT_STORES)
async def test_a_missing_bucket_is_a_store_error(kind: str, request: pytest.FixtureRequest) -> None:
    store = await object_store(kind, request, unique_prefix(), bucket="llmc-no-such-bucket")
    try:
        with pytest.raises(StoreError):
            await store.set("k", b"v", 60)
    finally:
        await store.close()


async def test_a_config_file_builds_the_gcs_and_azure_blob_stores(request: pytest.FixtureRequest) -> None:
    gcs, azurite = request.getfixturevalue("gcs_server"), request.getfixturevalue("azurite_server")
    settings = [
        {"type": "gcs", "bucket": await gcs_bucket(gcs), "endpoint_url": gcs.url, "prefix": unique_prefix()},
        {
            "type": "azure-blob",
            "container": await azure_container(azurite),
            "connection_string": azurite.extra["connection_string"],
            "prefix": unique_prefix(),
            "read_timeout": 2,
        },
    ]
    for options in settings:
        store = build_store(options)
        try:
            assert store.name == options["type"] and store.prefix == options["prefix"]
            await store.set("k", b"v", 60)
            assert await store.get("k") == b"v"
        finally:
            await store.close()
