"""OpenAI and OpenAI-compatible adapters: chat completions, legacy completions, embeddings, Responses."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from llm_cache._wire import AZURE, OPENAI
from llm_cache.middleware import Cache
from llm_cache.middleware.providers import resolve
from llm_cache.middleware.providers.base import Usage
from llm_cache.middleware.providers.openai import ChatCompletions, Completions, Embeddings, Moderations, Responses

from .streams import assemble, replaying, splits, sse, through_cache, view

ALICE = {"authorization": "Bearer sk-alice"}


def sdk(body: bytes) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url="http://test/v1", http_client=replaying(body), max_retries=0)


# -- which paths each endpoint owns ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "model"),
    [
        ("/v1/chat/completions", "chat.completions", None),
        ("/api/v1/chat/completions", "chat.completions", None),
        ("/openai/deployments/gpt-4o-prod/chat/completions", "chat.completions", "gpt-4o-prod"),
        ("/v1/completions", "completions", None),
        ("/openai/deployments/instruct/completions", "completions", "instruct"),
        ("/v1/embeddings", "embeddings", None),
        ("/openai/deployments/ada/embeddings", "embeddings", "ada"),
        ("/v1/responses", "responses", None),
        ("/openai/v1/responses", "responses", None),
    ],
)
def test_owned_paths(path: str, name: str, model: str | None) -> None:
    route = resolve(path)
    assert route is not None
    assert (route.endpoint.name, route.model) == (name, model)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "/v1/files",
        "/v1/responses/resp_123",
        "/v1/responses/resp_123/input_items",
        "/v1/chat/completions/chatcmpl-123",
        "/v1/embeddingsx",
    ],
)
def test_non_llm_paths_are_not_owned(path: str) -> None:
    assert resolve(path) is None


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/chat/completions", "/openai/deployments/d/chat/completions", "/x/chat/completions/"],
)
def test_completions_never_claims_chat_completions_whatever_the_registry_order(path: str) -> None:
    assert Completions().match(path) is None
    assert resolve(path, (Completions(), ChatCompletions())).endpoint.name == "chat.completions"  # type: ignore[union-attr]


# -- chat completions --------------------------------------------------------------------------------

CHAT_HEAD = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_eb9dce56a8",
}
CHAT_STREAM = (
    sse(
        *(
            (None, {**CHAT_HEAD, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            for delta, finish in (
                ({"role": "assistant", "content": ""}, None),
                ({"content": "Paris"}, None),
                ({"content": "."}, None),
                ({}, "stop"),
            )
        )
    )
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("pieces", list(splits(CHAT_STREAM)))
def test_chat_stream_assembles_in_any_chunking(pieces: list[bytes]) -> None:
    final = assemble(ChatCompletions(), view("/v1/chat/completions", {"stream": True}), pieces)
    assert final is not None
    assert final["object"] == "chat.completion"
    assert final["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop", "logprobs": None}
    ]


CHAT_TOOL_CALL = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_eb9dce56a8",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
}


def test_chat_tool_call_round_trip_and_sdk_replay() -> None:
    request = view("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}})
    replay = ChatCompletions().render_stream(orjson.dumps(CHAT_TOOL_CALL), request)
    assert assemble(ChatCompletions(), request, [replay]) == CHAT_TOOL_CALL
    stream = sdk(replay).chat.completions.create(
        model="gpt-4o", messages=[], stream=True, stream_options={"include_usage": True}
    )
    calls = [call for chunk in stream if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_abc123", "get_weather", '{"location":"Paris"}')
    ]


# -- legacy completions ------------------------------------------------------------------------------

CMPL_HEAD = {
    "id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe",
    "object": "text_completion",
    "created": 1690759702,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": None,
}
CMPL_USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
CMPL_STREAM = (
    sse(
        (None, {**CMPL_HEAD, "choices": [{"text": "\n\n", "index": 0, "logprobs": None, "finish_reason": None}]}),
        (None, {**CMPL_HEAD, "choices": [{"text": "This is", "index": 0, "logprobs": None, "finish_reason": None}]}),
        (None, {**CMPL_HEAD, "choices": [{"text": " a test.", "index": 0, "logprobs": None, "finish_reason": None}]}),
        (None, {**CMPL_HEAD, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]}),
        (None, {**CMPL_HEAD, "choices": [], "usage": CMPL_USAGE}),
    )
    + b"data: [DONE]\n\n"
)
COMPLETION = {
    "id": CMPL_HEAD["id"],
    "created": CMPL_HEAD["created"],
    "model": "gpt-3.5-turbo-instruct",
    "object": "text_completion",
    "choices": [{"text": "\n\nThis is a test.", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    "usage": CMPL_USAGE,
}


@pytest.mark.parametrize("pieces", list(splits(CMPL_STREAM)))
def test_completions_stream_joins_choice_text(pieces: list[bytes]) -> None:
    final = assemble(Completions(), view("/v1/completions", {"stream": True}), pieces)
    assert final == COMPLETION


def test_completions_logprobs_are_concatenated() -> None:
    def chunk(text: str, offset: int, finish: str | None) -> dict[str, Any]:
        logprobs = {"tokens": [text], "token_logprobs": [-0.5], "top_logprobs": None, "text_offset": [offset]}
        return {**CMPL_HEAD, "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}]}

    stream = sse((None, chunk("Hi", 0, None)), (None, chunk("!", 2, "stop"))) + b"data: [DONE]\n\n"
    final = assemble(Completions(), view("/v1/completions", {"stream": True}), [stream])
    assert final is not None
    assert final["choices"][0]["logprobs"] == {
        "tokens": ["Hi", "!"],
        "token_logprobs": [-0.5, -0.5],
        "text_offset": [0, 2],
    }


def test_completions_keep_the_fields_beside_a_choices_text() -> None:
    """Azure's content filter results on a legacy completion merge as they do on a chat choice."""
    hate = {"filtered": False, "severity": "safe"}

    def chunk(text: str, filters: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        choice = {"text": text, "index": 0, "content_filter_results": filters, "finish_reason": finish}
        return None, {**CMPL_HEAD, "choices": [choice]}

    stream = sse(chunk("Hi", {"hate": hate}), chunk("!", {"violence": hate}, "stop")) + b"data: [DONE]\n\n"
    final = assemble(Completions(), view("/v1/completions", {"stream": True}), [stream])
    assert final is not None
    assert final["choices"] == [
        {
            "text": "Hi!",
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "content_filter_results": {"hate": hate, "violence": hate},
        }
    ]


def test_completions_stream_cut_before_done_is_not_stored() -> None:
    cut = CMPL_STREAM[: CMPL_STREAM.index(b"data: [DONE]")]
    assert assemble(Completions(), view("/v1/completions", {"stream": True}), [cut]) is None


def test_completions_error_event_is_not_stored() -> None:
    error = sse((None, {"error": {"message": "The server had an error", "type": "server_error"}}))
    stream = CMPL_STREAM[:200] + b"\n\n" + error + b"data: [DONE]\n\n"
    assert assemble(Completions(), view("/v1/completions", {"stream": True}), [stream]) is None


@pytest.mark.parametrize("include_usage", [False, True])
def test_completions_replay_parses_in_the_openai_sdk(include_usage: bool) -> None:
    body: dict[str, Any] = {"stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    request = view("/v1/completions", body)
    replay = Completions().render_stream(orjson.dumps(COMPLETION), request)
    stream = sdk(replay).completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say this is a test",
        stream=True,
        **({"stream_options": {"include_usage": True}} if include_usage else {}),
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "\n\nThis is a test."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].usage is not None) is include_usage


def test_completions_round_trip() -> None:
    request = view("/v1/completions", {"stream": True, "stream_options": {"include_usage": True}})
    replay = Completions().render_stream(orjson.dumps(COMPLETION), request)
    assert assemble(Completions(), request, [replay]) == COMPLETION


# -- embeddings --------------------------------------------------------------------------------------


def test_embeddings_never_stream() -> None:
    route = resolve("/v1/embeddings")
    assert route is not None and route.endpoint.streams is False
    assert route.endpoint.is_stream(route, "", {"input": "hi", "stream": True}) is False


def test_embeddings_usage_counts_prompt_tokens() -> None:
    response = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    assert Embeddings().usage(response) == Usage(8, None, None, None)


