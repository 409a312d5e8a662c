"""The cache never breaks a call that works without it: an upstream that refuses what the cache adds.

The cache adds `stream_options.include_usage` to streams (so stored entries carry usage) and, when
configured, prompt-caching hints. An upstream that does not know a field answers 400 naming it
(older Azure api-versions, some OpenAI-compatible servers): the request is sent once more as the
caller wrote it, and the refusal is remembered for that upstream.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider_fixtures import RunningFakeProvider

CHAT = "/chat/completions"
SYSTEM = "You are the support assistant of a bicycle shop. " + "Policies: returns within 30 days. " * 60


def question(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def streamed_text(client: openai.OpenAI, text: str) -> str:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=question(text), stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_a_stream_to_an_upstream_that_refuses_stream_options_works_and_is_remembered(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.refuse_field("stream_options")
    cache = Cache()
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )

    first = streamed_text(client, "What is the capital of France?")
    assert first and fake_provider.count(CHAT) == 2  # refused once, then sent as the caller wrote it
    assert "stream_options" not in fake_provider.last.json

    second = streamed_text(client, "What is the capital of Italy?")
    assert second and fake_provider.count(CHAT) == 3  # the refusal is remembered: one call
    replay = streamed_text(client, "What is the capital of France?")
    assert replay == first and fake_provider.count(CHAT) == 3
    assert cache.stats.stored == 2


async def test_prompt_caching_hints_an_upstream_refuses_are_dropped_and_remembered(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.refuse_field("cache_control")
    cache = Cache(prompt_caching={"anthropic": {"mode": "breakpoints"}})
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = anthropic.AsyncAnthropic(
        api_key="sk-ant-alice", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )

    async def ask(text: str) -> Any:
        return await client.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=64, system=SYSTEM, messages=question(text)
        )

    first = await ask("When do you open?")
    assert first.status_code == 200 and fake_provider.count("/v1/messages") == 2
    second = await ask("When do you close?")
    assert second.status_code == 200 and fake_provider.count("/v1/messages") == 3
    assert "cache_control" not in str(fake_provider.last.json)


def test_a_request_the_upstream_refuses_for_itself_is_relayed_once(fake_provider: RunningFakeProvider) -> None:
    """A 400 that names nothing the cache added is the caller's own: relayed, not retried."""
    fake_provider.refuse_field("logit_bias")
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=question("Hi"), stream=True, logit_bias={"50256": -100}
        )
    assert fake_provider.count(CHAT) == 1


def test_a_caller_cannot_switch_an_addition_off_for_everyone(fake_provider: RunningFakeProvider) -> None:
    """A 400 about the caller's own field inside `stream_options` names `stream_options`: the request is
    sent again as written, is refused again, and the refusal is not remembered for the upstream."""
    fake_provider.refuse_field("chunk_size", named_as="stream_options.chunk_size")
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = openai.OpenAI(
        api_key="sk-mallory", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=question("Hi"), stream=True, stream_options={"chunk_size": 1}
        )
    assert fake_provider.count(CHAT) == 2

    assert streamed_text(client, "What is the capital of Chile?")
    assert fake_provider.last.json["stream_options"] == {"include_usage": True}  # still added for everyone


def test_the_gateway_retries_without_what_the_upstream_refused(fake_provider: RunningFakeProvider) -> None:
    fake_provider.refuse_field("stream_options")
    config = parse_config(
        {"cache": {"store": {"type": "memory"}}, "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}}}
    )
    server = BackgroundServer(create_gateway(config)).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-alice", max_retries=0)
        text = streamed_text(client, "What is the capital of Spain?")
        assert text and fake_provider.count(CHAT) == 2
        assert streamed_text(client, "What is the capital of Spain?") == text
        assert streamed_text(client, "What is the capital of Peru?") and fake_provider.count(CHAT) == 3
    finally:
        server.stop()


def test_the_usage_chunk_the_cache_asked_for_never_reaches_a_caller_of_a_gzip_stream(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.gzip_streams()
    cache = Cache()
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=question("Hello?"), stream=True)
    chunks = list(stream)

    assert fake_provider.last.json["stream_options"] == {"include_usage": True}  # asked upstream
    assert chunks and all(chunk.choices for chunk in chunks)  # never a usage-only chunk for this caller
    assert all(chunk.usage is None for chunk in chunks)
    as_json = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question("Hello?"))
    assert as_json.headers["x-cache"] == "HIT" and as_json.parse().usage is not None


def test_the_gateway_hides_the_usage_chunk_of_a_gzip_stream_too(fake_provider: RunningFakeProvider) -> None:
    fake_provider.gzip_streams()
    config = parse_config(
        {"cache": {"store": {"type": "memory"}}, "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}}}
    )
    server = BackgroundServer(create_gateway(config)).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-alice", max_retries=0)
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=question("Hey"), stream=True))
        assert fake_provider.last.headers["accept-encoding"] == "gzip"
        assert chunks and all(chunk.choices for chunk in chunks)
    finally:
        server.stop()
