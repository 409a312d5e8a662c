"""Random well-formed Gemini streams, in both forms (SSE and the JSON array): assembled, they are the
answer that was streamed, numbers digit for digit; replayed and assembled again, the same answer;
google-genai reads the replay as it read the original."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.genai import types
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers import cuts
from llm_cache.middleware.providers.gemini import GenerateContent
from tests.support.gemini_streams import SAFE, reading
from tests.support.stream_strategies import (
    JSON_OBJECTS,
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

FINISH = st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "MALFORMED_FUNCTION_CALL", "OTHER"])
SIGNATURES = st.binary(min_size=1, max_size=12).map(lambda raw: base64.b64encode(raw).decode())
HEAD = {"modelVersion": "gemini-2.5-flash", "responseId": "gm-p"}


@st.composite
def parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "thought", "functionCall", "executableCode", "codeExecutionResult"]))
    part: dict[str, Any]
    if kind in ("text", "thought"):
        part = {"text": draw(texts), **({"thought": True} if kind == "thought" else {})}
    elif kind == "functionCall":
        part = {"functionCall": {"id": f"fc-{draw(ids)}", "name": draw(names), "args": draw(JSON_OBJECTS)}}
    elif kind == "executableCode":
        part = {"executableCode": {"language": "PYTHON", "code": draw(texts)}}
    else:
        part = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": draw(texts)}}
    if kind != "executableCode" and kind != "codeExecutionResult" and draw(st.booleans()):
        part["thoughtSignature"] = draw(SIGNATURES)
    return part


def runs_joined(generated: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts the API answers in one piece: a run of text of one kind is one part, up to and
    including the part that carries a signature."""
    answer: list[dict[str, Any]] = []
    for part in generated:
        last = answer[-1] if answer else None
        if (
            last is not None
            and "text" in part
            and "text" in last
            and "thoughtSignature" not in last
            and last.get("thought") == part.get("thought")
        ):
            last["text"] += part["text"]
            if "thoughtSignature" in part:
                last["thoughtSignature"] = part["thoughtSignature"]
        else:
            answer.append(dict(part))
    return answer


@st.composite
def candidates(draw: st.DrawFn, index: int | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": runs_joined(draw(st.lists(parts(), min_size=1, max_size=4))), "role": "model"},
        "finishReason": draw(FINISH),
    }
    if index is not None:
        candidate["index"] = index
    if draw(st.booleans()):
        candidate["safetyRatings"] = SAFE
    if draw(st.booleans()):
        sources = [{"startIndex": i, "endIndex": i + 5, "uri": f"https://example.com/{i}"} for i in range(3)]
        candidate["citationMetadata"] = {"citationSources": sources[: draw(st.integers(1, 3))]}
    if draw(st.booleans()):
        candidate["groundingMetadata"] = {"webSearchQueries": [draw(texts)], "groundingChunks": []}
    return candidate


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 2))
    indexed = count > 1 or draw(st.booleans())  # the API leaves out `index` 0 of a single candidate
    answer: dict[str, Any] = {
        "candidates": [draw(candidates(i if indexed else None)) for i in range(count)],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13},
        **HEAD,
    }
    if draw(st.booleans()):
        answer["usageMetadata"] |= {"thoughtsTokenCount": 21, "cachedContentTokenCount": 4}
    if draw(st.booleans()):
        answer["promptFeedback"] = {"safetyRatings": SAFE}
    return answer


