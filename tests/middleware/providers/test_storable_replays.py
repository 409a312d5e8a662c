"""Storable means replayable: whatever an adapter lets the Recorder store renders as its stream, reads
as usage, and assembles back into an answer that is storable again. Property-based: realistic answers
of every streaming endpoint with any part replaced by any JSON value."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers import Endpoint, RequestView

from .streams import view

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
"""Any JSON value."""

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "logprobs": None, "finish_reason": "stop"},
        {
            "index": 1,
            "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10, "prompt_tokens_details": {}},
}
COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "Paris", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "error": None,
    "model": "gpt-4o-mini",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Paris", "annotations": []},
                {"type": "refusal", "refusal": "no"},
            ],
        },
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{}"},
    ],
    "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7, "input_tokens_details": {"cached_tokens": 0}},
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Paris", "citations": [{"type": "char_location", "cited_text": "x"}]},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0},
}
GENERATED = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Paris"}, {"functionCall": {"name": "f", "args": {}}}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
    "modelVersion": "gemini-2.0-flash",
    "responseId": "r1",
}
BEDROCK_CLAUDE = "/model/anthropic.claude-3-5-sonnet-20241022-v2:0/invoke-with-response-stream"
CASES = [
    (view("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}), CHAT),
    (view("/v1/completions", {"stream": True}), COMPLETION),
    (view("/v1/responses", {"stream": True}), RESPONSE),
    (view("/v1/messages", {"stream": True}), MESSAGE),
    (view("/v1beta/models/gemini-2.0-flash:streamGenerateContent", query="alt=sse"), GENERATED),
    (view("/v1beta/models/gemini-2.0-flash:streamGenerateContent"), GENERATED),
    (view(BEDROCK_CLAUDE), MESSAGE),
]


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `value` a part can be replaced, the root excluded."""
    found = [at] if at else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*at, index))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of `value` with the part at `path` set to `new` (unchanged if the path is gone)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and head in value:
        return {**value, head: replaced(value[head], rest, new)}
    if isinstance(value, list) and isinstance(head, int) and head < len(value):
        return [*value[:head], replaced(value[head], rest, new), *value[head + 1 :]]
    return value


@st.composite
def mutated(draw: st.DrawFn) -> tuple[RequestView, bytes]:
    """A realistic answer of one endpoint with up to three parts replaced by any JSON value."""
    request, answer = draw(st.sampled_from(CASES))
    places = paths(answer)
    for _ in range(draw(st.integers(0, 3))):
        answer = replaced(answer, draw(st.sampled_from(places)), draw(JSON))
    return request, orjson.dumps(answer)


def replays(endpoint: Endpoint, request: RequestView, body: bytes) -> bytes | None:
    """Render `body` as the stream a hit sends, read it as telemetry does, and assemble it again."""
    parsed = orjson.loads(body)
    endpoint.usage(parsed)
    endpoint.response_model(parsed)
    endpoint.response_id(parsed)
    stream = endpoint.render_stream(body, request)
    assembler = endpoint.assembler(request)
    assembler.feed(stream)
    return assembler.result()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_every_storable_answer_replays_as_a_stream_that_is_storable_again(case: tuple[RequestView, bytes]) -> None:
    request, body = case
    endpoint = request.route.endpoint
    if endpoint.unstorable(body, request) is not None:
        return
    again = replays(endpoint, request, body)
    assert again is not None, "the replayed stream did not assemble into a complete answer"
    assert endpoint.unstorable(again, request) is None


def test_the_realistic_answers_themselves_are_storable_and_replay() -> None:
    """The property above is not vacuous: the unmutated answers pass and round-trip."""
    for request, answer in CASES:
        body = orjson.dumps(answer)
        endpoint = request.route.endpoint
        assert endpoint.unstorable(body, request) is None, request.route.endpoint.name
        again = replays(endpoint, request, body)
        assert again is not None and endpoint.unstorable(again, request) is None
