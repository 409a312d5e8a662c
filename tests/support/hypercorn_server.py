"""Serve an ASGI app with hypercorn (HTTP/1.1 and HTTP/2, cleartext or TLS with ALPN) in a background
thread, as users run FastAPI; start and stop bounded by a deadline."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

START_DEADLINE = 10.0


class HypercornServer:
    """`with HypercornServer(app) as server: ...`; `tls=(certfile, keyfile)` serves HTTPS with ALPN h2.

    The socket is bound before the thread starts (no port race); `start()` returns once a request
    has been answered, and an h2c client may then open a connection with prior knowledge.
    """

    def __init__(self, app: Any, tls: tuple[Path, Path] | None = None, verify: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = verify or False
        config = Config()
        config.bind = [f"fd://{self._sock.detach()}"]  # hypercorn owns the socket from here
        config.graceful_timeout = 2
        config.accesslog = None
        config.loglevel = "WARNING"
        if tls:
            config.certfile, config.keyfile = str(tls[0]), str(tls[1])
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"hypercorn:{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            await serve(self.app, self._config, shutdown_trigger=self._stopping.wait)  # type: ignore[arg-type]

        try:
            asyncio.run(main())
        except BaseException as error:  # reported by start()
            self._error = error

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An HTTP/2-only client (h2c prior knowledge, or ALPN over TLS) for this server."""
        return httpx.AsyncClient(
            base_url=self.url, http1=False, http2=True, verify=self.verify, timeout=START_DEADLINE, **options
        )

    def start(self) -> HypercornServer:
        self._thread.start()
        limit = time.monotonic() + START_DEADLINE
        while True:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"hypercorn on port {self.port} failed to start: {self._error!r}")
            try:
                with httpx.Client(verify=self.verify, timeout=1.0) as http:
                    http.get(f"{self.url}/health")
                return self
            except httpx.TransportError:
                if time.monotonic() > limit:
                    self.stop()
                    raise RuntimeError(
                        f"hypercorn on port {self.port} did not start within {START_DEADLINE}s"
                    ) from None
                self._thread.join(0.02)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(START_DEADLINE)
        if self._thread.is_alive():
            raise RuntimeError(f"hypercorn on port {self.port} did not stop within {START_DEADLINE}s")

    def __enter__(self) -> HypercornServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
