"""Small ASGI apps that imitate an LLM provider, for `test_asgi.py`.

The same endpoints are mounted in a FastAPI app and in a plain Starlette app.
Each app counts the calls it answers and records the bodies it received.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER = ["The capital ", "of France ", "is Paris."]


class Calls:
    """What the app saw: call counts per path and the raw request bodies."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.gate: asyncio.Event | None = None


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _chat_json(n: int, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1700000000 + n,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(ANSWER)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


async def _chat_stream(n: int, model: str, fail: bool = False) -> AsyncIterator[bytes]:
    base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 1700000000 + n, "model": model}
    yield _sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    )
    for i, piece in enumerate(ANSWER):
        if fail and i == 1:
            raise RuntimeError("provider died mid-stream")
        await asyncio.sleep(0)
        yield _sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    yield b"data: [DONE]\n\n"


def _message_json(n: int, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "".join(ANSWER)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }


async def _message_stream(n: int, model: str) -> AsyncIterator[bytes]:
    message = {
        **_message_json(n, model),
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": message}, "message_start")
    yield _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    for piece in ANSWER:
        yield _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            "content_block_delta",
        )
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 12, "output_tokens": 7},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def _endpoints(calls: Calls) -> list[tuple[str, Any]]:
    async def chat(request: Request) -> Response:
        raw = await request.body()
        calls.bodies.append(raw)
        calls.count["chat"] += 1
        n = calls.count["chat"]
        if calls.gate is not None:
            await calls.gate.wait()
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": {"message": "app says: bad JSON"}}, status_code=422)
        model = body.get("model", "gpt-4o-mini")
        if body.get("stream"):
            return StreamingResponse(_chat_stream(n, model), media_type="text/event-stream")
        return JSONResponse(_chat_json(n, model))

    async def messages(request: Request) -> Response:
        body = await request.json()
        calls.count["messages"] += 1
        n = calls.count["messages"]
        model = body.get("model", "claude")
        if body.get("stream"):
            return StreamingResponse(_message_stream(n, model), media_type="text/event-stream")
        return JSONResponse(_message_json(n, model))

    async def broken_stream(request: Request) -> Response:
        body = await request.json()
        calls.count["broken"] += 1
        return StreamingResponse(
            _chat_stream(calls.count["broken"], body["model"], fail=True), media_type="text/event-stream"
        )

    async def server_error(request: Request) -> Response:
        await request.body()
        calls.count["error"] += 1
        return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=500)

    async def health(request: Request) -> Response:
        calls.count["health"] += 1
        return PlainTextResponse("ok")

    return [
        ("/v1/chat/completions", chat),
        ("/llm/v1/chat/completions", chat),
        ("/v1/messages", messages),
        ("/broken/v1/chat/completions", broken_stream),
        ("/failing/v1/chat/completions", server_error),
        ("/health", health),
    ]


def starlette_app(calls: Calls) -> Starlette:
    routes = [
        Route(path, endpoint, methods=["POST"] if path != "/health" else ["GET"])
        for path, endpoint in _endpoints(calls)
    ]
    return Starlette(routes=routes)


def fastapi_app(calls: Calls) -> FastAPI:
    app = FastAPI()
    for path, endpoint in _endpoints(calls):
        app.add_api_route(path, endpoint, methods=["POST"] if path != "/health" else ["GET"])
    return app
