"""The gateway's bounds (docs/security.md, "Gateway"): bodies stream with bounded memory, the optional
size cap answers 413, a trickling body 408, uvicorn's limits come from the config, and `serve` warns
loudly when it would spend upstream keys for anyone.

The memory and `serve` tests run `llm-cache serve` as a real uvicorn subprocess.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import ServerConfig
from tests.middleware.test_gateway import MODEL, Gateway, gateway_factory  # noqa: F401
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.gateway_process import cpu_seconds
from tests.support.servers import free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
SERVE = "import sys; from llm_cache.middleware.cli import main; sys.exit(main(sys.argv[1:]))"


# -- a real gateway process -----------------------------------------------------------------------


class GatewayProcess:
    """`llm-cache serve --config FILE` in a child process (this worktree's code), ready when /health answers."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = directory / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = directory / "gateway.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVE, "serve", "--config", str(path), "--port", str(self.port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def healthy(self) -> bool:
        try:
            return httpx2.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx2.TransportError:
            return False

    def wait_ready(self) -> GatewayProcess:
        wait_for(
            self.healthy,
            30,
            "llm-cache serve",
            self.log,
            self.process,
        )
        return self

    def peak_rss(self) -> int:
        """The process's peak resident set size (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/PID/status")

    def stop(self) -> None:
        stop_process(self.process)


def counting_upstream() -> Starlette:
    """An upstream that reads the body as it streams in and answers its size and SHA-256 (holds nothing)."""

    async def count(request: Request) -> JSONResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})

    return Starlette(routes=[Route("/{path:path}", count, methods=["POST"])])


def pattern_body(total: int, head: bytes = b"", tail: bytes = b"") -> tuple[Callable[[], Iterator[bytes]], str]:
    """A generator of `total` bytes (head + filler + tail) sent 1 MiB at a time, and the SHA-256 of it all."""
    filler = b"abcdefghij" * (MIB // 10) + b"abcdef"  # 1 MiB
    middle = total - len(head) - len(tail)

    def chunks() -> Iterator[bytes]:
        yield head
        left = middle
        while left > 0:
            piece = filler[: min(left, MIB)]
            left -= len(piece)
            yield piece
        yield tail

    digest = hashlib.sha256()
    for chunk in chunks():
        digest.update(chunk)
    return chunks, digest.hexdigest()


@pytest.fixture
def memory_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    with BackgroundServer(counting_upstream()) as upstream:
        config = {
            "cache": {"store": {"type": "memory"}},
            "upstreams": {"openai": {"base_url": f"{upstream.url}/v1"}},
            "server": {"host": "127.0.0.1"},
        }
        gateway = GatewayProcess(tmp_path, config).wait_ready()
        try:
            yield gateway
        finally:
            gateway.stop()


def send_through(gateway: GatewayProcess, path: str, total: int, chunked: bool, head: bytes, tail: bytes) -> int:
    """Send `total` bytes through the gateway; assert the upstream got them all; the gateway's peak RSS growth."""
    chunks, digest = pattern_body(total, head, tail)
    headers = {"authorization": "Bearer sk-a", "content-type": "application/json"}
    if not chunked:
        headers["content-length"] = str(total)
    before = gateway.peak_rss()
    answer = httpx2.post(f"{gateway.url}{path}", content=chunks(), headers=headers, timeout=120)
    after = gateway.peak_rss()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"bytes": total, "sha256": digest}
    return after - before


def test_a_200_mib_upload_and_an_80_mib_chat_body_stream_in_bounded_memory(memory_gateway: GatewayProcess) -> None:
    # Warm up (imports, pools, first request), so the growth measured below is the body's alone.
    send_through(memory_gateway, "/v1/files", MIB, chunked=False, head=b"", tail=b"")
    upload = send_through(memory_gateway, "/v1/files", 200 * MIB, chunked=False, head=b"", tail=b"")
    chat_head = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}]})[:-4] + b'"'
    chat = send_through(memory_gateway, "/v1/chat/completions", 80 * MIB, chunked=True, head=chat_head, tail=b'"}]}')
    print(f"\npeak RSS growth: 200 MiB upload {upload / MIB:.1f} MiB, 80 MiB chat body {chat / MIB:.1f} MiB")
    assert upload < 100 * MIB and chat < 100 * MIB


