"""Random well-formed Anthropic Messages streams: assembled, they are the message that was streamed,
numbers digit for digit; replayed and assembled again, the same message; the anthropic SDK's final
message of the replay is its final message of the original."""

from __future__ import annotations

from typing import Any

import anthropic
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers.anthropic import Messages
from tests.support.stream_strategies import (
    JSON_OBJECTS,
    assembled,
    byte_pieces,
    dumps,
    ids,
    lossless,
    names,
    pieces,
    texts,
)

from .streams import replaying, view

HEAD = {"id": "msg_p", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "stop_sequence": None}
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
    return {**HEAD, "content": content, "stop_reason": draw(STOPS), "usage": usage}


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


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes]]:
    """(a message, the bytes of a well-formed stream of it, cut at random)."""
    message = draw(messages())
    events = message_stream_events(draw, message)
    body = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + dumps(e) + b"\n\n" for e in events)
    return message, byte_pieces(draw, body)


MESSAGES = Messages()
STREAMED = view("/v1/messages", {"stream": True})


def sdk_final(body: bytes) -> dict[str, Any]:
    client = anthropic.Anthropic(api_key="sk-ant-p", http_client=replaying(body), max_retries=0)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=[]) as stream:
        return stream.get_final_message().to_dict()


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_assembles_into_the_message_it_streamed(case: tuple[dict[str, Any], list[bytes]]) -> None:
    message, cut = case
    assert lossless(assembled(MESSAGES, STREAMED, cut)) == lossless(dumps(message))


@settings(max_examples=60, deadline=None)
@given(streams())
def test_a_replay_assembles_into_the_same_message_and_the_sdk_reads_both_alike(
    case: tuple[dict[str, Any], list[bytes]],
) -> None:
    _, cut = case
    stored = assembled(MESSAGES, STREAMED, cut)
    replay = MESSAGES.render_stream(stored, STREAMED)
    assert lossless(assembled(MESSAGES, STREAMED, [replay])) == lossless(stored)
    assert sdk_final(replay) == sdk_final(b"".join(cut))
