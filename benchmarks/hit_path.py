"""Hit-path latency: the cache's memory hit next to the floor, measured in one run.

The floor is the same `httpx2.AsyncClient` posting the same body to a no-op
transport that returns a fixed response: whatever the cache adds shows as the
ratio between the two. Key computation is timed alone for 1 KB, 10 KB and
100 KB requests.

    .venv/bin/python benchmarks/hit_path.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx2
import orjson

from middleware import AsyncCachingTransport, Cache
from middleware.stores import MemoryStore

RESPONSE = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital of France."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 250, "completion_tokens": 8, "total_tokens": 258},
})
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}


def chat_body(size: int) -> bytes:
    filler = "lorem ipsum dolor sit amet " * (size // 27 + 1)
    body = {"model": "gpt-4o-mini", "temperature": 0.2,
            "messages": [{"role": "system", "content": "You answer briefly."},
                         {"role": "user", "content": filler}]}
    raw = orjson.dumps(body)
    excess = len(raw) - size
    body["messages"][1]["content"] = filler[: len(filler) - excess]
    return orjson.dumps(body)


class FixedResponse(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=RESPONSE)


def summarise(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    median = statistics.median(ordered) / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return median, p99


async def time_calls(call: Callable[[], Awaitable[object]], n: int) -> list[int]:
    for _ in range(min(200, n)):
        await call()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        await call()
        samples.append(clock() - start)
    return samples


async def client_rows(n: int) -> list[tuple[str, float, float]]:
    body = chat_body(1024)
    url = "http://bench.invalid/v1/chat/completions"
    floor_client = httpx2.AsyncClient(transport=FixedResponse())
    cache = Cache(store=MemoryStore(max_entries=10_000), ttl=900)
    cached_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=FixedResponse()))
    warm = await cached_client.post(url, content=body, headers=HEADERS)
    assert warm.headers["x-cache"] == "MISS", warm.headers
    hit = await cached_client.post(url, content=body, headers=HEADERS)
    assert hit.headers["x-cache"] == "HIT", hit.headers

    async def floor() -> object:
        return await floor_client.post(url, content=body, headers=HEADERS)

    async def memory_hit() -> object:
        return await cached_client.post(url, content=body, headers=HEADERS)

    # Interleave rounds so drift on a noisy machine hits both sides alike.
    floor_samples: list[int] = []
    hit_samples: list[int] = []
    rounds = 5
    for _ in range(rounds):
        floor_samples += await time_calls(floor, n // rounds)
        hit_samples += await time_calls(memory_hit, n // rounds)
    assert cache.stats.hits >= n
    await floor_client.aclose()
    await cached_client.aclose()
    return [("floor: httpx2 client + no-op transport (1 KB)", *summarise(floor_samples)),
            ("memory hit via AsyncCachingTransport (1 KB)", *summarise(hit_samples))]


def key_rows(n: int) -> list[tuple[str, float, float]]:
    cache = Cache()
    headers = dict(HEADERS)  # what the transport hands the engine
    rows = []
    for size in (1024, 10 * 1024, 100 * 1024):
        body = chat_body(size)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n):
            start = clock()
            cache.prepare("POST", "/v1/chat/completions", "", headers, body)
            samples.append(clock() - start)
        rows.append((f"key computation (prepare) {size // 1024} KB", *summarise(samples)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    rows = asyncio.run(client_rows(args.requests))
    rows += key_rows(args.requests)
    floor_median = rows[0][1]
    print(f"# {time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · {platform.machine()}")
    print("| measurement | median µs | p99 µs | median / floor |")
    print("| --- | ---: | ---: | ---: |")
    for name, median, p99 in rows:
        print(f"| {name} | {median:.1f} | {p99:.1f} | {median / floor_median:.2f}x |")


if __name__ == "__main__":
    main()
