"""Anthropic prompt-caching breakpoints: where LiteLLM's `cache_control_injection_points` put
`cache_control` in a Messages body. The cache places them on requests in Anthropic's form
(`cache.prompt_caching`); the router on the requests it sends to an Anthropic deployment whose
`litellm_params` name points (after translating an OpenAI-format request).

This module is neutral: it imports neither `llm_cache.middleware` nor `llm_cache.router`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

MAX_BREAKPOINTS = 4
"""Anthropic refuses a request with more than four `cache_control` breakpoints."""

_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})
"""Content blocks that cannot carry `cache_control`."""


class InjectionPoint(BaseModel):
    """Where an Anthropic breakpoint goes, in LiteLLM's `cache_control_injection_points` form.

    `location: tools` marks the last tool definition. `location: message` with `role: system` marks
    the system prompt; with another role, the last message of that role; with `index`, the message
    at that position (negative counts from the end).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    location: Literal["message", "tools"] = "message"
    role: Literal["system", "user", "assistant"] | None = None
    index: int | None = None

    @model_validator(mode="after")
    def _one_target(self) -> InjectionPoint:
        if self.location == "message" and (self.role is None) == (self.index is None):
            raise ValueError("a message injection point needs exactly one of 'role' or 'index'")
        if self.location == "tools" and (self.role is not None or self.index is not None):
            raise ValueError("a tools injection point takes no 'role' or 'index'")
        return self


def mentions_cache_control(value: Any) -> bool:
    """Whether the caller placed any `cache_control` (top level, tools, system or messages)."""
    if isinstance(value, dict):
        return "cache_control" in value or any(mentions_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(mentions_cache_control(v) for v in value)
    return False


def _targets(points: tuple[InjectionPoint, ...], body: dict[str, Any]) -> list[tuple[str, int]]:
    """The blocks `points` name in this body, deduplicated, in Anthropic's render order
    (tools, system, messages): `("tools", -1)`, `("system", -1)` or `("messages", i)`."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    found: set[tuple[str, int]] = set()
    for point in points:
        if point.location == "tools":
            if isinstance(body.get("tools"), list) and body["tools"]:
                found.add(("tools", -1))
        elif point.role == "system":
            if body.get("system"):
                found.add(("system", -1))
        elif point.role is not None:
            last = next(
                (i for i in range(len(messages) - 1, -1, -1) if role_of(messages[i]) == point.role),
                None,
            )
            if last is not None:
                found.add(("messages", last))
        elif point.index is not None and -len(messages) <= point.index < len(messages):
            found.add(("messages", point.index % len(messages)))
    order = {"tools": 0, "system": 1, "messages": 2}
    return sorted(found, key=lambda target: (order[target[0]], target[1]))


def role_of(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def _mark(body: dict[str, Any], target: tuple[str, int], marker: Mapping[str, Any]) -> int:
    """Put `marker` on the last markable block of `target`; 1 if placed. Of the tools, the last one loaded
    up front: Anthropic refuses `cache_control` on a tool with `defer_loading` (tool search loads it later)."""
    section, index = target
    if section == "tools":
        tool = next((t for t in reversed(body["tools"]) if isinstance(t, dict) and not t.get("defer_loading")), None)
        if tool is None:
            return 0
        tool["cache_control"] = dict(marker)
        return 1
    if section == "system":
        blocks = _as_blocks(body["system"])
        if blocks is None or not _mark_last(blocks, marker):
            return 0
        body["system"] = blocks
        return 1
    message = body["messages"][index]
    if not isinstance(message, dict):
        return 0
    blocks = _as_blocks(message.get("content"))
    if blocks is None or not _mark_last(blocks, marker):
        return 0
    message["content"] = blocks
    return 1


def _as_blocks(content: Any) -> list[Any] | None:
    """Content as a list of blocks (a plain string becomes one text block), or None if neither."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else None
    return content if isinstance(content, list) else None


def _mark_last(blocks: list[Any], marker: Mapping[str, Any]) -> bool:
    for block in reversed(blocks):
        if isinstance(block, dict) and block.get("type") not in _UNMARKABLE and not _empty_text(block):
            block["cache_control"] = dict(marker)
            return True
    return False


def _empty_text(block: Mapping[str, Any]) -> bool:
    """A text block without text: Anthropic refuses `cache_control` on it (the caller's request, as
    written, would be accepted)."""
    return block.get("type") == "text" and not block.get("text")


def place(points: Iterable[InjectionPoint], body: dict[str, Any], marker: Mapping[str, Any]) -> int:
    """Put `marker` on the blocks `points` name in an Anthropic Messages `body`, in place; how many
    were placed. At most four: tools and system first, then the latest messages (they cover the most)."""
    targets = _targets(tuple(points), body)
    if len(targets) > MAX_BREAKPOINTS:
        fixed = [t for t in targets if t[0] != "messages"]
        latest = [t for t in targets if t[0] == "messages"][-(MAX_BREAKPOINTS - len(fixed)) :]
        targets = fixed + latest
    return sum(_mark(body, target, marker) for target in targets)


__all__ = ["MAX_BREAKPOINTS", "InjectionPoint", "mentions_cache_control", "place", "role_of"]
