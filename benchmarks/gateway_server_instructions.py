"""Instructions per request of the whole server (uvicorn, the loop, the HTTP parser and the app), counted by callgrind.

`gateway_instructions.py` counts the app alone, driven in-process; this counts what one uvicorn
worker executes per request while `wrk` drives it over a socket, so what the server does with the
app's answer (uvicorn validates every response header with two regular expressions, byte by byte)
and what only a real request costs (a body that arrives as a new `bytes` object each time) are in
it too. Each target (the bare Starlette endpoint, then the gateway with a memory store, as
`gateway_load.py` serves them) runs under `valgrind --tool=callgrind --instr-atstart=no`; after a
warm-up round, instrumentation is switched on for one `wrk` round and off again, and the count is
divided by the requests wrk completed.

    PYTHONPATH=. <venv with uvloop + httptools>/bin/python benchmarks/gateway_server_instructions.py \\
        [--connections 1] [--duration 10] [--app bare --app gateway]

At one connection every request is one turn of the event loop, so the figure includes the loop's
own per-turn work; it moves by about 1% between runs of one tree (requests in flight at the
switches, the loop's timers), which is much less than the rounds of `gateway_load.py` move on a
shared machine. Needs valgrind and wrk.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_load import PATH, WRK_LUA, Child, default_stack, run_wrk  # noqa: E402
from hit_path import HEADERS, chat_body  # noqa: E402


def count(kind: str, upstream: str, stack: str, tmp: Path, args: argparse.Namespace) -> float:
    """Instructions per request of one target's server process."""
    out = tmp / f"{kind}.callgrind"
    body_file, lua_file = str(tmp / "body.json"), str(tmp / "post.lua")
    prefix = ("valgrind", "-q", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
    child = Child(kind, upstream, deadline=300.0, stack=stack, prefix=prefix)
    try:
        body = chat_body(1024)
        first = httpx2.post(child.url + PATH, content=body, headers=HEADERS, timeout=60.0)
        assert first.status_code == 200, first
        run_wrk(child.url, body_file, lua_file, args.connections, 3)  # warm: a hit path that has run before
        subprocess.run(["callgrind_control", "-i", "on", str(child.proc.pid)], check=True, capture_output=True)
        requests = run_wrk(child.url, body_file, lua_file, args.connections, args.duration)["requests"]
        subprocess.run(["callgrind_control", "-i", "off", str(child.proc.pid)], check=True, capture_output=True)
        if kind == "gateway":
            hit = httpx2.post(child.url + PATH, content=body, headers=HEADERS, timeout=60.0)
            assert hit.headers["x-cache"] == "HIT", hit.headers
    finally:
        child.stop()
    totals = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    assert totals is not None, f"no totals in {out}"
    return int(totals.group(1)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10, help="seconds of the counted wrk round")
    parser.add_argument(
        "--app",
        action="append",
        choices=["bare", "bare-hit", "gateway"],
        help="repeatable (default bare and gateway; bare-hit: a hit's headers too)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("wrk") is None:
        raise SystemExit("needs valgrind and wrk")
    stack = default_stack()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "body.json").write_bytes(chat_body(1024))
        (tmp / "post.lua").write_text(WRK_LUA)
        upstream = Child("upstream")
        try:
            kinds = args.app or ["bare", "gateway"]
            counts = {kind: count(kind, upstream.url, stack, tmp, args) for kind in kinds}
        finally:
            upstream.stop()
    print(f"# uvicorn {stack}, wrk -t1 -c{args.connections} -d{args.duration}s, instructions per request (server)")
    for kind, per_request in counts.items():
        print(f"{kind}: {per_request:,.0f}")
    for floor in ("bare", "bare-hit"):
        if floor in counts and "gateway" in counts:
            print(f"{floor} / gateway: {counts[floor] / counts['gateway']:.1%}")


if __name__ == "__main__":
    main()
