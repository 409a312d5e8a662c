"""A tiny fake LLM provider: a Starlette app served by uvicorn on a free 127.0.0.1 port in a thread.

Each server counts requests, records them, and follows a *script*: a queue of faults consumed one per
request (then it answers normally). Faults: ``status(code, headers, body)``, ``"hang"`` (no answer
until the server stops: the client's timeout fires), ``"context_length"`` (per family),
``"content_policy"``, ``"midstream"`` (a stream that breaks after its first event), ``"prestream"``
(200 headers, then the connection drops before any body byte), ``"stall"`` (the request is held,
``arrived`` is set, until ``gate`` is set) and ``"stall_stream"`` (200 headers, then the first body
byte waits for ``gate``), ``("gap", seconds)`` (a stream that goes quiet that long after its first
event, as a model thinking does).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CONTEXT_ERRORS = {
    "openai": (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, "
                "your messages resulted in 9001 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    "anthropic": (
        400,
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
        },
    ),
    "gemini": (
        400,
        {
            "error": {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            }
        },
    ),
}
POLICY_ERROR = (
    400,
    {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure "
            "OpenAI's content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        }
    },
)


class _Server(uvicorn.Server):
    """uvicorn's server, signalling a threading.Event once it listens (no polling)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeProvider:
    name: str
    family: str = "openai"
    script: deque[Any] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)  # a request reached a stall
    gate: threading.Event = field(default_factory=threading.Event)  # set: stalled requests go on

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return len(self.seen)

    def fail(self, *faults: Any) -> FakeProvider:
        self.script.extend(faults)
        return self

    def reset(self) -> None:
        self.script.clear()
        self.seen.clear()
        self.gate.set()  # let anything still stalled finish
        self.arrived, self.gate = threading.Event(), threading.Event()

    async def _stall(self) -> None:
        self.arrived.set()
        gate = self.gate
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)

    # ------------------------------------------------------------------ the app

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            body = {}
        body = body if isinstance(body, dict) else {}
        self.seen.append(Seen(request.url.path, request.url.query, dict(request.headers), body))
        fault = self.script.popleft() if self.script else None
        stream = body.get("stream") is True or "streamGenerateContent" in request.url.path
        if isinstance(fault, tuple) and fault[0] == "status":
            _, code, headers, payload = fault
            return JSONResponse(
                payload or {"error": {"message": f"fake {code}", "type": "fake"}},
                status_code=code,
                headers=headers or {},
            )
        if fault == "hang":
            await asyncio.sleep(30)  # the client's short timeout fires long before this
        if fault == "stall":
            await self._stall()
        if fault == "context_length":
            code, payload = CONTEXT_ERRORS[self.family]
            return JSONResponse(payload, status_code=code)
        if fault == "content_policy":
            return JSONResponse(POLICY_ERROR[1], status_code=POLICY_ERROR[0])
        model = body.get("model", "")
        if stream:
            return StreamingResponse(self._events(model, fault), media_type="text/event-stream")
        if request.url.path.endswith("/messages"):
            return JSONResponse(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": f"hello from {self.name}"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 5, "output_tokens": 3},
                }
            )
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"hello from {self.name}"},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )

    async def _events(self, model: str, fault: Any) -> Any:
        if fault == "prestream":
            raise RuntimeError("fake: connection dropped before the first byte")
        if fault == "stall_stream":
            await self._stall()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            doc = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(doc)}\n\n".encode()

        yield chunk({"role": "assistant", "content": f"hello from {self.name}"})
        if isinstance(fault, tuple) and fault[0] == "gap":
            await asyncio.sleep(fault[1])  # the silence under test, not a synchronisation
        if fault == "midstream":
            raise RuntimeError("fake: connection dropped mid-stream")
        yield chunk({"content": "!"})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    # ------------------------------------------------------------------ lifecycle

    def start(self, deadline: float = 10.0) -> FakeProvider:
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1)
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        self._sock = sock
        if not self._server.ready.wait(deadline) or not self._server.started:
            raise RuntimeError(f"fake provider {self.name} did not start within {deadline}s")
        return self

    def stop(self, deadline: float = 10.0) -> None:
        self.gate.set()
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(deadline)
        self._sock.close()
