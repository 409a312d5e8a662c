"""`FairAges`: keys in age order per owner, and which key a full table gives up so that no owner's
flood pushes out another's rows.

A bounded table that drops its oldest key lets one caller, adding fast, push every other caller's keys
out. Here the key given up is the oldest of the owner holding the most keys: a caller only ever pushes
out its own keys once it holds as many as anyone else. Of owners of equal size, the one whose size
changed last gives way: the one adding, whose additions push out its own keys. Every operation is
O(1): owners are kept in buckets by size, and a size changes by one at a time, so the largest size
is always known. Each operation holds a lock: an owner's size and its bucket change together, and
the sync and async transports may share the table (a race left owners in buckets of other sizes,
for good: a flooder recorded as small was never the one to give way).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from .._fork import renew_after_fork

K = TypeVar("K", bound=Hashable)


class FairAges(Generic[K]):
    """Keys grouped by owner, oldest first within each owner."""

    __slots__ = ("__weakref__", "_lock", "_owner_of", "_owners", "_sizes", "_top")

    def __init__(self) -> None:
        self._owner_of: dict[K, str] = {}
        self._owners: dict[str, OrderedDict[K, None]] = {}
        self._sizes: dict[int, OrderedDict[str, None]] = {}
        """Size -> the owners of that size, the one that reached it last first."""
        self._top = 0
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._owner_of)

    def __contains__(self, key: object) -> bool:
        return key in self._owner_of

    def add(self, owner: str, key: K) -> None:
        """Add `key` as `owner`'s newest; a key already held is made its owner's newest."""
        with self._lock:
            held = self._owner_of.get(key)
            if held is not None:
                self._owners[held].move_to_end(key)
                return
            self._owner_of[key] = owner
            keys = self._owners.get(owner)
            if keys is None:
                keys = self._owners[owner] = OrderedDict()
            keys[key] = None
            self._resized(owner, len(keys) - 1, len(keys))

    def remove(self, key: K) -> None:
        """Forget `key`, if held."""
        with self._lock:
            self._remove(key)

    def evictee(self) -> K:
        """The oldest key of the owner holding the most keys (the table must not be empty)."""
        with self._lock:
            return self._evictee()

    def evict(self) -> K:
        """Forget the `evictee` and return it, in one step (the table must not be empty)."""
        with self._lock:
            key = self._evictee()
            self._remove(key)
            return key

    def owned(self, owner: str) -> int:
        """How many keys `owner` holds."""
        keys = self._owners.get(owner)
        return 0 if keys is None else len(keys)

    def clear(self) -> None:
        with self._lock:
            self._owner_of.clear()
            self._owners.clear()
            self._sizes.clear()
            self._top = 0

    def _evictee(self) -> K:
        return next(iter(self._owners[next(iter(self._sizes[self._top]))]))

    def _remove(self, key: K) -> None:
        owner = self._owner_of.pop(key, None)
        if owner is None:
            return
        keys = self._owners[owner]
        del keys[key]
        if not keys:
            del self._owners[owner]
        self._resized(owner, len(keys) + 1, len(keys))

    def _resized(self, owner: str, old: int, new: int) -> None:
        if old:
            left = self._sizes[old]
            del left[owner]
            if not left:
                del self._sizes[old]
        if new:
            joined = self._sizes.get(new)
            if joined is None:
                joined = self._sizes[new] = OrderedDict()
            joined[owner] = None
            joined.move_to_end(owner, last=False)
        if new > self._top:
            self._top = new
        elif old == self._top and old not in self._sizes:
            self._top = new  # (sizes move by one: the owner that shrank is now the largest, or none is left)