# -- Responses API -----------------------------------------------------------------------------------

RESP_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
REASONING = {
    "id": "rs_67ccd2bf17f0819081ff3bb2cf6508e6",
    "type": "reasoning",
    "summary": [{"type": "summary_text", "text": "**Recalling a capital**\n\nFrance's capital is Paris."}],
}
MESSAGE = {
    "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "The capital of France is Paris.", "annotations": [], "logprobs": []}],
}
FUNCTION_CALL = {
    "id": "fc_12345xyz",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_12345xyz",
    "name": "get_weather",
    "arguments": '{"location":"Paris, France"}',
}
RESP_USAGE = {
    "input_tokens": 328,
    "input_tokens_details": {"cached_tokens": 256, "cache_write_tokens": 64},
    "output_tokens": 52,
    "output_tokens_details": {"reasoning_tokens": 32},
    "total_tokens": 380,
}


def response(*output: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": RESP_ID,
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "o4-mini-2025-04-16",
        "output": list(output),
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": RESP_USAGE,
        "user": None,
        "metadata": {},
    }


FINAL = response(REASONING, MESSAGE)
PENDING = {**FINAL, "status": "in_progress", "output": [], "usage": None}


def live_stream(*tail: dict[str, Any]) -> bytes:
    """What api.openai.com sends for FINAL, in the order the streaming-events reference documents,
    followed by `tail` (the terminal event)."""
    rs, msg = REASONING["id"], MESSAGE["id"]
    summary = REASONING["summary"][0]
    text = MESSAGE["content"][0]
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": PENDING},
        {"type": "response.in_progress", "response": PENDING},
        {"type": "response.output_item.added", "output_index": 0, "item": {**REASONING, "summary": []}},
        {
            "type": "response.reasoning_summary_part.added",
            "item_id": rs,
            "output_index": 0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": rs,
            "output_index": 0,
            "summary_index": 0,
            "delta": "**Recalling a capital**\n\n",
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": rs,
            "output_index": 0,
            "summary_index": 0,
            "delta": "France's capital is Paris.",
        },
        {
            "type": "response.reasoning_summary_text.done",
            "item_id": rs,
            "output_index": 0,
            "summary_index": 0,
            "text": summary["text"],
        },
        {
            "type": "response.reasoning_summary_part.done",
            "item_id": rs,
            "output_index": 0,
            "summary_index": 0,
            "part": summary,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": REASONING},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**MESSAGE, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": msg,
            "output_index": 1,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        },
        *(
            {
                "type": "response.output_text.delta",
                "item_id": msg,
                "output_index": 1,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
            for piece in ("The capital", " of France", " is Paris.")
        ),
        {
            "type": "response.output_text.done",
            "item_id": msg,
            "output_index": 1,
            "content_index": 0,
            "text": text["text"],
            "logprobs": [],
        },
        {"type": "response.content_part.done", "item_id": msg, "output_index": 1, "content_index": 0, "part": text},
        {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE},
        *tail,
    ]
    return sse(*((event["type"], {**event, "sequence_number": n}) for n, event in enumerate(events)))


COMPLETED = {"type": "response.completed", "response": FINAL}


@pytest.mark.parametrize("pieces", list(splits(live_stream(COMPLETED))))
def test_responses_stream_stores_the_completed_response(pieces: list[bytes]) -> None:
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), pieces) == FINAL


def test_responses_completed_without_output_is_filled_from_finished_items() -> None:
    stream = live_stream({"type": "response.completed", "response": {**FINAL, "output": None}})
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [stream]) == FINAL


def test_responses_stream_cut_before_completed_is_not_stored() -> None:
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [live_stream()]) is None


BROKEN_ENDINGS = [
    {
        "type": "response.failed",
        "response": {
            **FINAL,
            "status": "failed",
            "usage": None,
            "error": {"code": "server_error", "message": "boom"},
        },
    },
    {
        "type": "response.incomplete",
        "response": {**FINAL, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
    },
    {"type": "error", "code": "ERR_SOMETHING", "message": "Something went wrong", "param": None},
]
"""The three ways a Responses stream says it went wrong."""


@pytest.mark.parametrize("terminal", BROKEN_ENDINGS, ids=["failed", "incomplete", "error"])
def test_responses_failed_incomplete_or_error_is_not_stored(terminal: dict[str, Any]) -> None:
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [live_stream(terminal)]) is None


@pytest.mark.parametrize("broken", BROKEN_ENDINGS, ids=["failed", "incomplete", "error"])
def test_a_responses_stream_that_went_wrong_is_not_stored_whatever_follows(broken: dict[str, Any]) -> None:
    stream = live_stream(broken, COMPLETED)  # a hostile or buggy upstream completing after failing
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [stream]) is None


@pytest.mark.parametrize(
    "final",
    [
        FINAL,
        response(MESSAGE),
        response(REASONING, FUNCTION_CALL),
        response(
            {**REASONING, "encrypted_content": "gAAAAABo...", "content": [{"type": "reasoning_text", "text": "hm"}]},
            MESSAGE,
        ),
    ],
    ids=["reasoning+text", "text", "tool-call", "encrypted-reasoning"],
)
def test_responses_round_trip(final: dict[str, Any]) -> None:
    request = view("/v1/responses", {"stream": True})
    replay = Responses().render_stream(orjson.dumps(final), request)
    for pieces in splits(replay):
        assert assemble(Responses(), request, pieces) == final


def test_responses_replay_is_a_numbered_event_sequence() -> None:
    replay = Responses().render_stream(orjson.dumps(FINAL), view("/v1/responses", {"stream": True}))
    events = [orjson.loads(line[6:]) for line in replay.split(b"\n") if line.startswith(b"data: ")]
    names = [line[7:].decode() for line in replay.split(b"\n") if line.startswith(b"event: ")]
    assert names == [event["type"] for event in events]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert "response.output_text.delta" in names and "response.reasoning_summary_text.delta" in names


def test_responses_replay_parses_in_the_openai_sdk_event_stream() -> None:
    replay = Responses().render_stream(orjson.dumps(FINAL), view("/v1/responses", {"stream": True}))
    events = list(sdk(replay).responses.create(model="o4-mini", input="Capital of France?", stream=True))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "The capital of France is Paris."
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "The capital of France is Paris."


@pytest.mark.parametrize("final", [FINAL, response(REASONING, FUNCTION_CALL)], ids=["text", "tool-call"])
def test_responses_replay_satisfies_the_sdk_stream_accumulator(final: dict[str, Any]) -> None:
    replay = Responses().render_stream(orjson.dumps(final), view("/v1/responses", {"stream": True}))
    with sdk(replay).responses.stream(model="o4-mini", input="Capital of France?") as stream:
        deltas = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        parsed = stream.get_final_response()
    expected = openai.types.responses.Response.model_validate(final)
    assert deltas == parsed.output_text == expected.output_text
    assert parsed.id == RESP_ID
    assert [item.type for item in parsed.output] == [item["type"] for item in final["output"]]
    if final is not FINAL:
        call = parsed.output[1]
        assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", FUNCTION_CALL["arguments"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "o4-mini", "input": "Capital of France?"}),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "Capital of France?"}]}),
    ],
)
@pytest.mark.parametrize(
    "hint", [{"prompt_cache_key": "tenant-7"}, {"prompt_cache_retention": "24h"}, {"safety_identifier": "user-42"}]
)
def test_cache_and_abuse_tracking_hints_do_not_change_the_key(
    path: str, body: dict[str, Any], hint: dict[str, str]
) -> None:
    cache = Cache()
    assert cache.key_for(path, body, ALICE) == cache.key_for(path, {**body, **hint, "stream": True}, ALICE)


# -- usage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "usage", "expected"),
    [
        (
            ChatCompletions(),
            {
                "prompt_tokens": 1200,
                "completion_tokens": 80,
                "total_tokens": 1280,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
            Usage(1200, 80, 1024, None),
        ),
        # DeepSeek reports cache hits at the top level; prompt_tokens already includes them.
        (
            ChatCompletions(),
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "total_tokens": 120,
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": 36,
            },
            Usage(100, 20, 64, None),
        ),
        (Completions(), CMPL_USAGE, Usage(5, 7, None, None)),
        (Responses(), RESP_USAGE, Usage(328, 52, 256, 64)),
    ],
    ids=["openai-chat", "deepseek", "completions", "responses"],
)
def test_usage_is_normalised(endpoint: Any, usage: dict[str, Any], expected: Usage) -> None:
    assert endpoint.usage({"usage": usage}) == expected
    assert endpoint.usage({}) == Usage()


