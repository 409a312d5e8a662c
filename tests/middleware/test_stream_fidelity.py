"""A hit is indistinguishable from the provider's answer: the SDKs themselves are the oracle.

Each fixture stream goes through the cache once from the provider (a miss, stored), then is
replayed as a stream and served as JSON (two hits). The openai SDK's own accumulation of the
original stream, its accumulation of the replay and the JSON hit must agree field by field, and
the replay's events must be the original's, one by one (the same fragments, the same fields).
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from llm_cache.middleware import Cache, CachingTransport
from tests.support.anthropic_streams import AnthropicBlock, anthropic_events
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stream_fixtures import CHAT_STREAMS

LIBS = pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
"""The sync transport in a client of each library the openai SDK takes (anthropic's takes httpx2 only)."""


def client(cache: Cache, fake_provider: RunningFakeProvider, lib: Any = httpx2) -> openai.OpenAI:
    http_client = lib.Client(transport=CachingTransport(cache=cache))
    return openai.OpenAI(
        api_key="sk-fidelity", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )


def streamed(sdk: openai.OpenAI, request: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(the SDK's accumulation of the stream, the raw chunks, the x-cache header)."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    raw: list[dict[str, Any]] = []
    response = sdk.chat.completions.with_raw_response.create(stream=True, **request)
    for event in response.parse():
        raw.append(event.to_dict())
        if event.object == "chat.completion.chunk":  # Azure's filter-only events, as the SDK's stream helper skips them
            state.handle_chunk(event)
    return comparable(state.get_final_completion().to_dict()), raw, response.headers["x-cache"]


def comparable(value: Any) -> Any:
    """The answer without SDK-only bookkeeping (`parsed`, `parsed_arguments`) and without nulls."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if v is not None and k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def answer_of(choice: dict[str, Any]) -> dict[str, Any]:
    return {k: choice.get(k) for k in ("index", "message", "finish_reason", "logprobs")}


def without_no_annotations(choice: dict[str, Any]) -> dict[str, Any]:
    message = {k: v for k, v in choice["message"].items() if k != "annotations" or v}
    return {**choice, "message": message}


def as_answer(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A stream snapshot in the form of the answer in one piece: tool calls lose their stream `index`."""

    def message(choice: dict[str, Any]) -> dict[str, Any]:
        calls = choice["message"].get("tool_calls")
        if not calls:
            return choice["message"]
        return {**choice["message"], "tool_calls": [{k: v for k, v in c.items() if k != "index"} for c in calls]}

    return {**snapshot, "choices": [{**choice, "message": message(choice)} for choice in snapshot["choices"]]}


def contains(whole: Any, part: Any) -> bool:
    """Whether `whole` has every field of `part` with the same value (objects may have more fields)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(map(contains, whole, part))
    return bool(whole == part)


@pytest.mark.parametrize("name", sorted(CHAT_STREAMS))
@LIBS
def test_a_chat_stream_hit_is_what_the_sdk_made_of_the_original(
    name: str, fake_provider: RunningFakeProvider, lib: Any
) -> None:
    cache = Cache()
    sdk = client(cache, fake_provider, lib)
    request = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": f"fixture: {name}"}],
        "stream_options": {"include_usage": True},
    }
    fake_provider.stream_next(CHAT_STREAMS[name])

    original, original_events, first = streamed(sdk, request)
    replay, replay_events, second = streamed(sdk, request)
    hit = sdk.chat.completions.with_raw_response.create(**request)

    assert (first, second, hit.headers["x-cache"]) == ("MISS", "HIT", "HIT")
    assert fake_provider.count("/chat/completions") == 1
    as_json = comparable(hit.parse().to_dict())
    # What the SDK assembles of a choice (message, finish reason, logprobs, usage) is the same three ways.
    answers = [answer_of(choice) for choice in as_answer(original)["choices"]]
    assert [answer_of(choice) for choice in as_answer(replay)["choices"]] == answers
    # (the JSON hit's message has `annotations: []` where OpenAI's JSON answer has it and its stream never)
    assert [answer_of(without_no_annotations(choice)) for choice in as_json["choices"]] == answers
    assert replay.get("usage") == original.get("usage") == as_json.get("usage")
    # Everything else the SDK kept is there too; the cache may hold more where the SDK keeps a field of
    # one event only (Azure's per-choice filter results: the SDK keeps the first event's, the cache all).
    assert contains(replay, original) and contains(as_json, as_answer(original))
    # The replay is the provider's stream: every event as it came, fragment by fragment.
    assert replay_events == original_events


def streamed_once(fake_provider: RunningFakeProvider, fixture: str) -> tuple[openai.OpenAI, dict[str, Any]]:
    """(a caching client, a request) after one stream of `fixture` went through, read to its end."""
    sdk = client(Cache(), fake_provider)
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": fixture}]}
    fake_provider.stream_next(CHAT_STREAMS[fixture])
    for _ in sdk.chat.completions.create(stream=True, **request):
        pass
    return sdk, request


def test_azure_filter_results_are_kept_on_the_answer_and_its_replay(fake_provider: RunningFakeProvider) -> None:
    sdk, request = streamed_once(fake_provider, "azure content filters")

    answer = sdk.chat.completions.with_raw_response.create(**request).parse().to_dict()

    assert answer["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    assert answer["choices"][0]["content_filter_results"] == {
        "hate": {"filtered": False, "severity": "safe"},
        "protected_material_text": {"filtered": False, "detected": False},
    }
    assert answer["id"] == "chatcmpl-fixture" and answer["choices"][0]["message"]["content"] == "Safe answer."


def test_a_legacy_function_call_is_stored_whole(fake_provider: RunningFakeProvider) -> None:
    sdk, request = streamed_once(fake_provider, "legacy function call")

    call = sdk.chat.completions.create(**request).choices[0].message.function_call

    assert call is not None
    assert (call.name, call.arguments) == ("get_weather", '{"location": "Boston, MA"}')


def anthropic_client(fake_provider: RunningFakeProvider) -> anthropic.Anthropic:
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    return anthropic.Anthropic(
        api_key="sk-ant-fidelity", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )


BIG = 123456789012345678901234567890
"""Beyond 64 bits: a parser that reads it as a float loses its last digits."""


def test_integers_beyond_64_bits_in_a_streamed_anthropic_tool_input_are_kept_exactly(
    fake_provider: RunningFakeProvider,
) -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
    deltas = [
        {"type": "input_json_delta", "partial_json": p} for p in ('{"order_id": 12345678901234', "5678901234567890}")
    ]
    fake_provider.stream_next(anthropic_events([(tool, deltas)], {"output_tokens": 9}, "tool_use"))
    client = anthropic_client(fake_provider)
    request = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "order?"}]}
    with client.messages.stream(**request) as stream:
        original = stream.get_final_message()
    with client.messages.stream(**request) as stream:
        replayed = stream.get_final_message()
    hit = client.messages.with_raw_response.create(**request)

    assert original.content[0].input == {"order_id": BIG}  # type: ignore[union-attr]
    assert replayed.content[0].input == {"order_id": BIG}  # type: ignore[union-attr]
    assert hit.headers["x-cache"] == "HIT" and hit.parse().content[0].input == {"order_id": BIG}  # type: ignore[union-attr]
    assert fake_provider.count("/v1/messages") == 1


def test_integers_beyond_64_bits_in_a_streamed_gemini_function_call_are_kept_exactly(
    fake_provider: RunningFakeProvider,
) -> None:
    call = {"functionCall": {"name": "lookup", "args": {"order_id": BIG}}}
    fake_provider.stream_next(
        [
            {
                "candidates": [{"content": {"parts": [call], "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8},
                "modelVersion": "gemini-2.0-flash",
            }
        ]
    )
    url = fake_provider.gemini_base_url + "/models/gemini-2.0-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "order?"}]}]}
    key = {"x-goog-api-key": "gm-big"}
    with httpx2.Client(transport=CachingTransport(cache=Cache())) as http:
        streamed = http.post(url + ":streamGenerateContent?alt=sse", json=body, headers=key)
        hit = http.post(url + ":generateContent", json=body, headers=key)

    assert str(BIG) in streamed.text
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json()["candidates"][0]["content"]["parts"][0] == call


def responses_stream() -> list[Any]:
    """A Responses stream with a web search and a cited answer, as the API sends it."""
    search = {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "x"},
    }
    citation = {"type": "url_citation", "start_index": 0, "end_index": 5, "url": "https://example.com", "title": "Ex"}
    text = {"type": "output_text", "text": "Paris", "annotations": [citation], "logprobs": []}
    message = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [text]}
    final = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "model": "gpt-4o-2024-08-06",
        "output": [search, message],
        "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
    }
    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    at = {"output_index": 1, "item_id": "msg_1", "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {"type": "response.output_item.added", "output_index": 0, "item": {**search, "status": "in_progress"}},
        {"type": "response.web_search_call.in_progress", "output_index": 0, "item_id": "ws_1"},
        {"type": "response.web_search_call.searching", "output_index": 0, "item_id": "ws_1"},
        {"type": "response.web_search_call.completed", "output_index": 0, "item_id": "ws_1"},
        {"type": "response.output_item.done", "output_index": 0, "item": search},
        {"type": "response.output_item.added", "output_index": 1, "item": {**message, "content": []}},
        {"type": "response.content_part.added", **at, "part": {**text, "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **at, "delta": "Paris", "logprobs": []},
        {"type": "response.output_text.annotation.added", **at, "annotation_index": 0, "annotation": citation},
        {"type": "response.output_text.done", **at, "text": "Paris", "logprobs": []},
        {"type": "response.content_part.done", **at, "part": text},
        {"type": "response.output_item.done", "output_index": 1, "item": message},
        {"type": "response.completed", "response": final},
    ]
    return [(event["type"], {**event, "sequence_number": n}) for n, event in enumerate(events)]


@LIBS
def test_a_responses_replay_carries_every_event_of_the_original(fake_provider: RunningFakeProvider, lib: Any) -> None:
    sdk = client(Cache(), fake_provider, lib)
    original_events = responses_stream()
    fake_provider.stream_next(original_events)
    request = {"model": "gpt-4o", "input": "Capital of France, with a source?", "tools": [{"type": "web_search"}]}

    with sdk.responses.stream(**request) as stream:
        original = stream.get_final_response()
    with sdk.responses.stream(**request) as stream:
        replay = stream.get_final_response()
    replayed = [event.to_dict() for event in sdk.responses.create(stream=True, **request)]

    assert replayed == [event for _, event in original_events]  # every event as sent
    assert replay.to_dict() == original.to_dict()
    assert fake_provider.count("/responses") == 1


def anthropic_stream() -> list[Any]:
    """A Messages stream with every kind of block: thinking (signed), redacted thinking, a server
    web search and its results, text with two citations, and a client tool call."""
    results = [{"type": "web_search_result", "url": "https://example.com", "title": "Ex", "encrypted_content": "abc"}]
    citation = {
        "type": "web_search_result_location",
        "url": "https://example.com",
        "title": "Ex",
        "encrypted_index": "e1",
        "cited_text": "Paris is the capital",
    }
    blocks: list[AnthropicBlock] = [
        (
            {"type": "thinking", "thinking": "", "signature": ""},
            [
                {"type": "thinking_delta", "thinking": "The user asks "},
                {"type": "thinking_delta", "thinking": "for the capital."},
                {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
            ],
        ),
        ({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}, []),
        (
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            [{"type": "input_json_delta", "partial_json": '{"query": "capital of France"}'}],
        ),
        ({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": results}, []),
        (
            {"type": "text", "text": "", "citations": []},
            [
                {"type": "citations_delta", "citation": citation},
                {"type": "citations_delta", "citation": {**citation, "encrypted_index": "e2"}},
                {"type": "text_delta", "text": "Paris"},
                {"type": "text_delta", "text": " is the capital."},
            ],
        ),
        (
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            [
                {"type": "input_json_delta", "partial_json": '{"city": '},
                {"type": "input_json_delta", "partial_json": '"Paris"}'},
            ],
        ),
    ]
    return anthropic_events(blocks, {"output_tokens": 120, "server_tool_use": {"web_search_requests": 1}}, "tool_use")


def test_an_anthropic_stream_hit_is_what_the_sdk_made_of_the_original(fake_provider: RunningFakeProvider) -> None:
    fake_provider.stream_next(anthropic_stream())
    client = anthropic_client(fake_provider)
    request = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "Capital?"}]}
    with client.messages.stream(**request) as stream:
        original = comparable(stream.get_final_message().to_dict())
    with client.messages.stream(**request) as stream:
        replay = comparable(stream.get_final_message().to_dict())
    replayed = [event.to_dict() for event in client.messages.create(stream=True, **request)]
    hit = client.messages.with_raw_response.create(**request)

    assert hit.headers["x-cache"] == "HIT" and fake_provider.count("/v1/messages") == 1
    assert replayed == [event for kind, event in anthropic_stream() if kind != "ping"]  # (the SDK yields no ping)
    assert replay == original
    assert comparable(hit.parse().to_dict()) == original
    assert [block["type"] for block in original["content"]] == [
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "text",
        "tool_use",
    ]
