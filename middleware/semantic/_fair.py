"""`FairAges`: keys in age order per owner, and which key a full table gives up so that no owner's
flood pushes out another's rows.

A bounded table that drops its oldest key lets one caller, adding fast, push every other caller's keys
out. Here the key given up is the oldest of the owner holding the most keys: a caller only ever pushes
out its own keys once it holds as many as anyone else. Of owners of equal size, the one whose size
changed last gives way: the one adding, whose additions push out its own keys. Every operation is
O(1): owners are kept in buckets by size, and a size changes by one at a time, so the largest size
is always known.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class FairAges(Generic[K]):
    """Keys grouped by owner, oldest first within each owner (the caller keeps a key's owner)."""

    __slots__ = ("_count", "_owners", "_sizes", "_top")

    def __init__(self) -> None:
        self._owners: dict[str, OrderedDict[K, None]] = {}
        self._sizes: dict[int, OrderedDict[str, None]] = {}
        """Size -> the owners of that size, the one that reached it last first."""
        self._top = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, owner: str, key: K) -> None:
        """Add `key` (not held yet) as `owner`'s newest."""
        keys = self._owners.get(owner)
        if keys is None:
            keys = self._owners[owner] = OrderedDict()
        keys[key] = None
        self._count += 1
        self._resized(owner, len(keys) - 1, len(keys))

    def touch(self, owner: str, key: K) -> None:
        """Make `owner`'s `key` its newest (a least-recently-used table's use)."""
        self._owners[owner].move_to_end(key)

    def remove(self, owner: str, key: K) -> None:
        """Forget `owner`'s `key`, if held."""
        keys = self._owners.get(owner)
        if keys is None or key not in keys:
            return
        del keys[key]
        self._count -= 1
        if not keys:
            del self._owners[owner]
        self._resized(owner, len(keys) + 1, len(keys))

    def evictee(self) -> tuple[str, K]:
        """The owner holding the most keys, and its oldest key (the table must not be empty)."""
        owner = next(iter(self._sizes[self._top]))
        return owner, next(iter(self._owners[owner]))

    def owned(self, owner: str) -> int:
        """How many keys `owner` holds."""
        keys = self._owners.get(owner)
        return 0 if keys is None else len(keys)

    def clear(self) -> None:
        self._owners.clear()
        self._sizes.clear()
        self._top = self._count = 0

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