def test_a_streamed_response_is_served_again_as_json_through_the_cache() -> None:
    http_client, calls = through_cache(live_stream(COMPLETED), "text/event-stream")
    client = openai.OpenAI(api_key="x", base_url="http://test/v1", http_client=http_client, max_retries=0)
    with client.responses.stream(model="o4-mini", input="Capital of France?") as stream:
        streamed = stream.get_final_response()
    cached = client.responses.with_raw_response.create(model="o4-mini", input="Capital of France?")
    assert cached.headers["x-cache"] == "HIT"
    assert cached.parse().output_text == streamed.output_text == "The capital of France is Paris."
    assert calls == ["/v1/responses"]


def test_a_responses_replay_renders_what_it_can_read_and_never_raises() -> None:
    text = {"type": "output_text", "text": "Paris", "annotations": True}  # not a list: nothing to announce
    final = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [text]}],
    }
    replay = Responses().render_stream(orjson.dumps(final), view("/v1/responses", {"stream": True}))
    assert b"response.output_text.delta" in replay and b"annotation.added" not in replay


# -- usage capture: what the cache adds to a streamed request, and hides again --------------------------

CHAT_PATH = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
        (
            {"stream": True, "stream_options": {"include_obfuscation": False}},
            {"stream": True, "stream_options": {"include_obfuscation": False, "include_usage": True}},
        ),
        ({"stream": True, "stream_options": {"include_usage": False}}, None),
        ({"stream": True, "stream_options": {"include_usage": True}}, None),
        ({"stream": True, "stream_options": "usage"}, None),
        ({"stream": False}, None),
        ({"stream": "true"}, None),
        ({}, None),
    ],
    ids=[
        "no-options",
        "options-without-usage",
        "usage-declined",
        "usage-asked",
        "options-not-object",
        "json",
        "stream-not-bool",
        "no-stream",
    ],
)
@pytest.mark.parametrize("endpoint", [ChatCompletions(), Completions()], ids=["chat", "completions"])
def test_a_stream_that_does_not_say_whether_it_wants_usage_is_sent_asking_for_it(
    endpoint: Any, body: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    """The caller's own options are kept, and an explicit `include_usage: false` is respected."""
    assert endpoint.capture_body(body) == sent


@pytest.mark.parametrize(
    ("body", "stream", "asks"),
    [
        ({}, False, True),
        ({"stream": True}, True, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, True, False),
        ({"stream": True, "stream_options": {}}, True, False),
    ],
)
def test_only_json_answers_and_streams_asking_for_it_carry_usage(
    body: dict[str, Any], stream: bool, asks: bool
) -> None:
    assert ChatCompletions().asks_for_usage(body, stream) is asks
    assert Completions().asks_for_usage(body, stream) is asks
    assert Responses().asks_for_usage(body, stream) is True


USAGE_CHUNK = {**CHAT_HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}


def filtered(pieces: list[bytes]) -> bytes:
    usage_filter = ChatCompletions().stream_filter(view(CHAT_PATH, {"stream": True}))
    return b"".join(usage_filter.feed(piece) for piece in pieces) + usage_filter.flush()


@pytest.mark.parametrize(
    "usage_event",
    [
        sse((None, USAGE_CHUNK)),
        b"data: " + orjson.dumps(USAGE_CHUNK, option=orjson.OPT_INDENT_2).replace(b"\n", b"") + b"\n\n",
        b'data: {"id": "c", "choices": [ ], "usage": {"total_tokens": 11}}\r\n\r\n',
        b'data:{"choices":[],"usage":{"total_tokens":11}}\n\n',
    ],
    ids=["compact", "spaced", "crlf", "no-space-after-data"],
)
def test_the_usage_chunk_the_cache_asked_for_is_hidden_from_the_caller_in_any_chunking(usage_event: bytes) -> None:
    stream = CHAT_STREAM.replace(b"data: [DONE]", usage_event + b"data: [DONE]")
    for pieces in splits(stream):
        assert filtered(pieces) == CHAT_STREAM


def test_the_usage_filter_keeps_every_other_event_whole_and_in_order() -> None:
    no_usage = {**CHAT_HEAD, "choices": [], "usage": None}  # an Azure prompt-filter chunk has empty choices too
    comment = b": keep-alive\n\n"
    stream = sse((None, no_usage)) + comment + CHAT_STREAM
    for pieces in splits(stream):
        assert filtered(pieces) == stream


def test_the_usage_filter_forwards_a_trailing_unterminated_event_on_flush() -> None:
    usage_filter = ChatCompletions().stream_filter(view(CHAT_PATH, {"stream": True}))
    assert usage_filter.feed(b'data: [DONE]\n\ndata: {"choices":[]') == b"data: [DONE]\n\n"
    assert usage_filter.flush() == b'data: {"choices":[]'
    assert usage_filter.flush() == b""


@pytest.mark.parametrize("size", [1, 3, 1024, 65536])
def test_an_event_too_long_to_be_usage_only_is_passed_on_as_it_arrives(size: int) -> None:
    long_event = sse((None, {**CHAT_HEAD, "choices": [{"index": 0, "delta": {"content": "a" * 100_000}}]}))
    long_event = long_event.replace(b"\n\n", b"\r\n\r\n")  # a terminator that chunks can split
    stream = long_event + CHAT_STREAM.replace(b"data: [DONE]", sse((None, USAGE_CHUNK)) + b"data: [DONE]")
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    usage_filter = ChatCompletions().stream_filter(view(CHAT_PATH, {"stream": True}))
    out = [usage_filter.feed(piece) for piece in pieces]
    passed_early = sum(len(chunk) for chunk in out[: 70_000 // size])
    assert b"".join(out) + usage_filter.flush() == long_event + CHAT_STREAM  # still hidden after it
    assert passed_early >= 70_000 - 64 * 1024 - size  # never held more than 64 KiB of it


# -- chat stream assembly: every field of every chunk -------------------------------------------------


def chat_chunk(*choices: dict[str, Any], **fields: Any) -> tuple[None, dict[str, Any]]:
    return None, {**CHAT_HEAD, "choices": list(choices), **fields}


def chat_final(*events: tuple[None, dict[str, Any]], tail: bytes = b"data: [DONE]\n\n") -> dict[str, Any] | None:
    return assemble(ChatCompletions(), view(CHAT_PATH, {"stream": True}), [sse(*events) + tail])


def test_the_usage_chunk_becomes_the_answers_usage_and_stream_only_fields_are_dropped() -> None:
    final = chat_final(
        chat_chunk({"index": 0, "delta": {"role": "assistant", "content": "Hi"}}, obfuscation="x1"),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "stop"}, usage=None, obfuscation="x2"),
        (None, {**USAGE_CHUNK, "obfuscation": "x3"}),
    )
    assert final == {
        **{k: v for k, v in CHAT_HEAD.items() if k != "object"},
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": USAGE_CHUNK["usage"],
    }


def test_a_stream_without_usage_is_assembled_without_a_usage_field() -> None:
    final = chat_final(chat_chunk({"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}))
    assert final is not None and "usage" not in final


def test_a_chunk_that_is_an_error_or_not_json_breaks_the_stream() -> None:
    ok = chat_chunk({"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"})
    assert chat_final(ok, (None, {"error": {"message": "boom"}})) is None
    assert chat_final(ok, tail=b"data: {oops\n\ndata: [DONE]\n\n") is None
    assert chat_final(ok, tail=b'data: "text"\n\ndata: [DONE]\n\n') is None


def test_nothing_after_done_is_assembled() -> None:
    ok = chat_chunk({"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"})
    late = sse(chat_chunk({"index": 0, "delta": {"content": " there"}})) + b"data: {oops\n\n"
    final = chat_final(ok, tail=b"data:  [DONE] \n\n" + late)
    assert final is not None and final["choices"][0]["message"]["content"] == "Hi"


def test_choices_are_assembled_apart_and_ordered_by_index() -> None:
    final = chat_final(
        chat_chunk({"index": 1, "delta": {"content": "B"}}, {"delta": {"content": "A"}}),
        chat_chunk(
            {"index": 1, "delta": {}, "finish_reason": "length"}, {"index": 0, "delta": {}, "finish_reason": "stop"}
        ),
    )
    assert final is not None
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in final["choices"]] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]


def test_choices_that_are_not_objects_or_not_a_list_are_skipped() -> None:
    final = chat_final(
        chat_chunk({"index": 0, "delta": {"content": "Hi"}}, "noise"),
        (None, {**CHAT_HEAD, "choices": {"index": 0}}),
        chat_chunk({"index": 0, "delta": "noise", "finish_reason": "stop"}),
    )
    assert final is not None
    assert final["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop", "logprobs": None}
    ]


def test_a_message_that_never_had_content_says_so_with_null() -> None:
    final = chat_final(chat_chunk({"index": 0, "delta": {"refusal": "No."}, "finish_reason": "stop"}))
    assert final is not None
    assert final["choices"][0]["message"] == {"refusal": "No.", "role": "assistant", "content": None, "annotations": []}


def test_a_chat_answer_has_the_field_order_and_set_of_openais_json_answer() -> None:
    """OpenAI's stream names `refusal` (null) in its first delta and never `annotations`, which its JSON
    answer's message always has (`[]` unless a web search cited pages); the answer's fields are in the
    JSON answer's order, whatever order the chunks had them in."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    tail = {"service_tier": "default", "system_fingerprint": "fp_1"}
    first = {"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None}
    last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    final = chat_final((None, {**head, **tail, "choices": [first]}), (None, {**head, **tail, "choices": [last]}))
    assert final is not None
    assert list(final) == ["id", "object", "created", "model", "choices", "service_tier", "system_fingerprint"]
    assert list(final["choices"][0]) == ["index", "message", "logprobs", "finish_reason"]
    assert final["choices"][0]["message"] == {"role": "assistant", "content": "", "refusal": None, "annotations": []}


def test_a_message_is_the_assistants_unless_its_stream_names_another_role() -> None:
    def role(*deltas: dict[str, Any]) -> Any:
        final = chat_final(*(chat_chunk({"index": 0, "delta": delta}) for delta in deltas))
        return final and final["choices"][0]["message"]["role"]

    assert role({"content": "Hi"}) == "assistant"
    assert role({"role": None}, {"content": "Hi"}) == "assistant"
    assert role({"role": "tool", "content": "Hi"}) == "tool"


def test_fields_beside_the_delta_accumulate_on_the_choice_and_on_the_answer() -> None:
    """Azure's content filter results, per choice and for the whole answer, merge like a delta."""
    hate = {"filtered": False, "severity": "safe"}
    final = chat_final(
        chat_chunk(prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {"hate": hate}}]),
        chat_chunk({"index": 0, "delta": {"content": "Hi"}, "content_filter_results": {"hate": hate}}),
        chat_chunk({"index": 0, "delta": {}, "content_filter_results": {"violence": hate}, "finish_reason": "stop"}),
        chat_chunk(prompt_filter_results=[{"prompt_index": 1}], system_fingerprint="fp_2"),
    )
    assert final is not None
    assert final["prompt_filter_results"] == [
        {"prompt_index": 0, "content_filter_results": {"hate": hate}},
        {"prompt_index": 1},
    ]
    assert final["system_fingerprint"] == "fp_2"
    assert final["choices"][0]["content_filter_results"] == {"hate": hate, "violence": hate}


