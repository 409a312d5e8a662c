"""Upstream failures through the gateway: error statuses, timeouts, and bodies cut or stalled midway.

The gateway (`create_gateway` under uvicorn on 127.0.0.1, memory store, a 1 s upstream timeout)
fronts the fake provider, which is told to fail the next response in one way, for a JSON and for a
streamed request alike. The rule, for every way: nothing is stored; the caller gets the provider's
own error (status, headers that matter, body byte for byte) or, once the body has begun, a
transport error (never a response that looks complete); and the next identical request goes
upstream and is answered normally.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware._engine import Cache
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.load import json_text, stream_text
from tests.support.servers import wait_for

from .conftest import openai_upstream

UPSTREAM_TIMEOUT = 1.0
DEADLINE = 10.0
HEADERS = {"authorization": "Bearer sk-upstream-faults", "content-type": "application/json"}
FORMS = ["json", "stream"]


class Gateway:
    def __init__(self, url: str, cache: Cache) -> None:
        self.url = url
        self.cache = cache

    def ask(self, form: str, prompt: str) -> httpx2.Response:
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
        if form == "stream":
            body["stream"] = True
        return httpx2.post(f"{self.url}/v1/chat/completions", content=orjson.dumps(body), headers=HEADERS, timeout=30)


@pytest.fixture
def gateway(fake_provider: RunningFakeProvider) -> Iterator[Gateway]:
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}},
            "upstreams": openai_upstream(fake_provider, timeout=UPSTREAM_TIMEOUT),
        }
    )
    app = create_gateway(config)
    with BackgroundServer(app) as server:
        yield Gateway(server.url, app.state.cache)


def assert_next_request_goes_upstream(gateway: Gateway, provider: RunningFakeProvider, form: str, prompt: str) -> None:
    stored, asked = gateway.cache.stats.stored, provider.count()
    answer = gateway.ask(form, prompt)
    assert answer.status_code == 200
    assert answer.headers["x-cache"] == "MISS"
    assert provider.count() == asked + 1
    text = stream_text(answer.content) if form == "stream" else json_text(answer.content)
    assert text.endswith(f": {prompt}")
    # a whole answer is stored as before (just after its last byte went out)
    wait_for(lambda: gateway.cache.stats.stored == stored + 1, DEADLINE, "the answer to be stored")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_an_error_status_reaches_the_caller_as_sent_and_is_not_stored(
    gateway: Gateway, fake_provider: RunningFakeProvider, form: str, status: int
) -> None:
    body = b'{"error":{"message":"fault %d from the provider","type":"server_error","code":null}}' % status
    headers = {"content-type": "application/json", "retry-after": "7", "x-request-id": "req-fault"}
    fake_provider.fail_next(1, status=status, body=body, headers=headers)
    prompt = f"{form} error {status}"
    answer = gateway.ask(form, prompt)
    assert answer.status_code == status
    assert answer.content == body
    assert answer.headers["retry-after"] == "7" and answer.headers["x-request-id"] == "req-fault"
    assert gateway.cache.stats.stored == 0
    assert_next_request_goes_upstream(gateway, fake_provider, form, prompt)


@pytest.mark.parametrize("form", FORMS)
def test_an_upstream_that_never_answers_is_a_504_and_is_not_stored(
    gateway: Gateway, fake_provider: RunningFakeProvider, form: str
) -> None:
    fake_provider.hold()
    try:
        answer = gateway.ask(form, f"{form} silent")
    finally:
        fake_provider.release()
    assert answer.status_code == 504
    assert orjson.loads(answer.content)["error"]["message"] == "the openai upstream timed out"
    assert gateway.cache.stats.stored == 0
    assert_next_request_goes_upstream(gateway, fake_provider, form, f"{form} silent")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stall", [False, True], ids=["cut", "stalled"])
@pytest.mark.parametrize("after", [1, 40])
def test_a_body_cut_or_stalled_midway_is_a_transport_error_and_is_not_stored(
    gateway: Gateway, fake_provider: RunningFakeProvider, form: str, stall: bool, after: int
) -> None:
    prompt = f"{form} broken after {after} {stall}"
    fake_provider.break_body_after(after, stall=stall)
    try:
        with pytest.raises(httpx2.TransportError):  # an incomplete body, never one that looks whole
            gateway.ask(form, prompt)
    finally:
        fake_provider.release()
    assert gateway.cache.stats.stored == 0
    assert gateway.cache.stats.not_stored == 1
    assert_next_request_goes_upstream(gateway, fake_provider, form, prompt)
