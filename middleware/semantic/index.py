"""Vector indexes for the semantic cache: where the prompts of stored answers are found by meaning.

An index row is one stored answer: its exact-cache key (the answer itself stays in the cache's
store), the prompt text it answered (for the guard) and that text's vector. Rows are grouped by
*context*, a digest of everything in the request except the final user text (system prompt,
earlier turns, tools, parameters, model, credential scope), and a search only ever looks inside
one context.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A stored prompt near the one searched for."""

    key: str
    """The exact-cache key of the stored answer."""
    text: str
    """The prompt text that answer was for."""
    similarity: float
    """Cosine similarity to the searched vector, in [-1, 1]."""


class IndexUnavailable(RuntimeError):
    """The index cannot work on the server it was given (a Redis without RediSearch): a setup error
    that no retry fixes, raised by `start()` (and by every call until the server is changed)."""


@runtime_checkable
class VectorIndex(Protocol):
    """An index may also have `async def start()`, which checks its server (`SemanticCache.start` calls it)."""

    name: str

    async def add(self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None) -> None:
        """Index `key` (replacing an earlier row for it); it disappears after `ttl` seconds."""
        ...

    async def search(self, context: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        """Up to `k` rows of `context` nearest to `vector` (unit length), best first."""
        ...

    async def delete(self, key: str) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


class _Partition:
    """The rows of one context: a matrix that grows and shrinks by doubling, and parallel lists."""

    __slots__ = ("expires", "keys", "matrix", "texts")

    def __init__(self, dimensions: int) -> None:
        self.matrix = np.zeros((1, dimensions), dtype=np.float32)
        self.expires = np.zeros(1, dtype=np.float64)
        self.keys: list[str] = []
        self.texts: list[str] = []

    def append(self, key: str, text: str, vector: np.ndarray, expires: float) -> None:
        row = len(self.keys)
        if row == len(self.matrix):
            self._resize(2 * len(self.matrix))
        self.matrix[row] = vector
        self.expires[row] = expires
        self.keys.append(key)
        self.texts.append(text)

    def remove(self, row: int) -> str | None:
        """Remove `row` by moving the last row into its place; the key that moved, if any."""
        last = len(self.keys) - 1
        moved = None
        if row != last:
            self.matrix[row] = self.matrix[last]
            self.expires[row] = self.expires[last]
            self.keys[row], self.texts[row] = self.keys[last], self.texts[last]
            moved = self.keys[row]
        self.keys.pop()
        self.texts.pop()
        if len(self.matrix) > 8 and len(self.keys) <= len(self.matrix) // 4:
            self._resize(len(self.matrix) // 2)
        return moved

    def _resize(self, rows: int) -> None:
        count = len(self.keys)
        matrix = np.zeros((rows, self.matrix.shape[1]), dtype=np.float32)
        matrix[:count] = self.matrix[:count]
        expires = np.zeros(rows, dtype=np.float64)
        expires[:count] = self.expires[:count]
        self.matrix, self.expires = matrix, expires


class InProcessIndex:
    """Exact (brute-force) cosine search in this process, bounded to `max_entries` rows.

    A matrix product over the context's rows per search (a few milliseconds for 100,000 rows of one
    context, far less for the usual handful), less than the embedding itself takes. A partition
    grows and shrinks by doubling, so a context costs about its rows. The oldest rows go first when
    the index is full.
    Thread-safe, like MemoryStore, so the sync and async transports can share one.
    """

    name = "memory"

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._clock = clock
        self._partitions: dict[str, _Partition] = {}
        self._rows: OrderedDict[str, tuple[str, int]] = OrderedDict()
        """key -> (context, row), oldest first."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    async def add(self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None) -> None:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        expires = self._clock() + ttl if ttl is not None else float("inf")
        with self._lock:
            self._delete(key)
            partition = self._partitions.get(context)
            if partition is None:
                partition = self._partitions[context] = _Partition(len(vector))
            elif partition.matrix.shape[1] != len(vector):
                raise ValueError(f"vector has {len(vector)} dimensions, the index {partition.matrix.shape[1]}")
            partition.append(key, text, vector, expires)
            self._rows[key] = (context, len(partition.keys) - 1)
            while len(self._rows) > self.max_entries:
                self._delete(next(iter(self._rows)))

    async def search(self, context: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        now = self._clock()
        with self._lock:
            partition = self._partitions.get(context)
            if partition is None or not partition.keys:
                return []
            if partition.matrix.shape[1] != len(vector):
                raise ValueError(f"vector has {len(vector)} dimensions, the index {partition.matrix.shape[1]}")
            count = len(partition.keys)
            expired = np.flatnonzero(partition.expires[:count] <= now)
            for key in [partition.keys[i] for i in expired]:
                self._delete(key)
            count = len(partition.keys)
            if count == 0:
                return []
            scores = partition.matrix[:count] @ vector
            if count > k:
                best = np.argpartition(-scores, k - 1)[:k]
                best = best[np.argsort(-scores[best])]
            else:
                best = np.argsort(-scores)
            return [Neighbour(partition.keys[i], partition.texts[i], float(scores[i])) for i in best]

    async def delete(self, key: str) -> None:
        with self._lock:
            self._delete(key)

    def _delete(self, key: str) -> None:
        place = self._rows.pop(key, None)
        if place is None:
            return
        context, row = place
        partition = self._partitions[context]
        moved = partition.remove(row)
        if moved is not None:
            self._rows[moved] = (context, row)  # an existing key keeps its age
        if not partition.keys:
            del self._partitions[context]

    async def clear(self) -> None:
        with self._lock:
            self._partitions.clear()
            self._rows.clear()

    async def close(self) -> None:
        return None
