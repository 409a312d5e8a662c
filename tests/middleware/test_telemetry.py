"""Telemetry: spans, metrics, Prometheus text and logs of the cache's decisions.

Providers are always passed explicitly (the SDK's in-memory exporter and reader);
no test sets the global OpenTelemetry providers.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import openai
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from llm_cache.middleware.stores import DiskStore, MemoryStore, TieredStore
from llm_cache.middleware.telemetry import Pricing, Telemetry
from tests.support.stores import CountingStore, DeadStore

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SECRET = "sk-telemetry-secret"
AUTHORIZED = {"authorization": f"Bearer {SECRET}"}


class Recorded:
    """A Telemetry on private SDK providers, with what they collected (store child spans on, whatever the store)."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("store_spans", True)
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options)

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def calls(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if not s.name.startswith(("llm_cache.", "app"))]

    def children(self, parent: ReadableSpan) -> list[str]:
        assert parent.context is not None
        return sorted(
            s.name for s in self.finished() if s.parent is not None and s.parent.span_id == parent.context.span_id
        )

    def metrics(self) -> dict[str, dict[frozenset[tuple[str, Any]], float]]:
        """Metric name -> {attributes: value} (sum for counters, count for histograms)."""
        out: dict[str, dict[frozenset[tuple[str, Any]], float]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = out.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        points[frozenset(point.attributes.items())] = value if value is not None else point.count
        return out


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    rec = Recorded()
    yield rec
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()


def chat_completion(model: str = "gpt-4o-mini-2024-07-18", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": usage
        or {
            "prompt_tokens": 20,
            "completion_tokens": 5,
            "total_tokens": 25,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }


class Upstream:
    """An httpx2 MockTransport handler answering every call with a fixed JSON or SSE body; counts calls."""

    def __init__(self, body: dict[str, Any] | None = None, sse: bytes | None = None) -> None:
        self.body = body or chat_completion()
        self.sse = sse
        self.calls = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.calls += 1
        if self.sse is not None and b'"stream":true' in request.content.replace(b" ", b""):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=self.sse)
        return httpx2.Response(200, json=self.body)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)


class EchoingUpstream(Upstream):
    """A lenient upstream: its answer names the model the request named, whatever it was."""

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.calls += 1
        return httpx2.Response(200, json=chat_completion(model=orjson.loads(request.content)["model"]))


def async_openai(cache: Cache, upstream: Upstream) -> openai.AsyncOpenAI:
    transport = AsyncCachingTransport(cache=cache, inner=upstream.transport())
    return openai.AsyncOpenAI(
        api_key=SECRET,
        base_url="http://llm.test/v1",
        http_client=httpx2.AsyncClient(transport=transport),
        max_retries=0,
    )


async def ask(client: openai.AsyncOpenAI, **extra: Any) -> Any:
    params: dict[str, Any] = {"model": "gpt-4o-mini", "messages": QUESTION, **extra}
    return await client.chat.completions.with_raw_response.create(**params)


# -- spans ---------------------------------------------------------------------------------------


async def test_miss_then_hit_two_client_spans_with_store_children(recorded: Recorded) -> None:
    cache = Cache(telemetry=recorded.telemetry)
    upstream = Upstream()
    client = async_openai(cache, upstream)
    app_tracer = recorded.tracer_provider.get_tracer("app")
    with app_tracer.start_as_current_span("app request") as app_span:
        first = await ask(client)
        second = await ask(client)
    assert (first.headers["x-cache"], second.headers["x-cache"], upstream.calls) == ("MISS", "HIT", 1)
    assert second.parse().choices[0].message.content == "Paris."

    miss, hit = recorded.calls()
    for span in (miss, hit):
        assert span.name == "chat gpt-4o-mini"
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == app_span.get_span_context().span_id
        attributes = span.attributes or {}
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert (attributes["server.address"], attributes["server.port"]) == ("llm.test", 80)
        assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
        assert attributes["gen_ai.response.id"] == "chatcmpl-abc123"
        assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert attributes["llm_cache.store"] == "memory"
        assert attributes["llm_cache.key_digest_prefix"] == first.headers["x-cache-key"].rpartition(":")[2][:12]
        assert isinstance(attributes["llm_cache.lookup_duration"], float)
        assert span.status.status_code is StatusCode.UNSET

    # The miss spent the tokens; the hit spent none and says what it saved, under our own names.
    miss_usage = {k: v for k, v in (miss.attributes or {}).items() if "tokens" in k}
    hit_usage = {k: v for k, v in (hit.attributes or {}).items() if "tokens" in k}
    assert miss_usage == {
        "gen_ai.usage.input_tokens": 20,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.cache_read.input_tokens": 4,
    }
    assert hit_usage == {
        "llm_cache.saved.input_tokens": 20,
        "llm_cache.saved.output_tokens": 5,
        "llm_cache.saved.cache_read.input_tokens": 4,
    }

    assert miss.attributes is not None and hit.attributes is not None
    assert miss.attributes["llm_cache.result"] == "miss"
    assert "llm_cache.match" not in miss.attributes
    assert miss.attributes["http.response.status_code"] == 200
    assert hit.attributes["llm_cache.result"] == "hit"
    assert hit.attributes["llm_cache.match"] == "exact"
    assert 0 <= float(hit.attributes["llm_cache.entry_age"]) < 5
    assert recorded.children(miss) == ["llm_cache.lookup", "llm_cache.store"]
    assert recorded.children(hit) == ["llm_cache.lookup"]
    store_span = next(s for s in recorded.finished() if s.name == "llm_cache.store")
    assert store_span.attributes is not None and int(store_span.attributes["llm_cache.bytes"]) > 0

    # No prompt, completion or credential anywhere in the telemetry.
    dump = repr([(s.attributes, [e.attributes for e in s.events]) for s in recorded.finished()])
    assert "capital" not in dump and "Paris" not in dump and SECRET not in dump


async def test_a_hit_says_which_deployment_made_the_answer(recorded: Recorded) -> None:
    cache = Cache(telemetry=recorded.telemetry)
    routed = {"x-router-deployment": "azure-east", "x-router-model": "gpt-4o-2024-08-06", "x-router-group": "gpt"}

    def router_like(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=chat_completion(), headers={**routed, "x-router-attempts": "2"})

    transport = AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(router_like))
    client = openai.AsyncOpenAI(
        api_key=SECRET, base_url="http://llm.test/v1", http_client=httpx2.AsyncClient(transport=transport)
    )
    await ask(client)
    hit = await ask(client)

    assert hit.headers["x-cache"] == "HIT" and "x-router-attempts" not in hit.headers  # that was the miss's
    assert {name: hit.headers[name] for name in routed} == routed
    attributes = recorded.calls()[1].attributes or {}
    assert attributes["llm_cache.origin.deployment"] == "azure-east"
    assert attributes["llm_cache.origin.model"] == "gpt-4o-2024-08-06"


