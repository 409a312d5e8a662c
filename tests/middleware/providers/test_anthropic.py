"""Anthropic Messages adapter: paths, stream assembly, replay through the real SDK, usage."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import orjson
import pytest

from llm_cache.middleware import _exact_json as exact_json
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


# -- stream integrity: what breaks a stream, what a finished one ignores -------------------------------

STREAM_VIEW = view(MESSAGES, {"stream": True})


def with_event_before(stream: bytes, marker: bytes, extra: bytes) -> bytes:
    """`stream` with `extra` inserted before the event named `marker`."""
    assert marker in stream
    return stream.replace(b"event: " + marker, extra + b"event: " + marker, 1)


def test_an_event_that_is_not_json_breaks_the_stream() -> None:
    garbage = b"event: content_block_delta\ndata: {not json\n\n"
    assert assemble(Messages(), STREAM_VIEW, [with_event_before(TEXT_STREAM, b"message_delta", garbage)]) is None


def test_an_event_that_is_json_but_not_an_object_breaks_the_stream() -> None:
    array = b"event: content_block_delta\ndata: [1, 2]\n\n"
    assert assemble(Messages(), STREAM_VIEW, [with_event_before(TEXT_STREAM, b"message_delta", array)]) is None


def test_a_delta_for_a_block_that_never_started_breaks_the_stream() -> None:
    stray = sse(("content_block_delta", {"type": "content_block_delta", "index": 5, "delta": text_delta("lost")}))
    assert assemble(Messages(), STREAM_VIEW, [with_event_before(TEXT_STREAM, b"message_delta", stray)]) is None


def test_events_before_message_start_break_the_stream() -> None:
    early = sse(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}))
    assert assemble(Messages(), STREAM_VIEW, [early + TEXT_STREAM]) is None


def test_a_message_start_without_a_message_breaks_the_stream() -> None:
    stream = TEXT_STREAM.replace(b'"message":{', b'"message":null,"was":{', 1)
    assert assemble(Messages(), STREAM_VIEW, [stream]) is None


def test_content_the_message_start_carries_is_the_start_of_the_message() -> None:
    """Blocks already in `message_start` keep their places; the stream's own blocks are numbered after them."""
    first = {"type": "text", "text": "Hello"}
    stream = TEXT_STREAM.replace(b'"content":[]', b'"content":' + orjson.dumps([first]), 1).replace(
        b'"index":0', b'"index":1'
    )
    assert assemble(Messages(), STREAM_VIEW, [stream]) == message(first, {"type": "text", "text": "Hello!"})


def test_pings_anywhere_are_ignored() -> None:
    ping = sse(("ping", {"type": "ping"}))
    stream = ping + with_event_before(TEXT_STREAM, b"content_block_stop", ping)
    assert assemble(Messages(), STREAM_VIEW, [stream]) == TEXT


