"""Bedrock ConverseStream: its events assembled into the Converse answer, and that answer replayed.

A `converse-stream` answer is AWS event-stream frames, each an event named by its `:event-type`
header with a JSON payload: `messageStart`, per content block an optional `contentBlockStart`
(tool use), `contentBlockDelta`s and `contentBlockStop`, then `messageStop` (stop reason, the
model's extra fields) and `metadata` (usage, metrics, guardrail trace, ...), the last event. Every
payload carries a random padding field `p`, which is not part of the answer.

The deltas map onto the Converse answer's content blocks: `text` is joined; `toolUse.input` is
joined and read as JSON when the block stops; `reasoningContent` joins its `text` and keeps its
`signature` into `reasoningText`, and its `redactedContent`; `citation` deltas with the block's text
make a `citationsContent` block. Other deltas are merged as they come.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import _exact_json as exact_json
from . import cuts, eventstream
from .base import loads_object
from .deltas import merge_delta
from .eventstream import EventStreamDecoder, encode_message

_PADDING = "p"
_STOP_FIELDS = ("stopReason", "additionalModelResponseFields")
"""The answer's fields that `messageStop` carries; `metadata` carries the others."""


class ConverseStreamAssembler:
    """The Converse answer of a `converse-stream`; complete once `metadata` followed `messageStop`.
    A bad frame, an exception frame or tool input that is not JSON breaks it, and so does any frame
    after `metadata`, the last event of the stream (boto3 reads on to the stream's end: an exception
    frame there raises, another event reaches its caller), or a part of one."""

    def __init__(self) -> None:
        self._frames = EventStreamDecoder()
        self._role: Any = "assistant"
        self._blocks: dict[int, dict[str, Any]] = {}
        self._inputs: dict[int, str] = {}
        self._top: dict[str, Any] = {}
        self._stopped = False
        self._done = False
        self._broken = False
        self._cut = cuts.CutRecorder(positions)

    @property
    def complete(self) -> bool:
        return self._done and not self._broken and not self._frames.pending

    def cut(self, answer: bytes) -> bytes | None:
        return self._cut.cut(answer)

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        found = eventstream.events(self._frames, chunk)
        if found is None:
            self._broken = True
            return
        for kind, payload in found:
            if self._done:  # nothing follows `metadata`
                self._broken = True
                return
            event = loads_object(payload)
            if event is None:
                self._broken = True
                return
            self._cut.event(kind, "", event)
            event.pop(_PADDING, None)
            self._apply(kind, event)

    def _apply(self, kind: str, event: dict[str, Any]) -> None:
        index = event.get("contentBlockIndex", 0)
        if kind == "messageStart":
            self._role = event.get("role", "assistant")
        elif kind == "contentBlockStart":
            self._blocks[index] = merge_delta({}, event.get("start") or {})
        elif kind == "contentBlockDelta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                self._apply_delta(index, self._blocks.setdefault(index, {}), delta)
        elif kind == "contentBlockStop":
            self._stop_block(index)
        elif kind == "messageStop":
            self._top.update(event)
            self._stopped = True
        elif kind == "metadata":
            self._top.update(event)
            self._done = self._stopped

    def _apply_delta(self, index: int, block: dict[str, Any], delta: dict[str, Any]) -> None:
        tool = delta.get("toolUse")
        reasoning = delta.get("reasoningContent")
        if isinstance(tool, dict) and isinstance(tool.get("input"), str):
            self._inputs[index] = self._inputs.get(index, "") + tool["input"]
            block.setdefault("toolUse", {})
        elif isinstance(reasoning, dict):
            target = block.setdefault("reasoningContent", {})
            if "redactedContent" in reasoning:
                target["redactedContent"] = target.get("redactedContent", "") + str(reasoning["redactedContent"])
                return
            text = target.setdefault("reasoningText", {})
            if isinstance(reasoning.get("text"), str):
                text["text"] = text.get("text", "") + reasoning["text"]
            if "signature" in reasoning:
                text["signature"] = reasoning["signature"]
        elif "citation" in delta:
            block.setdefault("citations", []).append(delta["citation"])
        else:
            merge_delta(block, delta)

    def _stop_block(self, index: int) -> None:
        self._blocks.setdefault(index, {})
        partial = self._inputs.pop(index, None)
        if partial is None:
            return
        try:
            self._blocks[index]["toolUse"]["input"] = exact_json.loads_spelt(partial) if partial else {}
        except (ValueError, KeyError, TypeError):
            self._broken = True

    def result(self) -> bytes | None:
        if not self.complete:
            return None
        content = [_finished(self._blocks[i]) for i in sorted(self._blocks)]
        return exact_json.dumps({"output": {"message": {"role": self._role, "content": content}}, **self._top})


