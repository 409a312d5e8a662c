"""OpenAI and OpenAI-compatible APIs, including Azure OpenAI's deployment paths."""

from __future__ import annotations

import re
from typing import Any

import orjson

from .base import Endpoint, RequestView, Route, Usage, int_or_none, loads_object
from .sse import SSEDecoder, encode_event

_DONE = b"data: [DONE]\n\n"


def _azure_or_suffix(suffix: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(Azure `/openai/deployments/{d}/<suffix>`, any base path ending in `/<suffix>`)."""
    escaped = re.escape(suffix)
    azure = re.compile(r"^(?:/.*)?/openai/deployments/(?P<deployment>[^/]+)/" + escaped + r"/?$")
    generic = re.compile(r"^(?:/.*)?/" + escaped + r"/?$")
    return azure, generic


class _OpenAIEndpoint(Endpoint):
    family = "openai"
    suffix: str

    def __init__(self) -> None:
        self._azure, self._generic = _azure_or_suffix(self.suffix)

    def match(self, path: str) -> Route | None:
        azure = self._azure.match(path)
        if azure:
            return Route(self, model=azure.group("deployment"))
        if self._generic.match(path):
            return Route(self)
        return None

    def usage(self, response: dict[str, Any]) -> Usage:
        usage = response.get("usage")
        if not isinstance(usage, dict):
            return Usage()
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        input_tokens = int_or_none(usage.get("prompt_tokens", usage.get("input_tokens")))
        output_tokens = int_or_none(usage.get("completion_tokens", usage.get("output_tokens")))
        cache_read = int_or_none(details.get("cached_tokens")) if isinstance(details, dict) else None
        if cache_read is None:
            # DeepSeek-compatible servers report cache hits at the top level.
            cache_read = int_or_none(usage.get("prompt_cache_hit_tokens"))
        return Usage(input_tokens, output_tokens, cache_read, None)


def _include_usage(request: RequestView) -> bool:
    options = request.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _with_stream_usage(body: dict[str, Any]) -> dict[str, Any] | None:
    """Ask for the usage chunk when the caller streams without it, so stored entries carry usage."""
    if body.get("stream") is not True:
        return None
    options = body.get("stream_options")
    if options is None:
        return {**body, "stream_options": {"include_usage": True}}
    if isinstance(options, dict) and "include_usage" not in options:
        return {**body, "stream_options": {**options, "include_usage": True}}
    return None


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class UsageChunkFilter:
    """Drops the usage-only chunk (`"choices": []`) that `_with_stream_usage` asked for.

    Events are forwarded whole, as soon as their blank-line terminator arrives.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        cut = 0
        for match in _EVENT_END.finditer(data):
            cut = match.end()
        self._pending = data[cut:]
        complete = data[:cut]
        if b'"choices":[]' not in complete.replace(b" ", b""):
            return complete
        kept, start = [], 0
        for match in _EVENT_END.finditer(complete):
            event = complete[start : match.end()]
            start = match.end()
            if not _usage_only(event):
                kept.append(event)
        return b"".join(kept)

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending


def _usage_only(event: bytes) -> bool:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parsed = loads_object(line[5:].strip())
            return parsed is not None and parsed.get("choices") == [] and parsed.get("usage") is not None
    return False


class ChatCompletions(_OpenAIEndpoint):
    name = "chat.completions"
    operation = "chat"
    suffix = "chat/completions"

    def capture_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return _with_stream_usage(body)

    def stream_filter(self, request: RequestView) -> UsageChunkFilter:
        return UsageChunkFilter()

    def assembler(self, request: RequestView) -> ChatStreamAssembler:
        return ChatStreamAssembler()

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        final = orjson.loads(response)
        head = {
            key: final[key]
            for key in ("id", "created", "model", "system_fingerprint", "service_tier")
            if key in final
        }
        head["object"] = "chat.completion.chunk"
        with_usage = _include_usage(request)
        parts: list[bytes] = []
        for choice in final.get("choices") or []:
            message = dict(choice.get("message") or {})
            delta: dict[str, Any] = {"role": message.pop("role", "assistant")}
            tool_calls = message.pop("tool_calls", None)
            delta.update({k: v for k, v in message.items() if v is not None})
            if tool_calls:
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
            first: dict[str, Any] = {"index": choice.get("index", 0), "delta": delta, "finish_reason": None}
            if choice.get("logprobs") is not None:
                first["logprobs"] = choice["logprobs"]
            last = {"index": choice.get("index", 0), "delta": {}, "finish_reason": choice.get("finish_reason")}
            for body in (first, last):
                chunk: dict[str, Any] = {**head, "choices": [body]}
                if with_usage:
                    chunk["usage"] = None
                parts.append(encode_event(chunk))
        if with_usage and final.get("usage") is not None:
            parts.append(encode_event({**head, "choices": [], "usage": final["usage"]}))
        parts.append(_DONE)
        return b"".join(parts)


class ChatStreamAssembler:
    """Builds a `chat.completion` object from `chat.completion.chunk` events."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None
        self._done = False
        self._broken = False

    @property
    def complete(self) -> bool:
        return self._done and not self._broken

    def feed(self, chunk: bytes) -> None:
        for _, data in self._decoder.feed(chunk):
            if self._done or self._broken:
                continue
            if data.strip() == "[DONE]":
                self._done = True
                continue
            event = loads_object(data)
            if event is None or "error" in event:
                self._broken = True
                continue
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if key in event and event[key] is not None:
                self._head[key] = event[key]
        if event.get("usage") is not None:
            self._usage = event["usage"]
        for choice in event.get("choices") or []:
            index = choice.get("index", 0)
            state = self._choices.setdefault(
                index, {"index": index, "message": {"role": "assistant"}, "finish_reason": None, "logprobs": None}
            )
            message = state["message"]
            for field, value in (choice.get("delta") or {}).items():
                if value is None:
                    continue
                if field == "tool_calls":
                    _merge_tool_calls(message, value)
                elif field == "role":
                    message["role"] = value
                elif isinstance(value, str):
                    message[field] = message.get(field, "") + value
                else:
                    message[field] = value
            if choice.get("finish_reason") is not None:
                state["finish_reason"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if logprobs:
                merged = state["logprobs"] or {}
                for field, items in logprobs.items():
                    if isinstance(items, list):
                        merged.setdefault(field, []).extend(items)
                state["logprobs"] = merged

    def result(self) -> bytes | None:
        if not self.complete:
            return None
        choices = [self._choices[i] for i in sorted(self._choices)]
        for choice in choices:
            choice["message"].setdefault("content", None)
        final: dict[str, Any] = {**self._head, "object": "chat.completion", "choices": choices}
        if self._usage is not None:
            final["usage"] = self._usage
        return orjson.dumps(final)


def _merge_tool_calls(message: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
    calls: list[dict[str, Any]] = message.setdefault("tool_calls", [])
    for delta in deltas:
        index = delta.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]
