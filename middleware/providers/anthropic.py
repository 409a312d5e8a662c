"""Anthropic Messages API (`/v1/messages` under any base path)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from ... import _operations as operations
from ..._wire import ANTHROPIC, ANTHROPIC_MESSAGES, suffix_pattern
from .. import _exact_json as exact_json
from . import cuts, genai
from .base import (
    JSON_MEDIA_TYPE,
    AnswerHeaders,
    Endpoint,
    RequestView,
    Route,
    Usage,
    host_setting_headers,
    loads_object,
    not_a,
    objects,
    split_last_turn,
    usage_with_cache_apart,
)
from .sse import SSEDecoder, encode_event

ANSWER_HEADERS = AnswerHeaders(
    {
        JSON_MEDIA_TYPE: ((b"content-type", b"application/json"),),
        "text/event-stream": ((b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")),
    },
    request_id="request-id",
    account=frozenset({"anthropic-organization-id"}),
)
"""What api.anthropic.com sends with an answer, and where it names the call (`req_...`, the SDK's
`_request_id`)."""

_DELTA_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "server_tool_use",
)
"""The cumulative usage counts a `message_delta` event carries."""
_KEYED_HEADERS = ("anthropic-beta", "anthropic-version")
"""Request headers that change the answer: the beta features it may use (interleaved thinking, a
longer context, ...) and the API version it is given in."""


ANTHROPIC_PARAMS: genai.RequestParams = (
    ("temperature", "temperature", "number"),
    ("top_p", "top_p", "number"),
    ("top_k", "top_k", "number"),
    ("max_tokens", "max_tokens", "int"),
    ("stop_sequences", "stop_sequences", "strings"),
)
"""A Messages body's sampling parameters."""


