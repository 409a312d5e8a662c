"""A span per attempt; metrics for attempts, retries, fallbacks, cooldowns and latency."""

from __future__ import annotations

import httpx2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_cache.router import RouterTransport

from .conftest import dep


def metric_points(reader: InMemoryMetricReader) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = list(m.data.data_points)
    return out


def test_spans_and_metrics(fakes, make_router):
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    fakes["a"].fail(("status", 500, None, None), ("status", 429, {"retry-after": "30"}, None))
    cfg = {
        "groups": {"gpt": {"deployments": [dep(fakes["a"])]}, "backup": {"deployments": [dep(fakes["b"])]}},
        "settings": {"num_retries": 1, "backoff_initial": 0, "fallbacks": [{"gpt": ["backup"]}]},
    }
    router = make_router(cfg, tracer_provider=tp, meter_provider=mp)
    with httpx2.Client(transport=RouterTransport(router)) as c:
        resp = c.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt", "messages": []})
    assert resp.status_code == 200

    spans = exporter.get_finished_spans()
    assert [
        (s.attributes["router.deployment"], s.attributes["router.attempt"], s.attributes["router.outcome"])
        for s in spans
    ] == [("a", 1, "server_error"), ("a", 2, "rate_limit"), ("b", 3, "ok")]
    assert all(s.name == "router.attempt" for s in spans)
    assert spans[0].attributes["http.response.status_code"] == 500

    points = metric_points(reader)
    assert sum(p.value for p in points["router.attempts"]) == 3
    assert sum(p.value for p in points["router.retries"]) == 2
    fb = points["router.fallbacks"]
    assert [(dict(p.attributes)["from"], dict(p.attributes)["to"]) for p in fb] == [("gpt", "backup")]
    assert [dict(p.attributes)["deployment"] for p in points["router.cooldowns"]] == ["a"]
    assert sum(p.count for p in points["router.latency"]) == 3
