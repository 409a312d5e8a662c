"""Gemini adapter: model paths (v1, v1beta, Vertex), both stream forms, completeness, usage."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import msgpack
import orjson
import pytest

from llm_cache._refusals import BY_FAMILY
from llm_cache.middleware import Cache
from llm_cache.middleware.providers import cuts, resolve
from llm_cache.middleware.providers.base import Usage
from llm_cache.middleware.providers.gemini import EmbedContent, GenerateContent, JSONArrayDecoder, _TextRuns

from .streams import assemble, splits, through_cache, view

STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
META = {"modelVersion": "gemini-2.5-flash", "responseId": "mNj3aOKfL9Cm1MkP9ZbD-QQ"}
PROMPT_USAGE = {
    "promptTokenCount": 9,
    "totalTokenCount": 9,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
}
FINAL_USAGE = {
    "promptTokenCount": 9,
    "candidatesTokenCount": 8,
    "thoughtsTokenCount": 40,
    "totalTokenCount": 57,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
}


def chunk(*parts: dict[str, Any], finish: str | None = None, usage: dict[str, Any] = PROMPT_USAGE) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, **META}


def as_sse(*chunks: dict[str, Any]) -> bytes:
    """`?alt=sse`: one `data:` event a chunk, CRLF line endings as Google sends them."""
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def as_array(*chunks: dict[str, Any], closed: bool = True) -> bytes:
    """No `alt`: one pretty-printed JSON array, its elements written out as they are generated."""
    body = b"[" + b"\n,\r\n".join(orjson.dumps(c, option=orjson.OPT_INDENT_2) for c in chunks)
    return body + (b"\n]" if closed else b"")


TEXT_CHUNKS = (
    chunk({"text": "The capital"}),
    chunk({"text": " of France is"}),
    chunk({"text": " Paris."}, finish="STOP", usage=FINAL_USAGE),
)
TEXT = {
    "candidates": [
        {
            "content": {"parts": [{"text": "The capital of France is Paris."}], "role": "model"},
            "index": 0,
            "finishReason": "STOP",
        }
    ],
    "usageMetadata": FINAL_USAGE,
    **META,
}

THOUGHT_CHUNKS = (
    chunk({"text": "**Locating the capital**\n\n", "thought": True}),
    chunk({"text": "The user asks about France.", "thought": True}),
    chunk({"text": "Paris", "thoughtSignature": "CiQB0e2Kb8Y3nq9xk"}),
    chunk({"text": " is the capital."}, finish="STOP", usage=FINAL_USAGE),
)
THOUGHTS = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": "**Locating the capital**\n\nThe user asks about France.", "thought": True},
                    {"text": "Paris", "thoughtSignature": "CiQB0e2Kb8Y3nq9xk"},
                    {"text": " is the capital."},
                ],
                "role": "model",
            },
            "index": 0,
            "finishReason": "STOP",
        }
    ],
    "usageMetadata": FINAL_USAGE,
    **META,
}

CALL = {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}, "thoughtSignature": "CiIB0e2Kb2"}
CALL_CHUNKS = (chunk({"text": "Let me check."}), chunk(CALL, finish="STOP", usage=FINAL_USAGE))
CALL_FINAL = {
    "candidates": [
        {"content": {"parts": [{"text": "Let me check."}, CALL], "role": "model"}, "index": 0, "finishReason": "STOP"}
    ],
    "usageMetadata": FINAL_USAGE,
    **META,
}

CASES = [(TEXT_CHUNKS, TEXT), (THOUGHT_CHUNKS, THOUGHTS), (CALL_CHUNKS, CALL_FINAL)]
IDS = ["text", "thoughts", "function-call"]


# -- paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "model", "stream"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "generate_content", "gemini-2.5-flash", False),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "generate_content", "gemini-2.5-flash", True),
        ("/v1/models/gemini-2.0-flash:generateContent", "generate_content", "gemini-2.0-flash", False),
        ("/v1beta/tunedModels/my-tuned-model:generateContent", "generate_content", "my-tuned-model", False),
        (
            "/v1/projects/acme/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent",
            "generate_content",
            "gemini-2.5-pro",
            True,
        ),
        ("/v1beta/models/gemini-embedding-001:embedContent", "embed_content", "gemini-embedding-001", False),
        ("/v1beta/models/text-embedding-004:batchEmbedContents", "embed_content", "text-embedding-004", False),
    ],
)
def test_model_paths(path: str, name: str, model: str, stream: bool) -> None:
    route = resolve(path)
    assert route is not None
    assert (route.endpoint.name, route.model, route.stream_by_path) == (name, model, stream)
    assert route.endpoint.is_stream(route, "", {}) is stream


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models",
        "/v1beta/models/gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:countTokens",
        "/v1beta/cachedContents",
        "/v1beta/files",
        "/upload/v1beta/files",
    ],
)
def test_other_gemini_paths_are_not_owned(path: str) -> None:
    assert resolve(path) is None


def test_stream_and_json_forms_share_one_key() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}]}
    headers = {"x-goog-api-key": "AIza-alice"}
    cache = Cache()
    json_key = cache.key_for("/v1beta/models/gemini-2.5-flash:generateContent", body, headers)
    assert cache.key_for(STREAM, body, headers, query="alt=sse") == json_key
    assert cache.key_for(STREAM, body, headers) == json_key
    assert cache.key_for("/v1beta/models/gemini-2.5-pro:generateContent", body, headers) != json_key


# -- assembly ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("chunks", "expected"), CASES, ids=IDS)
def test_sse_stream_assembles_in_any_chunking(chunks: tuple[dict[str, Any], ...], expected: dict[str, Any]) -> None:
    request = view(STREAM, query="alt=sse")
    for pieces in splits(as_sse(*chunks)):
        assert assemble(GenerateContent(), request, pieces) == expected


@pytest.mark.parametrize(("chunks", "expected"), CASES, ids=IDS)
def test_json_array_stream_assembles_in_any_chunking(
    chunks: tuple[dict[str, Any], ...], expected: dict[str, Any]
) -> None:
    request = view(STREAM)
    for pieces in splits(as_array(*chunks)):
        assert assemble(GenerateContent(), request, pieces) == expected


def test_every_candidate_is_assembled_on_its_own() -> None:
    def two(first: str, second: str, finish: str | None) -> dict[str, Any]:
        candidates = [
            {"content": {"parts": [{"text": text}], "role": "model"}, "index": index}
            for index, text in enumerate((first, second))
        ]
        if finish:
            for candidate in candidates:
                candidate["finishReason"] = finish
        return {"candidates": candidates, **META}

    final = assemble(
        GenerateContent(), view(STREAM, query="alt=sse"), [as_sse(two("Par", "Lyo", None), two("is", "n", "STOP"))]
    )
    assert final is not None
    assert [c["content"]["parts"] for c in final["candidates"]] == [[{"text": "Paris"}], [{"text": "Lyon"}]]


def test_stream_without_a_finish_reason_is_not_stored() -> None:
    assert assemble(GenerateContent(), view(STREAM, query="alt=sse"), [as_sse(*TEXT_CHUNKS[:2])]) is None
    assert assemble(GenerateContent(), view(STREAM), [as_array(*TEXT_CHUNKS[:2])]) is None


def test_json_array_that_never_closes_is_not_stored() -> None:
    assert assemble(GenerateContent(), view(STREAM), [as_array(*TEXT_CHUNKS, closed=False)]) is None


def test_error_chunk_is_not_stored() -> None:
    error = {
        "error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
    }
    assert assemble(GenerateContent(), view(STREAM, query="alt=sse"), [as_sse(*TEXT_CHUNKS, error)]) is None
    assert assemble(GenerateContent(), view(STREAM), [as_array(TEXT_CHUNKS[0], error)]) is None


def test_a_body_that_is_not_an_array_is_not_stored() -> None:
    assert assemble(GenerateContent(), view(STREAM), [orjson.dumps(TEXT)]) is None


def test_array_decoder_respects_strings_and_escapes() -> None:
    tricky = [{"text": 'a "quoted" ] } [ { \\ brace'}, {"nested": [{"deep": ["]"]}]}, {"runs": '\\"\\\\"'}]
    data = orjson.dumps(tricky)
    for pieces in splits(data):
        decoder = JSONArrayDecoder()
        found = [orjson.loads(item) for piece in pieces for item in decoder.feed(piece)]
        assert found == tricky and decoder.closed


# -- replay --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "media_type"), [("alt=sse", "text/event-stream"), ("", "application/json")])
@pytest.mark.parametrize("final", [TEXT, THOUGHTS, CALL_FINAL], ids=IDS)
def test_round_trip_in_the_form_the_request_asked_for(query: str, media_type: str, final: dict[str, Any]) -> None:
    request = view(STREAM, query=query)
    endpoint = GenerateContent()
    replay = endpoint.render_stream(orjson.dumps(final), request)
    assert endpoint.stream_media_type(request) == media_type
    if media_type == "application/json":
        assert orjson.loads(replay) == [final]
    else:
        assert replay.startswith(b"data: ") and replay.endswith(b"\r\n\r\n")
    assert assemble(endpoint, request, [replay]) == final


def test_usage_and_identity_of_a_response() -> None:
    endpoint = GenerateContent()
    assert endpoint.response_model(TEXT) == "gemini-2.5-flash"
    assert endpoint.response_id(TEXT) == "mNj3aOKfL9Cm1MkP9ZbD-QQ"


# -- usage ---------------------------------------------------------------------------------------------


def test_usage_output_includes_thoughts_and_input_includes_cached_content() -> None:
    usage = {
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 1024,
        "candidatesTokenCount": 50,
        "thoughtsTokenCount": 120,
        "totalTokenCount": 1370,
    }
    assert GenerateContent().usage({"usageMetadata": usage}) == Usage(1200, 170, 1024, None)


def test_usage_without_thoughts_or_cache() -> None:
    assert GenerateContent().usage({"usageMetadata": PROMPT_USAGE}) == Usage(9, None, None, None)
    assert GenerateContent().usage({"usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 8}}) == Usage(
        9, 8, None, None
    )
    assert GenerateContent().usage({}) == Usage()


def test_an_array_stream_is_served_again_as_sse_chunk_by_chunk_and_as_json_through_the_cache() -> None:
    client, calls = through_cache(as_array(*TEXT_CHUNKS), "application/json; charset=UTF-8")
    body = {"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}]}
    headers = {"x-goog-api-key": "AIza-alice"}
    first = client.post(f"http://test{STREAM}", json=body, headers=headers)
    as_events = client.post(f"http://test{STREAM}?alt=sse", json=body, headers=headers)
    as_json = client.post("http://test/v1beta/models/gemini-2.5-flash:generateContent", json=body, headers=headers)
    assert [r.headers["x-cache"] for r in (first, as_events, as_json)] == ["MISS", "HIT", "HIT"]
    assert as_events.headers["content-type"] == "text/event-stream"
    # The array's chunks, each an event: the stream as the provider cut it, in the form asked for.
    events = as_events.content.split(b"\r\n\r\n")
    assert events[-1] == b"" and [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]] == list(TEXT_CHUNKS)
    assert as_json.json() == TEXT
    assert calls == [STREAM]


# -- which requests stream, share entries, bypass ------------------------------------------------------


def test_only_the_path_asks_for_a_stream() -> None:
    request = view("/v1beta/models/gemini-2.5-flash:generateContent", {"stream": True})
    assert request.stream is False
    assert view(STREAM, {"stream": False}).stream is True


def test_the_stream_and_json_methods_name_one_upstream() -> None:
    endpoint = GenerateContent()
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
    assert endpoint.upstream_identity(f"{base}:streamGenerateContent") == f"{base}:generatecontent"
    assert endpoint.upstream_identity(f"{base}:generateContent") == f"{base}:generatecontent"
    assert endpoint.upstream_identity("/no-method") == "/no-method"


@pytest.mark.parametrize(
    ("query", "sse"),
    [
        ("alt=sse", True),
        ("$alt=sse", True),
        ("key=AIza&alt=sse", True),
        ("alt=json", False),
        ("", False),
        ("x=sse", False),
    ],
)
def test_the_replay_is_sse_only_when_the_query_asks_for_it(query: str, sse: bool) -> None:
    request = view(STREAM, query=query)
    replay = GenerateContent().render_stream(orjson.dumps(TEXT), request)
    assert replay == (b"data: " + orjson.dumps(TEXT) + b"\r\n\r\n" if sse else b"[" + orjson.dumps(TEXT) + b"]")
    assert GenerateContent().stream_media_type(request) == ("text/event-stream" if sse else "application/json")


def test_the_store_tools_bypass_but_other_tools_do_not() -> None:
    """File Search (the REST API's JSON name, and the proto field name) and Vertex AI's `retrieval`."""
    route = resolve(STREAM)
    assert route is not None
    state = GenerateContent().server_state
    for spelling in ("fileSearch", "file_search", "retrieval"):
        assert state(route, {}, {"tools": [{"googleSearch": {}}, "fileSearch", {spelling: {}}]}) == (
            f"the {spelling} tool reads a store the provider holds, which changes as documents are added"
        )
    assert state(route, {}, {"tools": [{"googleSearch": {}}, {"codeExecution": {}}]}) is None
    assert state(route, {}, {"tools": {"fileSearch": {}}}) is None
    assert state(route, {}, {"cachedContent": "cachedContents/abc"}) is None


def test_the_last_plain_user_turn_is_what_the_semantic_cache_embeds() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Capital"}, {"text": "of France?"}]}]}
    assert GenerateContent().semantic_query(body) == ({"contents": []}, "Capital\nof France?")
    image = {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "x"}}]}]}
    assert GenerateContent().semantic_query(image) is None


def test_identity_fields_that_are_not_strings_are_not_reported() -> None:
    assert GenerateContent().response_model({"modelVersion": 2}) is None
    assert GenerateContent().response_id({"responseId": None}) is None


def test_output_usage_is_the_thoughts_alone_when_no_candidate_tokens_are_reported() -> None:
    assert GenerateContent().usage({"usageMetadata": {"thoughtsTokenCount": 5}}) == Usage(None, 5, None, None)
    assert GenerateContent().usage({"usageMetadata": "x"}) == Usage()


# -- what may be stored --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ({"finishReason": "STOP"}, None),
        ({"finishReason": "STOP", "content": {"role": "model"}}, None),
        ({"finishReason": "STOP", "index": "0"}, "`candidates[0].index` is str"),
        (
            {"finishReason": "STOP", "content": {"parts": [{"text": "x"}, "y"]}},
            "`candidates[0].content.parts`[1] is str, not an object",
        ),
        ({"finishReason": None}, "`candidates[0].finishReason` is null or missing"),
    ],
)
def test_an_answer_is_stored_only_when_every_candidate_finished_readably(
    candidate: dict[str, Any], reason: str | None
) -> None:
    got = GenerateContent().unstorable(orjson.dumps({"candidates": [candidate]}), view(STREAM))
    assert got == (None if reason is None else f"invalid response: {reason}")


def test_an_answer_whose_usage_is_not_an_object_is_not_stored() -> None:
    answer = {"candidates": [{"finishReason": "STOP"}], "usageMetadata": 9}
    assert GenerateContent().unstorable(orjson.dumps(answer), view(STREAM)) == (
        "invalid response: `usageMetadata` is int"
    )


def test_an_answer_without_candidates_is_not_stored() -> None:
    for candidates, reason in (([], "`candidates` is empty"), (None, "`candidates` is null or missing, not a list")):
        got = GenerateContent().unstorable(orjson.dumps({"candidates": candidates}), view(STREAM))
        assert got == f"invalid response: {reason}"


EMBED = "/v1beta/models/gemini-embedding-001:embedContent"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"embedding": {"values": [0.1, -2]}}, None),
        ({"embeddings": [{"values": [0.1]}, {"values": [1]}]}, None),
        (
            {"embeddings": [{"values": [0.1]}, {"values": ["1"]}]},
            "`embeddings[1].values` holds something other than numbers",
        ),
        ({"embeddings": {"values": [0.1]}}, "`embeddings` is dict, not a list"),
        ({"embedding": [0.1]}, "`embedding` is list"),
        ({"embedding": {"values": [0.1, "2"]}}, "`embedding.values` holds something other than numbers"),
        ({"embeddings": [{"values": [0.1]}], "embedding": "ignored"}, None),
        ({"embeddings": []}, "`embeddings` is empty"),
        ({"embeddings": [{"values": None}, {"values": [1]}]}, "`embeddings[0].values` is null or missing, not a list"),
    ],
)
def test_an_embedding_is_stored_only_as_a_list_of_numbers(answer: dict[str, Any], reason: str | None) -> None:
    got = EmbedContent().unstorable(orjson.dumps(answer), view(EMBED))
    assert got == (None if reason is None else f"invalid response: {reason}")


# -- assembly rules ------------------------------------------------------------------------------------


def candidate(*parts: dict[str, Any], finish: str | None = None, **fields: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, **fields}
    if finish:
        found["finishReason"] = finish
    return {"candidates": [found]}


def parts_of(*chunks: dict[str, Any]) -> list[dict[str, Any]]:
    final = assemble(GenerateContent(), view(STREAM, query="alt=sse"), [as_sse(*chunks)])
    assert final is not None
    return final["candidates"][0]["content"]["parts"]


def test_text_continues_the_last_part_only_when_both_are_plain_text_of_one_kind() -> None:
    assert parts_of(candidate({"text": "a"}), candidate({"text": "b"}, finish="STOP")) == [{"text": "ab"}]
    assert parts_of(candidate({"text": "a", "thought": True}), candidate({"text": "b"}, finish="STOP")) == [
        {"text": "a", "thought": True},
        {"text": "b"},
    ]
    assert parts_of(candidate({"text": "a", "thought": False}), candidate({"text": "b"}, finish="STOP")) == [
        {"text": "ab", "thought": False}
    ]
    assert parts_of(candidate({"text": "a"}), candidate({"text": "b", "videoMetadata": {}}, finish="STOP")) == [
        {"text": "a"},
        {"text": "b", "videoMetadata": {}},
    ]
    assert parts_of(candidate({"text": "a", "videoMetadata": {}}), candidate({"text": "b"}, finish="STOP")) == [
        {"text": "a", "videoMetadata": {}},
        {"text": "b"},
    ]


def test_only_the_first_part_of_a_chunk_continues_the_last_one() -> None:
    assert parts_of(candidate({"text": "a"}), candidate({"text": "b"}, {"text": "c"}, finish="STOP")) == [
        {"text": "ab"},
        {"text": "c"},
    ]


def test_a_signature_seals_a_part_and_moves_onto_the_part_it_ends() -> None:
    assert parts_of(
        candidate({"text": "a", "thought": True}),
        candidate({"text": "b", "thought": True, "thoughtSignature": "sig"}),
        candidate({"text": "c", "thought": True}, finish="STOP"),
    ) == [{"text": "ab", "thought": True, "thoughtSignature": "sig"}, {"text": "c", "thought": True}]


def test_parts_that_are_not_text_never_merge() -> None:
    call = {"functionCall": {"name": "f", "args": {}}}
    assert parts_of(candidate(call), candidate(call, finish="STOP")) == [call, call]
    assert parts_of(candidate(call), candidate({"text": "x"}, finish="STOP")) == [call, {"text": "x"}]


def test_citation_sources_accumulate_and_other_candidate_fields_take_the_latest_value() -> None:
    first = {"startIndex": 0, "endIndex": 5, "uri": "https://a.example"}
    second = {"startIndex": 6, "endIndex": 9, "uri": "https://b.example"}
    final = assemble(
        GenerateContent(),
        view(STREAM, query="alt=sse"),
        [
            as_sse(
                candidate({"text": "a"}, citationMetadata={"citationSources": [first]}, safetyRatings=[1]),
                candidate({"text": "b"}, citationMetadata={"citationSources": [second]}, safetyRatings=[2]),
                candidate(finish="STOP", citationMetadata={}),
                {"candidates": [{"content": {"role": "user"}}], "usageMetadata": {"promptTokenCount": 1}},
            )
        ],
    )
    assert final == {
        "candidates": [
            {
                "content": {"parts": [{"text": "ab"}], "role": "user"},
                "citationMetadata": {"citationSources": [first, second]},
                "safetyRatings": [2],
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 1},
    }


def test_a_stream_is_complete_only_when_every_candidate_finished() -> None:
    def two(*finishes: str | None) -> dict[str, Any]:
        found = [{"index": i, **({"finishReason": f} if f else {})} for i, f in enumerate(finishes)]
        return {"candidates": found}

    request = view(STREAM, query="alt=sse")
    assert assemble(GenerateContent(), request, [as_sse(two("STOP", None))]) is None
    assert assemble(GenerateContent(), request, [as_sse(two("STOP", None), two(None, "MAX_TOKENS"))]) is not None
    assert assemble(GenerateContent(), request, [as_sse({"usageMetadata": PROMPT_USAGE})]) is None
    assert assemble(GenerateContent(), request, [as_sse({"candidates": None})]) is None


def test_only_a_closed_array_of_finished_candidates_is_complete_an_sse_stream_never_is() -> None:
    """An SSE stream may send more after every candidate finished: it is stored when it ends."""
    sse_form = GenerateContent().assembler(view(STREAM, query="alt=sse"))
    sse_form.feed(as_sse(*TEXT_CHUNKS))
    assert not sse_form.complete and sse_form.result() is not None
    unfinished = GenerateContent().assembler(view(STREAM))
    unfinished.feed(as_array(TEXT_CHUNKS[0]))
    assert not unfinished.complete
    finished = GenerateContent().assembler(view(STREAM))
    finished.feed(as_array(*TEXT_CHUNKS))
    assert finished.complete


def test_a_chunk_that_is_not_an_object_breaks_the_stream_for_good() -> None:
    request = view(STREAM, query="alt=sse")
    assembler = GenerateContent().assembler(request)
    assembler.feed(b"data: [1]\r\n\r\n")
    assembler.feed(as_sse(*TEXT_CHUNKS))
    assert not assembler.complete and assembler.result() is None
    assert assemble(GenerateContent(), view(STREAM), [as_array(TEXT_CHUNKS[0]).replace(b"[{", b"[[{")]) is None


def test_the_array_decoder_refuses_a_payload_that_is_not_an_array() -> None:
    decoder = JSONArrayDecoder()
    assert decoder.feed(b'{"candidates": []}') == [] and decoder.malformed and not decoder.closed


def test_the_array_decoder_stops_at_the_closing_bracket() -> None:
    decoder = JSONArrayDecoder()
    assert decoder.feed(b'[{"a": 1}] [{"b": 2}]') == [b'{"a": 1}'] and decoder.closed
    assert decoder.feed(b'{"c": 3}') == []


def test_the_array_decoder_waits_for_an_escape_split_across_chunks() -> None:
    decoder = JSONArrayDecoder()
    assert decoder.feed(b'[{"t": "a\\') == []
    assert decoder.feed(b'"b"}') == [b'{"t": "a\\"b"}']
    assert decoder.feed(b"]") == [] and decoder.closed


def test_a_candidate_without_an_index_is_the_first() -> None:
    first = {"candidates": [{"index": 0, "content": {"parts": [{"text": "Pa"}], "role": "model"}}]}
    second = {"candidates": [{"content": {"parts": [{"text": "ris"}]}, "finishReason": "STOP"}]}
    final = assemble(GenerateContent(), view(STREAM, query="alt=sse"), [as_sse(first, second)])
    assert final is not None
    assert final["candidates"] == [
        {"index": 0, "content": {"parts": [{"text": "Paris"}], "role": "model"}, "finishReason": "STOP"}
    ]


# -- what telemetry reads ------------------------------------------------------------------------------


def test_the_request_parameters_telemetry_reads_are_in_generation_config() -> None:
    config = {
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 256,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
    }
    assert GenerateContent().request_attributes({"generationConfig": config, "temperature": 1.0}) == {
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 40.0,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.seed": 7,
        "gen_ai.request.presence_penalty": 0.1,
        "gen_ai.request.frequency_penalty": 0.2,
    }
    embedding = EmbedContent().request_attributes({"outputDimensionality": 768})
    assert embedding == {"gen_ai.embeddings.dimension.count": 768}


def test_the_messages_telemetry_reads_are_contents_the_system_instruction_and_each_candidate() -> None:
    endpoint, text = GenerateContent(), [{"text": "Hi"}]
    body = {"contents": [{"role": "user", "parts": text}], "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    assert endpoint.input_messages(body) == [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]
    assert endpoint.system_instructions(body) == [{"type": "text", "content": "Be brief."}]
    assert endpoint.system_instructions({"systemInstruction": "Be brief."}) == []
    answer = {
        "candidates": [
            {"content": {"role": "model", "parts": text}, "finishReason": "STOP"},
            {"content": {"parts": text}},
            {"content": {"role": "user", "parts": text}},
            {"finishReason": "SAFETY"},
            "junk",
        ]
    }
    assert endpoint.output_messages(answer) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi"}], "finish_reason": "STOP"},
        {"role": "assistant", "parts": [{"type": "text", "content": "Hi"}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
    ]
    assert endpoint.output_messages({"candidates": None}) == []
    assert endpoint.finish_reasons(answer) == ("STOP", "SAFETY")


def test_an_embedding_request_and_answer_hold_no_messages() -> None:
    request = {"content": {"parts": [{"text": "Hi"}]}, "messages": [{"role": "user", "content": "Hi"}]}
    assert EmbedContent().input_messages(request) == []
    answer = {"embedding": {"values": [0.1]}, "choices": [{"message": {"content": "Hi"}}]}
    assert EmbedContent().output_messages(answer) == []


# -- batchEmbedContents, served item by item -----------------------------------------------------------

BATCH = "/v1beta/models/text-embedding-004:batchEmbedContents"


def embed_request(text: str, **fields: Any) -> dict[str, Any]:
    return {"content": {"parts": [{"text": text}]}, **fields}


def test_a_batch_is_split_into_its_requests_each_keyed_as_its_own_embed_content() -> None:
    route = resolve(BATCH)
    assert route is not None
    items = EmbedContent().items
    model = "models/text-embedding-004"
    body = {"requests": [embed_request("a", model=model), embed_request("b")]}
    assert items(route, body) == [embed_request("a"), embed_request("b")]
    base = "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004"
    assert EmbedContent().upstream_identity(f"{base}:batchEmbedContents") == f"{base}:embedcontent"


@pytest.mark.parametrize(
    "body",
    [
        {"requests": []},
        {"requests": "a"},
        {"requests": [embed_request("a"), "b"]},
        {"requests": [embed_request("a")], "labels": {}},
        {"requests": [embed_request("a", model="models/gemini-embedding-001")]},
    ],
    ids=["empty", "not-a-list", "not-an-object", "another-field", "another-model"],
)
def test_a_batch_is_served_whole_unless_it_is_only_requests_for_the_paths_model(body: dict[str, Any]) -> None:
    route = resolve(BATCH)
    assert route is not None and EmbedContent().items(route, body) is None


def test_a_batch_asks_for_its_missing_items_and_its_answer_is_made_of_theirs() -> None:
    route, endpoint = resolve(BATCH), EmbedContent()
    assert route is not None
    body = {"requests": [embed_request("a"), embed_request("b"), embed_request("c")]}
    assert endpoint.batch_body(route, body, [2, 0]) == {"requests": [embed_request("c"), embed_request("a")]}
    answer = {"embeddings": [{"values": [1]}, {"values": [2]}]}
    assert endpoint.item_answers(answer, 2) == [{"embedding": {"values": [1]}}, {"embedding": {"values": [2]}}]
    assert endpoint.item_answers(answer, 3) is None
    assert endpoint.item_answers({"embeddings": "x"}, 1) is None
    items = [{"embedding": {"values": [2]}}, {"embedding": {"values": [1]}}]
    assert endpoint.batch_answer(items, None) == {"embeddings": [{"values": [2]}, {"values": [1]}]}
    assert endpoint.batch_answer(items[:1], {"embeddings": [], "metadata": 1}) == {
        "embeddings": [{"values": [2]}],
        "metadata": 1,
    }


def test_an_array_stream_cut_kept_before_arrays_were_framed_still_replays_compact() -> None:
    """A cut of the array form from a release before framing (version 1, its events unnamed, the
    elements' spelling not kept) replays as it did: compact elements joined by `,\\r\\n`."""
    recorder = cuts.CutRecorder(_TextRuns())  # as those releases recorded an array's elements
    for chunk in TEXT_CHUNKS:
        recorder.event(None, "", chunk)
    answer = orjson.dumps(assemble(GenerateContent(), view(STREAM), [as_array(*TEXT_CHUNKS)]))
    cut = recorder.cut(answer)
    assert cut is not None and msgpack.unpackb(cut)[0] == 1

    events = GenerateContent().replayed_events(cuts.replay(cut, answer))
    replay = GenerateContent().render_events(events, view(STREAM))

    assert replay == b"[" + b",\r\n".join(orjson.dumps(chunk) for chunk in TEXT_CHUNKS) + b"]"


def test_a_framed_cut_whose_frame_is_not_an_arrays_is_refused() -> None:
    """A cut read from a store names the bytes between elements: anything but `[`, `,` and `]` with
    whitespace about them is refused (the hit synthesises), never written into the stream."""
    events: list[cuts.Event] = [("[", b"{}", {}), ("x", b"{}", {}), ("]", b"", "")]
    with pytest.raises(cuts.CutError):
        GenerateContent().replayed_events(events)
    assert GenerateContent().replayed_events([("[", b"{}", {}), (" ,\n", b"{}", {}), ("\n]", b"", "")])


def test_an_indented_spelling_in_a_cut_of_the_first_version_is_refused() -> None:
    """Only a framed cut (version 2) may spell its events on several lines: a version-1 cut naming the
    indented spelling (a store's bytes rewritten) would put line breaks into SSE events."""
    indented = b"[" + b"\n,\r\n".join(json.dumps(chunk, indent=2).encode() for chunk in TEXT_CHUNKS) + b"]"
    assembler = GenerateContent().assembler(view(STREAM))
    assembler.feed(indented)
    answer = assembler.result()
    assert answer is not None
    cut = assembler.cut(answer)
    assert cut is not None
    version, *rest = msgpack.unpackb(cut, ext_hook=msgpack.ExtType)
    assert version == cuts.FRAMED_VERSION and len(cuts.replay(cut, answer)) == len(TEXT_CHUNKS) + 1

    with pytest.raises(cuts.CutError):
        cuts.replay(msgpack.packb([1, *rest]), answer)


def test_gemini_s_400_refusing_the_key_is_told_from_a_400_refusing_the_request(fake_provider: Any) -> None:
    """Google answers a bad key `400 INVALID_ARGUMENT`, as it answers a bad request: only the `ErrorInfo`
    reason `API_KEY_INVALID` in `error.details` says it is the key (in an array too, as a JSON stream)."""
    refusals = BY_FAMILY["gemini"]
    fake_provider.revoke_key("AIza-revoked")
    answer = httpx2.post(
        f"{fake_provider.gemini_base_url}/models/gemini-2.5-flash:generateContent",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": "AIza-revoked"},
        timeout=10,
    )
    assert answer.status_code == 400 and refusals.refuse(400, answer.headers, answer.content)
    assert refusals.refuse(400, {}, b"[" + answer.content + b"]")
    assert refusals.refuse(403, {}, b'{"error": {"code": 403, "status": "PERMISSION_DENIED"}}')
    bad_request = {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}
    assert not refusals.refuse(400, {}, orjson.dumps(bad_request))
    assert not refusals.refuse(400, {}, b"not json")
    assert not refusals.refuse(429, {}, answer.content)
