"""What tracing costs an openai-SDK hit: no SDK, the SDK sampling every call, and 1 in 10, in one run.

The same `openai.AsyncOpenAI` chat call is answered from a memory store through
`AsyncCachingTransport`, by one client per case:

- no OpenTelemetry SDK: the instrumentation runs on the API's no-op tracer and meter (twice: the
  second client is an A/A control, the same code as the first, so the table shows the noise floor);
- `sdk_telemetry()`: the SDK's tracer and meter, every call sampled, spans through a
  `BatchSpanProcessor` to an exporter that drops them (the export is not what is measured);
- `sdk_telemetry(sampler=ParentBased(TraceIdRatioBased(0.1)))`: 1 call in 10 sampled;
- the same two with `metrics=False`: the SDK's tracer alone, the meter the API's no-op, so the
  table separates what tracing costs from what the SDK's metrics (never sampled) cost.

The effect (a few percent) is smaller than a busy machine's drift, so the run is many short rounds
with a `gc.collect()` between them (never inside one). In a round every case makes `--per-round`
calls, interleaved call by call in an order shuffled at each step, so whatever the machine does
during the round hits every case alike. Each case's round is compared with the no-SDK client's
same round (a paired ratio); a row shows the median of those ratios and their interquartile range,
in wall time and in this thread's CPU time (`time.thread_time`, which a preempted process does not
accrue). Targets (issue 18): at most +10% sampling all, +3% 1 in 10.

    .venv/bin/python benchmarks/tracing_cost.py [--requests 3000] [--per-round 20] [--seed 1]
    .venv/bin/python benchmarks/tracing_cost.py --profile all|ten [--requests 3000]

`--profile` runs one SDK case alone under cProfile and prints where a hit's telemetry goes: the
OpenTelemetry SDK's functions and ours, by own time (the openai SDK's dominate the whole hit).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import platform
import pstats
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import NamedTuple

import httpx2
import openai
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.telemetry import Telemetry, sdk_telemetry

RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 250, "completion_tokens": 2, "total_tokens": 252},
}
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France? " * 20},
]


async def upstream(request: httpx2.Request) -> httpx2.Response:
    await request.aread()
    return httpx2.Response(200, json=RESPONSE)


async def sdk_client(telemetry: Telemetry) -> Callable[[], Awaitable[object]]:
    """An openai client whose cache already holds the answer (one miss, then a checked hit)."""
    cache = Cache(MemoryStore(), telemetry=telemetry)
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(upstream))
    client = openai.AsyncOpenAI(
        api_key="sk-bench", base_url="https://api.openai.com/v1", http_client=httpx2.AsyncClient(transport=transport)
    )

    async def call() -> object:
        return await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            temperature=0.2,
            max_tokens=64,  # type: ignore[arg-type]
        )

    await call()
    hit = await call()
    assert hit.headers["x-cache"] == "HIT", hit.headers  # type: ignore[attr-defined]
    return call


BASE = "no OpenTelemetry SDK"


def cases() -> list[tuple[str, Telemetry]]:
    return [
        (BASE, Telemetry()),
        ("no SDK again (A/A control)", Telemetry()),
        ("SDK, every call sampled", sdk_telemetry()),
        ("SDK, 1 in 10 sampled", sdk_telemetry(sampler=ParentBased(TraceIdRatioBased(0.1)))),
        ("SDK tracer only, every call sampled", sdk_telemetry(metrics=False)),
        ("SDK tracer only, 1 in 10 sampled", sdk_telemetry(sampler=ParentBased(TraceIdRatioBased(0.1)), metrics=False)),
    ]


class Row(NamedTuple):
    name: str
    wall_us: float
    """Median wall time per call over the rounds (µs)."""
    wall: tuple[float, float, float]
    """Paired wall-time ratios to the no-SDK client's same round: 25th percentile, median, 75th."""
    cpu: tuple[float, float, float]
    """The same in this thread's CPU time."""


async def measure(requests: int, per_round: int, seed: int) -> list[Row]:
    calls = [(name, await sdk_client(telemetry)) for name, telemetry in cases()]
    wall: dict[str, list[float]] = {name: [] for name, _ in calls}
    cpu: dict[str, list[float]] = {name: [] for name, _ in calls}
    order = random.Random(seed)
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(max(1, requests // per_round)):
        gc.collect()
        spent = {name: [0, 0] for name, _ in calls}
        for _, call in calls:
            await call()  # this client's caches, after the last round
        for _ in range(per_round):
            order.shuffle(calls)  # interleaved call by call: drift during the round hits every case alike
            for name, call in calls:
                cpu_start, start = cpu_clock(), wall_clock()
                await call()
                end, cpu_end = wall_clock(), cpu_clock()
                totals = spent[name]
                totals[0] += end - start
                totals[1] += cpu_end - cpu_start
        for name, (wall_ns, cpu_ns) in spent.items():
            wall[name].append(wall_ns / per_round / 1000)
            cpu[name].append(cpu_ns / per_round / 1000)
    return [
        Row(name, statistics.median(wall[name]), _paired(wall[name], wall[BASE]), _paired(cpu[name], cpu[BASE]))
        for name in wall
    ]


def _paired(values: list[float], base: list[float]) -> tuple[float, float, float]:
    """Quartiles of the round-by-round ratios `values[i] / base[i]`."""
    low, median, high = statistics.quantiles([v / b for v, b in zip(values, base, strict=True)], n=4)
    return low, median, high


async def profile(case: str, requests: int) -> None:
    """cProfile `requests` hits of one case; print the telemetry's share, SDK and ours, by own time."""
    telemetry = {"none": Telemetry(), "all": sdk_telemetry(), "ten": cases()[3][1]}[case]
    call = await sdk_client(telemetry)
    for _ in range(min(300, requests)):
        await call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        await call()
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    print(f"# {requests} hits, {stats.total_calls / requests:.0f} Python calls per hit")  # type: ignore[attr-defined]
    stats.print_stats("opentelemetry|llm_cache/middleware/telemetry", 25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured calls per case")
    parser.add_argument("--per-round", type=int, default=20, help="calls per case in one round")
    parser.add_argument("--seed", type=int, default=1, help="seeds the order of the cases in each round")
    parser.add_argument("--profile", choices=("none", "all", "ten"), help="profile one case instead")
    args = parser.parse_args()
    if args.profile:
        asyncio.run(profile(args.profile, args.requests))
        return
    rows = asyncio.run(measure(args.requests, args.per_round, args.seed))
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · load average {os.getloadavg()[0]:.1f} · "
        f"Python {platform.python_version()} · openai {version('openai')} · "
        f"opentelemetry-sdk {version('opentelemetry-sdk')} · {args.requests // args.per_round} rounds of "
        f"{args.per_round} calls per case"
    )
    print("| openai-SDK memory hit | median µs | wall vs no SDK (IQR) | CPU vs no SDK (IQR) |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        if row.name == BASE:
            print(f"| {row.name} | {row.wall_us:.1f} | | |")
        else:
            print(f"| {row.name} | {row.wall_us:.1f} | {_spread(row.wall)} | {_spread(row.cpu)} |")


def _spread(quartiles: tuple[float, float, float]) -> str:
    low, median, high = quartiles
    return f"**{median - 1:+.1%}** ({low - 1:+.1%} .. {high - 1:+.1%})"


if __name__ == "__main__":
    main()
