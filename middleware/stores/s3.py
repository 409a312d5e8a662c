"""S3 (or any S3-compatible object store) through aiobotocore; install with the `[s3]` extra.

One object per entry under `prefix`. The expiry is a wall-clock timestamp in the object's user
metadata (`x-amz-meta-llmc-expires-at`), enforced on read: an expired object reads as a miss and
is deleted if it is still the version that was read (a conditional delete), so a fresh entry another
pod wrote meanwhile survives. S3 never deletes it by itself; add a bucket lifecycle rule to collect objects nobody
reads again (see docs/stores.md).

Tags are indexed as empty marker objects, `{prefix}_tags/<quoted tag>/<key>` (a long tag by its
SHA-256, so the key stays within S3's 1,024 bytes): a tag invalidation lists one tag's markers (a
prefix listing, not a scan of the bucket) and deletes their entries and the markers. A marker whose
entry expired only costs a harmless delete; the lifecycle rule collects markers of tags never
invalidated.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from .._fork import renew_after_fork
from ._expiry import deadline, expired
from ._value_cap import DEFAULT_MAX_VALUE_BYTES, CappedReads, ValueCap
from .base import Abilities, StoreError
from .breaker import CircuitBreaker

try:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("S3Store needs aiobotocore: pip install 'llm-cache-middleware[s3]'") from error

EXPIRES = "llmc-expires-at"
READ_CHUNK = 64 * 1024
DELETE_BATCH = 1000  # DeleteObjects accepts at most 1000 keys
MISSING = {"NoSuchKey", "404", "NotFound"}
PRECONDITION_FAILED = {"PreconditionFailed", "412"}
TAGS = "_tags/"
"""Where the tag markers live under the store's prefix (entry keys never hold a `/` after their namespace)."""
MAX_TAG_PATH = 512
"""Longest quoted tag a marker's path holds as it is (the automatic `model:` tag is the caller's text; a
custom tag, at most 128 characters, always fits): with the prefix and the entry's key, within 1,024 bytes."""


