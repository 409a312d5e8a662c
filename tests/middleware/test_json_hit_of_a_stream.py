"""A JSON hit of an entry filled by a stream reads, through the real SDKs, as the provider's own JSON
answer to that request: the stream miss is stored, the JSON request with the same key (the key ignores
`stream`) is a hit, and what the SDK parses from it equals what it parses from the provider's JSON
answer (`model_dump()`), but for what differs between two calls (ids, timestamps) and what a stream
cannot tell (docs/providers.md, "A JSON hit of an entry filled by a stream")."""

from __future__ import annotations

import functools
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware
from tests.support.fake_provider_fixtures import RunningFakeProvider

PER_CALL = frozenset({"id", "created", "created_at", "completed_at"})
"""What two calls of the provider answer differently (the fake provider numbers its answers)."""


def http(layer: str, fake: RunningFakeProvider, cached: bool) -> tuple[httpx2.AsyncClient, str]:
    if not cached:
        return httpx2.AsyncClient(), fake.url
    if layer == "transport":
        return httpx2.AsyncClient(transport=AsyncCachingTransport(cache=Cache())), fake.url
    app = CacheMiddleware(fake.provider.app, cache=Cache())
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)), "http://provider.test"


def openai_client(layer: str, fake: RunningFakeProvider, cached: bool = True) -> openai.AsyncOpenAI:
    client, base = http(layer, fake, cached)
    return openai.AsyncOpenAI(api_key="sk-json-hit", base_url=f"{base}/v1", http_client=client, max_retries=0)


def anthropic_client(layer: str, fake: RunningFakeProvider, cached: bool = True) -> anthropic.AsyncAnthropic:
    client, base = http(layer, fake, cached)
    return anthropic.AsyncAnthropic(api_key="sk-ant-json-hit", base_url=base, http_client=client, max_retries=0)


def without_per_call(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_per_call(v) for k, v in value.items() if k not in PER_CALL}
    if isinstance(value, list):
        return [without_per_call(v) for v in value]
    return value


def attribute(client: Any, dotted: str) -> Any:
    return functools.reduce(getattr, dotted.split("."), client)


async def streamed_then_json(layer: str, fake: RunningFakeProvider, api: str, request: dict[str, Any]) -> Any:
    """(the JSON hit after a stream miss of `request` to the openai SDK's `api`, the provider's own
    JSON answer to it), both raw responses."""
    cached = attribute(openai_client(layer, fake), api)
    [event async for event in await cached.create(stream=True, **request)]
    hit = await cached.with_raw_response.create(**request)
    direct = await attribute(openai_client(layer, fake, cached=False), api).with_raw_response.create(**request)
    assert hit.headers["x-cache"] == "HIT"
    return hit, direct


LAYERS = pytest.mark.parametrize("layer", ["transport", "middleware"])
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me about the sea, in a few words."}]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@LAYERS
@pytest.mark.parametrize("request_", [CHAT, {**CHAT, "tools": TOOLS}], ids=["text", "tool call"])
async def test_a_chat_json_hit_of_a_streamed_entry_parses_as_the_providers_json_answer(
    layer: str, request_: dict[str, Any], fake_provider: RunningFakeProvider
) -> None:
    hit, direct = await streamed_then_json(layer, fake_provider, "chat.completions", request_)

    assert without_per_call(hit.parse().model_dump()) == without_per_call(direct.parse().model_dump())
    assert key_order(hit.http_response.json()) == key_order(direct.http_response.json())


def key_order(answer: dict[str, Any]) -> list[Any]:
    """The order of the answer's fields, its choices' and their messages' (as the raw JSON has them)."""
    choices = answer["choices"]
    return [list(answer), [list(c) for c in choices], [list(c["message"]) for c in choices]]


@LAYERS
async def test_a_messages_json_hit_of_a_streamed_entry_parses_as_the_providers_json_answer(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Tell me about the sea, in a few words."}],
    }
    cached = anthropic_client(layer, fake_provider)
    async with cached.messages.stream(**request) as stream:
        await stream.get_final_message()
    hit = await cached.messages.with_raw_response.create(**request)
    direct = await anthropic_client(layer, fake_provider, cached=False).messages.with_raw_response.create(**request)

    assert hit.headers["x-cache"] == "HIT"
    assert without_per_call((await hit.parse()).model_dump()) == without_per_call((await direct.parse()).model_dump())
    assert list(hit.http_response.json()) == list(direct.http_response.json())


@LAYERS
@pytest.mark.parametrize(
    ("api", "request_"),
    [
        ("responses", {"model": "gpt-4o", "input": "Tell me about the sea, in a few words."}),
        ("completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Tell me about the sea, in a few words."}),
    ],
)
async def test_a_responses_or_completions_json_hit_of_a_streamed_entry_parses_as_the_providers_json_answer(
    layer: str, api: str, request_: dict[str, Any], fake_provider: RunningFakeProvider
) -> None:
    hit, direct = await streamed_then_json(layer, fake_provider, api, request_)

    assert without_per_call(hit.parse().model_dump()) == without_per_call(direct.parse().model_dump())
    answer, original = hit.http_response.json(), direct.http_response.json()
    assert list(answer) == list(original)
    assert [list(c) for c in answer.get("choices", ())] == [list(c) for c in original.get("choices", ())]
