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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .._fork import renew_after_fork
from ._fair import FairAges


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
    """An index may also have `async def start()`, which checks its server (`SemanticCache.start` calls it),
    and declare `owned = True` when its `add` takes an `owner` keyword: the caller a row belongs to
    (`SemanticCache.remember` passes it), for an index that bounds its rows per caller."""

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
    """The rows of one cell: full vectors, their scan copies (projected, when the context has a
    projection), expiry times and parallel lists; the arrays grow and shrink by doubling."""

    __slots__ = ("expires", "keys", "matrix", "scan", "soonest", "texts")

    def __init__(self, dimensions: int, scan_dimensions: int | None = None) -> None:
        self.matrix = np.zeros((1, dimensions), dtype=np.float32)
        self.scan = self.matrix if scan_dimensions is None else np.zeros((1, scan_dimensions), dtype=np.float32)
        """What a search scores first: `matrix` itself, or its rows projected to fewer dimensions."""
        self.expires = np.zeros(1, dtype=np.float64)
        self.soonest = float("inf")
        """No row expires before this (a row may have left since: then it is only early)."""
        self.keys: list[str] = []
        self.texts: list[str] = []

    def append(self, key: str, text: str, vector: np.ndarray, scanned: np.ndarray | None, expires: float) -> None:
        row = len(self.keys)
        if row == len(self.matrix):
            self._resize(2 * len(self.matrix))
        self.matrix[row] = vector
        if scanned is not None:
            self.scan[row] = scanned
        self.expires[row] = expires
        self.soonest = min(self.soonest, expires)
        self.keys.append(key)
        self.texts.append(text)

    def remove(self, row: int) -> str | None:
        """Remove `row` by moving the last row into its place; the key that moved, if any."""
        last = len(self.keys) - 1
        moved = None
        if row != last:
            self.matrix[row] = self.matrix[last]
            if self.scan is not self.matrix:
                self.scan[row] = self.scan[last]
            self.expires[row] = self.expires[last]
            self.keys[row], self.texts[row] = self.keys[last], self.texts[last]
            moved = self.keys[row]
        self.keys.pop()
        self.texts.pop()
        if len(self.matrix) > 8 and len(self.keys) <= len(self.matrix) // 4:
            self._resize(len(self.matrix) // 2)
        return moved

    def expired(self, now: float) -> list[str]:
        """The keys of rows whose time is up (cheap when none can be)."""
        if self.soonest > now:
            return []
        expires = self.expires[: len(self.keys)]
        self.soonest = float(expires[expires > now].min(initial=np.inf))
        return [self.keys[i] for i in np.flatnonzero(expires <= now)]

    def _resize(self, rows: int) -> None:
        count = len(self.keys)
        projected = self.scan is not self.matrix
        self.matrix = _grown(self.matrix, rows, count)
        self.scan = _grown(self.scan, rows, count) if projected else self.matrix
        self.expires = _grown(self.expires, rows, count)


def _grown(array: np.ndarray, rows: int, count: int) -> np.ndarray:
    """A copy of `array`'s first `count` rows in an array of `rows` rows."""
    grown = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    grown[:count] = array[:count]
    return grown


class _Context:
    """The rows of one context: one cell while it is small; past a size, `cells` cells, each row in
    the cell of its nearest centroid, and a projection to fewer dimensions that a search scans
    first (centroids and projection learned once from the rows)."""

    __slots__ = ("cells", "centroids", "count", "dimensions", "projection")

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.cells = [_Partition(dimensions)]
        self.centroids: np.ndarray | None = None
        self.projection: np.ndarray | None = None
        """`(scan dimensions, dimensions)`: the rows' main directions, or None (scan the vectors themselves)."""
        self.count = 0

    def cell_for(self, vector: np.ndarray) -> int:
        return 0 if self.centroids is None else int(np.argmax(self.centroids @ vector))

    def scanned(self, vector: np.ndarray) -> np.ndarray | None:
        return None if self.projection is None else self.projection @ vector

    def probed(self, vector: np.ndarray, probes: int) -> list[int]:
        """The cells a search reads: the `probes` whose centroids are nearest (all while unsplit)."""
        if self.centroids is None or probes >= len(self.centroids):
            return list(range(len(self.cells)))
        return np.argpartition(-(self.centroids @ vector), probes - 1)[:probes].tolist()  # type: ignore[no-any-return]


def _centroids(rows: np.ndarray, cells: int, seed: int = 0, rounds: int = 8) -> np.ndarray:
    """`cells` unit centroids of `rows` (unit vectors): a few rounds of spherical k-means on a sample."""
    draw = np.random.default_rng(seed)
    sample = rows[draw.choice(len(rows), min(len(rows), 64 * cells), replace=False)]
    centroids = sample[draw.choice(len(sample), cells, replace=False)].copy()
    for _ in range(rounds):
        nearest = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0
        centroids[filled] = sums[filled] / norms[filled]
    return centroids


def _projection(rows: np.ndarray, dimensions: int) -> np.ndarray:
    """The `dimensions` directions that keep the most of `rows`' length (their top singular vectors)."""
    sample = rows[np.random.default_rng(1).choice(len(rows), min(len(rows), 8192), replace=False)]
    return np.ascontiguousarray(np.linalg.svd(sample, full_matrices=False)[2][:dimensions], dtype=np.float32)


class InProcessIndex:
    """Cosine search in this process, bounded to `max_entries` rows.

    A context of up to `split_at` rows is searched exactly: one matrix product over its rows, well
    under a millisecond for the usual handful. Past that, its rows are split once into `cells` cells
    around centroids learned from them, and a search reads only the `probes` cells nearest the
    query: a very near stored prompt is almost always in one of them, and one missed is a miss,
    never a wrong answer. In a split context a search first scores the rows' projections on their
    `scan_dimensions` main directions (a sixth of the bytes of MiniLM's 384), then scores the
    `rerank` best of those exactly. A cell grows and shrinks by doubling, so a context costs about
    its rows. When the index is full, an addition pushes out the oldest row of the owner holding
    the most rows (`add`'s `owner`, the caller; else the context): one caller's flood of prompts
    only ever pushes out its own rows once it holds as many as any other (`_fair.py`). Thread-safe,
    like MemoryStore, so the sync and async transports can share one.
    """

    name = "memory"
    owned = True
    """`add` takes the `owner` of a row (see `VectorIndex`)."""

    def __init__(
        self,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        split_at: int = 20_000,
        cells: int = 512,
        probes: int = 64,
        scan_dimensions: int = 64,
        rerank: int = 32,
    ) -> None:
        if max_entries <= 0 or cells <= 0 or probes <= 0 or split_at < cells:
            raise ValueError("max_entries, cells and probes must be positive, and split_at at least cells")
        if scan_dimensions <= 0 or rerank <= 0:
            raise ValueError("scan_dimensions and rerank must be positive")
        self.max_entries = max_entries
        self.split_at = split_at
        self.cells = cells
        self.probes = probes
        self.scan_dimensions = scan_dimensions
        self.rerank = rerank
        self._clock = clock
        self._contexts: dict[str, _Context] = {}
        self._rows: dict[str, tuple[str, int, int]] = {}
        """key -> (context, cell, row)."""
        self._ages: FairAges[str] = FairAges()
        """The keys by owner, oldest first: which one a full index gives up."""
        self._scores = np.empty(0, dtype=np.float32)
        """Scratch for a search's first scores, reused (searches hold the lock)."""
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread adding or searching."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    async def add(
        self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None, owner: str | None = None
    ) -> None:
        """Index `key` in `context` for `owner` (default: the context), whose rows a full index gives up
        first when it holds the most."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        owner = context if owner is None else owner
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
            partition.append(key, text, vector, rows.scanned(vector), expires)
            rows.count += 1
            self._rows[key] = (context, cell, len(partition.keys) - 1)
            self._ages.add(owner, key)
            while len(self._rows) > self.max_entries:
                self._delete(self._ages.evictee())
            if rows.centroids is None and rows.count > self.split_at and context in self._contexts:
                self._split(context, rows)

    def _split(self, context: str, rows: _Context) -> None:
        """Spread an unsplit context's rows over cells around centroids learned from them."""
        whole = rows.cells[0]
        count = len(whole.keys)
        matrix = whole.matrix[:count]
        rows.centroids = _centroids(matrix, self.cells)
        scan_dimensions = None
        if rows.dimensions > self.scan_dimensions:
            rows.projection = _projection(matrix, self.scan_dimensions)
            scan_dimensions = self.scan_dimensions
        scanned = None if rows.projection is None else matrix @ rows.projection.T
        nearest = np.argmax(matrix @ rows.centroids.T, axis=1)
        rows.cells = [_Partition(rows.dimensions, scan_dimensions) for _ in range(self.cells)]
        for i in range(count):
            partition = rows.cells[nearest[i]]
            key = whole.keys[i]
            low = None if scanned is None else scanned[i]
            partition.append(key, whole.texts[i], matrix[i], low, whole.expires[i])
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
            probed = [rows.cells[cell] for cell in rows.probed(vector, self.probes)]
            for partition in probed:
                for key in partition.expired(now):
                    self._delete(key)
            live = [partition for partition in probed if partition.keys]
            if not live or context not in self._contexts:
                return []
            return self._nearest(rows, live, vector, k)

    def _nearest(self, rows: _Context, probed: list[_Partition], vector: np.ndarray, k: int) -> list[Neighbour]:
        """The `k` rows of `probed` nearest `vector`: scored on their scan copies into one reused
        buffer, and (when those are projections) the `rerank` best of them scored again exactly."""
        sizes = [len(p.keys) for p in probed]
        total = sum(sizes)
        if len(self._scores) < total:
            self._scores = np.empty(max(total, 2 * len(self._scores)), dtype=np.float32)
        scores = self._scores[:total]
        query = rows.scanned(vector)
        query = vector if query is None else query.astype(np.float32)
        at = 0
        for partition, size in zip(probed, sizes, strict=True):
            np.dot(partition.scan[:size], query, out=scores[at : at + size])
            at += size
        projected = rows.projection is not None
        keep = min(total, max(self.rerank, k) if projected else k)
        best = np.arange(total)
        if total > keep:  # the `keep` best: those at or above the keep-th score (ties: any of them)
            best = np.flatnonzero(scores >= np.partition(scores, total - keep)[total - keep])
            if len(best) > keep:
                best = best[np.argpartition(-scores[best], keep - 1)[:keep]]
        starts = np.cumsum(sizes) - sizes
        owners = np.searchsorted(starts, best, side="right") - 1
        places = [(probed[o], int(i - starts[o])) for o, i in zip(owners.tolist(), best.tolist(), strict=True)]
        exact = np.stack([p.matrix[row] for p, row in places]) @ vector if projected else scores[best]
        order = np.argsort(-exact)[:k]
        return [
            Neighbour(places[i][0].keys[places[i][1]], places[i][0].texts[places[i][1]], float(exact[i])) for i in order
        ]

    async def delete(self, key: str) -> None:
        with self._lock:
            self._delete(key)

    def _delete(self, key: str) -> None:
        place = self._rows.pop(key, None)
        if place is None:
            return
        context, cell, row = place
        self._ages.remove(key)
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
            self._ages.clear()

    async def close(self) -> None:
        return None
