"""Gateway load: hit throughput and latency of the caching gateway next to a bare Starlette endpoint.

Three server processes, each one uvicorn worker on 127.0.0.1, none of them the load generator:

- a tiny fake OpenAI upstream (one fixed chat completion), called once, for the warm-up miss;
- the gateway (`create_gateway`, memory store) pointed at that upstream;
- a bare Starlette endpoint returning the same response body;
- with `--same-headers`, also a bare endpoint returning the same body and the same headers a hit
  carries (`x-cache`, a cache key of the same length, `age`): the floor for sending the very response
  the gateway sends, so that what is left between it and the gateway is the gateway's own work.

The load generator is `wrk` (one thread, 32 connections, POST of a 1 KB chat body via a Lua
script) when it is installed, else an asyncio `httpx2` client with 32 workers and a fixed number of
requests. Bare and gateway rounds alternate in the same run so drift hits both alike; the round
with the median throughput of each target is reported. After the run the gateway's
`/cache/stats` must show every measured request as a hit and the upstream one call.

    .venv/bin/python benchmarks/gateway_load.py [--connections 32] [--duration 5] [--rounds 3]

With `--workers N`, it compares `llm-cache serve` with one worker and with N workers instead, both
on one private `redis-server` (the store the workers share), alternating rounds, and reports the
gateway's CPU per request (its processes' user+system time from /proc). Every worker's
`/cache/stats` is read afterwards: one miss and one upstream request in all, every request a hit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hit_path import HEADERS, RESPONSE, chat_body  # noqa: E402

from tests.support.gateway_process import GatewayProcess, cpu_seconds  # noqa: E402
from tests.support.servers import new_redis  # noqa: E402

ADMIN_KEY = "bench-admin"
CLIENT_KEY = "sk-bench"
"""The gateway checks the key wrk sends, as LiteLLM's proxy checks its master key."""
PATH = "/v1/chat/completions"

WRK_LUA = """
wrk.method = "POST"
wrk.body = io.open(os.getenv("BENCH_BODY_FILE"), "rb"):read("*a")
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer sk-bench"

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50=%d p95=%d p99=%d errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout))
end
"""


# -- server side (run in child processes) -----------------------------------------------------------


STACKS = {"asyncio-h11": ("asyncio", "h11"), "uvloop-httptools": ("uvloop", "httptools")}
"""The server stacks a row can run on: uvicorn's pure-Python defaults, and the `fast` extra's."""


def default_stack() -> str:
    """uvloop + httptools when both are installed (what `llm-cache serve` picks), else asyncio + h11."""
    import importlib.util

    fast = all(importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools"))
    return "uvloop-httptools" if fast else "asyncio-h11"


def store_config(store: str, redis_url: str | None) -> dict[str, Any]:
    """The gateway's `cache.store` for a row: memory, redis or tiered (memory in front of Redis)."""
    if store == "memory":
        return {"type": "memory"}
    if redis_url is None:
        raise SystemExit(f"the {store} store needs --redis-url")
    redis = {"type": "redis", "url": redis_url, "prefix": f"bench-{os.getpid()}:"}
    return redis if store == "redis" else {"type": "tiered", "l2": redis}


HIT_HEADERS = {
    "x-cache": "HIT",
    "x-cache-key": "default:c" + "0" * 32 + ":u" + "0" * 32 + "." + "0" * 64,
    "age": "0",
}
"""What `bare-hit` adds to the bare endpoint's answer: the headers of a gateway memory hit, key-sized."""


def build_app(
    kind: str, upstream: str | None, store: str = "memory", redis_url: str | None = None, answer: bytes = RESPONSE
) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    if kind in ("bare", "bare-hit", "upstream"):
        headers = HIT_HEADERS if kind == "bare-hit" else None

        async def chat(request: Request) -> Response:
            await request.body()
            return Response(answer, media_type="application/json", headers=headers)

        return Starlette(routes=[Route(PATH, chat, methods=["POST"])])

    from llm_cache.middleware.config import GatewayConfig
    from llm_cache.middleware.gateway import create_gateway

    config = GatewayConfig.model_validate(
        {
            "cache": {"store": store_config(store, redis_url), "ttl": 3600},
            "admin_key": ADMIN_KEY,
            "auth": {"keys": [CLIENT_KEY]},
            "upstreams": {"openai": {"base_url": f"{upstream}/v1"}},
        }
    )
    return create_gateway(config)


def serve(
    kind: str,
    upstream: str | None,
    stack: str,
    store: str = "memory",
    redis_url: str | None = None,
    answer: bytes = RESPONSE,
) -> None:
    """Bind 127.0.0.1:0, print the port, serve until SIGTERM (one uvicorn worker, this process)."""
    import uvicorn

    loop, http = STACKS[stack]

    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets (see middleware/_background.py).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        build_app(kind, upstream, store, redis_url, answer),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        loop=loop,
        http=http,
    )
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])  # on the stack's loop (`asyncio.run` would always make an asyncio one)


