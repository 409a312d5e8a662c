"""CacheMiddleware: the engine in front of a Starlette/FastAPI (or any ASGI) app.

A driver of the engine, the ASGI twin of `AsyncCachingTransport`: it converts ASGI messages to the
engine's types and back, answers hits, and performs the actions of `Cache.plan`. Its `Forward` and
`SideCall` run the app. A `Forward` runs it in the request's own task: the head of the app's answer
goes to the plan from inside the app's `send`, and the plan then has the answer relayed (`Relay`)
or held and read whole (`ReadBody`). A hit is answered in `__call__` itself; the plan's per-request
state lives in a `_Responder` built there only for a request the hit did not answer, as in
starlette's GZipMiddleware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._deadline import within
from ._engine import Cache, Plan, advance
from ._headers import decoded, encoded, read_headers, with_length
from ._paths import MountedPaths, mount_root
from ._relay import AsgiRelay
from ._types import (
    UPSTREAM_SCOPE,
    Abandoned,
    Action,
    Answer,
    CacheRequest,
    End,
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
        self.paths = MountedPaths(mount_prefix, include, exclude)
        self.mount_prefix = self.paths.prefix
        self.upstream = upstream.rstrip("/") if upstream else None
        """The base URL of the provider this app stands for, if it forwards to one: keys then name it the
        way the transports do (so both share entries), and two upstreams never share one."""
        self.max_body_bytes = max_body_bytes if max_body_bytes is not None else cache.settings.max_body_bytes
        self.header_names: dict[bytes, str] = {}
        """Request header names as `read_headers` decoded them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if scope.get("root_path"):  # a mounted app: the path it routes on
            path = path[len(mount_root(path, scope["root_path"])) :] or "/"
        path = self.paths.route_path(path)
        route = None if path is None else self.cache.route(scope["method"], path)
        if route is None or path is None:
            await self.app(scope, receive, send)
            return
        body = await self._read(route, path, scope, receive, send)
        if body is None:
            return
        cache = self.cache
        plain, repeated = read_headers(scope["headers"], self.header_names)
        # the upstream: this middleware's own, or the gateway's in the scope (which no caller can reach)
        upstream = self.upstream + path if self.upstream is not None else scope.get(UPSTREAM_SCOPE)
        query = scope.get("query_string", b"").decode("latin-1")
        # who sent it: the peer as the server gives it (uvicorn reads forwarded-for only from the proxies
        # its `forwarded_allow_ips` trusts), never a header read here
        peer = scope.get("client")
        client = peer[0] if peer else None
        # (positionally: a keyword costs the call a search of the parameter names)
        prepared = cache.prepare_route(
            route, scope["method"], path, query, plain, body, repeated, scope, upstream, client
        )
        if type(prepared) is CacheRequest:
            parts = await cache.hit(prepared)
            if parts is not None:  # a hit: answered before any per-request state is made
                await _answer(send, parts)
                return
        await _Responder(self, route, path, scope, receive, send, body).run(prepared)

    async def _read(self, route: Route, path: str, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body; None when the app was given the request as it came (too large for the
        cache, or the client left while sending it)."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect before the body ended: the app sees it,
                # after the bytes read so far as an unfinished body (never as a whole, truncated request)
                await _untouched(self.app, scope, receive, send, b"".join(chunks), True, message)
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if self.cache.too_large(size, self.max_body_bytes):
                header = self.cache.oversized(route, path).header
                await _untouched(self.app, scope, receive, send, b"".join(chunks), more, None, header)
                return None
        return b"".join(chunks)


class _Responder:
    """State of one intercepted request after `hit` (its plan). What only some plans use starts as a
    class default."""

    plan: Plan | None = None
    waiting = False
    """The plan waits for the head of the app's answer (a client that leaves now ends it)."""
    abandoned = False
    """The client left before that head: the plan has ended, the app's answer goes by untouched."""
    head: Reply | None = None
    held: list[Message] | None = None
    """The app's answer, held to be read whole because the plan asked for it (`ReadBody`)."""

    def __init__(
        self,
        middleware: CacheMiddleware,
        route: Route,
        path: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes = b"",
    ) -> None:
        self.app, self.cache, self.middleware = middleware.app, middleware.cache, middleware
        self.route, self.path = route, path
        self.scope, self.receive, self.send = scope, receive, send
        self.body = body

    async def run(self, prepared: Prepared) -> None:
        """Drive the plan of a request `hit` did not answer."""
        self.plan, self.relay = self.cache.plan(prepared), AsgiRelay(self.send)
        try:
            step: Action | End | None = await self._next()
            while isinstance(step, Forward):
                step = await self._forward(step.body)
            if step is not None:
                await self._end(step)
        except Abandoned:
            pass
        finally:
            await self.relay.settle()

    async def _next(self, reply: Any = None, error: BaseException | None = None) -> Action | End:
        """Advance the plan to the next action that needs the app's answer (`Forward`, `ReadBody`) or
        to its end, performing the others on the way; an action that fails is thrown into the plan."""
        assert self.plan is not None
        step = advance(self.plan, reply, error)
        while isinstance(step, (Run, SideCall)):
            reply, error = None, None
            try:
                reply = await (step.work if isinstance(step, Run) else within(step.timeout, self._side(step)))
            except BaseException as failure:
                error = failure
            step = advance(self.plan, reply, error)
        return step

    async def _forward(self, body: bytes) -> Action | End | None:
        """Run the app on `body`, the plan's `Forward`. The plan's next step once the app is done, or
        None when its answer was relayed (or went by untouched) as it came."""
        scope = self.scope
        if body is not self.body:
            scope = {**scope, "headers": with_length(scope["headers"], len(body))}
        self.head, self.held, self.waiting = None, None, True
        try:
            await self.app(scope, self._watched(_replay(body, False, self.receive, None)), self._answered)
        except BaseException as failure:  # into the plan (if it still runs), which stores nothing and raises it
            self.waiting = False
            step = await self._next(error=failure)
            if isinstance(step, Answer) and self.head is None:  # the plan answers instead (a stale entry)
                return step
            raise
        self.waiting = False
        if self.abandoned:
            return None
        if self.head is None:  # the app returned without an answer
            return await self._next(error=Abandoned())
        return None if self.held is None else await self._next(_reply(self.held))

    async def _answered(self, message: Message) -> None:
        """The app's `send` while it answers a `Forward`: the head goes to the plan, then each message is
        relayed or held, as the plan said."""
        if self.abandoned:
            await self.send(message)
        elif self.head is None:
            self.waiting = False
            self.head = _reply([message])
            step = await self._next(self.head)
            if isinstance(step, ReadBody):
                self.held = [message]
            else:
                assert isinstance(step, Relay)
                await self.relay.start(step, message)
        elif self.held is not None:
            self.held.append(message)
        else:
            await self.relay.message(message)

    async def _end(self, end: Action | End) -> None:
        if isinstance(end, Answer):
            await _answer(self.send, end.parts)
        elif isinstance(end, Untouched):
            await _untouched(self.app, self.scope, self.receive, self.send, self.body, False, None, end.header)
        else:  # the answer held for `ReadBody`, relayed as it is
            assert isinstance(end, Relay) and self.held
            await self.relay.start(end, self.held[0])
            for message in self.held[1:]:
                await self.relay.message(message)

    async def _side(self, call: SideCall) -> Reply:
        """A `SideCall`: a POST of its own through the same app, its answer collected whole."""
        path = (
            mount_root(self.scope["path"], self.scope.get("root_path", "")) + self.middleware.mount_prefix + call.path
        )
        scope = {
            **self.scope,
            "state": dict(self.scope.get("state") or {}),
            "method": "POST",
            "path": path,
            "raw_path": path.encode("utf-8"),
            "query_string": call.query.encode("latin-1"),
            "headers": with_length(encoded(call.headers.items(), lower=True), len(call.body)),
        }
        messages: list[Message] = []

        async def collect(message: Message) -> None:
            messages.append(message)

        await self.app(scope, _replay(call.body, False, _no_disconnect, None), collect)
        return _reply(messages)

    def _watched(self, receive: Receive) -> Receive:
        """`receive`, noticing the client leave: before the head of the app's answer that ends the plan
        (coalesced waiters do not wait for an answer nobody reads), after it the relay."""

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not self.relay.left:
                if self.waiting:
                    self.waiting, self.abandoned = False, True
                    with suppress(Abandoned):
                        await self._next(error=Abandoned())
                await self.relay.leave()
            return message

        return watched


def _reply(messages: list[Message]) -> Reply:
    """The app's answer in these messages (its start, and whatever body they hold), as the plan reads it;
    status 0 if the app answered nothing."""
    start: Message = next((m for m in messages if m["type"] == "http.response.start"), {"status": 0})
    raw: list[tuple[bytes, bytes]] = start.get("headers", [])
    body = b"".join(message.get("body", b"") for message in messages if message["type"] == "http.response.body")
    return Reply(start["status"], Headers(raw=raw), decoded(raw), body)


async def _untouched(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    body: bytes,
    more: bool,
    early: Message | None,
    header: tuple[str, str] | None = None,
) -> None:
    """The app answers the request as it came (the body read so far handed over again); `header`
    is added to its answer."""
    await app(scope, _replay(body, more, receive, early), send if header is None else _bypassing(send, header))


def _replay(body: bytes, more: bool, receive: Receive, early: Message | None) -> Receive:
    """A receive that hands over `body` once (then `early`), then delegates to the original `receive`."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]
    if early is not None:
        pending.append(early)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _no_disconnect() -> Message:
    """A side call's client never leaves: the app finishes its answer, then this is cancelled."""
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


def _bypassing(send: Send, header: tuple[str, str]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            name, value = header
            MutableHeaders(scope=message)[name] = value
        await send(message)

    return sending


async def _answer(send: Send, parts: ResponseParts) -> None:
    await send({"type": "http.response.start", "status": parts.status, "headers": parts.headers})
    await send({"type": "http.response.body", "body": parts.body, "more_body": False})
