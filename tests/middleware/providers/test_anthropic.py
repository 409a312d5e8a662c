"""Anthropic Messages adapter: paths, stream assembly, replay through the real SDK, usage."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from llm_cache.middleware.providers import resolve
from llm_cache.middleware.providers.anthropic import Messages
from llm_cache.middleware.providers.base import Usage

from .streams import assemble, replaying, splits, sse, through_cache, view

MESSAGES = "/v1/messages"
USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 1,
    "service_tier": "standard",
}
HEAD = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "stop_sequence": None,
}


def message(*content: dict[str, Any], stop_reason: str = "end_turn", output_tokens: int = 15) -> dict[str, Any]:
    return {
        **HEAD,
        "content": list(content),
        "stop_reason": stop_reason,
        "usage": {**USAGE, "output_tokens": output_tokens},
    }


def live_stream(
    *blocks: tuple[dict[str, Any], list[dict[str, Any]]],
    stop_reason: str = "end_turn",
    output_tokens: int = 15,
    end: bool = True,
) -> bytes:
    """What api.anthropic.com sends: message_start, a ping, start/deltas/stop per block, message_delta, message_stop."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {"type": "message_start", "message": {**HEAD, "content": [], "stop_reason": None, "usage": USAGE}},
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, (start, deltas) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    if end:
        events.append(("message_stop", {"type": "message_stop"}))
    return sse(*events)


def text_delta(text: str) -> dict[str, Any]:
    return {"type": "text_delta", "text": text}


TEXT_STREAM = live_stream(({"type": "text", "text": ""}, [text_delta("Hello"), text_delta("!")]))
TEXT = message({"type": "text", "text": "Hello!"})

THINKING_STREAM = live_stream(
    (
        {"type": "thinking", "thinking": "", "signature": ""},
        [
            {"type": "thinking_delta", "thinking": "I need to find the GCD of 1071 and 462 "},
            {"type": "thinking_delta", "thinking": "using the Euclidean algorithm."},
            {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
        ],
    ),
    ({"type": "text", "text": ""}, [text_delta("The greatest common divisor is 21.")]),
    output_tokens=120,
)
THINKING = message(
    {
        "type": "thinking",
        "thinking": "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.",
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
    },
    {"type": "text", "text": "The greatest common divisor is 21."},
    output_tokens=120,
)

TOOL_STREAM = live_stream(
    ({"type": "text", "text": ""}, [text_delta("Okay, let's check the weather for San Francisco, CA:")]),
    (
        {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}},
        [
            {"type": "input_json_delta", "partial_json": ""},
            {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
            {"type": "input_json_delta", "partial_json": 'ncisco, CA", "unit": "fahrenheit"}'},
        ],
    ),
    stop_reason="tool_use",
    output_tokens=89,
)
TOOL = message(
    {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
    {
        "type": "tool_use",
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "name": "get_weather",
        "input": {"location": "San Francisco, CA", "unit": "fahrenheit"},
    },
    stop_reason="tool_use",
    output_tokens=89,
)

CITATION = {
    "type": "char_location",
    "cited_text": "The grass is green.",
    "document_index": 0,
    "document_title": "Example Document",
    "start_char_index": 0,
    "end_char_index": 20,
}
CITED_STREAM = live_stream(
    (
        {"type": "text", "text": "", "citations": []},
        [{"type": "citations_delta", "citation": CITATION}, text_delta("the grass is green")],
    ),
)
CITED = message({"type": "text", "text": "the grass is green", "citations": [CITATION]})

CASES = [(TEXT_STREAM, TEXT), (THINKING_STREAM, THINKING), (TOOL_STREAM, TOOL), (CITED_STREAM, CITED)]
IDS = ["text", "thinking", "tool_use", "citations"]

# Blocks a live stream sends whole in content_block_start (or with input_json_delta for server tools).
SERVER_TOOLS = message(
    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},
    {
        "type": "server_tool_use",
        "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
        "name": "web_search",
        "input": {"query": "weather in Paris"},
    },
    {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
        "content": [
            {
                "type": "web_search_result",
                "url": "https://weather.example/paris",
                "title": "Paris weather",
                "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgxNC1kNjNjNTk1ZWI3Y",
                "page_age": "2 hours ago",
            }
        ],
    },
    {"type": "text", "text": "It is sunny in Paris."},
)
REPLAYED = [TEXT, THINKING, TOOL, CITED, SERVER_TOOLS]
REPLAYED_IDS = [*IDS, "server-tools"]


# -- paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/messages", "/anthropic/v1/messages", "/api/proxy/v1/messages/"])
def test_messages_is_owned_under_any_base_path(path: str) -> None:
    route = resolve(path)
    assert route is not None and route.endpoint.name == "messages" and route.endpoint.family == "anthropic"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages/count_tokens",
        "/v1/messages/batches",
        "/v1/messages/batches/msgbatch_01/results",
        "/v1/models",
        "/v1/files",
        "/v1/complete",
    ],
)
def test_other_anthropic_paths_are_not_owned(path: str) -> None:
    assert resolve(path) is None


