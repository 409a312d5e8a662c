"""`Tenants`: a bounded in-process store's keys in use order per owner, and whose key a full store
gives up, so that no owner's flood pushes out another's entries.

A store that drops its least recently used key lets one caller streaming unique prompts (or a few
2,048-item embeddings lists) push every other caller's entries out: their hits become misses. Here
the key given up is the least recently used of the owner holding the most: entries when the store
is over its entry bound, bytes when over its byte bound. A caller only ever pushes out its own
entries once it holds more than anyone else. Of owners of equal size, the one whose size changed
last gives way (the one adding, whose additions then push out its own). The owner of a key is
`_keys.key_owner`'s (key space and scope).

The largest owner is kept in a max-heap per measure, lazily: an owner's record is pushed when it
grows and corrected when found on top after it changed, so every live owner has a record at least
its size, and a record on top that is exact (its size, and when it changed) names the largest. Two
records compare by size and change only: changes are numbered once, so no two owners tie on both.
A write costs O(log owners) amortised; a read moves its key in its owner's order. The store's lock
guards every call.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable

from .._keys import key_owner

_SLACK = 64
"""Stale heap records allowed past twice the owners before the heaps are rebuilt (amortised O(1))."""


class Tenant:
    """One owner's keys, least recently used first, and the bytes of their values."""

    __slots__ = ("bytes", "changed", "keys", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: OrderedDict[str, None] = OrderedDict()
        self.bytes = 0
        self.changed = 0
        """Minus when its size last changed (the store's count of changes): the latest sorts first."""


_Record = tuple[int, int, Tenant]
"""(minus the size, `Tenant.changed` then, the owner): the heaps' top is the largest owner, the last
to change first among equals."""
_Measure = Callable[[Tenant], int]


class Tenants:
    """The owners of a store's keys, and which owner gives way when the store is full."""

    __slots__ = ("_by_bytes", "_by_entries", "_order", "_owners")

    def __init__(self) -> None:
        self._owners: dict[str, Tenant] = {}
        self._by_entries: list[_Record] = []
        self._by_bytes: list[_Record] = []
        self._order = itertools.count()

    def add(self, key: str, size: int) -> Tenant:
        """Record `key` (not held) with a value of `size` bytes as its owner's most recently used."""
        name = key_owner(key)
        tenant = self._owners.get(name)
        if tenant is None:
            tenant = self._owners[name] = Tenant(name)
        tenant.keys[key] = None
        tenant.bytes += size
        tenant.changed = changed = -next(self._order)
        if max(len(self._by_entries), len(self._by_bytes)) > 2 * len(self._owners) + _SLACK:
            self._rebuild()
        heapq.heappush(self._by_entries, (-len(tenant.keys), changed, tenant))
        heapq.heappush(self._by_bytes, (-tenant.bytes, changed, tenant))
        return tenant

    def remove(self, key: str, tenant: Tenant, size: int) -> None:
        """Forget `key` (held by `tenant`, its value `size` bytes)."""
        del tenant.keys[key]
        tenant.bytes -= size
        tenant.changed = -next(self._order)
        if not tenant.keys:
            del self._owners[tenant.name]

    def most_entries(self) -> Tenant:
        """The owner holding the most keys (there must be one)."""
        return self._largest(self._by_entries, _entries)

    def most_bytes(self) -> Tenant:
        """The owner holding the most bytes (there must be one)."""
        return self._largest(self._by_bytes, _bytes)

    def rebuilt(self, keys: dict[str, int]) -> dict[str, Tenant]:
        """Start again from `keys` (key -> value bytes), in their order; each key's owner."""
        self.clear()
        return {key: self.add(key, size) for key, size in keys.items()}

    def clear(self) -> None:
        self._owners.clear()
        self._by_entries.clear()
        self._by_bytes.clear()

    def _largest(self, heap: list[_Record], size_of: _Measure) -> Tenant:
        while True:
            recorded, changed, tenant = heap[0]
            if self._owners.get(tenant.name) is not tenant:  # gone (a key of its name since is another's)
                heapq.heappop(heap)
                continue
            size = size_of(tenant)
            if -recorded == size and changed == tenant.changed:
                return tenant
            heapq.heapreplace(heap, (-size, tenant.changed, tenant))  # it changed since: corrected

    def _rebuild(self) -> None:
        """Drop the stale records: one exact record per owner."""
        owners = self._owners.values()
        for heap, size_of in ((self._by_entries, _entries), (self._by_bytes, _bytes)):
            heap[:] = [(-size_of(tenant), tenant.changed, tenant) for tenant in owners]
            heapq.heapify(heap)


def _entries(tenant: Tenant) -> int:
    return len(tenant.keys)


def _bytes(tenant: Tenant) -> int:
    return tenant.bytes