def test_a_null_field_never_erases_what_a_choice_already_has() -> None:
    """A chunk after the finish reason (Azure's late content filter results) may repeat fields as null."""
    hate = {"filtered": False, "severity": "safe"}
    final = chat_final(
        chat_chunk({"index": 0, "delta": {"content": "Hi"}, "content_filter_results": {"hate": hate}}),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "stop"}),
        chat_chunk({"index": 0, "delta": None, "finish_reason": None, "content_filter_results": None}),
    )
    assert final is not None
    assert final["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "finish_reason": "stop",
            "logprobs": None,
            "content_filter_results": {"hate": hate},
        }
    ]


def test_the_last_usage_a_stream_reports_is_the_answers_usage_whole() -> None:
    """Servers that report a running count (vLLM's continuous usage stats) send usage on every chunk."""
    first = {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10, "prompt_tokens_details": {"x": 1}}
    last = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    final = chat_final(
        chat_chunk({"index": 0, "delta": {"content": "Hi"}}, usage=first),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "stop"}, usage=last),
    )
    assert final is not None and final["usage"] == last


def test_logprobs_lists_are_concatenated_and_other_values_kept() -> None:
    def token(text: str) -> dict[str, Any]:
        return {"token": text, "logprob": -0.1, "bytes": list(text.encode()), "top_logprobs": []}

    final = chat_final(
        chat_chunk({"index": 0, "delta": {"content": "Pa"}, "logprobs": {"content": [token("Pa")], "refusal": None}}),
        chat_chunk({"index": 0, "delta": {"content": "ris"}, "logprobs": "garbled"}),
        chat_chunk({"index": 0, "delta": {"content": "."}, "logprobs": {"content": [token(".")], "note": 1}}),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "stop"}),
    )
    assert final is not None
    assert final["choices"][0]["logprobs"] == {"content": [token("Pa"), token(".")], "note": 1}


