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


def test_a_password_in_an_api_base_reaches_no_span_metric_or_log_line(fakes, make_router, caplog):
    """A deployment without an id of its own is named `family:model@api_base`, in every attempt's span,
    the attempt, latency and cooldown metrics and the cooldown log line: an `api_base` with a password in
    its user info (a basic-auth proxy in front of a self-hosted model) put the password in all of them.
    The name masks it, as `check-config` does."""
    import logging

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    fakes["a"].fail(("status", 500, None, None))
    base = fakes["a"].url.replace("http://", "http://proxy-user:pw-secret@") + "/v1"
    one = {"model": "real-model", "api_base": base, "api_key": "key-a"}
    cfg = {"groups": {"gpt": {"deployments": [one]}}, "settings": {"num_retries": 1, "backoff_initial": 0}}
    router = make_router(cfg, tracer_provider=tp, meter_provider=mp)
    with (
        caplog.at_level(logging.INFO, logger="llm_cache.router"),
        httpx2.Client(transport=RouterTransport(router)) as c,
    ):
        resp = c.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt", "messages": []})
    assert resp.status_code == 200
    assert fakes["a"].count == 2  # a failed attempt (cooled down) and a retry
    named = [str(s.attributes["router.deployment"]) for s in exporter.get_finished_spans()]
    named += [str(dict(p.attributes)) for points in metric_points(reader).values() for p in points]
    named += [record.getMessage() for record in caplog.records]
    named += [resp.headers["x-router-deployment"]]
    assert named and not any("pw-secret" in text for text in named), named
    assert "proxy-user:****@" in named[0]
