"""httpx transports that put the cache in front of any SDK that accepts an HTTPX client.

The same classes work inside `httpx2` clients (the current LLM SDKs) and legacy `httpx`
clients: each request is answered with the request and response types of the library that sent it.
Both are drivers of the engine: they convert httpx types to the engine's and back, and perform the
actions of `Cache.plan`. Everything but the I/O is shared (`_Exchange`); the sync transport runs the
engine's coroutines on a private background loop.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import httpx
import httpx2

from .._wire import DefaultTransports, default_transport, library_of, upstream_name
from ._engine import Cache, drive, drive_sync
from ._headers import decoded, encoded, for_decoded_body, read_headers, with_length
from ._loaded_response import loaded_response
from ._loop_thread import LoopThread
from ._recorder import Recorder
from ._relay import ASYNC_STREAMS, SYNC_STREAMS
from ._types import (
    Action,
    Answer,
    CacheRequest,
    Forward,
    Prepared,
    ReadBody,
    Relay,
    Reply,
    ResponseParts,
    Run,
    SideCall,
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


class _Exchange:
    """One intercepted request while a transport runs the engine for it: the type conversions, shared
    by both worlds (`_perform_async` and `_perform_sync` do only the I/O)."""

    def __init__(self, lib: ModuleType, request: Any, body: bytes) -> None:
        self.lib = lib
        self.request = request
        self.body = body
        self.response: Any = None
        """The upstream answer of the last `Forward` (after a `ReadBody`, readable again)."""

    def outgoing(self, action: Forward | ReadBody | SideCall) -> Any:
        """The request to send upstream for `action` (None: read the last answer, `ReadBody`)."""
        request = self.request
        if isinstance(action, ReadBody):
            return None
        if isinstance(action, SideCall):  # a POST to another path of the same upstream, bounded by its timeout
            url = request.url.copy_with(path=action.path, query=action.query.encode("ascii") if action.query else None)
            bounded = {**request.extensions, "timeout": dict.fromkeys(_TIMEOUTS, action.timeout)}
            raw = encoded(action.headers.items())  # as `read_headers` read them
            return self.lib.Request("POST", url, headers=raw, content=action.body, extensions=bounded)
        if action.body is self.body:
            return request  # as it came, unless the engine rewrote its body
        # Headers are copied as bytes: decoded text would be re-encoded as ASCII, losing latin-1 values.
        headers = with_length(request.headers.raw, None)
        return self.lib.Request(
            request.method, request.url, headers=headers, content=action.body, extensions=request.extensions
        )

    @staticmethod
    def reads(action: Forward | ReadBody | SideCall) -> bool:
        """Whether the answer to `action` is read whole (a `Forward`'s is relayed as it streams)."""
        return not isinstance(action, Forward)

    def reply(self, action: Forward | ReadBody | SideCall, response: Any, body: bytes) -> Reply:
        """The plan's reply to `action`: the answer's head (and `body`, when it was read)."""
        if isinstance(action, ReadBody):  # the answer read (and decoded) for a look at its error, readable again
            headers = for_decoded_body(response.headers.raw)
            response = self.lib.Response(
                response.status_code, headers=headers, content=body, extensions=response.extensions
            )
        if not isinstance(action, SideCall):
            self.response = response
        return Reply(response.status_code, response.headers, decoded(response.headers.raw), body)

    def ended(self, end: Answer | Relay, recording: Callable[[Any, Recorder], Any]) -> Any:
        """The caller's response for the plan's end: the engine's own answer, or the upstream answer
        relayed through `recording(stream, recorder)`, the library's stream type."""
        if isinstance(end, Answer):
            return _response(self.lib, end.parts)
        stream = recording(self.response.stream, end.recorder)
        return self.lib.Response(
            end.status, headers=encoded(end.headers), stream=stream, extensions=self.response.extensions
        )


_TIMEOUTS = ("connect", "read", "write", "pool")


async def _perform_async(exchange: _Exchange, inner: Any, action: Action) -> Any:
    """One action of the plan, with the async I/O."""
    if isinstance(action, Run):
        return await action.work
    request = exchange.outgoing(action)
    response = exchange.response if request is None else await inner.handle_async_request(request)
    return exchange.reply(action, response, await _read_async(response) if exchange.reads(action) else b"")


def _perform_sync(exchange: _Exchange, inner: Any, loop: LoopThread, action: Action) -> Any:
    """`_perform_async` with blocking I/O; the engine's coroutines run on its loop."""
    if isinstance(action, Run):
        return loop.run(action.work)
    request = exchange.outgoing(action)
    response = exchange.response if request is None else inner.handle_request(request)
    return exchange.reply(action, response, _read_sync(response) if exchange.reads(action) else b"")


def _bypassed(response: Any, end: Untouched) -> Any:
    name, value = end.header
    response.headers[name] = value
    return response


class _Intercepting:
    """What both transports keep: the cache, and where misses go (default: the calling library's own
    transport, created on first use)."""

    def __init__(self, cache: Cache, inner: Any = None) -> None:
        self.cache = cache
        self._inner = inner
        self._defaults: DefaultTransports = {}
        self._header_names: dict[bytes, str] = {}
        """Request header names as `read_headers` decoded them."""

    def _inner_for(self, lib: ModuleType, is_async: bool) -> Any:
        return self._inner if self._inner is not None else default_transport(self._defaults, lib, is_async)

    def _prepare(self, route: Route, request: Any, body: bytes) -> Prepared:
        # a dict: httpx header lookups are costly
        headers, repeated = read_headers(request.headers.raw, self._header_names)
        query = request.url.query
        query = query.decode("ascii", "replace") if isinstance(query, bytes) else query
        # the upstream is the URL this transport sends to (the gateway names its own the same way)
        upstream = upstream_name(request.url)
        return self.cache.prepare_route(
            route, request.method, request.url.path, query, headers, body, repeated, None, upstream
        )


class AsyncCachingTransport(_Intercepting, httpx2.AsyncBaseTransport, httpx.AsyncBaseTransport):
    """`httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))`; also inside `httpx.AsyncClient`.

    `inner` is where misses go (default: the calling library's `AsyncHTTPTransport`).
    """

    async def handle_async_request(self, request: Any) -> Any:
        lib = library_of(request)
        cache = self.cache
        route = cache.route(request.method, request.url.path)
        if route is None:
            return await self._inner_for(lib, True).handle_async_request(request)
        body = await request.aread()
        prepared = self._prepare(route, request, body)
        if type(prepared) is CacheRequest:
            parts = await cache.hit(prepared, "client")
            if parts is not None:
                return _response(lib, parts)
        inner = self._inner_for(lib, True)
        exchange = _Exchange(lib, request, body)
        end = await drive(cache.plan(prepared), lambda action: _perform_async(exchange, inner, action))
        if isinstance(end, Untouched):
            return _bypassed(await inner.handle_async_request(request), end)
        return exchange.ended(end, ASYNC_STREAMS[lib.__name__])

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
        for transport in list(self._defaults.values()):  # a call may add one meanwhile
            await transport.aclose()


class CachingTransport(_Intercepting, httpx2.BaseTransport, httpx.BaseTransport):
    """`httpx2.Client(transport=CachingTransport(cache=cache))`; also inside `httpx.Client`.

    The engine is async; this transport runs its coroutines on a private background loop,
    so sync and async clients share one cache, one store and one set of rules. `close()` stops
    that loop and fails the calls still on it; a later call runs on a new one, as httpx's own
    transports open a new pool after `close()` (one transport may outlive the clients that close it).
    """

    def __init__(self, cache: Cache, inner: Any = None) -> None:
        super().__init__(cache, inner)
        self._loop = LoopThread()

    def handle_request(self, request: Any) -> Any:
        lib = library_of(request)
        cache, loop = self.cache, self._loop  # the whole call runs on one loop, even if `close()` comes between
        route = cache.route(request.method, request.url.path)
        if route is None:
            return self._inner_for(lib, False).handle_request(request)
        body = request.read()
        prepared = self._prepare(route, request, body)
        if type(prepared) is CacheRequest:
            parts = loop.run(cache.hit(prepared, "client"))  # the span begins here, in the caller's context
            if parts is not None:
                return _response(lib, parts)
        inner = self._inner_for(lib, False)
        exchange = _Exchange(lib, request, body)
        end = drive_sync(cache.plan(prepared), lambda action: _perform_sync(exchange, inner, loop, action))
        if isinstance(end, Untouched):
            return _bypassed(inner.handle_request(request), end)
        stream = SYNC_STREAMS[lib.__name__]
        return exchange.ended(end, lambda upstream, recorder: stream(upstream, recorder, loop))

    def close(self) -> None:
        """The loop first: its calls end at once (`LoopClosed`), so a caller waiting on another's miss
        is never freed, by that miss failing as its connection closes, to send the request upstream
        again through an upstream transport that (as httpx's do) still serves after `close()`."""
        loop, self._loop = self._loop, LoopThread()  # (started by the next call, if one comes)
        try:
            loop.close()
        finally:
            if self._inner is not None:
                self._inner.close()
            for transport in list(self._defaults.values()):  # a thread may add one meanwhile
                transport.close()
