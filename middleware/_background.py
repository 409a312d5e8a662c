"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread (the demo and tests use it)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any, Literal

import uvicorn


class BackgroundServer:
    """`with BackgroundServer(app) as server: httpx2.get(server.url + "/health")`.

    The socket is bound before the thread starts, so the port cannot be taken in between; start and
    stop are bounded by `deadline` seconds. `http` is the HTTP/1.1 parser, named so that installing
    httptools (which uvicorn's `auto` would pick) does not change what a test runs under.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        deadline: float = 10.0,
        lifespan: Literal["auto", "on", "off"] = "on",
        http: Literal["h11", "httptools"] = "h11",
    ) -> None:
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
        # TCP, and without it a small response written in two parts waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self.deadline = deadline
        config = uvicorn.Config(
            app, http=http, log_level="warning", lifespan=lifespan, access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as error:  # reported by start()
            self._error = error

    def start(self) -> BackgroundServer:
        self._thread.start()
        limit = time.monotonic() + self.deadline
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start: {self._error!r}")
            if time.monotonic() > limit:
                self.stop()
                raise RuntimeError(f"server on port {self.port} did not start within {self.deadline}s")
            self._thread.join(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(self.deadline)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"server on port {self.port} did not stop within {self.deadline}s")

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
