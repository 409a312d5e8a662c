"""Anthropic Messages streams written out event by event (the Messages API's and Bedrock's
`invoke-with-response-stream`, which carries the same events), for the differential suite."""

from __future__ import annotations

from typing import Any

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