@pytest.mark.parametrize("holder", ["routing", "with-its-own-key"])
def test_a_gateway_that_holds_bodies_holds_at_most_64_mib_of_one_without_a_configured_cap(
    tmp_path: Path, holder: str
) -> None:
    """A body is read whole with a router (it picks a group from it and may resend it) and, for a JSON
    or form body, with a key of the gateway's own (a `_method` in it is judged by the allow rules): with
    no `max_request_bytes`, the gateway still holds at most 64 MiB of one, and answers 413 past it."""
    with BackgroundServer(counting_upstream()) as upstream:
        config: dict[str, Any] = {"cache": {"store": {"type": "memory"}}, "server": {"host": "127.0.0.1"}}
        if holder == "routing":
            params = {"model": f"openai/{MODEL}", "api_base": f"{upstream.url}/v1"}
            config["model_list"] = [{"model_name": MODEL, "litellm_params": params}]
        else:
            config["upstreams"] = {"openai": {"base_url": f"{upstream.url}/v1", "api_key": "sk-owner"}}
        gateway = GatewayProcess(tmp_path, config).wait_ready()
        try:
            head = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": ""}]})[:-4]
            send_through(gateway, "/v1/chat/completions", MIB, chunked=True, head=head, tail=b'"}]}')  # warm up
            chunks, _ = pattern_body(200 * MIB, head, b'"}]}')
            headers = {"authorization": "Bearer sk-a", "content-type": "application/json"}
            before = gateway.peak_rss()
            answer = httpx2.post(f"{gateway.url}/v1/chat/completions", content=chunks(), headers=headers, timeout=120)
            growth = gateway.peak_rss() - before
        finally:
            gateway.stop()
    assert answer.status_code == 413 and f"{64 * MIB} bytes" in answer.json()["error"]["message"]
    print(f"\npeak RSS growth, a 200 MiB chunked chat body to a routing gateway: {growth / MIB:.1f} MiB")
    assert growth < 100 * MIB


# -- 413 and 408 ----------------------------------------------------------------------------------


@pytest.fixture
def capped_gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:  # noqa: F811
    return gateway_factory({"server": {"max_request_bytes": 1000, "body_read_timeout": 0.5}})


def chat_body(size: int) -> bytes:
    head = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": ""}]})
    return head[:-4] + b"x" * (size - len(head)) + head[-4:]


