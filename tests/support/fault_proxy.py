"""A TCP proxy on 127.0.0.1 that holds a server's replies until the test lets them go.

Requests pass at once. While `hold(after)` is on, the server's bytes pass up to `after` bytes of the
next reply and are then kept (`hold(on=b"NX")`: from the first request holding those bytes on). `held`
is set once the server has answered and its bytes are kept, so a test can cancel the client
mid-command with the reply in flight, then `release()` it into the client's socket (where a client
that reuses the connection would read it as the next command's). It runs on the test's event loop,
so every wait is the test's own (bounded) await.
"""

from __future__ import annotations

import asyncio
import contextlib


class HoldingProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.held = asyncio.Event()
        self.connections = 0
        self._after: int | None = None
        self._on: tuple[bytes, int, int] | None = None
        self._kept: list[tuple[asyncio.StreamWriter, bytes]] = []
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    def hold(self, after: int = 0, on: bytes | None = None, skip: int = 0) -> None:
        """Keep the next reply's bytes past the first `after` (every connection), from now on; or, with
        `on`, from the request holding `on` (past `skip` such requests)."""
        self.held.clear()
        if on is None:
            self._after = after
        else:
            self._on = (on, skip, after)

    def release(self) -> None:
        """Send the kept bytes on to the client and stop holding."""
        self._after = None
        self._on = None
        kept, self._kept = self._kept, []
        for writer, data in kept:
            if not writer.is_closing():
                writer.write(data)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        up = asyncio.create_task(self._pump(client_reader, server_writer, replies=False))
        down = asyncio.create_task(self._pump(server_reader, client_writer, replies=True))
        self._pumps.update((up, down))
        up.add_done_callback(self._pumps.discard)
        down.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool) -> None:
        try:
            while data := await reader.read(65536):
                if replies and self._after is not None:
                    data = self._keep(writer, data)
                elif not replies and self._on is not None:
                    self._arm(data)
                if data:
                    writer.write(data)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def _arm(self, request: bytes) -> None:
        assert self._on is not None
        on, skip, after = self._on
        if on in request:
            if skip:
                self._on = (on, skip - 1, after)
            else:
                self._on, self._after = None, after

    def _keep(self, writer: asyncio.StreamWriter, data: bytes) -> bytes:
        """What of `data` passes now; the rest is kept for `release`."""
        assert self._after is not None
        passing, kept = data[: self._after], data[self._after :]
        self._after -= len(passing)
        if kept:
            self._kept.append((writer, kept))
            self.held.set()
        return passing
