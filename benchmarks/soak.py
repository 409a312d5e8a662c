"""Soak: steady mixed load through a gateway process on Redis; memory, descriptors and connections must stay flat.

Everything runs on 127.0.0.1: a private `redis-server` (no persistence) on a free port, the fake
provider of the test suite (tests/support/fake_provider.py) as the upstream, in a thread of this
process, and `llm-cache serve` as a child process with a Redis store. Six clients (the test
suite's `MixedLoad`) ask hot prompts (hits) and new ones (misses), as JSON and as streams, for
`--duration` seconds. Every `--sample` seconds the gateway's resident memory, open descriptors and
established connections to the upstream are read from /proc. After `--warmup` seconds the first
sample is the baseline; the run fails (exit 1) when RSS grows by 10% or more past it, or when any
request failed.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--warmup 60] [--sample 10] [--workers 6]
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_provider_fixtures import FakeProviderServer  # noqa: E402
from tests.support.gateway_process import GatewayProcess, ProcFigures  # noqa: E402
from tests.support.load import MixedLoad  # noqa: E402
from tests.support.servers import new_redis  # noqa: E402

RSS_GROWTH_LIMIT = 0.10


async def soak(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    provider_server = FakeProviderServer()
    provider = provider_server.start()
    redis = new_redis(base / "redis")
    redis.start()
    gateway = GatewayProcess(
        {
            "cache": {"store": {"type": "redis", "url": redis.url, "prefix": "soak:"}},
            "upstreams": {"openai": {"base_url": provider.openai_base_url}},
        },
        base / "gateway",
    )
    samples: list[tuple[float, ProcFigures, int, int]] = []
    try:
        gateway.start()
        load = MixedLoad(gateway.url, workers=args.workers, label="soak")
        stop = asyncio.Event()
        runner = asyncio.ensure_future(load.run(stop))
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < args.duration:
                await asyncio.sleep(min(args.sample, args.duration - elapsed))  # the sampling period
                provider.reset()  # the fake provider keeps a log of requests: keep this process bounded
                figures = gateway.figures(provider.port)
                samples.append((time.monotonic() - started, figures, load.tally.requests, len(load.tally.failures)))
                print(
                    f"{samples[-1][0]:7.1f}s rss={figures.rss_kib} KiB fds={figures.fds} "
                    f"upstream_conns={figures.connections} requests={load.tally.requests} "
                    f"failures={len(load.tally.failures)}",
                    file=sys.stderr,
                    flush=True,
                )
                if runner.done():
                    break
        finally:
            stop.set()
            tally = await asyncio.wait_for(runner, 60)
        stats = await asyncio.to_thread(gateway.stats)
    finally:
        gateway.stop()
        redis.stop()
        provider_server.stop()
    return report(args, samples, tally.summary(), tally.failures[:5], stats)


def report(
    args: argparse.Namespace,
    samples: list[tuple[float, ProcFigures, int, int]],
    summary: dict[str, Any],
    failures: list[str],
    stats: dict[str, Any],
) -> dict[str, Any]:
    after = [s for s in samples if s[0] >= args.warmup] or samples[-1:]
    baseline, final = after[0][1], after[-1][1]
    peak = max(s[1].rss_kib for s in after)
    growth = (final.rss_kib - baseline.rss_kib) / baseline.rss_kib
    return {
        "duration_s": round(samples[-1][0], 1),
        "warmup_s": args.warmup,
        "workers": args.workers,
        "requests": summary["requests"],
        "requests_per_s": round(summary["requests"] / samples[-1][0], 1),
        "failures": summary["failures"],
        "first_failures": failures,
        "outcomes": summary["outcomes"],
        "rss_kib": {"baseline": baseline.rss_kib, "final": final.rss_kib, "peak": peak},
        "rss_growth_pct": round(100 * growth, 2),
        "fds": {"min": min(s[1].fds for s in after), "max": max(s[1].fds for s in after)},
        "upstream_connections": {
            "min": min(s[1].connections for s in after),
            "max": max(s[1].connections for s in after),
        },
        "gateway_stats": {k: stats[k] for k in ("hits", "misses", "stored", "store_errors", "upstream_errors")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline (default 60)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent clients (default 6)")
    args = parser.parse_args()
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    with tempfile.TemporaryDirectory(prefix="llmc-soak-") as base:
        result = asyncio.run(soak(args, Path(base)))
    result["machine"] = f"{platform.machine()}, nproc={_nproc()}, Python {platform.python_version()}"
    result["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(json.dumps(result, indent=2))
    ok = result["failures"] == 0 and result["rss_growth_pct"] < 100 * RSS_GROWTH_LIMIT
    print("OK" if ok else "FAILED: requests failed or RSS grew by 10% or more after warm-up", file=sys.stderr)
    return 0 if ok else 1


def _nproc() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