def test_a_body_over_max_request_bytes_is_a_413_before_forwarding(
    capped_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    headers = {"authorization": "Bearer sk-a", "content-type": "application/json"}
    url = f"{capped_gateway.url}/v1/chat/completions"
    declared = httpx2.post(url, content=chat_body(2000), headers=headers, timeout=10)
    assert declared.status_code == 413 and "1000 bytes" in declared.json()["error"]["message"]
    body = chat_body(2000)
    chunked = httpx2.post(url, content=iter([body[:600], body[600:1200], body[1200:]]), headers=headers, timeout=10)
    assert chunked.status_code == 413  # no content-length: counted as it arrives
    upload = httpx2.post(f"{capped_gateway.url}/v1/files", content=iter([b"y" * 600] * 4), headers=headers, timeout=10)
    assert upload.status_code == 413  # a body the cache does not read: streamed, and cut at the cap
    assert fake_provider.requests == []
    assert httpx2.post(url, content=chat_body(900), headers=headers, timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("openai", "capped"),
    [
        ({}, False),
        ({"api_key": "sk-owner"}, True),
        ({"allow": ["POST /v1/chat/completions", "POST /v1/files"]}, True),
    ],
    ids=["no-key", "owners-key", "allow-rules"],
)
def test_without_max_request_bytes_every_body_is_capped_at_64_mib_once_allow_rules_judge_calls(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
    openai: dict[str, Any],
    capped: bool,
) -> None:
    """A gateway that judges calls by `upstreams.<family>.allow` (with a key of its own, or `allow` given)
    reads JSON and form bodies whole to judge a `_method` in them, so it caps every body at 64 MiB, an
    upload it streams too (a file opened by `allow`); one that judges none caps nothing. A declared
    length past the cap is a 413 before any byte of the body is read; one under no cap waits for its
    body (here: 408, as none comes)."""
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url, **openai}}
    gateway = gateway_factory({"upstreams": upstreams, "server": {"body_read_timeout": 0.5}})
    for path in ("/v1/chat/completions", "/v1/files"):
        head = (
            f"POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer sk-a\r\n"
            f"content-type: application/octet-stream\r\ncontent-length: {64 * MIB + 1}\r\n\r\n".encode()
        )
        reply = answer_head(gateway, head)
        assert reply.split(b" ", 2)[1] == (b"413" if capped else b"408"), (path, reply[:300])


def answer_head(gateway: Gateway, sent: bytes) -> bytes:
    """What the gateway answers, up to the end of its head, to `sent` (a request's head and maybe part of
    its body) on a connection of its own."""
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(sent)
        reply = b""
        while b"\r\n\r\n" not in reply:  # bounded by the socket timeout
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    return reply


@pytest.mark.parametrize(
    ("path", "openai"),
    [("/v1/chat/completions", {}), ("/v1/files", {}), ("/v1/files", {"allow": ["POST /v1/files"]})],
    ids=["cached-route", "streamed-upload", "read-whole-for-allow-rules"],
)
def test_an_upload_cut_halfway_ends_quietly_and_no_request_reaches_the_upstream_whole(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    path: str,
    openai: dict[str, Any],
) -> None:
    """A caller that sends its head and half its body, then closes: the gateway's proxy ends without a
    traceback (the server logged `ClientDisconnect` as an error), counts it, and the upstream never
    gets that request whole."""
    gateway = gateway_factory({"upstreams": {"openai": {"base_url": fake_provider.openai_base_url, **openai}}})
    body = chat_body(2000)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer sk-a\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    )
    caplog.set_level(logging.DEBUG)
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
    deadline = time.monotonic() + 20
    while gateway.admin("GET", "/cache/stats").json()["client_disconnects"] < 1:
        assert time.monotonic() < deadline, "the cut upload was not seen within the deadline"
    assert [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info] == []
    assert "left before its body ended" in caplog.text
    logged = capfd.readouterr().err  # (uvicorn's error log does not reach caplog)
    assert "Traceback" not in logged, logged
    assert fake_provider.requests == []  # its call, begun with the body's first piece, was cut with it


def test_a_body_slower_than_the_read_timeout_is_a_408(
    capped_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    reply = answer_head(
        capped_gateway,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer sk-a\r\n"
        b"content-type: application/json\r\ncontent-length: 500\r\n\r\n" + b'{"model": "',
    )
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert fake_provider.requests == []


def gateway_expecting_a_body(body_read_timeout: float) -> tuple[Any, dict[str, Any]]:
    """A gateway app and the scope of a chat request that announces 500 bytes of body."""
    from llm_cache.middleware.config import GatewayConfig
    from llm_cache.middleware.gateway import create_gateway

    config = {
        "server": {"body_read_timeout": body_read_timeout},
        "upstreams": {"openai": {"base_url": "http://127.0.0.1:9/v1"}},
    }
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"500")],
    }
    return create_gateway(GatewayConfig.model_validate(config)), scope


