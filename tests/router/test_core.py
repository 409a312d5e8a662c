"""Router behaviour against real local fake providers: retries, fallbacks, cooldowns, affinity, streams."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_cache.router import STREAM_FAILED, Router, RouterTransport
from llm_cache.router._core import Send, Sent, Sleep

from .conftest import dep
from .test_hostile_bodies import nested, parse_limit
from .test_telemetry import metric_points

SETTINGS = {"backoff_initial": 0.5, "backoff_jitter": 0.0, "timeout": 5.0}


def client(router: Any, timeout: float = 10) -> httpx2.Client:
    return httpx2.Client(transport=RouterTransport(router), base_url="https://api.openai.com/v1", timeout=timeout)


def chat(router: Any, model: str = "gpt", timeout: float = 10, **extra: Any) -> httpx2.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    with client(router, timeout) as c:
        return c.post("/chat/completions", json=body, headers={"authorization": "Bearer caller"})


def one_group(*deps: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"groups": {"gpt": {"deployments": list(deps)}}, "settings": {**SETTINGS, **settings}}


# ----------------------------------------------------------------------------- retries


def test_retries_as_configured_and_no_more(fakes, make_router, clock):
    a = fakes["a"].fail(*[("status", 500, None, None)] * 10)
    router = make_router(one_group(dep(a), num_retries=3, allowed_fails=10))
    resp = chat(router)
    assert resp.status_code == 500
    assert a.count == 4  # 1 try + 3 retries, not one more
    assert resp.headers["x-router-attempts"] == "4"
    assert clock.sleeps == [0.5, 1.0, 2.0]  # exponential backoff (jitter 0 here)


def test_success_after_retries_rewrites_model_url_and_auth(fakes, make_router):
    a = fakes["a"].fail(("status", 503, None, None), ("status", 502, None, None))
    router = make_router(one_group(dep(a, model="gpt-4o-mini-2024"), num_retries=2))
    resp = chat(router)
    assert resp.status_code == 200
    assert resp.headers["x-router-deployment"] == "a"
    assert resp.headers["x-router-attempts"] == "3"
    seen = a.seen[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "gpt-4o-mini-2024"
    assert seen.headers["authorization"] == "Bearer key-a"


@pytest.mark.parametrize("code", [400, 401, 403])
def test_client_errors_are_never_retried(fakes, make_router, clock, code):
    """With the caller's own key (keyless deployments): a 401/403 on the deployment's key fails over
    (`test_callers.py::test_a_deployment_whose_own_key_is_refused_fails_over_to_a_sibling_at_once`)."""
    a = fakes["a"].fail(("status", code, None, None))
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0, api_key=None), dep(b, order=1, api_key=None), num_retries=3))
    resp = chat(router)
    assert resp.status_code == code
    assert (a.count, b.count) == (1, 0)
    assert clock.sleeps == []


def test_retry_after_is_honoured(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 429, {"retry-after": "7"}, None))
    router = make_router(one_group(dep(a), num_retries=1))
    assert chat(router).status_code == 200
    assert clock.sleeps == [7.0]
    assert a.count == 2


def test_retry_after_ms_is_honoured(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 429, {"retry-after-ms": "1500"}, None))
    router = make_router(one_group(dep(a), num_retries=1))
    assert chat(router).status_code == 200
    assert clock.sleeps == [1.5]


def test_retry_after_beyond_cap_fails_over_instead_of_sleeping(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 429, {"retry-after": "3600"}, None))
    b = fakes["b"]
    cfg = {
        "groups": {"gpt": {"deployments": [dep(a)]}, "backup": {"deployments": [dep(b)]}},
        "settings": {
            **SETTINGS,
            "num_retries": 3,
            "retry_after_max": 60,
            "cooldown_max": 7200,
            "fallbacks": [{"gpt": ["backup"]}],
        },
    }
    router = make_router(cfg)
    resp = chat(router)
    assert resp.status_code == 200
    assert resp.headers["x-router-deployment"] == "b"
    assert (a.count, b.count) == (1, 1)
    assert clock.sleeps == []
    assert router.deployment_state("a").breaker.retry_in() == pytest.approx(3600)


def test_long_retry_after_moves_to_a_sibling_before_failing_over(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 429, {"retry-after": "3600"}, None))
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=1))
    resp = chat(router)
    assert resp.headers["x-router-deployment"] == "b"
    assert clock.sleeps == []
    assert router.deployment_state("a").breaker.retry_in() == pytest.approx(300)  # cooldown_max


def test_a_retry_after_at_the_cap_is_still_waited_for(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 429, {"retry-after": "60"}, None))
    router = make_router(one_group(dep(a), num_retries=1, retry_after_max=60))
    assert chat(router, timeout=120).status_code == 200  # a caller that waits that long
    assert (clock.sleeps, a.count) == ([60.0], 2)


def test_a_server_errors_retry_after_counts_as_one_failure_not_a_cooldown(fakes, make_router):
    a = fakes["a"].fail(("status", 503, {"retry-after": "20"}, None))
    router = make_router(one_group(dep(a), num_retries=0, allowed_fails=2))
    assert chat(router).status_code == 503
    breaker = router.deployment_state("a").breaker
    assert (breaker.state, len(breaker.failures)) == ("closed", 1)  # only a 429's Retry-After cools at once


def test_429_with_retry_after_switches_deployment_without_waiting(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 429, {"retry-after": "20"}, None))
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=1))
    resp = chat(router)
    assert resp.headers["x-router-deployment"] == "b"
    assert clock.sleeps == []
    # a is cooling for exactly Retry-After
    assert router.deployment_state("a").breaker.state == "open"
    clock.advance(20)
    assert router.deployment_state("a").breaker.available()


def test_timeout_is_retried_on_another_deployment(fakes, make_router):
    a = fakes["a"].fail("hang")
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=1, timeout=0.3))
    resp = chat(router)
    assert resp.status_code == 200
    assert resp.headers["x-router-deployment"] == "b"
    assert resp.headers["x-router-attempts"] == "2"


def test_connection_refused_is_retried_elsewhere_and_held_against_the_deployment(fakes, make_router, dead_url):
    b = fakes["b"]
    router = make_router(one_group(dep(dead_url, id="dead", order=0), dep(b, order=1), num_retries=1))
    resp = chat(router)
    assert resp.headers["x-router-deployment"] == "b"
    assert len(router.deployment_state("dead").breaker.failures) == 1  # one failure of its allowed_fails


def test_connection_refused_everywhere_raises_connect_error(make_router, dead_url):
    router = make_router(one_group(dep(dead_url, id="dead"), num_retries=1))
    with pytest.raises(httpx2.ConnectError):
        chat(router)


def test_total_deadline_stops_retrying(fakes, make_router, clock):
    a = fakes["a"].fail(*[("status", 500, None, None)] * 10)
    router = make_router(one_group(dep(a), num_retries=10, deadline=2.0, allowed_fails=10))
    assert chat(router).status_code == 500
    # waits 0.5 then 1.0 (t=1.5); the next 2.0 wait would end past the deadline
    assert clock.sleeps == [0.5, 1.0]
    assert a.count == 3


# ----------------------------------------------------------------------------- fallbacks


def test_fallbacks_follow_the_order(fakes, make_router):
    a = fakes["a"].fail(*[("status", 500, None, None)] * 3)
    b = fakes["b"].fail(*[("status", 503, None, None)] * 3)
    c = fakes["c"]
    cfg = {
        "groups": {g: {"deployments": [dep(f)]} for g, f in (("gpt", a), ("second", b), ("third", c))},
        "settings": {**SETTINGS, "num_retries": 1, "fallbacks": [{"gpt": ["second", "third"]}]},
    }
    router = make_router(cfg)
    resp = chat(router)
    assert resp.status_code == 200
    assert resp.headers["x-router-deployment"] == "c"
    assert (a.count, b.count, c.count) == (2, 2, 1)
    assert c.seen[0].body["model"] == "real-model"


def test_context_window_fallback(fakes, make_router, clock):
    a = fakes["a"].fail("context_length")
    b, c = fakes["b"], fakes["c"]
    cfg = {
        "groups": {
            "gpt": {"deployments": [dep(a)]},
            "big": {"deployments": [dep(c, model="gpt-big")]},
            "other": {"deployments": [dep(b)]},
        },
        "settings": {**SETTINGS, "fallbacks": [{"gpt": ["other"]}], "context_window_fallbacks": [{"gpt": ["big"]}]},
    }
    resp = chat(make_router(cfg))
    assert resp.headers["x-router-deployment"] == "c"
    assert (a.count, b.count, c.count) == (1, 0, 1)
    assert clock.sleeps == []  # not retried: the same prompt would not fit on a retry


def test_content_policy_fallback(fakes, make_router):
    a = fakes["a"].fail("content_policy")
    b = fakes["b"]
    cfg = {
        "groups": {"gpt": {"deployments": [dep(a)]}, "lenient": {"deployments": [dep(b)]}},
        "settings": {**SETTINGS, "content_policy_fallbacks": [{"gpt": ["lenient"]}]},
    }
    resp = chat(make_router(cfg))
    assert resp.headers["x-router-deployment"] == "b"


def test_default_fallbacks(fakes, make_router, caplog):
    a = fakes["a"].fail(*[("status", 500, None, None)] * 2)
    b = fakes["b"]
    cfg = {
        "groups": {"gpt": {"deployments": [dep(a)]}, "safety-net": {"deployments": [dep(b)]}},
        "settings": {**SETTINGS, "num_retries": 1, "default_fallbacks": ["safety-net"]},
    }
    with caplog.at_level(logging.INFO, logger="llm_cache.router"):
        assert chat(make_router(cfg)).headers["x-router-deployment"] == "b"
    assert "router: falling back from gpt to safety-net (default)" in caplog.messages


def test_a_wildcard_fallback_serves_every_group_without_its_own(fakes, make_router):
    a = fakes["a"].fail(("status", 500, None, None))
    b, c = fakes["b"], fakes["c"]
    cfg = {
        "groups": {g: {"deployments": [dep(f)]} for g, f in (("gpt", a), ("backup", b), ("safety-net", c))},
        "settings": {
            **SETTINGS,
            "num_retries": 0,
            "fallbacks": [{"*": ["backup"]}],
            "default_fallbacks": ["safety-net"],
        },
    }
    resp = chat(make_router(cfg))
    assert (resp.headers["x-router-deployment"], resp.headers["x-router-fallback-from"]) == ("b", "gpt")
    assert (a.count, b.count, c.count) == (1, 1, 0)


@pytest.mark.parametrize("fault", ["context_length", "content_policy"])
def test_default_fallbacks_do_not_take_a_prompt_too_long_or_refused(fakes, make_router, fault):
    a, b = fakes["a"].fail(fault), fakes["b"]
    cfg = {
        "groups": {"gpt": {"deployments": [dep(a)]}, "safety-net": {"deployments": [dep(b)]}},
        "settings": {**SETTINGS, "default_fallbacks": ["safety-net"]},
    }
    resp = chat(make_router(cfg))
    assert resp.headers["x-router-deployment"] == "a"
    assert (a.count, b.count) == (1, 0)


def test_an_azure_deployment_speaks_the_openai_api_natively(fakes, make_router):
    a = fakes["a"]
    router = make_router(one_group(dep(a, model="prod-4o", family="azure", api_version="2024-10-21")))
    resp = chat(router)
    assert (resp.status_code, resp.headers["x-router-family"]) == (200, "azure")
    assert a.seen[-1].path == "/v1/openai/deployments/prod-4o/chat/completions"


def test_a_body_that_is_not_json_is_never_translated_for_another_family(fakes, make_router):
    claude = fakes["claude"]
    router = make_router({"groups": {"gpt": {"deployments": [dep(claude, family="anthropic")]}}, "settings": SETTINGS})
    with client(router) as c:  # an Azure path names the model, so the request is routed without a body to read
        resp = c.post("/openai/deployments/gpt/chat/completions", content=b"hi", headers={"content-type": "text/plain"})
    assert (resp.status_code, resp.headers["x-router-error"]) == (400, "router_no_compatible_deployment")
    assert claude.count == 0


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        ({}, 400, "The request names no model; the router needs one."),
        ({"model": "nope"}, 404, "The model 'nope' does not exist here; models served: ['backup', 'gpt']."),
    ],
)
def test_a_refusing_router_says_the_model_is_missing_or_which_it_serves(fakes, make_router, extra, status, message):
    groups = {"gpt": {"deployments": [dep(fakes["a"])]}, "backup": {"deployments": [dep(fakes["b"])]}}
    router = make_router({"groups": groups, "settings": {**SETTINGS, "unknown_models": "refuse"}})
    with client(router) as c:
        resp = c.post("/chat/completions", json={"messages": [], **extra})
    assert (resp.status_code, resp.json()["error"]["message"]) == (status, message)
    assert fakes["a"].count == fakes["b"].count == 0


def test_unknown_model_passes_through_unchanged(fakes, make_router):
    a = fakes["a"]
    router = make_router(one_group(dep(a)))
    with httpx2.Client(transport=RouterTransport(router), base_url=f"{a.url}/v1") as c:
        resp = c.post("/chat/completions", json={"model": "not-routed", "messages": []})
    assert resp.status_code == 200
    assert a.seen[0].body["model"] == "not-routed"
    assert "x-router-deployment" not in resp.headers


# ----------------------------------------------------------------------------- cooldowns


def test_cooldown_removes_a_failing_deployment_and_half_open_brings_it_back(fakes, make_router, clock):
    a, b = fakes["a"], fakes["b"]
    a.fail(*[("status", 500, None, None)] * 2)
    router = make_router(
        one_group(
            dep(a, order=0),
            dep(b, order=1),
            num_retries=0,
            allowed_fails=2,
            allowed_fails_window=60,
            cooldown_time=30,
        )
    )
    assert chat(router).status_code == 500  # a fails once (no retries, no fallbacks)
    assert chat(router).status_code == 500  # a fails twice: allowed_fails reached → cooling
    assert router.deployment_state("a").breaker.state == "open"
    for _ in range(3):  # a (order 0, preferred) is skipped while cooling
        assert chat(router).headers["x-router-deployment"] == "b"
    assert a.count == 2
    clock.advance(30)
    assert router.deployment_state("a").breaker.state == "half_open"
    assert chat(router).headers["x-router-deployment"] == "a"  # the probe succeeds...
    assert router.deployment_state("a").breaker.state == "closed"  # ...and closes the breaker
    assert chat(router).headers["x-router-deployment"] == "a"


def test_a_deployment_starting_to_cool_down_says_so_in_the_log_with_how_long(fakes, make_router, caplog):
    a = fakes["a"].fail(("status", 429, {"retry-after": "20"}, None))
    router = make_router(one_group(dep(a), num_retries=0))
    with caplog.at_level(logging.INFO, logger="llm_cache.router"):
        assert chat(router).status_code == 429
    assert "router: deployment a cooling down for 20.0s" in caplog.messages


def test_a_probe_answered_with_a_client_error_closes_the_breaker(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 400, None, None))
    router = make_router(one_group(dep(a), num_retries=0))
    breaker = router.deployment_state("a").breaker
    breaker.record_failure(10.0)
    clock.advance(10.0)
    assert chat(router).status_code == 400  # the caller's mistake; the deployment answered
    assert (breaker.state, breaker.probing) == ("closed", False)


def test_failed_probe_cools_down_again(fakes, make_router, clock):
    a, b = fakes["a"], fakes["b"]
    a.fail(*[("status", 500, None, None)] * 3)
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=0, allowed_fails=2, cooldown_time=30))
    chat(router), chat(router)
    clock.advance(30)
    assert chat(router).status_code == 500  # the probe fails
    assert router.deployment_state("a").breaker.state == "open"
    assert chat(router).headers["x-router-deployment"] == "b"


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [({"retry-after": "45"}, 45), ({"retry-after-ms": "200"}, 1)],  # never sooner than a second
)
def test_all_deployments_cooling_gives_a_clear_503(fakes, make_router, clock, retry_after, seconds):
    a = fakes["a"].fail(("status", 429, retry_after, None))
    router = make_router(one_group(dep(a), num_retries=0))
    assert chat(router).status_code == 429
    resp = chat(router)
    assert resp.status_code == 503
    assert (resp.headers["retry-after"], resp.headers["x-router-error"]) == (str(seconds), "all_deployments_cooling")
    assert resp.headers["x-router-attempts"] == "0"  # nothing was sent
    err = resp.json()["error"]
    assert err["code"] == "all_deployments_cooling" and f"{seconds}s" in err["message"]
    assert (err["type"], err["retry_after_s"]) == ("router_error", seconds)
    assert a.count == 1


def test_an_answer_names_the_group_model_and_family_that_served_it(fakes, make_router):
    router = make_router(one_group(dep(fakes["a"], model="gpt-4o-mini-2024")))
    resp = chat(router)
    assert resp.status_code == 200
    assert (resp.headers["x-router-group"], resp.headers["x-router-model"]) == ("gpt", "gpt-4o-mini-2024")
    assert resp.headers["x-router-family"] == "openai" and "x-router-fallback-from" not in resp.headers


# ----------------------------------------------------------------------------- affinity


def test_affinity_keeps_a_shared_prefix_on_one_deployment(fakes, make_router):
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    router = make_router(one_group(dep(a), dep(b), dep(c)))
    system = {"role": "system", "content": "You are a very long cacheable system prompt. " * 50}
    served = set()
    for i in range(12):
        messages = [system, {"role": "user", "content": f"question {i}"}]
        served.add(chat(router, messages=messages).headers["x-router-deployment"])
    assert len(served) == 1
    # without a shared prefix the same router spreads load
    spread = {
        chat(router, messages=[{"role": "user", "content": f"q{i}"}]).headers["x-router-deployment"] for i in range(30)
    }
    assert len(spread) == 3


def test_with_affinity_off_a_strategy_is_given_no_affinity_key_and_none_is_remembered(fakes, make_router):
    keys: list[str | None] = []

    def first(cands: list[Any], ctx: Any) -> list[Any]:
        keys.append(ctx.affinity_key)
        return cands

    router = make_router(one_group(dep(fakes["a"]), affinity=False), strategies={"gpt": first})
    messages = [{"role": "system", "content": "shared"}, {"role": "user", "content": "x"}]
    assert chat(router, messages=messages).status_code == 200
    assert keys == [None] and router.affinity._entries == {}


def test_affinity_yields_to_health(fakes, make_router):
    a, b = fakes["a"], fakes["b"]
    router = make_router(one_group(dep(a), dep(b), num_retries=1, allowed_fails=1, cooldown_time=60))
    body = {"messages": [{"role": "system", "content": "shared"}, {"role": "user", "content": "x"}]}
    first = chat(router, **body).headers["x-router-deployment"]
    pinned = fakes[first]
    other = "b" if first == "a" else "a"
    pinned.fail(("status", 500, None, None))
    resp = chat(router, **body)
    assert resp.headers["x-router-deployment"] == other
    assert chat(router, **body).headers["x-router-deployment"] == other  # re-pinned while first cools


# ----------------------------------------------------------------------------- streams


def stream_text(resp: httpx2.Response) -> str:
    return "".join(line for line in resp.iter_lines())


def test_stream_failing_before_first_byte_falls_back(fakes, make_router):
    a = fakes["a"].fail("prestream")
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=1))
    with (
        client(router) as c,
        c.stream("POST", "/chat/completions", json={"model": "gpt", "stream": True, "messages": []}) as resp,
    ):
        assert resp.headers["x-router-deployment"] == "b"
        text = stream_text(resp)
    assert "hello from b" in text and "[DONE]" in text
    assert (a.count, b.count) == (1, 1)


def test_stream_error_status_before_first_byte_falls_back(fakes, make_router):
    a = fakes["a"].fail(("status", 500, None, None))
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=1))
    with (
        client(router) as c,
        c.stream("POST", "/chat/completions", json={"model": "gpt", "stream": True, "messages": []}) as resp,
    ):
        assert resp.status_code == 200
        assert "[DONE]" in stream_text(resp)


def test_stream_failing_after_first_byte_does_not_fall_back(fakes, make_router, caplog):
    a = fakes["a"].fail("midstream")
    b = fakes["b"]
    router = make_router(one_group(dep(a, order=0), dep(b, order=1), num_retries=3))
    got: list[str] = []
    with (
        client(router) as c,
        c.stream("POST", "/chat/completions", json={"model": "gpt", "stream": True, "messages": []}) as resp,
    ):
        assert resp.headers["x-router-deployment"] == "a"
        with caplog.at_level(logging.WARNING, "llm_cache.router"), pytest.raises(httpx2.RemoteProtocolError):
            for line in resp.iter_lines():
                got.append(line)
        assert resp.extensions[STREAM_FAILED] is True  # a cache in front must not store this
    assert any("hello from a" in g for g in got)
    assert not any("[DONE]" in g for g in got)
    assert (a.count, b.count) == (1, 0)
    assert router.deployment_state("a").in_flight == 0
    assert "failed after its first byte" in caplog.text


# ----------------------------------------------------------------------------- misc


def test_retry_stacking_is_detected_and_warned_once(fakes, make_router, caplog):
    router = make_router(one_group(dep(fakes["a"])))
    with caplog.at_level(logging.WARNING, "llm_cache.router"), client(router) as c:
        for _ in range(3):
            c.post("/chat/completions", json={"model": "gpt", "messages": []}, headers={"x-stainless-retry-count": "1"})
    assert [record.name for record in caplog.records if "max_retries=0" in record.getMessage()] == ["llm_cache.router"]


async def test_async_path_with_async_sleep(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 500, None, None))
    router = make_router(one_group(dep(a), num_retries=2))
    async with httpx2.AsyncClient(transport=RouterTransport(router), base_url="https://x/v1") as c:
        resp = await c.post("/chat/completions", json={"model": "gpt", "messages": []})
    assert resp.status_code == 200
    assert clock.sleeps == [0.5]


async def test_router_send_python_api(fakes, make_router):
    router = make_router(one_group(dep(fakes["b"])))
    req = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", json={"model": "gpt", "messages": []})
    resp = await router.send(req)
    await resp.aread()
    assert resp.status_code == 200 and resp.json()["model"] == "real-model"
    resp2 = router.send_sync(
        httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", json={"model": "gpt", "messages": []})
    )
    resp2.read()
    assert resp2.headers["x-router-deployment"] == "b"
    await router.aclose()
    assert router._default_transports == {}


def test_least_busy_counts_open_streams_in_flight(fakes, make_router):
    a, b = fakes["a"], fakes["b"]
    router = make_router(one_group(dep(a), dep(b), routing_strategy="least-busy", affinity=False))
    body = {"model": "gpt", "stream": True, "messages": []}
    with client(router) as c, c.stream("POST", "/chat/completions", json=body) as first:
        busy = first.headers["x-router-deployment"]
        assert router.deployment_state(busy).in_flight == 1
        # while the first stream is open, the next requests go to the idle deployment
        for _ in range(4):
            assert chat(router).headers["x-router-deployment"] != busy
        first.read()
    assert router.deployment_state(busy).in_flight == 0


async def test_a_router_given_no_async_sleep_waits_between_async_attempts_on_the_event_loop(fakes):
    a = fakes["a"].fail(("status", 500, None, None))
    router = Router(one_group(dep(a), num_retries=1, backoff_initial=0.01), rng=random.Random(7))
    async with httpx2.AsyncClient(transport=RouterTransport(router), base_url="https://x/v1") as c:
        resp = await c.post("/chat/completions", json={"model": "gpt", "messages": []})
    assert (resp.status_code, resp.headers["x-router-attempts"], a.count) == (200, "2", 2)


def test_close_closes_the_sync_transports_send_sync_opened(fakes, make_router):
    router = make_router(one_group(dep(fakes["a"])))
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", json={"model": "gpt"})
    router.send_sync(request).read()
    assert list(router._default_transports) == [("httpx2", False, os.getpid())]
    router.close()
    assert router._default_transports == {}


def test_a_group_is_found_by_its_name(make_router):
    router = make_router({"groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}})
    assert [d.id for d in router.group("gpt").deployments] == ["a"]
    with pytest.raises(KeyError):
        router.group("other")


def test_an_attempt_counts_in_its_deployments_usage_and_a_success_in_its_latency(fakes, make_router):
    """On the real clock: a fake one stands still while the request is out, and a time of 0 is no sample."""
    a = fakes["a"].fail(("status", 500, None, None))
    router = make_router(one_group(dep(a), num_retries=1, allowed_fails=10), clock=time.monotonic)
    state = router.deployment_state("a")
    assert (state.window_usage(), state.latency) == ((0, 0), None)
    assert chat(router).status_code == 200
    requests, tokens = state.window_usage()
    assert requests == 2 and tokens > 0  # the failed try counts too: it used the quota
    assert state.latency is not None


def test_max_parallel_requests_is_respected(fakes, make_router):
    a, b = fakes["a"], fakes["b"]
    router = make_router(one_group(dep(a, order=0, max_parallel_requests=1), dep(b, order=0, weight=0.0001)))
    body = {"model": "gpt", "stream": True, "messages": []}
    with client(router) as c, c.stream("POST", "/chat/completions", json=body) as first:
        assert first.headers["x-router-deployment"] == "a"
        assert chat(router).headers["x-router-deployment"] == "b"  # a is at its limit
        first.read()
    assert chat(router).headers["x-router-deployment"] == "a"


# ----------------------------------------------------------------------------- reading a request


def prepared(make_router: Any, path: str, body: bytes, **headers: str) -> Any:
    router = make_router(one_group(dep("http://a.test/v1")))
    request = httpx2.Request("POST", f"https://api.example{path}", content=body, headers=headers)
    return router.prepare(httpx2, request, body)


@pytest.mark.parametrize(
    ("content_type", "body", "read"),
    [
        ("application/json", b'{"model":"m"}', True),
        ("text/plain", b'{"model":"m"}', True),  # a JSON object, whatever the label
        ("application/json", b' {"model":"m"}', True),
        ("text/plain", b' {"model":"m"}', False),
        ("application/json", b"", False),
    ],
)
def test_a_body_is_read_as_json_when_labelled_so_or_when_it_opens_an_object(
    make_router: Any, content_type: str, body: bytes, read: bool
) -> None:
    p = prepared(make_router, "/v1/chat/completions", body, **{"content-type": content_type})
    assert (p.model == "m") is read


@pytest.mark.parametrize(
    ("path", "model", "api", "stream"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-flash", "gemini", False),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini-2.5-flash", "gemini", True),
        ("/openai/deployments/prod-4o/chat/completions", "prod-4o", "openai", False),
        ("/v1/messages", None, "anthropic", False),
        ("/v1/messages/count_tokens/", None, "anthropic", False),
        ("/v1/chat/completions", None, "openai", False),
        ("/v1/models/gpt-4o", "gpt-4o", "openai", False),  # a model's own resource
        ("/v1/models/", None, "openai", False),  # no model named after /models/
        ("/v1/models/ft:gpt-4o-mini:acme::abc123", "ft:gpt-4o-mini:acme::abc123", "openai", False),  # fine-tuned
        ("/v1/models/hf.co/acme/llama-3:latest", "hf.co/acme/llama-3:latest", "openai", False),  # a tag stays
        ("/v1/models/llama3:latest", "llama3:latest", "openai", False),  # a tag, not a Gemini method
        ("/v1/publishers/google/models/imagen-3:predict", "imagen-3", "gemini", False),  # Vertex's predict
        ("/v1/models/acme/models/m", "acme/models/m", "openai", False),  # all after the first /models/
        ("/v1beta/models/gemini-2.5-flash:countTokens", "gemini-2.5-flash", "gemini", False),  # any Gemini method
    ],
)
def test_the_model_wire_format_and_stream_are_read_from_the_path_when_the_body_has_none(
    make_router: Any, path: str, model: str | None, api: str, stream: bool
) -> None:
    p = prepared(make_router, path, b'{"messages":[]}', **{"content-type": "application/json"})
    assert (p.model, p.api, p.stream) == (model, api, stream)


def test_the_body_names_the_model_and_asks_for_the_stream(make_router: Any) -> None:
    body = b'{"model":"gpt","stream":true}'
    p = prepared(make_router, "/openai/deployments/prod-4o/chat/completions", body)
    assert (p.model, p.stream) == ("gpt", True)
    assert prepared(make_router, "/v1/chat/completions", b'{"model":5,"stream":1}').model is None


@pytest.mark.parametrize(
    ("body", "asked"),
    [
        (b'{"model":"m"}', 0),
        (b'{"model":"m","max_tokens":100}', 100),
        (b'{"model":"m","max_completion_tokens":100}', 100),
        (b'{"model":"m","max_tokens":true}', 0),
        (b'{"model":"m","max_tokens":-5}', 0),
        (b'{"model":"m","max_tokens":7.9}', 7),
        (b'{"model":"m","max_tokens":-2.5}', 0),
        (b'{"model":"m","max_completion_tokens":true}', 0),
    ],
)
def test_the_token_estimate_is_a_quarter_of_the_body_plus_the_tokens_asked_for(
    make_router: Any, body: bytes, asked: int
) -> None:
    assert prepared(make_router, "/v1/chat/completions", body).est_tokens == len(body) // 4 + asked


@pytest.mark.parametrize(
    ("headers", "stacking"),
    [
        ({}, False),
        ({"x-stainless-retry-count": "0"}, False),
        ({"x-stainless-retry-count": " "}, False),
        ({"x-stainless-retry-count": "1"}, True),
        ({"x-retry-count": "2"}, True),
        ({"x-retry-attempt": "1"}, True),
    ],
)
def test_a_client_retrying_on_its_own_is_noticed(make_router: Any, headers: dict[str, str], stacking: bool) -> None:
    assert prepared(make_router, "/v1/chat/completions", b'{"model":"m"}', **headers).stacking is stacking


def test_the_state_of_a_deployment_the_router_does_not_have_is_a_key_error(make_router: Any) -> None:
    router = make_router(one_group(dep("http://a.test/v1", id="a")))
    assert router.deployment_state("a").id == "a"
    with pytest.raises(KeyError):
        router.deployment_state("b")


def test_a_failed_chain_answers_with_the_last_provider_that_spoke_not_a_cooling_503(fakes, make_router, caplog):
    a = fakes["a"].fail(("status", 500, None, None))
    b = fakes["b"].fail(("status", 429, {"retry-after": "45"}, None))
    cfg = {
        "groups": {"gpt": {"deployments": [dep(a)]}, "second": {"deployments": [dep(b)]}},
        "settings": {**SETTINGS, "num_retries": 0, "fallbacks": [{"gpt": ["second"]}]},
    }
    router = make_router(cfg)
    assert chat(router, model="second").status_code == 429  # b is cooling from now on
    with caplog.at_level(logging.INFO, logger="llm_cache.router"):
        resp = chat(router)
    assert resp.status_code == 500 and resp.headers["x-router-deployment"] == "a"
    assert (a.count, b.count) == (1, 1)
    assert "router: falling back from gpt to second (server_error)" in caplog.messages


# ----------------------------------------------------------------------------- the plan, driven by hand
#
# `Router.plan` is sans-I/O: these tests answer its `Send`s themselves, so the clock moves exactly as
# long as the test says a provider took.


def planned(router: Any, body: dict[str, Any] | bytes) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", content=raw)
    return router.plan(router.prepare(httpx2, request, raw))


def answer(status: int) -> Sent:
    body = json.dumps({"error": {"message": f"fake {status}", "type": "fake"}}).encode()
    return Sent(response=httpx2.Response(status, content=body), body=body)


@pytest.mark.parametrize("took", [2.0, 3.0])  # the whole budget, or more
def test_a_request_past_its_deadline_takes_no_fallback(make_router, clock, took):
    groups = {
        "gpt": {"deployments": [dep("http://a.test/v1", id="a")]},
        "backup": {"deployments": [dep("http://b.test/v1", id="b")]},
    }
    settings = {**SETTINGS, "num_retries": 3, "deadline": 2.0, "fallbacks": [{"gpt": ["backup"]}]}
    plan = planned(make_router({"groups": groups, "settings": settings}), {"model": "gpt"})
    assert plan.send(None).request.url.host == "a.test"
    clock.advance(took)  # the provider took the whole budget of 2 s
    with pytest.raises(StopIteration) as stop:
        plan.send(answer(500))
    final = stop.value.value
    assert (final.response.status_code, final.response.headers["x-router-deployment"]) == (500, "a")


RETRY_ONCE = {"num_retries": 1, "backoff_initial": 0.5, "backoff_jitter": 0.0}


USAGE = {
    "openai": lambda n: {"usage": {"prompt_tokens": 5, "completion_tokens": n}},
    "anthropic": lambda n: {"usage": {"input_tokens": 5, "output_tokens": n}},
    "gemini": lambda n: {"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": n}},
}


@pytest.mark.parametrize("family", USAGE)
def test_a_callers_long_completion_does_not_make_a_deployment_look_slow(make_router, clock, family):
    """The latency a non-streamed answer records is per output token (LiteLLM's rule): 1,000 tokens in
    10 s is as fast as 10 in 0.1 s, so a caller asking for long answers moves no one else's routing."""
    router = make_router({"groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}})
    for tokens in (10, 1000):
        plan = planned(router, {"model": "gpt"})
        plan.send(None)
        clock.advance(tokens * 0.01)
        body = json.dumps(USAGE[family](tokens)).encode()
        with pytest.raises(StopIteration):
            plan.send(Sent(response=httpx2.Response(200, content=body), body=body))
    assert router.deployment_state("a").latency == pytest.approx(0.01)


def serve_by_latency(router: Any, clock: Any, plans: int, took: Any) -> list[str]:
    """Drive ``plans`` non-streamed requests; ``took(host, n)`` gives (seconds, output tokens or None)."""
    picks = []
    for n in range(plans):
        plan = planned(router, {"model": "gpt"})
        host = plan.send(None).request.url.host
        seconds, tokens = took(host, n)
        clock.advance(seconds)
        body = json.dumps(USAGE["openai"](tokens) if tokens else {}).encode()
        with pytest.raises(StopIteration):
            plan.send(Sent(response=httpx2.Response(200, content=body), body=body))
        picks.append(host)
    return picks


def latency_router(make_router: Any) -> Any:
    groups = {"gpt": {"deployments": [dep("http://a.test/v1", id="a"), dep("http://b.test/v1", id="b")]}}
    settings = {"routing_strategy": "latency", "affinity": False}
    return make_router({"groups": groups, "settings": settings}, rng=random.Random(31))


def test_a_deployment_whose_answers_carry_no_usage_competes_fairly_with_one_whose_answers_do(make_router, clock):
    """Both answer 10 tokens in 0.1 s, but b never says so: its whole 0.1 s is not a per-token figure,
    and compared with a's 0.01 s per token it would look 10x slower and never be picked again."""
    router = latency_router(make_router)
    picks = serve_by_latency(router, clock, 60, lambda host, n: (0.1, 10 if host == "a.test" else None))
    assert {"a.test", "b.test"} <= set(picks[30:])


def test_one_stray_answer_without_usage_does_not_exile_a_deployment(make_router, clock):
    router = latency_router(make_router)
    strays = []

    def took(host: str, n: int) -> tuple[float, int | None]:
        if host == "b.test" and not strays:  # one answer without usage, its whole 1 s
            strays.append(n)
            return 1.0, None
        return 0.1, 10

    picks = serve_by_latency(router, clock, 60, took)
    assert strays and strays[0] < 30 and {"a.test", "b.test"} <= set(picks[30:])


def test_a_streams_latency_is_its_time_to_first_byte_kept_apart(make_router, clock):
    router = make_router({"groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}})
    plan = planned(router, {"model": "gpt", "stream": True})
    plan.send(None)
    clock.advance(0.4)
    with pytest.raises(StopIteration):
        plan.send(Sent(response=httpx2.Response(200, stream=httpx2.ByteStream(b"data: {}\n\n"))))
    state = router.deployment_state("a")
    assert state.ttft == pytest.approx(0.4) and state.latency is None


@pytest.mark.parametrize(
    ("deployment", "settings", "took", "seconds"),
    [
        ({"timeout": 7.0}, {"timeout": 5.0}, None, 7.0),  # the deployment's own timeout first
        ({}, {"timeout": 5.0}, None, 5.0),
        ({}, {"timeout": 5.0, "deadline": 20.0}, None, 5.0),
        ({}, {"timeout": 5.0, "deadline": 20.0}, 16.0, 3.5),  # never beyond what the deadline leaves
        ({}, {"deadline": 20.0}, 19.0, 0.5),  # the deadline alone bounds the attempt
    ],
)
def test_an_attempt_waits_no_longer_than_its_timeout_or_what_is_left_of_the_deadline(
    make_router, clock, deployment, settings, took, seconds
):
    groups = {"gpt": {"deployments": [dep("http://a.test/v1", id="a", **deployment)]}}
    router = make_router({"groups": groups, "settings": {**settings, **RETRY_ONCE}})
    plan = planned(router, {"model": "gpt"})
    send = plan.send(None)
    if took is not None:  # the first attempt took this long and failed; the retry follows a 0.5 s backoff
        clock.advance(took)
        clock.sleep(plan.send(answer(500)).seconds)
        send = plan.send(None)
    timeouts = send.request.extensions["timeout"]
    assert timeouts == {key: pytest.approx(seconds) for key in ("connect", "read", "write", "pool")}


def test_an_attempt_without_a_timeout_or_deadline_sets_none(make_router):
    plan = planned(
        make_router({"groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}}), {"model": "gpt"}
    )
    assert "timeout" not in plan.send(None).request.extensions


def test_an_attempt_records_how_long_it_waited_before_and_how_long_its_answer_took(make_router, clock):
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    groups = {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}
    router = make_router({"groups": groups, "settings": RETRY_ONCE}, tracer_provider=tracer)
    plan = planned(router, {"model": "gpt"})
    plan.send(None)
    clock.advance(4.0)
    clock.sleep(plan.send(answer(500)).seconds)
    plan.send(None)
    clock.advance(1.5)
    with pytest.raises(StopIteration):
        plan.send(Sent(response=httpx2.Response(200, content=b"{}"), body=b"{}"))
    assert [span.attributes["router.wait_s"] for span in exporter.get_finished_spans()] == [0.0, 0.5]
    state = router.deployment_state("a")  # a success's time to answer, whole (it reports no usage)
    assert (state.seconds, state.latency) == (1.5, None)  # the failure's is not kept


@pytest.mark.parametrize(
    ("cancelled_at", "outcomes", "retries"), [(1, ["cancelled"], 0), (2, ["server_error", "cancelled"], 1)]
)
def test_a_cancelled_attempt_is_recorded_as_such_with_the_time_it_ran_and_as_a_retry_if_it_was_one(
    make_router, clock, cancelled_at, outcomes, retries
):
    reader = InMemoryMetricReader()
    groups = {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}
    settings = {**SETTINGS, "num_retries": 3, "allowed_fails": 10}
    router = make_router(
        {"groups": groups, "settings": settings}, meter_provider=MeterProvider(metric_readers=[reader])
    )
    plan = planned(router, {"model": "gpt"})
    action = plan.send(None)
    for _ in range(cancelled_at - 1):  # the attempts before fail, and the plan sleeps before each retry
        assert isinstance(plan.send(answer(500)), Sleep)
        action = plan.send(None)
    assert isinstance(action, Send)
    clock.advance(2.5)
    with pytest.raises(asyncio.CancelledError):
        plan.throw(asyncio.CancelledError())
    points = metric_points(reader)
    assert [dict(p.attributes)["outcome"] for p in points["router.attempts"]] == outcomes
    assert sum(p.value for p in points.get("router.retries", [])) == retries
    (cancelled,) = [p for p in points["router.latency"] if dict(p.attributes)["outcome"] == "cancelled"]
    assert cancelled.sum == 2.5


def test_a_body_the_router_read_but_cannot_rewrite_is_refused_with_a_400_saying_why(make_router):
    router = make_router({"groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a", model="renamed")]}}})
    limit = parse_limit()
    for depth in range(limit - 120, limit + 1):  # just under the parser's limit, re-encoding runs out of stack
        plan = planned(router, nested(depth))
        try:
            plan.send(None)
        except StopIteration as stop:
            refused = stop.value.response
            break
        plan.close()
    else:
        pytest.fail("no depth was read and then refused")
    assert (refused.status_code, refused.headers["x-router-error"]) == (400, "router_unreadable_body")
    error = json.loads(refused.read())["error"]
    assert error["code"] == "router_unreadable_body"
    assert error["message"] == "The request body nests too deeply for the router to rewrite its model."


# ----------------------------------------------------------------------------- a client-side failure


def test_a_request_the_client_side_cannot_send_says_nothing_about_the_deployments_health(make_router, clock):
    router = make_router(one_group(dep("ftp://127.0.0.1:9/v1", id="x"), num_retries=2, allowed_fails=1))
    with pytest.raises(httpx2.UnsupportedProtocol):
        chat(router)
    breaker = router.deployment_state("x").breaker
    assert (breaker.state, list(breaker.failures)) == ("closed", [])  # not a failure of the deployment
    assert clock.sleeps == []  # and not retried: it would fail the same way
    breaker.record_failure(10.0)
    clock.advance(10.0)
    assert breaker.state == "half_open"
    with pytest.raises(httpx2.UnsupportedProtocol):
        chat(router)  # the probe meets a client-side failure: the deployment never saw it
    assert (breaker.state, breaker.probing) == ("half_open", False)  # its claim given back, nothing recorded
