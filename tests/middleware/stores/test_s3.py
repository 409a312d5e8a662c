"""S3Store against moto_server: expiry kept in metadata and enforced on read, prefix clears."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llm_cache.middleware.stores.s3 import EXPIRES, S3Store

from .conftest import s3_bucket, s3_client, unique_prefix


def make(server: Any, bucket: str, **options: Any) -> S3Store:
    return S3Store(
        bucket,
        prefix=unique_prefix().replace(":", "/"),
        endpoint_url=server.url,
        region="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **options,
    )


async def test_expiry_in_metadata_enforced_on_read(s3_server: Any) -> None:
    bucket = await s3_bucket(s3_server)
    now = [1_000_000.0]
    store = make(s3_server, bucket, clock=lambda: now[0])
    raw = s3_client(s3_server)
    try:
        await store.set("k", b"value", 30)
        await store.set("forever", b"value", None)
        head = await asyncio.to_thread(raw.head_object, Bucket=bucket, Key=store.prefix + "k")
        assert float(head["Metadata"][EXPIRES]) == pytest.approx(1_000_030.0)
        head = await asyncio.to_thread(raw.head_object, Bucket=bucket, Key=store.prefix + "forever")
        assert EXPIRES not in head["Metadata"]

        now[0] += 29.0
        assert await store.get("k") == b"value"
        now[0] += 1.0
        assert await store.get("k") is None  # expired: a miss, and the object is deleted
        assert store.expired_deleted == 1
        listing = await asyncio.to_thread(raw.list_objects_v2, Bucket=bucket, Prefix=store.prefix)
        assert [o["Key"] for o in listing.get("Contents", [])] == [store.prefix + "forever"]
        now[0] += 10**9
        assert await store.get("forever") == b"value"
    finally:
        await store.close()
