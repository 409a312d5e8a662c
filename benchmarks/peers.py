"""Side by side with the peers (`make bench`): the same prompt, the same machine, the same run, offline.

SDK level (`peers_sdk.py`, one process per world): the no-op transport floor, a hit through our
transport in a plain httpx2 client and in the openai SDK, and LiteLLM SDK `acompletion(...,
caching=True)` hits with its local cache and with Redis (its in-process tier on and off).

Gateway level: one uvicorn worker per server, each asked by `wrk` at 1 and 32 connections: our
gateway (memory, Redis, tiered stores), a bare Starlette endpoint returning the same bytes on the
same server stack, and the LiteLLM proxy (local and Redis cache, one worker, master key set). Every
server checks the same client key. Reported: hits/s, p50/p99 and the server's CPU time per request.

Everything runs on 127.0.0.1: the test suite's fake provider (a thread of this process) is the
upstream of every row, Redis is a private `redis-server` (tests/support/servers.py). The peers run
from their own virtualenv (`--peers-python`, made by `make bench` from peers-requirements.txt).
Results go to benchmarks/results/{sdk,gateway}.json and benchmarks/results/peers.png.

    .venv/bin/python benchmarks/peers.py --peers-python benchmarks/.venv-peers/bin/python
        [--duration 2] [--rounds 3] [--requests 2000] [--connections 1 32] [--skip-sdk] [--skip-gateway]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx2

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from gateway_load import ADMIN_KEY, CLIENT_KEY, PATH, WRK_LUA, Child, default_stack, run_wrk  # noqa: E402
from peers_sdk import request_body  # noqa: E402

from tests.support.fake_provider_fixtures import FakeProviderServer  # noqa: E402
from tests.support.servers import free_port, new_redis  # noqa: E402

RESULTS = HERE / "results"
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}


def sdk_level(args: argparse.Namespace, api_base: str, redis_url: str) -> dict[str, Any]:
    """Both worlds' SDK rows, one process each, in this run."""
    worlds = {}
    for world, python in (("ours", sys.executable), ("litellm", args.peers_python)):
        argv = [python, str(HERE / "peers_sdk.py"), "--world", world, "--api-base", api_base, "--redis-url", redis_url]
        argv += ["--requests", str(args.requests)]
        env = {**os.environ, **LITELLM_ENV, "PYTHONPATH": str(HERE.parent)}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"peers_sdk.py --world {world} failed:\n{done.stderr[-3000:]}")
        worlds[world] = json.loads(done.stdout)
    return worlds


class LiteLLMProxy:
    """`litellm --config ...` (one worker) from the peers' venv, with a master key and a cache."""

    def __init__(self, peers_python: str, api_base: str, cache: dict[str, Any], directory: Path) -> None:
        self.port = free_port()
        config = {
            "model_list": [
                {
                    "model_name": "gpt-4o-mini",
                    "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": api_base, "api_key": "sk-upstream"},
                }
            ],
            "litellm_settings": {"cache": True, "cache_params": cache, "telemetry": False},
            "general_settings": {"master_key": CLIENT_KEY},
        }
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "litellm.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(config))
        litellm = str(Path(peers_python).parent / "litellm")
        argv = [litellm, "--config", str(path), "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        self.log = open(directory / "litellm.log", "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **LITELLM_ENV}, start_new_session=True
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, deadline: float = 120.0) -> None:
        limit = time.monotonic() + deadline
        while True:
            try:
                if httpx2.get(self.url + "/health/liveliness", timeout=1.0).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > limit:
                raise SystemExit(f"the LiteLLM proxy did not start; see {self.log.name}")
            time.sleep(0.25)  # polling a child process's startup against a deadline

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this proxy leads (start_new_session)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def hit_checked(url: str, body: bytes, is_hit: Any, deadline: float = 10.0) -> bytes:
    """Ask until the answer is a hit (a peer may store in the background); the hit's bytes."""
    limit = time.monotonic() + deadline
    while True:
        response = httpx2.post(url + PATH, content=body, headers=HEADERS, timeout=30.0)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        if is_hit(response):
            return response.content
        assert time.monotonic() < limit, f"{url}: no cache hit within {deadline} s"
        time.sleep(0.05)  # the peer's background write


