"""A burst of concurrent semantic misses on the real local MiniLM: how long until every lookup has
its answer, how many model calls that took, and the CPU it cost.

    PYTHONPATH=. .venv/bin/python benchmarks/embed_burst.py [--prompts 64] [--rounds 5] [--timeout 30] [--model NAME]

`--prompts` chat requests, each a new question (a miss by key and by meaning), are sent at once
through `AsyncCachingTransport` with a semantic cache (in-process index) to an upstream that
answers at once, so the time is the embedder's. Each round uses new questions; the table shows
each round and the median. The lookup timeout is `--timeout` (30 s, so every lookup waits for its
vector and the wall time is how long the line takes to drain; with the default 2 s a slow line
shows as semantic errors instead: lookups that gave up and went upstream as misses). Run it with
`PYTHONPATH=<tree>` to measure that tree's `llm_cache`: it only counts `encode` calls on the loaded
model, so it runs on any version.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import httpx2
import orjson

import llm_cache
from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware.semantic import InProcessIndex, SemanticCache
from llm_cache.middleware.semantic.embedders import local_embedder
from llm_cache.middleware.semantic.models import MINILM, MODELS
from llm_cache.middleware.stores import MemoryStore

URL = "http://bench.invalid/v1/chat/completions"
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
    }
)
SUBJECTS = ("a refund", "my password", "the invoice", "a delivery", "the warranty", "my account", "a discount")


class Upstream(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=ANSWER)


class Counted:
    """The loaded model, counting its `encode` calls and their texts."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def encode(self, texts: list[str], **options: Any) -> Any:
        self.calls.append(len(texts))
        return self.model.encode(texts, **options)


def question(round_: int, n: int) -> bytes:
    text = f"Order {round_ * 1000 + n}: can I still ask about {SUBJECTS[n % len(SUBJECTS)]} after {n % 40 + 2} days?"
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})


async def burst(prompts: int, rounds: int, model: str, timeout: float) -> None:
    embedder = local_embedder(model)
    counted = Counted(embedder._local.load("before the burst"))
    embedder._local._model = counted  # every call from here is counted
    semantic = SemanticCache(embedder, InProcessIndex(), timeout=timeout)
    cache = Cache(store=MemoryStore(max_entries=100_000), ttl=900, semantic=semantic)
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=Upstream())) as client:
        await client.post(URL, content=question(rounds, 0), headers=HEADERS)  # the thread and model warm
        tree = os.path.dirname(os.path.dirname(os.path.realpath(llm_cache.__file__)))
        print(f"\n{prompts} concurrent semantic misses, {embedder.name}, llm_cache of {tree}, {os.cpu_count()} CPUs\n")
        print("| round | wall ms (all answered) | model calls | most texts in a call | CPU ms | semantic errors |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        walls, cpus, calls = [], [], []
        for round_ in range(rounds):
            counted.calls.clear()
            refused = cache.stats.semantic_errors
            cpu, wall = time.process_time(), time.perf_counter()
            answers = await asyncio.gather(
                *(client.post(URL, content=question(round_, n), headers=HEADERS) for n in range(prompts))
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert all(answer.headers["x-cache"] == "MISS" for answer in answers)
            walls.append(wall * 1000)
            cpus.append(cpu * 1000)
            calls.append(len(counted.calls))
            print(
                f"| {round_ + 1} | {wall * 1000:.0f} | {len(counted.calls)} | {max(counted.calls, default=0)} "
                f"| {cpu * 1000:.0f} | {cache.stats.semantic_errors - refused} |"
            )
        print(
            f"| median | {statistics.median(walls):.0f} | {statistics.median(calls):.0f} | "
            f"| {statistics.median(cpus):.0f} | |"
        )
    await cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0, help="the lookup timeout (the cache's default is 2 s)")
    runs_encode = sorted(name for name, known in MODELS.items() if known.runtime == "sentence-transformers")
    parser.add_argument("--model", choices=runs_encode, default=MINILM)
    args = parser.parse_args()
    asyncio.run(burst(args.prompts, args.rounds, args.model, args.timeout))


if __name__ == "__main__":
    main()