class MessagesShape:
    """What the GenAI conventions read from a Messages body and answer (Anthropic's API, and Bedrock's
    InvokeModel for Claude models, which speaks it)."""

    request_params: ClassVar[genai.RequestParams] = ANTHROPIC_PARAMS

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        reason = response.get("stop_reason")
        return (reason,) if isinstance(reason, str) else ()

    def system_instructions(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return genai.parts(body.get("system"))

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        role = response.get("role", "assistant")
        return [genai.message(role, response.get("content"), response.get("stop_reason"))]


class Messages(MessagesShape, Endpoint):
    family = "anthropic"
    answer_headers = ANSWER_HEADERS
    auth = ANTHROPIC
    name = "messages"
    api_operation = operations.MESSAGES
    operation = "chat"
    keyed_headers = True

    def __init__(self) -> None:
        self._pattern = suffix_pattern(ANTHROPIC_MESSAGES)

    def header_key(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        own = tuple((name, value) for name in _KEYED_HEADERS if (value := headers.get(name)) is not None)
        return own + host_setting_headers(headers)

    def match(self, path: str) -> Route | None:
        return Route(self) if self._pattern.match(path) else None

    def assembler(self, request: RequestView) -> MessageStreamAssembler:
        return MessageStreamAssembler()

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        return split_last_turn(body, "messages")

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        if body.get("container") is not None:
            return "`container` names a code-execution container the provider holds"
        if body.get("mcp_servers"):
            return "`mcp_servers` names remote MCP servers, which answer from their own data"
        return None

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        return message_invalid(response)

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        return b"".join(encode_event(event, event["type"]) for event in message_events(exact_json.loads(response)))

    def usage(self, response: dict[str, Any]) -> Usage:
        return usage_with_cache_apart(
            response, "input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens"
        )


class MessageStreamAssembler:
    """Builds a `message` object from Messages stream events; complete only after `message_stop`.

    An `error` event, an event before `message_start` or tool input that is not JSON breaks it, and
    so does any event but a `ping` (or a compatible server's `[DONE]`) after `message_stop`: the
    anthropic SDK reads on to the stream's end (text there joins its caller's message, an `error`
    raises), so the answer as of the stop is not what the caller got.
    """

    def __init__(self, recording: bool = True) -> None:
        """`recording`: keep the stream's cut (False for a caller that records the events itself, as
        Bedrock's invoke stream does with the frames around them)."""
        self._decoder = SSEDecoder()
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, str] = {}
        self._done = False
        self._broken = False
        self._cut = cuts.CutRecorder(message_positions) if recording else None

    @property
    def complete(self) -> bool:
        return self._done and not self._broken

    def cut(self, answer: bytes) -> bytes | None:
        return None if self._cut is None else self._cut.cut(answer)

    def feed(self, chunk: bytes) -> None:
        for name, data in self._decoder.feed(chunk):
            if self._broken:
                continue
            if self._done:
                self._broken = not _closing(name, data)
                continue
            event = loads_object(data)
            if event is None:
                self._broken = True
                continue
            kind = str(event.get("type") or name)
            if self._cut is not None:
                self._cut.event(name, data, event)
            if kind == "message_start" and isinstance(event.get("message"), dict):
                self._message = dict(event["message"])
                self._blocks = dict(enumerate(self._message.get("content") or []))
            elif kind == "ping":
                continue
            elif self._message is None or kind == "error":
                self._broken = True
            else:
                self._apply(kind, event, self._message)

    def _apply(self, kind: str, event: dict[str, Any], message: dict[str, Any]) -> None:
        index = event.get("index", 0)
        if kind == "content_block_start":
            self._blocks[index] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            block = self._blocks.get(index)
            if block is None:
                self._broken = True
                return
            self._apply_delta(index, block, event.get("delta") or {})
        elif kind == "content_block_stop":
            partial = self._json.pop(index, "")
            if partial:
                try:
                    self._blocks[index]["input"] = exact_json.loads_spelt(partial)
                except (ValueError, KeyError):
                    self._broken = True
        elif kind == "message_delta":
            message.update(event.get("delta") or {})
            usage = dict(message.get("usage") or {})
            usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            message["usage"] = usage
        elif kind == "message_stop":
            self._done = True

    def _apply_delta(self, index: int, block: dict[str, Any], delta: dict[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + delta.get("partial_json", "")
        elif kind == "citations_delta":
            block["citations"] = [*(block.get("citations") or []), delta.get("citation")]

    def result(self) -> bytes | None:
        if not self.complete or self._message is None:
            return None
        final = {**self._message, "content": [self._blocks[i] for i in sorted(self._blocks)]}
        return exact_json.dumps(final)


def _closing(name: str | None, data: str) -> bool:
    """What may follow `message_stop` and change no answer: a `ping`, or a compatible server's `[DONE]`."""
    if data.strip() == "[DONE]":
        return True
    event = loads_object(data)
    return event is not None and str(event.get("type") or name) == "ping"


_DELTA_FRAGMENTS = ("text", "thinking", "partial_json", "signature")
"""The string of a `content_block_delta` that continues its block (`signature` comes whole)."""


def message_positions(event: dict[str, Any]) -> Iterator[cuts.Position]:
    """The fragment a Messages `content_block_delta` carries, its channel the block and the field."""
    delta = event.get("delta") if event.get("type") == "content_block_delta" else None
    if isinstance(delta, dict):
        index = event.get("index", 0)
        for field in _DELTA_FRAGMENTS:
            if isinstance(delta.get(field), str):
                yield ("delta", field), (index, field), cuts.FRAGMENT


_BLOCK_TEXT = {"text": "text", "thinking": "thinking", "redacted_thinking": "data"}
"""The string field of a content block that the replay streams as deltas, by block type."""


def message_invalid(response: dict[str, Any]) -> str | None:
    """Why `response` is not a Messages `message` that `message_events` can replay, or None."""
    if response.get("type") != "message":
        return f"`type` is {response.get('type')!r}, not 'message'"
    content: Any = response.get("content")
    reason = (
        objects(content, "`content`")
        or not_a(dict, response.get("usage"), "`usage`", optional=True)
        or not_a(str, response.get("stop_reason"), "`stop_reason`", optional=True)
    )
    if reason is not None:
        return reason
    for index, block in enumerate(content):
        kind = block.get("type")
        if not isinstance(kind, str):
            return not_a(str, kind, f"`content[{index}].type`")
        field = _BLOCK_TEXT.get(kind)
        if field is not None:
            reason = not_a(str, block.get(field), f"`content[{index}].{field}`")
        elif kind.endswith("tool_use"):  # tool_use, server_tool_use, mcp_tool_use
            reason = not_a(dict, block.get("input"), f"`content[{index}].input`")
        if reason is not None:
            return reason
    return None


def message_events(final: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The event sequence a live stream of `final` would have sent."""
    usage = final.get("usage") or {}
    yield {"type": "message_start", "message": {**final, "content": [], "stop_reason": None, "stop_sequence": None}}
    yield {"type": "ping"}
    for index, block in enumerate(final.get("content") or []):
        yield from _block_events(index, block)
    delta = {"stop_reason": final.get("stop_reason"), "stop_sequence": final.get("stop_sequence")}
    for optional in ("stop_details", "container"):
        if final.get(optional) is not None:
            delta[optional] = final[optional]
    delta_usage = {key: usage[key] for key in _DELTA_USAGE if key in usage}
    delta_usage.setdefault("output_tokens", 0)
    yield {"type": "message_delta", "delta": delta, "usage": delta_usage}
    yield {"type": "message_stop"}


def _block_events(index: int, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    start = dict(block)
    if kind == "text":
        start["text"] = ""
        citations = block.get("citations")
        if isinstance(citations, list) and citations:
            start["citations"] = []
            deltas.extend({"type": "citations_delta", "citation": citation} for citation in citations)
        deltas.append({"type": "text_delta", "text": block.get("text", "")})
    elif kind == "thinking":
        start["thinking"] = ""
        deltas.append({"type": "thinking_delta", "thinking": block.get("thinking", "")})
        if "signature" in block:
            start["signature"] = ""
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif isinstance(block.get("input"), dict):  # tool_use, server_tool_use, mcp_tool_use
        start["input"] = {}
        partial = exact_json.dumps_spaced(block["input"]) if block["input"] else ""
        deltas.append({"type": "input_json_delta", "partial_json": partial})
    yield {"type": "content_block_start", "index": index, "content_block": start}
    for delta in deltas:
        yield {"type": "content_block_delta", "index": index, "delta": delta}
    yield {"type": "content_block_stop", "index": index}