@pytest.mark.parametrize(
    "late",
    [
        sse(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text_delta(" late")})),
        sse(("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        b"data: {not json\n\n",
    ],
    ids=["delta", "error", "garbage"],
)
def test_an_event_after_message_stop_but_a_ping_leaves_the_stream_incomplete(late: bytes) -> None:
    """The anthropic SDK reads a stream to its end: a late delta joins its caller's message and an
    `error` raises, so the message as of `message_stop` is not the answer the caller got."""
    ping = sse(("ping", {"type": "ping"}))
    assembler = Messages().assembler(STREAM_VIEW)
    assembler.feed(TEXT_STREAM + ping + b"data: [DONE]\n\n")
    assert assembler.complete and orjson.loads(assembler.result() or b"null") == TEXT
    assembler.feed(late + ping)
    assert not assembler.complete and assembler.result() is None


def test_an_event_is_read_by_its_sse_name_when_its_data_has_no_type() -> None:
    stream = TEXT_STREAM.replace(b'data: {"type":"message_stop"}', b"data: {}")
    assert stream != TEXT_STREAM
    assert assemble(Messages(), STREAM_VIEW, [stream]) == TEXT


def test_several_citations_on_one_block_are_kept_in_order() -> None:
    second = {**CITATION, "cited_text": "The sky is blue.", "start_char_index": 20, "end_char_index": 36}
    stream = live_stream(
        (
            {"type": "text", "text": "", "citations": []},
            [
                {"type": "citations_delta", "citation": CITATION},
                text_delta("the grass is green"),
                {"type": "citations_delta", "citation": second},
                text_delta(" and the sky is blue"),
            ],
        ),
    )
    expected = message(
        {"type": "text", "text": "the grass is green and the sky is blue", "citations": [CITATION, second]}
    )
    assert assemble(Messages(), STREAM_VIEW, [stream]) == expected
    request = view(MESSAGES, {"stream": True})
    assert assemble(Messages(), request, [Messages().render_stream(orjson.dumps(expected), request)]) == expected


def test_a_later_signature_replaces_the_earlier_one_as_the_sdk_does() -> None:
    stream = live_stream(
        (
            {"type": "thinking", "thinking": "", "signature": "placeholder"},
            [
                {"type": "thinking_delta", "thinking": "hm"},
                {"type": "signature_delta", "signature": "first"},
                {"type": "signature_delta", "signature": "second"},
            ],
        ),
    )
    final = assemble(Messages(), STREAM_VIEW, [stream])
    assert final is not None and final["content"] == [{"type": "thinking", "thinking": "hm", "signature": "second"}]


def test_a_tool_called_without_arguments_keeps_its_empty_input() -> None:
    start = {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
    stream = live_stream((start, [{"type": "input_json_delta", "partial_json": ""}]), stop_reason="tool_use")
    assert assemble(Messages(), STREAM_VIEW, [stream]) == message(start, stop_reason="tool_use")


def test_unknown_delta_types_are_ignored() -> None:
    stream = live_stream(
        ({"type": "text", "text": ""}, [text_delta("Hello"), {"type": "future_delta", "text": "?"}, text_delta("!")])
    )
    assert assemble(Messages(), STREAM_VIEW, [stream]) == TEXT


def test_blocks_are_ordered_by_index_and_events_without_one_address_the_first() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {**HEAD, "content": [], "usage": USAGE}}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        ),
        ("content_block_start", {"type": "content_block_start", "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": text_delta("second")}),
        ("content_block_delta", {"type": "content_block_delta", "delta": text_delta("first")}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    final = assemble(Messages(), STREAM_VIEW, [sse(*events)])
    assert final is not None
    assert final["content"] == [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]


def test_the_message_delta_sets_stop_fields_and_keeps_the_start_usage() -> None:
    stream = TEXT_STREAM.replace(
        b'"delta":{"stop_reason":"end_turn","stop_sequence":null}',
        b'"delta":{"stop_reason":"stop_sequence","stop_sequence":"###"}',
    )
    final = assemble(Messages(), STREAM_VIEW, [stream])
    assert final is not None
    assert (final["stop_reason"], final["stop_sequence"]) == ("stop_sequence", "###")
    assert final["usage"] == {**USAGE, "output_tokens": 15}


def test_the_stream_is_complete_only_once_message_stop_arrives() -> None:
    assembler = Messages().assembler(STREAM_VIEW)
    head, tail = TEXT_STREAM.split(b"event: message_stop")
    assembler.feed(head)
    assert not assembler.complete and assembler.result() is None
    assembler.feed(b"event: message_stop" + tail)
    assert assembler.complete


# -- what a replay sends -------------------------------------------------------------------------------


def replayed_events(final: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of `final`'s replay (numbers read exactly, as the replay writes them)."""
    replay = Messages().render_stream(exact_json.dumps(final), STREAM_VIEW)
    return [exact_json.loads(line[6:]) for line in replay.split(b"\n") if line.startswith(b"data: ")]


def test_the_replay_starts_with_an_empty_unfinished_message_and_a_ping() -> None:
    start, ping = replayed_events(TEXT)[:2]
    assert start == {
        "type": "message_start",
        "message": {**TEXT, "content": [], "stop_reason": None, "stop_sequence": None},
    }
    assert ping == {"type": "ping"}


def test_the_replayed_message_delta_carries_the_stop_fields_and_the_cumulative_counts() -> None:
    final = {
        **TEXT,
        "stop_reason": "pause_turn",
        "stop_sequence": None,
        "stop_details": {"type": "refusal"},
        "container": {"id": "container_1", "expires_at": "2026-12-06T18:00:00Z"},
        "usage": {**USAGE, "server_tool_use": {"web_search_requests": 1}},
    }
    delta = replayed_events(final)[-2]
    assert delta == {
        "type": "message_delta",
        "delta": {
            "stop_reason": "pause_turn",
            "stop_sequence": None,
            "stop_details": {"type": "refusal"},
            "container": final["container"],
        },
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "server_tool_use": {"web_search_requests": 1},
        },
    }


def test_a_message_stored_without_usage_replays_zero_output_tokens() -> None:
    final = {k: v for k, v in TEXT.items() if k != "usage"}
    assert replayed_events(final)[-2]["usage"] == {"output_tokens": 0}
    assert replayed_events({**final, "stop_details": None})[-2]["delta"] == {
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }


def block_events(final: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in replayed_events(final) if e["type"].startswith("content_block")]


def test_a_text_block_replays_its_citations_before_its_text() -> None:
    assert block_events(CITED) == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "", "citations": []}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": CITATION}},
        {"type": "content_block_delta", "index": 0, "delta": text_delta("the grass is green")},
        {"type": "content_block_stop", "index": 0},
    ]
    assert block_events(TEXT)[0]["content_block"] == {"type": "text", "text": ""}