@pytest.mark.parametrize(
    ("store_spans", "in_memory", "on_disk"),
    [
        (None, [], ["llm_cache.lookup", "llm_cache.store"]),  # by default: only stores that leave the process
        (True, ["llm_cache.lookup", "llm_cache.store"], ["llm_cache.lookup", "llm_cache.store"]),
        (False, [], []),
    ],
)
async def test_store_child_spans_by_default_only_for_stores_outside_the_process(
    tmp_path: Path, store_spans: bool | None, in_memory: list[str], on_disk: list[str]
) -> None:
    children = {}
    for name, store in (("memory", MemoryStore()), ("disk", DiskStore(tmp_path / "disk"))):
        rec = Recorded(store_spans=store_spans)
        cache = Cache(store, telemetry=rec.telemetry)
        await ask(async_openai(cache, Upstream()))
        (miss,) = rec.calls()
        assert isinstance((miss.attributes or {})["llm_cache.lookup_duration"], float)  # said on the call either way
        children[name] = rec.children(miss)
        await cache.close()
    assert children == {"memory": in_memory, "disk": on_disk}


def test_sync_transport_span_parent_is_the_callers_span(recorded: Recorded) -> None:
    cache = Cache(telemetry=recorded.telemetry)
    upstream = Upstream()
    http_client = httpx2.Client(transport=CachingTransport(cache=cache, inner=upstream.transport()))
    client = openai.OpenAI(api_key=SECRET, base_url="http://llm.test/v1", http_client=http_client, max_retries=0)
    with recorded.tracer_provider.get_tracer("app").start_as_current_span("app request") as app_span:
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    http_client.close()
    calls = recorded.calls()
    assert [(s.attributes or {})["llm_cache.result"] for s in calls] == ["miss", "hit"]
    assert all(s.parent is not None and s.parent.span_id == app_span.get_span_context().span_id for s in calls)
    assert recorded.children(calls[0]) == ["llm_cache.lookup", "llm_cache.store"]


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    lines = [b"data: " + orjson.dumps(event) + b"\n\n" for event in events]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": usage,
    }


STREAM_EVENTS = (
    chunk({"role": "assistant", "content": "Par"}),
    chunk({"content": "is."}, finish="stop"),
    chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}),
)


async def test_stream_stored_and_stream_discarded_events(recorded: Recorded) -> None:
    cache = Cache(telemetry=recorded.telemetry)
    complete = async_openai(cache, Upstream(sse=sse(*STREAM_EVENTS)))
    text = "".join(
        [
            c.choices[0].delta.content or ""
            async for c in await complete.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
            if c.choices
        ]
    )
    assert text == "Paris."
    cut = async_openai(cache, Upstream(sse=sse(*STREAM_EVENTS[:1], done=False)))
    async for _ in await cut.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION[:0] + [{"role": "user", "content": "another question"}], stream=True
    ):
        pass

    stored, discarded = recorded.calls()
    assert [e.name for e in stored.events] == ["llm_cache.stream.stored"]
    assert stored.attributes is not None and stored.attributes["gen_ai.usage.input_tokens"] == 12
    assert [e.name for e in discarded.events] == ["llm_cache.stream.discarded"]
    event_attributes = discarded.events[0].attributes or {}
    assert event_attributes["llm_cache.reason"] == "stream incomplete: no terminal event"
    assert recorded.children(discarded) == ["llm_cache.lookup"]
    assert recorded.telemetry.snapshot()["llm_cache_not_stored"] == {("stream",): 1}


async def test_capture_content_is_opt_in_and_in_the_current_attribute_form() -> None:
    rec = Recorded(capture_content=True)
    cache = Cache(telemetry=rec.telemetry)
    client = async_openai(cache, Upstream())
    system = {"role": "system", "content": "Answer in one word."}
    await ask(client, messages=[system, *QUESTION])
    await ask(client, messages=[system, *QUESTION])
    for span in rec.calls():  # the miss and the hit
        attributes = span.attributes or {}
        assert orjson.loads(str(attributes["gen_ai.input.messages"])) == [
            {"role": "system", "parts": [{"type": "text", "content": "Answer in one word."}]},
            {"role": "user", "parts": [{"type": "text", "content": "What is the capital of France?"}]},
        ]
        assert orjson.loads(str(attributes["gen_ai.output.messages"])) == [
            {"role": "assistant", "parts": [{"type": "text", "content": "Paris."}], "finish_reason": "stop"}
        ]
        assert not span.events  # not the deprecated `gen_ai.content` event with gen_ai.prompt / gen_ai.completion
        assert not any(name in attributes for name in ("gen_ai.prompt", "gen_ai.completion"))


