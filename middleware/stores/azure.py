"""Azure Blob Storage through azure-storage-blob's aio client; install with the `[azure]` extra.

One block blob per entry under `prefix` in one container. As with `S3Store`, the expiry is a
wall-clock deadline in the blob's metadata (`llmc_expires_at`: Azure metadata names are C#
identifiers), enforced on read: an expired blob reads as a miss and is deleted only if its ETag is
still the one that was read (`If-Match`), so a fresh entry another pod wrote meanwhile survives.
Azure never deletes it by itself; a lifecycle management rule collects blobs nobody reads again
(docs/stores.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._loop_clients import PerLoop
from ._expiry import deadline, expired
from ._value_cap import DEFAULT_MAX_VALUE_BYTES, CappedReads, ValueCap
from .base import PLAIN
from .breaker import CircuitBreaker

try:
    from azure.core import MatchConditions
    from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
    from azure.storage.blob.aio import ContainerClient
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("AzureBlobStore needs azure-storage-blob: pip install 'llm-cache-middleware[azure]'") from error

EXPIRES = "llmc_expires_at"
CONNECTION_STRING_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"  # as the Azure CLI and SDK samples read it
DELETE_BATCH = 256  # a blob batch request carries at most 256 sub-requests
FIRST_GET = 32 * 1024 * 1024  # azure-storage-blob's own max_single_get_size


class AzureBlobStore(CappedReads):
    """`AzureBlobStore("my-container", connection_string=...)` or
    `AzureBlobStore("my-container", account_url="https://ACCOUNT.blob.core.windows.net", credential=...)`.

    Without either, the connection string comes from `AZURE_STORAGE_CONNECTION_STRING`.
    `credential` is what azure-storage-blob takes (an account key, a SAS token, a token credential);
    without one, azure-identity's `DefaultAzureCredential` is used (managed identity, workload
    identity, the Azure CLI login), when installed. Latency is an HTTP round trip per call: an L2 for
    large or long-lived entries, ideally behind a `TieredStore` L1.
    """

    name = "azure-blob"
    abilities = PLAIN
    """A plain byte map: no batch form (a batch read is one GET per key anyway), no locks, no bus."""

    def __init__(
        self,
        container: str,
        *,
        prefix: str = "llmc/",
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        batch_size: int = DELETE_BATCH,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        name: str | None = None,
    ) -> None:
        if connection_string is None and account_url is None:
            connection_string = os.environ.get(CONNECTION_STRING_VARIABLE)
        if (connection_string is None) == (account_url is None):
            raise ValueError(
                f"AzureBlobStore: give exactly one of connection_string and account_url "
                f"(or set {CONNECTION_STRING_VARIABLE})"
            )
        if connection_string is None and credential is None:
            try:
                import azure.identity.aio  # noqa: F401 - checked now, used per loop
            except ImportError:
                raise ImportError(
                    "AzureBlobStore with account_url and no credential needs azure-identity "
                    "(pip install azure-identity), or pass credential= or connection_string="
                ) from None
        self.container = container
        self.prefix = prefix
        self.account_url = account_url
        self._connection_string = connection_string
        self._credential = credential
        # one attempt: a slow or failing store is a miss (fail open), never a stalled request
        self._options: dict[str, Any] = {
            "connection_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retry_total": 0,
            # the first GET reads at most this much, and tells the blob's size before the rest is read
            "max_single_get_size": min(max_value_bytes + 1, FIRST_GET),
        }
        self.batch_size = max(1, min(batch_size, DELETE_BATCH))
        if name is not None:
            self.name = name
        self.breaker = breaker or CircuitBreaker(failure_threshold, cooldown, name=self.name)
        self._cap = ValueCap(self.name, max_value_bytes)
        self._clock = clock
        self._clients: PerLoop[ContainerClient] = PerLoop(self._make_client, lambda client: client.close())
        self.expired_deleted = 0

    def _make_client(self) -> ContainerClient:
        if self._connection_string is not None:
            return ContainerClient.from_connection_string(
                self._connection_string, self.container, credential=self._credential, **self._options
            )
        credential = self._credential
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return ContainerClient(self.account_url or "", self.container, credential=credential, **self._options)

    async def _call(self, what: str, operation: Callable[[ContainerClient], Awaitable[Any]]) -> Any:
        client = self._clients.get()
        return await self.breaker.call(lambda: operation(client), (AzureError, OSError, asyncio.TimeoutError), what)

    # -- protocol -------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async def run(client: ContainerClient) -> tuple[bytes | None, str | None]:
            try:
                download = await client.download_blob(self.prefix + key)
            except ResourceNotFoundError:
                return None, None
            if not self._cap.admits(download.size):
                return None, None  # past the first GET, never read: a planted blob may be gigabytes long
            if expired((download.properties.metadata or {}).get(EXPIRES), self._clock):
                return None, download.properties.etag
            return await download.readall(), None

        value, etag = await self._call("get", run)
        if etag is not None:
            self.expired_deleted += 1
            await self._delete(key, etag)
        return value  # type: ignore[no-any-return]

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if ttl is not None and ttl <= 0:
            await self.delete(key)
            return
        expires_at = deadline(self._clock, ttl)
        metadata = {} if expires_at is None else {EXPIRES: expires_at}
        await self._call(
            "set", lambda client: client.upload_blob(self.prefix + key, value, overwrite=True, metadata=metadata)
        )

    async def delete(self, key: str) -> None:
        await self._delete(key, None)

    async def _delete(self, key: str, etag: str | None) -> None:
        """Delete the blob; with `etag`, only that version of it (the expired one this pod read:
        another pod may have written a fresh entry under the key since)."""
        condition: dict[str, Any] = (
            {} if etag is None else {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        )

        async def run(client: ContainerClient) -> None:
            with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):  # gone, or replaced since read
                await client.delete_blob(self.prefix + key, **condition)

        await self._call("delete", run)

    async def clear(self, prefix: str | None = None) -> None:
        """List every blob under `self.prefix + prefix` and delete them `batch_size` (<= 256) per batch request."""
        list_prefix = self.prefix + (prefix or "")

        async def run(client: ContainerClient) -> None:
            batch: list[str] = []
            async for name in client.list_blob_names(name_starts_with=list_prefix):
                batch.append(name)
                if len(batch) == self.batch_size:
                    await self._delete_batch(client, batch)
                    batch = []
            if batch:
                await self._delete_batch(client, batch)

        await self._call("clear", run)

    async def _delete_batch(self, client: ContainerClient, names: list[str]) -> None:
        # raise_on_any_failure=False: a blob deleted meanwhile (404) is not an error
        replies = await client.delete_blobs(*names, raise_on_any_failure=False)
        async for reply in replies:
            if reply.status_code not in (202, 404):
                raise AzureError(f"azure-blob clear: a blob was not deleted (HTTP {reply.status_code})")

    async def close(self) -> None:
        await self._clients.close()
