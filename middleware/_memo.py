"""A bounded memo: values by key, forgotten all at once when full (by count or by bytes)."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """What the engine's memos share: a dict that starts over when it holds `max_entries` values or
    `max_bytes` of them (as their owner sizes them), and never holds a value over a 64th of the bytes.
    Starting over is cheaper than ordering entries, and a hot value is back after one miss."""

    __slots__ = ("_bytes", "_max_bytes", "_max_entries", "_values")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._values: dict[K, V] = {}
        self._bytes = 0

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V, size: int) -> None:
        """Remember `value` (of `size` bytes), unless it is over a 64th of the bytes."""
        if size > self._max_bytes // 64:
            return
        if len(self._values) >= self._max_entries or self._bytes + size > self._max_bytes:
            self._values = {}
            self._bytes = 0
        self._values[key] = value
        self._bytes += size
