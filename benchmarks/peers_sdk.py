"""SDK-level hits, one world per process: ours (this project's venv) or LiteLLM's (the peers' venv).

Both worlds ask the same 1 KB chat prompt of the same provider (`--api-base`, the test suite's fake
provider, started by `peers.py`), answer it once from the provider, then time cache hits. Rows of one
world run in interleaved rounds; the output is one JSON document on stdout (rows in microseconds,
the measured packages' versions). `peers.py` runs both worlds in one run and draws them side by side.

    ours:    .venv/bin/python benchmarks/peers_sdk.py --world ours --api-base URL [--redis-url URL]
    litellm: benchmarks/.venv-peers/bin/python benchmarks/peers_sdk.py --world litellm --api-base URL [--redis-url URL]

This file imports only the standard library at the top: each world imports its own packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

MODEL = "gpt-4o-mini"
KEY = "sk-bench"
Call = Callable[[], Awaitable[Any]]


def messages(size: int = 1024) -> list[dict[str, str]]:
    """A system prompt and a user turn of about `size` bytes of JSON: the prompt every row asks."""
    filler = "lorem ipsum dolor sit amet " * (size // 27 + 1)
    return [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": filler[: size - 120]}]


def request_body() -> bytes:
    return json.dumps({"model": MODEL, "temperature": 0.2, "messages": messages()}).encode()


async def time_rows(calls: list[tuple[str, Call]], n: int, rounds: int) -> list[dict[str, Any]]:
    """Median and p99 in microseconds of each call, `n` calls each, over interleaved rounds."""
    samples: dict[str, list[int]] = {name: [] for name, _ in calls}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, call in calls:
            for _ in range(min(100, n)):  # warm this row again after the others ran
                await call()
            for _ in range(n // rounds):
                start = clock()
                await call()
                samples[name].append(clock() - start)
    rows = []
    for name, _ in calls:
        ordered = sorted(samples[name])
        rows.append(
            {
                "name": name,
                "median_us": statistics.median(ordered) / 1000,
                "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
                "calls": len(ordered),
            }
        )
    return rows


# -- our world --------------------------------------------------------------------------------------


async def ours(args: argparse.Namespace) -> dict[str, Any]:
    import httpx2
    import openai

    from llm_cache.middleware import AsyncCachingTransport, Cache
    from llm_cache.middleware.stores import MemoryStore, RedisStore

    body = request_body()
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    url = f"{args.api_base}/chat/completions"
    answer = httpx2.post(url, content=body, headers=headers).content

    class NoOp(httpx2.AsyncBaseTransport):
        """The floor: the provider's answer handed back by a transport that does nothing else."""

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            await request.aread()
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=answer)

    def cached(store: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=AsyncCachingTransport(cache=Cache(store=store, ttl=3600)))

    floor = httpx2.AsyncClient(transport=NoOp())
    plain = cached(MemoryStore())
    sdk = openai.AsyncOpenAI(base_url=args.api_base, api_key=KEY, http_client=cached(MemoryStore()), max_retries=0)

    async def post_floor() -> Any:
        return await floor.post(url, content=body, headers=headers)

    async def post_plain() -> Any:
        return await plain.post(url, content=body, headers=headers)

    async def sdk_call(client: Any = sdk) -> Any:
        return await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages(), temperature=0.2)

    calls: list[tuple[str, Call]] = [
        ("no-op transport floor (httpx2 client)", post_floor),
        ("ours: httpx2 client, memory hit", post_plain),
        ("ours: openai SDK, memory hit", sdk_call),
    ]
    closers = [floor.aclose, plain.aclose, sdk.close]
    if args.redis_url:
        redis_sdk = openai.AsyncOpenAI(
            base_url=args.api_base,
            api_key=KEY,
            http_client=cached(RedisStore(url=args.redis_url, prefix=f"bench-sdk-{os.getpid()}:")),
            max_retries=0,
        )
        closers.append(redis_sdk.close)

        async def redis_call() -> Any:
            return await sdk_call(redis_sdk)

        calls.append(("ours: openai SDK, Redis hit", redis_call))
    for name, call in calls[1:]:  # one miss stores the answer; the next call must be a hit
        await call()
        response = await call()
        outcome = response.headers.get("x-cache")
        assert outcome == "HIT", f"{name}: {outcome}"
    rows = await time_rows(calls, args.requests, args.rounds)
    for close in closers:
        await close()
    return {"rows": rows, "versions": {name: version(name) for name in ("llm-cache-middleware", "httpx2", "openai")}}


# -- LiteLLM's world --------------------------------------------------------------------------------


async def litellm_world(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: the bundled price map
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm
    from litellm.caching import caching_handler
    from litellm.caching.caching import Cache
    from litellm.caching.in_memory_cache import InMemoryCache

    litellm.telemetry = False
    litellm.suppress_debug_info = True

    class NoTier(InMemoryCache):
        """LiteLLM's in-process tier in front of Redis, turned off: it never answers."""

        async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
            return None

    async def ask() -> Any:
        return await litellm.acompletion(
            model=f"openai/{MODEL}",
            messages=messages(),
            temperature=0.2,
            api_base=args.api_base,
            api_key=KEY,
            caching=True,
        )

    names = ["LiteLLM SDK: local cache hit"]
    if args.redis_url:
        host, _, port = args.redis_url.removeprefix("redis://").partition("/")[0].partition(":")
        names += ["LiteLLM SDK: Redis hit, in-process tier on", "LiteLLM SDK: Redis hit, in-process tier off"]
    rows = []
    for name in names:  # one cache at a time (litellm.cache is global), so these rows cannot interleave
        if "Redis" in name:
            litellm.cache = Cache(type="redis", host=host, port=port, namespace=f"bench-{os.getpid()}-{len(rows)}")
            caching_handler.in_memory_cache_obj = NoTier() if "off" in name else InMemoryCache()
        else:
            litellm.cache = Cache(type="local")
        deadline = time.monotonic() + 10.0  # LiteLLM stores an answer in a background task: ask until a hit
        while not (await ask())._hidden_params.get("cache_hit"):
            assert time.monotonic() < deadline, f"{name}: no cache hit within 10 s"
            await asyncio.sleep(0.05)
        rows += await time_rows([(name, ask)], args.requests, args.rounds)
    return {"rows": rows, "versions": {name: version(name) for name in ("litellm", "openai", "httpx", "redis")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["ours", "litellm"], required=True)
    parser.add_argument("--api-base", required=True, help="the provider's OpenAI base URL (…/v1)")
    parser.add_argument("--redis-url", help="adds the Redis rows")
    parser.add_argument("--requests", type=int, default=2000, help="timed calls per row")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    world = ours if args.world == "ours" else litellm_world
    result = asyncio.run(world(args))
    result["python"] = sys.version.split()[0]
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
