"""GCSStore against fake-gcs-server: expiry kept in metadata (and customTime) and enforced on read, prefix clears."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_cache.middleware.stores import StoreError
from llm_cache.middleware.stores.gcs import EXPIRES, GCSStore, TokenError
from tests.support.servers import free_port

from .conftest import gcs_bucket, unique_prefix


def make(server: Any, bucket: str, **options: Any) -> GCSStore:
    return GCSStore(bucket, prefix=unique_prefix().replace(":", "/"), endpoint_url=server.url, **options)


async def listing(server: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/storage/v1/b/{bucket}/o", params={"prefix": prefix})
    response.raise_for_status()
    return list(response.json().get("items", []))


async def test_expiry_in_metadata_enforced_on_read(gcs_server: Any) -> None:
    bucket = await gcs_bucket(gcs_server)
    now = [1_000_000.0]
    store = make(gcs_server, bucket, clock=lambda: now[0])
    try:
        await store.set("k", b"value", 30)
        await store.set("forever", b"value", None)
        objects = {item["name"]: item for item in await listing(gcs_server, bucket, store.prefix)}
        written = objects[store.prefix + "k"]
        assert float(written["metadata"][EXPIRES]) == pytest.approx(1_000_030.0)
        assert written["customTime"].startswith("1970-01-12T13:47:10")  # the deadline, for a lifecycle rule
        assert "metadata" not in objects[store.prefix + "forever"] or not objects[store.prefix + "forever"]["metadata"]

        now[0] += 29.0
        assert await store.get("k") == b"value"
        now[0] += 1.0
        assert await store.get("k") is None  # expired: a miss, and the object is deleted
        assert store.expired_deleted == 1
        assert [item["name"] for item in await listing(gcs_server, bucket, store.prefix)] == [store.prefix + "forever"]
        now[0] += 10**9
        assert await store.get("forever") == b"value"
    finally:
        await store.close()


async def test_keys_with_slashes_colons_and_spaces_round_trip(gcs_server: Any) -> None:
    store = make(gcs_server, await gcs_bucket(gcs_server))
    try:
        for key in ("llmc:ns/a b", "llmc:%2F?#", "llmc:ünï"):
            await store.set(key, key.encode(), 60)
            assert await store.get(key) == key.encode()
    finally:
        await store.close()


async def test_an_emulator_named_by_the_environment_is_called_without_credentials(
    gcs_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    store = GCSStore(await gcs_bucket(gcs_server), prefix=unique_prefix())
    try:
        assert store.endpoint_url == gcs_server.url
        await store.set("k", b"v", 60)
        assert await store.get("k") == b"v"
    finally:
        await store.close()


async def test_a_token_that_cannot_be_had_is_a_store_error(gcs_server: Any) -> None:
    async def no_token() -> str:
        raise TokenError("refresh failed")

    store = make(gcs_server, await gcs_bucket(gcs_server), token=no_token)
    try:
        with pytest.raises(StoreError, match="refresh failed"):
            await store.get("k")
    finally:
        await store.close()


async def test_a_given_token_provider_is_asked_on_each_call(gcs_server: Any) -> None:
    tokens: list[str] = []

    async def token() -> str:
        tokens.append("ya29.test")
        return tokens[-1]

    store = make(gcs_server, await gcs_bucket(gcs_server), token=token)
    try:
        await store.set("k", b"v", 60)  # the emulator accepts any bearer token
        assert await store.get("k") == b"v" and tokens == ["ya29.test", "ya29.test"]
    finally:
        await store.close()


async def test_a_service_account_whose_token_endpoint_is_down_fails_open(gcs_server: Any, tmp_path: Path) -> None:
    """google-auth signs the token request with the account's key; the endpoint refuses: a store error."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    account = {
        "type": "service_account",
        "client_email": "cache@test.iam.gserviceaccount.com",
        "private_key_id": "1",
        "private_key": pem.decode(),
        "token_uri": f"http://127.0.0.1:{free_port()}/token",  # nothing listens there
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    store = make(gcs_server, await gcs_bucket(gcs_server), service_account_file=str(path))
    try:
        with pytest.raises(StoreError, match="cannot refresh the access token"):
            await store.get("k")
    finally:
        await store.close()
