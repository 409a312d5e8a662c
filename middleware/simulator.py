"""A SIMULATED OpenAI-compatible provider for `llm-cache demo`: no model, no network, canned FAQ answers.

It answers `/v1/chat/completions` (JSON and SSE streams, with token usage) and `/v1/embeddings`
after a latency of 300-800 ms that is a seeded function of the request, so a demo run is
reproducible. Every answer carries a fresh id (`simcmpl-<n>`), which lets the demo tell a replayed
answer from one the simulator produced again. Responses say `"system_fingerprint": "simulator"`
and carry an `x-simulator` header so nobody mistakes them for a real model's output.

Like OpenAI's automatic prompt caching, usage reports `prompt_tokens_details.cached_tokens`: the
tokens of the prompt prefix (every message but the last) when the same model has seen that prefix
before. Unlike OpenAI, there is no 1,024-token minimum, so the short demo prompts show it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SIMULATOR_HEADER = "x-simulator"
_PREFIX_MEMORY = 4096
"""Distinct prompt prefixes the simulator remembers for its prompt-cache report."""
CREATED = 1_700_000_000

FAQ_ANSWERS = {
    "hours": "We are open Monday to Friday from 9:00 to 18:00 and on Saturdays from 10:00 to 14:00.",
    "password": "Open Settings, choose Security, then Reset password; we email you a link valid for 30 minutes.",
    "refund": "Refunds go back to the original payment method within 5 business days of approval.",
    "return": "You can return unused items within 30 days; print the prepaid label from your order page.",
    "shipping": "Standard shipping takes 3-5 business days; express shipping arrives the next business day.",
    "cancel": "You can cancel a subscription any time from Billing; it stays active until the period ends.",
    "invoice": "Invoices are under Billing > History; each one can be downloaded as a PDF.",
    "support": "Our support team answers by chat within 5 minutes and by email within one business day.",
    "warranty": "Every device has a two-year warranty covering manufacturing defects.",
    "delete": "To delete your account, open Settings > Privacy > Delete account and confirm by email.",
}


def _tokens(text: str) -> int:
    """A rough token count (about 4 characters per token), good enough for a simulation."""
    return max(1, (len(text) + 3) // 4)


def _answer_for(prompt: str) -> str:
    lowered = prompt.lower()
    for topic, answer in FAQ_ANSWERS.items():
        if topic in lowered:
            return answer
    return "Thanks for your question. A member of our team will follow up with details."


class SimulatedProvider:
    """The simulator's ASGI app (`.app`), its request counter and its seed."""

    def __init__(self, seed: int = 7, min_latency: float = 0.3, max_latency: float = 0.8) -> None:
        self.seed = seed
        self.min_latency = min_latency
        self.max_latency = max_latency
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._prefixes: set[bytes] = set()
        self.calls = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    def latency(self, body: bytes) -> float:
        """300-800 ms by default, a function of the seed and the request (reproducible)."""
        digest = hashlib.sha256(str(self.seed).encode() + body).digest()
        fraction = int.from_bytes(digest[:4], "big") / 2**32
        return self.min_latency + fraction * (self.max_latency - self.min_latency)

    def _cached_tokens(self, model: str, messages: list[Any]) -> int:
        """Tokens of the prompt prefix if this model saw it before (the prefix is remembered now)."""
        prefix = messages[:-1] if isinstance(messages, list) else []
        if not prefix:
            return 0
        digest = hashlib.sha256(json.dumps([model, prefix], sort_keys=True).encode()).digest()
        with self._lock:
            if digest in self._prefixes:
                return _tokens(" ".join(str(m.get("content", "")) for m in prefix if isinstance(m, dict)))
            if len(self._prefixes) >= _PREFIX_MEMORY:
                self._prefixes.clear()
            self._prefixes.add(digest)
        return 0

    def _next_id(self) -> str:
        with self._lock:
            self.calls += 1
            return f"simcmpl-{next(self._ids)}"

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
            messages = body["messages"]
            model = str(body.get("model", "gpt-4o-mini"))
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {
                    "error": {
                        "message": "simulator: expected a chat completion body",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                400,
            )
        completion_id = self._next_id()
        await asyncio.sleep(self.latency(raw))
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        last_user = next(
            (str(m.get("content", "")) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            prompt,
        )
        text = _answer_for(last_user)
        usage: dict[str, Any] = {
            "prompt_tokens": _tokens(prompt) + 8,
            "completion_tokens": _tokens(text),
            "total_tokens": _tokens(prompt) + 8 + _tokens(text),
            "prompt_tokens_details": {"cached_tokens": self._cached_tokens(model, messages)},
        }
        headers = {SIMULATOR_HEADER: "llm-cache demo simulator"}
        if body.get("stream") is True:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._events(completion_id, model, text, usage, include_usage),
                media_type="text/event-stream",
                headers=headers,
            )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "simulator",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
            headers=headers,
        )

    @staticmethod
    async def _events(
        completion_id: str, model: str, text: str, usage: dict[str, Any], include_usage: bool
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None, with_usage: Any = None) -> bytes:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "simulator",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                if delta is not None
                else [],
            }
            if include_usage:
                data["usage"] = with_usage
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        words = text.split(" ")
        for i in range(0, len(words), 3):
            piece = " ".join(words[i : i + 3]) + (" " if i + 3 < len(words) else "")
            await asyncio.sleep(0.005)
            yield chunk({"content": piece}, None)
        yield chunk({}, "stop")
        if include_usage:
            yield chunk(None, None, usage)  # type: ignore[arg-type]
        yield b"data: [DONE]\n\n"

    async def _embeddings(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw or b"{}")
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        self._next_id()
        await asyncio.sleep(self.latency(raw))
        data = []
        for index, item in enumerate(inputs):
            digest = hashlib.sha256(str(item).encode()).digest()
            data.append(
                {"object": "embedding", "index": index, "embedding": [round(b / 255 - 0.5, 4) for b in digest[:8]]}
            )
        tokens = sum(_tokens(str(item)) for item in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "text-embedding-3-small"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers={SIMULATOR_HEADER: "llm-cache demo simulator"},
        )