async def test_request_parameters_present_in_the_body_are_span_attributes(recorded: Recorded) -> None:
    client = async_openai(Cache(telemetry=recorded.telemetry), Upstream())
    await ask(client, temperature=0.2, top_p=0.9, max_completion_tokens=64, stop=["END"], seed=7, n=2)
    await ask(client, response_format={"type": "json_object"})
    full, json_only = (span.attributes or {} for span in recorded.calls())
    request = {k: v for k, v in full.items() if k.startswith("gen_ai.request.")}
    assert request == {
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.seed": 7,
        "gen_ai.request.choice.count": 2,
    }
    assert json_only["gen_ai.output.type"] == "json" and "gen_ai.request.temperature" not in json_only


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/messages",
            {"model": "claude", "max_tokens": 100, "temperature": 1, "top_k": 40, "stop_sequences": ["\n\n"]},
            {"max_tokens": 100, "temperature": 1.0, "top_k": 40.0, "stop_sequences": ("\n\n",)},
        ),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            {"generationConfig": {"temperature": 0.5, "topP": 0.8, "maxOutputTokens": 256, "candidateCount": 1}},
            {"model": "gemini-2.0-flash", "temperature": 0.5, "top_p": 0.8, "max_tokens": 256},
        ),
        (
            "/model/anthropic.claude-3-haiku/converse",
            {"inferenceConfig": {"maxTokens": 32, "topP": 0.5, "stopSequences": ["x"]}},
            {"model": "anthropic.claude-3-haiku", "max_tokens": 32, "top_p": 0.5, "stop_sequences": ("x",)},
        ),
    ],
)
def test_each_family_names_its_parameters_in_the_conventions_terms(
    path: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    cache = Cache()
    route = cache.route("POST", path)
    assert route is not None
    found = route.endpoint.request_attributes(body)
    expected.pop("model", None)
    assert found == {f"gen_ai.request.{name}": value for name, value in expected.items()}


# -- usage normalisation across providers ------------------------------------------------------------

USAGE_CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, int]]] = {
    "openai": (
        "/v1/chat/completions",
        "openai",
        chat_completion(
            usage={
                "prompt_tokens": 1200,
                "completion_tokens": 80,
                "total_tokens": 1280,
                "prompt_tokens_details": {"cached_tokens": 1024},
            }
        ),
        {"input_tokens": 1200, "output_tokens": 80, "cache_read.input_tokens": 1024},
    ),
    "anthropic": (
        "/v1/messages",
        "anthropic",
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "Paris."}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 30,
                "output_tokens": 7,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 500,
            },
        },
        {"input_tokens": 2530, "output_tokens": 7, "cache_read.input_tokens": 2000, "cache_creation.input_tokens": 500},
    ),
    "gemini": (
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "gcp.gemini",
        {
            "responseId": "resp-1",
            "modelVersion": "gemini-2.0-flash-001",
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Paris."}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 900,
                "candidatesTokenCount": 12,
                "thoughtsTokenCount": 30,
                "cachedContentTokenCount": 512,
                "totalTokenCount": 942,
            },
        },
        {"input_tokens": 900, "output_tokens": 42, "cache_read.input_tokens": 512},
    ),
    # Anthropic models on Bedrock (InvokeModel) answer with the Messages body; input_tokens excludes cache use.
    "bedrock-shaped": (
        "/v1/messages",
        "anthropic",
        {
            "id": "msg_bdrk_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": "Paris."}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 11,
                "output_tokens": 4,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 1500,
            },
        },
        {"input_tokens": 1511, "output_tokens": 4, "cache_read.input_tokens": 0, "cache_creation.input_tokens": 1500},
    ),
    "deepseek-shaped": (
        "/chat/completions",
        "openai",
        chat_completion(
            model="deepseek-chat",
            usage={
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "total_tokens": 110,
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": 36,
            },
        ),
        {"input_tokens": 100, "output_tokens": 10, "cache_read.input_tokens": 64},
    ),
}


FINISH_REASONS = {"openai": "stop", "anthropic": "end_turn", "gcp.gemini": "STOP"}
"""Each family's own word, as the conventions want it (`gen_ai.response.finish_reasons`)."""


