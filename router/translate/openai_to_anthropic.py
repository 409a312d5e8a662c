"""OpenAI chat completions served by an Anthropic Messages deployment: request out, answer and stream back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import openai_out
from .base import (
    DEFAULT_MAX_TOKENS,
    Outgoing,
    Refusals,
    Translation,
    dumps,
    functions,
    leftovers,
    obj,
    parse_json,
    position,
    seq,
    split_data_url,
    stop_list,
    tool_calls,
    walk,
)
from .mapping import openai_finish_from_anthropic, openai_usage_from_anthropic
from .sse import encode

#: ``reasoning_effort`` -> Anthropic ``thinking.budget_tokens`` (LiteLLM's budgets; 1024 is Anthropic's minimum).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}

HANDLED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "top_k",  # an extra OpenAI-compatible servers take; Anthropic understands it
        # Hints that change no answer (prompt-cache routing, abuse tracking): not forwarded.
        "prompt_cache_key",
        "safety_identifier",
    }
)
#: Fields at these values ask for nothing beyond what every answer is.
NEUTRAL: Mapping[str, Any] = {"n": 1, "logprobs": False, "store": False, "service_tier": "auto"}


# ----------------------------------------------------------------------------- request


def request(doc: dict[str, Any], model: str, stream: bool, drop: bool) -> Outgoing:
    refused = Refusals()
    leftovers(doc, HANDLED, NEUTRAL, refused)
    system, messages = _messages(doc.get("messages"), refused)
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = system
    out["messages"] = messages
    limit = doc.get("max_completion_tokens")
    limit = doc.get("max_tokens") if limit is None else limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        refused.add("max_completion_tokens" if "max_completion_tokens" in doc else "max_tokens")
        limit = None
    out["max_tokens"] = DEFAULT_MAX_TOKENS if limit is None else limit
    temperature = doc.get("temperature")
    if temperature is not None:
        if isinstance(temperature, (int, float)) and 0 <= temperature <= 1:
            out["temperature"] = temperature
        else:
            refused.add("temperature")  # Anthropic's range is 0..1, OpenAI's 0..2
    for key in ("top_p", "top_k"):
        if doc.get(key) is not None:
            out[key] = doc[key]
    stop = stop_list(doc.get("stop"), refused)
    if stop is not None:
        out["stop_sequences"] = stop
    if doc.get("tools"):
        out["tools"] = _tools(doc["tools"], refused)
    choice = _tool_choice(doc.get("tool_choice"), doc.get("parallel_tool_calls"), refused)
    if choice is not None:
        out["tool_choice"] = choice
    _response_format(doc.get("response_format"), out, refused)
    _reasoning(doc.get("reasoning_effort"), out, refused)
    if isinstance(doc.get("user"), str):
        out["metadata"] = {"user_id": doc["user"]}
    if stream:
        out["stream"] = True
    dropped = refused.check(drop, "anthropic")
    return Outgoing("/v1/messages", out, dropped, {"anthropic-version": "2023-06-01"})


def _messages(messages: Any, refused: Refusals) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for where, role, m in walk(messages, refused):
        if role in ("system", "developer"):
            system += _parts(m.get("content"), where, refused)
        elif role == "user":
            content = m.get("content")
            _append(out, "user", content if isinstance(content, str) else _parts(content, where, refused))
        elif role == "assistant":
            _append(out, "assistant", _assistant(m, where, refused))
        elif role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.get("tool_call_id")}
            content = m.get("content")
            result["content"] = content if isinstance(content, str) else _parts(content, where, refused)
            _append(out, "user", [result])
        else:
            refused.add(f"{where}.role")
    return system, out


def _append(out: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Anthropic alternates roles: consecutive messages of one role (parallel tool results) become one."""
    if out and out[-1]["role"] == role:
        last = out[-1]
        blocks = [{"type": "text", "text": last["content"]}] if isinstance(last["content"], str) else last["content"]
        last["content"] = blocks + ([{"type": "text", "text": content}] if isinstance(content, str) else content)
    else:
        out.append({"role": role, "content": content})


