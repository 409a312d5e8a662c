"""Anthropic Messages requests (the anthropic SDK) served by an OpenAI-compatible deployment, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._wire import error_document
from .base import Outgoing, Refusals, Translation, dumps, leftovers, obj, parse_json, position, seq, stop_list
from .mapping import anthropic_stop_from_openai, anthropic_usage_from_openai
from .openai_to_anthropic import THINKING_BUDGETS
from .sse import EventReader, encode

HANDLED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "metadata",
        "cache_control",  # a prompt-caching hint: changes cost, not the answer
    }
)
NEUTRAL: Mapping[str, Any] = {"service_tier": "auto"}

# ----------------------------------------------------------------------------- request


def request(doc: dict[str, Any], model: str, stream: bool, drop: bool) -> Outgoing:
    refused = Refusals()
    leftovers(doc, HANDLED, NEUTRAL, refused)
    messages: list[dict[str, Any]] = []
    system = doc.get("system")
    if system is not None:
        content = system if isinstance(system, str) else _content(system, "system", refused)
        messages.append({"role": "system", "content": content})
    for i, m in enumerate(seq(doc.get("messages"))):
        messages += _message(m, f"messages[{i}]", refused)
    out: dict[str, Any] = {"model": model, "messages": messages}
    if doc.get("max_tokens") is not None:
        out["max_completion_tokens"] = doc["max_tokens"]
    for key in ("temperature", "top_p"):
        if doc.get(key) is not None:
            out[key] = doc[key]
    stop = doc.get("stop_sequences")
    if stop:  # the same shape as OpenAI's list form of stop
        out["stop"] = stop_list(stop, refused)
    if doc.get("tools"):
        out["tools"] = _tools(doc["tools"], refused)
    _tool_choice(doc.get("tool_choice"), out, refused)
    _thinking(doc.get("thinking"), out, refused)
    _output_config(doc.get("output_config"), out, refused)
    metadata = doc.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("user_id") is not None:
        out["user"] = metadata["user_id"]
    if stream:  # Anthropic streams always report usage
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return Outgoing("/v1/chat/completions", out, refused.check(drop, "openai"))


def _message(m: Any, where: str, refused: Refusals) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: tool results become ``tool`` messages, first."""
    role = m.get("role") if isinstance(m, Mapping) else None
    if role not in ("user", "assistant"):
        refused.add(f"{where}.role")
        return []
    content = m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = content if isinstance(content, list) else []
    if role == "assistant":
        return [_assistant(blocks, where, refused)]
    out: list[dict[str, Any]] = []
    rest = []
    for j, block in enumerate(blocks):
        if isinstance(block, Mapping) and block.get("type") == "tool_result":
            if block.get("is_error"):
                refused.add(f"{where}.content[{j}].is_error")
            result = block.get("content")
            text = result if isinstance(result, str) else _content(result, f"{where}.content[{j}]", refused)
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        else:
            rest.append((j, block))
    if rest:
        parts = [_part(block, f"{where}.content[{j}]", refused) for j, block in rest]
        out.append({"role": "user", "content": [p for p in parts if p is not None]})
    return out


def _content(blocks: Any, where: str, refused: Refusals) -> list[dict[str, Any]]:
    parts = [
        _part(block, f"{where}[{j}]", refused) for j, block in enumerate(blocks if isinstance(blocks, list) else [])
    ]
    return [p for p in parts if p is not None]


