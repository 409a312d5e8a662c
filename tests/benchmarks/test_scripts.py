"""`make bench`'s scripts: they parse their options, and the suite's chart and figures come from its results.

Nothing here times anything: the measurements themselves run only under `make bench`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from gateway_load import store_config  # noqa: E402
from peers import chart  # noqa: E402

from tests.support.gateway_process import cpu_seconds  # noqa: E402


@pytest.mark.parametrize(
    "script",
    ["peers.py", "peers_sdk.py", "gateway_load.py", "gateway_server_instructions.py", "hit_path.py", "redis_index.py"],
)
def test_each_script_answers_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_server_cpu_is_read_for_a_process_and_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sum(range(3_000_000)); sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        own = cpu_seconds(os.getpid())
        assert own > 0
        assert cpu_seconds(os.getpid()) >= own  # the child's time counts with ours, and time only grows
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_gateway_rows_name_their_store() -> None:
    assert store_config("memory", None) == {"type": "memory"}
    redis = store_config("redis", "redis://127.0.0.1:1/0")
    assert redis["type"] == "redis" and redis["url"] == "redis://127.0.0.1:1/0"
    assert store_config("tiered", "redis://127.0.0.1:1/0") == {"type": "tiered", "l2": redis}
    with pytest.raises(SystemExit, match="--redis-url"):
        store_config("redis", None)


def test_the_chart_is_drawn_from_both_levels(tmp_path: Path) -> None:
    sdk = {
        "ours": {"rows": [{"name": "no-op transport floor", "median_us": 40.0, "p99_us": 90.0}]},
        "litellm": {"rows": [{"name": "LiteLLM SDK: local cache hit", "median_us": 500.0, "p99_us": 900.0}]},
    }
    gateway = {
        "rows": [
            {"name": "ours: gateway, memory hit", "connections": 32, "rps": 9000.0},
            {"name": "LiteLLM proxy, local cache", "connections": 32, "rps": 30.0},
        ]
    }
    chart(sdk, gateway, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").read_bytes().startswith(b"\x89PNG")