# -- load generator side ----------------------------------------------------------------------------


class Child:
    def __init__(
        self,
        kind: str,
        upstream: str | None = None,
        deadline: float = 20.0,
        stack: str = "asyncio-h11",
        store: str = "memory",
        redis_url: str | None = None,
        answer_file: str | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        argv = [*prefix, sys.executable, __file__, "--serve", kind, "--stack", stack, "--store", store]
        argv += (["--upstream", upstream] if upstream else []) + (["--redis-url", redis_url] if redis_url else [])
        argv += ["--answer-file", answer_file] if answer_file else []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        limit = time.monotonic() + deadline
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child prints its port first, or exits
        if not line.startswith("PORT ") or time.monotonic() > limit:
            self.stop()
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        while True:  # the port is bound before printing; wait until uvicorn accepts
            try:
                httpx2.post(self.url + PATH, content=b"{}", timeout=1.0) if kind != "gateway" else httpx2.get(
                    self.url + "/health", timeout=1.0
                )
                break
            except httpx2.TransportError:
                if time.monotonic() > limit:
                    self.stop()
                    raise RuntimeError(f"{kind} server did not answer within {deadline}s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def run_wrk(
    url: str, body_file: str, lua_file: str, connections: int, duration: float, pid: int | None = None
) -> dict[str, float]:
    """One wrk round against `url`; with `pid`, also the server's CPU time per request in microseconds."""
    env = dict(os.environ, BENCH_BODY_FILE=body_file)
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "-s",
            lua_file,
            url + PATH,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    line = next(item for item in out.splitlines() if item.startswith("RESULT "))
    fields = {k: float(v) for k, v in (part.split("=") for part in line.split()[1:])}
    return {
        "cpu_us": cpu / max(1.0, fields["requests"]) * 1e6,
        "requests": fields["requests"],
        "rps": fields["requests"] / (fields["duration_us"] / 1e6),
        "p50": fields["p50"] / 1000,
        "p95": fields["p95"] / 1000,
        "p99": fields["p99"] / 1000,
        "errors": fields["errors"],
    }


async def run_httpx(url: str, body: bytes, connections: int, total: int, deadline: float) -> dict[str, float]:
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    samples: list[int] = []
    errors = 0
    remaining = total
    clock = time.perf_counter_ns
    async with httpx2.AsyncClient(limits=limits, timeout=5.0) as client:
        stop_at = time.monotonic() + deadline

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < stop_at:
                remaining -= 1
                start = clock()
                response = await client.post(url + PATH, content=body, headers=HEADERS)
                samples.append(clock() - start)
                if response.status_code != 200:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1e6

    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50": statistics.median(ordered) / 1e6,
        "p95": pct(0.95),
        "p99": pct(0.99),
        "errors": errors,
    }


def worker_stats(url: str, workers: int, deadline: float = 30.0) -> dict[int, dict[str, Any]]:
    """`/cache/stats` of every worker, by pid: fresh connections until each worker has answered one."""
    found: dict[int, dict[str, Any]] = {}
    end = time.monotonic() + deadline
    while len(found) < workers:
        if time.monotonic() > end:
            raise RuntimeError(f"/cache/stats reached {len(found)} of {workers} workers in {deadline:.0f}s")
        with httpx2.Client(timeout=10) as client:  # a new connection: the kernel picks the worker
            stats = client.get(url + "/cache/stats", headers={"x-admin-key": ADMIN_KEY}).json()
        found[stats["pid"]] = stats
    return found


