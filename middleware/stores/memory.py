"""In-process LRU store bounded by entry count and by bytes, fair between the keys' owners."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Collection

from .._fork import renew_after_fork
from ._tenants import Tenant, Tenants
from .base import Abilities, trim_due


class MemoryStore:
    """An LRU map with per-key expiry checked lazily on read (no timer per key).

    When full it gives up the least recently used key of the owner (key space and scope, see
    `_tenants.py`) holding the most entries or bytes, whichever bound it passed: one caller's flood
    pushes out its own entries, never another's. A read is O(1), a write O(log owners).

    Thread-safe, so one instance can serve the async transport and the sync
    transport's background loop at once.
    """

    name = "memory"
    abilities = Abilities(in_process=True, size=True, tags=True, sync_reads=True)

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A subclass that overrides `get` alone is read through its `get`: the engine's lookup calls
        `get_now` only where it is the same read."""
        super().__init_subclass__(**kwargs)
        if "get" in cls.__dict__ and "get_now" not in cls.__dict__:
            cls.abilities = dataclasses.replace(cls.abilities, sync_reads=False)

    def __init__(self, max_entries: int = 10_000, max_bytes: int | None = 256 * 1024 * 1024) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive or None")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: dict[str, tuple[bytes, float | None, Tenant]] = {}
        self._tenants = Tenants()
        self._bytes = 0
        self._lock = threading.Lock()
        self._tags: dict[str, set[str]] = {}
        """Tag -> the keys written with it; a key gone since stays until the tag is invalidated or trimmed."""
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """A forked child keeps the entries; its lock is its own (a parent thread may hold the copy), and
        the byte count and owners are taken again (a write of a parent thread may have been halfway),
        each owner's keys in the order they were written."""
        self._lock = threading.Lock()
        self._tenants = Tenants()
        owners = self._tenants.rebuilt({key: len(value) for key, (value, _, _) in self._data.items()})
        self._data = {key: (value, expires_at, owners[key]) for key, (value, expires_at, _) in self._data.items()}
        self._bytes = sum(len(value) for value, _, _ in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def current_size(self) -> tuple[int, int]:
        """Entries and value bytes held now, expired ones not yet evicted included (read by the size gauges)."""
        with self._lock:
            return len(self._data), self._bytes

    def get_now(self, key: str) -> bytes | None:
        """Synchronous read: the memory store never blocks."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            value, expires_at, tenant = item
            if expires_at is not None and expires_at <= time.monotonic():
                self._remove(key)
                return None
            tenant.keys.move_to_end(key)
            return value

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if self.max_bytes is not None and len(value) > self.max_bytes:
            return
        expires_at = None if ttl is None else time.monotonic() + ttl
        with self._lock:
            if key in self._data:
                self._remove(key)
            self._data[key] = (value, expires_at, self._tenants.add(key, len(value)))
            self._bytes += len(value)
            while True:
                if len(self._data) > self.max_entries:
                    tenant = self._tenants.most_entries()
                elif self.max_bytes is not None and self._bytes > self.max_bytes:
                    tenant = self._tenants.most_bytes()
                else:
                    break
                self._remove(next(iter(tenant.keys)))

    async def delete(self, key: str) -> None:
        with self._lock:
            if key in self._data:
                self._remove(key)

    async def clear(self, prefix: str | None = None) -> None:
        with self._lock:
            if prefix is None:
                self._data.clear()
                self._tenants.clear()
                self._tags.clear()
                self._bytes = 0
                return
            for key in [k for k in self._data if k.startswith(prefix)]:
                self._remove(key)

    async def tag(self, key: str, tags: Collection[str], ttl: float | None) -> None:
        with self._lock:
            known = len(self._tags)
            for tag in tags:
                keys = self._tags.setdefault(tag, set())
                if key not in keys:
                    keys.add(key)
                    if trim_due(len(keys)):  # `key` is not written yet: keep it
                        keys.intersection_update(self._data)
                        keys.add(key)
            if len(self._tags) > known and trim_due(len(self._tags)):  # drop tags whose every key is gone
                live = self._data
                self._tags = {t: keys for t, keys in self._tags.items() if t in tags or not keys.isdisjoint(live)}

    async def invalidate_tags(self, tags: Collection[str]) -> list[str]:
        with self._lock:
            keys = set().union(*(self._tags.pop(tag, ()) for tag in tags))
            for key in keys:
                if key in self._data:
                    self._remove(key)
        return sorted(keys)

    async def close(self) -> None:
        return None

    def _remove(self, key: str) -> None:
        value, _, tenant = self._data.pop(key)
        self._bytes -= len(value)
        self._tenants.remove(key, tenant, len(value))
