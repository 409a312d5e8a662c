"""Provider streams written out event by event, for the differential fidelity suite.

Each fixture is the list of events one provider stream sends (OpenAI chat completions chunks here),
covering every documented delta type and the extensions of compatible servers. They are replayed
by the fake provider (`FakeProvider.stream_next`) so the cache sees them exactly as sent.
"""

from __future__ import annotations

from typing import Any

HEAD = {
    "id": "chatcmpl-fixture",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_eb9dce56a8",
    "service_tier": "default",
}
USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


def chunk(*choices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), "usage": None, **fields}


def delta(index: int = 0, finish_reason: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": finish_reason}


def finished(events: list[dict[str, Any]], reason: str = "stop") -> list[Any]:
    """`events`, then the finish chunk, the usage chunk and `[DONE]`."""
    return [*events, chunk(delta(finish_reason=reason)), chunk(usage=USAGE, choices=[]), "[DONE]"]


def _tool(index: int, **fields: Any) -> dict[str, Any]:
    return {"index": index, **fields}


CHAT_STREAMS: dict[str, list[Any]] = {
    "text": finished(
        [
            chunk(delta(role="assistant", content="", refusal=None)),
            chunk(delta(content="Hello")),
            chunk(delta(content=", world")),
        ]
    ),
    "parallel tool calls": finished(
        [
            chunk(delta(role="assistant", content=None)),
            chunk(
                delta(
                    tool_calls=[
                        _tool(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""})
                    ]
                )
            ),
            chunk(delta(tool_calls=[_tool(0, function={"arguments": '{"city": "Pa'})])),
            chunk(
                delta(
                    tool_calls=[_tool(1, id="call_b", type="function", function={"name": "get_time", "arguments": ""})]
                )
            ),
            chunk(delta(tool_calls=[_tool(0, function={"arguments": 'ris"}'})])),
            chunk(delta(tool_calls=[_tool(1, function={"arguments": '{"tz": "CET"}'})])),
        ],
        "tool_calls",
    ),
    "legacy function call": finished(
        [
            chunk(delta(role="assistant", content=None, function_call={"name": "get_weather", "arguments": ""})),
            chunk(delta(function_call={"arguments": '{"location":'})),
            chunk(delta(function_call={"arguments": ' "Boston, MA"}'})),
        ],
        "function_call",
    ),
    "audio": finished(
        [
            chunk(delta(role="assistant", content=None, audio={"id": "audio_abc", "transcript": "Hel"})),
            chunk(delta(audio={"transcript": "lo there", "data": "UklGRiQAAABXQVZF"})),
            chunk(delta(audio={"data": "Zm10IBAAAAABAAEA", "expires_at": 4102444800})),  # (2100: not yet expired)
        ]
    ),
    "refusal": finished(
        [
            chunk(delta(role="assistant", content=None, refusal="")),
            chunk(delta(refusal="I can't help")),
            chunk(delta(refusal=" with that.")),
        ]
    ),
    "logprobs": finished(
        [
            chunk(
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "Hi"},
                    "logprobs": {
                        "content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}],
                        "refusal": None,
                    },
                    "finish_reason": None,
                }
            ),
            chunk(
                {
                    "index": 0,
                    "delta": {"content": "!"},
                    "logprobs": {
                        "content": [{"token": "!", "logprob": -1.5, "bytes": [33], "top_logprobs": []}],
                        "refusal": None,
                    },
                    "finish_reason": None,
                }
            ),
        ]
    ),
    "two choices": [
        chunk(delta(0, role="assistant", content="Yes"), delta(1, role="assistant", content="No")),
        chunk(delta(1, content=", never")),
        chunk(delta(0, content=", always")),
        chunk(delta(0, finish_reason="stop"), delta(1, finish_reason="stop")),
        chunk(usage=USAGE, choices=[]),
        "[DONE]",
    ],
    "openrouter reasoning": [
        chunk(
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": "",
                    "reasoning": "Let me",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "Let me", "format": "unknown", "index": 0}
                    ],
                },
                "finish_reason": None,
                "native_finish_reason": None,
            },
            provider="OpenAI",
        ),
        chunk(
            {
                "index": 0,
                "delta": {
                    "reasoning": " think.",
                    "reasoning_details": [{"type": "reasoning.text", "text": " think.", "index": 0}],
                },
                "finish_reason": None,
                "native_finish_reason": None,
            },
            provider="OpenAI",
        ),
        chunk(delta(content="Four."), provider="OpenAI"),
        chunk(
            {"index": 0, "delta": {}, "finish_reason": "stop", "native_finish_reason": "completed"},
            provider="OpenAI",
        ),
        chunk(usage=USAGE, choices=[], provider="OpenAI"),
        "[DONE]",
    ],
    "azure content filters": [
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {
                    "prompt_index": 0,
                    "content_filter_results": {
                        "hate": {"filtered": False, "severity": "safe"},
                        "jailbreak": {"filtered": False, "detected": False},
                    },
                }
            ],
        },
        chunk(
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
                "logprobs": None,
                "content_filter_results": {},
            }
        ),
        chunk(
            {
                "index": 0,
                "delta": {"content": "Safe answer."},
                "finish_reason": None,
                "logprobs": None,
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            }
        ),
        chunk(
            {
                "index": 0,
                "delta": {},
                "finish_reason": "stop",
                "logprobs": None,
                "content_filter_results": {"protected_material_text": {"filtered": False, "detected": False}},
            }
        ),
        chunk(usage=USAGE, choices=[]),
        "[DONE]",
    ],
}
