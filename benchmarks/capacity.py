"""Capacity inputs: what one request costs the gateway and Redis, and what one entry costs each store.

Everything runs on 127.0.0.1: a private `redis-server` (no persistence), the fake upstream of
`gateway_load.py` (one fixed chat completion) and `llm-cache serve` with one worker on that Redis.
The script, in its own process, sends `--requests` distinct 1 KB chat requests (all misses), then
the same ones again (all hits), `--concurrency` at a time. Around each phase it reads:

- the CPU time (user + system, /proc) of the gateway and of redis-server, per request;
- Redis `INFO commandstats` (calls per command) and `INFO stats` (network bytes in and out), after
  `CONFIG RESETSTAT`, per request;

then the memory an entry takes: Redis `MEMORY USAGE` of the stored entries (and `used_memory`
growth), the memory store (tracemalloc over `MemoryStore.set` of the same bytes), the disk store
(bytes on disk after `DiskStore.set`); and the semantic lookup: one query embedded with the local
model (all-MiniLM-L6-v2, when installed) and a search of an in-process index of `--vectors`
entries. docs/scaling.md projects these figures to 10k and 100k requests/s.

    .venv/bin/python benchmarks/capacity.py [--requests 3000] [--concurrency 16] [--vectors 10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx2
import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway_load import PATH, Child  # noqa: E402

from llm_cache.middleware.stores import DiskStore, MemoryStore  # noqa: E402
from tests.support.gateway_process import GatewayProcess, cpu_seconds  # noqa: E402
from tests.support.servers import new_redis  # noqa: E402

CALLER = {"authorization": "Bearer sk-capacity", "content-type": "application/json"}
PREFIX = "cap:"


def question(index: int, size: int = 1024) -> bytes:
    """A chat request of about `size` bytes that no other index shares."""
    text = f"question {index}: " + "lorem ipsum dolor sit amet " * (size // 27)
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text[: size - 80]}]})


async def send_all(url: str, bodies: list[bytes], concurrency: int) -> tuple[dict[str, int], float]:
    """x-cache outcomes of posting every body, `concurrency` at a time, and the seconds it took."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    outcomes: dict[str, int] = {}
    queue = list(reversed(bodies))
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while queue:
                response = await client.post(PATH, content=queue.pop(), headers=CALLER)
                outcome = response.headers.get("x-cache", str(response.status_code))
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes, time.perf_counter() - began


def redis_counters(client: redis.Redis) -> dict[str, float]:
    counters: dict[str, float] = {}
    for name, row in client.info("commandstats").items():
        counters[name.removeprefix("cmdstat_")] = float(row["calls"])
    stats = client.info("stats")
    counters["bytes in"] = float(stats["total_net_input_bytes"])
    counters["bytes out"] = float(stats["total_net_output_bytes"])
    return counters


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds redis-server has used (`INFO cpu`: getrusage, microsecond resolution)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def phase(gateway: GatewayProcess, client: redis.Redis, bodies: list[bytes], args: Any) -> dict[str, Any]:
    """Send `bodies` through the gateway; the gateway's and Redis's costs per request."""
    client.config_resetstat()
    before = (cpu_seconds(gateway.pid), redis_cpu(client))
    outcomes, seconds = asyncio.run(send_all(gateway.url, bodies, args.concurrency))
    after = (cpu_seconds(gateway.pid), redis_cpu(client))
    counters = redis_counters(client)
    n = len(bodies)
    return {
        "outcomes": outcomes,
        "requests/s": round(n / seconds),
        "gateway CPU us/request": round((after[0] - before[0]) / n * 1e6),
        "redis CPU us/request": round((after[1] - before[1]) / n * 1e6, 1),
        "redis per request": {name: round(value / n, 2) for name, value in sorted(counters.items()) if value},
    }


def wait_stored(gateway: GatewayProcess, n: int, deadline: float = 30.0) -> None:
    """Stores finish after the answer is sent: wait (bounded) until the gateway counts all of them."""
    end = time.monotonic() + deadline
    while gateway.stats()["stored"] < n:
        if time.monotonic() > end:
            raise RuntimeError(f"only {gateway.stats()['stored']} of {n} entries stored within {deadline}s")
        time.sleep(0.05)  # polling the gateway's counter, not synchronisation


