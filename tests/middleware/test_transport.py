"""The caching transports under the real openai and anthropic SDKs, against a real HTTP fake provider.

Every SDK client is built with `max_retries=0`, so each provider call the fake
counts is one the cache let through.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from tests.support.stores import CountingStore, DeadStore

CHAT = "/chat/completions"
MESSAGES = "/v1/messages"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def openai_sync(cache: Cache, base_url: str, lib: Any = httpx2, api_key: str = "sk-alice") -> openai.OpenAI:
    http_client = lib.Client(transport=CachingTransport(cache=cache))
    return openai.OpenAI(api_key=api_key, base_url=base_url, http_client=http_client, max_retries=0)


def openai_async(cache: Cache, base_url: str, lib: Any = httpx2, api_key: str = "sk-alice") -> openai.AsyncOpenAI:
    http_client = lib.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, http_client=http_client, max_retries=0)


def anthropic_sync(cache: Cache, base_url: str, api_key: str = "sk-ant-alice") -> anthropic.Anthropic:
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
    return anthropic.Anthropic(api_key=api_key, base_url=base_url, http_client=http_client, max_retries=0)


def anthropic_async(cache: Cache, base_url: str, api_key: str = "sk-ant-alice") -> anthropic.AsyncAnthropic:
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, http_client=http_client, max_retries=0)


def ask(client: openai.OpenAI, **overrides: Any) -> Any:
    params: dict[str, Any] = {"model": "gpt-4o-mini", "messages": QUESTION, "temperature": 0.2, **overrides}
    return client.chat.completions.with_raw_response.create(**params)


def streamed_text(client: openai.OpenAI, **overrides: Any) -> str:
    params: dict[str, Any] = {"model": "gpt-4o-mini", "messages": QUESTION, "temperature": 0.2, **overrides}
    stream = client.chat.completions.create(stream=True, **params)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


# -- openai, sync and async, on httpx2 and on legacy httpx ------------------------------------


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
def test_openai_sync_second_identical_call_is_a_hit_without_network(fake_provider: Any, lib: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url, lib)
    first = ask(client)
    second = ask(client)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert second.parse().id == first.parse().id
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert isinstance(second.http_response, lib.Response)
    assert fake_provider.count(CHAT) == 1


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
async def test_openai_async_second_identical_call_is_a_hit(fake_provider: Any, lib: Any) -> None:
    client = openai_async(Cache(), fake_provider.openai_base_url, lib)
    params: dict[str, Any] = {"model": "gpt-4o-mini", "messages": QUESTION}
    first = await client.chat.completions.with_raw_response.create(**params)
    second = await client.chat.completions.with_raw_response.create(**params)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.parse().id == first.parse().id
    assert fake_provider.count(CHAT) == 1


def test_reordered_json_keys_hit(fake_provider: Any) -> None:
    cache = Cache()
    url = fake_provider.openai_base_url + CHAT
    auth = {"authorization": "Bearer sk-alice", "content-type": "application/json"}
    with httpx2.Client(transport=CachingTransport(cache=cache)) as http:
        first = http.post(
            url,
            headers=auth,
            content=b'{"model":"gpt-4o-mini","temperature":0.2,"messages":[{"role":"user","content":"x"}]}',
        )
        second = http.post(
            url,
            headers=auth,
            content=b'{"messages":[{"content":"x","role":"user"}],"temperature":0.2,"model":"gpt-4o-mini"}',
        )
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert fake_provider.count(CHAT) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"temperature": 0.9},
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
        {"extra_body": {"reasoning_knob_from_the_future": "max"}},
    ],
    ids=["model", "temperature", "tools", "unknown-param"],
)
def test_any_change_that_can_alter_the_answer_misses(fake_provider: Any, change: dict[str, Any]) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    ask(client)
    changed = ask(client, **change)
    assert changed.headers["x-cache"] == "MISS"
    assert fake_provider.count(CHAT) == 2


def test_another_credential_misses(fake_provider: Any) -> None:
    cache = Cache()
    ask(openai_sync(cache, fake_provider.openai_base_url, api_key="sk-alice"))
    other = ask(openai_sync(cache, fake_provider.openai_base_url, api_key="sk-bob"))
    same = ask(openai_sync(cache, fake_provider.openai_base_url, api_key="sk-alice"))
    assert other.headers["x-cache"] == "MISS" and same.headers["x-cache"] == "HIT"
    assert fake_provider.count(CHAT) == 2


def test_stream_after_non_stream_hits_with_the_same_content(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    plain = ask(client).parse().choices[0].message.content
    assert streamed_text(client) == plain
    assert fake_provider.count(CHAT) == 1


def test_non_stream_after_stream_hits_with_the_same_content(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    text = streamed_text(client)
    again = ask(client)
    assert again.headers["x-cache"] == "HIT"
    assert again.parse().choices[0].message.content == text
    assert streamed_text(client) == text
    assert fake_provider.count(CHAT) == 1


async def test_async_stream_replay_carries_usage_when_asked(fake_provider: Any) -> None:
    client = openai_async(Cache(), fake_provider.openai_base_url)
    params: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": QUESTION,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = [chunk async for chunk in await client.chat.completions.create(**params)]
    second = [chunk async for chunk in await client.chat.completions.create(**params)]
    text = ["".join(c.choices[0].delta.content or "" for c in run if c.choices) for run in (first, second)]
    assert text[0] == text[1] and text[0]
    assert first[-1].usage is not None and second[-1].usage == first[-1].usage
    assert fake_provider.count(CHAT) == 1


def test_an_answer_stored_without_usage_never_serves_a_request_that_would_get_usage(fake_provider: Any) -> None:
    cache = Cache()
    client = openai_sync(cache, fake_provider.openai_base_url)
    without = {"stream": True, "stream_options": {"include_usage": False}}
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, temperature=0.2, **without))
    assert all(chunk.usage is None for chunk in chunks)

    replayed = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, temperature=0.2, **without))
    as_json = ask(client)  # JSON answers always carry usage: a miss that refreshes the entry
    asked = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,
            temperature=0.2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert [c.model_dump() for c in replayed] != [] and fake_provider.count(CHAT) == 2
    assert as_json.headers["x-cache"] == "MISS" and as_json.parse().usage is not None
    assert asked[-1].usage == as_json.parse().usage  # served from the refreshed entry
    assert fake_provider.count(CHAT) == 2


def test_tool_calls_survive_a_stream_capture(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    list(
        client.chat.completions.create(model="gpt-4o-mini", messages=weather, tools=tools, temperature=0.2, stream=True)
    )
    cached = ask(client, messages=weather, tools=tools)
    assert cached.headers["x-cache"] == "HIT"
    call = cached.parse().choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments
    assert fake_provider.count(CHAT) == 1


def test_a_stream_cut_off_midway_is_not_stored(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    fake_provider.cut_stream_after(2)
    with pytest.raises((httpx2.HTTPError, openai.APIError)):
        streamed_text(client)
    again = ask(client)
    assert again.headers["x-cache"] == "MISS"
    assert fake_provider.count(CHAT) == 2


def test_a_stream_the_caller_abandons_is_not_stored(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, temperature=0.2, stream=True)
    next(iter(stream))
    stream.close()
    assert ask(client).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("lib", [httpx2, httpx])
def test_a_stream_is_stored_at_its_terminal_event_whatever_the_reader_does_next(fake_provider: Any, lib: Any) -> None:
    """A reader may stop at the terminal event and never close the response (or read it again later):
    the answer is complete, so it is stored then."""
    cache = Cache()
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    with lib.Client(transport=CachingTransport(cache=cache)) as http:
        request = http.build_request(
            "POST", fake_provider.openai_base_url + CHAT, json=body, headers={"authorization": "Bearer sk-alice"}
        )
        response = http.send(request, stream=True)
        seen = b""
        for chunk in response.iter_raw():
            seen += chunk
            if b"data: [DONE]" in seen:
                break  # left open, not drained

        assert cache.stats.stored == 1
        alice = {"authorization": "Bearer sk-alice"}
        replay = http.post(fake_provider.openai_base_url + CHAT, json=body, headers=alice)
        assert replay.headers["x-cache"] == "HIT" and replay.text.endswith("data: [DONE]\n\n")
        response.close()


async def test_an_async_stream_is_stored_at_its_terminal_event(fake_provider: Any) -> None:
    cache = Cache()
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache)) as http:
        request = http.build_request(
            "POST", fake_provider.openai_base_url + CHAT, json=body, headers={"authorization": "Bearer sk-alice"}
        )
        response = await http.send(request, stream=True)
        seen = b""
        async for chunk in response.aiter_raw():
            seen += chunk
            if b"data: [DONE]" in seen:
                break

        assert cache.stats.stored == 1
        await response.aclose()


def test_provider_errors_are_not_stored(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    fake_provider.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert ask(client).headers["x-cache"] == "MISS"
    assert fake_provider.count(CHAT) == 2


@pytest.mark.parametrize("store", [DeadStore(), None], ids=["dead-store", "memory"])
def test_a_dead_store_never_fails_a_request(fake_provider: Any, store: Any) -> None:
    cache = Cache(store=store)
    client = openai_sync(cache, fake_provider.openai_base_url)
    responses = [ask(client) for _ in range(2)]
    assert all(r.status_code == 200 for r in responses)
    if store is not None:
        assert cache.stats.store_errors == 4
        assert fake_provider.count(CHAT) == 2


async def test_fifty_concurrent_identical_misses_make_one_provider_call(fake_provider: Any) -> None:
    store = CountingStore()
    client = openai_async(Cache(store=store), fake_provider.openai_base_url)
    fake_provider.hold()
    try:
        tasks = [
            asyncio.create_task(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION))
            for _ in range(50)
        ]
        async with asyncio.timeout(10):
            while store.reads < 50:  # every request has looked up: one leads, 49 wait on it
                await asyncio.sleep(0.001)
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
    finally:
        fake_provider.release()
    answers = await asyncio.gather(*tasks)
    assert {a.id for a in answers} == {answers[0].id}
    assert fake_provider.count(CHAT) == 1


def test_sync_threads_share_one_cache(fake_provider: Any) -> None:
    cache = Cache()
    client = openai_sync(cache, fake_provider.openai_base_url)
    ask(client)
    results: list[str] = []

    def worker() -> None:
        results.append(ask(client).headers["x-cache"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == ["HIT"] * 8


def test_non_llm_calls_pass_through_untouched(fake_provider: Any) -> None:
    client = openai_sync(Cache(), fake_provider.openai_base_url)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.list()
    assert "x-cache" not in caught.value.response.headers


def test_cache_and_routing_compose_through_inner(fake_provider: Any) -> None:
    seen: list[str] = []

    class Tap(httpx2.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            seen.append(request.url.path)
            return self.inner.handle_request(request)

    http_client = httpx2.Client(transport=CachingTransport(cache=Cache(), inner=Tap()))
    client = openai.OpenAI(api_key="k", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0)
    ask(client)
    ask(client)
    assert seen == ["/v1/chat/completions"]


# -- anthropic ------------------------------------------------------------------------------


def test_anthropic_sync_hit_and_stream_replay(fake_provider: Any) -> None:
    client = anthropic_sync(Cache(), fake_provider.anthropic_base_url)
    params: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": QUESTION}
    first = client.messages.with_raw_response.create(**params)
    second = client.messages.with_raw_response.create(**params)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    message = second.parse()
    assert message.id == first.parse().id
    with client.messages.stream(**params) as stream:
        replayed = stream.get_final_message()
    assert replayed.content[0].text == message.content[0].text
    assert fake_provider.count(MESSAGES) == 1


async def test_anthropic_async_stream_first_then_json(fake_provider: Any) -> None:
    client = anthropic_async(Cache(), fake_provider.anthropic_base_url)
    params: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": QUESTION}
    async with client.messages.stream(**params) as stream:
        streamed = await stream.get_final_message()
    cached = await client.messages.with_raw_response.create(**params)
    assert cached.headers["x-cache"] == "HIT"
    message = await cached.parse()
    assert message.content[0].text == streamed.content[0].text
    assert message.usage.output_tokens == streamed.usage.output_tokens
    assert fake_provider.count(MESSAGES) == 1


def test_anthropic_thinking_and_signatures_are_kept(fake_provider: Any) -> None:
    client = anthropic_sync(Cache(), fake_provider.anthropic_base_url)
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 2048,
        "messages": QUESTION,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    with client.messages.stream(**params) as stream:
        streamed = stream.get_final_message()
    cached = client.messages.create(**params)
    assert [block.type for block in cached.content] == [block.type for block in streamed.content]
    thinking = next(block for block in cached.content if block.type == "thinking")
    assert thinking.signature and thinking.thinking
    assert fake_provider.count(MESSAGES) == 1


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_the_transports_are_transports_of_both_libraries(lib: Any) -> None:
    """Type checkers accept them in either library's clients: they subclass both base classes."""
    sync = CachingTransport(cache=Cache())
    try:
        assert isinstance(sync, lib.BaseTransport)
        assert isinstance(AsyncCachingTransport(cache=Cache()), lib.AsyncBaseTransport)
    finally:
        sync.close()
