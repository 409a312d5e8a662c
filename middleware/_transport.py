"""httpx transports that put the cache in front of any SDK that accepts an HTTPX client.

The same classes work inside `httpx2` clients (the current LLM SDKs) and legacy `httpx`
clients: each request is answered with the request and response types of the library that sent it.
Both are drivers of the engine: they convert httpx types to the engine's and back, and perform the
actions of `Cache.plan`. Everything but the I/O is shared (`_Exchange`); the sync transport runs the
engine's coroutines on a private background loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import ModuleType, TracebackType
from typing import Any

import httpx
import httpx2

from .._wire import default_transport, library_of, upstream_name
from ._engine import Cache, drive, drive_sync
from ._headers import decoded, encoded, for_decoded_body, read_headers, with_length
from ._loaded_response import loaded_response
from ._loop_thread import LoopThread
from ._recorder import Recorder
from ._relay import Relaying, Work
from ._types import (
    UPSTREAM_HEADER,
    Action,
    Answer,
    CacheRequest,
    Forward,
    Prepared,
    Relay,
    Reply,
    ResponseParts,
    Run,
    Untouched,
)
from .providers import Route


def _response(lib: ModuleType, parts: ResponseParts) -> Any:
    """A response the cache gives itself, built already read (`_loaded_response.py`)."""
    return loaded_response(lib, parts.status, parts.headers, parts.body)


async def _read_async(response: Any) -> bytes:
    """The whole body of an answer we consume ourselves, its connection released."""
    try:
        return await response.aread()
    finally:
        await response.aclose()


def _read_sync(response: Any) -> bytes:
    """`_read_async` for a blocking transport."""
    try:
        return response.read()
    finally:
        response.close()


def _prepare(cache: Cache, route: Route, request: Any, body: bytes) -> Prepared:
    headers, repeated = read_headers(request.headers.raw)  # a dict: httpx header lookups are costly
    headers[UPSTREAM_HEADER] = upstream_name(request.url)  # the gateway names its upstream the same way
    query = request.url.query
    query = query.decode("ascii", "replace") if isinstance(query, bytes) else query
    return cache.prepare_route(route, request.method, request.url.path, query, headers, body, repeated=repeated)


class _Exchange:
    """One intercepted request while a transport runs the engine for it: the type conversions."""

    def __init__(self, lib: ModuleType, request: Any, body: bytes) -> None:
        self.lib = lib
        self.request = request
        self.body = body
        self.response: Any = None
        """The upstream answer of the last `Forward` (after a `ReadBody`, readable again)."""

    def outgoing(self, forward: bytes) -> Any:
        """The request to send upstream: as it came, unless the engine rewrote its body. Headers are
        copied as bytes: decoded text would be re-encoded as ASCII, and a latin-1 value would not survive."""
        request = self.request
        if forward is self.body:
            return request
        headers = with_length(request.headers.raw, None)
        return self.lib.Request(
            request.method, request.url, headers=headers, content=forward, extensions=request.extensions
        )

    def side_request(self, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Any:
        """A POST to another path of the same upstream (the engine's side calls)."""
        url = self.request.url.copy_with(path=path, query=query.encode("ascii") if query else None)
        raw = encoded(headers.items())  # as `read_headers` read them
        return self.lib.Request("POST", url, headers=raw, content=body, extensions=self.request.extensions)

    def reply(self, response: Any, body: bytes = b"") -> Reply:
        self.response = response
        return Reply(response.status_code, response.headers, decoded(response.headers.raw), body)

    def read_reply(self, content: bytes) -> Reply:
        """The answer read (and decoded) for a look at its error, readable once more."""
        response = self.response
        headers = for_decoded_body(response.headers.raw)
        again = self.lib.Response(
            response.status_code, headers=headers, content=content, extensions=response.extensions
        )
        return self.reply(again, content)

    def ended(self, end: Answer | Relay, recording: Callable[[Any, Recorder], Any]) -> Any:
        """The caller's response for the plan's end: the engine's own answer, or the upstream answer
        relayed through `recording(stream, recorder)`, the library's stream type."""
        if isinstance(end, Answer):
            return _response(self.lib, end.parts)
        stream = recording(self.response.stream, end.recorder)
        return self.lib.Response(
            end.status, headers=encoded(end.headers), stream=stream, extensions=self.response.extensions
        )


def _bypassed(response: Any, end: Untouched) -> Any:
    name, value = end.header
    response.headers[name] = value
    return response


class _RecordingAsyncStream:
    def __init__(self, stream: Any, recorder: Recorder) -> None:
        self._stream = stream
        self._relay = Relaying(recorder)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        relay = self._relay
        try:
            async for chunk in self._stream:
                forward, store = relay.chunk(chunk)
                if store is not None:
                    await store
                if forward:
                    yield forward
        except BaseException as error:
            await _done(relay.abandoned(error))
            raise
        forward = relay.last()
        if forward:
            yield forward
        await relay.finished()

    async def aclose(self) -> None:
        try:
            await self._relay.closed()
        finally:
            await self._stream.aclose()


class _RecordingSyncStream:
    def __init__(self, stream: Any, recorder: Recorder, loop: LoopThread) -> None:
        self._stream = stream
        self._relay = Relaying(recorder)
        self._loop = loop

    def __iter__(self) -> Iterator[bytes]:
        relay, run = self._relay, self._loop.run
        try:
            for chunk in self._stream:
                forward, store = relay.chunk(chunk)
                if store is not None:
                    run(store)
                if forward:
                    yield forward
        except BaseException as error:
            run(_done(relay.abandoned(error)))
            raise
        forward = relay.last()
        if forward:
            yield forward
        run(relay.finished())

    def close(self) -> None:
        try:
            self._loop.run(self._relay.closed())
        finally:
            self._stream.close()


async def _done(work: Work | None) -> None:
    if work is not None:
        await work


# The stream wrappers must be instances of the calling library's stream base classes.
_ASYNC_STREAMS = {
    lib.__name__: type("RecordingAsyncStream", (_RecordingAsyncStream, lib.AsyncByteStream), {})
    for lib in (httpx, httpx2)
}
_SYNC_STREAMS = {
    lib.__name__: type("RecordingSyncStream", (_RecordingSyncStream, lib.SyncByteStream), {}) for lib in (httpx, httpx2)
}


class _Intercepting:
    """What both transports keep: the cache, and where misses go (default: the calling library's own
    transport, created on first use)."""

    def __init__(self, cache: Cache, inner: Any = None) -> None:
        self.cache = cache
        self._inner = inner
        self._defaults: dict[tuple[str, bool], Any] = {}

    def _inner_for(self, lib: ModuleType, is_async: bool) -> Any:
        return self._inner if self._inner is not None else default_transport(self._defaults, lib, is_async)


class AsyncCachingTransport(_Intercepting, httpx2.AsyncBaseTransport, httpx.AsyncBaseTransport):
    """`httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))`; also inside `httpx.AsyncClient`.

    `inner` is where misses go (default: the calling library's `AsyncHTTPTransport`).
    """

    async def handle_async_request(self, request: Any) -> Any:
        lib = library_of(request)
        inner = self._inner_for(lib, True)
        cache = self.cache
        route = cache.route(request.method, request.url.path)
        if route is None:
            return await inner.handle_async_request(request)
        body = await request.aread()
        prepared = _prepare(cache, route, request, body)
        if type(prepared) is CacheRequest:
            parts = await cache.hit(prepared, "client")
            if parts is not None:
                return _response(lib, parts)
        exchange = _Exchange(lib, request, body)

        async def side_call(path: str, query: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
            answer = await inner.handle_async_request(exchange.side_request(path, query, headers, body))
            return answer.status_code, await _read_async(answer)

        async def perform(action: Action) -> Any:
            if isinstance(action, Run):
                return await action.work
            if isinstance(action, Forward):
                return exchange.reply(await inner.handle_async_request(exchange.outgoing(action.body)))
            return exchange.read_reply(await _read_async(exchange.response))

        end = await drive(cache.plan(prepared, side_call), perform)
        if isinstance(end, Untouched):
            return _bypassed(await inner.handle_async_request(request), end)
        return exchange.ended(end, _ASYNC_STREAMS[lib.__name__])

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
        for transport in self._defaults.values():
            await transport.aclose()

    async def __aenter__(self) -> AsyncCachingTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class CachingTransport(_Intercepting, httpx2.BaseTransport, httpx.BaseTransport):
    """`httpx2.Client(transport=CachingTransport(cache=cache))`; also inside `httpx.Client`.

    The engine is async; this transport runs its coroutines on a private background loop,
    so sync and async clients share one cache, one store and one set of rules.
    """

    def __init__(self, cache: Cache, inner: Any = None) -> None:
        super().__init__(cache, inner)
        self._loop = LoopThread()

    def handle_request(self, request: Any) -> Any:
        lib = library_of(request)
        inner = self._inner_for(lib, False)
        cache = self.cache
        route = cache.route(request.method, request.url.path)
        if route is None:
            return inner.handle_request(request)
        body = request.read()
        prepared = _prepare(cache, route, request, body)
        if type(prepared) is CacheRequest:
            parts = self._loop.run(cache.hit(prepared, "client"))  # the span begins here, in the caller's context
            if parts is not None:
                return _response(lib, parts)
        exchange = _Exchange(lib, request, body)

        def blocking_call(path: str, query: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
            answer = inner.handle_request(exchange.side_request(path, query, headers, body))
            return answer.status_code, _read_sync(answer)

        async def side_call(path: str, query: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
            return await asyncio.to_thread(blocking_call, path, query, headers, body)

        def perform(action: Action) -> Any:
            if isinstance(action, Run):
                return self._loop.run(action.work)
            if isinstance(action, Forward):
                return exchange.reply(inner.handle_request(exchange.outgoing(action.body)))
            return exchange.read_reply(_read_sync(exchange.response))

        end = drive_sync(cache.plan(prepared, side_call), perform)
        if isinstance(end, Untouched):
            return _bypassed(inner.handle_request(request), end)
        stream = _SYNC_STREAMS[lib.__name__]
        return exchange.ended(end, lambda upstream, recorder: stream(upstream, recorder, self._loop))

    def close(self) -> None:
        try:
            if self._inner is not None:
                self._inner.close()
            for transport in self._defaults.values():
                transport.close()
        finally:
            self._loop.close()

    def __enter__(self) -> CachingTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()
