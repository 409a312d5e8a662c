"""OpenAI SDK callers served by Anthropic (and Gemini) deployments through ``RouterTransport``.

The fake provider (tests/support/fake_provider.py) answers each family in its real shapes; the
openai SDK parses what the router translated back, so a field the SDK does not understand fails here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_cache import middleware
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.router import Router, RouterTransport

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()
#: An OpenAI conversation: system prompt, two turns, an inline image.
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ],
    },
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def claude_router(fake: Any, **settings: Any) -> Router:
    deployment = {"id": "claude", "family": "anthropic", "model": "claude-real", "api_base": fake.url, "api_key": "k"}
    return Router({"groups": {"gpt-4o": {"deployments": [deployment]}}, "settings": {"num_retries": 0, **settings}})


def gemini_router(fake: Any, **settings: Any) -> Router:
    deployment = {"id": "gemini", "family": "gemini", "model": "gemini-real", "api_base": fake.url, "api_key": "g"}
    return Router({"groups": {"gpt-4o": {"deployments": [deployment]}}, "settings": {"num_retries": 0, **settings}})


def openai_router(fake: Any, **settings: Any) -> Router:
    deployment = {"id": "gpt", "model": "gpt-real", "api_base": fake.openai_base_url, "api_key": "o"}
    return Router(
        {"groups": {"claude-sonnet": {"deployments": [deployment]}}, "settings": {"num_retries": 0, **settings}}
    )


def client(router: Router) -> openai.OpenAI:
    transport = RouterTransport(router)
    return openai.OpenAI(api_key="unused", max_retries=0, http_client=httpx2.Client(transport=transport))


def async_client(router: Router) -> openai.AsyncOpenAI:
    transport = RouterTransport(router)
    return openai.AsyncOpenAI(api_key="unused", max_retries=0, http_client=httpx2.AsyncClient(transport=transport))


def anthropic_client(router: Router) -> anthropic.Anthropic:
    transport = RouterTransport(router)
    return anthropic.Anthropic(api_key="unused", max_retries=0, http_client=httpx2.Client(transport=transport))


def test_a_chat_request_reaches_anthropic_as_a_messages_request(fake_provider):
    answer = client(claude_router(fake_provider)).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "What is 2+2?"},
        ],
        max_completion_tokens=50,
        temperature=0.5,
        top_p=0.9,
        stop="END",
    )
    sent = fake_provider.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "k" and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": "claude-real",
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in English."}],
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
    }
    completion = answer.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content.endswith(": What is 2+2?")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert answer.headers["x-router-family"] == "anthropic"
    assert answer.headers["x-router-deployment"] == "claude"


def test_images_by_url_and_inline_become_anthropic_image_blocks(fake_provider):
    client(claude_router(fake_provider)).chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "auto"}},
                ],
            }
        ],
    )
    assert fake_provider.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]


def test_tool_calls_come_back_as_openai_tool_calls_and_results_go_out_as_tool_results(fake_provider):
    c = client(claude_router(fake_provider))
    first = c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    sent = fake_provider.last.body
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "Current weather",
        }
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris, France", "unit": "celsius"}
    assert first.choices[0].message.content == "Let me check the weather."

    c.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "22C"}]},
        ],
        tools=[WEATHER],
    )
    messages = fake_provider.last.body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check the weather."},
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": json.loads(call.function.arguments)},
        ],
    }
    assert messages[2] == {  # parallel results: one user message, as Anthropic requires
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "22C"}]},
        ],
    }


def test_json_schema_becomes_anthropic_structured_output(fake_provider):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client(claude_router(fake_provider)).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Reply in JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}},
    )
    assert fake_provider.last.body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_reasoning_effort_asks_for_thinking_and_reports_it(fake_provider):
    completion = client(claude_router(fake_provider)).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Think"}], reasoning_effort="medium", max_tokens=4000
    )
    assert fake_provider.last.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert completion.choices[0].message.reasoning_content.startswith("Thinking #")


@pytest.mark.parametrize(
    ("make", "path"),
    [(claude_router, "/v1/messages"), (gemini_router, "/v1beta/models/gemini-real:streamGenerateContent")],
    ids=["anthropic", "gemini"],
)
async def test_a_stream_is_translated_event_by_event(fake_provider, make, path):
    c = async_client(make(fake_provider))
    reference = await c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Stream me"}])
    stream = await c.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert fake_provider.last.path == path
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == reference.choices[0].message.content
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 1  # not one buffered blob
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == reference.usage.total_tokens


async def test_a_streamed_tool_call_arrives_as_openai_tool_call_deltas(fake_provider):
    stream = await async_client(claude_router(fake_provider)).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER], stream=True
    )
    chunks = [chunk async for chunk in stream]
    calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {
        "location": "Paris, France",
        "unit": "celsius",
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_cached_tokens_are_reported_as_openai_cached_tokens(fake_provider):
    c = client(claude_router(fake_provider))
    system = [{"type": "text", "text": "long instructions " * 50, "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        completion = c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
        )
    assert fake_provider.last.body["system"][0]["cache_control"] == {"type": "ephemeral"}  # passed through
    details = completion.usage.prompt_tokens_details
    assert details.cached_tokens > 0
    assert completion.usage.prompt_tokens > details.cached_tokens


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"seed": 7}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"temperature": 1.5}, "temperature"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio"),
    ],
)
def test_a_field_anthropic_cannot_honour_is_a_400_naming_it(fake_provider, extra, named):
    with pytest.raises(openai.BadRequestError) as refused:
        client(claude_router(fake_provider)).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **extra
        )
    assert named in refused.value.message
    assert refused.value.code == "router_unsupported_params"
    assert fake_provider.count() == 0  # refused before anything was sent


def test_drop_params_drops_them_and_says_so(fake_provider):
    answer = client(claude_router(fake_provider, drop_params=True)).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], seed=7, logprobs=True
    )
    assert answer.headers["x-router-dropped-params"] == "logprobs,seed"
    assert "seed" not in fake_provider.last.body and "logprobs" not in fake_provider.last.body
    assert answer.parse().choices[0].message.content


def test_the_attempt_span_names_the_translation_and_the_dropped_fields(fake_provider):
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    deployment = {"id": "claude", "family": "anthropic", "model": "claude-real", "api_base": fake_provider.url}
    config = {"groups": {"gpt-4o": {"deployments": [deployment]}}, "settings": {"drop_params": True}}
    client(Router(config, tracer_provider=tracer)).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], seed=3
    )
    (span,) = exporter.get_finished_spans()
    assert span.attributes["router.translated"] == "openai->anthropic"
    assert span.attributes["router.dropped_params"] == ("seed",)


def test_the_dropped_fields_a_caller_names_reach_the_span_as_briefly_and_printably_as_the_header(fake_provider):
    """The names `drop_params` drops are the caller's body keys, any text and as many as the body holds.
    The header said them percent-encoded and at most 1 KiB; the attempt's span took them as sent: a
    name holding ESC and CR LF went into the trace backend's text as is, and 2,000 names of 1,000
    characters were 2 MB in one attribute (an OTLP exporter's batch past its size is dropped whole,
    other callers' spans with it). The span now holds the header's names."""
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    deployment = {"id": "claude", "family": "anthropic", "model": "claude-real", "api_base": fake_provider.url}
    config = {"groups": {"gpt-4o": {"deployments": [deployment]}}, "settings": {"drop_params": True}}
    forged = "\x1b]0;owned\x07\r\n2026-01-01 CRITICAL forged"
    extra = {forged: 1, **{f"{n:04d}" + "k" * 1000: 1 for n in range(2000)}}
    answer = client(Router(config, tracer_provider=tracer)).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_body=extra
    )
    (span,) = exporter.get_finished_spans()
    names = span.attributes["router.dropped_params"]
    assert ",".join(names) == answer.headers["x-router-dropped-params"]
    assert sum(len(name) for name in names) <= 1024 and names[-1].startswith("+")
    assert all(name.isprintable() for name in names)
    assert names[0] == "%1B]0%3Bowned%07%0D%0A2026-01-01%20CRITICAL%20forged"


def test_the_400_naming_fields_a_caller_wrote_names_them_as_briefly_and_printably_as_the_header(fake_provider):
    """Without `drop_params` the names are refused in a 400 whose message listed them all, as sent:
    2,000 names of 1,000 characters made a 2 MB answer echoing the caller's text, ESC and CR LF
    included (a client that logs its errors logged them). The message now names them as the header
    does (`dropped_names`: percent-encoded, at most 1 KiB, the rest counted)."""
    forged = "\x1b]0;owned\x07\r\n2026-01-01 CRITICAL forged"
    extra = {forged: 1, **{f"{n:04d}" + "k" * 1000: 1 for n in range(2000)}}
    with pytest.raises(openai.BadRequestError) as refused:
        client(claude_router(fake_provider)).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
    message = refused.value.message
    assert refused.value.code == "router_unsupported_params"
    assert len(message) < 1500 and message.isprintable()
    assert "%1B]0%3Bowned%07%0D%0A2026-01-01%20CRITICAL%20forged" in message
    assert re.search(r", \+\d+ more\. Remove them", message)
    assert fake_provider.count() == 0


def test_an_anthropic_error_reaches_the_openai_caller_in_openai_shape(fake_provider):
    fake_provider.fail_next(1, status=400)
    with pytest.raises(openai.BadRequestError) as failed:
        client(claude_router(fake_provider)).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert failed.value.body["message"] == "fake provider error 400"
    assert failed.value.body["type"] == "invalid_request_error"


# ----------------------------------------------------------------------------- fallback chains across families


def chain(fakes: Any, fake_provider: Any) -> dict[str, Any]:
    """``gpt-4o`` on an OpenAI deployment, falling back to ``claude-sonnet`` on an Anthropic one."""
    claude = {"id": "claude", "family": "anthropic", "model": "claude-real", "api_base": fake_provider.url}
    return {
        "groups": {
            "gpt-4o": {"deployments": [{"id": "a", "model": "gpt-real", "api_base": f"{fakes['a'].url}/v1"}]},
            "claude-sonnet": {"deployments": [claude]},
        },
        "settings": {"num_retries": 0, "timeout": 1.0, "fallbacks": [{"gpt-4o": ["claude-sonnet"]}]},
    }


@pytest.mark.parametrize(
    "fault",
    [("status", 429, None, None), ("status", 500, None, None), "hang"],
    ids=["429", "500", "timeout"],
)
def test_a_failing_openai_deployment_falls_back_to_claude(fakes, fake_provider, make_router, fault):
    """On the deployment's own key: a 429 on the caller's own key moves it only where that key goes
    (`test_callers.py`), and it goes to no other family."""
    config = chain(fakes, fake_provider)
    config["groups"]["gpt-4o"]["deployments"][0]["api_key"] = "sk-operator"
    fakes["a"].fail(fault)
    answer = client(make_router(config)).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert fakes["a"].count == 1 and fake_provider.count("/v1/messages") == 1
    assert answer.headers["x-router-fallback-from"] == "gpt-4o"
    assert (answer.headers["x-router-family"], answer.headers["x-router-attempts"]) == ("anthropic", "2")
    assert answer.parse().choices[0].message.content.endswith(": hi")


async def test_a_stream_failing_before_its_first_byte_falls_back_to_claude_streamed(fakes, fake_provider, make_router):
    fakes["a"].fail("prestream")
    stream = await async_client(make_router(chain(fakes, fake_provider))).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks).endswith(": hi")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake_provider.last.body["stream"] is True


def test_a_cross_family_fallback_keeps_cooling_the_failed_deployment(fakes, fake_provider, make_router):
    config = chain(fakes, fake_provider)
    config["settings"]["allowed_fails"] = 1
    fakes["a"].fail(("status", 500, None, None))
    c = client(make_router(config))
    for _ in range(2):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert fakes["a"].count == 1  # cooling: the second request went straight to the fallback
    assert fake_provider.count("/v1/messages") == 2


# ----------------------------------------------------------------------------- under the cache


def cached_client(router: Router) -> openai.AsyncOpenAI:
    transport = middleware.AsyncCachingTransport(cache=middleware.Cache(), inner=RouterTransport(router))
    return openai.AsyncOpenAI(api_key="caller", max_retries=0, http_client=httpx2.AsyncClient(transport=transport))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_translated_answer_is_cached_under_the_callers_request_and_replayed_in_its_format(
    fake_provider, stream
):
    c = cached_client(claude_router(fake_provider))
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "cache me"}], "stream": stream}

    async def ask() -> tuple[Any, str]:
        answer = await c.chat.completions.with_raw_response.create(**request)
        parsed = answer.parse()
        if stream:
            text = "".join([ch.choices[0].delta.content or "" async for ch in parsed if ch.choices])
        else:
            text = parsed.choices[0].message.content
        return answer.headers, text

    (miss, first), (hit, second) = await ask(), await ask()
    assert first == second and first.endswith(": cache me")
    assert fake_provider.count("/v1/messages") == 1  # the hit never reached the router: nothing translated
    assert miss["x-router-family"] == "anthropic"
    assert hit["x-cache"].startswith("HIT") and hit["x-router-family"] == "anthropic"


# ----------------------------------------------------------------------------- Gemini deployments


def test_a_chat_request_reaches_gemini_as_generate_content(fake_provider):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    answer = client(gemini_router(fake_provider)).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=CONVERSATION,
        max_tokens=50,
        temperature=1.5,
        seed=7,
        n=2,
        stop=["END"],
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
    )
    sent = fake_provider.last
    assert sent.path == "/v1beta/models/gemini-real:generateContent"
    assert sent.headers["x-goog-api-key"] == "g"
    assert sent.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}]},
            {"role": "model", "parts": [{"text": "Hi!"}]},
            {
                "role": "user",
                "parts": [{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 1.5,
            "candidateCount": 2,
            "seed": 7,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
        },
    }
    completion = answer.parse()
    assert completion.choices[0].message.content.endswith(": What is this?")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert answer.headers["x-router-family"] == "gemini"


def test_gemini_function_calls_round_trip_as_openai_tool_calls(fake_provider):
    c = client(gemini_router(fake_provider))
    first = c.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER], tool_choice="auto"
    )
    sent = fake_provider.last.body
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                }
            ]
        }
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, json.loads(call.function.arguments)["location"]) == ("get_weather", "Paris, France")
    c.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18C"},
        ],
        tools=[WEATHER],
    )
    assert fake_provider.last.body["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": json.loads(call.function.arguments)}}],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}}]},
    ]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_a_field_gemini_cannot_honour_is_a_400_naming_it(fake_provider, extra, named):
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(openai.BadRequestError) as refused:
        client(gemini_router(fake_provider)).chat.completions.create(**request)
    assert named in refused.value.message
    assert fake_provider.count() == 0


# ------------------------------------------------------------------------- Anthropic callers, OpenAI deployments


def test_an_anthropic_request_reaches_an_openai_deployment_as_chat_completions(fake_provider):
    answer = anthropic_client(openai_router(fake_provider)).messages.with_raw_response.create(
        model="claude-sonnet",
        system="Be brief.",
        max_tokens=64,
        stop_sequences=["END"],
        extra_body={"temperature": 0.3},  # anthropic SDK 2.x no longer offers it; older clients send it
        metadata={"user_id": "u1"},
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            },
        ],
    )
    sent = fake_provider.last
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == "Bearer o"
    assert sent.body == {
        "model": "gpt-real",
        "messages": CONVERSATION,
        "max_completion_tokens": 64,
        "temperature": 0.3,
        "stop": ["END"],
        "user": "u1",
    }
    message = answer.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text.endswith(": What is this?")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert answer.headers["x-router-family"] == "openai"


def test_anthropic_tools_round_trip_through_an_openai_deployment(fake_provider):
    c = anthropic_client(openai_router(fake_provider))
    tool = {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER["function"]["parameters"]}
    first = c.messages.create(
        model="claude-sonnet",
        max_tokens=64,
        tools=[tool],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    sent = fake_provider.last.body
    assert sent["tools"] == [{"type": "function", "function": {**WEATHER["function"]}}]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
    use = first.content[-1]
    assert first.stop_reason == "tool_use" and use.type == "tool_use"
    assert use.input == {"location": "Paris, France", "unit": "celsius"}
    c.messages.create(
        model="claude-sonnet",
        max_tokens=64,
        tools=[tool],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "18C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    assert fake_provider.last.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": use.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(use.input, separators=(",", ":"))},
                }
            ],
        },
        {"role": "tool", "tool_call_id": use.id, "content": "18C"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]


async def test_an_openai_stream_reaches_the_anthropic_sdk_as_message_events(fake_provider):
    transport = RouterTransport(openai_router(fake_provider))
    c = anthropic.AsyncAnthropic(api_key="unused", max_retries=0, http_client=httpx2.AsyncClient(transport=transport))
    request = {"model": "claude-sonnet", "max_tokens": 64, "messages": [{"role": "user", "content": "Stream me"}]}
    reference = await c.messages.create(**request)
    async with c.messages.stream(**request) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert fake_provider.last.body["stream_options"] == {"include_usage": True}
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") > 2  # event by event, not one buffered blob
    assert final.content[0].text == reference.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == reference.usage.output_tokens


def anthropic_gemini_router(fake: Any) -> Router:
    deployment = {"id": "gemini", "family": "gemini", "model": "gemini-real", "api_base": fake.url, "api_key": "g"}
    return Router({"groups": {"claude-sonnet": {"deployments": [deployment]}}, "settings": {"num_retries": 0}})


async def test_an_anthropic_request_is_served_by_gemini_json_and_streamed(fake_provider):
    transport = RouterTransport(anthropic_gemini_router(fake_provider))
    c = anthropic.AsyncAnthropic(api_key="unused", max_retries=0, http_client=httpx2.AsyncClient(transport=transport))
    request = {
        "model": "claude-sonnet",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Stream me"}],
    }
    message = await c.messages.create(**request)
    assert fake_provider.last.path == "/v1beta/models/gemini-real:generateContent"
    assert fake_provider.last.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert message.content[0].text.endswith(": Stream me") and message.stop_reason == "end_turn"
    async with c.messages.stream(**request) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.content[0].text == message.content[0].text
    assert final.usage.output_tokens == message.usage.output_tokens


def test_a_field_gemini_refuses_for_an_anthropic_caller_is_named_as_it_was_translated(fake_provider):
    with pytest.raises(anthropic.BadRequestError) as refused:
        anthropic_client(anthropic_gemini_router(fake_provider)).messages.create(
            model="claude-sonnet",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "f", "input_schema": {"type": "object"}}],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        )
    assert "parallel_tool_calls (as the openai field the request became)" in refused.value.message
    assert fake_provider.count() == 0


def test_an_anthropic_field_openai_cannot_honour_is_a_400_naming_it(fake_provider):
    with pytest.raises(anthropic.BadRequestError) as refused:
        anthropic_client(openai_router(fake_provider)).messages.create(
            model="claude-sonnet", max_tokens=64, messages=[{"role": "user", "content": "hi"}], extra_body={"top_k": 5}
        )
    assert "top_k" in refused.value.message
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert fake_provider.count() == 0


def test_a_sync_client_gets_a_translated_stream_too(fake_provider):
    stream = client(claude_router(fake_provider)).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "sync stream"}], stream=True
    )
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks).endswith(": sync stream")
    assert chunks[-1].choices[0].finish_reason == "stop"


# ----------------------------------------------------------------------------- through `serve`


@pytest.fixture
def gateway(fakes: Any, fake_provider: Any) -> Iterator[BackgroundServer]:
    """The gateway `llm-cache serve` runs: a LiteLLM model list whose gpt-4o falls back to Claude."""
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}, "cache_fallbacks": True},  # fallback answers are stored too
            "model_list": [
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/x", "api_base": f"{fakes['a'].url}/v1"}},
                {
                    "model_name": "claude-sonnet",
                    "litellm_params": {"model": "anthropic/claude-real", "api_base": fake_provider.url, "api_key": "k"},
                },
            ],
            "router": {"num_retries": 0, "fallbacks": [{"gpt-4o": ["claude-sonnet"]}]},
        },
        where="gw.yaml",
        env={},
    )
    with BackgroundServer(create_gateway(config)) as server:
        yield server


def test_serve_falls_back_across_families_and_caches_the_translated_answer(fakes, fake_provider, gateway):
    fakes["a"].fail(("status", 503, None, None))
    c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="caller", max_retries=0)
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "through serve"}], "stream": True}
    first = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**request))
    again = c.chat.completions.with_raw_response.create(**request)
    second = "".join(ch.choices[0].delta.content or "" for ch in again.parse())
    assert first == second and first.endswith(": through serve")
    assert again.headers["x-cache"].startswith("HIT") and again.headers["x-router-family"] == "anthropic"
    assert again.headers["x-router-fallback-from"] == "gpt-4o"
    assert (fakes["a"].count, fake_provider.count("/v1/messages")) == (1, 1)


def test_dropped_field_names_the_caller_wrote_reach_the_header_quoted_and_bounded(fake_provider):
    """`x-router-dropped-params` names fields of the caller's body: a name with CR LF cannot add a
    header, one outside ASCII cannot break the answer, and ten thousand cannot make a header no client reads."""
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}},
            "model_list": [
                {
                    "model_name": "claude-sonnet",
                    "litellm_params": {"model": "anthropic/claude-real", "api_base": fake_provider.url, "api_key": "k"},
                },
            ],
            "router": {"num_retries": 0, "drop_params": True},
        },
        where="gw.yaml",
        env={},
    )
    hostile = {"a\r\nset-cookie: pwned=1": 1, "\u20acuro": 2, "caf\u00e9,x": 3}
    many = {f"field_{i:05}": i for i in range(10_000)}
    with BackgroundServer(create_gateway(config)) as server:

        def dropped(extra: dict[str, int]) -> str:
            body = {"model": "claude-sonnet", "messages": [{"role": "user", "content": "hi"}], **extra}
            answer = httpx2.post(
                f"{server.url}/v1/chat/completions", json=body, headers={"authorization": "Bearer caller"}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] and "set-cookie" not in answer.headers
            return answer.headers["x-router-dropped-params"]

        assert dropped(hostile) == "a%0D%0Aset-cookie%3A%20pwned%3D1,%E2%82%ACuro,caf%C3%A9%2Cx"
        named = dropped(many)
    assert len(named) <= 1024 and named.startswith("field_00000,field_00001,") and named.endswith(" more")


# ----------------------------------------------------------------------------- credentials across families

#: What an openai SDK caller sends that is meant for OpenAI only.
OPENAI_ONLY = {"openai-organization": "org-caller", "openai-project": "proj-caller", "openai-beta": "assistants=v2"}


@pytest.mark.parametrize("fault", [("status", 500, None, None), ("status", 503, None, None)], ids=["500", "503"])
def test_a_fallback_to_another_family_never_gets_the_callers_key_nor_its_family_headers(
    fakes, fake_provider, make_router, fault
):
    """`gpt-4o` passes the caller's OpenAI key on (its deployment has none); its fallback `claude-sonnet`
    has no key either: the caller's OpenAI key, `openai-organization` and the like are not Anthropic's."""
    fakes["a"].fail(fault)
    transport = RouterTransport(make_router(chain(fakes, fake_provider)))
    c = openai.OpenAI(
        api_key="sk-openai-caller",
        max_retries=0,
        default_headers=OPENAI_ONLY,
        http_client=httpx2.Client(transport=transport),
    )
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert fakes["a"].seen[0].headers["authorization"] == "Bearer sk-openai-caller"  # its own family: passed on
    sent = fake_provider.last
    assert sent.path == "/v1/messages"
    leaked = {
        name: sent.headers[name] for name in sent.headers if "caller" in sent.headers[name] or name in OPENAI_ONLY
    }
    assert leaked == {}


def test_an_anthropic_callers_key_never_reaches_an_openai_deployment_without_its_own(fake_provider):
    deployment = {"id": "gpt", "model": "gpt-real", "api_base": fake_provider.openai_base_url}
    router = Router({"groups": {"claude-sonnet": {"deployments": [deployment]}}, "settings": {"num_retries": 0}})
    transport = RouterTransport(router)
    c = anthropic.Anthropic(
        api_key="sk-ant-caller",
        max_retries=0,
        default_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        http_client=httpx2.Client(transport=transport),
    )
    c.messages.create(model="claude-sonnet", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    sent = fake_provider.last
    assert sent.path == "/v1/chat/completions"
    assert not {"x-api-key", "authorization", "anthropic-beta"} & set(sent.headers)
