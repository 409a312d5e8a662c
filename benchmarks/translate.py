"""Cross-family translation cost: what the router adds to a request it serves in another family's format.

Each row times one pure function on a 1 KB OpenAI chat request (or the answer to it), next to the
native path's own work on the same request: ``rewrite_body`` (the body re-encoded with the
deployment's model), which every routed request pays. Rows: request translation including its
JSON encoding, the JSON answer back, and a streamed answer (per event and whole).

    .venv/bin/python benchmarks/translate.py [--rounds 7] [--number 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llm_cache.router import rewrite, translate  # noqa: E402
from llm_cache.router._config import Deployment  # noqa: E402
from llm_cache.router.translate import anthropic_to_openai, openai_to_anthropic, openai_to_gemini  # noqa: E402

BUDGET_US = 100.0


def chat_request(size: int = 1024) -> dict[str, Any]:
    """A 1 KB chat request: system prompt, one earlier turn, a question, a tool and sampling fields."""
    doc: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": ""},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    }
    excess = size - len(json.dumps(doc, separators=(",", ":")))
    doc["messages"][-1]["content"] = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:excess]
    return doc


def anthropic_answer(text: str) -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 250, "output_tokens": 60, "cache_read_input_tokens": 0},
        }
    ).encode()


def anthropic_stream(text: str) -> list[bytes]:
    def ev(kind: str, **fields: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()

    words = [text[i : i + 8] for i in range(0, len(text), 8)]
    return [
        ev("message_start", message={"id": "msg_1", "model": "claude-sonnet", "usage": {"input_tokens": 250}}),
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        *[ev("content_block_delta", index=0, delta={"type": "text_delta", "text": w}) for w in words],
        ev("content_block_stop", index=0),
        ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 60}),
        ev("message_stop"),
    ]


def best_us(fn: Callable[[], Any], rounds: int, number: int) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        per_call.append((time.perf_counter_ns() - start) / number / 1000)
    return statistics.median(per_call)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    doc = chat_request()
    body = json.dumps(doc, separators=(",", ":")).encode()
    dep = Deployment(family="openai", model="gpt-4o-2024-08-06", api_key="k")
    answer_text = "The weather in Paris is mild today, around 18C with light wind. " * 5
    answer = anthropic_answer(answer_text)
    events = anthropic_stream(answer_text)
    to_claude = openai_to_anthropic.request(doc, "claude-sonnet", False, False).body
    openai_answer = openai_to_anthropic.response(answer, doc)

    def stream_whole() -> None:
        s = openai_to_anthropic.Stream(doc)
        for e in events:
            s.feed(e)
        s.end()

    rows = [
        ("native: rewrite_body (model swapped, re-encoded)", lambda: rewrite.rewrite_body(body, doc, dep)),
        (
            "OpenAI -> Anthropic request, encoded",
            lambda: translate.dumps(openai_to_anthropic.request(doc, "claude-sonnet", False, False).body),
        ),
        (
            "OpenAI -> Gemini request, encoded",
            lambda: translate.dumps(openai_to_gemini.request(doc, "gemini-flash", False, False).body),
        ),
        (
            "Anthropic -> OpenAI request, encoded",
            lambda: translate.dumps(anthropic_to_openai.request(to_claude, "gpt-4o", False, False).body),
        ),
        ("Anthropic answer -> OpenAI answer (JSON)", lambda: openai_to_anthropic.response(answer, doc)),
        ("OpenAI answer -> Anthropic answer (JSON)", lambda: anthropic_to_openai.response(openai_answer, to_claude)),
        (f"Anthropic stream -> OpenAI chunks ({len(events)} events, whole)", stream_whole),
    ]
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    print(f"# request body {len(body)} bytes; median of {args.rounds} rounds x {args.number} calls\n")
    print("| step (1 KB chat request) | µs per call | vs native |")
    print("| --- | ---: | ---: |")
    native = None
    for name, fn in rows:
        us = best_us(fn, args.rounds, args.number)
        native = native if native is not None else us
        print(f"| {name} | {us:.1f} | {us / native:.1f}x |")
    request_us = best_us(
        lambda: translate.dumps(openai_to_anthropic.request(doc, "claude-sonnet", False, False).body),
        args.rounds,
        args.number,
    )
    stream_us = best_us(stream_whole, args.rounds, args.number // 10)
    added = request_us - native  # a translated request is encoded by the translator instead of rewrite_body
    verdict = "within" if added < BUDGET_US else "OVER"
    print(
        f"\nOpenAI -> Anthropic request: {request_us:.1f} µs, replacing rewrite_body's {native:.1f} µs: "
        f"adds {max(0.0, added):.1f} µs ({verdict} the {BUDGET_US:.0f} µs budget); "
        f"stream: {stream_us / len(events):.1f} µs per event"
    )


if __name__ == "__main__":
    main()
