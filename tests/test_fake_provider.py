"""Self-tests of the fake provider, driven by the real openai and anthropic SDKs (no cache involved)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.support.fake_provider_fixtures import RunningFakeProvider

QUESTION: Any = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]
ANTHROPIC_WEATHER_TOOL: Any = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
]


def oai(fp: RunningFakeProvider) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=fp.openai_base_url, max_retries=0)


def aoai(fp: RunningFakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=fp.openai_base_url, max_retries=0)


def ant(fp: RunningFakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=fp.anthropic_base_url, max_retries=0)


def aant(fp: RunningFakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=fp.anthropic_base_url, max_retries=0)


# -- OpenAI chat completions ----------------------------------------------------------------------


def test_openai_chat_is_deterministic_per_request_with_fresh_ids(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    other = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, temperature=0.5)
    text = first.choices[0].message.content
    assert text is not None and text.startswith("Answer #") and text.endswith("What is the capital of France?")
    assert again.choices[0].message.content == text
    assert other.choices[0].message.content != text
    assert len({first.id, again.id, other.id}) == 3
    assert first.object == "chat.completion" and first.choices[0].finish_reason == "stop"
    assert (
        first.usage is not None
        and first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    )
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert fake_provider.count("/chat/completions") == 3


def test_openai_chat_stream_matches_the_plain_answer(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 3  # token by token
    assert "".join(contents) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id != plain.id
    raw = fake_provider.last
    assert raw.body["stream"] is True and raw.headers["authorization"] == "Bearer sk-test"


def test_openai_chat_stream_include_usage_ends_with_a_usage_chunk(fake_provider: RunningFakeProvider) -> None:
    chunks = list(
        oai(fake_provider).chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_chat_stream_wire_format(fake_provider: RunningFakeProvider) -> None:
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    with httpx2.Client() as client:
        response = client.post(f"{fake_provider.openai_base_url}/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


async def test_openai_async_chat_plain_and_stream(fake_provider: RunningFakeProvider) -> None:
    client = aoai(fake_provider)
    plain = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == plain.choices[0].message.content
    assert fake_provider.count("/chat/completions") == 2


def test_openai_tool_call_when_asked_about_weather(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=weather, tools=WEATHER_TOOL)
    choice = plain.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["location"] == "Paris, France"
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=weather, tools=WEATHER_TOOL, stream=True)
    )
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function
    )
    assert json.loads(args) == json.loads(call.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    no_tool = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, tools=WEATHER_TOOL)
    assert no_tool.choices[0].message.tool_calls is None


def test_openai_cached_tokens_reported_for_a_repeated_prefix(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    system = {"role": "system", "content": "You are a geography tutor. " * 40}
    first = client.chat.completions.create(model="gpt-4o-mini", messages=[system, *QUESTION])
    second = client.chat.completions.create(
        model="gpt-4o-mini", messages=[system, {"role": "user", "content": "And Spain?"}]
    )
    assert first.usage and first.usage.prompt_tokens_details
    assert second.usage and second.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert 0 < second.usage.prompt_tokens_details.cached_tokens <= second.usage.prompt_tokens


# -- OpenAI completions, embeddings, responses, Azure -----------------------------------------------


def test_openai_completions_plain_and_stream(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    plain = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    assert plain.object == "text_completion" and plain.choices[0].text.endswith("Say hello")
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True)
        if c.choices
    )
    assert streamed == plain.choices[0].text
    assert fake_provider.count("/v1/completions") == 2


def test_openai_embeddings_default_base64_and_float(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    default = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    sent = fake_provider.last.body
    floats = client.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    other = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
    assert len(default.data[0].embedding) == 8
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert sent.get("encoding_format") in ("base64", None)
    assert [d.index for d in other.data] == [0, 1] and other.data[0].embedding != other.data[1].embedding
    assert other.data[0].embedding != floats.data[0].embedding
    assert floats.usage.prompt_tokens > 0


def test_openai_responses_plain_and_stream(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    plain = client.responses.create(model="gpt-4o-mini", input="What is the capital of France?")
    assert plain.status == "completed" and plain.output_text.endswith("What is the capital of France?")
    assert plain.usage is not None and plain.usage.total_tokens > 0
    events = list(client.responses.create(model="gpt-4o-mini", input="What is the capital of France?", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == plain.output_text and final.id != plain.id
    with client.responses.stream(model="gpt-4o-mini", input="What is the capital of France?") as stream:
        assert stream.get_final_response().output_text == plain.output_text


def test_azure_chat_and_embeddings_go_to_the_deployment_path(fake_provider: RunningFakeProvider) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=fake_provider.url, api_version="2024-10-21", api_key="azure-key", max_retries=0
    )
    answer = client.chat.completions.create(model="my-gpt4o", messages=QUESTION)
    seen = fake_provider.last
    assert seen.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert "api-version=2024-10-21" in seen.query and seen.headers["api-key"] == "azure-key"
    assert answer.choices[0].message.content and answer.model == "my-gpt4o"
    client.embeddings.create(model="my-embedder", input="hi")
    assert fake_provider.last.path == "/openai/deployments/my-embedder/embeddings"


# -- Anthropic ---------------------------------------------------------------------------------------


def test_anthropic_messages_plain_and_stream(fake_provider: RunningFakeProvider) -> None:
    client = ant(fake_provider)
    params: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": QUESTION}
    plain = client.messages.create(**params)
    assert plain.type == "message" and plain.stop_reason == "end_turn"
    assert plain.content[0].type == "text" and plain.content[0].text.startswith("Answer #")
    events = list(client.messages.create(**params, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") > 3
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == plain.content[0].text
    with client.messages.stream(**params) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == plain.usage.output_tokens and final.id != plain.id
    assert "sk-ant-test" in (
        fake_provider.last.headers.get("x-api-key", "") + fake_provider.last.headers.get("authorization", "")
    )
    assert fake_provider.count("/v1/messages") == 3


async def test_anthropic_async_stream_helper(fake_provider: RunningFakeProvider) -> None:
    client = aant(fake_provider)
    params: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": QUESTION}
    plain = await client.messages.create(**params)
    async with client.messages.stream(**params) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == plain.content[0].text  # type: ignore[union-attr]


def test_anthropic_thinking_block_with_signature(fake_provider: RunningFakeProvider) -> None:
    client = ant(fake_provider)
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": QUESTION,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    plain = client.messages.create(**params)
    assert [b.type for b in plain.content] == ["thinking", "text"]
    events = list(client.messages.create(**params, stream=True))
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert "thinking_delta" in deltas and "signature_delta" in deltas and "text_delta" in deltas
    with client.messages.stream(**params) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and plain.content[0].type == "thinking"
    assert final.content[0].signature == plain.content[0].signature and final.content[0].signature
    assert final.content[0].thinking == plain.content[0].thinking


def test_anthropic_tool_use_with_input_json_deltas(fake_provider: RunningFakeProvider) -> None:
    client = ant(fake_provider)
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "tools": ANTHROPIC_WEATHER_TOOL,
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
    }
    plain = client.messages.create(**params)
    assert plain.stop_reason == "tool_use"
    tool = next(b for b in plain.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"location": "Paris, France", "unit": "celsius"}
    events = list(client.messages.create(**params, stream=True))
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    with client.messages.stream(**params) as stream:
        final = stream.get_final_message()
    streamed_tool = next(b for b in final.content if b.type == "tool_use")
    assert streamed_tool.input == tool.input and final.stop_reason == "tool_use"


def test_anthropic_cache_control_reports_creation_then_read(fake_provider: RunningFakeProvider) -> None:
    client = ant(fake_provider)
    system = [{"type": "text", "text": "You are a geography tutor. " * 100, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, system=system, messages=QUESTION)
    second = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, system=system, messages=[{"role": "user", "content": "And Spain?"}]
    )
    assert first.usage.cache_creation_input_tokens and not first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert not second.usage.cache_creation_input_tokens


def test_anthropic_top_level_cache_control_caches_up_to_the_last_block_and_looks_back(
    fake_provider: RunningFakeProvider,
) -> None:
    client = ant(fake_provider)
    auto = {"cache_control": {"type": "ephemeral"}}
    turn: list[Any] = [{"role": "user", "content": "What is the capital of France? " * 50}]
    none = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=turn)
    first = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=turn, extra_body=auto)
    turn += [{"role": "assistant", "content": first.content[0].text}, {"role": "user", "content": "And Spain?"}]
    second = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=turn, extra_body=auto)
    assert not none.usage.cache_creation_input_tokens and not none.usage.cache_read_input_tokens
    assert first.usage.cache_creation_input_tokens and not first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens  # the earlier turn
    assert second.usage.cache_creation_input_tokens  # and the new part is written


# -- Gemini (plain HTTP) ----------------------------------------------------------------------------


GEMINI_BODY: Any = {"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]}


def test_gemini_generate_and_both_stream_forms(fake_provider: RunningFakeProvider) -> None:
    base = f"{fake_provider.gemini_base_url}/models/gemini-2.0-flash"
    with httpx2.Client(headers={"x-goog-api-key": "g-key"}) as client:
        plain = client.post(f"{base}:generateContent", json=GEMINI_BODY).json()
        sse = client.post(f"{base}:streamGenerateContent", params={"alt": "sse"}, json=GEMINI_BODY)
        array = client.post(f"{base}:streamGenerateContent", json=GEMINI_BODY)
    text = plain["candidates"][0]["content"]["parts"][0]["text"]
    assert text.startswith("Answer #") and plain["candidates"][0]["finishReason"] == "STOP"
    assert plain["usageMetadata"]["totalTokenCount"] > 0 and plain["modelVersion"] == "gemini-2.0-flash"
    assert sse.headers["content-type"].startswith("text/event-stream")
    sse_chunks = [json.loads(e[6:]) for e in sse.text.split("\n\n") if e.startswith("data: ")]
    assert len(sse_chunks) > 1
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in sse_chunks) == text
    assert sse_chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    array_chunks = json.loads(array.text)
    assert array.headers["content-type"].startswith("application/json") and isinstance(array_chunks, list)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in array_chunks) == text
    assert fake_provider.last.headers["x-goog-api-key"] == "g-key"


def test_gemini_embed_content(fake_provider: RunningFakeProvider) -> None:
    url = f"{fake_provider.gemini_base_url}/models/text-embedding-004:embedContent"
    body = {"content": {"parts": [{"text": "hello"}]}}
    first = httpx2.post(url, json=body).json()
    second = httpx2.post(url, json=body).json()
    assert len(first["embedding"]["values"]) == 8 and first == second


# -- unknown routes, errors, controls ------------------------------------------------------------------


def test_unknown_route_is_a_provider_shaped_404(fake_provider: RunningFakeProvider) -> None:
    response = httpx2.post(f"{fake_provider.openai_base_url}/nope", json={})
    assert response.status_code == 404 and "message" in response.json()["error"]
    with pytest.raises(openai.NotFoundError):
        oai(fake_provider).models.list()


def test_count_and_reset(fake_provider: RunningFakeProvider) -> None:
    oai(fake_provider).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    ant(fake_provider).messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=QUESTION)
    assert fake_provider.count() == 2
    assert fake_provider.count("/chat/completions") == 1 and fake_provider.count("/v1/messages") == 1
    req = fake_provider.requests[0]
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.body["messages"] == QUESTION and req.headers["content-type"] == "application/json"
    fake_provider.reset()
    assert fake_provider.count() == 0 and fake_provider.requests == []


def test_fail_next_then_recovers(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    fake_provider.fail_next(2, status=503, headers={"retry-after": "1"})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        assert info.value.status_code == 503 and info.value.response.headers["retry-after"] == "1"
    assert client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices
    fake_provider.fail_next(1, status=429, body={"error": {"message": "slow down", "type": "requests"}})
    with pytest.raises(openai.RateLimitError, match="slow down"):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    fake_provider.fail_next(1, status=529)
    with pytest.raises(anthropic.APIStatusError) as ant_info:
        ant(fake_provider).messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=QUESTION)
    assert ant_info.value.status_code == 529
    assert ant_info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert fake_provider.count() == 5


def test_x_fake_status_header_from_the_sdks(fake_provider: RunningFakeProvider) -> None:
    with pytest.raises(openai.InternalServerError):
        oai(fake_provider).chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, extra_headers={"x-fake-status": "500"}
        )
    with pytest.raises(anthropic.InternalServerError) as info:
        ant(fake_provider).messages.create(
            model="claude-sonnet-4-6", max_tokens=16, messages=QUESTION, extra_headers={"x-fake-status": "500"}
        )
    assert info.value.body["type"] == "error"  # type: ignore[index]


def test_cut_stream_makes_the_sdk_stream_raise(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    fake_provider.cut_stream_after(2)
    received: list[Any] = []
    with pytest.raises((httpx2.HTTPError, openai.APIError)):
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True):
            received.append(chunk)
    assert len(received) == 2
    # only the next stream is cut
    assert list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))
    fake_provider.cut_stream_after(3)
    with (
        pytest.raises((httpx2.HTTPError, anthropic.APIError)),
        ant(fake_provider).messages.stream(model="claude-sonnet-4-6", max_tokens=16, messages=QUESTION) as stream,
    ):
        stream.get_final_message()


def test_delay_slows_responses(fake_provider: RunningFakeProvider) -> None:
    fake_provider.delay(0.3)
    client = openai.OpenAI(api_key="k", base_url=fake_provider.openai_base_url, max_retries=0, timeout=0.1)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    fake_provider.delay(0)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices


def test_hold_keeps_five_requests_in_flight_until_release(fake_provider: RunningFakeProvider) -> None:
    client = oai(fake_provider)
    answers: list[str] = []
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            r = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}]
            )
            answers.append(r.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    fake_provider.hold()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    try:
        fake_provider.wait_for_in_flight(5, timeout=10)
        fake_provider.wait_for_count(5, "/chat/completions", timeout=1)
        assert fake_provider.in_flight == 5 and answers == []
    finally:
        fake_provider.release()
    for t in threads:
        t.join(10)
    assert not errors and len(set(answers)) == 5
    assert fake_provider.in_flight == 0


async def test_hold_with_async_clients(fake_provider: RunningFakeProvider) -> None:
    client = aoai(fake_provider)
    fake_provider.hold()
    try:
        tasks = [
            asyncio.create_task(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION))
            for _ in range(5)
        ]
        await fake_provider.wait_for_in_flight_async(5, timeout=10)
        assert not any(t.done() for t in tasks)
    finally:
        fake_provider.release()
    answers = await asyncio.gather(*tasks)
    assert len({a.id for a in answers}) == 5 and len({a.choices[0].message.content for a in answers}) == 1


def test_wait_for_in_flight_times_out_clearly(fake_provider: RunningFakeProvider) -> None:
    with pytest.raises(TimeoutError, match="0 request"):
        fake_provider.wait_for_in_flight(1, timeout=0.05)
    with pytest.raises(TimeoutError, match="0 request"):
        fake_provider.wait_for_count(1, timeout=0.05)


def test_session_fixture_is_reset_between_uses(fake_provider_session: RunningFakeProvider) -> None:
    assert fake_provider_session.count() == 0
    fake_provider_session.fail_next(3)
    oai(fake_provider_session).models  # noqa: B018 - building a client sends nothing


def test_session_fixture_second_use(fake_provider_session: RunningFakeProvider) -> None:
    assert fake_provider_session.count() == 0
    answer = oai(fake_provider_session).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert answer.choices  # the previous test's fail_next(3) did not leak
