"""The Redis vector index's add and search, timed on a private Redis Stack (RediSearch), in one run.

Adds `--rows` unique rows of `--dimensions` random unit vectors (MiniLM's 384 by default) from
`--owners` callers, a TTL on each, then `--searches` KNN searches (k=4) of a context of 100 rows.
With `--cap` (default: a tenth of the rows) the index is full for the last nine tenths of the adds,
so each of them also gives up a row. Prints the median and p95 of each, in microseconds.

    .venv/bin/python benchmarks/redis_index.py [--rows 20000] [--searches 2000] [--cap 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from llm_cache.middleware.semantic import RedisVectorIndex
from tests.support.servers import new_redis_stack


def unit(draw: np.random.Generator, rows: int, dimensions: int) -> np.ndarray:
    vectors = draw.standard_normal((rows, dimensions)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def summary(name: str, seconds: list[float]) -> str:
    micros = sorted(s * 1e6 for s in seconds)
    p95 = micros[int(0.95 * (len(micros) - 1))]
    return f"| {name} | {len(micros)} | {statistics.median(micros):.0f} | {p95:.0f} |"


async def measure(url: str, args: argparse.Namespace) -> list[str]:
    options = {"index_name": "bench-index", "prefix": "bench-index:"}
    if "max_entries" in inspect.signature(RedisVectorIndex).parameters:
        options["max_entries"] = args.cap or max(1, args.rows // 10)
    index = RedisVectorIndex(url, **options)  # type: ignore[arg-type]
    draw = np.random.default_rng(7)
    near = unit(draw, 100, args.dimensions)
    for i, vector in enumerate(near):  # the context searched: its rows belong to a caller adding nothing more
        await index.add("searched", f"near-{i}", f"prompt {i}", vector, 3600)
    vectors = unit(draw, args.rows, args.dimensions)
    owned = getattr(index, "owned", False)
    adds = []
    for i, vector in enumerate(vectors):
        extra = {"owner": f"caller-{i % args.owners}"} if owned else {}
        start = time.perf_counter()
        await index.add(f"ctx-{i}", f"key-{i}", f"prompt {i}", vector, 3600, **extra)
        adds.append(time.perf_counter() - start)
    queries = unit(draw, args.searches, args.dimensions)
    searches = []
    for query in queries:
        start = time.perf_counter()
        await index.search("searched", query, 4)
        searches.append(time.perf_counter() - start)
    await index.clear()
    await index.close()
    full = adds[len(adds) // 10 :]
    return [summary("add (the last nine tenths)", full), summary("search, k=4 (a context of 100 rows)", searches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=2_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--owners", type=int, default=3)
    parser.add_argument("--cap", type=int, default=None, help="the index's max_entries (default: rows / 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = new_redis_stack(Path(directory))
        server.start()
        try:
            rows = asyncio.run(measure(server.url, args))
        finally:
            server.stop()
    print("| operation | calls | median µs | p95 µs |\n| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
