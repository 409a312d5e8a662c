"""CacheMiddleware: the engine in front of a Starlette/FastAPI (or any ASGI) app.

A driver of the engine, the ASGI twin of `AsyncCachingTransport`: it converts ASGI messages to the
engine's types and back, answers hits, and performs the actions of `Cache.plan` (its `Forward` runs
the app). Per-request state lives in a `_Responder` built inside `__call__`, as in starlette's
GZipMiddleware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._engine import Cache, Plan, abandon, advance
from ._headers import decoded, encoded, read_headers, with_length
from ._paths import MountedPaths
from ._prompt_caching import SideCall
from ._relay import Relaying
from ._types import (
    UPSTREAM_HEADER,
    Abandoned,
    Answer,
    CacheRequest,
    Forward,
    ReadBody,
    Relay,
    Reply,
    ResponseParts,
    Run,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = self.paths.route_path(scope["path"])
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
        self.relay: Relaying | None = None
        """Set once the plan relays the app's answer."""
        self.plan: Plan | None = None
        """Set while the plan waits for the head of the app's answer to a `Forward`."""
        self.abandoned = False
        """The client left before that head: the plan has ended, the app's answer goes by untouched."""
        self.disconnected = False
        self.held: list[Message] = []
        """The app's answer, read whole because the plan asked for it (`ReadBody`)."""

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
            if self.cache.too_large(size, self.limit):
                header = self.cache.oversized(self.route, self.path).header
                await self.app(scope, _replay(b"".join(chunks), more, receive, early), _bypassing(send, header))
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
        if type(prepared) is CacheRequest:
            parts = await cache.hit(prepared)
            if parts is not None:
                await _answer(send, parts)
                return
        try:
            await self._drive(cache.plan(prepared, self._side_call(scope)), scope, receive, send, body)
        except Abandoned:
            pass
        finally:
            await self._settle()

    async def _drive(self, plan: Plan, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """Perform the plan's actions until it ends; an action that fails is thrown into it."""
        reply: Any = None
        error: BaseException | None = None
        while True:
            step = advance(plan, reply, error)
            reply, error = None, None
            if isinstance(step, Answer):
                await _answer(send, step.parts)
                return
            if isinstance(step, Untouched):
                await self.app(scope, _replay(body, False, receive, None), _bypassing(send, step.header))
                return
            if isinstance(step, Relay):  # the answer held for `ReadBody`, relayed as it is
                await self._start(step, self.held[0], send)
                for message in self.held[1:]:
                    await self._relay(message, send)
                return
            try:
                if isinstance(step, Run):
                    reply = await step.work
                elif isinstance(step, Forward):
                    reply = await self._forward(plan, scope, receive, send, body, step.body)
                    if reply is None:  # the plan ended in relaying the app's answer, now sent
                        return
            except BaseException as failure:
                error = failure

    async def _forward(
        self, plan: Plan, scope: Scope, receive: Receive, send: Send, body: bytes, forward: bytes
    ) -> Reply | None:
        """Run the app on `forward`. The head of its answer goes to the plan, which ends in relaying it
        (None is returned once the app is done), or asks for it whole (`ReadBody`: it is held back,
        and returned as the reply)."""
        if forward is not body:
            scope = {**scope, "headers": with_length(scope["headers"], len(forward))}
        self.held = []
        self.plan = plan
        head: Reply | None = None
        holding = False

        async def sending(message: Message) -> None:
            nonlocal head, holding
            if self.abandoned:
                await send(message)
            elif holding:
                self.held.append(message)
            elif head is not None:
                await self._relay(message, send)
            else:
                self.plan = None
                raw = message.get("headers", [])
                head = Reply(message["status"], Headers(raw=raw), decoded(raw))
                step = advance(plan, head, None)
                if isinstance(step, ReadBody):
                    holding = True
                    self.held.append(message)
                else:
                    assert isinstance(step, Relay)
                    await self._start(step, message, send)

        await self.app(scope, self._receive(forward, receive), sending)
        self.plan = None
        if self.abandoned:
            return None
        if head is None:
            raise Abandoned  # the app returned without an answer
        if not holding:
            return None
        error = b"".join(m.get("body", b"") for m in self.held if m["type"] == "http.response.body")
        return Reply(head.status, head.headers, head.raw, error)

    async def _start(self, relay: Relay, message: Message, send: Send) -> None:
        self.relay = Relaying(relay.recorder)
        await send({**message, "headers": encoded(relay.headers, lower=True)})
        if self.disconnected:
            await self._settle()

    async def _relay(self, message: Message, send: Send) -> None:
        """One message of the app's answer after its head: its body through the recorder."""
        relay = self.relay
        assert relay is not None
        if message["type"] != "http.response.body" or relay.ended:
            await send(message)
            return
        more = message.get("more_body", False)
        body = message.get("body", b"")
        if more:
            forward, store = relay.chunk(body)
            if store is not None:
                await store
        else:
            forward = relay.last(body)
        await send({"type": "http.response.body", "body": forward, "more_body": more})
        if not more:
            await relay.finished()

    async def _settle(self) -> None:
        """The answer will not be read to its end (the app stopped, the client left): store nothing."""
        if self.relay is not None:
            work = self.relay.abandoned()
            if work is not None:
                await work

    def _side_call(self, scope: Scope) -> SideCall:
        """The engine's side calls to the upstream, as POSTs through the same app."""

        async def call(path: str, query: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
            full = self.mount_prefix + path
            raw = with_length(encoded(headers.items(), lower=True), len(body))
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
            if message["type"] == "http.disconnect" and not self.disconnected:
                self.disconnected = True
                plan = self.plan
                if plan is not None:  # before the head of the app's answer: end the plan now
                    self.plan = None
                    self.abandoned = True
                    await abandon(plan)
                else:
                    await self._settle()
            return message

        return watched


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
