"""Random well-formed Responses API streams: assembled, they are the response that was streamed,
numbers digit for digit; replayed and assembled again, the same response; the replay sends every
kind of event the original did, and the openai SDK's final response of both is the same."""

from __future__ import annotations

from typing import Any

import openai
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers.openai import Responses
from llm_cache.middleware.providers.sse import encode_event
from tests.support.stream_strategies import (
    JSON_OBJECTS,
    NUMBERS,
    assembled,
    byte_pieces,
    dumps,
    ids,
    lossless,
    names,
    pieces,
    texts,
)

from .streams import replayed_by_cut, replaying, sse_events, view

CITATION = st.fixed_dictionaries(
    {
        "type": st.just("url_citation"),
        "start_index": st.integers(0, 9),
        "end_index": st.integers(10, 20),
        "url": st.just("https://example.com"),
        "title": texts,
    }
)
LOGPROB = st.fixed_dictionaries({"token": texts, "logprob": NUMBERS, "bytes": st.just([]), "top_logprobs": st.just([])})


@st.composite
def output_texts(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "output_text",
        "text": draw(texts),
        "annotations": draw(st.lists(CITATION, max_size=2)),
        "logprobs": draw(st.lists(LOGPROB, max_size=2)),
    }


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["message", "reasoning", "function_call", "web_search_call"]))
    item_id = f"{kind[:3]}_{draw(ids)}"
    if kind == "message":
        refusal = st.builds(lambda text: {"type": "refusal", "refusal": text}, texts)
        content = draw(st.lists(output_texts() | refusal, min_size=1, max_size=2))
        return {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": content}
    if kind == "reasoning":
        summary = [{"type": "summary_text", "text": text} for text in draw(st.lists(texts, max_size=2))]
        return {"id": item_id, "type": "reasoning", "summary": summary, "encrypted_content": draw(ids)}
    if kind == "function_call":
        arguments = dumps(draw(JSON_OBJECTS)).decode()
        call = {"call_id": f"call_{draw(ids)}", "name": draw(names), "arguments": arguments}
        return {"id": item_id, "type": "function_call", "status": "completed", **call}
    action = {"type": "search", "query": draw(texts)}
    return {"id": item_id, "type": "web_search_call", "status": "completed", "action": action}


def unique(item: dict[str, Any], n: int) -> dict[str, Any]:
    """`item` with ids no other item of the response has (the SDK refuses a response that repeats one)."""
    ids = {key: f"{item[key]}_{n}" for key in ("id", "call_id") if key in item}
    return {**item, **ids}


@st.composite
def responses(draw: st.DrawFn) -> dict[str, Any]:
    usage = {"input_tokens": draw(st.integers(1, 999)), "output_tokens": draw(st.integers(1, 999))}
    return {
        "id": f"resp_{draw(ids)}",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "gpt-4o-2024-08-06",
        "output": [unique(item, n) for n, item in enumerate(draw(st.lists(items(), min_size=1, max_size=3)))],
        "usage": {**usage, "total_tokens": usage["input_tokens"] + usage["output_tokens"]},
    }


def part_events(draw: st.DrawFn, at: dict[str, Any], part: dict[str, Any]) -> list[dict[str, Any]]:
    if part["type"] == "refusal":
        deltas = [{"type": "response.refusal.delta", **at, "delta": p} for p in pieces(draw, part["refusal"])]
        empty = {**part, "refusal": ""}
        done = {"type": "response.refusal.done", **at, "refusal": part["refusal"]}
        return [{"type": "response.content_part.added", **at, "part": empty}, *deltas, done]
    empty = {**part, "text": "", "annotations": [], "logprobs": []}
    events = [{"type": "response.content_part.added", **at, "part": empty}]
    cut = pieces(draw, part["text"])
    events += [{"type": "response.output_text.delta", **at, "delta": p, "logprobs": []} for p in cut[:-1]]
    events.append({"type": "response.output_text.delta", **at, "delta": cut[-1], "logprobs": part["logprobs"]})
    events += [
        {"type": "response.output_text.annotation.added", **at, "annotation_index": i, "annotation": a}
        for i, a in enumerate(part["annotations"])
    ]
    events.append({"type": "response.output_text.done", **at, "text": part["text"], "logprobs": part["logprobs"]})
    return events


def item_events(draw: st.DrawFn, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    """An output item as the API streams it: added, its content events cut at random, done."""
    at = {"output_index": index, "item_id": item["id"]}
    kind = item["type"]
    added = {**item, "status": "in_progress"} if "status" in item else dict(item)
    events: list[dict[str, Any]] = []
    if kind == "message":
        added["content"] = []
        for content_index, part in enumerate(item["content"]):
            where = {**at, "content_index": content_index}
            events += part_events(draw, where, part)
            events.append({"type": "response.content_part.done", **where, "part": part})
    elif kind == "reasoning":
        added["summary"] = []
        for summary_index, part in enumerate(item["summary"]):
            where = {**at, "summary_index": summary_index}
            events.append({"type": "response.reasoning_summary_part.added", **where, "part": {**part, "text": ""}})
            events += [
                {"type": "response.reasoning_summary_text.delta", **where, "delta": p}
                for p in pieces(draw, part["text"])
            ]
            events.append({"type": "response.reasoning_summary_text.done", **where, "text": part["text"]})
            events.append({"type": "response.reasoning_summary_part.done", **where, "part": part})
    elif kind == "function_call":
        added["arguments"] = ""
        events += [
            {"type": "response.function_call_arguments.delta", **at, "delta": p}
            for p in pieces(draw, item["arguments"], 5)
        ]
        events.append({"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]})
    else:
        events += [{"type": f"response.web_search_call.{phase}", **at} for phase in ("in_progress", "searching")]
        events.append({"type": "response.web_search_call.completed", **at})
    return [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        *events,
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes], set[str]]:
    """(a response, the bytes of a well-formed stream of it cut at random, its event types)."""
    response = draw(responses())
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [{"type": "response.created", "response": pending}, {"type": "response.in_progress", "response": pending}]
    for index, item in enumerate(response["output"]):
        events += item_events(draw, index, item)
    # Some compatible servers send the completed response without its output: the items fill it in.
    completed = response if draw(st.booleans()) else {**response, "output": None}
    events.append({"type": "response.completed", "response": completed})
    body = b"".join(encode_event({**event, "sequence_number": n}, event["type"]) for n, event in enumerate(events))
    return response, byte_pieces(draw, body), {event["type"] for event in events}


RESPONSES = Responses()
STREAMED = view("/v1/responses", {"stream": True})


def sdk_final(body: bytes) -> dict[str, Any]:
    client = openai.OpenAI(api_key="sk-p", http_client=replaying(body), max_retries=0)
    with client.responses.stream(model="gpt-4o", input="x") as stream:
        return stream.get_final_response().to_dict()


def event_types(body: bytes) -> set[str]:
    return {line[7:].decode() for line in body.splitlines() if line.startswith(b"event: ")}


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_assembles_into_the_response_it_streamed(case: tuple[dict[str, Any], list[bytes], Any]) -> None:
    response, cut, _ = case
    assert lossless(assembled(RESPONSES, STREAMED, cut)) == lossless(dumps(response))


@settings(max_examples=60, deadline=None)
@given(streams())
def test_a_replay_sends_every_kind_of_event_and_the_sdk_reads_it_as_the_original(
    case: tuple[dict[str, Any], list[bytes], set[str]],
) -> None:
    response, cut, types = case
    stored = assembled(RESPONSES, STREAMED, cut)
    replay = RESPONSES.render_stream(stored, STREAMED)
    assert lossless(assembled(RESPONSES, STREAMED, [replay])) == lossless(stored)
    assert types - event_types(replay) == set()
    original = b"".join(cut)
    if b'"output":null' not in original:  # the SDK reads a completed response as sent
        assert sdk_final(replay) == sdk_final(original)


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_is_replayed_from_its_cut_event_by_event(case: tuple[dict[str, Any], list[bytes], Any]) -> None:
    _, cut, _ = case
    replay = replayed_by_cut(RESPONSES, STREAMED, cut)
    assert replay is not None
    assert sse_events(replay) == sse_events(b"".join(cut))