# -- assembly ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "expected"), CASES, ids=IDS)
def test_stream_assembles_to_the_message_in_any_chunking(stream: bytes, expected: dict[str, Any]) -> None:
    for pieces in splits(stream):
        assert assemble(Messages(), view(MESSAGES, {"stream": True}), pieces) == expected


def test_message_delta_usage_is_merged_not_replaced() -> None:
    stream = TEXT_STREAM.replace(
        b'"usage":{"output_tokens":15}', b'"usage":{"output_tokens":15,"input_tokens":null,"cache_read_input_tokens":7}'
    )
    final = assemble(Messages(), view(MESSAGES, {"stream": True}), [stream])
    assert final is not None
    assert final["usage"] == {**USAGE, "output_tokens": 15, "cache_read_input_tokens": 7}


def test_stream_cut_before_message_stop_is_not_stored() -> None:
    cut = live_stream(({"type": "text", "text": ""}, [text_delta("Hello")]), end=False)
    assert assemble(Messages(), view(MESSAGES, {"stream": True}), [cut]) is None


def test_error_event_breaks_the_stream() -> None:
    error = sse(("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    stream = TEXT_STREAM.replace(b"event: message_delta", error + b"event: message_delta")
    assert assemble(Messages(), view(MESSAGES, {"stream": True}), [stream]) is None


def test_tool_input_that_is_not_json_breaks_the_stream() -> None:
    stream = TOOL_STREAM.replace(b'\\"unit\\": \\"fahrenheit\\"}', b'\\"unit\\": ')
    assert stream != TOOL_STREAM
    assert assemble(Messages(), view(MESSAGES, {"stream": True}), [stream]) is None


# -- replay --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("final", REPLAYED, ids=REPLAYED_IDS)
def test_round_trip(final: dict[str, Any]) -> None:
    request = view(MESSAGES, {"stream": True})
    replay = Messages().render_stream(orjson.dumps(final), request)
    assert assemble(Messages(), request, [replay]) == final


def test_replay_names_every_event() -> None:
    replay = Messages().render_stream(orjson.dumps(TOOL), view(MESSAGES, {"stream": True}))
    names = [line[7:] for line in replay.split(b"\n") if line.startswith(b"event: ")]
    data = [orjson.loads(line[6:])["type"].encode() for line in replay.split(b"\n") if line.startswith(b"data: ")]
    assert names == data
    assert names[0] == b"message_start" and names[-2:] == [b"message_delta", b"message_stop"]


def sdk(body: bytes) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="x", base_url="http://test", http_client=replaying(body), max_retries=0)


PARAMS: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello"}],
}


@pytest.mark.parametrize("final", REPLAYED, ids=REPLAYED_IDS)
def test_replay_gives_the_sdk_stream_helper_the_stored_message(final: dict[str, Any]) -> None:
    replay = Messages().render_stream(orjson.dumps(final), view(MESSAGES, {"stream": True}))
    with sdk(replay).messages.stream(**PARAMS) as stream:
        got = stream.get_final_message()
    assert got.to_dict(exclude_none=True) == anthropic.types.Message.model_validate(final).to_dict(exclude_none=True)


def test_replay_parses_as_raw_sdk_events() -> None:
    replay = Messages().render_stream(orjson.dumps(THINKING), view(MESSAGES, {"stream": True}))
    events = list(sdk(replay).messages.create(stream=True, **PARAMS))
    thinking = "".join(
        e.delta.thinking for e in events if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    )
    assert thinking == THINKING["content"][0]["thinking"]
    assert events[-1].type == "message_stop"


# -- usage ---------------------------------------------------------------------------------------------


def test_usage_counts_cache_reads_and_writes_as_input() -> None:
    usage = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "output_tokens": 300,
    }
    assert Messages().usage({"usage": usage}) == Usage(3050, 300, 2000, 1000)


def test_usage_without_cache_fields() -> None:
    assert Messages().usage({"usage": {"input_tokens": 25, "output_tokens": 15}}) == Usage(25, 15, None, None)
    assert Messages().usage({}) == Usage()


def test_a_streamed_tool_call_is_served_again_as_json_through_the_cache() -> None:
    http_client, calls = through_cache(TOOL_STREAM, "text/event-stream")
    client = anthropic.Anthropic(api_key="x", base_url="http://test", http_client=http_client, max_retries=0)
    with client.messages.stream(**PARAMS) as stream:
        streamed = stream.get_final_message()
    cached = client.messages.with_raw_response.create(**PARAMS)
    assert cached.headers["x-cache"] == "HIT"
    assert cached.parse().content[1].input == streamed.content[1].input == TOOL["content"][1]["input"]
    assert calls == ["/v1/messages"]
