"""`llm-cache` commands: check-config, --help, warm / stats / invalidate against a real gateway, demo."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.cli import build_parser, main, server_stack
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider_fixtures import RunningFakeProvider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LLM_CACHE = Path(sys.executable).parent / "llm-cache"
WORKTREE = Path(__file__).resolve().parents[2]
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
    assert "has no Qdrant index" in done.stderr and "Traceback" not in done.stderr


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
    assert "stored 3, already cached 0, not stored 0, failed 0" in captured.out
    assert "warming" not in captured.err  # stderr is not a terminal: no bar in a log or a pipe
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 0, already cached 3, not stored 0, failed 0" in capsys.readouterr().out
    assert fake_provider.count("/chat/completions") == 3

    assert main(["stats", "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    stats = json.loads(capsys.readouterr().out)
    # 3 misses stored, each checked by an only-if-cached hit; then 3 hits
    assert (stats["hits"], stats["misses"], stats["stored"]) == (6, 3, 3)
    assert main(["stats", "--gateway", running_gateway, "--admin-key", "wrong"]) == 1
    assert "403" in capsys.readouterr().err

    request = tmp_path / "one.json"
    request.write_text(json.dumps(items[0]))
    assert main(["invalidate", "--request", str(request), "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    assert "deleted" in capsys.readouterr().out
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 1, already cached 2, not stored 0, failed 0" in capsys.readouterr().out
    assert main(["invalidate", "--all", "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 3, already cached 0" in capsys.readouterr().out


def test_invalidate_by_tag_through_a_gateway(
    tmp_path: Path, running_gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def item(question: str, tags: str) -> dict[str, Any]:
        body = {**BODY, "messages": [{"role": "user", "content": question}]}
        headers = {"authorization": "Bearer sk-t", "x-cache-tags": tags}
        return {"path": "/v1/chat/completions", "body": body, "headers": headers}

    path = requests_file(tmp_path, [item("a?", "doc:1"), item("b?", "doc:2")])
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    capsys.readouterr()

    assert main(["invalidate", "--tag", "doc:1", "--gateway", running_gateway, "--admin-key", ADMIN]) == 0

    assert json.loads(capsys.readouterr().out) == {"invalidated": ["doc:1"], "deleted": 1}
    assert main(["warm", str(path), "--gateway", running_gateway]) == 0
    assert "stored 1, already cached 1" in capsys.readouterr().out


def test_invalidate_by_tag_in_a_configs_store(tmp_path: Path) -> None:
    from llm_cache.middleware.stores import DiskStore

    async def fill() -> None:
        store = DiskStore(tmp_path / "store")
        for n in (1, 2):  # as the engine's store step writes: the tag first, then the entry
            await store.tag(f"default:s:{n}", [f"doc:{n}"], 60)
            await store.set(f"default:s:{n}", b"entry", 60)
        await store.close()

    async def left() -> list[bytes | None]:
        store = DiskStore(tmp_path / "store")
        try:
            return [await store.get("default:s:1"), await store.get("default:s:2")]
        finally:
            await store.close()

    asyncio.run(fill())
    config = tmp_path / "cache.yaml"
    config.write_text(f"cache:\n  store:\n    type: disk\n    directory: {tmp_path / 'store'}\n")

    done = _cli("invalidate", "--tag", "doc:1", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"invalidated": ["doc:1"], "deleted": 1}
    assert asyncio.run(left()) == [None, b"entry"]


def test_the_admin_commands_read_the_admin_key_from_a_file_kept_out_of_ps(
    tmp_path: Path, running_gateway: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--admin-key KEY` is in the command line every local user reads in `ps` and /proc/PID/cmdline.
    `--admin-key-file FILE` reads it from a file instead (its first line, blanks stripped); a file that
    is empty, not a regular file or longer than a key is one line naming it. `--admin-key` still works."""
    monkeypatch.delenv("LLM_CACHE_ADMIN_KEY", raising=False)
    key_file = tmp_path / "admin.key"
    key_file.write_text(f"{ADMIN}\n")
    assert main(["stats", "--gateway", running_gateway, "--admin-key-file", str(key_file)]) == 0
    assert "hits" in json.loads(capsys.readouterr().out)
    assert main(["invalidate", "--all", "--gateway", running_gateway, "--admin-key-file", str(key_file)]) == 0
    capsys.readouterr()
    assert main(["stats", "--gateway", running_gateway, "--admin-key", ADMIN]) == 0
    capsys.readouterr()
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    for path, said in ((empty, "no key"), (Path("/dev/zero"), "not a regular file"), (tmp_path / "none", "No such")):
        assert main(["stats", "--gateway", running_gateway, "--admin-key-file", str(path)]) == 1
        assert f"--admin-key-file {path}: " in (err := capsys.readouterr().err) and said in err, err
    with pytest.raises(SystemExit):  # one or the other
        build_parser().parse_args(["stats", "--gateway", "u", "--admin-key", "k", "--admin-key-file", "f"])