def compare_workers(args: argparse.Namespace, body: bytes, measure: Any, upstream: str, base: Path) -> None:
    """`serve` with 1 and with `args.workers` workers on one shared Redis, alternating rounds."""
    redis = new_redis(base / "redis")
    redis.start()
    counts = sorted({1, args.workers})
    gateways: dict[int, GatewayProcess] = {}
    try:
        for count in counts:
            config = {
                "admin_key": ADMIN_KEY,
                "cache": {"store": {"type": "redis", "url": redis.url, "prefix": f"w{count}:"}, "ttl": 3600},
                "upstreams": {"openai": {"base_url": f"{upstream}/v1"}},
                "server": {"workers": count, "timeout_keep_alive": 60},
            }
            gateways[count] = GatewayProcess(config, base / f"gateway-{count}").start()
            warm = httpx2.post(gateways[count].url + PATH, content=body, headers=HEADERS)
            assert warm.status_code == 200 and warm.headers["x-cache"] == "MISS", warm.headers
        results: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
        for _ in range(args.rounds):
            for count, gateway in gateways.items():
                used = cpu_seconds(gateway.pid)
                row = measure(gateway.url)
                row["cpu_us"] = (cpu_seconds(gateway.pid) - used) / max(row["requests"], 1) * 1e6
                results[count].append(row)
        for count, gateway in gateways.items():
            stats = worker_stats(gateway.url, count).values()
            totals = {name: sum(s[name] for s in stats) for name in ("hits", "misses", "upstream_requests")}
            measured = sum(r["requests"] for r in results[count])
            assert totals["misses"] == 1 and totals["upstream_requests"] == 1, totals
            assert totals["hits"] >= measured, (totals, measured)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        redis.stop()

    rows = {count: sorted(rounds, key=lambda r: r["rps"])[len(rounds) // 2] for count, rounds in results.items()}
    print(f"# all rounds req/s: { ({count: [round(r['rps']) for r in rounds] for count, rounds in results.items()}) }")
    print(f"# errors/non-2xx across all rounds: {int(sum(r['errors'] for rs in results.values() for r in rs))}")
    print("| `llm-cache serve`, Redis store, hits | requests/s | p50 ms | p99 ms | gateway CPU us/request | vs 1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for count, row in rows.items():
        print(
            f"| {count} worker{'s' if count > 1 else ''} | {row['rps']:.0f} | {row['p50']:.2f} | {row['p99']:.2f} | "
            f"{row['cpu_us']:.0f} | {row['rps'] / rows[1]['rps']:.2f}x |"
        )


def print_header(args: argparse.Namespace, use_wrk: bool, stack: str | None = None) -> None:
    generator = (
        f"wrk -t1 -c{args.connections} -d{max(1, round(args.duration))}s"
        if use_wrk
        else f"httpx2 asyncio, {args.connections} workers, {args.requests} requests"
    )
    print(
        f"# {time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · {platform.machine()} · "
        f"{os.cpu_count()} CPUs · {generator} · {f'uvicorn {stack} · ' if stack else ''}{args.rounds} alternating "
        "rounds, median-throughput round shown"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (wrk)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round (httpx2 fallback)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx2 client even if wrk is installed")
    parser.add_argument(
        "--stack", choices=sorted(STACKS), help="uvicorn loop and HTTP parser (default: the fastest installed)"
    )
    parser.add_argument("--workers", type=int, help="compare `serve` with 1 and with N workers on a shared Redis")
    parser.add_argument(
        "--same-headers", action="store_true", help="also measure a bare endpoint sending a hit's headers"
    )
    parser.add_argument("--serve", choices=["upstream", "gateway", "bare", "bare-hit"], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="memory", choices=["memory", "redis", "tiered"], help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--answer-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stack = args.stack or default_stack()
    if args.serve:
        answer = Path(args.answer_file).read_bytes() if args.answer_file else RESPONSE
        serve(args.serve, args.upstream, stack, args.store, args.redis_url, answer)
        return

    body = chat_body(1024)
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    children: list[Child] = []
    with tempfile.TemporaryDirectory() as tmp:
        body_file, lua_file = os.path.join(tmp, "body.json"), os.path.join(tmp, "post.lua")
        Path(body_file).write_bytes(body)
        Path(lua_file).write_text(WRK_LUA)
        try:
            upstream = Child("upstream")
            children.append(upstream)

            def measure(url: str, pid: int | None = None) -> dict[str, float]:
                if use_wrk:
                    return run_wrk(url, body_file, lua_file, args.connections, args.duration, pid)
                return asyncio.run(run_httpx(url, body, args.connections, args.requests, deadline=60.0))

            if args.workers:
                print_header(args, use_wrk)
                compare_workers(args, body, measure, upstream.url, Path(tmp))
                return
            gateway = Child("gateway", upstream.url, stack=stack)
            children.append(gateway)
            bare = Child("bare", stack=stack)
            children.append(bare)
            targets = {"bare": bare, "gateway": gateway}
            if args.same_headers:
                targets["bare-hit"] = Child("bare-hit", stack=stack)
                children.append(targets["bare-hit"])

            warm = httpx2.post(gateway.url + PATH, content=body, headers=HEADERS)
            assert warm.status_code == 200 and warm.headers["x-cache"] == "MISS", warm.headers
            hit = httpx2.post(gateway.url + PATH, content=body, headers=HEADERS)
            assert hit.headers["x-cache"] == "HIT" and hit.content == RESPONSE, hit.headers
            plain = httpx2.post(bare.url + PATH, content=body, headers=HEADERS)
            assert plain.content == hit.content
            if args.same_headers:
                same = httpx2.post(targets["bare-hit"].url + PATH, content=body, headers=HEADERS)
                assert same.content == hit.content and header_shape(same) == header_shape(hit), (same, hit)

            results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for turn in range(args.rounds):  # which goes first alternates: a trend in load hits all alike
                for name, child in list(targets.items())[:: 1 if turn % 2 == 0 else -1]:
                    results[name].append(measure(child.url, child.proc.pid))

            stats = httpx2.get(gateway.url + "/cache/stats", headers={"x-admin-key": ADMIN_KEY}).json()
        finally:
            for child in reversed(children):
                child.stop()

    measured = sum(r["requests"] for r in results["gateway"])
    errors = sum(r["errors"] for rows in results.values() for r in rows)
    hits, misses = stats["hits"], stats["misses"]
    # wrk counts requests completed within the duration; the ones in flight at the end were hits too.
    assert misses == 1 and stats["upstream_requests"] == 1 and hits >= measured + 1, stats

    def median_round(rows: list[dict[str, float]]) -> dict[str, float]:
        return sorted(rows, key=lambda r: r["rps"])[len(rows) // 2]

    bare_row, gateway_row = median_round(results["bare"]), median_round(results["gateway"])
    print_header(args, use_wrk, stack)
    print(
        f"# all rounds req/s: bare {[round(r['rps']) for r in results['bare']]}, "
        f"gateway {[round(r['rps']) for r in results['gateway']]}"
    )
    if len(results["bare"]) > 1:
        print(f"# paired rounds, gateway vs bare of the same round: {paired(results['bare'], results['gateway'])}")
        if "bare-hit" in results:
            print(
                "# paired rounds, gateway vs bare with a hit's headers: "
                f"{paired(results['bare-hit'], results['gateway'])}"
            )
    print(
        f"# gateway /cache/stats: hits={hits} misses={misses} upstream_requests={stats['upstream_requests']} "
        f"(measured gateway requests: {int(measured)}); errors/non-2xx across all rounds: {int(errors)}"
    )
    print(
        "| endpoint (1 KB chat POST, one uvicorn worker) | requests/s | p50 ms | p95 ms | p99 ms | "
        "server CPU µs/req | req/s vs bare |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [("bare Starlette endpoint, same body", bare_row), ("gateway memory hit (create_gateway)", gateway_row)]
    if "bare-hit" in results:
        rows.insert(1, ("bare Starlette endpoint, same body and headers", median_round(results["bare-hit"])))
    for name, row in rows:
        print(
            f"| {name} | {row['rps']:.0f} | {row['p50']:.2f} | {row['p95']:.2f} | {row['p99']:.2f} | "
            f"{row.get('cpu_us', 0.0):.0f} | {row['rps'] / bare_row['rps']:.0%} |"
        )


def header_shape(response: httpx2.Response) -> list[tuple[str, int]]:
    """The names and value lengths of a response's headers, but the server's `date`."""
    return sorted((name, len(value)) for name, value in response.headers.items() if name != "date")


def paired(bare: list[dict[str, float]], gateway: list[dict[str, float]]) -> str:
    """Median (and range) over rounds of the gateway's req/s over the bare endpoint's in the same round,
    and of bare over gateway server CPU per request (what the ratio of req/s is when the server is the
    bottleneck; steadier than req/s on a machine whose other load moves during a round)."""

    def spread(ratios: list[float]) -> str:
        return f"{statistics.median(ratios):.0%} ({min(ratios):.0%}..{max(ratios):.0%})"

    rps = [g["rps"] / b["rps"] for b, g in zip(bare, gateway, strict=True)]
    cpu = [b["cpu_us"] / g["cpu_us"] for b, g in zip(bare, gateway, strict=True) if g.get("cpu_us")]
    return f"req/s {spread(rps)}" + (f", by server CPU per request {spread(cpu)}" if cpu else "")


if __name__ == "__main__":
    main()
