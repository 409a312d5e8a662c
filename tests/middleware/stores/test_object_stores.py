"""What S3, GCS and Azure Blob stores share beyond the protocol: clears that page, a missing bucket fails open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from llm_cache.middleware.config.builders import build_store
from llm_cache.middleware.stores import StoreError, store_from_url
from llm_cache.middleware.stores.base import get_many

from .conftest import OBJECT_STORES, azure_container, gcs_bucket, object_store, s3_client, unique_prefix


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


def another_pod(kind: str, request: pytest.FixtureRequest, bucket: str) -> Callable[[str, bytes], None]:
    """A synchronous writer beside the store (another pod): `write(object_name, value)`, fresh for a long time."""
    if kind == "s3":
        from llm_cache.middleware.stores.s3 import EXPIRES as S3_EXPIRES

        client = s3_client(request.getfixturevalue("s3_server"))
        return lambda name, value: client.put_object(
            Bucket=bucket, Key=name, Body=value, Metadata={S3_EXPIRES: "2000000000"}
        )
    from azure.storage.blob import ContainerClient

    from llm_cache.middleware.stores.azure import EXPIRES as AZURE_EXPIRES

    server = request.getfixturevalue("azurite_server")
    container = ContainerClient.from_connection_string(server.extra["connection_string"], bucket)
    request.addfinalizer(container.close)
    return lambda name, value: container.upload_blob(
        name, value, overwrite=True, metadata={AZURE_EXPIRES: "2000000000"}
    )


# fake-gcs-server ignores ifGenerationMatch on deletes, so GCS's conditional cleanup cannot be shown here
@pytest.mark.parametrize("kind", ["s3", "azure-blob"])
async def test_expiry_cleanup_never_deletes_a_fresh_entry_written_meanwhile(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Between this pod's read of an expired object and its delete, another pod stores a fresh entry."""
    now = [1_000_000.0]
    written_meanwhile: list[bool] = []

    def clock() -> float:
        # The store consults its clock right after reading the object: another pod writes then.
        if now[0] > 1_000_000.0 and not written_meanwhile:
            write(store.prefix + "k", b"fresh")
            written_meanwhile.append(True)
        return now[0]

    store = await object_store(kind, request, unique_prefix().replace(":", "/"), clock=clock)
    write = another_pod(kind, request, getattr(store, "bucket", None) or store.container)
    try:
        await store.set("k", b"old", 30)
        now[0] += 60.0
        assert await store.get("k") is None  # the version it read had expired
        assert written_meanwhile and store.expired_deleted == 1
        assert await store.get("k") == b"fresh"
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


@pytest.mark.parametrize("kind", OBJECT_STORES)
async def test_an_object_past_max_value_bytes_is_a_miss_and_is_not_read(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone else who can write the bucket plants an object one byte past the cap under an entry's key:
    the store sees its size before reading its body and answers a miss (counted, logged once), never a
    failure; an object exactly at the cap still reads."""
    prefix = unique_prefix().replace(":", "/")
    planter = await object_store(kind, request, prefix)
    store = await object_store(kind, request, prefix, max_value_bytes=1024)
    try:
        await planter.set("planted", b"x" * 1025, 60)
        await planter.set("fits", b"y" * 1024, 60)
        with caplog.at_level("WARNING", logger="llm_cache.middleware.stores"):
            assert await store.get("planted") is None
            assert await store.get("planted") is None
        assert store.oversize_skipped == 2
        assert len([r for r in caplog.records if "max_value_bytes" in r.getMessage()]) == 1
        assert await store.get("fits") == b"y" * 1024
        assert store.breaker.state == "closed"
    finally:
        await store.close()
        await planter.close()


def test_max_value_bytes_of_an_object_store_defaults_to_64_mib_and_is_configurable() -> None:
    azure = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;"
    stores = [
        store_from_url("s3://b/p?endpoint_url=http://127.0.0.1:1&max_value_bytes=4096"),
        build_store({"type": "gcs", "bucket": "b", "endpoint_url": "http://127.0.0.1:1", "max_value_bytes": 4096}),
        build_store({"type": "azure-blob", "container": "c", "connection_string": azure, "max_value_bytes": 4096}),
    ]
    assert [store.max_value_bytes for store in stores] == [4096] * 3
    assert build_store({"type": "s3", "bucket": "b"}).max_value_bytes == 64 * 1024 * 1024
