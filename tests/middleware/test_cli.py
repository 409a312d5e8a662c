"""`llm-cache` commands: check-config, --help, warm / stats / invalidate against a real gateway, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_cache.middleware.background import BackgroundServer
from llm_cache.middleware.cli import build_parser, main
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider_fixtures import RunningFakeProvider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LLM_CACHE = Path(sys.executable).parent / "llm-cache"
ADMIN = "cli-admin-key"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is your return policy?"}]}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("LLM_CACHE_ADMIN_KEY", "admin-secret")


@pytest.mark.parametrize("name", ["native", "guide", "litellm"])
def test_check_config_prints_masked_settings(name: str, secrets_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLES / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"OK: {EXAMPLES / f'{name}.yaml'} ({name} dialect)" in out
    assert "type: redis" in out and "key_prefix: 'prod:v1:'" in out
    assert "hunter2-secret" not in out and "admin-secret" not in out
    assert "'****'" in out


def test_check_config_bad_file_exits_1_with_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache:\n  store: {type: redis, prot: 6379}\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "cache.store.prot" in err and "allowed:" in err and "port" in err


def test_check_config_as_a_console_script(tmp_path: Path) -> None:
    bad = tmp_path / "qdrant.yaml"
    bad.write_text("caching:\n  type: qdrant-semantic\n  similarity_threshold: 0.9\n")
    done = subprocess.run([str(LLM_CACHE), "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Qdrant is not supported" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["check-config"], ["demo"], ["warm"], ["stats"], ["invalidate"]])
def test_help_on_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: llm-cache" in capsys.readouterr().out


@pytest.fixture
def running_gateway(fake_provider: RunningFakeProvider) -> Iterator[str]:
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}},
            "admin_key": ADMIN,
            "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}},
        }
    )
    with BackgroundServer(create_gateway(config)) as server:
        yield server.url


def requests_file(tmp_path: Path, items: list[dict[str, Any]]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    return path


def test_warm_stats_and_invalidate_through_a_gateway(
    tmp_path: Path, running_gateway: str, fake_provider: RunningFakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {"authorization": "Bearer sk-warm"}
    items = [
        {
            "path": "/v1/chat/completions",
            "body": {**BODY, "messages": [{"role": "user", "content": q}]},
            "headers": headers,
        }
        for q in ("hours?", "returns?", "shipping?")
    ]
    path = requests_file(tmp_path, items)
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    captured = capsys.readouterr()
    assert "stored 3, already cached 0, failed 0" in captured.out
    assert "warming [" in captured.err and "3/3" in captured.err
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 0, already cached 3, failed 0" in capsys.readouterr().out
    assert fake_provider.count("/chat/completions") == 3

    assert main(["stats", "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["hits"], stats["misses"], stats["stored"]) == (3, 3, 3)
    assert main(["stats", "--gateway", running_gateway, "--admin-key", "wrong"]) == 1
    assert "403" in capsys.readouterr().err

    request = tmp_path / "one.json"
    request.write_text(json.dumps(items[0]))
    assert main(["invalidate", "--request", str(request), "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    assert "deleted" in capsys.readouterr().out
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 1, already cached 2, failed 0" in capsys.readouterr().out
    assert main(["invalidate", "--all", "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 3, already cached 0" in capsys.readouterr().out


def test_warm_straight_through_the_engine_then_served_by_a_gateway(
    tmp_path: Path, fake_provider: RunningFakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"cache:\n  store: {{type: disk, directory: '{tmp_path / 'store'}'}}\nadmin_key: {ADMIN}\n")
    path = requests_file(
        tmp_path, [{"path": "/v1/chat/completions", "body": BODY, "headers": {"authorization": "Bearer sk-engine"}}]
    )
    assert (
        main(["warm", str(path), "--config", str(config), "--upstream", f"openai={fake_provider.openai_base_url}"]) == 0
    )
    assert "stored 1, already cached 0, failed 0" in capsys.readouterr().out
    with BackgroundServer(
        create_gateway(
            parse_config(
                {
                    "cache": {"store": {"type": "disk", "directory": str(tmp_path / "store")}},
                    "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}},
                }
            )
        )
    ) as server:
        assert main(["warm", str(path), "--gateway", server.url]) == 0
    assert "already cached 1" in capsys.readouterr().out
    assert fake_provider.count("/chat/completions") == 1


def test_warm_reports_failures(
    tmp_path: Path, running_gateway: str, fake_provider: RunningFakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_provider.fail_next(1, status=500)
    path = requests_file(tmp_path, [{"path": "/v1/chat/completions", "body": BODY}])
    assert main(["warm", str(path), "--gateway", running_gateway]) == 1
    assert "failed 1" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "/v1/chat/completions"}\n')
    assert main(["warm", str(bad), "--gateway", running_gateway]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_and_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run([str(LLM_CACHE), "demo"], capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "SIMULATED" in out and "hit ratio" in out and "dollars saved" in out
    assert "OK: every repeat was a cache hit" in out


def _wait_healthy(url: str, process: subprocess.Popen[str], deadline: float = 20.0) -> None:
    import time

    import httpx2

    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        if process.poll() is not None:
            raise AssertionError(f"llm-cache serve exited {process.returncode}: {process.stderr.read()}")
        try:
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("llm-cache serve did not become healthy")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_the_embedded_default(tmp_path: Path, fake_provider: RunningFakeProvider, workers: int) -> None:
    import openai

    from tests.support.servers import free_port

    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    process = subprocess.Popen(
        [
            str(LLM_CACHE),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--upstream",
            f"openai={fake_provider.openai_base_url}",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-serve", max_retries=0)
        outcomes = [client.chat.completions.with_raw_response.create(**BODY).headers["x-cache"] for _ in range(3)]
        assert outcomes[0] == "MISS" and outcomes[1:] == ["HIT", "HIT"]
        assert fake_provider.count("/chat/completions") == 1
        assert (tmp_path / "xdg" / "llm-cache").is_dir()  # the disk store under the user's cache dir
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    assert "store disk at" in process.stderr.read()