def test_tool_calls_are_merged_by_index_ordered_and_numbered_by_position() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}

    final = chat_final(
        chat_chunk(call(1, id="call_b", type="function", function={"name": "b", "arguments": ""})),
        chat_chunk(call(0, id="call_a", function={"name": "a"})),
        chat_chunk(call(1, function={"arguments": '{"x":'})),
        chat_chunk(call(1, function={"arguments": "1}"})),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    )
    assert final is not None
    assert final["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "a", "arguments": ""}},
        {"id": "call_b", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
    ]


def test_a_tool_call_that_is_not_an_object_is_kept_as_it_came_and_the_answer_is_not_stored() -> None:
    request = view(CHAT_PATH, {"stream": True})
    final = chat_final(
        chat_chunk({"index": 0, "delta": {"tool_calls": ["call_a"]}}),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    )
    assert final is not None and final["choices"][0]["message"]["tool_calls"] == ["call_a"]
    assert ChatCompletions().unstorable(orjson.dumps(final), request) == (
        "invalid response: `choices[0].message.tool_calls`[0] is str, not an object"
    )


def test_the_legacy_function_call_is_merged_field_by_field() -> None:
    final = chat_final(
        chat_chunk(
            {"index": 0, "delta": {"role": "assistant", "function_call": {"name": "get_weather", "arguments": ""}}}
        ),
        chat_chunk({"index": 0, "delta": {"function_call": {"arguments": '{"city":'}}}),
        chat_chunk(
            {"index": 0, "delta": {"function_call": {"arguments": '"Paris"}'}}, "finish_reason": "function_call"}
        ),
    )
    assert final is not None
    assert final["choices"][0]["message"]["function_call"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


# -- chat replay ---------------------------------------------------------------------------------------


def replayed_chunks(endpoint: Any, final: dict[str, Any], body: dict[str, Any]) -> list[Any]:
    request = view(f"/v1/{endpoint.suffix}", body)
    replay = endpoint.render_stream(orjson.dumps(final), request)
    assert replay.endswith(b"data: [DONE]\n\n")
    return [orjson.loads(line[6:]) for line in replay.split(b"\n\n") if line.startswith(b"data: {")]


def test_a_chat_replay_sends_each_choice_whole_then_its_finish_reason() -> None:
    final = {
        **CHAT_TOOL_CALL,
        "prompt_filter_results": [{"prompt_index": 0}],
        "service_tier": "default",
        "choices": [
            {**CHAT_TOOL_CALL["choices"][0], "content_filter_results": {}},
            {"index": 1, "finish_reason": "stop", "message": {"content": "Paris", "refusal": None}},
        ],
    }
    chunks = replayed_chunks(ChatCompletions(), final, {"stream": True})
    head = {k: final[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier")}
    head["object"] = "chat.completion.chunk"
    call = CHAT_TOOL_CALL["choices"][0]["message"]["tool_calls"][0]
    assert chunks == [
        {
            **head,
            "prompt_filter_results": [{"prompt_index": 0}],
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "content_filter_results": {},
                    "delta": {"role": "assistant", "tool_calls": [{"index": 0, **call}]},
                    "finish_reason": None,
                }
            ],
        },
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {
            **head,
            "choices": [{"index": 1, "delta": {"role": "assistant", "content": "Paris"}, "finish_reason": None}],
        },
        {**head, "choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]},
    ]


def test_a_replay_asked_for_usage_sends_null_usage_on_each_chunk_then_the_usage_chunk() -> None:
    chunks = replayed_chunks(
        ChatCompletions(), CHAT_TOOL_CALL, {"stream": True, "stream_options": {"include_usage": True}}
    )
    assert [chunk["usage"] for chunk in chunks[:-1]] == [None, None]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == CHAT_TOOL_CALL["usage"]
    without = {k: v for k, v in CHAT_TOOL_CALL.items() if k != "usage"}
    asked = replayed_chunks(ChatCompletions(), without, {"stream": True, "stream_options": {"include_usage": True}})
    assert len(asked) == 2 and all(chunk["choices"] for chunk in asked)


def test_a_legacy_completion_replay_sends_text_then_finish_reason() -> None:
    final = {
        **COMPLETION,
        "choices": [{"index": 0, "text": "Hi", "finish_reason": "length", "logprobs": {"tokens": ["Hi"]}}],
    }
    chunks = replayed_chunks(Completions(), final, {"stream": True})
    head = {k: COMPLETION[k] for k in ("id", "created", "model")}
    assert chunks == [
        {
            **head,
            "object": "text_completion",
            "choices": [{"index": 0, "logprobs": {"tokens": ["Hi"]}, "text": "Hi", "finish_reason": None}],
        },
        {
            **head,
            "object": "text_completion",
            "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}],
        },
    ]
    bare = replayed_chunks(Completions(), {**COMPLETION, "choices": [{"text": None}]}, {"stream": True})
    assert bare[0]["choices"] == [{"index": 0, "text": "", "finish_reason": None, "logprobs": None}]


def test_each_legacy_completion_choice_replays_its_finish_reason_on_its_own_index() -> None:
    choices = [{"index": i, "text": "Hi", "finish_reason": reason} for i, reason in enumerate(("stop", "length"))]
    chunks = replayed_chunks(Completions(), {**COMPLETION, "choices": choices}, {"stream": True})
    assert [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks] == [
        (0, None),
        (0, "stop"),
        (1, None),
        (1, "length"),
    ]


# -- Responses stream ----------------------------------------------------------------------------------


def test_a_completed_response_that_carries_its_own_output_is_stored_as_sent() -> None:
    """`output_item.done` events only fill in a completed response that left its output out."""
    own = response(MESSAGE)
    stream = live_stream({"type": "response.completed", "response": own})
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [stream]) == own


def test_finished_items_fill_the_output_in_output_index_order() -> None:
    events = [
        {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE},
        {"type": "response.output_item.done", "output_index": "0", "item": FUNCTION_CALL},
        {"type": "response.output_item.done", "output_index": 0, "item": REASONING},
        {"type": "response.completed", "response": {**FINAL, "output": None}},
    ]
    stream = sse(*((None, event) for event in events))
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [stream]) == FINAL


@pytest.mark.parametrize(
    "bad",
    [b"data: {oops\n\n", b'data: {"type": "response.completed", "response": "done"}\n\n'],
    ids=["not-json", "completed-without-a-response"],
)
def test_an_unreadable_event_breaks_a_responses_stream(bad: bytes) -> None:
    stream = live_stream().replace(b"event: response.output_item.done", bad + b"event: response.output_item.done", 1)
    assert assemble(Responses(), view("/v1/responses", {"stream": True}), [stream + sse((None, COMPLETED))]) is None


def test_a_responses_stream_ends_at_completed_and_reads_events_by_name_or_type() -> None:
    """A `[DONE]` line (some compatible servers send one) is skipped wherever it comes; any other
    event after `response.completed` reaches the openai SDK's caller, so it leaves the stream
    incomplete."""
    named_only = b"event: response.completed\ndata: " + orjson.dumps({"response": {**FINAL, "output": None}}) + b"\n\n"
    assembler = Responses().assembler(view("/v1/responses", {"stream": True}))
    assembler.feed(b"data: [DONE]\n\n" + live_stream())
    assert not assembler.complete and assembler.result() is None
    assembler.feed(named_only + b"data: [DONE]\n\n")
    assert assembler.complete and orjson.loads(assembler.result() or b"null") == FINAL
    assembler.feed(sse((None, {"type": "error", "message": "late"})))
    assert not assembler.complete and assembler.result() is None


@pytest.mark.parametrize(
    ("status", "final"),
    [("completed", True), (None, True), ("incomplete", False), ("queued", False), ("in_progress", False)],
)
def test_only_a_completed_response_is_final(status: str | None, final: bool) -> None:
    answer = {k: v for k, v in FINAL.items() if k != "status"} if status is None else {**FINAL, "status": status}
    assert Responses().is_final(answer) is final
    assert ChatCompletions().is_final({"status": "queued"}) is True


# -- Responses replay: the events a live stream of each item sends ----------------------------------------


def replayed_events(final: dict[str, Any]) -> list[dict[str, Any]]:
    replay = Responses().render_stream(orjson.dumps(final), view("/v1/responses", {"stream": True}))
    return [orjson.loads(line[6:]) for line in replay.split(b"\n") if line.startswith(b"data: ")]


def item_events(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of `item`'s replay (as the only output item), without their sequence numbers."""
    events = replayed_events(response(item))[2:-1]
    return [{k: v for k, v in event.items() if k != "sequence_number"} for event in events]


def test_a_replay_announces_the_response_in_progress_then_completes_it() -> None:
    final = {**FINAL, "completed_at": 1741476543}
    events = replayed_events(final)
    pending = {
        **final,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    assert events[0] == {"type": "response.created", "sequence_number": 0, "response": pending}
    assert events[1] == {"type": "response.in_progress", "sequence_number": 1, "response": pending}
    assert events[-1] == {"type": "response.completed", "sequence_number": len(events) - 1, "response": final}
    assert "completed_at" not in replayed_events(FINAL)[0]["response"]


def test_a_message_replays_each_text_part_with_its_annotations_and_logprobs() -> None:
    annotation = {"type": "url_citation", "url": "https://example.com", "title": "x", "start_index": 0, "end_index": 5}
    logprob = {"token": "Paris", "logprob": -0.01, "bytes": [80], "top_logprobs": []}
    text = {"type": "output_text", "text": "Paris", "annotations": [annotation, annotation], "logprobs": [logprob]}
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [text]}
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    assert item_events(item) == [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **at, "part": {**text, "text": "", "annotations": [], "logprobs": []}},
        {"type": "response.output_text.delta", **at, "delta": "Paris", "logprobs": [logprob]},
        *(
            {"type": "response.output_text.annotation.added", **at, "annotation_index": i, "annotation": annotation}
            for i in range(2)
        ),
        {"type": "response.output_text.done", **at, "text": "Paris", "logprobs": [logprob]},
        {"type": "response.content_part.done", **at, "part": text},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]


def test_a_text_part_without_logprobs_or_status_replays_without_them() -> None:
    text = {"type": "output_text", "text": "Hi", "annotations": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": [text]}
    events = item_events(item)
    assert events[0]["item"] == {**item, "content": []}
    assert events[1]["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert events[2]["logprobs"] == []


@pytest.mark.parametrize(
    "item",
    [
        {"id": "msg_1", "type": "message", "content": [{"type": "output_text", "annotations": []}]},
        {"id": "msg_1", "type": "message", "content": [{"type": "refusal"}]},
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text"}]},
        {"id": "rs_1", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text"}]},
        {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f"},
    ],
    ids=["output-text", "refusal", "reasoning-summary", "reasoning-text", "function-call"],
)
def test_a_part_or_call_without_its_text_replays_an_empty_text(item: dict[str, Any]) -> None:
    assert [event["delta"] for event in item_events(item) if event["type"].endswith(".delta")] == [""]


def test_a_refusal_and_an_unknown_part_replay_as_parts() -> None:
    refusal = {"type": "refusal", "refusal": "I can't help with that."}
    other = {"type": "future_part", "data": 1}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": [refusal, other]}
    first = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    second = {**first, "content_index": 1}
    assert item_events(item)[1:-1] == [
        {"type": "response.content_part.added", **first, "part": {**refusal, "refusal": ""}},
        {"type": "response.refusal.delta", **first, "delta": refusal["refusal"]},
        {"type": "response.refusal.done", **first, "refusal": refusal["refusal"]},
        {"type": "response.content_part.done", **first, "part": refusal},
        {"type": "response.content_part.added", **second, "part": other},
        {"type": "response.content_part.done", **second, "part": other},
    ]


def test_reasoning_replays_its_summary_parts_and_its_text() -> None:
    item = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "S"}],
        "content": [{"type": "reasoning_text", "text": "T"}],
    }
    at = {"item_id": "rs_1", "output_index": 0}
    summary = {**at, "summary_index": 0}
    content = {**at, "content_index": 0}
    assert item_events(item) == [
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "summary": [], "content": []}},
        {"type": "response.reasoning_summary_part.added", **summary, "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", **summary, "delta": "S"},
        {"type": "response.reasoning_summary_text.done", **summary, "text": "S"},
        {"type": "response.reasoning_summary_part.done", **summary, "part": item["summary"][0]},
        {"type": "response.reasoning_text.delta", **content, "delta": "T"},
        {"type": "response.reasoning_text.done", **content, "text": "T"},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]
    encrypted = {"id": "rs_2", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"}
    assert item_events(encrypted)[0]["item"] == encrypted


@pytest.mark.parametrize(
    ("item", "field", "prefix"),
    [
        (FUNCTION_CALL, "arguments", "response.function_call_arguments"),
        (
            {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_1", "name": "sql", "input": "SELECT 1"},
            "input",
            "response.custom_tool_call_input",
        ),
    ],
    ids=["function", "custom-tool"],
)
def test_a_tool_call_replays_its_text_as_one_delta(item: dict[str, Any], field: str, prefix: str) -> None:
    at = {"item_id": item["id"], "output_index": 0}
    events = item_events(item)
    assert events[0]["item"][field] == ""
    assert events[1:] == [
        {"type": f"{prefix}.delta", **at, "delta": item[field]},
        {"type": f"{prefix}.done", **at, field: item[field]},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]


def test_an_item_without_an_id_is_announced_by_its_call_id() -> None:
    item = {k: v for k, v in FUNCTION_CALL.items() if k != "id"}
    assert item_events(item)[1]["item_id"] == "call_12345xyz"
    assert item_events({"type": "function_call", "arguments": "{}"})[1]["item_id"] == ""


@pytest.mark.parametrize(
    ("kind", "phases"),
    [
        ("web_search_call", ["in_progress", "searching", "completed"]),
        ("file_search_call", ["in_progress", "searching", "completed"]),
        ("image_generation_call", ["in_progress", "generating", "completed"]),
        ("code_interpreter_call", ["in_progress", "interpreting", "completed"]),
    ],
)
def test_a_hosted_tool_call_replays_its_progress(kind: str, phases: list[str]) -> None:
    item = {"id": "ws_1", "type": kind, "status": "completed"}
    names = [event["type"] for event in item_events(item)]
    assert names == [
        "response.output_item.added",
        *(f"response.{kind}.{phase}" for phase in phases),
        "response.output_item.done",
    ]


def test_code_interpreter_code_replays_before_it_completes() -> None:
    item = {"id": "ci_1", "type": "code_interpreter_call", "status": "completed", "code": "print(1)", "outputs": []}
    at = {"item_id": "ci_1", "output_index": 0}
    assert item_events(item)[3:6] == [
        {"type": "response.code_interpreter_call_code.delta", **at, "delta": "print(1)"},
        {"type": "response.code_interpreter_call_code.done", **at, "code": "print(1)"},
        {"type": "response.code_interpreter_call.completed", **at},
    ]


def test_an_mcp_call_replays_its_arguments_then_completes() -> None:
    item = {"id": "mcp_1", "type": "mcp_call", "name": "roll", "arguments": '{"d":6}', "server_label": "dice"}
    names = [event["type"] for event in item_events(item)]
    assert names == [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    added, delta, done = item_events(item)[:3]
    assert added["item"]["arguments"] == ""  # announced empty, then streamed as MCP's arguments
    assert (delta["delta"], done["arguments"]) == ('{"d":6}', '{"d":6}')


def test_an_item_of_no_known_type_replays_whole() -> None:
    for item in ({"id": "x_1", "type": "future_item", "data": [1]}, {"id": "x_2", "type": 7}):
        assert item_events(item) == [
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        ]


# -- what may be stored --------------------------------------------------------------------------------

CHOICE = {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop", "logprobs": None}


def chat_answer(**choice: Any) -> bytes:
    return orjson.dumps({**CHAT_TOOL_CALL, "choices": [{**CHOICE, **choice}]})


def with_call(**call: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", **call}]}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (chat_answer(index="0"), "`choices[0].index` is str"),
        (chat_answer(logprobs=[]), "`choices[0].logprobs` is list"),
        (chat_answer(message=with_call(id=1)), "`choices[0].message.tool_calls[0].id` is int"),
        (chat_answer(message=with_call(type=None, function={})), None),
        (chat_answer(message=with_call(type=["function"])), "`choices[0].message.tool_calls[0].type` is list"),
        (chat_answer(message=with_call(function="f()")), "`choices[0].message.tool_calls[0].function` is str"),
        (
            chat_answer(message=with_call(function={"name": 1})),
            "`choices[0].message.tool_calls[0].function.name` is int",
        ),
        (
            chat_answer(message=with_call(function={"name": "f", "arguments": {}})),
            "`choices[0].message.tool_calls[0].function.arguments` is dict",
        ),
        (chat_answer(message={"content": [{"type": "text", "text": "Paris"}]}), None),
        (chat_answer(message={"content": None, "tool_calls": None}), None),
        (
            orjson.dumps({"choices": [CHOICE, {**CHOICE, "index": 1, "finish_reason": 2}]}),
            "`choices[1].finish_reason` is int",
        ),
        (orjson.dumps({"choices": [CHOICE], "error": None}), None),
        (orjson.dumps([CHOICE]), "response is not a JSON object"),
        (b"Paris", "response is not valid JSON"),
    ],
)
def test_a_chat_answer_is_stored_only_when_its_replay_can_read_it(answer: bytes, reason: str | None) -> None:
    expected = reason if reason is None or reason.startswith("response") else f"invalid response: {reason}"
    assert ChatCompletions().unstorable(answer, view(CHAT_PATH)) == expected


def test_embeddings_in_base64_or_as_numbers_are_stored() -> None:
    def answer(*vectors: Any) -> bytes:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return orjson.dumps({"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1}})

    request = view("/v1/embeddings")
    assert Embeddings().unstorable(answer("AAAAAA==", [0.5, -1, 2]), request) is None
    assert Embeddings().unstorable(answer([0.1], [False]), request) == (
        "invalid response: `data[1].embedding` holds something other than numbers"
    )
    assert Embeddings().unstorable(answer([0.1]).replace(b'"usage":{', b'"usage":[{').replace(b"}}", b"}]}"), request)


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ([{"type": "message", "content": None}], None),
        ([{"type": "reasoning", "summary": [], "content": [1]}], "`output[0].content`[0] is int, not an object"),
        ([{"type": "function_call", "content": "x", "summary": "y"}], None),
        ([{"type": 3, "content": "x"}], None),
    ],
)
def test_a_response_is_stored_when_every_item_its_replay_walks_is_readable(
    output: list[dict[str, Any]], reason: str | None
) -> None:
    got = Responses().unstorable(orjson.dumps({**FINAL, "output": output}), view("/v1/responses"))
    assert got == (None if reason is None else f"invalid response: {reason}")


def test_a_response_that_is_not_completed_is_not_stored() -> None:
    assert Responses().unstorable(orjson.dumps({**FINAL, "status": "queued"}), view("/v1/responses")) == (
        "response is not final (queued, in progress or incomplete)"
    )


# -- usage details ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}, Usage(10, 2, None, None)),
        ({"prompt_tokens": 10, "prompt_tokens_details": [1], "prompt_cache_hit_tokens": 4}, Usage(10, None, 4, None)),
        (
            {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 3}, "prompt_cache_hit_tokens": 4},
            Usage(10, None, 3, None),
        ),
        ({"prompt_tokens": 0, "input_tokens": 7, "completion_tokens": 0, "output_tokens": 5}, Usage(0, 0, None, None)),
        ({"input_tokens": 7, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 0}}, Usage(7, 5, 0, None)),
        ({"prompt_tokens": "10", "completion_tokens": True}, Usage()),
    ],
    ids=["details-null", "details-not-object", "details-first", "chat-names-first", "responses-names", "not-integers"],
)
def test_usage_reads_chat_and_responses_names_and_only_integers(usage: dict[str, Any], expected: Usage) -> None:
    assert ChatCompletions().usage({"usage": usage}) == expected