def test_warm_on_a_terminal_shows_progress_with_rate_and_eta(tmp_path: Path, running_gateway: str) -> None:
    import pty

    headers = {"authorization": "Bearer sk-tty"}
    items = [{"path": "/v1/chat/completions", "body": {**BODY, "max_tokens": n}, "headers": headers} for n in (10, 20)]
    path = requests_file(tmp_path, items)
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "llm_cache.middleware.cli", "warm", str(path), "--gateway", running_gateway]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=follower, cwd=WORKTREE, timeout=60, text=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end is closed: everything was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert done.returncode == 0 and "stored 2" in done.stdout
    text = shown.decode("utf-8", "replace")
    assert "warming" in text and "2/2" in text and "req/s" in text and "ETA" in text, text


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
    assert "stored 1, already cached 0, not stored 0, failed 0" in capsys.readouterr().out
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


def test_warm_does_not_count_an_answer_the_cache_did_not_keep(
    tmp_path: Path, running_gateway: str, fake_provider: RunningFakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {"authorization": "Bearer sk-warm"}
    kept = {"path": "/v1/chat/completions", "body": BODY, "headers": headers}
    refused = {**kept, "body": {**BODY, "max_tokens": 7, "cache": {"no-store": True}}}
    path = requests_file(tmp_path, [kept, refused])
    assert main(["warm", str(path), "--gateway", running_gateway]) == 1
    captured = capsys.readouterr()
    assert "stored 1, already cached 0, not stored 1, failed 0" in captured.out
    assert "not stored: /v1/chat/completions" in captured.err
    assert fake_provider.count("/chat/completions") == 2  # the check never reaches the provider


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


def _wait_stored(directory: Path) -> None:
    """Until the disk store in `directory` holds an entry (its tags live in a folder of their own)."""
    import diskcache

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if directory.is_dir():
            with diskcache.Cache(str(directory)) as cache:
                if len(cache):
                    return
        time.sleep(0.05)
    raise AssertionError(f"no entry was stored in {directory}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_the_embedded_default(tmp_path: Path, fake_provider: RunningFakeProvider, workers: int) -> None:
    import openai

    from tests.support.servers import free_port

    port = free_port()
    # A config path left in the environment by a previous multi-worker `serve` names no file here:
    # the workers must load what the parent was told (nothing: the embedded default), as the parent does.
    stale = str(tmp_path / "gone.yaml")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "LLM_CACHE_CONFIG": stale}
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
        first = client.chat.completions.with_raw_response.create(**BODY).headers["x-cache"]
        # the entry is written after the answer is sent: the next call may reach the other worker first
        _wait_stored(tmp_path / "xdg" / "llm-cache")
        outcomes = [
            first,
            *(client.chat.completions.with_raw_response.create(**BODY).headers["x-cache"] for _ in range(2)),
        ]
        assert outcomes == ["MISS", "HIT", "HIT"]
        assert fake_provider.count("/chat/completions") == 1
        assert (tmp_path / "xdg" / "llm-cache").is_dir()  # the disk store under the user's cache dir
    finally:
        _stop(process)
    output = process.stderr.read()
    assert "store disk at" in output
    stack = server_stack()
    assert f"server: {stack['loop']} + {stack['http']}" in output


def test_serve_with_a_store_its_packages_cannot_build_is_one_line_naming_the_field(tmp_path: Path) -> None:
    """An Azure Blob store named by `account_url` with no credential needs azure-identity: without it the
    store's ImportError (naming what to install) came out of `serve` as a traceback."""
    if importlib.util.find_spec("azure.identity") is not None:
        pytest.skip("azure-identity is installed: the store is built")
    config = tmp_path / "azure.yaml"
    config.write_text(
        "cache:\n  store: {type: azure-blob, container: c, account_url: 'https://a.blob.core.windows.net'}\n"
    )
    done = _cli("serve", "--config", str(config), "--port", "0")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]  # (after the start-up lines)
    assert line.startswith("llm-cache: cache.store (azure-blob): ") and "pip install azure-identity" in line, line


