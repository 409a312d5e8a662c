"""AzureBlobStore against Azurite: expiry kept in metadata and enforced on read, conditional cleanup, prefix clears."""

from __future__ import annotations

from typing import Any

import pytest
from azure.storage.blob.aio import ContainerClient

from llm_cache.middleware.stores.azure import EXPIRES, AzureBlobStore

from .conftest import azure_container, unique_prefix


def make(server: Any, container: str, **options: Any) -> AzureBlobStore:
    return AzureBlobStore(
        container,
        prefix=unique_prefix().replace(":", "/"),
        connection_string=server.extra["connection_string"],
        **options,
    )


def raw_client(server: Any, container: str) -> ContainerClient:
    return ContainerClient.from_connection_string(server.extra["connection_string"], container)


async def test_expiry_in_metadata_enforced_on_read(azurite_server: Any) -> None:
    container = await azure_container(azurite_server)
    now = [1_000_000.0]
    store = make(azurite_server, container, clock=lambda: now[0])
    try:
        async with raw_client(azurite_server, container) as raw:
            await store.set("k", b"value", 30)
            await store.set("forever", b"value", None)
            properties = await raw.get_blob_client(store.prefix + "k").get_blob_properties()
            assert float(properties.metadata[EXPIRES]) == pytest.approx(1_000_030.0)
            properties = await raw.get_blob_client(store.prefix + "forever").get_blob_properties()
            assert EXPIRES not in properties.metadata

            now[0] += 29.0
            assert await store.get("k") == b"value"
            now[0] += 1.0
            assert await store.get("k") is None  # expired: a miss, and the blob is deleted
            assert store.expired_deleted == 1
            names = [name async for name in raw.list_blob_names(name_starts_with=store.prefix)]
            assert names == [store.prefix + "forever"]
            now[0] += 10**9
            assert await store.get("forever") == b"value"
    finally:
        await store.close()


def test_exactly_one_way_to_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ValueError, match="exactly one"):
        AzureBlobStore("c")
    with pytest.raises(ValueError, match="exactly one"):
        AzureBlobStore(
            "c", connection_string="UseDevelopmentStorage=true", account_url="https://a.blob.core.windows.net"
        )


async def test_the_connection_string_may_come_from_the_environment(
    azurite_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.extra["connection_string"])
    store = AzureBlobStore(await azure_container(azurite_server), prefix=unique_prefix())
    try:
        await store.set("k", b"v", 60)
        assert await store.get("k") == b"v"
    finally:
        await store.close()


def test_an_account_url_without_a_credential_names_what_to_install_up_front() -> None:
    try:
        import azure.identity  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="azure-identity"):
            AzureBlobStore("c", account_url="https://acct.blob.core.windows.net")
    else:  # with azure-identity installed the store is built; its credential is made on first use
        assert AzureBlobStore("c", account_url="https://acct.blob.core.windows.net").account_url
    assert AzureBlobStore("c", account_url="https://acct.blob.core.windows.net", credential="key").container == "c"