def test_usage_that_is_not_an_object_counts_nothing() -> None:
    assert Responses().usage({"usage": [1, 2]}) == Usage()


# -- requests that bypass, and what the semantic cache embeds ----------------------------------------------


def test_store_true_bypasses_chat_but_store_false_or_absent_does_not() -> None:
    route = resolve(CHAT_PATH)
    assert route is not None
    assert (
        ChatCompletions().server_state(route, {}, {"store": True})
        == "`store: true` asks the provider to keep this call"
    )
    assert ChatCompletions().server_state(route, {}, {"store": False}) is None
    assert ChatCompletions().server_state(route, {}, {"store": "true"}) is None
    assert ChatCompletions().server_state(route, {}, {"data_sources": [{"type": "azure_search"}]}) == (
        "Azure On Your Data grounds the answer in a search index, which changes as documents are added"
    )


def test_responses_state_and_templates_bypass_only_when_named() -> None:
    route = resolve("/v1/responses")
    assert route is not None
    state = Responses().server_state
    assert state(route, {}, {"previous_response_id": None, "conversation": None}) is None
    assert state(route, {}, {"prompt": "pmpt_1"}) is None
    assert state(route, {}, {"tools": [{"type": "code_interpreter"}, "web_search", {"type": "web_search"}]}) is None
    assert state(route, {}, {"tools": "file_search"}) is None
    assert state(route, {}, {"tools": [{"type": "web_search"}, {"type": "file_search"}]}) == (
        "the file_search tool reads a store or container the provider holds"
    )
    assert state(route, {}, {"tools": [{"type": "code_interpreter", "container": "cntr_1"}]}) == (
        "the code_interpreter tool reads a store or container the provider holds"
    )
    assert (
        state(route, {}, {"previous_response_id": "resp_1"}) == "`previous_response_id` names state the provider holds"
    )
    assert state(route, {}, {"conversation": {"id": "conv_1"}}) == "`conversation` names state the provider holds"
    assert state(route, {}, {"prompt": {"id": "pmpt_1"}}) == (
        "`prompt` without a version uses the template's current version"
    )
    assert state(route, {}, {"prompt": {"id": "pmpt_1", "version": "2"}}) is None
    assert state(route, {}, {"store": True, "tools": []}) == "`store: true` asks the provider to keep this call"
    assert state(route, {}, {"background": True}) == (
        "`background: true` asks the provider to run and keep the call, polled for later"
    )
    assert state(route, {}, {"tools": [{"type": "mcp", "server_url": "https://mcp.example"}]}) == (
        "the mcp tool calls a remote MCP server, which answers from its own data"
    )


