"""`Tenants`: a bounded in-process store's keys in use order per owner, and whose key a full store
gives up, so that no owner's flood pushes out another's entries.

A store that drops its least recently used key lets one caller streaming unique prompts (or a few
2,048-item embeddings lists) push every other caller's entries out: their hits become misses. Here
the key given up is the least recently used of the owner holding the most: entries when the store
is over its entry bound, bytes when over its byte bound. A caller only ever pushes out its own
entries once it holds more than anyone else. Of owners of equal size, the one that grew last gives
way. The owner of a key is `_keys.key_owner`'s (key space and scope).

The largest owner is kept in a max-heap per measure, lazily: an owner's record is pushed when it
grows and corrected when found on top after it shrank, so every live owner's newest record is at
least its size and a record on top that is exact names the largest. A write costs O(log owners), a
read (`touch`) one `move_to_end`. The store's lock guards every call.
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

    __slots__ = ("bytes", "keys", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: OrderedDict[str, None] = OrderedDict()
        self.bytes = 0


_Record = tuple[int, int, Tenant]
_Measure = Callable[[Tenant], int]
"""(minus the size, minus the order it was pushed in, the owner): the heaps' top is the largest
owner, the last to grow first among equals."""


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
        if max(len(self._by_entries), len(self._by_bytes)) > 2 * len(self._owners) + _SLACK:
            self._rebuild()
        order = -next(self._order)
        heapq.heappush(self._by_entries, (-len(tenant.keys), order, tenant))
        heapq.heappush(self._by_bytes, (-tenant.bytes, order, tenant))
        return tenant

    def remove(self, key: str, tenant: Tenant, size: int) -> None:
        """Forget `key` (held by `tenant`, its value `size` bytes)."""
        del tenant.keys[key]
        tenant.bytes -= size
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
            recorded, _, tenant = heap[0]
            size = size_of(tenant)
            if -recorded == size and self._owners.get(tenant.name) is tenant:
                return tenant
            if size and self._owners.get(tenant.name) is tenant:  # it shrank since: its record is corrected
                heapq.heapreplace(heap, (-size, -next(self._order), tenant))
            else:
                heapq.heappop(heap)

    def _rebuild(self) -> None:
        """Drop the stale records: one per owner, in the order they were last pushed."""
        for heap, size_of in ((self._by_entries, _entries), (self._by_bytes, _bytes)):
            newest: dict[str, _Record] = {}
            for record in heap:
                name = record[2].name
                kept = newest.get(name)
                if self._owners.get(name) is record[2] and (kept is None or record[1] < kept[1]):
                    newest[name] = record
            heap[:] = [(-size_of(tenant), order, tenant) for _, order, tenant in newest.values()]
            heapq.heapify(heap)


def _entries(tenant: Tenant) -> int:
    return len(tenant.keys)


def _bytes(tenant: Tenant) -> int:
    return tenant.bytes