class S3Store(CappedReads):
    """`S3Store("my-bucket", prefix="llmc/", region="eu-west-1")`.

    Credentials come from the usual AWS chain (environment, shared config/credentials files, SSO,
    instance/container roles) unless given explicitly. `endpoint_url` points at an S3-compatible
    server (MinIO, Ceph, R2, moto). Latency is an HTTP round trip per call, so this is an L2 for
    large or long-lived entries, ideally behind a `TieredStore` L1.
    """

    name = "s3"
    abilities = Abilities(tags=True)
    """A byte map with a tag index: no batch form (a batch read is one GET per key anyway), no locks, no bus."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "llmc/",
        region: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile: str | None = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        max_attempts: int = 1,
        batch_size: int = DELETE_BATCH,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        breaker: CircuitBreaker | None = None,
        clock: Any = time.time,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        name: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.endpoint_url = endpoint_url
        self._credentials = {
            key: value
            for key, value in {
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
                "aws_session_token": aws_session_token,
            }.items()
            if value is not None
        }
        self.profile = profile
        self.batch_size = min(batch_size, DELETE_BATCH)
        self.config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        if name is not None:
            self.name = name
        self.breaker = breaker or CircuitBreaker(failure_threshold, cooldown, name=self.name)
        self._cap = ValueCap(self.name, max_value_bytes)
        self._clock = clock
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        renew_after_fork(self)
        self.expired_deleted = 0

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread making a loop's client."""
        self._lock = threading.Lock()

    async def _client(self) -> Any:
        """One aiobotocore client per running loop, created on first use and kept open."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            session = get_session()
            if self.profile is not None:
                session.set_config_variable("profile", self.profile)
            context = session.create_client(
                "s3",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=self.config,
                **self._credentials,
            )
            client = await context.__aenter__()
            existing = self._clients.get(loop)
            if existing is not None:  # another task of this loop won the race
                await context.__aexit__(None, None, None)
                return existing[1]
            entry = (context, client)
            self._clients[loop] = entry
        return entry[1]

    async def _call(self, what: str, operation: Any) -> Any:
        client = await self._client()
        return await self.breaker.call(
            lambda: operation(client), (BotoCoreError, ClientError, OSError, asyncio.TimeoutError), what
        )

    # -- protocol -------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        object_key = self.prefix + key

        async def run(client: Any) -> tuple[bytes | None, str | None]:
            try:
                response = await client.get_object(Bucket=self.bucket, Key=object_key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in MISSING:
                    return None, None
                raise
            size = response.get("ContentLength")
            if not self._cap.admits(size):
                response["Body"].close()  # never read: a planted object may be gigabytes long
                return None, None
            if expired(response.get("Metadata", {}).get(EXPIRES), self._clock):
                response["Body"].close()
                return None, response.get("ETag") or "*"
            async with response["Body"] as stream:
                if size is not None:  # the body is that long (the client checks it)
                    return await stream.read(), None
                return await self._cap.read(stream.iter_chunks(READ_CHUNK)), None

        value, stale_etag = await self._call("get", run)
        if stale_etag is not None:
            self.expired_deleted += 1
            await self._delete_expired(object_key, stale_etag)
        return value  # type: ignore[no-any-return]

    async def _delete_expired(self, object_key: str, etag: str) -> None:
        """Delete the expired object version this pod read, and only that one (`If-Match` its ETag):
        another pod may have written a fresh entry under the key since."""

        async def run(client: Any) -> None:
            try:
                await client.delete_object(Bucket=self.bucket, Key=object_key, IfMatch=etag)
            except ClientError as error:
                code = str(error.response.get("Error", {}).get("Code"))
                if code not in MISSING and code not in PRECONDITION_FAILED:
                    raise

        await self._call("delete", run)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl is not None and ttl <= 0:
            await self.delete(key)
            return
        expires_at = deadline(self._clock, ttl)
        metadata = {} if expires_at is None else {EXPIRES: expires_at}
        object_key = self.prefix + key
        await self._call(
            "set",
            lambda client: client.put_object(Bucket=self.bucket, Key=object_key, Body=value, Metadata=metadata),
        )

    async def delete(self, key: str) -> None:
        object_key = self.prefix + key
        await self._call("delete", lambda client: client.delete_object(Bucket=self.bucket, Key=object_key))

    async def clear(self, prefix: str | None = None) -> None:
        """List every object under `self.prefix + prefix` and delete them `batch_size` (<= 1000) at a time."""
        list_prefix = self.prefix + (prefix or "")

        async def run(client: Any) -> None:
            paginator = client.get_paginator("list_objects_v2")
            batch: list[dict[str, str]] = []
            pages = paginator.paginate(
                Bucket=self.bucket, Prefix=list_prefix, PaginationConfig={"PageSize": self.batch_size}
            )
            async for page in pages:
                for item in page.get("Contents", []):
                    batch.append({"Key": item["Key"]})
                    if len(batch) == self.batch_size:
                        await self._delete_batch(client, batch)
                        batch = []
            if batch:
                await self._delete_batch(client, batch)

        await self._call("clear", run)

    def _tag_prefix(self, tag: str) -> str:
        """Where `tag`'s markers live: the tag quoted, or its SHA-256 after a `~` (which no quoted tag
        starts with) when quoted it is past `MAX_TAG_PATH`, so a marker's key stays within S3's 1,024 bytes."""
        quoted = quote(tag, safe="")
        if len(quoted) > MAX_TAG_PATH:
            quoted = "~" + hashlib.sha256(tag.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}{TAGS}{quoted}/"

    async def tag(self, key: str, tags: Collection[str], ttl: float | None) -> None:
        """One empty marker object per tag (PUTs in parallel)."""
        markers = [self._tag_prefix(tag) + key for tag in tags]

        async def run(client: Any) -> None:
            await asyncio.gather(*(client.put_object(Bucket=self.bucket, Key=m, Body=b"") for m in markers))

        await self._call("tag", run)

    async def invalidate_tags(self, tags: Collection[str]) -> list[str]:
        """List each tag's markers; delete their entries, then the markers."""

        async def run(client: Any) -> list[str]:
            keys: set[str] = set()
            markers: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            for tag in tags:
                listed = self._tag_prefix(tag)
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=listed):
                    for item in page.get("Contents", []):
                        markers.append(item["Key"])
                        keys.add(item["Key"][len(listed) :])
            doomed = [self.prefix + key for key in sorted(keys)] + markers
            for start in range(0, len(doomed), self.batch_size):
                batch = [{"Key": name} for name in doomed[start : start + self.batch_size]]
                await self._delete_batch(client, batch)
            return sorted(keys)

        return await self._call("invalidate", run)  # type: ignore[no-any-return]

    async def _delete_batch(self, client: Any, batch: list[dict[str, str]]) -> None:
        response = await client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            raise StoreError(f"s3 clear: {len(errors)} objects not deleted, first: {errors[0]}")

    async def close(self) -> None:
        with self._lock:
            entry = self._clients.pop(asyncio.get_running_loop(), None)
            self._clients.clear()
        if entry is not None:
            await entry[0].__aexit__(None, None, None)