def test_thinking_replays_its_signature_only_when_it_has_one() -> None:
    """As the API streams it: the block starts with an empty signature, which the signature delta fills."""
    events = block_events(THINKING)
    signed = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert signed == ["thinking_delta", "signature_delta", "text_delta"]
    assert events[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    unsigned = message({"type": "thinking", "thinking": "hm"})
    events = block_events(unsigned)
    assert events[0]["content_block"] == {"type": "thinking", "thinking": ""}
    assert [e["delta"] for e in events if e["type"] == "content_block_delta"] == [
        {"type": "thinking_delta", "thinking": "hm"}
    ]


def test_tool_input_replays_as_one_json_delta_and_an_empty_input_as_an_empty_one() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"n": 12345678901234567890123}}
    events = block_events(message(call))
    assert events[0]["content_block"] == {**call, "input": {}}
    assert events[1]["delta"] == {"type": "input_json_delta", "partial_json": '{"n": 12345678901234567890123}'}
    empty = block_events(message({**call, "input": {}}))
    assert empty[1]["delta"] == {"type": "input_json_delta", "partial_json": ""}


def test_tool_input_replays_spelt_as_the_api_streams_it() -> None:
    """The API streams tool input as `{"city": "Paris", "days": [1, 2]}` (a space after each `:` and `,`
    between tokens, text as is); clients that show the raw input (LangChain's `partial_json`, its tool
    call chunks' `args`) read the replay as they read the original."""
    given = {"city": 'Zürich, "Altstadt": north', "days": [1, 2], "deep": {"n": 12345678901234567890123, "e": {}}}
    call = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": given}
    partial = block_events(message(call))[1]["delta"]["partial_json"]
    deep = '"deep": {"n": 12345678901234567890123, "e": {}}'
    assert partial == '{"city": "Zürich, \\"Altstadt\\": north", "days": [1, 2], ' + deep + "}"
    assert json.loads(partial) == given


def test_blocks_without_deltas_replay_whole_in_their_start() -> None:
    blocks = SERVER_TOOLS["content"]
    events = block_events(message(blocks[0], blocks[2]))
    assert [e["type"] for e in events] == ["content_block_start", "content_block_stop"] * 2
    assert [e["content_block"] for e in events[::2]] == [blocks[0], blocks[2]]


# -- what may be stored --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": "completion"}, "`type` is 'completion', not 'message'"),
        ({"content": None}, "`content` is null or missing, not a list"),
        ({"usage": [1]}, "`usage` is list"),
        ({"stop_reason": 1}, "`stop_reason` is int"),
        ({"content": [{"text": "Paris"}]}, "`content[0].type` is null or missing"),
        ({"content": [{"type": "text"}]}, "`content[0].text` is null or missing"),
        ({"content": [{"type": "thinking", "thinking": ["x"]}]}, "`content[0].thinking` is list"),
        ({"content": [{"type": "redacted_thinking", "data": 1}]}, "`content[0].data` is int"),
        ({"content": [{"type": "server_tool_use", "input": "{}"}]}, "`content[0].input` is str"),
        ({"content": [{"type": "mcp_tool_use", "input": None}]}, "`content[0].input` is null or missing"),
    ],
)
def test_a_message_the_replay_cannot_read_is_not_stored(changes: dict[str, Any], reason: str) -> None:
    assert Messages().unstorable(orjson.dumps({**TEXT, **changes}), STREAM_VIEW) == f"invalid response: {reason}"


