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


class _Context:
    """The rows of one context: one cell while it is small; past a size, `cells` cells, each row in
    the cell of its nearest centroid (centroids learned once from the rows, spherical k-means)."""

    __slots__ = ("cells", "centroids", "count", "dimensions")

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.cells = [_Partition(dimensions)]
        self.centroids: np.ndarray | None = None
        self.count = 0

    def cell_for(self, vector: np.ndarray) -> int:
        return 0 if self.centroids is None else int(np.argmax(self.centroids @ vector))

    def probed(self, vector: np.ndarray, probes: int) -> list[int]:
        """The cells a search reads: the `probes` whose centroids are nearest (all while unsplit)."""
        if self.centroids is None or probes >= len(self.centroids):
            return list(range(len(self.cells)))
        return [int(c) for c in np.argpartition(-(self.centroids @ vector), probes - 1)[:probes]]


def _centroids(rows: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """`cells` unit centroids of `rows` (unit vectors): a few rounds of spherical k-means on a sample."""
    draw = np.random.default_rng(seed)
    sample = rows[draw.choice(len(rows), min(len(rows), 40 * cells), replace=False)]
    centroids = sample[draw.choice(len(sample), cells, replace=False)].copy()
    for _ in range(6):
        nearest = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0
        centroids[filled] = sums[filled] / norms[filled]
    return centroids


class InProcessIndex:
    """Cosine search in this process, bounded to `max_entries` rows.

    A context of up to `split_at` rows is searched exactly: one matrix product over its rows, well
    under a millisecond for the usual handful, a few for 20,000. Past that, its rows are split once
    into `cells` cells around centroids learned from them, and a search reads only the `probes`
    cells nearest the query (about 6% of the rows by default): a very near stored prompt is almost
    always in one of them, and one missed is a miss, never a wrong answer. A cell grows and
    shrinks by doubling, so a context costs about its rows. The oldest rows go first when the index
    is full. Thread-safe, like MemoryStore, so the sync and async transports can share one.
    """

    name = "memory"

    def __init__(
        self,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        split_at: int = 20_000,
        cells: int = 256,
        probes: int = 16,
    ) -> None:
        if max_entries <= 0 or cells <= 0 or probes <= 0 or split_at < cells:
            raise ValueError("max_entries, cells and probes must be positive, and split_at at least cells")
        self.max_entries = max_entries
        self.split_at = split_at
        self.cells = cells
        self.probes = probes
        self._clock = clock
        self._contexts: dict[str, _Context] = {}
        self._rows: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        """key -> (context, cell, row), oldest first."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    async def add(self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None) -> None:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        expires = self._clock() + ttl if ttl is not None else float("inf")
        with self._lock:
            self._delete(key)
            rows = self._contexts.get(context)
            if rows is None:
                rows = self._contexts[context] = _Context(len(vector))
            elif rows.dimensions != len(vector):
                raise ValueError(f"vector has {len(vector)} dimensions, the index {rows.dimensions}")
            cell = rows.cell_for(vector)
            partition = rows.cells[cell]
            partition.append(key, text, vector, expires)
            rows.count += 1
            self._rows[key] = (context, cell, len(partition.keys) - 1)
            while len(self._rows) > self.max_entries:
                self._delete(next(iter(self._rows)))
            if rows.centroids is None and rows.count > self.split_at and context in self._contexts:
                self._split(context, rows)

    def _split(self, context: str, rows: _Context) -> None:
        """Spread an unsplit context's rows over cells around centroids learned from them."""
        whole = rows.cells[0]
        count = len(whole.keys)
        rows.centroids = _centroids(whole.matrix[:count], self.cells)
        nearest = np.argmax(whole.matrix[:count] @ rows.centroids.T, axis=1)
        rows.cells = [_Partition(rows.dimensions) for _ in range(self.cells)]
        for i in range(count):
            partition = rows.cells[nearest[i]]
            key = whole.keys[i]
            partition.append(key, whole.texts[i], whole.matrix[i], whole.expires[i])
            self._rows[key] = (context, int(nearest[i]), len(partition.keys) - 1)  # (keeps its age)

    async def search(self, context: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        now = self._clock()
        with self._lock:
            rows = self._contexts.get(context)
            if rows is None:
                return []
            if rows.dimensions != len(vector):
                raise ValueError(f"vector has {len(vector)} dimensions, the index {rows.dimensions}")
            partitions, scores = [], []
            for cell in rows.probed(vector, self.probes):
                partition = rows.cells[cell]
                expired = np.flatnonzero(partition.expires[: len(partition.keys)] <= now)
                for key in [partition.keys[i] for i in expired]:
                    self._delete(key)
                if partition.keys:
                    partitions.append(partition)
                    scores.append(partition.matrix[: len(partition.keys)] @ vector)
            if not partitions:
                return []
            joined = np.concatenate(scores) if len(scores) > 1 else scores[0]
            best = np.argpartition(-joined, k - 1)[:k] if len(joined) > k else np.arange(len(joined))
            best = best[np.argsort(-joined[best])]
            starts = np.cumsum([0] + [len(part) for part in scores])
            found = []
            for i in best:
                part = int(np.searchsorted(starts, i, side="right")) - 1
                row = int(i - starts[part])
                found.append(Neighbour(partitions[part].keys[row], partitions[part].texts[row], float(joined[i])))
            return found

    async def delete(self, key: str) -> None:
        with self._lock:
            self._delete(key)

    def _delete(self, key: str) -> None:
        place = self._rows.pop(key, None)
        if place is None:
            return
        context, cell, row = place
        rows = self._contexts[context]
        moved = rows.cells[cell].remove(row)
        if moved is not None:
            self._rows[moved] = (context, cell, row)  # an existing key keeps its age
        rows.count -= 1
        if not rows.count:
            del self._contexts[context]

    async def clear(self) -> None:
        with self._lock:
            self._contexts.clear()
            self._rows.clear()

    async def close(self) -> None:
        return None
