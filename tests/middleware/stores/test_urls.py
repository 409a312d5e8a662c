"""`store_from_url`: every store URL builds the store it names, against the real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_cache.middleware.stores import AzureBlobStore, DiskStore, GCSStore, MemoryStore
from llm_cache.middleware.stores.memcached import MemcachedStore
from llm_cache.middleware.stores.redis import RedisClusterStore, RedisStore
from llm_cache.middleware.stores.s3 import S3Store
from llm_cache.middleware.stores.urls import store_from_url

from .conftest import azure_container, gcs_bucket, s3_bucket, unique_prefix


async def round_trip(store: Any) -> bytes | None:
    key = f"{unique_prefix()}k"
    try:
        await store.set(key, b"value", 60)
        return await store.get(key)  # type: ignore[no-any-return]
    finally:
        await store.close()


async def test_memory_url_takes_its_size_bounds() -> None:
    store = store_from_url("memory://?max_entries=3&max_bytes=1000")
    assert isinstance(store, MemoryStore) and (store.max_entries, store.max_bytes) == (3, 1000)
    assert await round_trip(store) == b"value"


async def test_disk_url_names_the_directory(tmp_path: Path) -> None:
    store = store_from_url(f"disk://{tmp_path}/entries?size_limit=1000000")
    assert isinstance(store, DiskStore) and store.directory == tmp_path / "entries" and store.size_limit == 1_000_000
    assert await round_trip(store) == b"value"


async def test_redis_url_is_read_by_redis_py_with_our_options_taken_out(redis_server: Any) -> None:
    store = store_from_url(f"{redis_server.url}?prefix=app:&timeout=2&health_check_interval=5")
    assert isinstance(store, RedisStore) and not isinstance(store, RedisClusterStore)
    assert store.prefix == "app:" and store.url == f"{redis_server.url}?health_check_interval=5"
    assert await round_trip(store) == b"value"


def test_rediss_url_keeps_tls() -> None:
    store = store_from_url("rediss://:secret@cache.internal:6380/2")
    assert isinstance(store, RedisStore) and store.url == "rediss://:secret@cache.internal:6380/2"


async def test_redis_cluster_url_builds_a_cluster_store(redis_cluster: Any) -> None:
    store = store_from_url(f"redis+cluster://{redis_cluster.host}:{redis_cluster.port}?timeout=2&connect_timeout=2")
    assert isinstance(store, RedisClusterStore) and store.url == f"redis://{redis_cluster.host}:{redis_cluster.port}"
    assert await round_trip(store) == b"value"


async def test_s3_url_names_the_bucket_and_the_prefix(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = await s3_bucket(server=s3_server)
    store = store_from_url(f"s3://{bucket}/team/llm?region=us-east-1&endpoint_url={s3_server.url}")
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == (bucket, "team/llm/")
    assert await round_trip(store) == b"value"


async def test_memcached_url_names_host_and_port(memcached_server: Any) -> None:
    store = store_from_url(f"memcached://127.0.0.1:{memcached_server.port}?prefix=app:&timeout=2")
    assert isinstance(store, MemcachedStore) and (store.port, store.prefix) == (memcached_server.port, "app:")
    assert await round_trip(store) == b"value"


async def test_gs_url_names_the_bucket_and_the_prefix(gcs_server: Any) -> None:
    bucket = await gcs_bucket(gcs_server)
    store = store_from_url(f"gs://{bucket}/team/llm?endpoint_url={gcs_server.url}&read_timeout=2")
    assert isinstance(store, GCSStore) and (store.bucket, store.prefix) == (bucket, "team/llm/")
    assert await round_trip(store) == b"value"


@pytest.mark.parametrize("scheme", ["az", "azure"])
async def test_az_url_names_the_container_and_the_prefix(
    scheme: str, azurite_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.extra["connection_string"])
    container = await azure_container(azurite_server)
    store = store_from_url(f"{scheme}://{container}/team/llm?read_timeout=2")
    assert isinstance(store, AzureBlobStore) and (store.container, store.prefix) == (container, "team/llm/")
    assert await round_trip(store) == b"value"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/cache", "should look like memory://, disk:///path, redis://"),
        ("memory://?max_entires=3", "unknown option 'max_entires' \\(it takes max_bytes, max_entries\\)"),
        ("memory://?max_entries=many", "max_entries='many' is not a valid value"),
        ("s3:///prefix-only", "name the bucket"),
        ("gs:///prefix-only", "name the bucket, as in gs://bucket/prefix"),
        ("az://container/?connection_string=secret", "unknown option 'connection_string'"),
    ],
)
def test_a_url_that_names_no_store_says_what_would(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store_from_url(url)


def test_an_unknown_scheme_never_echoes_the_password() -> None:
    with pytest.raises(ValueError) as error:
        store_from_url("redis-stack://user:hunter2@cache:6379")
    assert "hunter2" not in str(error.value) and "user:****@cache" in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "redsi://cache:6379/0?password=hunter2",  # redis-py reads a password from the query too
        "redis-stack://cache:6379/0?socket_timeout=5&password=hunter2",
        "rediss+clustr://hunter2@cache:6379",  # a user alone may be a token (a cloud Redis's)
        "redis-stack://user:p@ss-hunter2@cache:6379",  # a password holding '@'
    ],
)
def test_an_unknown_scheme_never_echoes_a_secret_anywhere_in_the_url(url: str) -> None:
    """The message masked only a password in the user info, up to the first `@`: a password in the
    query, a token given as the user, or the rest of a password holding `@` was echoed into the
    traceback `Cache(store=...)` raises at start-up. It is masked as `check-config` masks URLs."""
    with pytest.raises(ValueError, match="should look like") as error:
        store_from_url(url)
    assert "hunter2" not in str(error.value) and "cache:6379" in str(error.value)