@pytest.mark.parametrize("case", list(USAGE_CASES))
async def test_usage_normalised_on_miss_and_hit(recorded: Recorded, case: str) -> None:
    path, provider, body, expected = USAGE_CASES[case]
    cache = Cache(telemetry=recorded.telemetry)
    upstream = Upstream(body)
    transport = AsyncCachingTransport(cache=cache, inner=upstream.transport())
    request = {"model": "m-1", "messages": QUESTION, "max_tokens": 16}
    if "gemini" in path:
        request = {"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]}
    async with httpx2.AsyncClient(transport=transport, base_url="http://llm.test") as client:
        credential = "x-api-key" if path.endswith("/messages") else "authorization"  # each family's own
        credential = "x-goog-api-key" if "gemini" in path else credential
        answers = [await client.post(path, json=request, headers={credential: SECRET}) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    for span, prefix in zip(recorded.calls(), ("gen_ai.usage.", "llm_cache.saved."), strict=True):
        attributes = span.attributes or {}
        assert attributes["gen_ai.provider.name"] == provider
        usage = {k.removeprefix(prefix): v for k, v in attributes.items() if k.startswith(prefix)}
        assert usage == expected
        assert attributes["gen_ai.response.finish_reasons"] == (FINISH_REASONS[provider],)


def test_provider_names_follow_the_semantic_conventions() -> None:
    from llm_cache.middleware.telemetry import provider_name

    assert provider_name("openai", "/v1/chat/completions", None) == "openai"
    assert provider_name("openai", "/openai/deployments/gpt4o/chat/completions", "gpt4o") == "azure.ai.openai"
    assert provider_name("openai", "/openai/v1/chat/completions", None) == "azure.ai.openai"
    assert provider_name("anthropic", "/v1/messages", None) == "anthropic"
    assert (
        provider_name("gemini", "/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash") == "gcp.gemini"
    )
    assert (
        provider_name("gemini", "/v1/projects/p/locations/l/publishers/google/models/g:generateContent", "g")
        == "gcp.vertex_ai"
    )


# -- failures ------------------------------------------------------------------------------------------


async def test_store_failure_is_an_error_span_and_the_request_succeeds(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(store=DeadStore(), telemetry=recorded.telemetry)
    upstream = Upstream()
    client = async_openai(cache, upstream)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        answers = [await ask(client) for _ in range(3)]
    assert [a.parse().choices[0].message.content for a in answers] == ["Paris."] * 3
    assert upstream.calls == 3

    calls = recorded.calls()
    assert [(s.attributes or {})["llm_cache.result"] for s in calls] == ["error"] * 3
    assert all(s.status.status_code is StatusCode.UNSET for s in calls)  # the caller's request did not fail
    children = [s for s in recorded.finished() if s.name.startswith("llm_cache.")]
    assert sorted({s.name for s in children}) == ["llm_cache.lookup", "llm_cache.store"]
    assert all(s.status.status_code is StatusCode.ERROR for s in children)
    assert all((s.attributes or {})["error.type"] == "ConnectionError" for s in children)
    store_span = next(s for s in children if s.name == "llm_cache.store")
    assert [e.name for e in calls[0].events] == ["llm_cache.response.discarded"]
    assert (calls[0].events[0].attributes or {})["llm_cache.reason"] == "store write failed"
    assert store_span.parent is not None

    # Six failures (3 reads, 3 writes), one WARNING: the rest are rate-limited.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dead get failed (ConnectionError: connection refused)" in warnings[0].getMessage()
    points = recorded.metrics()["llm_cache.store.errors"]
    assert points == {
        frozenset({("store", "dead"), ("operation", "get")}): 3,
        frozenset({("store", "dead"), ("operation", "set")}): 3,
    }
    assert cache.stats.store_errors == 6


def test_warning_rate_limit_reports_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry(warning_interval=0.0)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        telemetry.store_error("get", ConnectionError("x"))
        telemetry.store_error("get", ConnectionError("x"))
    assert len(caplog.records) == 2
    telemetry = Telemetry(warning_interval=3600)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        for _ in range(5):
            telemetry.store_error("set", TimeoutError())
    assert len(caplog.records) == 1
    assert telemetry.snapshot()["llm_cache_store_errors"] == {("unknown", "set"): 5}


def test_a_busy_local_model_s_warnings_never_hide_a_failing_store(caplog: pytest.LogCaptureFixture) -> None:
    """Callers can keep a local embedder at its `max_in_flight` at request rate; its `semantic_busy`
    warnings shared one allowance with every store failure, so a dead store went unlogged. Each
    store (or semantic part) and operation has its own."""
    telemetry = Telemetry(warning_interval=3600)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        for _ in range(20):
            telemetry.store_error("semantic_busy", RuntimeError("busy"), "embedder:minilm")
        telemetry.store_error("get", ConnectionError("refused"))
        telemetry.store_error("get", ConnectionError("refused"))
    assert len(caplog.records) == 2
    assert "embedder:minilm semantic_busy failed" in caplog.records[0].getMessage()
    assert "cache store unknown get failed" in caplog.records[1].getMessage()


async def test_debug_log_line_per_decision_without_prompt_or_key(caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(telemetry=Recorded().telemetry)
    client = async_openai(cache, Upstream())
    with caplog.at_level(logging.DEBUG, logger="llm_cache.middleware"):
        await ask(client)
        await ask(client)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CACHE ")]
    assert [line.split()[1] for line in lines] == ["MISS", "HIT"]
    assert all("model=gpt-4o-mini" in line and "lookup_ms=" in line for line in lines)
    assert not any("capital" in line or SECRET in line for line in lines)


# -- metrics after a scripted sequence -------------------------------------------------------------------


async def test_metric_values_after_a_scripted_sequence() -> None:
    pricing = {
        "as_of": "2025-06-01",
        "models": {
            "gpt-4o-mini": {"input": 1.0, "cached_input": 0.5, "output": 2.0},
            "gpt-4o": {"input": 10.0, "output": 20.0},
        },
    }
    rec = Recorded(pricing=pricing)
    cache = Cache(telemetry=rec.telemetry)
    upstream = Upstream()
    client = async_openai(cache, upstream)

    await ask(client)  # miss (stored)
    await ask(client)  # hit
    await ask(client)  # hit
    await ask(client, extra_headers={"cache-control": "no-cache"})  # refresh (stored again)
    await ask(client, extra_body={"cache": {"use-cache": False}})  # bypass
    await ask(client, model="gpt-4o")  # miss, another model
    await ask(client, model="gpt-4o")  # hit
    transport = AsyncCachingTransport(cache=cache, inner=upstream.transport())
    async with httpx2.AsyncClient(transport=transport, base_url="http://llm.test") as raw:
        await raw.post("/v1/chat/completions", content=b"{not json")  # passthrough: bypass
    assert upstream.calls == 5

    def labels(result: str, model: str, match: str = "none") -> frozenset[tuple[str, str]]:
        return frozenset({("result", result), ("provider", "openai"), ("model", model), ("match", match)})

    metrics = rec.metrics()
    assert metrics["llm_cache.requests"] == {
        labels("miss", "gpt-4o-mini"): 1,
        labels("hit", "gpt-4o-mini", "exact"): 2,
        labels("refresh", "gpt-4o-mini"): 1,
        labels("bypass", "gpt-4o-mini"): 1,
        labels("miss", "gpt-4o"): 1,
        labels("hit", "gpt-4o", "exact"): 1,
        labels("bypass", "unknown"): 1,
    }
    memory = frozenset({("store", "memory")})
    # A memory store's lookups are not recorded live in OTel (a dict read); Prometheus has them, below.
    assert "llm_cache.lookup.duration" not in metrics
    assert metrics["llm_cache.store.duration"] == {memory: 3}
    assert metrics["llm_cache.stored.entries"] == {memory: 3}
    entry_bytes = metrics["llm_cache.stored.bytes"][memory]
    assert entry_bytes > 3 * len(orjson.dumps(chat_completion()))

    # Each hit avoided 20 input (4 of them provider-cached) and 5 output tokens.
    def tokens(model: str, kind: str) -> frozenset[tuple[str, str]]:
        return frozenset({("provider", "openai"), ("model", model), ("type", kind)})

    assert metrics["llm_cache.tokens.avoided"] == {
        tokens("gpt-4o-mini", "input"): 40,
        tokens("gpt-4o-mini", "output"): 10,
        tokens("gpt-4o", "input"): 20,
        tokens("gpt-4o", "output"): 5,
    }
    mini_cost = (16 * 1.0 + 4 * 0.5 + 5 * 2.0) / 1e6
    big_cost = (16 * 10.0 + 4 * 10.0 + 5 * 20.0) / 1e6  # no cached_input price: cached tokens at the input price
    cost = metrics["llm_cache.cost.avoided"]
    assert cost[frozenset({("provider", "openai"), ("model", "gpt-4o-mini")})] == pytest.approx(2 * mini_cost)
    assert cost[frozenset({("provider", "openai"), ("model", "gpt-4o")})] == pytest.approx(big_cost)
    # The three stored upstream answers each reported 4 provider-cached prompt tokens.
    assert metrics["llm_cache.provider.cached_tokens"] == {
        tokens("gpt-4o-mini", "cache_read"): 8,
        tokens("gpt-4o", "cache_read"): 4,
    }
    assert "llm_cache.store.errors" not in metrics

    # The Prometheus view is fed by the same events and says the same.
    families = {f.name: f for f in text_string_to_metric_families(rec.telemetry.prometheus_text().decode())}
    requests = {
        (s.labels["result"], s.labels["model"], s.labels["match"]): s.value
        for s in families["llm_cache_requests"].samples
    }
    assert requests == {
        ("miss", "gpt-4o-mini", "none"): 1,
        ("hit", "gpt-4o-mini", "exact"): 2,
        ("refresh", "gpt-4o-mini", "none"): 1,
        ("bypass", "gpt-4o-mini", "none"): 1,
        ("miss", "gpt-4o", "none"): 1,
        ("hit", "gpt-4o", "exact"): 1,
        ("bypass", "unknown", "none"): 1,
    }
    lookup_count = [s.value for s in families["llm_cache_lookup_duration_seconds"].samples if s.name.endswith("_count")]
    assert lookup_count == [5]
    stored = [s.value for s in families["llm_cache_stored_bytes"].samples if s.name.endswith("_total")]
    assert stored == [entry_bytes]
    saved = sum(s.value for s in families["llm_cache_cost_avoided_usd"].samples if s.name.endswith("_total"))
    assert saved == pytest.approx(2 * mini_cost + big_cost)
    coalesced = [s.value for s in families["llm_cache_coalesced_waits"].samples if s.name.endswith("_total")]
    assert coalesced == [0]


async def test_every_hit_counts_when_hits_of_one_entry_are_folded_in_together() -> None:
    # Hits queue their additions and are folded in every 256 (and when read): the same answer's hits,
    # folded as one, still count one request and its avoided tokens each.
    pricing = {"as_of": "2025-06-01", "models": {"gpt-4o-mini": {"input": 1.0, "cached_input": 0.5, "output": 2.0}}}
    telemetry = Telemetry(pricing=pricing)
    cache = Cache(telemetry=telemetry)
    upstream = Upstream()
    transport = AsyncCachingTransport(cache=cache, inner=upstream.transport())
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": QUESTION})
    async with httpx2.AsyncClient(transport=transport, base_url="http://llm.test", headers=AUTHORIZED) as client:
        for _ in range(301):  # a miss, then 300 hits: past one fold of 256
            await client.post("/v1/chat/completions", content=body)
    assert upstream.calls == 1
    counters = telemetry.snapshot()
    assert counters["llm_cache_requests"][("hit", "openai", "gpt-4o-mini", "exact")] == 300
    assert counters["llm_cache_tokens_avoided"] == {
        ("openai", "gpt-4o-mini", "input"): 300 * 20,
        ("openai", "gpt-4o-mini", "output"): 300 * 5,
    }
    saved = counters["llm_cache_cost_avoided_usd"][("openai", "gpt-4o-mini")]
    assert saved == pytest.approx(300 * (16 * 1.0 + 4 * 0.5 + 5 * 2.0) / 1e6)


async def test_genai_client_metrics_count_tokens_spent_upstream_and_every_operations_duration() -> None:
    rec = Recorded()
    client = async_openai(Cache(telemetry=rec.telemetry), Upstream())
    for _ in range(3):  # one miss, two hits
        await ask(client)
    data = rec.reader.get_metrics_data()
    assert data is not None
    found = {m.name: m for r in data.resource_metrics for sc in r.scope_metrics for m in sc.metrics}
    call = {
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
        ("server.address", "llm.test"),
        ("server.port", 80),
    }

    usage = found["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    tokens = {frozenset(p.attributes.items()): (p.count, p.sum) for p in usage.data.data_points}
    # Only the miss used tokens; the hits are not counted as spending them again.
    assert tokens == {
        frozenset(call | {("gen_ai.token.type", "input")}): (1, 20),
        frozenset(call | {("gen_ai.token.type", "output")}): (1, 5),
    }
    assert list(usage.data.data_points[0].explicit_bounds) == [4**n for n in range(14)]

    duration = found["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    counts = {frozenset(p.attributes.items()): p.count for p in duration.data.data_points}
    assert counts == {
        frozenset(call | {("llm_cache.result", "miss")}): 1,
        frozenset(call | {("llm_cache.result", "hit")}): 2,
    }
    assert list(duration.data.data_points[0].explicit_bounds)[:3] == [0.01, 0.02, 0.04]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -20, "completion_tokens": -5, "total_tokens": -25},
        {
            "prompt_tokens": 20,
            "completion_tokens": -5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": -4},
        },
        {"prompt_tokens": 2**60, "completion_tokens": 2**60, "total_tokens": 2**61},
        {"prompt_tokens": 10**30, "completion_tokens": 5, "total_tokens": 10**30},
    ],
    ids=["negative", "negative output and cached", "past 2**53", "past 64 bits"],
)
async def test_token_counts_no_provider_reports_never_make_a_counter_go_down_or_explode(usage: dict[str, Any]) -> None:
    """A hostile or broken upstream's usage block (negative counts, counts no double holds) is read
    as no count: the answer is served and hit as any other, and no counter goes down (Prometheus
    reads a counter that drops as a restart) or jumps by more tokens than a model ever answered."""
    rec = Recorded()
    upstream = Upstream(chat_completion(usage=usage))
    client = async_openai(Cache(telemetry=rec.telemetry), upstream)
    outcomes = [(await ask(client)).headers["x-cache"] for _ in range(3)]
    assert (outcomes, upstream.calls) == (["MISS", "HIT", "HIT"], 1)
    families = {f.name: f for f in text_string_to_metric_families(rec.telemetry.prometheus_text().decode())}
    for name in ("llm_cache_tokens_avoided", "llm_cache_cost_avoided_usd", "llm_cache_provider_cached_tokens"):
        for sample in families[name].samples if name in families else ():
            assert 0 <= sample.value <= 2**53, sample
    data = rec.reader.get_metrics_data()
    spent = [
        point
        for resource in (data.resource_metrics if data else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "gen_ai.client.token.usage"
        for point in metric.data.data_points
    ]
    assert all(0 <= point.sum <= 2**53 and point.min >= 0 for point in spent), spent


async def test_an_upstream_error_status_is_the_error_type(recorded: Recorded) -> None:
    upstream = Upstream({"error": {"message": "slow down", "type": "rate_limit"}})
    transport = AsyncCachingTransport(
        cache=Cache(telemetry=recorded.telemetry),
        inner=httpx2.MockTransport(lambda request: httpx2.Response(429, json=upstream.body)),
    )
    async with httpx2.AsyncClient(transport=transport, base_url="http://llm.test", headers=AUTHORIZED) as client:
        assert (
            await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": QUESTION})
        ).status_code == 429
    (span,) = recorded.calls()
    assert (span.attributes or {})["error.type"] == "429" and span.status.status_code is StatusCode.ERROR
    points = recorded.metrics()["gen_ai.client.operation.duration"]
    assert [dict(labels)["error.type"] for labels in points] == ["429"]


async def test_coalesced_waits_are_counted(recorded: Recorded) -> None:
    import asyncio

    release = asyncio.Event()

    class SlowUpstream(httpx2.AsyncBaseTransport):
        calls = 0

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            SlowUpstream.calls += 1
            await release.wait()
            return httpx2.Response(200, json=chat_completion())

    store = CountingStore()
    cache = Cache(store=store, telemetry=recorded.telemetry)
    transport = AsyncCachingTransport(cache=cache, inner=SlowUpstream())
    client = openai.AsyncOpenAI(
        api_key=SECRET,
        base_url="http://llm.test/v1",
        http_client=httpx2.AsyncClient(transport=transport),
        max_retries=0,
    )
    tasks = [asyncio.create_task(ask(client)) for _ in range(3)]
    async with asyncio.timeout(10):
        while SlowUpstream.calls == 0 or store.reads < 3:
            await asyncio.sleep(0)  # yield until the leader is upstream and both others wait on it
    release.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.headers["x-cache"] for r in results) == ["HIT", "HIT", "MISS"]
    assert SlowUpstream.calls == 1
    assert recorded.metrics()["llm_cache.coalesced"] == {frozenset(): 2}
    hits = [s for s in recorded.calls() if (s.attributes or {})["llm_cache.result"] == "hit"]
    assert all((s.attributes or {})["llm_cache.coalesced"] is True for s in hits)


# -- current store size ------------------------------------------------------------------------------------


def sizes(rec: Recorded) -> tuple[dict[str, float], dict[str, float]]:
    """(entries, bytes) by store label from the OTel gauges, then checked against the Prometheus view."""
    metrics = rec.metrics()
    otel = tuple(
        {dict(labels)["store"]: value for labels, value in metrics.get(name, {}).items()}
        for name in ("llm_cache.store.entries", "llm_cache.store.size")
    )
    families = {f.name: f for f in text_string_to_metric_families(rec.telemetry.prometheus_text().decode())}
    prometheus = tuple(
        {s.labels["store"]: s.value for s in families[name].samples}
        for name in ("llm_cache_store_entries", "llm_cache_store_size_bytes")
    )
    assert families["llm_cache_store_entries"].type == "gauge"
    assert prometheus == otel
    return otel


async def test_store_size_gauges_follow_writes_evictions_and_clears(recorded: Recorded) -> None:
    store = MemoryStore(max_entries=2)
    cache = Cache(store, telemetry=recorded.telemetry)
    client = async_openai(cache, Upstream())
    assert sizes(recorded) == ({"memory": 0}, {"memory": 0})

    def written() -> float:
        return recorded.telemetry.snapshot()["llm_cache_stored_bytes"][("memory",)]

    await ask(client)  # miss, stored
    first = written()
    await ask(client, messages=[{"role": "user", "content": "And of Spain?"}])  # miss, stored
    await ask(client)  # hit: the first entry is now the most recently used
    before = written()
    await ask(client, messages=[{"role": "user", "content": "And of Italy?"}])  # miss, stored; evicts "Spain"
    third = written() - before
    assert sizes(recorded) == ({"memory": 2}, {"memory": first + third})
    # the write counters keep counting what was written; the gauges say what is held now
    assert recorded.telemetry.snapshot()["llm_cache_stored_entries"] == {("memory",): 3}

    await store.clear()
    assert sizes(recorded) == ({"memory": 0}, {"memory": 0})


async def test_store_size_of_disk_and_tiered_l1_stores(tmp_path: Path) -> None:
    disk = Recorded()
    cache = Cache(DiskStore(tmp_path / "disk"), telemetry=disk.telemetry)
    client = async_openai(cache, Upstream())
    await ask(client)
    await ask(client, messages=[{"role": "user", "content": "And of Spain?"}])
    entries, size = sizes(disk)
    assert entries == {"disk": 2}
    assert size["disk"] > disk.telemetry.snapshot()["llm_cache_stored_bytes"][("disk",)]  # pages + files
    await cache.close()

    tiered = Recorded()
    store = TieredStore(MemoryStore(), DiskStore(tmp_path / "l2"))
    cache = Cache(store, telemetry=tiered.telemetry)
    client = async_openai(cache, Upstream())
    await ask(client)
    written = tiered.telemetry.snapshot()["llm_cache_stored_bytes"][("tiered:memory+disk",)]
    # only the per-pod L1, labelled as such: the shared level's size is not cheap to know
    assert sizes(tiered) == ({"tiered:memory+disk/l1": 1}, {"tiered:memory+disk/l1": written})
    await cache.close()


def test_a_store_without_a_size_reports_none_and_a_failing_one_is_skipped() -> None:
    rec = Recorded()
    Cache(DeadStore(), telemetry=rec.telemetry)
    assert sizes(rec) == ({}, {})

    class Broken(MemoryStore):
        def current_size(self) -> tuple[int, int]:
            raise OSError("gone")

    rec = Recorded()
    Cache(Broken(), telemetry=rec.telemetry)
    assert sizes(rec) == ({}, {})


# -- pricing and defaults ----------------------------------------------------------------------------------


def test_shipped_pricing_matches_model_versions_by_longest_prefix() -> None:
    pricing = Pricing.default()
    assert pricing.as_of
    assert pricing.prices("gpt-4o-mini-2024-07-18") == pricing.models["gpt-4o-mini"]
    assert pricing.prices("gpt-4o-2024-08-06") == pricing.models["gpt-4o"]
    assert pricing.prices("claude-sonnet-4-20250514") == pricing.models["claude-sonnet-4"]
    assert pricing.prices("models/gemini-2.0-flash") == pricing.models["gemini-2.0-flash"]
    assert pricing.prices("some-local-model") is None
    for name in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku", "gemini-2.0-flash", "gemini-2.5-flash"):
        assert {"input", "output"} <= set(pricing.models[name])


async def test_without_an_sdk_nothing_records_and_hits_still_work() -> None:
    noop = Telemetry(tracer_provider=trace.NoOpTracerProvider())
    cache = Cache(telemetry=noop)
    client = async_openai(cache, Upstream())
    assert [(await ask(client)).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert noop.snapshot()["llm_cache_requests"][("hit", "openai", "gpt-4o-mini", "exact")] == 1


async def test_a_hit_with_nothing_recording_counts_what_a_recorded_hit_counts(caplog: pytest.LogCaptureFixture) -> None:
    # On the global providers with no SDK installed (this process installs none), a call keeps only its
    # counts: its exact hits are counted without a per-call object, and must count the same.
    # What a hit counts is kept per preparation: an entry written again (here with other usage) is
    # counted as what it now says.
    quiet, rec = Telemetry(), Recorded()
    assert quiet.quiet() and not rec.telemetry.quiet()
    longer = {"prompt_tokens": 20, "completion_tokens": 50, "total_tokens": 70}
    for telemetry in (quiet, rec.telemetry):
        upstream = Upstream()
        client = async_openai(Cache(telemetry=telemetry), upstream)
        assert [(await ask(client)).headers["x-cache"] for _ in range(3)] == ["MISS", "HIT", "HIT"]
        upstream.body = chat_completion(usage=longer)
        refreshed = await ask(client, extra_headers={"cache-control": "no-cache"})
        assert [refreshed.headers["x-cache"], (await ask(client)).headers["x-cache"]] == ["REFRESH", "HIT"]
    assert quiet.snapshot() == rec.telemetry.snapshot()
    assert quiet.snapshot()["llm_cache_requests"][("hit", "openai", "gpt-4o-mini", "exact")] == 3
    assert quiet.snapshot()["llm_cache_tokens_avoided"][("openai", "gpt-4o-mini", "output")] == 2 * 5 + 50
    with caplog.at_level(logging.DEBUG, logger="llm_cache"):
        assert not quiet.quiet()  # the DEBUG line of every decision needs the call


# A Telemetry on the global providers, made before the application installs the SDK (as a library's
# module-level Cache is): run in a child, since a process sets its global tracer provider only once.
_INSTALLED_LATER = """
import asyncio, httpx2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from llm_cache.middleware import AsyncCachingTransport, Cache

async def upstream(request):
    answer = {"role": "assistant", "content": "Hello"}
    choice = {"index": 0, "message": answer, "finish_reason": "stop"}
    body = {"id": "1", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [choice]}
    return httpx2.Response(200, json=body)

async def main():
    cache = Cache()
    client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(upstream)))
    ask = lambda: client.post(
        "https://api.openai.com/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"authorization": "Bearer sk-later"},
    )
    before = [(await ask()).headers["x-cache"] for _ in range(2)]
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    after = (await ask()).headers["x-cache"]
    print(before, after, [(s.name, s.attributes["llm_cache.result"]) for s in spans.get_finished_spans()])

asyncio.run(main())
"""


def test_on_the_global_providers_spans_begin_with_the_first_call_after_the_sdk_is_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _INSTALLED_LATER], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MISS', 'HIT'] HIT [('chat gpt-4o-mini', 'hit')]"


async def test_unsampled_calls_make_no_spans_and_still_count() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider=tracer_provider)
    client = async_openai(Cache(telemetry=telemetry), Upstream())

    assert [(await ask(client)).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert spans.get_finished_spans() == ()
    requests = telemetry.snapshot()["llm_cache_requests"]
    assert requests[("miss", "openai", "gpt-4o-mini", "none")] == 1
    assert requests[("hit", "openai", "gpt-4o-mini", "exact")] == 1


async def test_a_sampler_sees_the_genai_attributes_when_the_span_starts() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class Remembering(Sampler):
        """Samples only chat calls to gpt-4o-mini, deciding on the attributes given at span creation."""

        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            attributes = dict(attributes or {})
            self.seen.append(attributes)
            wanted = attributes.get("gen_ai.request.model") == "gpt-4o-mini"
            return SamplingResult(Decision.RECORD_AND_SAMPLE if wanted else Decision.DROP, attributes)

        def get_description(self) -> str:
            return "remembering"

    sampler = Remembering()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    client = async_openai(Cache(telemetry=Telemetry(tracer_provider=tracer_provider)), Upstream())
    await ask(client)
    await ask(client, model="gpt-4o")

    assert [a.get("gen_ai.request.model") for a in sampler.seen] == ["gpt-4o-mini", "gpt-4o"]
    assert sampler.seen[0] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "llm.test",
        "server.port": 80,
        "llm_cache.store": "memory",
    }
    assert [s.name for s in spans.get_finished_spans()] == ["chat gpt-4o-mini"]


def test_sdk_telemetry_takes_a_sampler() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from llm_cache.middleware.telemetry import sdk_telemetry

    assert sdk_telemetry().tracer.start_span("sampled").is_recording()
    assert not sdk_telemetry(sampler=ALWAYS_OFF).tracer.start_span("unsampled").is_recording()


def test_model_label_cardinality_is_capped() -> None:
    """Models no answer proved keep `MAX_UNPROVEN_MODELS` labels; answered ones `MAX_MODELS` more."""
    from llm_cache.middleware import _model_labels as module

    t = Telemetry()
    for i in range(module.MAX_UNPROVEN_MODELS + 10):
        t._count_request("miss", "openai", f"unproven-{i}", "none")
    for i in range(module.MAX_MODELS + 10):
        t._admit(f"model-{i}")
        t._count_request("miss", "openai", f"model-{i}", "none")
    models = {labels[2] for labels in t.snapshot()["llm_cache_requests"]}
    assert len(models) == module.MAX_UNPROVEN_MODELS + module.MAX_MODELS + 1 and "other" in models
    assert f"model-{module.MAX_MODELS - 1}" in models and f"model-{module.MAX_MODELS}" not in models


async def test_a_caller_naming_many_models_grows_no_metric_past_the_model_cap() -> None:
    """The GenAI histograms carry the request's model (and the answer's, which a lenient upstream echoes):
    the caller's text. They kept one series per model named, up to the SDK's own limit (2,000 per
    instrument, each a histogram of 14 buckets), ten times the cap every other metric keeps
    (`MAX_MODELS` answered and `MAX_UNPROVEN_MODELS` unanswered ones, then `other`). Spans still name
    the model as sent."""
    from llm_cache.middleware import _model_labels as module

    rec = Recorded()
    client = async_openai(Cache(telemetry=rec.telemetry), EchoingUpstream())
    cap = module.MAX_MODELS + module.MAX_UNPROVEN_MODELS
    for i in range(cap + 50):
        await ask(client, model=f"model-{i}")
    metrics = rec.metrics()
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        models = {dict(attributes).get("gen_ai.request.model") for attributes in metrics[name]}
        responses = {dict(attributes).get("gen_ai.response.model") for attributes in metrics[name]}
        assert len(models) == len(responses) == cap + 1 and "other" in models, name
    spans = {(span.attributes or {}).get("gen_ai.request.model") for span in rec.calls()}
    assert f"model-{cap + 49}" in spans


class RefusingUpstream(Upstream):
    """An upstream that knows only the `gpt-` models: any other is answered 404, as a router refuses it."""

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if not orjson.loads(request.content)["model"].startswith("gpt-"):
            return httpx2.Response(404, json={"error": {"message": "no such model", "type": "invalid_request_error"}})
        return super().__call__(request)


async def test_junk_models_never_push_the_answered_models_span_starts_out_of_their_memo() -> None:
    """A call's span start (its name and attributes) is worked out once per endpoint, path, model and
    upstream, and memoised: the caller's text. A flood of junk model names filled the memo first come,
    and a real model named after it was worked out again on every call, for the life of the process."""
    from llm_cache.middleware import _model_labels as module

    telemetry = Telemetry()
    client = async_openai(Cache(telemetry=telemetry), RefusingUpstream())
    await ask(client)  # gpt-4o-mini: answered before the flood
    for i in range(4 * module.MAX_MODELS + 50):
        with pytest.raises(openai.NotFoundError):
            await ask(client, model=f"junk-{i}")
    await ask(client, model="gpt-4o")  # answered after it
    await ask(client, model="gpt-4o", temperature=0.5)  # and again: a miss, worked out from the memo

    memoised = {key[3] for key in telemetry._starts}
    assert {"gpt-4o-mini", "gpt-4o"} <= memoised
    assert len(memoised) <= 4 * module.MAX_MODELS  # junk keeps it bounded still


def test_calls_begun_on_several_threads_never_fail_on_the_span_start_memo() -> None:
    """One Cache may serve calls on several threads at once (two sync transports, each with its loop
    thread, or loops of their own): the memo of span starts is changed by whichever call works one out,
    and a call that read an unproven start as another thread pushed it out raised a KeyError out of
    `begin` (a failed request). Forced thread switches make the interleaving likely; any failure fails."""
    import threading

    from llm_cache.middleware import _span_starts

    cache = Cache(telemetry=Telemetry())
    names = 2 * _span_starts.UNPROVEN  # more junk models than unproven places: starts are pushed out all along
    bodies = [
        orjson.dumps({"model": f"junk-{i}", "messages": [{"role": "user", "content": "hi"}]}) for i in range(names)
    ]
    requests = [cache.prepare("POST", "/v1/chat/completions", "", {"authorization": "Bearer sk-a"}, b) for b in bodies]
    failures: list[BaseException] = []
    ready = threading.Barrier(4)

    def begin_calls(thread: int) -> None:
        ready.wait(timeout=60)
        for i in range(50_000):
            try:
                cache.begin(requests[(7 * i + 13 * thread) % names])  # type: ignore[arg-type]
            except Exception as error:
                failures.append(error)
                return

    threads = [threading.Thread(target=begin_calls, args=(n,)) for n in range(4)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(switching)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert len(cache.telemetry._starts.unproven) <= _span_starts.UNPROVEN


def test_grafana_dashboard_uses_only_exported_metric_names() -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[2] / "examples" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(llm_cache_[a-z_]+)", expr)}
    text = Telemetry().prometheus_text().decode()
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = set()
    for name, kind in exported:
        names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
    assert used and used <= names, used - names


async def test_asgi_middleware_spans_are_internal_with_the_same_attributes(recorded: Recorded) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from llm_cache.middleware._asgi import CacheMiddleware

    async def completions(request: Request) -> JSONResponse:
        return JSONResponse(chat_completion())

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    cache = Cache(telemetry=recorded.telemetry)
    wrapped = CacheMiddleware(app, cache)
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    transport = httpx2.ASGITransport(app=wrapped)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app", headers=AUTHORIZED) as client:
        answers = [await client.post("/v1/chat/completions", json=body) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    miss, hit = recorded.calls()
    assert miss.kind is SpanKind.INTERNAL and hit.kind is SpanKind.INTERNAL
    assert [(s.attributes or {})["llm_cache.result"] for s in (miss, hit)] == ["miss", "hit"]
    assert (miss.attributes or {})["gen_ai.usage.input_tokens"] == 20
    assert (hit.attributes or {})["llm_cache.saved.input_tokens"] == 20
    assert "server.address" not in (miss.attributes or {})  # the wrapped app is not the GenAI server
    assert recorded.children(miss) == ["llm_cache.lookup", "llm_cache.store"]


async def test_nothing_a_caller_writes_puts_a_control_character_in_a_log_line_or_a_span(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    """Paths and model names are the caller's text: a log line, a span name or a span attribute quotes
    them with their control characters escaped, and briefly (stop sequences are kept as written, but at
    most 8 of 128 characters). Before, a path `%0d%0a`-encoded in an Azure deployment put a forged line
    into the WARNING about a request the cache could not scope (the ASGI server hands the path decoded),
    a model its bytes into DEBUG lines and span names, and a span kept every stop sequence whole."""
    from llm_cache.middleware._asgi import CacheMiddleware

    async def provider(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        body = orjson.dumps(chat_completion())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    forged = "\r\n2026-01-01 CRITICAL forged \x1b[31mline\u2028"
    transport = httpx2.ASGITransport(app=CacheMiddleware(provider, Cache(telemetry=recorded.telemetry)))
    with caplog.at_level(logging.DEBUG, logger="llm_cache.middleware"):
        async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
            azure = "/openai/deployments/prod" + quote(forged) + "/chat/completions"  # decoded by the server
            twice = [("api-key", "a"), ("api-key", "b")]  # unscoped: a WARNING naming the path
            body = {"model": "gpt-4o", "messages": QUESTION}
            assert (await client.post(azure, json=body, headers=twice)).headers["x-cache"] == "BYPASS"
            body = {"model": "gpt-4o" + forged, "messages": QUESTION, "stop": [forged * 100] * 20}
            for _ in range(2):
                await client.post("/v1/chat/completions", json=body, headers=AUTHORIZED)

    messages = [record.getMessage() for record in caplog.records if record.name == "llm_cache.middleware"]
    assert any("not caching a request to /openai/deployments/prod" in message for message in messages)
    assert any(message.startswith("CACHE HIT") for message in messages)
    texts = messages + [span.name for span in recorded.finished()]
    for span in recorded.finished():
        attributes = dict(span.attributes or {})
        stops = attributes.pop("gen_ai.request.stop_sequences", ())  # (as written, line breaks too: not a log line)
        assert len(stops) <= 8 and all(len(stop) <= 128 for stop in stops)
        texts += [value for value in attributes.values() if isinstance(value, str)]
    assert texts and all(text.isprintable() for text in texts), [t for t in texts if not t.isprintable()]


async def test_a_moderation_call_is_named_the_moderation_operation(recorded: Recorded) -> None:
    moderation = {"id": "modr-1", "model": "omni-moderation-latest", "results": [{"flagged": False}]}
    client = async_openai(Cache(telemetry=recorded.telemetry), Upstream(moderation))
    for _ in range(2):
        await client.moderations.with_raw_response.create(model="omni-moderation-latest", input="Is this fine?")
    miss, hit = recorded.calls()
    for span in (miss, hit):
        assert span.name == "moderation omni-moderation-latest"
        assert (span.attributes or {})["gen_ai.operation.name"] == "moderation"


async def test_an_answers_model_is_kept_as_briefly_and_printably_as_the_requests() -> None:
    """`gen_ai.response.model` comes from the answer, and a lenient upstream echoes the request's model:
    the caller's text again. The request's model was cut to `MAX_MODEL_CHARS` and escaped, the answer's
    went whole, control characters and all, into metric labels (kept for the process's life, `MAX_MODELS`
    of them) and span attributes."""
    from llm_cache.middleware import telemetry as module
    from llm_cache.middleware._printable import printable

    rec = Recorded()
    client = async_openai(Cache(telemetry=rec.telemetry), EchoingUpstream())
    sent = [f"gpt-4o-{i}\r\n\x1b[31m" + "x" * 100_000 for i in range(3)]
    for model in sent:
        await ask(client, model=model)
    labels = [
        value
        for series in rec.metrics().values()
        for attributes in series
        for name, value in dict(attributes).items()
        if name.endswith(".model")
    ]
    labels += [
        value for span in rec.calls() for name, value in (span.attributes or {}).items() if name.endswith(".model")
    ]
    assert len(labels) > 6 and all(isinstance(v, str) and v.isprintable() for v in labels), labels[:3]
    assert max(len(v) for v in labels) <= max(len(printable(model, module.MAX_MODEL_CHARS)) for model in sent)