def gateway_level(args: argparse.Namespace, upstream: str, redis_url: str, tmp: Path) -> dict[str, Any]:
    body = request_body()
    body_file, lua_file = tmp / "body.json", tmp / "post.lua"
    body_file.write_bytes(body)
    lua_file.write_text(WRK_LUA)
    fast = default_stack()
    stacks = [fast] + (["asyncio-h11"] if fast != "asyncio-h11" else [])
    targets: list[tuple[str, Any]] = []  # (row name, server), in measuring order
    started: list[Any] = []
    ours_hit = lambda response: response.headers.get("x-cache") == "HIT"  # noqa: E731
    litellm_hit = lambda response: "x-litellm-cache-key" in response.headers  # noqa: E731
    try:
        proxies = [
            (
                "LiteLLM proxy, local cache",
                LiteLLMProxy(args.peers_python, f"{upstream}/v1", {"type": "local"}, tmp / "ll-local"),
            ),
            (
                "LiteLLM proxy, Redis cache",
                LiteLLMProxy(
                    args.peers_python,
                    f"{upstream}/v1",
                    {"type": "redis", "host": "127.0.0.1", "port": int(redis_url.rsplit(":", 1)[1].split("/")[0])},
                    tmp / "ll-redis",
                ),
            ),
        ]
        started += [proxy for _, proxy in proxies]  # they start (about 20 s) while ours start
        answer: bytes | None = None
        for stack in stacks:
            stores = ["memory", "redis", "tiered"] if stack == fast else ["memory"]
            for store in stores:
                gateway = Child("gateway", upstream, stack=stack, store=store, redis_url=redis_url)
                started.append(gateway)
                answer = hit_checked(gateway.url, body, ours_hit)
                targets.append((f"ours: gateway, {store} hit ({stack})", gateway))
            assert answer is not None
            answer_file = tmp / "answer.json"
            answer_file.write_bytes(answer)
            bare = Child("bare", stack=stack, answer_file=str(answer_file))
            started.append(bare)
            assert httpx2.post(bare.url + PATH, content=body, headers=HEADERS).content == answer
            targets.insert(len(targets) - len(stores), (f"bare Starlette endpoint, same bytes ({stack})", bare))
        for name, proxy in proxies:
            proxy.wait()
            hit_checked(proxy.url, body, litellm_hit)
            targets.append((name, proxy))
        rows: list[dict[str, Any]] = []
        for connections in args.connections:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in targets}
            for _ in range(args.rounds):  # rounds alternate the targets, so drift hits all alike
                for name, server in targets:
                    runs[name].append(
                        run_wrk(server.url, str(body_file), str(lua_file), connections, args.duration, server.proc.pid)
                    )
            for name, _ in targets:
                best = sorted(runs[name], key=lambda r: r["rps"])[len(runs[name]) // 2]
                rows.append(
                    {"name": name, "connections": connections, **best, "rounds_rps": [r["rps"] for r in runs[name]]}
                )
        for name, server in targets:
            if name.startswith("ours"):
                stats = httpx2.get(server.url + "/cache/stats", headers={"x-admin-key": ADMIN_KEY}).json()
                assert stats["misses"] <= 1 and stats["hits"] > 0, (name, stats)
        errors = sum(row["errors"] for row in rows)
        assert errors == 0, f"{errors} wrk errors/non-2xx answers"
        return {
            "rows": rows,
            "generator": f"wrk -t1 -c{{1,32}} -d{max(1, round(args.duration))}s, {args.rounds} alternating rounds",
            "litellm_proxy_version": httpx2.post(targets[-1][1].url + PATH, content=body, headers=HEADERS).headers.get(
                "x-litellm-version"
            ),
        }
    finally:
        for server in reversed(started):
            server.stop()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("llm-cache-middleware", "uvicorn", "starlette", "uvloop", "httptools", "redis"):
        try:
            found[name] = version(name)
        except Exception:  # not installed: the row ran without it
            found[name] = None
    return found


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "redis_server": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    }


