"""Random well-formed Bedrock ConverseStream answers: assembled, they are the Converse answer that was
streamed, numbers digit for digit; replayed and assembled again, the same answer; boto3's parsers
read the replay as they read the original; and any storable Converse answer replays as a stream
that assembles into a storable answer again."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers.bedrock import Converse
from llm_cache.middleware.providers.eventstream import encode_message
from tests.support.bedrock_streams import boto_events, converse_reading
from tests.support.stream_strategies import (
    JSON_OBJECTS,
    JSON_VALUES,
    assembled,
    byte_pieces,
    dumps,
    ids,
    lossless,
    names,
    pieces,
    texts,
)

from .streams import replayed_by_cut, view
from .test_storable_replays import paths, replaced

BLOBS = st.binary(min_size=1, max_size=12).map(lambda raw: base64.b64encode(raw).decode())
STOPS = st.sampled_from(["end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened"])
CITATION = st.fixed_dictionaries(
    {"title": texts, "location": st.just({"documentChar": {"documentIndex": 0, "start": 0, "end": 3}})}
)


@st.composite
def blocks(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "toolUse", "reasoning", "redacted", "cited"]))
    if kind == "text":
        return {"text": draw(texts)}
    if kind == "toolUse":
        return {"toolUse": {"toolUseId": f"tooluse_{draw(ids)}", "name": draw(names), "input": draw(JSON_OBJECTS)}}
    if kind == "reasoning":
        return {"reasoningContent": {"reasoningText": {"text": draw(texts), "signature": draw(ids)}}}
    if kind == "redacted":
        return {"reasoningContent": {"redactedContent": draw(BLOBS)}}
    citations = draw(st.lists(CITATION, min_size=1, max_size=2))
    return {"citationsContent": {"content": [{"text": draw(texts)}], "citations": citations}}


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    usage = {"inputTokens": draw(st.integers(1, 999)), "outputTokens": draw(st.integers(1, 999))}
    answer: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": draw(st.lists(blocks(), min_size=1, max_size=4))}},
        "stopReason": draw(STOPS),
        "usage": {**usage, "totalTokens": usage["inputTokens"] + usage["outputTokens"]},
        "metrics": {"latencyMs": draw(st.integers(1, 9999))},
    }
    if draw(st.booleans()):
        answer["additionalModelResponseFields"] = draw(JSON_OBJECTS)
    if draw(st.booleans()):
        answer["trace"] = {"guardrail": {"modelOutput": [draw(texts)]}}
    return answer


def block_events(draw: st.DrawFn, index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A content block as Bedrock streams it, its text and tool input cut at random."""
    deltas: list[dict[str, Any]] = []
    start: list[tuple[str, dict[str, Any]]] = []
    if "text" in block:
        deltas = [{"text": p} for p in pieces(draw, block["text"])]
    elif "toolUse" in block:
        tool = block["toolUse"]
        start = [("contentBlockStart", {"start": {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}})]
        partial = dumps(tool["input"]).decode() if tool["input"] else ""
        deltas = [{"toolUse": {"input": p}} for p in pieces(draw, partial, 5)]
    elif "reasoningContent" in block and "redactedContent" in block["reasoningContent"]:
        deltas = [{"reasoningContent": {"redactedContent": block["reasoningContent"]["redactedContent"]}}]
    elif "reasoningContent" in block:
        text = block["reasoningContent"]["reasoningText"]
        deltas = [{"reasoningContent": {"text": p}} for p in pieces(draw, text["text"])]
        deltas.append({"reasoningContent": {"signature": text["signature"]}})
    else:
        cited = block["citationsContent"]
        deltas = [{"citation": c} for c in cited["citations"]]
        deltas += [{"text": p} for p in pieces(draw, cited["content"][0]["text"])]
    events = [*start, *(("contentBlockDelta", {"delta": delta}) for delta in deltas), ("contentBlockStop", {})]
    return [(kind, {"contentBlockIndex": index, **payload}) for kind, payload in events]


HEADERS = {":content-type": "application/json", ":message-type": "event"}


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes]]:
    """(a Converse answer, the frames of a well-formed ConverseStream of it, padded, cut at random)."""
    answer = draw(answers())
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(answer["output"]["message"]["content"]):
        events += block_events(draw, index, block)
    stop_fields = ("stopReason", "additionalModelResponseFields")
    events.append(("messageStop", {k: v for k, v in answer.items() if k in stop_fields}))
    events.append(("metadata", {k: v for k, v in answer.items() if k != "output" and k not in stop_fields}))
    frames = b"".join(
        encode_message({":event-type": kind, **HEADERS}, dumps({**payload, "p": draw(ids)})) for kind, payload in events
    )
    return answer, byte_pieces(draw, frames)


CONVERSE = Converse()
STREAMED = view("/model/anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream")


def boto_reading(body: bytes) -> dict[str, Any]:
    return converse_reading(boto_events(body))


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_assembles_into_the_answer_it_streamed(case: tuple[dict[str, Any], list[bytes]]) -> None:
    answer, cut = case
    assert lossless(assembled(CONVERSE, STREAMED, cut)) == lossless(dumps(answer))


@settings(max_examples=60, deadline=None)
@given(streams())
def test_a_replay_assembles_into_the_same_answer_and_boto3_reads_both_alike(
    case: tuple[dict[str, Any], list[bytes]],
) -> None:
    _, cut = case
    stored = assembled(CONVERSE, STREAMED, cut)
    replay = CONVERSE.render_stream(stored, STREAMED)
    assert lossless(assembled(CONVERSE, STREAMED, [replay])) == lossless(stored)
    assert boto_reading(replay) == boto_reading(b"".join(cut))


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_is_replayed_from_its_cut_event_by_event(case: tuple[dict[str, Any], list[bytes]]) -> None:
    """boto3 reads every event of the replay as it read the original's (its padding, `p`, has the
    same length, not the same characters: boto3 reads no padding)."""
    _, cut = case
    replay = replayed_by_cut(CONVERSE, STREAMED, cut)
    assert replay is not None
    assert boto_events(replay) == boto_events(b"".join(cut))


ANSWER = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"text": "Paris"},
                {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Paris"}}},
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
                {"citationsContent": {"content": [{"text": "x"}], "citations": [{"title": "t"}]}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5},
    "metrics": {"latencyMs": 10},
}


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(paths(ANSWER)), JSON_VALUES), max_size=3))
def test_every_storable_converse_answer_replays_as_a_stream_that_is_storable_again(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    answer: Any = ANSWER
    for path, new in changes:
        answer = replaced(answer, path, new)
    body = dumps(answer)
    if CONVERSE.unstorable(body, STREAMED) is not None:
        return
    again = CONVERSE.assembler(STREAMED)
    again.feed(CONVERSE.render_stream(body, STREAMED))
    result = again.result()
    assert result is not None and CONVERSE.unstorable(result, STREAMED) is None
