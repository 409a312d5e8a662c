"""The relay of a miss's answer through its `Recorder`: the one rule every driver follows, and the
form it takes in each driver's world.

`Relaying` is the rule, sans-IO: which bytes of the upstream answer go on and which of the
Recorder's coroutines to await when. The Recorder stores the answer as soon as its terminal event is
seen (an SDK may stop reading there and never close the stream), else at the end of the body, and
withdraws it if what the stream sends after that event may not follow it; a failure stores nothing,
and a caller that closes the stream early stores only what the endpoint calls complete. `AsgiRelay`
(an ASGI app's answer, pushed message by message) and the httpx byte streams (`ASYNC_STREAMS`,
`SYNC_STREAMS`: pulled chunk by chunk; the sync one runs the Recorder's coroutines on the engine's
loop) only do the I/O around it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import httpx
import httpx2
from starlette.types import Message, Send

from ._headers import encoded
from ._loop_thread import LoopClosed, LoopThread
from ._recorder import DECODED_SLICE, Recorder
from ._types import Relay

Work = Coroutine[Any, Any, Any]


class Relaying:
    """One answer on its way to the caller."""

    __slots__ = ("recorder", "ended")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.ended = False
        """The body has ended, or the relay was given up: no chunk goes through the Recorder again."""

    def pieces(self, data: bytes) -> list[bytes]:
        """`data` in the pieces to relay it in: whole, or for a stream decoded for the caller in
        slices of `DECODED_SLICE` (a compressed chunk may decode to a thousand times its size)."""
        if len(data) <= DECODED_SLICE or not self.recorder.decodes:
            return [data]
        return [data[i : i + DECODED_SLICE] for i in range(0, len(data), DECODED_SLICE)]

    def chunk(self, data: bytes) -> tuple[bytes, Work | None]:
        """The bytes to pass on for one upstream chunk, and what to await before they go: the store (the
        terminal event was recorded), or its withdrawal (what followed the event may not follow it)."""
        recorder = self.recorder
        forward = recorder.feed(data)
        return forward, recorder.after_chunk()

    def last(self, data: bytes = b"") -> tuple[bytes, Work | None]:
        """The bytes to pass on for the body's last chunk, the held-back tail included, and what to
        await before they go (as for `chunk`); then await `finished()`."""
        recorder = self.recorder
        forward = recorder.feed(data) + recorder.flush()
        return forward, recorder.after_chunk()

    def finished(self) -> Work:
        """The caller has read the whole body: store it."""
        self.ended = True
        return self.recorder.finish(exhausted=True)

    def closed(self) -> Work:
        """The caller closed the stream: store it only if it is complete."""
        self.ended = True
        return self.recorder.finish(exhausted=False)

    def abandoned(self, error: BaseException | None = None) -> Work | None:
        """The upstream failed (`error`) or the caller left before the body ended: store nothing."""
        if self.ended:
            return None
        self.ended = True
        return self.recorder.abort(error)


# -- the relay in each driver's world -------------------------------------------------------------


class AsgiRelay:
    """An ASGI app's answer on its way to the client (`CacheMiddleware`), message by message."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.relaying: Relaying | None = None
        self.left = False
        """The client has left: the answer will not be read to its end."""

    async def start(self, end: Relay, start: Message) -> None:
        """Send the answer's start with the plan's headers; its body messages go through `message`."""
        self.relaying = Relaying(end.recorder)
        await self.send({**start, "headers": encoded(end.headers, lower=True)})
        if self.left:
            await self.settle()

    async def message(self, message: Message) -> None:
        relaying = self.relaying
        assert relaying is not None
        if message["type"] != "http.response.body" or relaying.ended:
            await self.send(message)
            return
        more = message.get("more_body", False)
        *pieces, body = relaying.pieces(message.get("body", b""))
        for piece in pieces:
            await self._relay(relaying, piece, True)
        await self._relay(relaying, body, more)
        if not more:
            await relaying.finished()

    async def _relay(self, relaying: Relaying, body: bytes, more: bool) -> None:
        forward, work = relaying.chunk(body) if more else relaying.last(body)
        if work is not None:
            await work
        await self.send({"type": "http.response.body", "body": forward, "more_body": more})

    async def leave(self) -> None:
        self.left = True
        await self.settle()

    async def settle(self) -> None:
        """The answer will not be read to its end (the app stopped, the client left): store nothing."""
        if self.relaying is not None:
            await _done(self.relaying.abandoned())


class _AsyncStream:
    """An upstream answer's body on its way to an async httpx client (`AsyncCachingTransport`)."""

    def __init__(self, stream: Any, recorder: Recorder) -> None:
        self._stream = stream
        self._relay = Relaying(recorder)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        relay = self._relay
        try:
            async for chunk in self._stream:
                for piece in relay.pieces(chunk):
                    forward, store = relay.chunk(piece)
                    if store is not None:
                        await store
                    if forward:
                        yield forward
        except BaseException as error:
            await _done(relay.abandoned(error))
            raise
        forward, work = relay.last()
        if work is not None:
            await work
        if forward:
            yield forward
        await relay.finished()

    async def aclose(self) -> None:
        try:
            await self._relay.closed()
        finally:
            await self._stream.aclose()


class _SyncStream:
    """`_AsyncStream` for a blocking client (`CachingTransport`): the Recorder's coroutines run on the
    engine's loop."""

    def __init__(self, stream: Any, recorder: Recorder, loop: LoopThread) -> None:
        self._stream = stream
        self._relay = Relaying(recorder)
        self._loop = loop

    def __iter__(self) -> Iterator[bytes]:
        relay, run = self._relay, self._loop.run
        try:
            for chunk in self._stream:
                for piece in relay.pieces(chunk):
                    forward, store = relay.chunk(piece)
                    if store is not None:
                        run(store)
                    if forward:
                        yield forward
        except BaseException as error:  # (GeneratorExit too: finalised by the collector, maybe on the loop)
            with contextlib.suppress(LoopClosed):  # the transport closed first: no store, no waiter left
                self._loop.settle(_done(relay.abandoned(error)))
            raise
        forward, work = relay.last()
        if work is not None:
            run(work)
        if forward:
            yield forward
        run(relay.finished())

    def close(self) -> None:
        try:
            with contextlib.suppress(LoopClosed):  # the transport closed first: no store, no waiter left
                self._loop.settle(self._relay.closed())
        finally:
            self._stream.close()


async def _done(work: Work | None) -> None:
    if work is not None:
        await work


# A stream must be an instance of the calling library's stream base class.
ASYNC_STREAMS = {
    lib.__name__: type("RecordingAsyncStream", (_AsyncStream, lib.AsyncByteStream), {}) for lib in (httpx, httpx2)
}
"""The async httpx relay, by the name of the library that sent the request."""
SYNC_STREAMS = {
    lib.__name__: type("RecordingSyncStream", (_SyncStream, lib.SyncByteStream), {}) for lib in (httpx, httpx2)
}
"""The blocking httpx relay, by the name of the library that sent the request."""


__all__ = ["ASYNC_STREAMS", "SYNC_STREAMS", "AsgiRelay", "Relaying", "Work"]