def test_chat_embeds_the_last_plain_user_turn_unless_it_is_named() -> None:
    ask = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert ChatCompletions().semantic_query(ask) == ({**ask, "messages": ask["messages"][:1]}, "Hi")
    named = {**ask, "messages": [{"role": "user", "content": "Hi", "name": "bob"}]}
    assert ChatCompletions().semantic_query(named) is None
    assert ChatCompletions().semantic_query({"messages": []}) is None


def test_completions_embed_a_plain_prompt_only() -> None:
    assert Completions().semantic_query({"model": "m", "prompt": "Hi"}) == ({"model": "m"}, "Hi")
    assert Completions().semantic_query({"model": "m", "prompt": ""}) is None
    assert Completions().semantic_query({"model": "m", "prompt": ["Hi"]}) is None


def test_responses_embed_the_input_unless_the_context_lives_on_the_server() -> None:
    assert Responses().semantic_query({"model": "m", "input": "Hi"}) == ({"model": "m"}, "Hi")
    assert Responses().semantic_query({"model": "m", "input": ""}) is None
    turns = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]}
    assert Responses().semantic_query(turns) == ({**turns, "input": []}, "Hi")
    assert Responses().semantic_query({"input": "Hi", "previous_response_id": None}) is None
    assert Responses().semantic_query({"input": "Hi", "conversation": "conv_1"}) is None


def test_azure_v1_paths_take_azure_credentials() -> None:
    azure, plain = resolve("/openai/v1/responses"), resolve("/v1/responses")
    assert azure is not None and plain is not None
    assert (azure.credentials, plain.credentials) == (AZURE, OPENAI)