def test_a_slow_body_is_a_408_on_every_event_loop_the_gateway_app_runs_on() -> None:
    app, scope = gateway_expecting_a_body(0.2)

    async def slow_client() -> list[int]:
        sent: list[Any] = []

        async def receive() -> Any:
            await asyncio.Event().wait()  # the body never comes

        async def send(message: Any) -> None:
            sent.append(message)

        await asyncio.wait_for(app(dict(scope), receive, send), 10)
        return [m["status"] for m in sent if m["type"] == "http.response.start"]

    assert asyncio.run(slow_client()) == [408]
    assert asyncio.run(slow_client()) == [408]  # a new loop: the gateway's reads are still timed


def test_a_body_read_cancelled_from_outside_is_a_cancellation_not_a_408() -> None:
    # A read that waits is timed; a cancellation that is not the deadline's (the server shutting the
    # request down) reaches the server's receive and ends the request as a cancellation, answering nothing.
    app, scope = gateway_expecting_a_body(30)

    async def cancelled_while_reading() -> tuple[bool, list[Any]]:
        sent: list[Any] = []
        waiting = asyncio.Event()
        seen_cancel = False

        async def receive() -> Any:
            nonlocal seen_cancel
            waiting.set()
            try:
                await asyncio.Event().wait()  # the body never comes
            except asyncio.CancelledError:
                seen_cancel = True
                raise

        async def send(message: Any) -> None:
            sent.append(message)

        request = asyncio.create_task(app(dict(scope), receive, send))
        async with asyncio.timeout(10):
            await waiting.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await request
        return seen_cancel, sent

    assert asyncio.run(cancelled_while_reading()) == (True, [])


def test_uvicorn_limits_come_from_the_config(tmp_path: Path) -> None:
    options = ServerConfig(limit_concurrency=1, timeout_keep_alive=2, limit_max_requests=50).uvicorn_options()
    assert options == {"timeout_keep_alive": 2, "backlog": 2048, "limit_concurrency": 1, "limit_max_requests": 50}
    gateway = GatewayProcess(tmp_path, {"cache": {"store": {"type": "memory"}}, "server": {"limit_concurrency": 2}})
    try:
        gateway.wait_ready()
        # uvicorn counts the asking connection: with 2 allowed, one held open leaves no room for another.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10):
            second = httpx2.get(f"{gateway.url}/health", timeout=10)
        assert second.status_code == 503
    finally:
        gateway.stop()


# -- serve's warning ------------------------------------------------------------------------------


def serve_output(tmp_path: Path, config: dict[str, Any]) -> str:
    gateway = GatewayProcess(tmp_path, config)
    try:
        gateway.wait_ready()
    finally:
        gateway.stop()
    return gateway.log.read_text()


@pytest.mark.parametrize(
    "config",
    [
        {"upstreams": {"openai": {"api_key": "sk-spent"}}},
        {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "sk-spent"}}]},
    ],
    ids=["native", "litellm"],
)
def test_serve_warns_loudly_when_upstream_keys_are_open_to_anyone(tmp_path: Path, config: dict[str, Any]) -> None:
    output = serve_output(tmp_path, config)
    assert "WARNING: the LLM routes" in output and "api_key" in output
    assert "sk-spent" not in output


def test_serve_does_not_warn_when_client_keys_are_required(tmp_path: Path) -> None:
    config = {"upstreams": {"openai": {"api_key": "sk-spent"}}, "auth": {"keys": ["gw-client-key-0123456789"]}}
    output = serve_output(tmp_path, config)
    assert "WARNING" not in output and "llm-cache gateway on" in output