@pytest.mark.parametrize(
    "changes",
    [
        {"usage": None, "stop_reason": None},
        {"content": []},
        {"content": [{"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": {"error": 1}}]},
        {"content": SERVER_TOOLS["content"]},
    ],
    ids=["unfinished-fields", "empty", "unknown-block", "server-tools"],
)
def test_a_message_of_any_known_or_unknown_blocks_is_stored(changes: dict[str, Any]) -> None:
    assert Messages().unstorable(orjson.dumps({**TEXT, **changes}), STREAM_VIEW) is None


def test_a_request_naming_a_container_bypasses_the_cache() -> None:
    route = resolve(MESSAGES)
    assert route is not None
    assert Messages().server_state(route, {}, {"container": "container_1"}) == (
        "`container` names a code-execution container the provider holds"
    )
    assert Messages().server_state(route, {}, {"container": None}) is None
    assert Messages().server_state(route, {}, {}) is None


def test_usage_without_fresh_input_has_no_input_total_and_ignores_non_integers() -> None:
    assert Messages().usage({"usage": {"cache_read_input_tokens": 5, "output_tokens": 3}}) == Usage(None, 3, 5, None)
    assert Messages().usage({"usage": {"input_tokens": True, "output_tokens": 2.0}}) == Usage()
    assert Messages().usage({"usage": {"input_tokens": 4, "cache_read_input_tokens": 6}}) == Usage(10, None, 6, None)
    assert Messages().usage({"usage": [1]}) == Usage()


def test_the_last_plain_user_turn_is_what_the_semantic_cache_embeds() -> None:
    body = {**PARAMS, "system": "Be brief.", "messages": [*PARAMS["messages"], {"role": "user", "content": "Paris?"}]}
    assert Messages().semantic_query(body) == ({**body, "messages": PARAMS["messages"]}, "Paris?")
    assert Messages().semantic_query({**PARAMS, "messages": [{"role": "assistant", "content": "Hi"}]}) is None


def test_events_missing_optional_parts_are_read_as_empty() -> None:
    """A start without content or usage, a block start without its block (or its citations list),
    deltas without a delta."""
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message"}}),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text_delta("Hi")}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": CITATION}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta"}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert assemble(Messages(), STREAM_VIEW, [sse(*events)]) == {
        "id": "msg_1",
        "type": "message",
        "content": [{"text": "Hi", "citations": [CITATION]}],
        "usage": {},
    }


def test_citations_that_are_not_a_list_replay_untouched_in_the_block_start() -> None:
    block = {"type": "text", "text": "Hi", "citations": {"unexpected": True}}
    events = block_events(message(block))
    assert events[0]["content_block"] == {**block, "text": ""}
    assert [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"] == ["text_delta"]


def test_a_stream_without_event_lines_is_read_by_each_events_type() -> None:
    bare = b"".join(line + b"\n" for line in TEXT_STREAM.split(b"\n") if not line.startswith(b"event: "))
    assert assemble(Messages(), STREAM_VIEW, [bare]) == TEXT


def test_a_block_or_delta_without_its_string_reads_it_as_empty() -> None:
    stream = live_stream(
        (
            {"type": "thinking"},
            [
                {"type": "thinking_delta"},
                {"type": "thinking_delta", "thinking": "hm"},
                {"type": "signature_delta"},
            ],
        ),
        ({"type": "text"}, [{"type": "text_delta"}, text_delta("Hi")]),
        ({"type": "tool_use", "id": "t", "name": "f", "input": {}}, [{"type": "input_json_delta"}]),
    )
    final = assemble(Messages(), STREAM_VIEW, [stream])
    assert final is not None
    assert final["content"] == [
        {"type": "thinking", "thinking": "hm", "signature": ""},
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    ]


def test_a_stop_sequence_replays_in_the_message_delta() -> None:
    final = {**TEXT, "stop_reason": "stop_sequence", "stop_sequence": "###"}
    assert replayed_events(final)[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}
    assert assemble(Messages(), STREAM_VIEW, [Messages().render_stream(orjson.dumps(final), STREAM_VIEW)]) == final