def _finished(block: dict[str, Any]) -> dict[str, Any]:
    """A block as the Converse answer holds it: cited text is a `citationsContent` block."""
    citations = block.get("citations")
    if citations is None:
        return block
    return {"citationsContent": {"content": [{"text": block.get("text", "")}], "citations": citations}}


_EVENT = {":content-type": "application/json", ":message-type": "event"}
_DELTA_FRAGMENTS = (
    ("text",),
    ("toolUse", "input"),
    ("reasoningContent", "text"),
    ("reasoningContent", "redactedContent"),
)
"""The strings of a `contentBlockDelta` that continue its block."""


def positions(event: dict[str, Any]) -> Iterator[cuts.Position]:
    """An event's padding `p`, and the fragment of text a `contentBlockDelta` carries, its channel the
    block and the field."""
    if isinstance(event.get(_PADDING), str):
        yield (_PADDING,), None, cuts.PAD
    delta = event.get("delta")
    if not isinstance(delta, dict) or "contentBlockIndex" not in event:
        return
    for path in _DELTA_FRAGMENTS:
        node: Any = delta
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            yield ("delta", *path), (event["contentBlockIndex"], path), cuts.FRAGMENT


def render_events(events: list[cuts.Event]) -> bytes:
    """A kept cut's events as `converse-stream` frames, each named by its event type."""
    frames = (encode_message({":event-type": str(kind), **_EVENT}, data) for kind, data, _ in events)
    return b"".join(frames)


def render(final: dict[str, Any]) -> bytes:
    """The frames a live `converse-stream` of the Converse answer `final` would have sent."""
    return b"".join(
        encode_message({":event-type": kind, **_EVENT}, exact_json.dumps(payload)) for kind, payload in events(final)
    )


def events(final: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, payload) of each event of a live stream of `final` (without padding)."""
    output = final.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    message = message if isinstance(message, dict) else {}
    yield "messageStart", {"role": message.get("role", "assistant")}
    content = message.get("content")
    for index, block in enumerate(content if isinstance(content, list) else []):
        for kind, payload in _block_events(block if isinstance(block, dict) else {}):
            yield kind, {"contentBlockIndex": index, **payload}
        yield "contentBlockStop", {"contentBlockIndex": index}
    yield "messageStop", {key: final[key] for key in _STOP_FIELDS if key in final}
    yield "metadata", {key: value for key, value in final.items() if key != "output" and key not in _STOP_FIELDS}


def _block_events(block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    tool, reasoning, cited = block.get("toolUse"), block.get("reasoningContent"), block.get("citationsContent")
    if isinstance(tool, dict):
        yield "contentBlockStart", {"start": {"toolUse": {k: v for k, v in tool.items() if k != "input"}}}
        given = tool.get("input")
        yield "contentBlockDelta", {"delta": {"toolUse": {"input": exact_json.dumps(given).decode() if given else ""}}}
    elif isinstance(reasoning, dict) and isinstance(reasoning.get("reasoningText"), dict):
        text = reasoning["reasoningText"]
        if "text" in text:
            yield "contentBlockDelta", {"delta": {"reasoningContent": {"text": text["text"]}}}
        if "signature" in text:
            yield "contentBlockDelta", {"delta": {"reasoningContent": {"signature": text["signature"]}}}
    elif isinstance(cited, dict):
        citations, parts = cited.get("citations"), cited.get("content")
        parts = parts if isinstance(parts, list) else []
        for citation in citations if isinstance(citations, list) else []:
            yield "contentBlockDelta", {"delta": {"citation": citation}}
        texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
        yield "contentBlockDelta", {"delta": {"text": "".join(texts)}}
    elif block:  # text, redacted reasoning or a block of another kind: replayed whole, as one delta
        yield "contentBlockDelta", {"delta": block}
