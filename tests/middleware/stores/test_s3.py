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


async def test_a_tag_of_any_length_is_indexed_and_invalidated(s3_server: Any) -> None:
    """A tag is a marker's path (`_tags/<quoted tag>/<key>`), and S3 refuses a key past 1,024 bytes. The
    automatic `model:` tag is the caller's model name: a long one (an upstream that accepts any model)
    made every write of its answers fail, counted by the breaker, which then cut the store off for
    every caller. A tag whose quoted form is long is named by its SHA-256 instead."""
    bucket = await s3_bucket(s3_server)
    store = make(s3_server, bucket, failure_threshold=3)
    raw = s3_client(s3_server)
    long_tags = ["model:" + "m" * 2000, "model:" + "€" * 200]
    try:
        for n in range(4):
            await store.tag(f"ns/s/{n}", [long_tags[n % 2], "doc:1"], 60)
            await store.set(f"ns/s/{n}", b"v", 60)
        listing = await asyncio.to_thread(raw.list_objects_v2, Bucket=bucket, Prefix=store.prefix)
        written = [o["Key"] for o in listing.get("Contents", [])]
        assert len(written) == 12 and max(len(key.encode()) for key in written) <= 1024  # (moto does not refuse)
        assert sorted(await store.invalidate_tags(long_tags[:1])) == ["ns/s/0", "ns/s/2"]
        assert await store.get("ns/s/0") is None and await store.get("ns/s/1") == b"v"
        assert sorted(await store.invalidate_tags(["doc:1"])) == ["ns/s/0", "ns/s/1", "ns/s/2", "ns/s/3"]
    finally:
        await store.close()
