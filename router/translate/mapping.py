"""Finish reasons and token usage between the families: the one place these tables live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
ANTHROPIC_TO_OPENAI_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
OPENAI_TO_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: Gemini ``finishReason`` -> OpenAI ``finish_reason`` (a function call turns ``stop`` into ``tool_calls``).
GEMINI_TO_OPENAI_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def openai_finish_from_anthropic(stop_reason: Any) -> str:
    return ANTHROPIC_TO_OPENAI_FINISH.get(stop_reason if isinstance(stop_reason, str) else "", "stop")


def anthropic_stop_from_openai(finish_reason: Any) -> str:
    return OPENAI_TO_ANTHROPIC_STOP.get(finish_reason if isinstance(finish_reason, str) else "", "end_turn")


def openai_finish_from_gemini(reason: Any, called: bool) -> str | None:
    """``None`` while the candidate goes on; a function call makes ``STOP`` a ``tool_calls``."""
    if reason is None:
        return None
    if called and reason == "STOP":
        return "tool_calls"
    return GEMINI_TO_OPENAI_FINISH.get(reason if isinstance(reason, str) else "", "stop")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai_usage_from_anthropic(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI counts cached and cache-written tokens inside ``prompt_tokens``; Anthropic reports them apart."""
    fresh, read, written = (
        _int(usage.get(k)) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    prompt, completion = fresh + read + written, _int(usage.get("output_tokens"))
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and "thinking_tokens" in details:
        out["completion_tokens_details"] = {"reasoning_tokens": _int(details.get("thinking_tokens"))}
    return out


def openai_usage_from_gemini(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Gemini's ``thoughtsTokenCount`` is outside ``candidatesTokenCount``; OpenAI's reasoning tokens are inside."""
    prompt = _int(usage.get("promptTokenCount"))
    thoughts = _int(usage.get("thoughtsTokenCount"))
    completion = _int(usage.get("candidatesTokenCount")) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _int(usage.get("cachedContentTokenCount"))},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def anthropic_usage_from_openai(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``openai_usage_from_anthropic``: cached tokens move out of the input count."""
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    read, written = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
    out: dict[str, Any] = {
        "input_tokens": max(0, _int(usage.get("prompt_tokens")) - read - written),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }
    reasoning = usage.get("completion_tokens_details")
    if isinstance(reasoning, Mapping) and "reasoning_tokens" in reasoning:
        out["output_tokens_details"] = {"thinking_tokens": _int(reasoning.get("reasoning_tokens"))}
    return out


__all__ = [
    "ANTHROPIC_TO_OPENAI_FINISH",
    "anthropic_stop_from_openai",
    "openai_finish_from_anthropic",
    "openai_finish_from_gemini",
    "GEMINI_TO_OPENAI_FINISH",
    "OPENAI_TO_ANTHROPIC_STOP",
    "anthropic_usage_from_openai",
    "openai_usage_from_anthropic",
    "openai_usage_from_gemini",
]
