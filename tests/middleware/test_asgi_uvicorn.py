"""CacheMiddleware in a user's FastAPI app under a real uvicorn server: client disconnects are only
real on a socket. The app has a `BaseHTTPMiddleware` of the user's own around the cache, the kind
known to change streaming and disconnect semantics."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llm_cache.middleware import Cache, CacheMiddleware
from llm_cache.middleware._background import BackgroundServer
from tests.support.stores import CountingStore

CHAT = "/v1/chat/completions"
DEADLINE = 10.0
BODY = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


class Seen:
    """What the app saw, across the server's thread and the test's."""

    def __init__(self) -> None:
        self.reads: list[Any] = []
        self.read = threading.Event()
        self.stream_ended = threading.Event()
        self.calls = 0
        self.hold_first_stream = False  # the first stream waits after its first events until cancelled
        self.stream_cancelled = False

    async def body(self, request: Request) -> bytes:
        """The request's body as the app reads it, noted (a `ClientDisconnect` is noted, then raised)."""
        try:
            raw = await request.body()
        except ClientDisconnect as left:
            self.reads.append(left)
            raise
        finally:
            self.read.set()
        self.reads.append(raw)
        return raw


def user_app(cache: Cache, seen: Seen) -> FastAPI:
    app = FastAPI()

    @app.post(CHAT)
    async def chat(request: Request) -> Response:
        seen.calls += 1
        body, n = json.loads(await seen.body(request)), seen.calls
        base = {"id": f"c{n}", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
            return JSONResponse({**base, "object": "chat.completion", "choices": [choice]})

        async def events() -> AsyncIterator[bytes]:
            try:
                for i, piece in enumerate(["The capital ", "is ", "Paris."] * 50):
                    delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                    yield f"data: {json.dumps({**base, 'choices': [delta]})}\n\n".encode()
                    await asyncio.sleep(0)
                    if i == 2 and n == 1 and seen.hold_first_stream:
                        # Only the client's disconnect may end this stream (it is cancelled); the deadline
                        # bounds the wait, and its timeout fails the test (no cancellation seen).
                        await asyncio.wait_for(asyncio.Event().wait(), DEADLINE)
                stop = {"index": 0, "delta": {}, "finish_reason": "stop"}
                yield f"data: {json.dumps({**base, 'choices': [stop]})}\n\n".encode()
                yield b"data: [DONE]\n\n"
            except asyncio.CancelledError:
                seen.stream_cancelled = True
                raise
            finally:
                seen.stream_ended.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def users_own(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        return await call_next(request)

    app.add_middleware(CacheMiddleware, cache=cache)
    app.add_middleware(BaseHTTPMiddleware, dispatch=users_own)
    return app


def head(body: bytes) -> bytes:
    return (
        f"POST {CHAT} HTTP/1.1\r\nhost: app\r\nauthorization: Bearer sk-alice\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()


def settled(cache: Cache) -> None:
    """Wait (bounded) until no call is in flight: the server's loop finishes on its own time."""
    end = time.monotonic() + DEADLINE
    while cache._flights._flights or cache.stats.stored + cache.stats.not_stored < cache.stats.misses:
        assert time.monotonic() < end, cache.stats
        time.sleep(0.01)


def test_an_upload_cut_on_a_real_socket_reaches_the_app_as_a_disconnect_and_stores_nothing() -> None:
    cache, seen = Cache(), Seen()
    body = json.dumps(BODY).encode()
    with BackgroundServer(user_app(cache, seen)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as client:
            client.sendall(head(body) + body[: len(body) // 2])
        assert seen.read.wait(DEADLINE)
        assert len(seen.reads) == 1 and isinstance(seen.reads[0], ClientDisconnect)
        settled(cache)
        assert cache.stats.stored == 0
        with httpx2.Client(base_url=server.url, timeout=DEADLINE) as http:
            whole = http.post(CHAT, json=BODY, headers={"authorization": "Bearer sk-alice"})
        assert whole.status_code == 200 and whole.headers["x-cache"] == "MISS"


def test_a_stream_dropped_on_a_real_socket_is_not_stored_and_the_next_call_is_whole() -> None:
    cache, seen = Cache(), Seen()
    seen.hold_first_stream = True  # else the whole stream may pass before the server sees the close
    body = json.dumps({**BODY, "stream": True}).encode()
    with BackgroundServer(user_app(cache, seen)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as client:
            client.sendall(head(body) + body)
            assert b"data:" in client.recv(4096) or b"data:" in client.recv(4096)  # the stream began
        assert seen.stream_ended.wait(DEADLINE + 5)
        assert seen.stream_cancelled  # ended by the disconnect, not by the hold's deadline
        settled(cache)
        assert cache.stats.stored == 0
        with httpx2.Client(base_url=server.url, timeout=DEADLINE) as http:
            key = {"authorization": "Bearer sk-alice"}
            first = http.post(CHAT, json={**BODY, "stream": True}, headers=key)
            second = http.post(CHAT, json={**BODY, "stream": True}, headers=key)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert second.text == first.text and first.text.endswith("data: [DONE]\n\n")


def test_a_waiter_coalesced_on_a_leader_whose_client_drops_its_stream_gets_a_whole_answer() -> None:
    """The leader's client reads the first event and hangs up while the app still streams; the
    identical request parked on that call is answered whole (the recording was aborted and it went
    upstream itself, or the answer completed first), and only a whole answer is ever stored."""
    store = CountingStore()
    cache = Cache(store=store)
    entered, rest = threading.Event(), threading.Event()
    calls: list[int] = []

    async def chat(request: Request) -> Response:
        await request.body()
        calls.append(len(calls) + 1)
        n = len(calls)
        base = {"id": f"c{n}", "object": "chat.completion.chunk", "created": 1, "model": "m"}

        async def events() -> AsyncIterator[bytes]:
            delta = {"index": 0, "delta": {"content": "Paris."}, "finish_reason": None}
            yield f"data: {json.dumps({**base, 'choices': [delta]})}\n\n".encode()
            if n == 1:
                entered.set()
                await asyncio.to_thread(rest.wait, DEADLINE)  # until the leader's client has gone
            stop = {"index": 0, "delta": {}, "finish_reason": "stop"}
            yield f"data: {json.dumps({**base, 'choices': [stop]})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = FastAPI()
    app.add_api_route(CHAT, chat, methods=["POST"])
    app.add_middleware(CacheMiddleware, cache=cache)
    body = json.dumps({**BODY, "stream": True}).encode()
    try:
        with BackgroundServer(app) as server:
            leader = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
            leader.sendall(head(body) + body)
            assert entered.wait(DEADLINE)
            result: list[httpx2.Response] = []
            key = {"authorization": "Bearer sk-alice"}

            def wait_on_the_leader() -> None:
                with httpx2.Client(base_url=server.url, timeout=DEADLINE) as http:
                    result.append(http.post(CHAT, content=body, headers={**key, "content-type": "application/json"}))

            waiter = threading.Thread(target=wait_on_the_leader)
            waiter.start()
            end = time.monotonic() + DEADLINE
            while store.reads < 2:  # the waiter has read the store: it is parked on the leader's call
                assert time.monotonic() < end
                time.sleep(0.01)
            assert b"data:" in leader.recv(4096)
            leader.close()
            rest.set()
            waiter.join(DEADLINE)
            assert not waiter.is_alive() and result[0].status_code == 200
            assert result[0].text.endswith("data: [DONE]\n\n") and '"finish_reason": "stop"' in result[0].text
            settled(cache)
            with httpx2.Client(base_url=server.url, timeout=DEADLINE) as http:
                again = http.post(CHAT, content=body, headers={**key, "content-type": "application/json"})
            assert again.headers["x-cache"] == "HIT" and again.text.endswith("data: [DONE]\n\n")
    finally:
        rest.set()
