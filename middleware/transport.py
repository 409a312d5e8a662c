"""httpx transports that put the cache in front of any SDK that accepts an HTTPX client.

The same classes work inside `httpx2` clients (the openai and anthropic SDKs)
and legacy `httpx` clients: each request is answered with the request and
response types of the library that sent it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from types import ModuleType, TracebackType
from typing import Any, ClassVar

import httpx
import httpx2

from .engine import (
    UPSTREAM_HEADER,
    Cache,
    CacheRequest,
    Passthrough,
    Recorder,
    Rejection,
    ResponseParts,
    read_headers,
    upstream_name,
)
from .loaded_response import loaded_response
from .loop_thread import LoopThread
from .providers import Route

_LIBRARIES: dict[type, ModuleType] = {httpx2.Request: httpx2, httpx.Request: httpx}


def _library(request: Any) -> ModuleType:
    """`httpx2` or `httpx`, whichever built this request."""
    lib = _LIBRARIES.get(type(request))
    return lib if lib is not None else sys.modules[type(request).__module__.partition(".")[0]]


def _query(request: Any) -> str:
    query = request.url.query
    return query.decode("ascii", "replace") if isinstance(query, bytes) else query


def _with_body(lib: Any, request: Any, body: bytes) -> Any:
    """A copy of `request` with another body (the `cache` control field removed). Headers are copied as
    bytes: decoded text would be re-encoded as ASCII, and a latin-1 or UTF-8 value would not survive."""
    headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
    return lib.Request(request.method, request.url, headers=headers, content=body, extensions=request.extensions)


def _answer(lib: Any, parts: ResponseParts) -> Any:
    return loaded_response(lib, parts.status, parts.headers, parts.body)


def _prepare(cache: Cache, route: Route, request: Any, body: bytes) -> CacheRequest | Passthrough | Rejection:
    headers, repeated = read_headers(request.headers.raw)  # a dict: httpx header lookups are costly
    headers[UPSTREAM_HEADER] = upstream_name(request.url)  # the gateway names its upstream the same way
    return cache.prepare_route(
        route, request.method, request.url.path, _query(request), headers, body, repeated=repeated
    )


def _bypassed(response: Any, passthrough: Passthrough) -> Any:
    name, value = passthrough.header
    response.headers[name] = value
    return response


def _outgoing(lib: Any, request: Any, body: bytes, forward: bytes) -> Any:
    """The request to send upstream: as it came, unless the engine rewrote its body."""
    return request if forward is body else _with_body(lib, request, forward)


def _read_again(lib: Any, response: Any, content: bytes) -> Any:
    """A response already read (and decoded) for a look at its error, readable once more."""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _ENCODING_HEADERS]
    return lib.Response(response.status_code, headers=headers, content=content, extensions=response.extensions)


_ENCODING_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def _side_request(lib: Any, request: Any, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Any:
    """A POST to another path of the same upstream (the engine's side calls, e.g. Gemini cachedContents)."""
    url = request.url.copy_with(path=path, query=query.encode("ascii") if query else None)
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]  # as `read_headers` read them
    return lib.Request("POST", url, headers=raw, content=body, extensions=request.extensions)


def _relayed(lib: Any, response: Any, recorder: Recorder, stream: Any) -> Any:
    """The upstream response for the caller; its body reaches the recorder through `stream`."""
    recorder.start(response.status_code, response.headers)
    upstream = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in recorder.forward_headers(upstream)]
    return lib.Response(response.status_code, headers=headers, stream=stream, extensions=response.extensions)


class _RecordingAsyncStream:
    def __init__(self, stream: Any, recorder: Recorder) -> None:
        self._stream = stream
        self._recorder = recorder

    async def __aiter__(self) -> AsyncIterator[bytes]:
        recorder = self._recorder
        try:
            async for chunk in self._stream:
                forward = recorder.feed(chunk)
                if recorder.complete:
                    await recorder.finish(exhausted=True)
                if forward:
                    yield forward
        except BaseException:
            await recorder.abort()
            raise
        tail = recorder.flush()
        if tail:
            yield tail
        await recorder.finish(exhausted=True)

    async def aclose(self) -> None:
        try:
            await self._recorder.finish(exhausted=False)
        finally:
            await self._stream.aclose()


class _RecordingSyncStream:
    def __init__(self, stream: Any, recorder: Recorder, loop: LoopThread) -> None:
        self._stream = stream
        self._recorder = recorder
        self._loop = loop

    def __iter__(self) -> Iterator[bytes]:
        recorder = self._recorder
        try:
            for chunk in self._stream:
                forward = recorder.feed(chunk)
                if recorder.complete:
                    self._loop.run(recorder.finish(exhausted=True))
                if forward:
                    yield forward
        except BaseException:
            self._loop.run(recorder.abort())
            raise
        tail = recorder.flush()
        if tail:
            yield tail
        self._loop.run(recorder.finish(exhausted=True))

    def close(self) -> None:
        try:
            self._loop.run(self._recorder.finish(exhausted=False))
        finally:
            self._stream.close()


# The stream wrappers must be instances of the calling library's stream base classes.
_ASYNC_STREAMS = {
    lib.__name__: type("RecordingAsyncStream", (_RecordingAsyncStream, lib.AsyncByteStream), {})
    for lib in (httpx, httpx2)
}
_SYNC_STREAMS = {
    lib.__name__: type("RecordingSyncStream", (_RecordingSyncStream, lib.SyncByteStream), {}) for lib in (httpx, httpx2)
}


