"""The real google-genai SDK through the caching transports, against the fake provider's Gemini API.

google-genai takes an HTTPX client of either library (`HttpOptions(httpx_client=...)` /
`httpx_async_client=...`); the fake serves the `v1beta` API.
"""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import types

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from tests.support.fake_provider_fixtures import RunningFakeProvider

MODEL = "gemini-2.5-flash"
QUESTION = "What is the capital of France?"
GENERATE = ":generateContent"


def sync_client(cache: Cache, fake: RunningFakeProvider) -> genai.Client:
    options = types.HttpOptions(
        base_url=fake.url, api_version="v1beta", httpx_client=httpx.Client(transport=CachingTransport(cache=cache))
    )
    return genai.Client(api_key="gm-alice", http_options=options)


def async_client(cache: Cache, fake: RunningFakeProvider) -> Any:
    options = types.HttpOptions(
        base_url=fake.url,
        api_version="v1beta",
        httpx_async_client=httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache)),
    )
    return genai.Client(api_key="gm-alice", http_options=options).aio


def test_sync_sdk_on_httpx_second_call_is_a_hit_and_a_stream_replays_it(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    client = sync_client(cache, fake_provider)

    first = client.models.generate_content(model=MODEL, contents=QUESTION)
    second = client.models.generate_content(model=MODEL, contents=QUESTION)
    streamed = "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents=QUESTION))

    assert first.text and second.text == first.text == streamed
    assert (cache.stats.misses, cache.stats.hits) == (1, 2)
    assert fake_provider.count(GENERATE) == 1


async def test_async_sdk_on_httpx2_streams_a_miss_then_answers_json_from_it(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache()
    client = async_client(cache, fake_provider)

    chunks = [c async for c in await client.models.generate_content_stream(model=MODEL, contents=QUESTION)]
    answer = await client.models.generate_content(model=MODEL, contents=QUESTION)

    assert "".join(c.text or "" for c in chunks) == answer.text
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    assert fake_provider.count(":streamGenerateContent") == 1 and fake_provider.count(GENERATE) == 0


async def test_a_long_system_instruction_from_the_sdk_goes_into_a_cached_content(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching={"gemini": {"cached_contents": True}})
    client = async_client(cache, fake_provider)
    config = types.GenerateContentConfig(system_instruction="You answer for a bicycle shop. " + "Policy. " * 600)

    answers = [
        await client.models.generate_content(model=MODEL, contents=question, config=config)
        for question in ("Can I return a helmet?", "Do you sell tyres?")
    ]

    assert all(a.usage_metadata is not None and a.usage_metadata.cached_content_token_count for a in answers)
    bodies = [r.json for r in fake_provider.requests if r.path.endswith(GENERATE)]
    assert [("systemInstruction" in b, "cachedContent" in b) for b in bodies] == [(False, True), (False, True)]
    assert fake_provider.count("/cachedContents") == 1


def gemini_stream() -> list[dict[str, Any]]:
    """A Gemini stream as the API sends it: signed thoughts, answer text over several chunks, a function
    call, and the last chunk's finish reason, grounding, usage and model version."""

    def chunk(parts: list[dict[str, Any]], **candidate: Any) -> dict[str, Any]:
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0, **candidate}]}

    grounding = {
        "webSearchQueries": ["capital of France"],
        "groundingChunks": [{"web": {"uri": "https://example.com", "title": "Ex"}}],
    }
    usage = {"promptTokenCount": 8, "candidatesTokenCount": 9, "thoughtsTokenCount": 4, "totalTokenCount": 21}
    return [
        chunk([{"text": "The user asks ", "thought": True}]),
        chunk([{"text": "for a capital.", "thought": True, "thoughtSignature": "c2lnLTE="}]),
        chunk([{"text": "The capital "}]),
        chunk([{"text": "is Paris."}]),
        {
            **chunk(
                [{"functionCall": {"name": "show_map", "args": {"city": "Paris", "zoom": 12}}}],
                finishReason="STOP",
                groundingMetadata=grounding,
            ),
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-gm-1",
        },
    ]


def test_a_gemini_stream_hit_reads_in_the_sdk_as_the_original_did(fake_provider: RunningFakeProvider) -> None:
    client = sync_client(Cache(), fake_provider)
    fake_provider.stream_next(gemini_stream())

    def read_stream() -> tuple[str, list[Any], Any, Any]:
        chunks = list(client.models.generate_content_stream(model=MODEL, contents="Capital, with a map?"))
        answer = "".join(
            part.text for c in chunks for part in c.candidates[0].content.parts if part.text and not part.thought
        )
        calls = [call for c in chunks for call in (c.function_calls or [])]
        return answer, calls, chunks[-1].usage_metadata, chunks[-1].candidates[0].grounding_metadata

    original = read_stream()
    replay = read_stream()
    hit = client.models.generate_content(model=MODEL, contents="Capital, with a map?")

    assert original[0] == "The capital is Paris." and replay == original
    assert hit.text == original[0] and hit.function_calls == original[1]
    assert hit.usage_metadata == original[2] and hit.candidates[0].grounding_metadata == original[3]
    thoughts = [part for part in hit.candidates[0].content.parts if part.thought]
    assert "".join(part.text for part in thoughts) == "The user asks for a capital."
    assert thoughts[-1].thought_signature == b"sig-1"
    assert fake_provider.count(":streamGenerateContent") == 1 and fake_provider.count(GENERATE) == 0