def _part(block: Any, where: str, refused: Refusals) -> dict[str, Any] | None:
    kind = block.get("type") if isinstance(block, Mapping) else None
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") if kind in ("image", "document") else None
    source = source if isinstance(source, Mapping) else {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        if kind == "image":
            return {"type": "image_url", "image_url": {"url": url}}
        return {"type": "file", "file": {"file_data": url}}
    if kind == "image" and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    refused.add(where)
    return None


def _assistant(blocks: list[Any], where: str, refused: Refusals) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            function = {"name": block.get("name"), "arguments": dumps(obj(block.get("input"))).decode()}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        else:  # thinking blocks carry a signature only Anthropic can check
            refused.add(f"{where}.content[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any, refused: Refusals) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(tool, Mapping) or tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            refused.add(f"tools[{i}]")  # server tools (web search, bash, ...) run at Anthropic only
            continue
        function: dict[str, Any] = {"name": tool.get("name")}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        function["parameters"] = tool["input_schema"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: dict[str, Any], refused: Refusals) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "any", "none"):
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        refused.add("tool_choice")
        return
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


def _thinking(thinking: Any, out: dict[str, Any], refused: Refusals) -> None:
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if thinking is None:
        return
    if kind == "disabled":
        out["reasoning_effort"] = "none"
    elif kind == "enabled" and isinstance(thinking.get("budget_tokens"), int):
        budget = thinking["budget_tokens"]  # the smallest effort whose budget covers it
        out["reasoning_effort"] = next((e for e in ("low", "medium", "high") if budget <= THINKING_BUDGETS[e]), "high")
    else:
        refused.add("thinking")


def _output_config(config: Any, out: dict[str, Any], refused: Refusals) -> None:
    if config is None:
        return
    if not isinstance(config, Mapping):
        refused.add("output_config")
        return
    leftovers(config, frozenset({"format", "effort"}), {}, refused)
    fmt = config.get("format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), Mapping):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt["schema"]}}
    elif fmt is not None:
        refused.add("output_config.format")
    if config.get("effort") is not None:
        out["reasoning_effort"] = config["effort"]


# ----------------------------------------------------------------------------- answer


def response(body: bytes, caller: dict[str, Any]) -> bytes:
    doc = parse_json(body)
    choices = doc.get("choices") if isinstance(doc, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return body
    message = obj(choices[0].get("message"))
    content: list[dict[str, Any]] = []
    if isinstance(message.get("reasoning_content"), str) and message["reasoning_content"]:
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    text = message.get("content") or message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in map(obj, seq(message.get("tool_calls"))):
        function = obj(call.get("function"))
        args = parse_json(function.get("arguments") or "{}")
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": args if isinstance(args, dict) else {},
            }
        )
    stop = "refusal" if message.get("refusal") else anthropic_stop_from_openai(choices[0].get("finish_reason"))
    usage = doc.get("usage")
    return dumps(
        {
            "id": doc.get("id"),
            "type": "message",
            "role": "assistant",
            "model": doc.get("model"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": anthropic_usage_from_openai(usage if isinstance(usage, Mapping) else {}),
        }
    )


def error(status: int, body: bytes) -> bytes:
    """OpenAI's ``{"error": {message, ...}}`` as Anthropic's ``{"type": "error", "error": {type, message}}``."""
    doc = parse_json(body)
    err = doc.get("error") if isinstance(doc, Mapping) else None
    if not isinstance(err, Mapping):
        return body
    return dumps(error_document("anthropic", status, str(err.get("message") or "")))


class Stream:
    """OpenAI ``chat.completion.chunk`` events as Anthropic's message events, as they arrive.

    Anthropic streams content blocks one at a time: a change of kind (text, thinking, a new tool
    call) closes the open block and starts the next. ``message_stop`` follows ``[DONE]`` only.
    """

    def __init__(self, caller: dict[str, Any]) -> None:
        self.reader = EventReader()
        self.started = False
        self.block: tuple[str, Any] | None = None  # (kind, tool call index) of the open block
        self.index = -1
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> Anthropic block index
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(data) for _, data in self.reader.feed(chunk))

    def _event(self, data: str) -> bytes:
        if data.strip() == "[DONE]":
            return self._end()
        event = parse_json(data)
        if not isinstance(event, Mapping):
            return b""
        if "error" in event:
            err = obj(event["error"])
            return encode(error_document("anthropic", 500, str(err.get("message") or "")), "error")
        out = b"" if self.started else self._start(event)
        if isinstance(event.get("usage"), Mapping):
            self.usage = dict(event["usage"])
        for choice in map(obj, seq(event.get("choices"))):
            delta = obj(choice.get("delta"))
            if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
                out += self._open(("thinking", None), {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]})
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._open(("text", None), {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for call in map(obj, seq(delta.get("tool_calls"))):
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _start(self, event: Mapping[str, Any]) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": event.get("id"),
            "type": "message",
            "role": "assistant",
            "model": event.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return encode({"type": "message_start", "message": message}, "message_start")

    def _open(self, block: tuple[str, Any], start: dict[str, Any]) -> bytes:
        if self.block == block:
            return b""
        out = self._close()
        self.block, self.index = block, self.index + 1
        event = {"type": "content_block_start", "index": self.index, "content_block": start}
        return out + encode(event, "content_block_start")

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return encode({"type": "content_block_stop", "index": self.index}, "content_block_stop")

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        event = {"type": "content_block_delta", "index": self.index if index is None else index, "delta": delta}
        return encode(event, "content_block_delta")

    def _tool_call(self, call: Mapping[str, Any]) -> bytes:
        at = position(call.get("index"))
        function = obj(call.get("function"))
        out = b""
        if at not in self.tool_blocks:
            start: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": {},
            }
            out = self._open(("tool", at), start)
            self.tool_blocks[at] = self.index
        if isinstance(function.get("arguments"), str) and function["arguments"]:
            partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
            out += self._delta(partial, self.tool_blocks[at])
        return out

    def _end(self) -> bytes:
        if self.done or not self.started:
            return b""
        self.done = True
        stop = anthropic_stop_from_openai(self.finish)
        delta = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
        delta["usage"] = anthropic_usage_from_openai(self.usage)
        return self._close() + encode(delta, "message_delta") + encode({"type": "message_stop"}, "message_stop")

    def end(self) -> bytes:
        return b""  # without [DONE] the stream was cut: no message_stop, never cached as whole


TRANSLATION = Translation("anthropic", "openai", request, response, Stream, error)

__all__ = ["TRANSLATION", "Stream", "request", "response"]