def chart(sdk: dict[str, Any] | None, gateway: dict[str, Any] | None, path: Path) -> None:
    """One PNG: SDK hit latency (left) and gateway hits/s at the highest connection count (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (sdk, gateway) if p is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
    column = 0
    if sdk is not None:
        rows = [row for world in sdk.values() for row in world["rows"]]
        ax = axes[0][column]
        ax.barh([r["name"] for r in rows], [r["median_us"] for r in rows], color=_colours(rows))
        ax.set_xscale("log")
        ax.set_xlabel("median µs per hit, log scale (lower is better)")
        ax.set_title("SDK level: one cache hit")
        ax.invert_yaxis()
        column += 1
    if gateway is not None:
        top = max(row["connections"] for row in gateway["rows"])
        rows = [row for row in gateway["rows"] if row["connections"] == top]
        ax = axes[0][column]
        ax.barh([r["name"] for r in rows], [r["rps"] for r in rows], color=_colours(rows))
        ax.set_xscale("log")
        ax.set_xlabel(f"hits/s at {top} connections, log scale (higher is better)")
        ax.set_title("Gateway level: wrk, one server worker")
        ax.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _colours(rows: list[dict[str, Any]]) -> list[str]:
    return [
        "#2a7ab0" if r["name"].startswith("ours") else "#c0504d" if "LiteLLM" in r["name"] else "#999999" for r in rows
    ]


def print_tables(sdk: dict[str, Any] | None, gateway: dict[str, Any] | None) -> None:
    if sdk is not None:
        floor = sdk["ours"]["rows"][0]["median_us"]
        print("| SDK level: one hit, 1 KB chat prompt | median µs | p99 µs | vs floor |")
        print("| --- | ---: | ---: | ---: |")
        for world in sdk.values():
            for r in world["rows"]:
                print(f"| {r['name']} | {r['median_us']:.1f} | {r['p99_us']:.1f} | {r['median_us'] / floor:.2f}x |")
        print()
    if gateway is not None:
        print("| gateway level (one worker) | wrk connections | hits/s | p50 ms | p99 ms | server CPU µs/hit |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for r in gateway["rows"]:
            print(
                f"| {r['name']} | {r['connections']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                f"{r['cpu_us']:.0f} |"
            )
        for connections in sorted({r["connections"] for r in gateway["rows"]}):
            rps = {r["name"]: r["rps"] for r in gateway["rows"] if r["connections"] == connections}
            fast = default_stack()
            ours = rps.get(f"ours: gateway, memory hit ({fast})")
            bare = rps.get(f"bare Starlette endpoint, same bytes ({fast})")
            local = rps.get("LiteLLM proxy, local cache")
            if ours and bare and local:
                print(
                    f"# {connections} connections: gateway memory hits = {ours / bare:.0%} of the bare endpoint "
                    f"({fast}), {ours / local:.0f}x the LiteLLM proxy's local-cache hits/s"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", default=str(HERE / ".venv-peers/bin/python"), help="the peers' venv python")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk rounds per target (median shown)")
    parser.add_argument("--requests", type=int, default=2000, help="timed SDK calls per row")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--skip-sdk", action="store_true")
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON files and the chart go")
    args = parser.parse_args()
    if not Path(args.peers_python).exists():
        raise SystemExit(
            f"{args.peers_python} is missing: `make bench` creates it from benchmarks/peers-requirements.txt"
        )
    args.results.mkdir(parents=True, exist_ok=True)
    provider_server = FakeProviderServer()
    provider = provider_server.start()
    sdk = gateway = None
    with tempfile.TemporaryDirectory(prefix="llm-cache-peers-") as tmp:
        redis = new_redis(Path(tmp) / "redis")
        redis.start()
        try:
            if not args.skip_sdk:
                sdk = sdk_level(args, provider.openai_base_url, redis.url)
                sdk_doc = {"machine": machine(), "ours_versions": versions(), "worlds": sdk}
                (args.results / "sdk.json").write_text(json.dumps(sdk_doc, indent=1) + "\n")
            if not args.skip_gateway:
                gateway = gateway_level(args, provider.url, redis.url, Path(tmp))
                gateway_doc = {"machine": machine(), "ours_versions": versions(), **gateway}
                (args.results / "gateway.json").write_text(json.dumps(gateway_doc, indent=1) + "\n")
        finally:
            redis.stop()
            provider_server.stop()
    chart(sdk, gateway, args.results / "peers.png")
    print(f"# {machine()} · ours {versions()}")
    if sdk is not None:
        print(f"# LiteLLM SDK world: {sdk['litellm']['versions']}")
    if gateway is not None:
        print(f"# LiteLLM proxy {gateway['litellm_proxy_version']} · {gateway['generator']}")
    print_tables(sdk, gateway)


if __name__ == "__main__":
    main()
