"""OpenAI chat completions served by a Gemini generateContent deployment: request out, answer and stream back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import openai_out
from .base import (
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
    text_of,
    tool_calls,
    walk,
)
from .mapping import openai_finish_from_gemini, openai_usage_from_gemini
from .openai_to_anthropic import THINKING_BUDGETS
from .sse import encode

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
        "top_k",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
        # Hints that change no answer (abuse tracking, prompt-cache routing): not forwarded.
        "user",
        "prompt_cache_key",
        "safety_identifier",
    }
)
NEUTRAL: Mapping[str, Any] = {"logprobs": False, "store": False, "service_tier": "auto", "parallel_tool_calls": True}

#: OpenAI request field -> Gemini ``generationConfig`` field, copied as they are.
GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


# ----------------------------------------------------------------------------- request


def request(doc: dict[str, Any], model: str, stream: bool, drop: bool) -> Outgoing:
    refused = Refusals()
    leftovers(doc, HANDLED, NEUTRAL, refused)
    system, contents = _contents(doc.get("messages"), refused)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {gemini: doc[key] for key, gemini in GENERATION.items() if doc.get(key) is not None}
    limit = doc.get("max_completion_tokens")
    limit = doc.get("max_tokens") if limit is None else limit
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = stop_list(doc.get("stop"), refused)
    if stop is not None:
        config["stopSequences"] = stop
    _response_format(doc.get("response_format"), config, refused)
    _reasoning(doc.get("reasoning_effort"), config, refused)
    if config:
        out["generationConfig"] = config
    if doc.get("tools"):
        out["tools"] = [{"functionDeclarations": _functions(doc["tools"], refused)}]
    choice = _tool_choice(doc.get("tool_choice"), refused)
    if choice is not None:
        out["toolConfig"] = {"functionCallingConfig": choice}
    dropped = refused.check(drop, "gemini")
    if stream:
        return Outgoing(f"/v1beta/models/{model}:streamGenerateContent", out, dropped, query="alt=sse")
    return Outgoing(f"/v1beta/models/{model}:generateContent", out, dropped)


def _contents(messages: Any, refused: Refusals) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    names: dict[str, Any] = {}  # tool call id -> function name: Gemini answers a function by name
    for where, role, m in walk(messages, refused):
        if role in ("system", "developer"):
            system += _parts(m.get("content"), where, refused)
        elif role == "user":
            _append(out, "user", _parts(m.get("content"), where, refused))
        elif role == "assistant":
            parts = [] if m.get("content") is None else _parts(m.get("content"), where, refused)
            for id, name, args in tool_calls(m.get("tool_calls"), where, refused):
                if isinstance(id, str):
                    names[id] = name
                parts.append({"functionCall": {"name": name, "args": args}})
            _append(out, "model", parts)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            text = text_of(m.get("content"))
            if name is None or text is None:
                refused.add(f"{where}.tool_call_id" if name is None else f"{where}.content")
                continue
            _append(out, "user", [{"functionResponse": {"name": name, "response": {"content": text}}}])
        else:
            refused.add(f"{where}.role")
    return system, out


def _append(out: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if out and out[-1]["role"] == role:
        out[-1]["parts"] += parts
    else:
        out.append({"role": role, "parts": parts})


def _parts(content: Any, where: str, refused: Refusals) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for j, part in enumerate(map(obj, seq(content))):
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": part.get("text", "")})
            continue
        image = obj(part.get("image_url") if kind == "image_url" else None)
        inline = split_data_url(obj(part.get("file")).get("file_data") if kind == "file" else image.get("url"))
        if inline is None:  # Gemini reads images and files inline; it does not fetch URLs
            refused.add(f"{where}.content[{j}]")
            continue
        if image.get("detail") not in (None, "auto"):
            refused.add(f"{where}.content[{j}].image_url.detail")
        parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
    return parts


def _functions(tools: Any, refused: Refusals) -> list[dict[str, Any]]:
    out = []
    for _, function in functions(tools, refused):
        declaration = {"name": function.get("name")}
        if function.get("description") is not None:
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        out.append(declaration)
    return out


def _tool_choice(choice: Any, refused: Refusals) -> dict[str, Any] | None:
    if choice is None:
        return None
    modes = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    refused.add("tool_choice")
    return None


def _response_format(fmt: Any, config: dict[str, Any], refused: Refusals) -> None:
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if fmt is None or kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    schema = fmt.get("json_schema") if kind == "json_schema" else None
    if isinstance(schema, Mapping) and isinstance(schema.get("schema"), Mapping):
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = schema["schema"]
    else:
        refused.add("response_format")


def _reasoning(effort: Any, config: dict[str, Any], refused: Refusals) -> None:
    if effort is None:
        return
    budget = 0 if effort == "none" else THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        refused.add("reasoning_effort")
    else:
        config["thinkingConfig"] = {"thinkingBudget": budget}


# ----------------------------------------------------------------------------- answer


def _message(candidate: Mapping[str, Any], calls_before: int = 0) -> tuple[dict[str, Any], bool]:
    """An OpenAI message (or delta) from a candidate's parts; ``True`` when it calls functions."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in map(obj, seq(obj(candidate.get("content")).get("parts"))):
        if "functionCall" in part:
            call = obj(part["functionCall"])
            index = calls_before + len(calls)
            calls.append(
                {
                    "index": index,
                    "id": call.get("id") if isinstance(call.get("id"), str) else f"call_{index}",
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": dumps(obj(call.get("args"))).decode()},
                }
            )
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else text).append(part["text"])
    message: dict[str, Any] = {}
    if text:
        message["content"] = "".join(text)
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, bool(calls)


