"""The store protocol every cache back-end implements.

A store is a dumb byte map with expiry. It knows nothing about LLMs, keys or
entries: the engine packs entries, a store only keeps them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable


class StoreError(Exception):
    """A store could not answer. The engine treats it as a miss (fail open) and counts it."""


class ClearRefused(StoreError):
    """The store cannot clear exactly that prefix (it would clear more, or cannot clear at all): refused,
    nothing deleted. Not a failure of the store: the gateway answers 400 with the reason."""


class NoTagIndex(StoreError):
    """The store keeps no tag index (memcached cannot list keys): a tag invalidation is refused."""


@dataclass(frozen=True, slots=True)
class Abilities:
    """What a store can do beyond the byte map. A store declares them (`abilities = Abilities(...)`)
    so callers ask its declaration instead of probing for methods; each true ability names the
    protocol below whose methods the store then has."""

    in_process: bool = False
    """It never leaves the process: telemetry gives its reads and writes no child spans by default."""
    size: bool = False
    """`SizedStore`: it knows cheaply what it holds now (read by the size gauges)."""
    batch: bool = False
    """`BatchStore`: batch forms that do better than one call per key."""
    ttl_reads: bool = False
    """`TTLStore`: a read also says how long the entry has left (a tiered L1 never outlives L2)."""
    locking: bool = False
    """`LockingStore`: it locks a key across processes (distributed single-flight)."""
    pubsub: bool = False
    """`PubSubStore`: it carries invalidation messages between processes (a tiered store's bus)."""
    prefix_rules: bool = False
    """`PrefixRulesStore`: `clear` honours only some prefixes; `check_prefix` refuses the others."""
    tags: bool = False
    """`TagStore`: it indexes keys by tag and deletes every key of a tag (invalidation by tag)."""
    sync_reads: bool = False
    """`SyncReadStore`: `get_now` reads without waiting (an in-process map); the engine's lookup calls
    it instead of awaiting `get`."""


PLAIN = Abilities()
"""A plain byte map: what a store that declares nothing can do."""


@runtime_checkable
class Store(Protocol):
    """Async byte store. `ttl` is in seconds; `None` means no expiry.

    A store declares what else it can do in `abilities` (see `Abilities`); one that declares
    nothing is a plain byte map (`abilities_of`).
    """

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def clear(self, prefix: str | None = None) -> None:
        """Remove every key starting with `prefix`, or every key when `prefix` is None."""
        ...

    async def close(self) -> None: ...


def abilities_of(store: Store) -> Abilities:
    """The store's declared abilities; none for a store written before they were declared."""
    return getattr(store, "abilities", PLAIN)  # type: ignore[no-any-return]


class SizedStore(Store, Protocol):
    def current_size(self) -> tuple[int, int]:
        """Entries and value bytes held now."""
        ...


class BatchStore(Store, Protocol):
    """Optional batch forms for stores that can do better than one call per key."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None) -> None: ...


class LockingStore(Store, Protocol):
    """A shared store that can lock a key across processes (distributed single-flight).

    `try_lock` returns a token when the caller now owns the lock on `key` (it expires by itself
    after `ttl` seconds), None when someone else holds it; `unlock` releases it only for the owner.
    """

    async def try_lock(self, key: str, ttl: float) -> str | None: ...

    async def unlock(self, key: str, token: str) -> bool: ...


class SyncReadStore(Store, Protocol):
    def get_now(self, key: str) -> bytes | None:
        """What `get` answers, without an await (a coroutine a hit would pay for)."""
        ...


class TTLStore(Store, Protocol):
    async def get_with_ttl(self, key: str) -> tuple[bytes | None, float | None]:
        """The value and the seconds it has left (None: no expiry, or a miss)."""
        ...


class PubSubStore(Store, Protocol):
    async def publish(self, channel: str, message: bytes) -> None: ...

    def pubsub_client(self) -> Any:
        """A client to subscribe with (redis-py's `PubSub` interface)."""
        ...


class PrefixRulesStore(Store, Protocol):
    def check_prefix(self, prefix: str) -> None:
        """Raise `StoreError` when `clear(prefix)` could not honour `prefix`."""
        ...


class TagStore(Store, Protocol):
    """A store that keeps, per tag, the keys written with it, so a tag invalidation lists them
    instead of scanning. The index may name keys that are gone (expired, evicted, deleted):
    deleting a missing key is harmless, so the index only has to outlive the entries it names."""

    async def tag(self, key: str, tags: Collection[str], ttl: float | None) -> None:
        """Record that `key` (about to be written with `ttl`) carries `tags`; called before the write,
        so an entry is never stored without its tags indexed."""
        ...

    async def invalidate_tags(self, tags: Collection[str]) -> list[str]:
        """Delete every key recorded under any of `tags`, and those tags' records; the keys deleted
        (some may have been gone already)."""
        ...


async def invalidate_tags(store: Store, tags: Collection[str]) -> list[str]:
    """Delete every key carrying any of `tags`; `NoTagIndex` from a store that cannot."""
    if not abilities_of(store).tags:
        raise NoTagIndex(f"the {store.name} store cannot invalidate by tag (it keeps no tag index)")
    return await cast(TagStore, store).invalidate_tags(tags)


def trim_due(size: int) -> bool:
    """Whether a tag record of `size` keys should drop the keys that are gone: at each power of two
    past 64, so trimming costs O(1) amortised per write and a record holds at most about twice
    its live keys."""
    return size >= 64 and size & (size - 1) == 0


async def get_many(store: Store, keys: Sequence[str]) -> list[bytes | None]:
    """Batch get through the store's own batch form when it has one."""
    if abilities_of(store).batch:
        return list(await cast(BatchStore, store).get_many(keys))
    return [await store.get(key) for key in keys]


async def set_many(store: Store, items: Mapping[str, bytes], ttl: float | None) -> None:
    """Batch set through the store's own batch form when it has one."""
    if abilities_of(store).batch:
        await cast(BatchStore, store).set_many(items, ttl)
        return
    for key, value in items.items():
        await store.set(key, value, ttl)
