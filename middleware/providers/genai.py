"""What the OpenTelemetry GenAI conventions read from a request or an answer, in their terms.

Request parameters (`gen_ai.request.*`) are declared as data by each endpoint (`Endpoint.request_params`)
and read here; messages are turned into the conventions' input/output message shape
(`[{"role": ..., "parts": [{"type": "text", "content": ...}]}]`) for opt-in content capture. Only
telemetry calls this, and only for a span that records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

MAX_STRINGS = 8
"""Most values of a list parameter (stop sequences) a span records, each cut to `MAX_STRING_CHARS` (kept as
written otherwise: a stop sequence is often a line break, and a span attribute is not a log line)."""
MAX_STRING_CHARS = 128

Kind = Literal["number", "int", "strings", "count"]
RequestParams = tuple[tuple[str, str, Kind], ...]
"""(body field, attribute name after `gen_ai.request.` or a whole `gen_ai.` name, kind of value)."""


def request_attributes(source: Mapping[str, Any], params: RequestParams) -> dict[str, Any]:
    """The conventions' request attributes for the parameters present in `source` (wrong types are left out)."""
    out: dict[str, Any] = {}
    for field, name, kind in params:
        value = source.get(field)
        if value is None or isinstance(value, bool):
            continue
        attribute = name if name.startswith("gen_ai.") else "gen_ai.request." + name
        if kind == "number" and isinstance(value, (int, float)):
            out[attribute] = float(value)
        elif kind == "int" and isinstance(value, int):
            out.setdefault(attribute, value)  # the first field listed wins (max_completion_tokens over max_tokens)
        elif kind == "count" and isinstance(value, int) and value != 1:
            out[attribute] = value
        elif kind == "strings":
            values = [value] if isinstance(value, str) else value
            if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
                out[attribute] = tuple(v[:MAX_STRING_CHARS] for v in values[:MAX_STRINGS])
    return out


# -- messages ---------------------------------------------------------------------------------------

_ROLES = {"model": "assistant", "developer": "system"}


def message(role: Any, content: Any, finish_reason: Any = None) -> dict[str, Any]:
    """One message in the conventions' shape from a provider's role and content (text or parts)."""
    out: dict[str, Any] = {"role": _ROLES.get(str(role), str(role)), "parts": parts(content)}
    if finish_reason is not None:
        out["finish_reason"] = str(finish_reason)
    return out


def messages(items: Any, content_field: str = "content") -> list[dict[str, Any]]:
    """Messages from a provider's list of `{role, <content_field>}` objects (a string: one user message)."""
    if isinstance(items, str):
        return [message("user", items)]
    if not isinstance(items, list):
        return []
    return [message(item.get("role", "user"), item.get(content_field)) for item in items if isinstance(item, dict)]


def parts(content: Any) -> list[dict[str, Any]]:
    """A provider's message content as the conventions' parts: text, tool calls and their results;
    anything else is named by its type only (images and files are not copied into telemetry)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return [{"type": "text", "content": str(content)}]
    return [_part(item) for item in content]


def _part(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"type": "text", "content": item}
    if not isinstance(item, dict):
        return {"type": "text", "content": str(item)}
    kind = item.get("type")
    text = item.get("text")
    if isinstance(text, str) and kind in (None, "text", "input_text", "output_text"):
        return {"type": "text", "content": text}
    if kind == "tool_use":  # Anthropic
        return {"type": "tool_call", "id": item.get("id"), "name": item.get("name"), "arguments": item.get("input")}
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": item.get("tool_use_id"), "response": item.get("content")}
    call = item.get("functionCall") or item.get("toolUse")  # Gemini, Bedrock Converse
    if isinstance(call, dict):
        arguments = call.get("args", call.get("input"))
        return {
            "type": "tool_call",
            "id": call.get("id", call.get("toolUseId")),
            "name": call.get("name"),
            "arguments": arguments,
        }
    result = item.get("functionResponse") or item.get("toolResult")
    if isinstance(result, dict):
        response = result.get("response", result.get("content"))
        return {"type": "tool_call_response", "id": result.get("id", result.get("toolUseId")), "response": response}
    return {"type": str(kind) if kind else next(iter(item), "unknown")}


def openai_output(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Chat completion choices (or legacy completion choices) as output messages."""
    out = []
    for choice in response.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        reply = choice.get("message")
        if isinstance(reply, dict):
            found = message(reply.get("role", "assistant"), reply.get("content"), choice.get("finish_reason"))
            for call in reply.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    tool = {"type": "tool_call", "id": call.get("id"), "name": function.get("name")}
                    found["parts"].append({**tool, "arguments": function.get("arguments")})
            out.append(found)
        elif "text" in choice:
            out.append(message("assistant", choice.get("text"), choice.get("finish_reason")))
    return out


def choice_finish_reasons(
    response: Mapping[str, Any], choices: str = "choices", field: str = "finish_reason"
) -> tuple[str, ...]:
    """The finish reason of every choice (candidate) that has one."""
    found = response.get(choices)
    if not isinstance(found, list):
        return ()
    return tuple(str(choice[field]) for choice in found if isinstance(choice, dict) and choice.get(field))


__all__ = [
    "RequestParams",
    "choice_finish_reasons",
    "message",
    "messages",
    "openai_output",
    "parts",
    "request_attributes",
]
