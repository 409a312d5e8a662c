"""Random well-formed chat completion streams: assembled, they are the answer that was streamed;
replayed and assembled again, they are the same answer; the openai SDK reads both alike."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from llm_cache.middleware.providers.openai import ChatCompletions, ChatStreamAssembler
from llm_cache.middleware.providers.sse import encode_event

from .streams import replayed_by_cut, sse_events, view

HEAD = {"id": "chatcmpl-p", "created": 1741570283, "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_p"}
ASKS_USAGE = {"stream": True, "stream_options": {"include_usage": True}}
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if draw(st.booleans()):
        message["content"] = draw(texts)
    if draw(st.booleans()):
        message["refusal"] = draw(texts)
        message["annotations"] = []  # (OpenAI's JSON answer has them beside `refusal`; its stream never)
    shape = draw(st.sampled_from(["none", "tool_calls", "function_call", "audio"]))
    if shape == "tool_calls":
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": draw(names), "arguments": draw(texts)}}
            for i in range(draw(st.integers(1, 3)))
        ]
    elif shape == "function_call":
        message["function_call"] = {"name": draw(names), "arguments": draw(texts)}
    elif shape == "audio":
        message["audio"] = {"id": "audio_1", "data": draw(texts), "transcript": draw(texts), "expires_at": 1741573883}
    return message


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    choices = []
    for index in range(draw(st.integers(1, 2))):
        choice: dict[str, Any] = {
            "index": index,
            "message": draw(messages()),
            "finish_reason": draw(
                st.sampled_from(["stop", "tool_calls", "function_call"])
            ),  # the SDK raises on "length"
            "logprobs": None,
        }
        if draw(st.booleans()):
            choice["content_filter_results"] = {"hate": {"filtered": False, "severity": "safe"}}
        choices.append(choice)
    return {**HEAD, "object": "chat.completion", "choices": choices, "usage": USAGE}


def pieces(draw: st.DrawFn, text: str) -> list[str]:
    """`text` cut at random places (at least one piece, possibly empty)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=3)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [""]


def fragments(draw: st.DrawFn, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The deltas a provider would stream for `message`, in the order it would send them."""
    out: list[dict[str, Any]] = [{"role": "assistant"}]
    for field in ("content", "refusal"):
        if field in message:
            out += [{field: piece} for piece in pieces(draw, message[field])]
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        out.append(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        out += [
            {"tool_calls": [{"index": i, "function": {"arguments": p}}]} for p in pieces(draw, function["arguments"])
        ]
    if "function_call" in message:
        call = message["function_call"]
        out.append({"function_call": {"name": call["name"], "arguments": ""}})
        out += [{"function_call": {"arguments": p}} for p in pieces(draw, call["arguments"])]
    if "audio" in message:
        audio = message["audio"]
        out.append({"audio": {"id": audio["id"]}})
        out += [{"audio": {"transcript": p}} for p in pieces(draw, audio["transcript"])]
        out += [{"audio": {"data": p}} for p in pieces(draw, audio["data"])]
        out.append({"audio": {"expires_at": audio["expires_at"]}})
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """(an answer, a well-formed stream of it: choices' fragments interleaved at random)."""
    answer = draw(answers())
    queues = [
        [{"index": c["index"], "delta": delta, "finish_reason": None} for delta in fragments(draw, c["message"])]
        for c in answer["choices"]
    ]
    chunks = [queue.pop(0) for queue in queues]  # each choice opens in index order, as providers send them
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        chunks.append(queue.pop(0))
    events = [encode_event({**HEAD, "object": "chat.completion.chunk", "choices": [c]}) for c in chunks]
    for choice in answer["choices"]:
        last = {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
        if "content_filter_results" in choice:
            last["content_filter_results"] = choice["content_filter_results"]
        events.append(encode_event({**HEAD, "object": "chat.completion.chunk", "choices": [last]}))
    events.append(encode_event({**HEAD, "object": "chat.completion.chunk", "choices": [], "usage": USAGE}))
    return answer, b"".join(events) + b"data: [DONE]\n\n"


def assembled(stream: bytes) -> dict[str, Any]:
    assembler = ChatStreamAssembler()
    assembler.feed(stream)
    result = assembler.result()
    assert result is not None
    return orjson.loads(result)  # type: ignore[no-any-return]


def sdk_messages(stream: bytes) -> list[dict[str, Any]]:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for line in stream.split(b"\n\n"):
        data = line.removeprefix(b"data: ")
        if data and data != b"[DONE]":
            state.handle_chunk(ChatCompletionChunk.construct(**orjson.loads(data)))
    completion = state.get_final_completion().to_dict()
    return [{k: v for k, v in c["message"].items() if k != "parsed"} for c in completion["choices"]]


def expected(answer: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for choice in answer["choices"]:
        message = {"content": None, **choice["message"]}
        choices.append({**choice, "message": message})
    return {**answer, "choices": choices}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(streams())
def test_a_random_stream_assembles_into_the_answer_it_streamed(case: tuple[dict[str, Any], bytes]) -> None:
    answer, stream = case
    assert assembled(stream) == expected(answer)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(streams())
def test_a_replay_assembles_into_the_same_answer_and_the_sdk_reads_both_alike(
    case: tuple[dict[str, Any], bytes],
) -> None:
    _, stream = case
    stored = assembled(stream)
    replay = ChatCompletions().render_stream(orjson.dumps(stored), view("/v1/chat/completions", ASKS_USAGE))
    assert assembled(replay) == stored
    assert sdk_messages(replay) == sdk_messages(stream)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(streams())
def test_a_random_stream_is_replayed_from_its_cut_event_by_event(case: tuple[dict[str, Any], bytes]) -> None:
    _, stream = case
    replay = replayed_by_cut(ChatCompletions(), view("/v1/chat/completions", ASKS_USAGE), [stream])
    assert replay is not None and sse_events(replay) == sse_events(stream)
