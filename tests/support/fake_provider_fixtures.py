"""Fixtures that run the fake LLM provider (tests/support/fake_provider.py) on 127.0.0.1.

`fake_provider` (function scope) and `fake_provider_session` (session scope, reset before each
use) serve a fresh `FakeProvider` with a real uvicorn server on a port the OS picked, in a
background thread with its own event loop. Both yield a `RunningFakeProvider`: the provider's
controls plus the URLs the SDKs take as `base_url`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from tests.support.fake_provider import FakeProvider, QuietStreamCuts, create_fake_provider

START_DEADLINE = 10.0
STOP_DEADLINE = 10.0


class RunningFakeProvider:
    """A `FakeProvider` being served; every attribute not defined here is the provider's."""

    def __init__(self, provider: FakeProvider, host: str, port: int) -> None:
        self.provider = provider
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.openai_base_url = f"{self.url}/v1"  # openai.OpenAI(base_url=...)
        self.azure_endpoint = self.url  # openai.AzureOpenAI(azure_endpoint=...)
        self.anthropic_base_url = self.url  # anthropic.Anthropic(base_url=...): the SDK adds /v1
        self.gemini_base_url = f"{self.url}/v1beta"  # + /models/{model}:generateContent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.provider, name)

    def __repr__(self) -> str:
        return f"<RunningFakeProvider {self.url}>"


class FakeProviderServer:
    """uvicorn serving one `FakeProvider` in a daemon thread; `start()` / `stop()` are bounded."""

    def __init__(self, provider: FakeProvider | None = None) -> None:
        self.provider = provider or create_fake_provider()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))  # bound here, so the port cannot be taken in between
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.provider.app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"fake-provider:{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start() instead of dying silently in a thread
            self._error = exc

    def start(self) -> RunningFakeProvider:
        error_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, QuietStreamCuts) for f in error_log.filters):
            error_log.addFilter(QuietStreamCuts())
        self._thread.start()
        deadline = time.monotonic() + START_DEADLINE
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"fake provider failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake provider did not start within {START_DEADLINE}s")
            self._thread.join(0.005)  # a bounded wait on the server thread, then re-check
        return RunningFakeProvider(self.provider, "127.0.0.1", self.port)

    def stop(self) -> None:
        self.provider.release()  # held requests would otherwise keep the shutdown waiting
        self._server.should_exit = True
        self._thread.join(STOP_DEADLINE)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"fake provider on port {self.port} did not stop within {STOP_DEADLINE}s")


@pytest.fixture
def fake_provider() -> Iterator[RunningFakeProvider]:
    """A fresh fake provider on its own port for one test."""
    server = FakeProviderServer()
    running = server.start()
    try:
        yield running
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _fake_provider_session_server() -> Iterator[RunningFakeProvider]:
    server = FakeProviderServer()
    running = server.start()
    try:
        yield running
    finally:
        server.stop()


@pytest.fixture
def fake_provider_session(_fake_provider_session_server: RunningFakeProvider) -> Iterator[RunningFakeProvider]:
    """One fake provider for the whole session, reset (log, controls, holds) around each test."""
    _fake_provider_session_server.reset()
    try:
        yield _fake_provider_session_server
    finally:
        _fake_provider_session_server.reset()
