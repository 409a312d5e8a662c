"""A hit is indistinguishable from the provider's answer: the SDKs themselves are the oracle.

Each fixture stream goes through the cache once from the provider (a miss, stored), then is
replayed as a stream and served as JSON (two hits). The openai SDK's own accumulation of the
original stream, its accumulation of the replay and the JSON hit must agree field by field, and
the replay must carry every field the original's events carried.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from middleware import Cache, CachingTransport
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stream_fixtures import CHAT_STREAMS

STREAM_ONLY = {"obfuscation"}
"""Chunk fields that describe the stream itself (padding), never part of the answer."""


def client(cache: Cache, fake_provider: RunningFakeProvider) -> openai.OpenAI:
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
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
    """A choice's answer; a stream snapshot's tool calls keep their stream `index`, an answer's don't."""
    answer = {k: choice.get(k) for k in ("index", "message", "finish_reason", "logprobs")}
    calls = answer["message"].get("tool_calls")
    if calls:
        answer["message"] = {**answer["message"], "tool_calls": [{**c, "index": None} for c in calls]}
    return answer


def without_call_indexes(snapshot: dict[str, Any]) -> dict[str, Any]:
    choices = [{**c, "message": answer_of(c)["message"]} for c in snapshot["choices"]]
    return {**snapshot, "choices": [{**c, "message": drop_none_index(c["message"])} for c in choices]}


def drop_none_index(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if not calls:
        return message
    return {**message, "tool_calls": [{k: v for k, v in c.items() if k != "index"} for c in calls]}


def contains(whole: Any, part: Any) -> bool:
    """Whether `whole` has every field of `part` with the same value (objects may have more fields)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(map(contains, whole, part))
    return bool(whole == part)


def field_paths(value: Any, prefix: str = "") -> set[str]:
    """Every field path an event carries, list positions folded (`choices[].delta.audio.data`)."""
    if isinstance(value, dict):
        paths = set()
        for key, item in value.items():
            if item is None or key in STREAM_ONLY:
                continue
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | field_paths(item, path)
        return paths
    if isinstance(value, list):
        return set().union(*(field_paths(item, prefix + "[]") for item in value)) if value else set()
    return set()


@pytest.mark.parametrize("name", sorted(CHAT_STREAMS))
def test_a_chat_stream_hit_is_what_the_sdk_made_of_the_original(name: str, fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    sdk = client(cache, fake_provider)
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
    assert [answer_of(choice) for choice in replay["choices"]] == [answer_of(c) for c in original["choices"]]
    assert [answer_of(choice) for choice in as_json["choices"]] == [answer_of(c) for c in original["choices"]]
    assert replay.get("usage") == original.get("usage") == as_json.get("usage")
    # Everything else the SDK kept is there too; the cache may hold more where the SDK keeps a field of
    # one event only (Azure's per-choice filter results: the SDK keeps the first event's, the cache all).
    assert contains(replay, original) and contains(as_json, without_call_indexes(original))
    # Every field the provider's events carried is in the replay too (`object` differs by design:
    # Azure's filter-only event has an empty one).
    missing = set().union(*map(field_paths, original_events)) - set().union(*map(field_paths, replay_events))
    assert missing == set()


def test_azure_filter_results_are_kept_on_the_answer_and_its_replay(fake_provider: RunningFakeProvider) -> None:
    sdk = client(Cache(), fake_provider)
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "filters"}]}
    fake_provider.stream_next(CHAT_STREAMS["azure content filters"])
    for _ in sdk.chat.completions.create(stream=True, **request):
        pass

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
    sdk = client(Cache(), fake_provider)
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "weather?"}]}
    fake_provider.stream_next(CHAT_STREAMS["legacy function call"])
    for _ in sdk.chat.completions.create(stream=True, **request):
        pass

    call = sdk.chat.completions.create(**request).choices[0].message.function_call

    assert call is not None
    assert (call.name, call.arguments) == ("get_weather", '{"location": "Boston, MA"}')


BIG = 123456789012345678901234567890
"""Beyond 64 bits: a parser that reads it as a float loses its last digits."""


def test_integers_beyond_64_bits_in_a_streamed_anthropic_tool_input_are_kept_exactly(
    fake_provider: RunningFakeProvider,
) -> None:
    message = {
        "id": "msg_big",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    tool = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
    fake_provider.stream_next(
        [
            ("message_start", {"type": "message_start", "message": message}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": tool}),
            *(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    },
                )
                for part in ('{"order_id": 12345678901234', "5678901234567890}")
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    )
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = anthropic.Anthropic(
        api_key="sk-ant-big", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )
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
