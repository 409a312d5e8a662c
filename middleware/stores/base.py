"""The store protocol every cache back-end implements.

A store is a dumb byte map with expiry. It knows nothing about LLMs, keys or
entries: the engine packs entries, a store only keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


class StoreError(Exception):
    """A store could not answer. The engine treats it as a miss (fail open) and counts it."""


@runtime_checkable
class Store(Protocol):
    """Async byte store. `ttl` is in seconds; `None` means no expiry.

    A store may also say `in_process = True` (MemoryStore does): it never leaves the process, so
    telemetry skips the child spans for its reads and writes unless asked for them.
    """

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def clear(self, prefix: str | None = None) -> None:
        """Remove every key starting with `prefix`, or every key when `prefix` is None."""
        ...

    async def close(self) -> None: ...


class BatchStore(Store, Protocol):
    """Optional batch forms for stores that can do better than one call per key."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None) -> None: ...


@runtime_checkable
class LockingStore(Store, Protocol):
    """A shared store that can lock a key across processes (distributed single-flight).

    `try_lock` returns a token when the caller now owns the lock on `key` (it expires by itself
    after `ttl` seconds), None when someone else holds it; `unlock` releases it only for the owner.
    """

    async def try_lock(self, key: str, ttl: float) -> str | None: ...

    async def unlock(self, key: str, token: str) -> bool: ...


async def get_many(store: Store, keys: Sequence[str]) -> list[bytes | None]:
    """Batch get through the store's own batch form when it has one."""
    batch = getattr(store, "get_many", None)
    if batch is not None:
        return list(await batch(keys))
    return [await store.get(key) for key in keys]


async def set_many(store: Store, items: Mapping[str, bytes], ttl: float | None) -> None:
    """Batch set through the store's own batch form when it has one."""
    batch = getattr(store, "set_many", None)
    if batch is not None:
        await batch(items, ttl)
        return
    for key, value in items.items():
        await store.set(key, value, ttl)