def test_a_choice_without_an_index_replays_as_the_first() -> None:
    final = {**CHAT_TOOL_CALL, "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]}
    first, last = replayed_chunks(ChatCompletions(), final, {"stream": True})
    assert first["choices"][0]["index"] == last["choices"][0]["index"] == 0
    first, last = replayed_chunks(Completions(), {**COMPLETION, "choices": [{"text": "Hi"}]}, {"stream": True})
    assert first["choices"][0]["index"] == last["choices"][0]["index"] == 0


def test_a_tool_call_without_an_index_counts_as_the_first() -> None:
    final = chat_final(
        chat_chunk({"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "b"}}]}}),
        chat_chunk({"index": 0, "delta": {"tool_calls": [{"id": "a", "function": {"name": "a"}}]}}),
        chat_chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
    )
    assert final is not None
    assert [call["id"] for call in final["choices"][0]["message"]["tool_calls"]] == ["a", "b"]


def test_a_field_beside_the_delta_that_changes_type_takes_the_latest_value() -> None:
    final = chat_final(
        chat_chunk(extension={"a": 1}, listed=[1]),
        chat_chunk({"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}, extension="x", listed={"b": 2}),
    )
    assert final is not None and (final["extension"], final["listed"]) == ("x", {"b": 2})


@pytest.mark.parametrize(
    ("endpoint", "path", "answer", "reason"),
    [
        (ChatCompletions(), CHAT_PATH, {"choices": []}, "`choices` is empty"),
        (
            Completions(),
            "/v1/completions",
            {"choices": [{"index": 0, "finish_reason": "stop"}]},
            "`choices[0].text` is null or missing",
        ),
        (Completions(), "/v1/completions", {"choices": [{"text": "Hi", "finish_reason": "length"}]}, None),
        (Embeddings(), "/v1/embeddings", {"data": []}, "`data` is empty"),
        (Embeddings(), "/v1/embeddings", {"data": [{"embedding": [1]}], "usage": 1}, "`usage` is int"),
        (
            Responses(),
            "/v1/responses",
            {"output": [{"type": "message", "content": [1]}]},
            "`output[0].content`[0] is int, not an object",
        ),
        (
            Responses(),
            "/v1/responses",
            {"output": [{"type": "reasoning", "summary": [1]}]},
            "`output[0].summary`[0] is int, not an object",
        ),
        (Responses(), "/v1/responses", {"output": [], "usage": "x"}, "`usage` is str"),
        (Responses(), "/v1/responses", {"output": "Paris"}, "`output` is str, not a list"),
        (ChatCompletions(), CHAT_PATH, {"choices": {}}, "`choices` is dict, not a list"),
        (ChatCompletions(), CHAT_PATH, {"choices": [CHOICE], "usage": []}, "`usage` is list"),
        (
            Embeddings(),
            "/v1/embeddings",
            {"data": [{"embedding": None}]},
            "`data[0].embedding` is null or missing, not a list",
        ),
    ],
)
def test_each_endpoint_stores_only_answers_of_its_own_shape(
    endpoint: Any, path: str, answer: dict[str, Any], reason: str | None
) -> None:
    got = endpoint.unstorable(orjson.dumps(answer), view(path))
    assert got == (None if reason is None else f"invalid response: {reason}")


def test_a_tool_call_is_checked_whatever_comes_before_or_after_it() -> None:
    good = {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    two = {"content": None, "tool_calls": [{**good, "id": 1}, good]}
    assert ChatCompletions().unstorable(chat_answer(message=two), view(CHAT_PATH)) == (
        "invalid response: `choices[0].message.tool_calls[0].id` is int"
    )
    bad_content = {"content": 1, "tool_calls": [good]}
    assert ChatCompletions().unstorable(chat_answer(message=bad_content), view(CHAT_PATH)) == (
        "invalid response: `choices[0].message.content` is int"
    )
    custom = {"id": "call_1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}
    assert (
        ChatCompletions().unstorable(chat_answer(message={"content": None, "tool_calls": [custom]}), view(CHAT_PATH))
        is None
    )


@pytest.mark.parametrize("endpoint", [ChatCompletions(), Completions()], ids=["chat", "completions"])
def test_an_answer_whose_choice_never_said_why_it_stopped_is_not_stored(endpoint: Any) -> None:
    """A stream that ends (`[DONE]`) before a choice's `finish_reason`, as a proxy may end one whose
    upstream dropped, assembles into such an answer: a generation cut short, replayed as the whole."""
    message = {"content": "Hi", "tool_calls": [{"function": {}}]}
    unfinished = {"index": 0, "message": message, "text": "Hi", "finish_reason": None}
    finished = {**CHOICE, "index": 1, "text": "Paris"}
    for choices in ([unfinished], [finished, {**unfinished, "index": 2}]):
        body, request = orjson.dumps({"choices": choices}), view(CHAT_PATH)
        assert endpoint.unstorable(body, request) == "response is not final (queued, in progress or incomplete)"


# -- what telemetry reads ----------------------------------------------------------------------------------


def test_chat_telemetry_names_the_output_type_its_response_format_asks_for() -> None:
    chat = ChatCompletions()
    for kind, output in (("json_object", "json"), ("json_schema", "json"), ("text", "text")):
        assert chat.request_attributes({"response_format": {"type": kind}, "seed": 3}) == {
            "gen_ai.request.seed": 3,
            "gen_ai.output.type": output,
        }
    assert chat.request_attributes({"response_format": {"type": "grammar"}}) == {}
    assert chat.request_attributes({"response_format": "json_object"}) == {}


def test_the_sampling_parameters_telemetry_reads_are_shared_by_chat_and_legacy_completions() -> None:
    body = {
        "temperature": 0.5,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "stop": "END",
        "seed": 7,
        "max_tokens": 64,
        "n": 2,
    }
    expected = {
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.2,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.seed": 7,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.choice.count": 2,
    }
    assert ChatCompletions().request_attributes(body) == Completions().request_attributes(body) == expected
    newer = ChatCompletions().request_attributes({"max_completion_tokens": 32, "max_tokens": 64})
    assert newer == {"gen_ai.request.max_tokens": 32}  # chat's newer name wins


def test_the_parameters_telemetry_reads_from_embeddings_and_responses() -> None:
    assert Embeddings().request_attributes({"encoding_format": "float", "dimensions": 256}) == {
        "gen_ai.request.encoding_formats": ("float",),
        "gen_ai.embeddings.dimension.count": 256,
    }
    assert Responses().request_attributes({"temperature": 0.5, "top_p": 0.9, "max_output_tokens": 64}) == {
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 64,
    }


def hi(role: str = "user") -> dict[str, Any]:
    """A message in the OpenTelemetry conventions' shape."""
    return {"role": role, "parts": [{"type": "text", "content": "Hi"}]}


def test_the_messages_telemetry_reads_are_a_prompt_an_input_and_instructions() -> None:
    assert Completions().input_messages({"prompt": "Hi"}) == [hi()]
    assert Completions().input_messages({"prompt": ["Hi", "Bye"], "messages": [{"content": "Hi"}]}) == []
    responses = Responses()
    body = {"input": [{"role": "user", "content": "Hi"}], "instructions": "Be brief."}
    assert responses.input_messages(body) == [hi()]
    assert responses.input_messages({"input": "Hi"}) == [hi()]
    assert responses.system_instructions(body) == [{"type": "text", "content": "Be brief."}]


def test_the_output_telemetry_reads_of_a_response_is_its_message_items() -> None:
    output = [
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]},
        "junk",
    ]
    assert Responses().output_messages({"output": output}) == [hi("assistant")]
    assert Responses().output_messages({"output": {"type": "message"}}) == []


def test_a_responses_finish_reason_is_why_it_is_incomplete_or_else_its_status() -> None:
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert Responses().finish_reasons(incomplete) == ("max_output_tokens",)
    assert Responses().finish_reasons({"status": "completed", "incomplete_details": None}) == ("completed",)
    assert Responses().finish_reasons({"status": None}) == ()


def test_embeddings_and_moderations_hold_no_messages_and_no_finish_reasons() -> None:
    body = {"input": "Hi", "messages": [{"role": "user", "content": "Hi"}]}
    answer = {"results": [], "data": [], "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]}
    for endpoint in (Embeddings(), Moderations()):
        assert (endpoint.input_messages(body), endpoint.output_messages(answer)) == ([], [])
    assert Moderations().finish_reasons(answer) == ()


def test_a_moderation_is_stored_only_with_results() -> None:
    request = view("/v1/moderations")
    assert Moderations().unstorable(orjson.dumps({"id": "modr-1", "results": [{"flagged": False}]}), request) is None
    assert Moderations().unstorable(orjson.dumps({"id": "modr-1", "results": []}), request) == (
        "invalid response: `results` is empty"
    )


# -- embeddings input lists, served item by item -------------------------------------------------------------

NO_TOKENS = {"prompt_tokens": 0, "total_tokens": 0}


def vector(index: int, value: float) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": [value]}


def test_an_input_list_is_split_into_one_request_an_input() -> None:
    route = resolve("/v1/embeddings")
    assert route is not None
    body = {"model": "m", "input": ["a", [1, 2]]}
    assert Embeddings().items(route, body) == [{"model": "m", "input": "a"}, {"model": "m", "input": [1, 2]}]
    for given in ("a", [], [1, 2], ["a", None]):  # a list of integers is one token array
        assert Embeddings().items(route, {"model": "m", "input": given}) is None
    three = {"model": "m", "input": ["a", "b", "c"]}
    assert Embeddings().batch_body(route, three, [2, 0]) == {"model": "m", "input": ["c", "a"]}


def test_a_list_answer_is_taken_apart_by_index_and_its_tokens_are_counted_once() -> None:
    answer = {"object": "list", "model": "m", "data": [vector(1, 2), vector(0, 1)], "usage": {"prompt_tokens": 4}}
    assert Embeddings().item_answers(answer, 2) == [
        {**answer, "data": [vector(0, 1)], "usage": NO_TOKENS},
        {**answer, "data": [vector(0, 2)], "usage": NO_TOKENS},
    ]
    one = {**answer, "data": [vector(0, 1)]}
    assert Embeddings().item_answers(one, 1) == [one]


@pytest.mark.parametrize(
    "data",
    [
        [vector(0, 1)],
        [vector(0, 1), vector(0, 2)],
        [vector(0, 1), {**vector(1, 2), "index": "1"}],
        [vector(0, 1), {**vector(1, 2), "index": None}],
        [vector(0, 1), [2]],
        None,
    ],
    ids=["too-few", "an-index-twice", "an-index-not-an-integer", "no-index", "not-an-object", "no-data"],
)
def test_a_list_answer_whose_items_are_not_certain_is_not_taken_apart(data: Any) -> None:
    assert Embeddings().item_answers({"object": "list", "data": data}, 2) is None


def test_a_list_answer_is_made_of_its_items_answers_with_the_upstream_answers_usage() -> None:
    answers = [{"object": "list", "model": "m", "data": [vector(0, value)], "usage": NO_TOKENS} for value in (1, 2)]
    made = {"object": "list", "model": "m", "data": [vector(0, 1), vector(1, 2)], "usage": NO_TOKENS}
    assert Embeddings().batch_answer(answers, None) == made
    upstream = {"object": "list", "model": "m-2", "data": [vector(0, 2)], "usage": {"prompt_tokens": 2}}
    assert Embeddings().batch_answer(answers, upstream) == {**made, "model": "m-2", "usage": {"prompt_tokens": 2}}
    assert Embeddings().batch_answer(answers, {"object": "list", "model": "m-2"}) == {**made, "model": "m-2"}
    answers[1]["model"] = "m-3"  # nothing went upstream: the fields beside the data are the first item's
    assert Embeddings().batch_answer(answers, None) == made
