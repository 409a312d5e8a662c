"""Google Cloud Storage through its JSON API over httpx; install with the `[gcs]` extra (google-auth).

One object per entry under `prefix`. As with `S3Store`, the expiry is a wall-clock deadline in the
object's custom metadata (`llmc-expires-at`), enforced on read: an expired object reads as a miss
and is deleted only if it is still the generation that was read (`ifGenerationMatch`), so a fresh
entry another pod wrote meanwhile survives. The deadline is also the object's `customTime`, so a
bucket lifecycle rule on `daysSinceCustomTime` collects entries nobody reads again (docs/stores.md).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from .._fork import renew_after_fork
from .._loop_clients import PerLoop
from ._expiry import deadline, expired
from ._value_cap import DEFAULT_MAX_VALUE_BYTES, CappedReads, ValueCap
from .base import PLAIN
from .breaker import CircuitBreaker

EXPIRES = "llmc-expires-at"
GOOGLE = "https://storage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
CLEAR_CONCURRENCY = 16

TokenProvider = Callable[[], Awaitable[str]]
"""An async callable that returns a current OAuth2 access token; it raises `TokenError` when it cannot."""


class TokenError(Exception):
    """No access token could be had (a failed refresh): the call fails like any other store failure."""


class GoogleToken:
    """Access tokens from google-auth: a service-account file, or Application Default Credentials
    (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, the metadata server). google-auth refreshes
    synchronously, so a refresh (about once an hour) runs in a worker thread."""

    def __init__(self, service_account_file: str | None = None) -> None:
        try:
            import google.auth
            import google.auth.transport.requests
            from google.oauth2 import service_account
        except ImportError as error:  # pragma: no cover - exercised only without the extra
            raise ImportError("GCSStore needs google-auth: pip install 'llm-cache-middleware[gcs]'") from error
        if service_account_file is not None:
            self._credentials = service_account.Credentials.from_service_account_file(
                service_account_file, scopes=[SCOPE]
            )
        else:
            self._credentials, _ = google.auth.default(scopes=[SCOPE])
        self._request = google.auth.transport.requests.Request()
        self._lock = threading.Lock()  # the sync transport's loop and the caller's may both refresh
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread refreshing the token."""
        self._lock = threading.Lock()

    async def __call__(self) -> str:
        if not self._credentials.valid:
            await asyncio.to_thread(self._refresh)
        return str(self._credentials.token)

    def _refresh(self) -> None:
        import google.auth.exceptions

        with self._lock:
            if self._credentials.valid:
                return  # another caller refreshed it meanwhile
            try:
                self._credentials.refresh(self._request)
            except google.auth.exceptions.GoogleAuthError as error:
                raise TokenError(f"gcs: cannot refresh the access token: {error}") from error