class _Intercepting:
    """What both transports keep: the cache, and where misses go."""

    _default_transport: ClassVar[str]
    """The calling library's own transport class, used when no `inner` is given."""

    def __init__(self, cache: Cache, inner: Any = None) -> None:
        self.cache = cache
        self._inner = inner
        self._defaults: dict[str, Any] = {}

    def _inner_for(self, lib: ModuleType) -> Any:
        if self._inner is not None:
            return self._inner
        transport = self._defaults.get(lib.__name__)
        if transport is None:
            transport = self._defaults[lib.__name__] = getattr(lib, self._default_transport)()
        return transport


class AsyncCachingTransport(_Intercepting):
    """`httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))`; also inside `httpx.AsyncClient`.

    `inner` is where misses go (default: the calling library's `AsyncHTTPTransport`).
    """

    _default_transport = "AsyncHTTPTransport"

    async def handle_async_request(self, request: Any) -> Any:
        lib = _library(request)
        inner = self._inner_for(lib)
        cache = self.cache
        route = cache.route(request.method, request.url.path)
        if route is None:
            return await inner.handle_async_request(request)
        body = await request.aread()
        prepared = _prepare(cache, route, request, body)
        if isinstance(prepared, Passthrough):
            return _bypassed(await inner.handle_async_request(request), prepared)
        if isinstance(prepared, Rejection):
            return _answer(lib, prepared.response())
        cache.begin(prepared, "client")
        lookup = await cache.lookup(prepared)
        answer = cache.answer(prepared, lookup)
        if answer is not None:
            return _answer(lib, answer)
        recorder = cache.recorder(prepared, lookup)

        async def side_call(path: str, query: str, headers: Mapping[str, str], payload: bytes) -> tuple[int, bytes]:
            answer = await inner.handle_async_request(_side_request(lib, request, path, query, headers, payload))
            try:
                return answer.status_code, await answer.aread()
            finally:
                await answer.aclose()

        try:
            forward = await cache.upstream_body(prepared, side_call)
            response = await inner.handle_async_request(_outgoing(lib, request, body, forward))
            if cache.may_retry(prepared, response.status_code):
                error = await response.aread()
                await response.aclose()
                retry = await cache.retry_body(prepared, response.status_code, error)
                if retry is not None:
                    response = await inner.handle_async_request(_outgoing(lib, request, body, retry))
                else:
                    response = _read_again(lib, response, error)
        except BaseException:
            await recorder.abort()
            raise
        return _relayed(lib, response, recorder, _ASYNC_STREAMS[lib.__name__](response.stream, recorder))

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


class CachingTransport(_Intercepting):
    """`httpx2.Client(transport=CachingTransport(cache=cache))`; also inside `httpx.Client`.

    The engine is async; this transport drives it on a private background loop,
    so sync and async clients share one cache, one store and one set of rules.
    """

    _default_transport = "HTTPTransport"

    def __init__(self, cache: Cache, inner: Any = None) -> None:
        super().__init__(cache, inner)
        self._loop = LoopThread()

    def handle_request(self, request: Any) -> Any:
        lib = _library(request)
        inner = self._inner_for(lib)
        cache = self.cache
        route = cache.route(request.method, request.url.path)
        if route is None:
            return inner.handle_request(request)
        body = request.read()
        prepared = _prepare(cache, route, request, body)
        if isinstance(prepared, Passthrough):
            return _bypassed(inner.handle_request(request), prepared)
        if isinstance(prepared, Rejection):
            return _answer(lib, prepared.response())
        cache.begin(prepared, "client")  # here, so the span's parent is the caller's current span
        lookup = self._loop.run(cache.lookup(prepared))
        answer = cache.answer(prepared, lookup)
        if answer is not None:
            return _answer(lib, answer)
        recorder = cache.recorder(prepared, lookup)

        def blocking_call(path: str, query: str, headers: Mapping[str, str], payload: bytes) -> tuple[int, bytes]:
            answer = inner.handle_request(_side_request(lib, request, path, query, headers, payload))
            try:
                return answer.status_code, answer.read()
            finally:
                answer.close()

        async def side_call(path: str, query: str, headers: Mapping[str, str], payload: bytes) -> tuple[int, bytes]:
            return await asyncio.to_thread(blocking_call, path, query, headers, payload)

        try:
            # Hops to the engine's loop only when there is something to rewrite or to undo.
            rewrites = cache.rewrites_upstream
            forward = self._loop.run(cache.upstream_body(prepared, side_call)) if rewrites else prepared.forward_body
            response = inner.handle_request(_outgoing(lib, request, body, forward))
            if cache.may_retry(prepared, response.status_code):
                error = response.read()
                response.close()
                retry = self._loop.run(cache.retry_body(prepared, response.status_code, error))
                if retry is not None:
                    response = inner.handle_request(_outgoing(lib, request, body, retry))
                else:
                    response = _read_again(lib, response, error)
        except BaseException:
            self._loop.run(recorder.abort())
            raise
        return _relayed(lib, response, recorder, _SYNC_STREAMS[lib.__name__](response.stream, recorder, self._loop))

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