@pytest.mark.parametrize(
    ("config", "named", "value"),
    [
        ({"admin_key": "adm-weak"}, "admin_key", "adm-weak"),
        ({"auth": {"keys": ["gw-client-key-0123456789", "short-key"]}}, "auth.keys[1]", "short-key"),
        (
            {
                "general_settings": {"master_key": "sk-1234"},
                "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
            },
            "general_settings.master_key",
            "sk-1234",
        ),
    ],
    ids=["admin-key", "client-key", "litellm-master-key"],
)
def test_serve_warns_once_naming_a_key_shorter_than_16_characters_but_never_its_value(
    tmp_path: Path, config: dict[str, Any], named: str, value: str
) -> None:
    """`admin_key: a` was taken as is: one guess opened /cache/* (flush, invalidate). A key shorter than
    16 characters still works (refusing it would break configs that run today; LiteLLM refuses only an
    unset, empty or `sk-1234` master key), but `serve` says so at start, naming the field, not the key."""
    output = serve_output(tmp_path, config)
    lines = [line for line in output.splitlines() if "shorter than 16 characters" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING: ") and named in lines[0], output
    assert value not in output


# -- what an upstream sends back ------------------------------------------------------------------

BOMB_BYTES = 256 * MIB


def gzip_bomb(decoded: int) -> bytes:
    """`decoded` bytes of a JSON document that compress to about a thousandth of that."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(b'{"pad": "')]
    zeros = b"0" * MIB
    parts += [packer.compress(zeros) for _ in range(decoded // MIB)]
    parts.append(packer.compress(b'"}') + packer.flush())
    return b"".join(parts)


async def model_asked(receive: Any) -> str:
    """The `model` of the JSON request body an ASGI upstream receives."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    model: str = orjson.loads(body)["model"]
    return model


def hostile_upstream(bomb: bytes) -> Any:
    """An OpenAI-compatible upstream whose answers are built to be held: the model names the attack.
    `bomb-200` / `bomb-400`: a gzip body that decodes to 256 MiB; `huge`: 200 MiB of plain JSON;
    `tiny`: a small answer."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        model = await model_asked(receive)
        status = 400 if model == "bomb-400" else 200
        headers = [(b"content-type", b"application/json")]
        if model == "tiny":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        if model.startswith("bomb"):
            headers += [(b"content-encoding", b"gzip"), (b"content-length", str(len(bomb)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": bomb})
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"pad": "', "more_body": True})
        for _ in range(200):
            await send({"type": "http.response.body", "body": b"0" * MIB, "more_body": True})
        await send({"type": "http.response.body", "body": b'"}'})

    return app


@pytest.fixture
def routed_to_a_hostile_upstream(tmp_path: Path) -> Iterator[tuple[GatewayProcess, bytes]]:
    bomb = gzip_bomb(BOMB_BYTES)
    with BackgroundServer(hostile_upstream(bomb)) as upstream:
        deployment = {"api_base": f"{upstream.url}/v1", "api_key": "upstream-key"}
        names = ("bomb-200", "bomb-400", "huge", "tiny")
        config = {
            "cache": {"store": {"type": "memory"}},
            "model_list": [{"model_name": n, "litellm_params": {"model": f"openai/{n}", **deployment}} for n in names],
            "router": {"num_retries": 0},
            "server": {"host": "127.0.0.1"},
        }
        gateway = GatewayProcess(tmp_path, config).wait_ready()
        try:
            yield gateway, bomb
        finally:
            gateway.stop()


def test_an_upstream_answer_is_never_held_or_decoded_whole(
    routed_to_a_hostile_upstream: tuple[GatewayProcess, bytes],
) -> None:
    """The router reads an answer to judge it (or translate it) and the cache decodes one to store it:
    each reads a bounded part, so a compressed bomb or a huge body costs the gateway little memory,
    and the caller still gets every byte the upstream sent."""
    gateway, bomb = routed_to_a_hostile_upstream
    headers = {"authorization": "Bearer sk-a", "accept-encoding": "gzip"}

    def raw_answer(model: str) -> tuple[int, int]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        url = f"{gateway.url}/v1/chat/completions"
        with httpx2.stream("POST", url, json=body, headers=headers, timeout=60) as answer:
            return answer.status_code, sum(len(chunk) for chunk in answer.iter_raw())

    raw_answer("tiny")  # warm up (imports, pools, first request)
    before = gateway.peak_rss()
    assert raw_answer("bomb-200") == (200, len(bomb))
    assert raw_answer("bomb-400") == (400, len(bomb))
    assert raw_answer("huge") == (200, 200 * MIB + len(b'{"pad": ""}'))
    growth = gateway.peak_rss() - before
    print(f"\npeak RSS growth over a 256 MiB gzip bomb (200 and 400) and a 200 MiB answer: {growth / MIB:.1f} MiB")
    assert growth < 100 * MIB


ENDLESS_BYTES = 48 * MIB


def endless_event_upstream() -> Any:
    """An upstream whose stream is one event that never ends: `ENDLESS_BYTES` of text after its
    `data:`, and no blank line. In OpenAI's shape, or Anthropic's for a model whose name says so."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        anthropic = "claude" in await model_asked(receive)
        head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"text":"'
        if not anthropic:
            head = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"'
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        for _ in range(ENDLESS_BYTES // MIB):
            await send({"type": "http.response.body", "body": b"a" * MIB, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize("route", ["usage filter", "translated by the router"])
def test_an_event_that_never_ends_is_never_held_whole_nor_scanned_again(tmp_path: Path, route: str) -> None:
    """A stream is parsed event by event on the way to the caller: the cache's filter that hides the
    usage chunk it asked for, the router's translation of another family's events. Neither holds an
    event without a bound, nor scans what it holds again for each new chunk (48 MiB in 64 KiB reads)."""
    with BackgroundServer(endless_event_upstream()) as upstream:
        config: dict[str, Any] = {"cache": {"store": {"type": "memory"}}, "server": {"host": "127.0.0.1"}}
        if route == "usage filter":
            config["upstreams"] = {"openai": {"base_url": f"{upstream.url}/v1"}}
        else:
            claude = {"model": "anthropic/claude-x", "api_base": upstream.url, "api_key": "k"}
            config["model_list"] = [{"model_name": MODEL, "litellm_params": claude}]
        gateway = GatewayProcess(tmp_path, config).wait_ready()
        try:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
            headers = {"authorization": "Bearer sk-a", "accept-encoding": "identity"}
            url = f"{gateway.url}/v1/chat/completions"
            before, cpu = gateway.peak_rss(), cpu_seconds(gateway.process.pid)
            received = 0
            with httpx2.stream("POST", url, json=body, headers=headers, timeout=60) as answer:
                assert answer.status_code == 200
                try:
                    for chunk in answer.iter_raw():
                        received += len(chunk)
                except httpx2.RemoteProtocolError:
                    pass  # the router ends a stream it cannot translate
            growth, spent = gateway.peak_rss() - before, cpu_seconds(gateway.process.pid) - cpu
            assert gateway.healthy()
        finally:
            gateway.stop()
    print(f"\n{route}: {received / MIB:.1f} MiB relayed, peak RSS +{growth / MIB:.1f} MiB, {spent:.2f} s CPU")
    if route == "usage filter":
        assert received > ENDLESS_BYTES  # what the upstream sent, as it came
    assert growth < 40 * MIB and spent < 10


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_length_sent_as_a_list_of_one_value_is_read_as_the_server_reads_it(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
    http: str,
) -> None:
    """`content-length: 2000, 2000` is one length of 2000 to the server (RFC 9110 8.6): past the cap, it is
    a 413 before any byte of the body is read, as a plain `2000` is, or it is refused as framing."""
    if http == "httptools":
        pytest.importorskip("httptools")
    capped_gateway = gateway_factory({"server": {"max_request_bytes": 1000, "body_read_timeout": 0.5}}, http=http)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer sk-a\r\n"
        b"content-type: application/json\r\ncontent-length: 2000, 2000\r\n\r\n"
    )
    assert answer_head(capped_gateway, head).split(b" ", 2)[1] in (b"413", b"400")
    assert fake_provider.requests == []