class GCSStore(CappedReads):
    """`GCSStore("my-bucket", prefix="llmc/")`.

    Credentials: `token` (an async callable returning an access token), else a service-account file,
    else Application Default Credentials. `endpoint_url` (or the `STORAGE_EMULATOR_HOST` variable,
    as Google's own clients read it) points at an emulator, which is called without credentials.
    Latency is an HTTP round trip per call: an L2 for large or long-lived entries, ideally behind a
    `TieredStore` L1.
    """

    name = "gcs"
    abilities = PLAIN
    """A plain byte map: no batch form (a batch read is one GET per key anyway), no locks, no bus."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "llmc/",
        endpoint_url: str | None = None,
        service_account_file: str | None = None,
        token: TokenProvider | None = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        batch_size: int = 1000,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        name: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        emulator = endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator is not None and "://" not in emulator:
            emulator = f"http://{emulator}"  # the variable is often set as host:port
        self.endpoint_url = (emulator or GOOGLE).rstrip("/")
        if token is None and (emulator is None or service_account_file is not None):
            token = GoogleToken(service_account_file)
        self._token = token
        self.batch_size = max(1, min(batch_size, 1000))
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        if name is not None:
            self.name = name
        self.breaker = breaker or CircuitBreaker(failure_threshold, cooldown, name=self.name)
        self._cap = ValueCap(self.name, max_value_bytes)
        self._clock = clock
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(
            lambda: httpx.AsyncClient(timeout=self._timeout), lambda client: client.aclose()
        )
        self._objects = f"{self.endpoint_url}/storage/v1/b/{quote(bucket, safe='')}/o"
        self._upload = f"{self.endpoint_url}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        self.expired_deleted = 0

    def _url(self, key: str) -> str:
        return f"{self._objects}/{quote(self.prefix + key, safe='')}"

    async def _headers(self) -> dict[str, str]:
        return {} if self._token is None else {"authorization": f"Bearer {await self._token()}"}

    async def _call(self, what: str, operation: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
        client = self._clients.get()
        return await self.breaker.call(
            lambda: operation(client), (httpx.HTTPError, OSError, ValueError, TokenError, asyncio.TimeoutError), what
        )

    # -- protocol -------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async def run(client: httpx.AsyncClient) -> tuple[bytes | None, str | None]:
            params, headers = {"alt": "media"}, await self._headers()
            async with client.stream("GET", self._url(key), params=params, headers=headers) as response:
                if response.status_code == 404:
                    return None, None
                response.raise_for_status()
                if not self._cap.admits(_length(response.headers.get("content-length"))):
                    return None, None  # never read: a planted object may be gigabytes long
                if expired(response.headers.get(f"x-goog-meta-{EXPIRES}"), self._clock):
                    return None, response.headers.get("x-goog-generation", "")
                # read under the cap too: a body without a length, or one served decompressed
                return await self._cap.read(response.aiter_bytes()), None

        value, generation = await self._call("get", run)
        if generation is not None:
            self.expired_deleted += 1
            await self._delete(key, generation or None)
        return value  # type: ignore[no-any-return]

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl is not None and ttl <= 0:
            await self.delete(key)
            return
        resource: dict[str, Any] = {"name": self.prefix + key}
        expires_at = deadline(self._clock, ttl)
        if expires_at is not None:
            resource["metadata"] = {EXPIRES: expires_at}
            moment = datetime.datetime.fromtimestamp(float(expires_at), datetime.timezone.utc)
            resource["customTime"] = moment.isoformat().replace("+00:00", "Z")
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(resource).encode(),
                f"\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n".encode(),
                value,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )

        async def run(client: httpx.AsyncClient) -> None:
            headers = {**await self._headers(), "content-type": f"multipart/related; boundary={boundary}"}
            response = await client.post(
                self._upload, params={"uploadType": "multipart", "fields": "generation"}, content=body, headers=headers
            )
            response.raise_for_status()

        await self._call("set", run)

    async def delete(self, key: str) -> None:
        await self._delete(key, None)

    async def _delete(self, key: str, generation: str | None) -> None:
        """Delete the object; with `generation`, only that generation of it (the expired one this pod
        read: another pod may have written a fresh entry under the key since)."""
        params = {} if generation is None else {"ifGenerationMatch": generation}

        async def run(client: httpx.AsyncClient) -> None:
            await self._delete_object(client, self._url(key), params)

        await self._call("delete", run)

    async def _delete_object(self, client: httpx.AsyncClient, url: str, params: dict[str, str]) -> None:
        response = await client.delete(url, params=params, headers=await self._headers())
        if response.status_code not in (404, 412):  # gone already, or replaced since it was read
            response.raise_for_status()

    async def clear(self, prefix: str | None = None) -> None:
        """List every object under `self.prefix + prefix`, a page of `batch_size` at a time, and delete them."""
        list_prefix = self.prefix + (prefix or "")
        limit = asyncio.Semaphore(CLEAR_CONCURRENCY)

        async def remove(client: httpx.AsyncClient, name: str) -> None:
            async with limit:
                await self._delete_object(client, f"{self._objects}/{quote(name, safe='')}", {})

        async def run(client: httpx.AsyncClient) -> None:
            params = {"prefix": list_prefix, "maxResults": str(self.batch_size), "fields": "items(name),nextPageToken"}
            while True:
                response = await client.get(self._objects, params=params, headers=await self._headers())
                response.raise_for_status()
                page = response.json()
                await asyncio.gather(*(remove(client, item["name"]) for item in page.get("items", [])))
                if not page.get("nextPageToken"):
                    return
                params["pageToken"] = page["nextPageToken"]

        await self._call("clear", run)

    async def close(self) -> None:
        await self._clients.close()


def _length(header: str | None) -> int | None:
    """A Content-Length header's value; None when absent or not a number."""
    return int(header) if header is not None and header.isdigit() else None
