"""CacheMiddleware: the engine in front of a Starlette/FastAPI (or any ASGI) app.

A thin adapter, the ASGI twin of `AsyncCachingTransport`: the same steps
(route, prepare, lookup, hit / only-if-cached / miss with a recorder), the
same headers and the same keys. Per-request state lives in a `_Responder`
built inside `__call__`, as in starlette's GZipMiddleware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .engine import (
    UPSTREAM_HEADER,
    Cache,
    CacheRequest,
    Passthrough,
    Recorder,
    Rejection,
    ResponseParts,
    read_headers,
)
from .prompt_caching import SideCall
from .providers import Route

__all__ = ["CacheMiddleware"]


class CacheMiddleware:
    """`app.add_middleware(CacheMiddleware, cache=cache)` or `CacheMiddleware(app, cache=cache)`."""

    def __init__(
        self,
        app: ASGIApp,
        cache: Cache,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        mount_prefix: str = "",
        upstream: str | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        self.include = tuple(include) if include is not None else None
        self.exclude = tuple(exclude)
        self.mount_prefix = mount_prefix.rstrip("/")
        self.upstream = upstream.rstrip("/") if upstream else None
        """The base URL of the provider this app stands for, if it forwards to one: keys then name it the
        way the transports do (so both share entries), and two upstreams never share one."""
        self.max_body_bytes = max_body_bytes if max_body_bytes is not None else cache.settings.max_body_bytes

    def _route_path(self, path: str) -> str | None:
        """The path the provider adapters see, or None when this middleware leaves it alone."""
        prefix = self.mount_prefix
        if prefix:
            if path != prefix and not path.startswith(prefix + "/"):
                return None
            path = path[len(prefix) :] or "/"
        if self.include is not None and not any(fnmatchcase(path, p) for p in self.include):
            return None
        if any(fnmatchcase(path, p) for p in self.exclude):
            return None
        return path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = self._route_path(scope["path"])
        route = None if path is None else self.cache.route(scope["method"], path)
        if route is None or path is None:
            await self.app(scope, receive, send)
            return
        await _Responder(self, route, path).run(scope, receive, send)


class _Responder:
    """State of one intercepted request."""

    def __init__(self, middleware: CacheMiddleware, route: Route, path: str) -> None:
        self.app = middleware.app
        self.cache = middleware.cache
        self.mount_prefix = middleware.mount_prefix
        self.limit = middleware.max_body_bytes
        self.upstream = middleware.upstream
        self.route = route
        self.path = path
        self.recorder: Recorder | None = None
        self.finished = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        early: Message | None = None
        while more:
            message = await receive()
            if message["type"] != "http.request":
                early = message  # a disconnect before the body ended: the app sees it
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.limit:
                passthrough = self.cache.oversized(self.route, self.path)
                await self.app(scope, _replay(b"".join(chunks), more, receive, early), _bypassing(send, passthrough))
                return
        body = b"".join(chunks)
        if early is not None:
            await self.app(scope, _replay(body, False, receive, early), send)
            return
        cache = self.cache
        plain, repeated = read_headers(scope["headers"])
        if self.upstream is not None:
            plain[UPSTREAM_HEADER] = self.upstream + self.path
        query = scope.get("query_string", b"").decode("latin-1")
        prepared = cache.prepare_route(
            self.route, scope["method"], self.path, query, plain, body, repeated=repeated, asgi_scope=scope
        )
        if isinstance(prepared, Passthrough):
            await self.app(scope, _replay(body, False, receive, None), _bypassing(send, prepared))
            return
        if isinstance(prepared, Rejection):
            await _answer(send, prepared.response())
            return
        await self._cached(scope, receive, send, body, prepared)

    async def _cached(self, scope: Scope, receive: Receive, send: Send, body: bytes, prepared: CacheRequest) -> None:
        cache = self.cache
        lookup = await cache.lookup(prepared)
        answer = cache.answer(prepared, lookup)
        if answer is not None:
            await _answer(send, answer)
            return
        recorder = self.recorder = cache.recorder(prepared, lookup)
        try:
            forward = await cache.upstream_body(prepared, self._side_call(scope))
            held = await self._forward(scope, receive, send, body, forward, prepared)
            if held:  # the provider refused the request: was it what the cache added?
                error = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
                retry = await cache.retry_body(prepared, held[0]["status"], error)
                if retry is not None:
                    await self._forward(scope, receive, send, body, retry, None)
                else:
                    sending = self._send(send)
                    for message in held:
                        await sending(message)
        except BaseException:
            await recorder.abort()
            raise
        finally:
            if not self.finished:
                await recorder.abort()

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, forward: bytes, hold: CacheRequest | None
    ) -> list[Message]:
        """Run the app on `forward`. With `hold`, an answer that may refuse what the engine added to the
        request (`Cache.may_retry`) is held back and returned instead of sent, so the engine can decide
        whether to have the request sent again without it."""
        if forward is not body:
            scope = dict(scope)
            raw = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            raw.append((b"content-length", str(len(forward)).encode("latin-1")))
            scope["headers"] = raw
        sending = self._send(send)
        held: list[Message] = []
        if hold is not None and self.cache.holds_refusals(hold):
            may_retry = self.cache.may_retry

            async def holding(message: Message) -> None:
                if held or (message["type"] == "http.response.start" and may_retry(hold, message["status"])):
                    held.append(message)
                    return
                await sending(message)

            await self.app(scope, self._receive(forward, receive), holding)
        else:
            await self.app(scope, self._receive(forward, receive), sending)
        return held

    def _side_call(self, scope: Scope) -> SideCall:
        """The engine's side calls (Gemini cachedContents) as POSTs through the same app."""

        async def call(path: str, query: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
            full = self.mount_prefix + path
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            raw.append((b"content-length", str(len(body)).encode("latin-1")))
            side = {
                **scope,
                "state": dict(scope.get("state") or {}),
                "method": "POST",
                "path": full,
                "raw_path": full.encode("utf-8"),
                "query_string": query.encode("latin-1"),
                "headers": raw,
            }
            status = 0
            chunks: list[bytes] = []
            sent = False

            async def receive() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()  # no disconnect: the app finishes its answer, then this is cancelled
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            await self.app(side, receive, send)
            return status, b"".join(chunks)

        return call

    def _receive(self, body: bytes, receive: Receive) -> Receive:
        inner = _replay(body, False, receive, None)

        async def watched() -> Message:
            message = await inner()
            if message["type"] == "http.disconnect" and not self.finished and self.recorder is not None:
                await self.recorder.abort()
                self.finished = True
            return message

        return watched

    def _send(self, send: Send) -> Send:
        recorder = self.recorder
        assert recorder is not None

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
                recorder.start(message["status"], Headers(raw=message.get("headers", [])))
                headers = recorder.forward_headers(raw)
                await send({**message, "headers": _raw(headers)})
                return
            if kind != "http.response.body" or self.finished:
                await send(message)
                return
            forward = recorder.feed(message.get("body", b""))
            more = message.get("more_body", False)
            if not more:
                forward += recorder.flush()
            try:
                await send({"type": "http.response.body", "body": forward, "more_body": more})
            except BaseException:
                self.finished = True
                await recorder.abort()
                raise
            if not more:
                self.finished = True
                await recorder.finish(exhausted=True)

        return sending


def _replay(body: bytes, more: bool, receive: Receive, early: Message | None) -> Receive:
    """A receive that hands over `body` once, then delegates to the original `receive`."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]
    if early is not None:
        pending.append(early)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _bypassing(send: Send, passthrough: Passthrough) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            name, value = passthrough.header
            MutableHeaders(scope=message)[name] = value
        await send(message)

    return sending


def _raw(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _answer(send: Send, parts: ResponseParts) -> None:
    await send({"type": "http.response.start", "status": parts.status, "headers": parts.headers})
    await send({"type": "http.response.body", "body": parts.body, "more_body": False})