def redis_entries(client: redis.Redis, before: int) -> dict[str, Any]:
    keys = [key for key in client.scan_iter(match=f"{PREFIX}*", count=1000) if b"__ping__" not in key]
    usage = [client.memory_usage(key) or 0 for key in keys]
    sizes = [client.strlen(key) for key in keys]
    grown = int(client.info("memory")["used_memory"]) - before
    return {
        "entries": len(keys),
        "value bytes (mean)": round(sum(sizes) / len(sizes)),
        "MEMORY USAGE bytes (mean)": round(sum(usage) / len(usage)),
        "used_memory growth bytes/entry": round(grown / len(keys)),
        "sample": client.get(keys[0]),
    }


async def memory_store_bytes(value: bytes, n: int) -> int:
    store = MemoryStore(max_entries=n + 1, max_bytes=None)
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for index in range(n):  # a new key and a new copy of the value each, as entries arrive from the wire
        await store.set(f"{PREFIX}{index:064x}", bytes(bytearray(value)), 3600)
    used = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    return round(used / n)


async def disk_store_bytes(value: bytes, n: int, directory: Path) -> int:
    store = DiskStore(directory)
    empty = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    for index in range(n):
        await store.set(f"{PREFIX}{index:064x}", value, 3600)
    await store.close()
    return round((sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) - empty) / n)


async def semantic_costs(vectors: int) -> dict[str, Any]:
    import numpy as np

    from llm_cache.middleware.semantic.index import InProcessIndex

    found: dict[str, Any] = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset (one thread per core)")}
    try:
        from llm_cache.middleware.semantic.embedders import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
        await embedder.embed(["warm up"])
        texts = [f"What are your opening hours on day {i}?" for i in range(50)]
        wall, cpu = time.perf_counter(), time.process_time()
        for text in texts:
            await embedder.embed([text])
        found["embed one query ms (wall)"] = round((time.perf_counter() - wall) / len(texts) * 1e3, 2)
        found["embed one query CPU ms"] = round((time.process_time() - cpu) / len(texts) * 1e3, 2)
    except ImportError as error:
        found["embedder"] = f"not installed ({error.name})"
    rng = np.random.default_rng(7)
    index = InProcessIndex(max_entries=vectors + 1)
    matrix = rng.standard_normal((vectors, 384)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    for row, vector in enumerate(matrix):
        await index.add("ctx", f"k{row}", "text", vector, None)
    queries = matrix[:200] + 0.01
    wall = time.perf_counter()
    for query in queries:
        await index.search("ctx", query, 4)
    found[f"in-process index search ms ({vectors} vectors, 384 dims)"] = round(
        (time.perf_counter() - wall) / len(queries) * 1e3, 3
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--no-semantic", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()

    bodies = [question(index) for index in range(args.requests)]
    figures: dict[str, Any] = {
        "machine": f"{time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · {platform.machine()} · "
        f"{os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.1f}",
        "requests per phase": args.requests,
        "request bytes": len(bodies[0]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        upstream = Child("upstream")
        server = new_redis(base / "redis")
        server.start()
        gateway = GatewayProcess(
            {
                "cache": {"store": {"type": "redis", "url": server.url, "prefix": PREFIX}, "ttl": 3600},
                "upstreams": {"openai": {"base_url": f"{upstream.url}/v1"}},
                "server": {"timeout_keep_alive": 60},
            },
            base / "gateway",
        )
        client = redis.Redis(host=server.host, port=server.port)
        try:
            gateway.start()
            empty = int(client.info("memory")["used_memory"])
            figures["miss"] = phase(gateway, client, bodies, args)
            wait_stored(gateway, args.requests)
            figures["hit"] = phase(gateway, client, bodies, args)
            entries = redis_entries(client, empty)
        finally:
            client.close()
            gateway.stop()
            server.stop()
            upstream.stop()
        value = entries.pop("sample")
        figures["entry"] = {
            "redis": entries,
            "memory store bytes/entry (tracemalloc)": asyncio.run(memory_store_bytes(value, args.requests)),
            "disk store bytes/entry (on disk)": asyncio.run(disk_store_bytes(value, args.requests, base / "disk")),
        }
    assert figures["miss"]["outcomes"] == {"MISS": args.requests}, figures["miss"]["outcomes"]
    assert figures["hit"]["outcomes"] == {"HIT": args.requests}, figures["hit"]["outcomes"]
    if not args.no_semantic:
        figures["semantic"] = asyncio.run(semantic_costs(args.vectors))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
