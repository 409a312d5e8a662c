"""``RouterTransport``: the router as an httpx2/httpx transport, sync and async in one class.

It works inside both ``httpx2`` and legacy ``httpx`` clients: the library is read off the request's
type, and responses are built with that library's ``Response``. This module is also the I/O driver
for ``Router.plan``: it performs the ``Send`` and ``Sleep`` actions the plan yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import httpx2

from .._wire import DefaultTransports, decoded, default_transport, library_of
from ._core import Final, Passthrough, Router, Send, Sent, Sleep
from ._errors import AnswerTooLarge, FirstEvent

STREAM_FAILED = "router.stream_failed"  # response.extensions flag: the stream broke after its first byte


async def aclose_all(owner: DefaultTransports) -> None:
    for (_, is_async, _), transport in list(owner.items()):
        await transport.aclose() if is_async else transport.close()
    owner.clear()


def close_sync(owner: DefaultTransports) -> None:
    for key, transport in list(owner.items()):
        if not key[1]:
            transport.close()
            del owner[key]


def _too_large(limit: int) -> AnswerTooLarge:
    return AnswerTooLarge(
        f"the deployment's answer is longer than max_read_bytes ({limit} bytes) and cannot be translated"
    )


def _judged(lib: ModuleType, resp: Any, raw: bytes, action: Send, limit: int) -> Sent:
    """A response read whole (`raw`), with its body decoded for the router to judge, never past `limit`
    (an undecodable body is judged on its raw bytes)."""
    body = decoded(resp.headers.get("content-encoding"), raw, limit)
    if body is None and action.whole:
        return Sent(exception=_too_large(limit))
    return Sent(response=_rebuilt(lib, resp, raw), body=body)


def _rebuilt(lib: ModuleType, resp: Any, raw: bytes) -> Any:
    """The same response with its body already read (so it can be inspected and still returned)."""
    return lib.Response(resp.status_code, headers=resp.headers, stream=lib.ByteStream(raw), extensions=resp.extensions)


class _Peeked:
    """A response stream whose first chunk (an event stream's, to the end of its first event) was read by
    the router before it committed to this attempt."""

    def __init__(self, response: Any, first: bytes, rest: Any, original: Any) -> None:
        self.response, self.first, self.rest, self.original = response, first, rest, original
        self.on_close: Callable[[bool], None] | None = None
        self._closed = False

    def _done(self, failed: bool) -> None:
        if failed:
            self.response.extensions[STREAM_FAILED] = True
        if not self._closed:
            self._closed = True
            if self.on_close is not None:
                self.on_close(failed)


class _AsyncPeeked(_Peeked, httpx2.AsyncByteStream, httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self.first:
                yield self.first
            while True:
                try:
                    chunk = await self.rest.__anext__()
                except StopAsyncIteration:
                    break
                yield chunk
        except Exception:
            self._done(True)
            raise
        finally:  # the end, or the caller stopped reading (closed early, cancelled)
            self._done(False)

    async def aclose(self) -> None:
        self._done(False)
        await self.original.aclose()


class _SyncPeeked(_Peeked, httpx2.SyncByteStream, httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        try:
            if self.first:
                yield self.first
            yield from self.rest
        except Exception:
            self._done(True)
            raise
        finally:  # the end, or the caller stopped reading (closed early, interrupted)
            self._done(False)

    def close(self) -> None:
        self._done(False)
        self.original.close()


# ----------------------------------------------------------------------------- async driver


async def _send_async(lib: ModuleType, inner: Any, action: Send | Passthrough, limit: int) -> Sent:
    try:
        resp = await inner.handle_async_request(action.request)
    except Exception as exc:
        return Sent(exception=exc)
    if isinstance(action, Passthrough):
        return Sent(response=resp)
    if resp.status_code < 300 and action.stream:  # a redirect or an error is read whole
        original = resp.stream
        it = original.__aiter__()
        first = FirstEvent(resp.headers)
        try:
            while first.wanted:
                first.add(await it.__anext__())
        except StopAsyncIteration:
            pass
        except Exception as exc:
            await original.aclose()
            return Sent(exception=exc)
        except BaseException:  # cancelled while peeking: give the connection back
            await original.aclose()
            raise
        head = first.head
        resp.stream = _AsyncPeeked(resp, head, it, original)
        return Sent(response=resp, first=first.judged)
    return await _read_async(lib, resp, action, limit)


async def _read_async(lib: ModuleType, resp: Any, action: Send, limit: int) -> Sent:
    """The answer read to be judged: whole when it is at most `limit` bytes; a longer one is judged on
    its status and passed on unread past the first `limit` (or fails the attempt if it is translated)."""
    original = resp.stream
    it = original.__aiter__()
    held: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            held.append(chunk)
            size += len(chunk)
        else:
            if action.whole:
                await original.aclose()
                return Sent(exception=_too_large(limit))
            resp.stream = _AsyncPeeked(resp, b"".join(held), it, original)
            return Sent(response=resp)
    except Exception as exc:
        await original.aclose()
        return Sent(exception=exc)
    except BaseException:  # cancelled while reading: give the connection back
        await original.aclose()
        raise
    await original.aclose()
    return _judged(lib, resp, b"".join(held), action, limit)


async def run_async(router: Router, request: Any, inner: Any = None) -> Any:
    lib = library_of(request)
    inner = inner if inner is not None else default_transport(router._default_transports, lib, True)
    body = await request.aread()
    plan = router.plan(router.prepare(lib, request, body))
    reply: Sent | None = None
    try:
        while True:
            try:
                action = plan.send(reply)
            except StopIteration as stop:
                return _finish(stop.value)
            if isinstance(action, Sleep):
                await router.async_sleep(action.seconds)
                reply = None
            else:
                reply = await _send_async(lib, inner, action, router.settings.max_read_bytes)
    finally:  # a no-op once the plan ended; after a cancellation it releases the attempt's claims now
        plan.close()


# ----------------------------------------------------------------------------- sync driver


def _send_sync(lib: ModuleType, inner: Any, action: Send | Passthrough, limit: int) -> Sent:
    try:
        resp = inner.handle_request(action.request)
    except Exception as exc:
        return Sent(exception=exc)
    if isinstance(action, Passthrough):
        return Sent(response=resp)
    if resp.status_code < 300 and action.stream:  # a redirect or an error is read whole
        original = resp.stream
        it = iter(original)
        first = FirstEvent(resp.headers)
        try:
            while first.wanted:
                first.add(next(it))
        except StopIteration:
            pass
        except Exception as exc:
            original.close()
            return Sent(exception=exc)
        except BaseException:  # interrupted while peeking: give the connection back
            original.close()
            raise
        head = first.head
        resp.stream = _SyncPeeked(resp, head, it, original)
        return Sent(response=resp, first=first.judged)
    return _read_sync(lib, resp, action, limit)


def _read_sync(lib: ModuleType, resp: Any, action: Send, limit: int) -> Sent:
    """`_read_async` for sync clients."""
    original = resp.stream
    it = iter(original)
    held: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            try:
                chunk = next(it)
            except StopIteration:
                break
            held.append(chunk)
            size += len(chunk)
        else:
            if action.whole:
                original.close()
                return Sent(exception=_too_large(limit))
            resp.stream = _SyncPeeked(resp, b"".join(held), it, original)
            return Sent(response=resp)
    except Exception as exc:
        original.close()
        return Sent(exception=exc)
    except BaseException:  # interrupted while reading: give the connection back
        original.close()
        raise
    original.close()
    return _judged(lib, resp, b"".join(held), action, limit)


def run_sync(router: Router, request: Any, inner: Any = None) -> Any:
    lib = library_of(request)
    inner = inner if inner is not None else default_transport(router._default_transports, lib, False)
    body = request.read()
    plan = router.plan(router.prepare(lib, request, body))
    reply: Sent | None = None
    try:
        while True:
            try:
                action = plan.send(reply)
            except StopIteration as stop:
                return _finish(stop.value)
            if isinstance(action, Sleep):
                router.sleep(action.seconds)
                reply = None
            else:
                reply = _send_sync(lib, inner, action, router.settings.max_read_bytes)
    finally:  # a no-op once the plan ended; after an interruption it releases the attempt's claims now
        plan.close()


def _finish(final: Final) -> Any:
    if final.exception is not None:
        raise final.exception
    resp = final.response
    if final.release is not None:
        stream = getattr(resp.stream, "source", resp.stream)  # a translated stream wraps the peeked one
        if isinstance(stream, _Peeked):
            stream.on_close = final.release
        else:
            final.release(False)
    return resp


# ----------------------------------------------------------------------------- the transport


class RouterTransport(httpx2.AsyncBaseTransport, httpx2.BaseTransport, httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Mount a ``Router`` in an httpx2 or httpx client, sync or async.

    ``inner`` is the transport attempts go through (async, and sync too if it has ``handle_request``);
    ``sync_inner`` overrides it for sync clients. Without them the router uses the request library's
    own HTTP transport.
    """

    def __init__(self, router: Router, inner: Any = None, sync_inner: Any = None) -> None:
        self.router = router
        self.inner = inner
        self.sync_inner = (
            sync_inner
            if sync_inner is not None
            else (inner if inner is not None and hasattr(inner, "handle_request") else None)
        )
        # Default transports belong to this transport (closing one client never cuts another's streams).
        self._defaults: DefaultTransports = {}

    async def handle_async_request(self, request: Any) -> Any:
        inner = self.inner if self.inner is not None else default_transport(self._defaults, library_of(request), True)
        return await run_async(self.router, request, inner)

    def handle_request(self, request: Any) -> Any:
        inner = self.sync_inner
        if inner is None:
            inner = default_transport(self._defaults, library_of(request), False)
        return run_sync(self.router, request, inner)

    async def aclose(self) -> None:
        await aclose_all(self._defaults)

    def close(self) -> None:
        close_sync(self._defaults)


#: The same class serves sync clients; the alias reads better at call sites.
SyncRouterTransport = RouterTransport

__all__ = [
    "AnswerTooLarge",
    "RouterTransport",
    "STREAM_FAILED",
    "SyncRouterTransport",
    "library_of",
    "run_async",
    "run_sync",
]