def _parts(content: Any, where: str, refused: Refusals) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        block = _part(part, f"{where}.content[{j}]", refused)
        if block is not None:
            if isinstance(part, Mapping) and "cache_control" in part:  # an Anthropic extra, understood there
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _part(part: Any, where: str, refused: Refusals) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "image_url":
        image = obj(part.get("image_url"))
        url = image.get("url", "")
        if image.get("detail") not in (None, "auto"):
            refused.add(f"{where}.image_url.detail")
        inline = split_data_url(url)
        if inline is not None:
            return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind == "file":
        inline = split_data_url(obj(part.get("file")).get("file_data"))
        if inline is not None and inline[0] == "application/pdf":
            return {"type": "document", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    refused.add(f"{where}.type")
    return None


def _assistant(m: Mapping[str, Any], where: str, refused: Refusals) -> str | list[dict[str, Any]]:
    content, calls = m.get("content"), m.get("tool_calls")
    if isinstance(content, str) and not calls:
        return content
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        blocks += _parts(content, where, refused)
    for id, name, args in tool_calls(calls, where, refused):
        blocks.append({"type": "tool_use", "id": id, "name": name, "input": args})
    return blocks


def _tools(tools: Any, refused: Refusals) -> list[dict[str, Any]]:
    out = []
    for tool, function in functions(tools, refused):
        spec: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description") is not None:
            spec["description"] = function["description"]
        if function.get("strict") is not None:
            spec["strict"] = function["strict"]
        if "cache_control" in tool:
            spec["cache_control"] = tool["cache_control"]
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any, refused: Refusals) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        refused.add("tool_choice")
        return None
    if parallel is False:
        if out is None:
            out = {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def _response_format(fmt: Any, out: dict[str, Any], refused: Refusals) -> None:
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if fmt is None or kind == "text":
        return
    schema = fmt.get("json_schema") if kind == "json_schema" else None
    if isinstance(schema, Mapping) and isinstance(schema.get("schema"), Mapping):
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema["schema"]}}
    else:  # JSON mode without a schema: Anthropic has no such switch
        refused.add("response_format")


def _reasoning(effort: Any, out: dict[str, Any], refused: Refusals) -> None:
    if effort is None:
        return
    if effort == "none":
        out["thinking"] = {"type": "disabled"}
        return
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    budget = None if budget is None else min(budget, out["max_tokens"] - 1)
    if budget is None or budget < 1024:  # unknown effort, or no room under max_tokens for the minimum budget
        refused.add("reasoning_effort")
        return
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


# ----------------------------------------------------------------------------- answer


def response(body: bytes, caller: dict[str, Any]) -> bytes:
    doc = parse_json(body)
    if not isinstance(doc, Mapping):
        return body
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in map(obj, seq(doc.get("content"))):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            arguments = dumps(obj(block.get("input"))).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)  # LiteLLM's name for it
    finish = openai_finish_from_anthropic(doc.get("stop_reason"))
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    usage = openai_usage_from_anthropic(obj(doc.get("usage")))
    return openai_out.completion(doc.get("id"), doc.get("model"), [choice], usage)


def error(status: int, body: bytes) -> bytes:
    """Anthropic's ``{"type": "error", "error": {type, message}}`` as OpenAI's ``{"error": {...}}``."""
    return openai_out.error_from(body, "type")


class Stream(openai_out.ChunkStream):
    """Anthropic's message events as OpenAI ``chat.completion.chunk`` events, one for one as they arrive."""

    def __init__(self, caller: dict[str, Any]) -> None:
        super().__init__(caller)
        self.usage: dict[str, Any] = {}
        self.finish = "stop"
        self.tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self.chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def event(self, event: Mapping[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            message = obj(event.get("message"))
            self.id, self.model = message.get("id"), message.get("model")
            self.usage.update(obj(message.get("usage")))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = obj(event.get("content_block"))
            if block.get("type") == "tool_use":
                index = self.tools[position(event.get("index"))] = len(self.tools)
                call = {"index": index, "id": block.get("id"), "type": "function"}
                call["function"] = {"name": block.get("name"), "arguments": ""}
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = obj(event.get("delta"))
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta" and delta.get("partial_json"):
                call = {
                    "index": self.tools.get(position(event.get("index")), 0),
                    "function": {"arguments": delta["partial_json"]},
                }
                return self._chunk({"tool_calls": [call]})
            if dtype == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            return b""
        if kind == "message_delta":
            self.usage.update(obj(event.get("usage")))
            self.finish = openai_finish_from_anthropic(obj(event.get("delta")).get("stop_reason"))
            return b""
        if kind == "message_stop":
            return self._chunk({}, self.finish) + self.done(openai_usage_from_anthropic(self.usage))
        if kind == "error":  # the openai SDK raises on an event carrying "error"
            err = obj(event.get("error"))
            return encode(openai_out.error(err.get("message"), err.get("type")))
        return b""  # ping, content_block_stop, signature deltas

    def end(self) -> bytes:
        return b""  # a stream without message_stop stays without [DONE]: incomplete, never cached as whole


TRANSLATION = Translation("openai", "anthropic", request, response, Stream, error)

__all__ = ["TRANSLATION", "Stream", "request", "response"]