def response(body: bytes, caller: dict[str, Any]) -> bytes:
    doc = parse_json(body)
    if not isinstance(doc, Mapping):
        return body
    choices = []
    for k, candidate in enumerate(map(obj, seq(doc.get("candidates")))):
        message, called = _message(candidate)
        for call in message.get("tool_calls", []):
            del call["index"]
        choices.append(
            {
                "index": position(candidate.get("index", k)),
                "message": {"role": "assistant", "content": message.get("content"), "refusal": None}
                | {key: message[key] for key in ("tool_calls", "reasoning_content") if key in message},
                "logprobs": None,
                "finish_reason": openai_finish_from_gemini(candidate.get("finishReason"), called) or "stop",
            }
        )
    usage = openai_usage_from_gemini(obj(doc.get("usageMetadata")))
    return openai_out.completion(doc.get("responseId"), doc.get("modelVersion"), choices, usage)


def error(status: int, body: bytes) -> bytes:
    """Gemini's ``{"error": {code, message, status}}`` as OpenAI's ``{"error": {message, type, ...}}``."""
    return openai_out.error_from(body, "status")


class Stream(openai_out.ChunkStream):
    """Gemini's ``alt=sse`` chunks as OpenAI ``chat.completion.chunk`` events; ``[DONE]`` once a chunk finished."""

    def __init__(self, caller: dict[str, Any]) -> None:
        super().__init__(caller)
        self.usage: Mapping[str, Any] = {}
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self.finished = False

    def event(self, event: Mapping[str, Any]) -> bytes:
        if "error" in event:
            err = obj(event["error"])
            return encode(openai_out.error(err.get("message"), err.get("status")))
        self.id = event.get("responseId", self.id)
        self.model = event.get("modelVersion", self.model)
        if isinstance(event.get("usageMetadata"), Mapping):
            self.usage = event["usageMetadata"]
        choices = []
        for k, candidate in enumerate(map(obj, seq(event.get("candidates")))):
            index = position(candidate.get("index", k))
            delta, called = _message(candidate, self.calls.get(index, 0))
            self.calls[index] = self.calls.get(index, 0) + len(delta.get("tool_calls", []))
            if index not in self.started:
                self.started.add(index)
                delta = {"role": "assistant", **delta}
            finish = openai_finish_from_gemini(candidate.get("finishReason"), self.calls[index] > 0)
            self.finished = self.finished or finish is not None
            choices.append({"index": index, "delta": delta, "logprobs": None, "finish_reason": finish})
        return self.chunk(choices) if choices else b""

    def end(self) -> bytes:
        if not self.finished:  # cut short: no [DONE], so the stream is never taken as complete
            return b""
        return self.done(openai_usage_from_gemini(self.usage))


TRANSLATION = Translation("openai", "gemini", request, response, Stream, error)

__all__ = ["TRANSLATION", "Stream", "request", "response"]
