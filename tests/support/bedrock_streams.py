"""Bedrock `invoke-with-response-stream` answers of Claude, event by event, for the differential suite.

Bedrock carries the Messages API's own events (each base64'd in an event-stream `chunk` frame) and
adds its own fields to the last one: `amazon-bedrock-invocationMetrics`, and with a guardrail its
action and trace. The fixtures cover every content block and delta type Claude streams on Bedrock,
each stop reason, and the usage counts with prompt caching.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import botocore.session
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser

from tests.support.anthropic_streams import AnthropicBlock, anthropic_events

CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
BIG = 123456789012345678901234567890
"""Beyond 64 bits: a parser that reads it as a float loses its last digits."""


def metrics(output_tokens: int, **more: Any) -> dict[str, Any]:
    return {
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 40,
            "outputTokenCount": output_tokens,
            "invocationLatency": 812,
            "firstByteLatency": 301,
            **more,
        }
    }


def invoke_stream(
    blocks: list[AnthropicBlock],
    output_tokens: int,
    stop_reason: str = "end_turn",
    stop_sequence: str | None = None,
    usage: dict[str, Any] | None = None,
    stop: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    events = anthropic_events(
        blocks,
        {"output_tokens": output_tokens, **(usage or {})},
        stop_reason,
        stop_sequence,
        model=CLAUDE,
        stop={**metrics(output_tokens), **(stop or {})},
    )
    return [event for _, event in events]


def text(*pieces: str) -> AnthropicBlock:
    return {"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in pieces]


def tool(tool_id: str, name: str, *partial_json: str) -> AnthropicBlock:
    start = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    return start, [{"type": "input_json_delta", "partial_json": piece} for piece in ("", *partial_json)]


CITATION = {
    "type": "char_location",
    "cited_text": "The grass is green.",
    "document_index": 0,
    "document_title": "Facts",
    "start_char_index": 0,
    "end_char_index": 19,
}

INVOKE_STREAMS: dict[str, list[dict[str, Any]]] = {
    "text": invoke_stream([text("The capital ", "of France ", "is Paris.")], 9),
    "thinking, signed and redacted": invoke_stream(
        [
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                [
                    {"type": "thinking_delta", "thinking": "The user asks "},
                    {"type": "thinking_delta", "thinking": "for a capital."},
                    {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
                ],
            ),
            ({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}, []),
            text("Paris."),
        ],
        31,
    ),
    "parallel tool use": invoke_stream(
        [
            text("Let me look both up."),
            tool("toolu_bdrk_1", "get_weather", '{"city": ', '"Paris"}'),
            tool("toolu_bdrk_2", "lookup_order", '{"order_id": 12345678901234', "5678901234567890, ", '"rush": true}'),
        ],
        58,
        "tool_use",
    ),
    "citations": invoke_stream(
        [
            (
                {"type": "text", "text": "", "citations": []},
                [{"type": "citations_delta", "citation": CITATION}, {"type": "text_delta", "text": "Grass is green."}],
            )
        ],
        7,
    ),
    "stop sequence": invoke_stream([text("One, two")], 3, "stop_sequence", "three"),
    "max tokens": invoke_stream([text("A very long ", "answer")], 4, "max_tokens"),
    "prompt caching usage": invoke_stream(
        [text("From the cached manual: yes.")],
        8,
        usage={"cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048},
        stop={**metrics(8, cacheReadInputTokenCount=2048, cacheWriteInputTokenCount=0)},
    ),
    "guardrail intervened": invoke_stream(
        [text("Sorry, the model cannot answer this question.")],
        0,
        stop={
            "amazon-bedrock-guardrailAction": "INTERVENED",
            "amazon-bedrock-trace": {
                "guardrail": {
                    "input": {
                        "gr-1": {
                            "topicPolicy": {"topics": [{"name": "Investments", "type": "DENY", "action": "BLOCKED"}]}
                        }
                    }
                }
            },
        },
    ),
}


def converse_events(*events: tuple[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """A ConverseStream answer: `messageStart`, the given events, each payload padded with the
    random `p` field Bedrock adds (so that sizes do not reveal tokens)."""
    padded = [("messageStart", {"role": "assistant"}), *events]
    return [
        (name, {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + n % 20]})
        for n, (name, payload) in enumerate(padded)
    ]


def converse_text(index: int, *pieces: str) -> list[tuple[str, dict[str, Any]]]:
    deltas = [("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}) for piece in pieces]
    return [*deltas, ("contentBlockStop", {"contentBlockIndex": index})]


def converse_end(stop_reason: str, output_tokens: int, **metadata: Any) -> list[tuple[str, dict[str, Any]]]:
    usage = {"inputTokens": 40, "outputTokens": output_tokens, "totalTokens": 40 + output_tokens}
    return [
        ("messageStop", {"stopReason": stop_reason}),
        ("metadata", {"usage": usage, "metrics": {"latencyMs": 812}, **metadata}),
    ]


CONVERSE_STREAMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "text": converse_events(*converse_text(0, "The capital ", "is Paris."), *converse_end("end_turn", 6)),
    "parallel tool use": converse_events(
        *converse_text(0, "Looking both up."),
        (
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "weather"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": '}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Paris"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_2", "name": "order"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": f'{{"id": {BIG}}}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 2}),
        *converse_end("tool_use", 41),
    ),
    "tool input spaced as no serializer spaces it": converse_events(
        ("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_3", "name": "f"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{ "city" :"Paris",'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '"days":[1,  2.50, 1e-05] }'}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        *converse_end("tool_use", 12),
    ),
    "tool input compact": converse_events(
        ("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_4", "name": "f"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"city":"Par'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": 'is","days":[1,2]}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        *converse_end("tool_use", 12),
    ),
    "reasoning, signed and redacted": converse_events(
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "The user asks "}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "for a capital."}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "EqQBCgIYAhIM"}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": "EmwKAhgB"}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        *converse_text(2, "Paris."),
        *converse_end("end_turn", 30),
    ),
    "citations": converse_events(
        (
            "contentBlockDelta",
            {
                "contentBlockIndex": 0,
                "delta": {
                    "citation": {
                        "title": "Facts",
                        "sourceContent": [{"text": "The grass is green."}],
                        "location": {"documentChar": {"documentIndex": 0, "start": 0, "end": 19}},
                    }
                },
            },
        ),
        *converse_text(0, "Grass is green."),
        *converse_end("end_turn", 5),
    ),
    "guardrail, cache usage, performance": converse_events(
        *converse_text(0, "Sorry, I cannot answer that."),
        (
            "messageStop",
            {"stopReason": "guardrail_intervened", "additionalModelResponseFields": {"stop_sequence": None}},
        ),
        (
            "metadata",
            {
                "usage": {
                    "inputTokens": 40,
                    "outputTokens": 7,
                    "totalTokens": 2095,
                    "cacheReadInputTokens": 2048,
                    "cacheWriteInputTokens": 0,
                },
                "metrics": {"latencyMs": 412},
                "trace": {"guardrail": {"outputAssessments": {"gr-1": [{"topicPolicy": {"topics": []}}]}}},
                "performanceConfig": {"latency": "optimized"},
            },
        ),
    ),
}
"""ConverseStream answers of every documented event and delta, padded as Bedrock pads them."""


def converse_reading(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The Converse answer an application builds from boto3's `converse_stream` events (each
    `{name: payload}`): text and reasoning joined, tool input read as JSON, cited text in a
    `citationsContent` block, the stop and metadata fields as sent. The oracle for the replay."""
    role, blocks, inputs, answer = "assistant", {}, {}, {}
    for event in events:
        ((kind, payload),) = event.items()
        index = payload.get("contentBlockIndex", 0)
        block = blocks.setdefault(index, {}) if "contentBlockIndex" in payload else {}
        delta = payload.get("delta", {})
        if kind == "messageStart":
            role = payload["role"]
        elif kind == "contentBlockStart":
            block.update(payload["start"])
        elif "text" in delta:
            block["text"] = block.get("text", "") + delta["text"]
        elif "toolUse" in delta:
            inputs[index] = inputs.get(index, "") + delta["toolUse"]["input"]
        elif "citation" in delta:
            block.setdefault("citations", []).append(delta["citation"])
        elif "reasoningContent" in delta:
            reasoning = block.setdefault("reasoningContent", {})
            if "redactedContent" in delta["reasoningContent"]:
                reasoning["redactedContent"] = delta["reasoningContent"]["redactedContent"]
            else:
                text = reasoning.setdefault("reasoningText", {})
                text["text"] = text.get("text", "") + delta["reasoningContent"].get("text", "")
                text.update({k: v for k, v in delta["reasoningContent"].items() if k == "signature"})
        elif kind in ("messageStop", "metadata"):
            answer.update(payload)
    for index, text in inputs.items():
        blocks[index]["toolUse"]["input"] = json.loads(text) if text else {}
    content = [
        {"citationsContent": {"content": [{"text": b["text"]}], "citations": b["citations"]}} if "citations" in b else b
        for _, b in sorted(blocks.items())
    ]
    return {"output": {"message": {"role": role, "content": content}}, **answer}


class _Body:
    """The raw stream botocore's `EventStream` reads from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self) -> Iterator[bytes]:
        yield self._data


def boto_events(body: bytes) -> list[dict[str, Any]]:
    """A ConverseStream body as boto3's `converse_stream` hands it to an application: one
    `{name: payload}` per event, parsed by botocore against the service model."""
    operation = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("ConverseStream")
    shape = operation.output_shape.members["stream"]  # type: ignore[union-attr]
    return list(EventStream(_Body(body), shape, EventStreamJSONParser(), "ConverseStream"))
