"""Bedrock ConverseStream: how its event-stream frames assemble into the Converse answer (and what
breaks or leaves it unfinished), and the events a stored answer replays as. (Random streams:
test_converse_stream_properties.py; boto3 end to end: tests/middleware/test_bedrock.py.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llm_cache.middleware.providers.converse import ConverseStreamAssembler, events, render
from llm_cache.middleware.providers.eventstream import EventStreamDecoder, encode_message

from .streams import splits

EVENT = {":content-type": "application/json", ":message-type": "event"}
STOP = ("messageStop", {"stopReason": "end_turn"})
METADATA = ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}})


def frames(*found: tuple[str, dict[str, Any]]) -> bytes:
    """Each event as Bedrock frames it, its payload padded with `p` as Bedrock pads it."""
    padded = ((kind, orjson.dumps({**payload, "p": "abc"})) for kind, payload in found)
    return b"".join(encode_message({":event-type": kind, **EVENT}, payload) for kind, payload in padded)


def feed(*pieces: bytes) -> ConverseStreamAssembler:
    assembler = ConverseStreamAssembler()
    for piece in pieces:
        assembler.feed(piece)
    return assembler


def answer(*pieces: bytes) -> dict[str, Any] | None:
    result = feed(*pieces).result()
    return None if result is None else orjson.loads(result)


def delta(index: int, value: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "contentBlockDelta", {"contentBlockIndex": index, "delta": value}


def stop(index: int) -> tuple[str, dict[str, Any]]:
    return "contentBlockStop", {"contentBlockIndex": index}


def content(*found: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    final = answer(frames(("messageStart", {"role": "assistant"}), *found, STOP, METADATA))
    assert final is not None
    return final["output"]["message"]["content"]


# -- assembly ----------------------------------------------------------------------------------------

TOOL_START = ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}})
STREAM = frames(
    ("messageStart", {"role": "assistant"}),
    delta(0, {"text": "Par"}),
    delta(0, {"text": "is"}),
    stop(0),
    TOOL_START,
    delta(1, {"toolUse": {"input": '{"city": '}}),
    delta(1, {"toolUse": {"input": '"Paris"}'}}),
    stop(1),
    ("messageStop", {"stopReason": "tool_use", "additionalModelResponseFields": {"x": 1}}),
    ("metadata", {"usage": {"inputTokens": 3}, "metrics": {"latencyMs": 10}}),
)
ANSWER = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [{"text": "Paris"}, {"toolUse": {"toolUseId": "t1", "name": "w", "input": {"city": "Paris"}}}],
        }
    },
    "stopReason": "tool_use",
    "additionalModelResponseFields": {"x": 1},
    "usage": {"inputTokens": 3},
    "metrics": {"latencyMs": 10},
}


@pytest.mark.parametrize("pieces", list(splits(STREAM)))
def test_a_stream_assembles_into_the_converse_answer_without_its_padding_in_any_chunking(
    pieces: list[bytes],
) -> None:
    assembler = feed(*pieces)
    assert assembler.complete
    assert orjson.loads(assembler.result() or b"null") == ANSWER


def test_the_role_is_the_message_starts_or_else_the_assistants() -> None:
    def role(start: dict[str, Any]) -> Any:
        final = answer(frames(("messageStart", start), STOP, METADATA))
        return final and final["output"]["message"]["role"]

    assert role({"role": "model"}) == "model"
    assert role({}) == "assistant"
    assert (answer(frames(STOP, METADATA)) or {})["output"]["message"]["role"] == "assistant"


def test_reasoning_joins_its_text_keeps_the_last_signature_and_joins_redacted_content() -> None:
    assert content(
        delta(0, {"reasoningContent": {"text": "hm"}}),
        delta(0, {"reasoningContent": {"text": "m", "signature": "s1"}}),
        delta(0, {"reasoningContent": {"signature": "s2"}}),
        delta(0, {"reasoningContent": {"text": 7}}),
        stop(0),
        delta(1, {"reasoningContent": {"redactedContent": "AAA"}}),
        delta(1, {"reasoningContent": {"redactedContent": "BBB", "text": "ignored"}}),
        stop(1),
    ) == [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s2"}}},
        {"reasoningContent": {"redactedContent": "AAABBB"}},
    ]


def test_citations_and_the_text_they_cite_become_a_citations_content_block() -> None:
    assert content(
        delta(0, {"citation": {"title": "a"}}),
        delta(0, {"citation": {"title": "b"}}),
        delta(0, {"text": "Par"}),
        delta(0, {"text": "is"}),
        stop(0),
        delta(1, {"citation": {"title": "c"}}),
        stop(1),
    ) == [
        {"citationsContent": {"content": [{"text": "Paris"}], "citations": [{"title": "a"}, {"title": "b"}]}},
        {"citationsContent": {"content": [{"text": ""}], "citations": [{"title": "c"}]}},
    ]


def test_other_deltas_merge_as_they_come_and_a_delta_that_is_not_an_object_is_skipped() -> None:
    assert content(
        delta(0, {"image": {"format": "png"}}),
        delta(0, {"image": {"source": "x"}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": "junk"}),
        stop(0),
    ) == [{"image": {"format": "png", "source": "x"}}]


def test_blocks_are_ordered_by_index_and_events_without_one_address_the_first() -> None:
    assert content(delta(1, {"text": "b"}), stop(1), ("contentBlockDelta", {"delta": {"text": "a"}}), stop(0)) == [
        {"text": "a"},
        {"text": "b"},
    ]


def test_a_block_that_only_stopped_is_an_empty_block() -> None:
    assert content(stop(0)) == [{}]


def test_tool_input_is_read_as_json_when_its_block_stops_and_no_input_is_an_empty_one() -> None:
    tool = {"toolUse": {"toolUseId": "t1", "name": "w"}}
    assert content(
        ("contentBlockStart", {"contentBlockIndex": 0, "start": tool}),
        delta(0, {"toolUse": {"input": ""}}),
        stop(0),
        delta(1, {"toolUse": {"input": "[1, "}}),
        delta(1, {"toolUse": {"input": "2]"}}),
        stop(1),
    ) == [{"toolUse": {**tool["toolUse"], "input": {}}}, {"toolUse": {"input": [1, 2]}}]


@pytest.mark.parametrize(
    "bad",
    [
        frames(delta(0, {"toolUse": {"input": '{"city": '}}), stop(0)),
        encode_message({":event-type": "messageStart", **EVENT, ":message-type": "exception"}, b"{}"),
        encode_message({":event-type": "messageStart", **EVENT}, b"not json"),
        encode_message({":event-type": "messageStart", **EVENT}, b"[1]"),
        b"\x00" * 16,
    ],
    ids=["tool-input-not-json", "exception-frame", "payload-not-json", "payload-not-an-object", "bad-frame"],
)
def test_anything_unreadable_breaks_the_stream_for_good(bad: bytes) -> None:
    assembler = feed(frames(("messageStart", {"role": "assistant"})), bad, STREAM)
    assert not assembler.complete and assembler.result() is None


def test_the_stream_is_complete_only_once_metadata_follows_message_stop() -> None:
    start = frames(("messageStart", {"role": "assistant"}), delta(0, {"text": "Hi"}), stop(0))
    assert not feed(start).complete
    assert not feed(start, frames(STOP)).complete
    assert not feed(start, frames(METADATA)).complete
    assert not feed(start, frames(METADATA, STOP)).complete
    assert feed(start, frames(STOP, METADATA)).complete


def test_a_finished_stream_followed_by_part_of_a_frame_is_not_complete() -> None:
    assembler = feed(STREAM + frames(METADATA)[:20])
    assert not assembler.complete and assembler.result() is None


@pytest.mark.parametrize(
    "after",
    [frames(delta(0, {"text": " again"})), frames(("metadata", {"usage": {}})), b"\x00" * 16],
    ids=["a delta", "another metadata", "bytes that are no frame"],
)
def test_anything_after_the_metadata_leaves_the_stream_incomplete(after: bytes) -> None:
    """`metadata` is the stream's last event, and boto3 reads on to the stream's end (an event there
    reaches its caller, an exception frame raises): the answer as of `metadata` was not its caller's.
    It was assembled as if nothing followed, and garbage after it was ignored."""
    assert feed(STREAM).complete
    for pieces in ([STREAM + after], [STREAM, after]):
        assembler = feed(*pieces)
        assert not assembler.complete and assembler.result() is None


# -- replay ------------------------------------------------------------------------------------------


def test_a_replay_is_one_event_frame_per_event_named_by_its_type() -> None:
    assert answer(render(ANSWER)) == ANSWER
    assert list(events(ANSWER)) == [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Paris"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":"Paris"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use", "additionalModelResponseFields": {"x": 1}}),
        ("metadata", {"usage": {"inputTokens": 3}, "metrics": {"latencyMs": 10}}),
    ]


def test_a_replayed_frame_carries_the_headers_of_a_live_event_frame() -> None:
    """boto3 reads `:event-type` and `:message-type`; `:content-type` is what Bedrock sends with them."""
    replayed = EventStreamDecoder().feed(render(ANSWER))
    assert [headers for headers, _ in replayed] == [{":event-type": kind, **EVENT} for kind, _ in events(ANSWER)]
    assert [orjson.loads(payload) for _, payload in replayed] == [payload for _, payload in events(ANSWER)]


def test_a_replay_starts_the_message_with_its_stored_role() -> None:
    final = {"output": {"message": {"role": "model", "content": []}}}
    assert next(events(final)) == ("messageStart", {"role": "model"})
    assert next(events({"output": {"message": {"content": []}}})) == ("messageStart", {"role": "assistant"})


def block_replay(block: Any) -> list[tuple[str, dict[str, Any]]]:
    """The events of one stored block, without its index and its closing `contentBlockStop`."""
    found = list(events({"output": {"message": {"content": [block]}}}))[1:-3]
    return [(kind, {k: v for k, v in payload.items() if k != "contentBlockIndex"}) for kind, payload in found]


@pytest.mark.parametrize(
    ("block", "replay"),
    [
        (
            {"toolUse": {"toolUseId": "t1", "name": "w", "input": {}}},
            [
                ("contentBlockStart", {"start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}),
                ("contentBlockDelta", {"delta": {"toolUse": {"input": ""}}}),
            ],
        ),
        (
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            [
                ("contentBlockDelta", {"delta": {"reasoningContent": {"text": "hmm"}}}),
                ("contentBlockDelta", {"delta": {"reasoningContent": {"signature": "s"}}}),
            ],
        ),
        ({"reasoningContent": {"reasoningText": {}}}, []),
        (
            {"reasoningContent": {"redactedContent": "AAA"}},
            [("contentBlockDelta", {"delta": {"reasoningContent": {"redactedContent": "AAA"}}})],
        ),
        (
            {"citationsContent": {"content": [{"text": "Par"}, 7, {"text": 8}, {"text": "is"}], "citations": [1, 2]}},
            [
                ("contentBlockDelta", {"delta": {"citation": 1}}),
                ("contentBlockDelta", {"delta": {"citation": 2}}),
                ("contentBlockDelta", {"delta": {"text": "Paris"}}),
            ],
        ),
        (
            {"citationsContent": {"content": "Paris", "citations": "a"}},
            [("contentBlockDelta", {"delta": {"text": ""}})],
        ),
        (
            {"citationsContent": {"citations": [1]}},
            [("contentBlockDelta", {"delta": {"citation": 1}}), ("contentBlockDelta", {"delta": {"text": ""}})],
        ),
        ({"image": {"format": "png"}}, [("contentBlockDelta", {"delta": {"image": {"format": "png"}}})]),
        ({}, []),
        ("text", []),
    ],
    ids=[
        "tool-without-input",
        "reasoning",
        "reasoning-empty",
        "redacted",
        "cited",
        "cited-unreadable",
        "cited-without-content",
        "other",
        "empty",
        "not-an-object",
    ],
)
def test_each_kind_of_block_replays_as_the_deltas_that_build_it(block: Any, replay: list[Any]) -> None:
    assert block_replay(block) == replay


@pytest.mark.parametrize(
    "final",
    [{}, {"output": "x"}, {"output": {"message": "x"}}, {"output": {"message": {"content": "x"}}}],
    ids=["no-output", "output-not-an-object", "message-not-an-object", "content-not-a-list"],
)
def test_a_replay_renders_what_it_can_read_and_never_raises(final: dict[str, Any]) -> None:
    assert list(events(final))[:1] == [("messageStart", {"role": "assistant"})]
    assert [kind for kind, _ in events(final)] == ["messageStart", "messageStop", "metadata"]
