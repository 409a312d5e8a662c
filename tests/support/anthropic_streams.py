"""Anthropic Messages streams written out event by event (the Messages API's and Bedrock's
`invoke-with-response-stream`, which carries the same events), for the differential suite, and
strategies of random messages and their streams for the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.support.stream_strategies import JSON_OBJECTS, dumps, ids, names, pieces, texts

AnthropicBlock = tuple[dict[str, Any], list[dict[str, Any]]]
"""A content block's `content_block_start` payload and the deltas that follow it."""

START_USAGE = {"input_tokens": 40, "output_tokens": 1, "cache_read_input_tokens": 0}


def anthropic_events(
    blocks: list[AnthropicBlock],
    usage: dict[str, Any],
    stop_reason: str = "end_turn",
    stop_sequence: str | None = None,
    model: str = "claude-sonnet-4-6",
    stop: dict[str, Any] | None = None,
) -> list[Any]:
    """The Messages stream of `blocks`, event by event, as the API sends it: `(name, event)` pairs.
    `stop` adds fields to `message_stop` (Bedrock's invocation metrics)."""
    message = {
        "id": "msg_fixture",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": START_USAGE,
    }
    events: list[Any] = [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]
    for index, (start, deltas) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop", **(stop or {})}))
    return events


MESSAGE_HEAD = {
    "id": "msg_p",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "stop_sequence": None,
}
STOPS = st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"])
CITATION = st.fixed_dictionaries(
    {"type": st.just("char_location"), "cited_text": texts, "document_index": st.integers(0, 3)}
)


@st.composite
def blocks(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "thinking", "redacted_thinking", "tool_use", "server_tool_use"]))
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": draw(texts)}
        if draw(st.booleans()):
            block["citations"] = draw(st.lists(CITATION, min_size=1, max_size=2))
        return block
    if kind == "thinking":
        return {"type": "thinking", "thinking": draw(texts), "signature": draw(ids)}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": draw(ids)}
    name = draw(names) if kind == "tool_use" else draw(st.sampled_from(["web_search", "web_fetch", "code_execution"]))
    return {"type": kind, "id": f"toolu_{draw(ids)}", "name": name, "input": draw(JSON_OBJECTS)}


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    usage = {"input_tokens": draw(st.integers(1, 9999)), "output_tokens": draw(st.integers(1, 9999))}
    if draw(st.booleans()):
        usage |= {"cache_read_input_tokens": draw(st.integers(0, 9999)), "cache_creation_input_tokens": 0}
    content = draw(st.lists(blocks(), min_size=1, max_size=4))
    return {**MESSAGE_HEAD, "content": content, "stop_reason": draw(STOPS), "usage": usage}


def block_events(draw: st.DrawFn, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    """A content block as the API streams it: its start, its deltas cut at random, its stop."""
    kind = block["type"]
    start, deltas = dict(block), []
    if kind == "text":
        start["text"] = ""
        if "citations" in block:
            start["citations"] = []
            deltas += [{"type": "citations_delta", "citation": c} for c in block["citations"]]
        deltas += [{"type": "text_delta", "text": p} for p in pieces(draw, block["text"])]
    elif kind == "thinking":
        start |= {"thinking": "", "signature": ""}
        deltas += [{"type": "thinking_delta", "thinking": p} for p in pieces(draw, block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif "input" in block:
        start["input"] = {}
        partial = dumps(block["input"]).decode() if block["input"] else ""
        deltas += [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces(draw, partial, 5)]]
    return [
        {"type": "content_block_start", "index": index, "content_block": start},
        *({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def message_stream_events(draw: st.DrawFn, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a live stream of `message` sends, deltas cut at random."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        events += block_events(draw, index, block)
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events