def candidate_chunks(draw: st.DrawFn, candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunk candidates a stream of `candidate` sends: each text run cut at random, one piece a
    chunk (a signature on its last piece), other parts one or two a chunk; the finish reason and
    grounding on the last, citation sources spread over the first and the last."""
    where = {"index": candidate["index"]} if "index" in candidate else {}
    out: list[dict[str, Any]] = []
    for part in candidate["content"]["parts"]:
        if "text" in part:
            cut = pieces(draw, part["text"])
            for n, piece in enumerate(cut):
                piece_part = {k: v for k, v in part.items() if k != "thoughtSignature" or n == len(cut) - 1}
                out.append({"content": {"parts": [{**piece_part, "text": piece}], "role": "model"}, **where})
        elif out and draw(st.booleans()) and "text" not in out[-1]["content"]["parts"][-1]:
            out[-1]["content"]["parts"].append(part)  # parallel calls arrive together
        else:
            out.append({"content": {"parts": [part], "role": "model"}, **where})
    for chunk in out:
        if "safetyRatings" in candidate:
            chunk["safetyRatings"] = candidate["safetyRatings"]
    out[-1] |= {k: v for k, v in candidate.items() if k in ("finishReason", "groundingMetadata")}
    if "citationMetadata" in candidate:
        sources = candidate["citationMetadata"]["citationSources"]
        split = draw(st.integers(0, len(sources)))
        out[0]["citationMetadata"] = {"citationSources": sources[:split]}
        if len(out) > 1:
            out[-1]["citationMetadata"] = {"citationSources": sources[split:]}
        else:
            out[0]["citationMetadata"] = {"citationSources": sources}
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(an answer, the chunks of a well-formed stream of it: candidates interleaved at random)."""
    answer = draw(answers())
    queues = [candidate_chunks(draw, candidate) for candidate in answer["candidates"]]
    chunks: list[dict[str, Any]] = []
    while any(queues):
        taken = [queue.pop(0) for queue in queues if queue and draw(st.booleans())]
        taken = taken or [next(queue for queue in queues if queue).pop(0)]
        chunks.append({"candidates": taken, "usageMetadata": {"promptTokenCount": 8}, **HEAD})
    chunks[-1]["usageMetadata"] = answer["usageMetadata"]
    if "promptFeedback" in answer:
        chunks[0]["promptFeedback"] = answer["promptFeedback"]
    return answer, chunks


def framed(chunks: list[dict[str, Any]], sse: bool) -> list[bytes]:
    """The stream's bytes as the API writes them, one piece a chunk."""
    if sse:
        return [b"data: " + dumps(chunk) + b"\r\n\r\n" for chunk in chunks]
    return [b"[" + dumps(chunks[0]), *(b"\n,\r\n" + dumps(chunk) for chunk in chunks[1:]), b"]"]


def encoded(chunks: list[dict[str, Any]], sse: bool) -> bytes:
    return b"".join(framed(chunks, sse))


def decoded(body: bytes, sse: bool) -> list[dict[str, Any]]:
    if sse:
        return [json.loads(event[6:]) for event in body.split(b"\r\n\r\n") if event]
    return list(json.loads(body))


GENERATE = GenerateContent()
PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
FORMS = {True: view(PATH, query="alt=sse"), False: view(PATH)}


def sdk_reading(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return reading([types.GenerateContentResponse.model_validate(chunk) for chunk in chunks])


@settings(max_examples=150, deadline=None)
@given(streams(), st.booleans(), st.data())
def test_a_random_stream_assembles_into_the_answer_it_streamed(
    case: tuple[dict[str, Any], list[dict[str, Any]]], sse: bool, data: st.DataObject
) -> None:
    answer, chunks = case
    stored = assembled(GENERATE, FORMS[sse], byte_pieces(data.draw, encoded(chunks, sse)))
    assert lossless(stored) == lossless(dumps(answer))


@settings(max_examples=80, deadline=None)
@given(streams(), st.booleans())
def test_a_replay_assembles_into_the_same_answer_and_the_sdk_reads_both_alike(
    case: tuple[dict[str, Any], list[dict[str, Any]]], sse: bool
) -> None:
    _, chunks = case
    original = encoded(chunks, sse)
    stored = assembled(GENERATE, FORMS[sse], framed(chunks, sse))
    replay = GENERATE.render_stream(stored, FORMS[sse])
    assert lossless(assembled(GENERATE, FORMS[sse], [replay])) == lossless(stored)
    assert sdk_reading(decoded(replay, sse)) == sdk_reading(decoded(original, sse))


@settings(max_examples=150, deadline=None)
@given(streams(), st.booleans())
def test_a_random_stream_is_replayed_from_its_cut_chunk_by_chunk(
    case: tuple[dict[str, Any], list[dict[str, Any]]], sse: bool
) -> None:
    _, chunks = case
    replay = replayed_by_cut(GENERATE, FORMS[sse], framed(chunks, sse))
    assert replay is not None
    assert decoded(replay, sse) == decoded(encoded(chunks, sse), sse)


def spelt(chunk: dict[str, Any], spelling: dict[str, Any]) -> str | None:
    """The chunk as Python's `json` spells it (None: a number it reads as infinite)."""
    try:
        return json.dumps(json.loads(dumps(chunk)), allow_nan=False, **spelling)
    except ValueError:
        return None


WHITESPACE = st.text(alphabet=" \t\r\n", max_size=3)


@st.composite
def array_frames(draw: st.DrawFn, count: int) -> list[str]:
    """How a stream may spell its array around `count` elements: `[`, `,` between two, `]`, each with
    whitespace about it, one separator for the whole stream (as Gemini's `\\n,\\r\\n`) or each its own."""
    separator = draw(WHITESPACE) + "," + draw(WHITESPACE)
    own = draw(st.booleans())
    middles = [draw(WHITESPACE) + "," + draw(WHITESPACE) if own else separator for _ in range(count - 1)]
    return [draw(WHITESPACE) + "[" + draw(WHITESPACE), *middles, draw(WHITESPACE) + "]"]


@settings(max_examples=150, deadline=None)
@given(streams(), st.sampled_from([{"indent": 2}, {"indent": 2, "ensure_ascii": False}, {}]), st.data())
def test_a_replay_of_a_recorded_array_stream_is_its_bytes(
    case: tuple[dict[str, Any], list[dict[str, Any]]], spelling: dict[str, Any], data: st.DataObject
) -> None:
    """Whatever the array's whitespace and its elements' spelling (indented as Gemini's, or not), a
    hit of the array form is the recorded bytes."""
    _, chunks = case
    frame = data.draw(array_frames(len(chunks)))
    elements = [spelt(chunk, spelling) for chunk in chunks]
    assume(None not in elements)
    recorded = "".join(f"{gap}{element}" for gap, element in zip(frame, elements, strict=False)) + frame[-1]
    assembler = GENERATE.assembler(FORMS[False])
    for piece in byte_pieces(data.draw, recorded.encode()):
        assembler.feed(piece)
    answer = assembler.result()
    assert answer is not None
    cut = assembler.cut(answer)
    assert cut is not None
    events = GENERATE.replayed_events(cuts.replay(cut, answer))
    assert GENERATE.render_events(events, FORMS[False]) == recorded.encode()
    as_sse = GENERATE.render_events(events, FORMS[True])  # the same entry, asked for as SSE events
    assert decoded(as_sse, True) == decoded(recorded.encode(), False)
    assert b"\n" not in as_sse.replace(b"\r\n\r\n", b"")