def test_an_upstream_option_naming_no_family_is_refused_without_its_urls_password() -> None:
    """`--upstream FAMILY=URL` with a family mistyped quoted the option whole, a proxy's password in its
    URL with it; a URL refused by the config's check was already masked. Both are masked alike."""
    for option in ("opnai=https://u:pw-secret@proxy.example/v1", "openai=htps://u:pw-secret@proxy.example/v1"):
        done = _cli("serve", "--upstream", option, "--port", "0")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "pw-secret" not in done.stderr and "u:****@proxy.example" in done.stderr, done.stderr


def test_serve_runs_on_uvloop_and_httptools_when_they_are_installed() -> None:
    assert server_stack(lambda name: True) == {"loop": "uvloop", "http": "httptools"}
    assert server_stack(lambda name: False) == {"loop": "asyncio", "http": "h11"}
    assert server_stack(lambda name: name == "httptools") == {"loop": "asyncio", "http": "httptools"}


# -- operating it: version, one-line failures, admin key from the environment, log lines ----------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, importing this tree's `llm_cache`."""
    command = [sys.executable, "-m", "llm_cache.middleware.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=WORKTREE, env=env)


def _one_line_failure(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llm-cache: ")
    return lines[0]


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    import llm_cache.middleware

    assert llm_cache.middleware.__version__ == version("llm-cache-middleware")
    done = _cli("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"llm-cache {version('llm-cache-middleware')}")


@pytest.mark.parametrize("command", ["stats", "invalidate"])
def test_an_unreachable_gateway_is_one_line_saying_what_to_check(command: str) -> None:
    from tests.support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    args = ["--all"] if command == "invalidate" else []
    line = _one_line_failure(_cli(command, "--gateway", url, *args))
    assert f"cannot reach the gateway at {url}" in line and "Check --gateway" in line


def test_a_bad_config_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache:\n  ttl: soon\n")
    line = _one_line_failure(_cli("serve", "--config", str(bad)))
    assert "ttl" in line


def _unreadable(tmp_path: Path) -> str:
    """A file this process may not read: mode 000, or (as root, who reads anything) another process's memory."""
    if os.geteuid() != 0:
        path = tmp_path / "secret.jsonl"
        path.write_text("{}\n")
        path.chmod(0)
        return str(path)
    try:
        Path("/proc/1/mem").read_bytes()
    except PermissionError:
        return "/proc/1/mem"
    pytest.skip("running as root where /proc/1/mem is readable: no file is unreadable")


@pytest.mark.parametrize("command", ["warm", "check-config"])
def test_permission_denied_is_one_line(tmp_path: Path, command: str) -> None:
    path = _unreadable(tmp_path)
    extra = ["--gateway", "http://127.0.0.1:9"] if command == "warm" else []
    line = _one_line_failure(_cli(command, path, *extra))
    assert "ermission denied" in line and path in line


def test_admin_key_env_that_is_unset_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_ADMIN_KEY"}
    line = _one_line_failure(_cli("serve", "--admin-key-env", "NO_SUCH_ADMIN_KEY", env=env))
    assert "NO_SUCH_ADMIN_KEY is not set" in line


def test_serve_admin_key_env_and_log_lines_with_the_store_failure_cause(
    tmp_path: Path, fake_provider: RunningFakeProvider
) -> None:
    import re

    import httpx2
    import openai

    from tests.support.servers import free_port

    port, dead = free_port(), free_port()
    config = tmp_path / "redis.yaml"
    config.write_text(f"cache:\n  store: {{type: redis, url: 'redis://127.0.0.1:{dead}', connect_timeout: 0.5}}\n")
    env = {**os.environ, "OPS_ADMIN_KEY": "from-the-environment"}
    command = [sys.executable, "-m", "llm_cache.middleware.cli", "serve", "--config", str(config)]
    command += ["--port", str(port), "--admin-key-env", "OPS_ADMIN_KEY"]
    command += ["--upstream", f"openai={fake_provider.openai_base_url}"]
    process = subprocess.Popen(command, cwd=WORKTREE, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        ping = httpx2.get(f"{url}/cache/ping", headers={"x-litellm-api-key": "from-the-environment"}, timeout=10)
        assert (ping.status_code, ping.json()["cache_type"]) == (503, "redis")
        assert httpx2.get(f"{url}/cache/ping", headers={"x-admin-key": "wrong"}, timeout=10).status_code == 403
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-serve", max_retries=0)
        served = client.chat.completions.with_raw_response.create(**BODY)
        assert served.status_code == 200  # the store is down: answered from upstream
    finally:
        _stop(process)
    log = process.stderr.read() if process.stderr else ""
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.search(rf"^{stamp} INFO uvicorn\.error: Application startup complete", log, re.M), log
    failure = re.search(
        rf"^{stamp} WARNING llm_cache\.middleware[\w.]*: cache store redis get failed \((.*)", log, re.M
    )
    assert failure is not None, log
    assert "ConnectionError" in failure.group(1)  # the cause, not only "StoreError"


@contextlib.contextmanager
def _serving_at_info(tmp_path: Path, config: str, *options: str) -> Iterator[tuple[str, list[str]]]:
    """A real `serve` of `config` (with more command-line `options`) logging at INFO: its URL, and a list
    that holds its log once it stopped."""
    from tests.support.servers import free_port

    port = free_port()
    path = tmp_path / "served.yaml"
    path.write_text(config)
    command = [sys.executable, "-m", "llm_cache.middleware.cli", "serve", "--config", str(path)]
    command += ["--port", str(port), "--log-level", "info", *options]
    process = subprocess.Popen(command, cwd=WORKTREE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    log: list[str] = []
    try:
        _wait_healthy(url, process)
        yield url, log
    finally:
        _stop(process)
        log.append(process.stderr.read() if process.stderr else "")


def test_serve_never_writes_a_key_sent_in_the_query_to_its_log(
    tmp_path: Path, fake_provider: RunningFakeProvider
) -> None:
    """A gateway key (and Gemini's `key=`) may come in the query string; uvicorn's access log writes
    the query: the key's value is masked there, the rest of the line is kept."""
    import httpx2

    config = (
        "cache: {store: {type: memory}}\n"
        "auth: {keys: [gw-secret-in-the-query]}\n"
        f"upstreams: {{gemini: {{base_url: '{fake_provider.gemini_base_url}', api_key: upstream-key}}}}\n"
    )
    body = {"contents": [{"role": "user", "parts": [{"text": "What is your return policy?"}]}]}
    path = "/v1beta/models/gemini-2.0-flash:generateContent"
    with _serving_at_info(tmp_path, config) as (url, log):
        answered = httpx2.post(f"{url}{path}?alt=json&key=gw-secret-in-the-query", json=body, timeout=10)
        assert answered.status_code == 200, answered.text
        refused = httpx2.get(f"{url}/v1beta/models?key=a-wrong-key-is-a-secret-too&pageSize=5", timeout=10)
        assert refused.status_code == 401
    log = "".join(log)
    assert f'"POST {path}?alt=json&key=*** HTTP/1.1" 200' in log, log
    assert '"GET /v1beta/models?key=***&pageSize=5 HTTP/1.1" 401' in log, log
    assert "gw-secret-in-the-query" not in log and "a-wrong-key-is-a-secret-too" not in log


class HostileGateway:
    """Answers the admin commands as a wrong or hostile server at `--gateway URL` would: `/<case>/...`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        self.requests.append((scope["path"], authorization.decode() if authorization else None))
        case = scope["path"].split("/")[1]
        status, extra, body = {
            "string-error": (404, [], json.dumps({"error": "not found"}).encode()),
            "escapes": (
                403,
                [],
                json.dumps({"error": {"message": "\x1b]0;owned\x07\x1b[2Jgone\nllm-cache: forged"}}).encode(),
            ),
            "redirect": (307, [(b"location", b"/elsewhere/cache/stats")], b""),
            "huge": (200, [], b'{"a": "' + b"x" * (40 * 1024 * 1024) + b'"}'),
            "deep": (200, [], b"[" * 100_000 + b"]" * 100_000),
            "x-cache": (500, [(b"x-cache", b"\x1b]0;owned\x07MISS")], b"{}"),
            "html": (200, [(b"x-note", b"a web server's index page")], b"<html>\x1b[2J</html>"),
            "nan": (200, [], b'{"verifications": [{"similarity": NaN, "outcome": "agreed"}], "max_error_rate": 0.05}'),
            "escaped-fields": (
                200,
                [],
                json.dumps(
                    {
                        "verifications": [{"similarity": 0.9, "outcome": "agreed"}],
                        "max_error_rate": "\x1b[2J\x1b]0;x\x07",
                    }
                ).encode(),
            ),
        }.get(case, (404, [], b"{}"))
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})


def test_admin_commands_take_a_hostile_or_wrong_answer_as_one_line(tmp_path: Path) -> None:
    """`stats`, `invalidate` and `calibrate --from-gateway` read what a server at a URL the operator typed
    answers: another server's error shape (`{"error": "..."}`) raised an AttributeError traceback, its text
    reached the terminal with its escape sequences (a title, a cleared screen, a forged line), a redirect
    or a 200 that is not JSON was reported as success, JSON nested 100,000 deep raised a RecursionError, a
    NaN similarity was calibrated on, and the answer was read whole however large; `warm` printed a
    failing answer's `x-cache` as sent.
    Redirects are not followed: the admin key goes to the URL given and nowhere else."""
    hostile = HostileGateway()
    with BackgroundServer(hostile) as server:
        env = {**os.environ, "LLM_CACHE_ADMIN_KEY": "cli-admin-secret"}
        for case, expected in (
            ("string-error", "gateway answered 404: not found"),
            ("escapes", "gateway answered 403: "),
            ("redirect", "gateway answered 307"),
            ("huge", "answered more than"),
            ("deep", "answered 200 with no JSON it can read"),
            ("html", "answered 200 with no JSON it can read"),
        ):
            line = _one_line_failure(_cli("stats", "--gateway", f"{server.url}/{case}", env=env))
            assert expected in line and "\x1b" not in line and "\x07" not in line, (case, line)
        line = _one_line_failure(_cli("calibrate", "--from-gateway", f"{server.url}/nan", env=env))
        assert "did not answer a list of verification outcomes" in line
        requests = tmp_path / "requests.jsonl"
        requests.write_text(json.dumps({"path": "/v1/chat/completions", "body": BODY}) + "\n")
        done = _cli("warm", "--gateway", f"{server.url}/x-cache", str(requests), env=env)
        assert done.returncode == 1 and "x-cache=" in done.stderr, done.stderr
        assert "\x1b" not in done.stderr + done.stdout and "\x07" not in done.stderr + done.stdout
        done = _cli("calibrate", "--from-gateway", f"{server.url}/escaped-fields", env=env)
        assert done.returncode == 0 and "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stderr
    assert not any(path.startswith("/elsewhere") for path, _ in hostile.requests)


def test_admin_commands_name_the_gateway_url_without_its_password() -> None:
    """A gateway behind a basic-auth proxy is named `https://ops:password@host`; the one-line failures
    of `stats`, `invalidate` and `calibrate --from-gateway` quoted the URL whole (the password went to
    the terminal and any CI log). They name it masked, as `check-config` masks URLs."""
    with BackgroundServer(HostileGateway()) as server:
        env = {**os.environ, "LLM_CACHE_ADMIN_KEY": "cli-admin-secret"}
        with_password = server.url.replace("http://", "http://ops:pw-secret@")
        for command, url, expected in (
            ("stats", f"{with_password}/huge", "answered more than"),
            ("stats", f"{with_password}/html?token=tk-secret", "answered 200 with no JSON"),
            (
                "calibrate",
                "http://ops:pw-secret@127.0.0.1:1",
                "cannot reach the gateway at http://ops:****@127.0.0.1:1",
            ),
            ("calibrate", f"{with_password}/nan", "did not answer a list of verification outcomes"),
        ):
            flag = "--from-gateway" if command == "calibrate" else "--gateway"
            line = _one_line_failure(_cli(command, flag, url, env=env))
            assert expected in line and "pw-secret" not in line and "tk-secret" not in line, line
        done = _cli("calibrate", "--from-gateway", f"{with_password}/escaped-fields", env=env)
        assert done.returncode == 0 and "ops:****@" in done.stdout and "pw-secret" not in done.stdout, done.stderr


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000 + b"]" * 100_000 + b"\n", b"\xff\xfe{}\n", b"5\n", b'{"a": 1}\n{"path": "/v1/x", "body": \n'],
    ids=["nested-too-deeply", "not-utf-8", "a-number", "cut-short"],
)
@pytest.mark.parametrize("command", ["warm", "invalidate", "calibrate"])
def test_a_file_a_command_reads_that_is_not_json_is_one_line_naming_it(
    tmp_path: Path, command: str, content: bytes
) -> None:
    """`warm FILE`, `invalidate --request FILE` and `calibrate PAIRS` read JSON the operator (or whoever
    wrote the file) gave them: lists nested 100,000 deep raised a RecursionError, bytes that are not UTF-8
    a UnicodeDecodeError, and a line holding a number a TypeError in calibrate, each as a traceback."""
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    arguments = {
        "warm": ["warm", "--gateway", "http://127.0.0.1:9", str(path)],
        "invalidate": ["invalidate", "--gateway", "http://127.0.0.1:9", "--request", str(path)],
        "calibrate": ["calibrate", str(path)],
    }[command]
    line = _one_line_failure(_cli(*arguments))
    assert str(path) in line, line


def _not_a_file(kind: str, tmp_path: Path) -> str:
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe")  # no writer ever opens it: reading it waited for ever
        return str(tmp_path / "pipe")
    return {"dev-zero": "/dev/zero", "folder": str(tmp_path)}[kind]


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "folder"])
@pytest.mark.parametrize("command", ["warm", "invalidate", "calibrate"])
def test_a_path_a_command_reads_that_is_not_a_regular_file_is_one_line_naming_it(
    tmp_path: Path, command: str, kind: str
) -> None:
    """`warm FILE`, `invalidate --request FILE` and `calibrate PAIRS` read the whole file into memory:
    `/dev/zero` grew the process until it was killed, a FIFO no one writes to waited for ever, and a
    folder was a traceback. A path that is not a regular file is refused before anything is read."""
    path = _not_a_file(kind, tmp_path)
    arguments = {
        "warm": ["warm", "--gateway", "http://127.0.0.1:9", path],
        "invalidate": ["invalidate", "--gateway", "http://127.0.0.1:9", "--request", path],
        "calibrate": ["calibrate", path],
    }[command]
    line = _one_line_failure(_cli(*arguments))
    assert f"{path}: not a regular file" in line, line


@pytest.mark.parametrize("command", ["warm", "calibrate"])
def test_a_line_longer_than_the_cap_is_refused_naming_the_line_without_reading_it_whole(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of JSON lines is read line by line, each at most `MAX_LINE_BYTES`: one endless line (a
    file written without newlines) is an error naming the line, not a process holding it whole."""
    from llm_cache.middleware import _json_files

    monkeypatch.setattr(_json_files, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "input.jsonl"
    good = {"warm": '{"path": "/v1/chat/completions", "body": {}}', "calibrate": '{"a": "x", "b": "y", "label": 1}'}
    path.write_text(f"{good[command]}\n\n" + "x" * 5000 + "\n")
    arguments = {"warm": ["warm", "--gateway", "http://127.0.0.1:9"], "calibrate": ["calibrate"]}[command]
    assert main([*arguments, str(path)]) == 1
    assert f"{path}:3: a line longer than 1000 bytes" in capsys.readouterr().err


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_serve_writes_no_control_character_a_caller_sent_to_its_log(
    tmp_path: Path, fake_provider: RunningFakeProvider, parser: str
) -> None:
    """uvicorn's access log names the client by `X-Forwarded-For` when the connection comes from a
    trusted proxy address (127.0.0.1 by default), and an HTTP header value may carry ESC and BEL: a
    caller on the gateway's host wrote terminal escapes (a window title, a cleared screen) into the
    log of whoever tails it. `serve`'s log handler escapes every control character of what a line
    quotes (h11 lets such a value through); httptools refuses the request before any line quotes it."""
    import httpx2

    if parser == "httptools":
        pytest.importorskip("httptools")
    config = (
        f"cache: {{store: {{type: memory}}}}\nupstreams: {{openai: {{base_url: '{fake_provider.openai_base_url}'}}}}\n"
    )
    with _serving_at_info(tmp_path, config, "--http", parser) as (url, log):
        headers = {"x-forwarded-for": "\x1b]0;owned\x07\x1b[2J10.9.8.7", "authorization": "Bearer sk-a"}
        answer = httpx2.post(f"{url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
        assert answer.status_code == 400  # (such a header cannot be forwarded; the line is logged all the same)
    text = "".join(log)
    assert f"+ {parser}" in text, text
    if parser == "h11":
        assert "10.9.8.7" in text and "POST /v1/chat/completions" in text, text
    else:
        assert "Invalid HTTP request received" in text, text
    assert "\x1b" not in text and "\x07" not in text, text
