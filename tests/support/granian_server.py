"""Serve an app made by a factory in `tests.support.granian_apps` with granian (Rust, hyper) over
HTTP/2 cleartext in a child process; start and stop bounded by a deadline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.support.servers import free_port, stop_process

START_DEADLINE = 20.0
ROOT = Path(__file__).resolve().parents[2]


def granian_binary() -> str:
    found = shutil.which("granian", path=str(Path(sys.executable).parent)) or shutil.which("granian")
    if found is None:
        pytest.skip("granian is not installed (pip install -e '.[dev]')")
    return found


class GranianServer:
    """`with GranianServer("gateway", UPSTREAM=url) as server: ...`: the factory `name` of
    `tests.support.granian_apps`, which reads `env` (names prefixed with `H2_TEST_`)."""

    def __init__(self, factory: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        variables = {**os.environ, "PYTHONPATH": str(ROOT), **{f"H2_TEST_{k}": v for k, v in env.items()}}
        args = [granian_binary(), "--interface", "asgi", "--http", "2", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workers", "1", "--no-ws", "--log-level", "warning", "--factory"]
        self._args, self._env = [*args, f"tests.support.granian_apps:{factory}"], variables
        self._process: subprocess.Popen[bytes] | None = None

    def client(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, http1=False, http2=True, timeout=START_DEADLINE, **options)

    def start(self) -> GranianServer:
        self._process = subprocess.Popen(self._args, env=self._env, cwd=ROOT)
        limit = time.monotonic() + START_DEADLINE
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"granian exited with {self._process.returncode}")
            try:
                with httpx.Client(http1=False, http2=True, timeout=1.0) as http:
                    http.get(f"{self.url}/health")
                return self
            except httpx.TransportError:
                if time.monotonic() > limit:
                    self.stop()
                    raise RuntimeError(f"granian on port {self.port} did not start within {START_DEADLINE}s") from None
                time.sleep(0.05)  # polling a child process's port: nothing to wait on in between

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)

    def __enter__(self) -> GranianServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
