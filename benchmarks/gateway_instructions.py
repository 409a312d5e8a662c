"""Instructions per in-process hit of the gateway (or the bare endpoint), counted by callgrind.

The app is driven as ASGI in this process (no server, no sockets; the 1 KB chat POST with a client
key that `gateway_load.py` sends), after one miss and some warm-up hits. The measured hits run inside
one `functools.reduce` call, so valgrind counts only them; the garbage collector is off while they
run (a collection that happens to fall in the window would add thousands of instructions a hit), and
`PYTHONHASHSEED=0` fixes the hash seed. Identical code then gives the same count within about 0.2%.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --callgrind-out-file=/dev/null .venv/bin/python benchmarks/gateway_instructions.py [--hits 600] [--app bare]

Instructions per hit = callgrind's `Collected` figure / the hits. Without valgrind the script prints the
thread CPU time per hit instead (noisy on a shared machine; the count is the figure to compare).

`--instrument-late` with valgrind's `--instr-atstart=no` as well: instrumentation is switched on
(`callgrind_control -i on`) just before the counted hits, so start-up runs uninstrumented (about 10 s
a run instead of 2-3 minutes); the count is the same within about 0.2%.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_load import PATH, Child, build_app  # noqa: E402
from hit_path import chat_body  # noqa: E402

BODY = chat_body(1024)
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"wrk"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-bench"),
    (b"content-length", str(len(BODY)).encode()),
]


Headers = list[tuple[bytes, bytes]]


def scope(headers: Headers) -> dict[str, Any]:
    """The scope uvicorn gives the app for wrk's request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


def fresh() -> tuple[bytes, Headers]:
    """The request's body and headers as new `bytes` objects, as a server reads them for each request: a
    `bytes` object caches its hash, so what the app keys on costs its hash every request, not once."""
    return bytes(bytearray(BODY)), [(bytes(bytearray(name)), bytes(bytearray(value))) for name, value in HEADERS]


async def request(app: Any, body: bytes = BODY, headers: Headers = HEADERS) -> list[dict[str, Any]]:
    """One request through `app`, its body in one message as a server hands a small one over."""
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(list(headers)), receive, send)
    return sent


def hit(app: Any, reads: list[tuple[bytes, Headers]], done: int, index: int) -> int:
    """One hit, run to its end without the event loop (a memory hit never waits), on a `fresh()` read."""
    step = request(app, *reads[index])
    try:
        step.send(None)
    except StopIteration:
        return done + 1
    step.close()
    raise RuntimeError("the request waited: not a memory hit")


async def main(hits: int, kind: str, instrument_late: bool = False) -> None:
    upstream = Child("upstream")
    try:
        app = build_app(kind, upstream.url)
        async with app.router.lifespan_context(app):
            for _ in range(20):  # the miss, then warm hits
                answer = await request(app)
            cache = [value for name, value in answer[0]["headers"] if name == b"x-cache"]
            assert answer[0]["status"] == 200 and cache in ([], [b"HIT"]), answer[0]
            reads = [fresh() for _ in range(hits)]
            gc.collect()
            if instrument_late:
                subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
            gc.disable()
            began = time.thread_time()
            counted = functools.reduce(functools.partial(hit, app, reads), range(hits), 0)
            spent = time.thread_time() - began
            gc.enable()
        print(f"{kind}: {counted} hits, {spent / counted * 1e6:.2f} µs thread CPU per hit")
    finally:
        upstream.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=600, help="hits counted (default 600)")
    parser.add_argument("--app", choices=["gateway", "bare"], default="gateway", help="the app hit (default gateway)")
    parser.add_argument(
        "--instrument-late", action="store_true", help="switch callgrind's instrumentation on for the hits only"
    )
    args = parser.parse_args()
    asyncio.run(main(args.hits, args.app, args.instrument_late))
