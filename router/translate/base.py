"""What every translator shares: the outgoing request, refusals, and small shape helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import orjson

_EMPTY: Mapping[str, Any] = {}

#: The most characters `dropped_names` says: the names come from the caller's body, as many as it has.
_DROPPED_MAX = 1024

#: Anthropic requires ``max_tokens``; an OpenAI request may leave it out. LiteLLM's default too.
DEFAULT_MAX_TOKENS = 4096


class Unsupported(ValueError):
    """The target cannot honour these request fields (dotted paths, e.g. ``logprobs``, ``messages[2].name``);
    ``became``: the format they are named in, when the caller's request was translated twice (compose).
    The message names them as `dropped_names` does: they are the caller's own keys."""

    def __init__(self, params: list[str], target: str, became: str | None = None) -> None:
        self.params = params
        self.target = target
        named = ", ".join(dropped_names(params))
        if became is not None:
            named += f" (as the {became} field{'s' if len(params) > 1 else ''} the request became)"
        super().__init__(
            f"The {target} deployment cannot honour: {named}. Remove them, or set drop_params: true to drop them."
        )


def dropped_names(dropped: list[str]) -> list[str]:
    """Field names a deployment cannot honour, as the dropped-params header, the attempt's span and the
    400 refusing them say them. A name is the caller's (a body's key may hold any character): each is
    percent-encoded outside `[A-Za-z0-9_.~-]` and `[]`, so it is ASCII with no control character, CR,
    LF or comma of its own, and names past `_DROPPED_MAX` characters are counted (`+N more`), not listed."""
    names: list[str] = []
    size = 0
    for i, name in enumerate(dropped):
        quoted = quote(name, safe="[]")
        more = f"+{len(dropped) - i} more"
        if size + len(quoted) + 1 + len(more) > _DROPPED_MAX:
            names.append(more)
            break
        names.append(quoted)
        size += len(quoted) + 1
    return names


class Refusals:
    """Collects the fields a translation cannot carry; ``check`` raises unless they may be dropped."""

    __slots__ = ("params",)

    def __init__(self) -> None:
        self.params: list[str] = []

    def add(self, name: str) -> None:
        self.params.append(name)

    def check(self, drop: bool, target: str) -> list[str]:
        if self.params and not drop:
            raise Unsupported(self.params, target)
        return self.params


@dataclass
class Outgoing:
    """A translated request: the target's endpoint (``path``), its body, and what was dropped."""

    path: str
    body: dict[str, Any]
    dropped: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""


class StreamTranslator(Protocol):
    """Sans-I/O: raw bytes of the target's stream in, bytes of the caller's stream out."""

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...


@dataclass(frozen=True)
class Translation:
    """One direction (caller's API -> target family): request, answer, stream and error translators."""

    source: str
    target: str
    request: Callable[[dict[str, Any], str, bool, bool], Outgoing]  # (doc, model, stream, drop)
    response: Callable[[bytes, dict[str, Any]], bytes]  # (target's body, caller's request)
    stream: Callable[[dict[str, Any]], StreamTranslator]  # (caller's request)
    error: Callable[[int, bytes], bytes]  # (status, target's error body)


def obj(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one: JSON from callers and providers is read defensively."""
    return value if isinstance(value, Mapping) else _EMPTY


def seq(value: Any) -> list[Any]:
    """``value`` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def position(value: Any) -> int:
    """An ``index`` field as an int (0 when it is anything else)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def stop_list(stop: Any, refused: Refusals) -> list[str] | None:
    """OpenAI's ``stop`` (a string or a list of them) as a list; anything else is refused."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    refused.add("stop")
    return None


def leftovers(doc: Mapping[str, Any], handled: frozenset[str], neutral: Mapping[str, Any], refusals: Refusals) -> None:
    """Refuse every field not ``handled``, unless null or at its ``neutral`` (no-effect) value."""
    for key, value in doc.items():
        if key in handled or value is None:
            continue
        if key in neutral and neutral[key] == value:
            continue
        refusals.add(key)


def walk(messages: Any, refused: Refusals) -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """``(messages[i], role, message)`` for each OpenAI message; a non-object or a ``name`` is refused."""
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            refused.add(where)
            continue
        if m.get("name") is not None:  # participant names: only OpenAI has them
            refused.add(f"{where}.name")
        yield where, m.get("role"), m


def functions(tools: Any, refused: Refusals) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Each OpenAI function tool with its ``function``; other tool types (``custom``, built-ins) are refused."""
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        function = tool.get("function") if isinstance(tool, Mapping) and tool.get("type") == "function" else None
        if isinstance(function, Mapping):
            out.append((tool, function))
        else:
            refused.add(f"tools[{i}].type")
    return out


def tool_calls(calls: Any, where: str, refused: Refusals) -> list[tuple[Any, Any, dict[str, Any]]]:
    """``(id, name, arguments)`` of an assistant message's tool calls; arguments not a JSON object are refused."""
    out = []
    for j, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, Mapping) else None
        args = parse_json(function.get("arguments") or "{}") if isinstance(function, Mapping) else None
        if isinstance(function, Mapping) and isinstance(args, dict):
            out.append((call.get("id"), function.get("name"), args))
        else:
            refused.add(f"{where}.tool_calls[{j}]")
    return out


def split_data_url(url: Any) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> (``image/png``, ``AAAA``); ``None`` for anything else."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[: -len(";base64")] or "application/octet-stream", data


def text_of(content: Any) -> str | None:
    """The text of a string or a list of text parts; ``None`` when any part is not text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            return None
        texts.append(part["text"])
    return "".join(texts)


def parse_json(text: Any) -> Any:
    """The document, or ``None`` for anything that is not JSON (or nests too deeply)."""
    if not isinstance(text, (str, bytes)):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # also integers beyond 64 bits, which the standard parser reads
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return None


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON; orjson, with the standard encoder for what it refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def now() -> int:
    """``created`` for answers from families that do not send one."""
    return int(time.time())


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Outgoing",
    "Refusals",
    "StreamTranslator",
    "Translation",
    "Unsupported",
    "dumps",
    "functions",
    "leftovers",
    "now",
    "obj",
    "position",
    "seq",
    "parse_json",
    "split_data_url",
    "stop_list",
    "text_of",
    "tool_calls",
    "walk",
]
