"""What a deployment answers decides what the router records about it only when the answer proves it.

A 200 whose body is an error object (a broken proxy, an OpenAI-compatible server that reports its
failures so) is no success: counted as one, it closed a cooling deployment's breaker on its probe and
recorded an instant "answer" in the latency average, so a deployment failing at once looked the fastest
and drew the traffic. It says nothing for or against the deployment either (a caller's request can be
what draws it), so it is relayed as it came, not sent again. The real openai SDK goes through
``RouterTransport`` to the fake provider.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from llm_cache.router import RouterTransport

from .test_callers import HI, caller, passthrough
from .test_cross_family import claude_router, client, gemini_router

ERROR_BODIES = {
    "openai": {"error": {"message": "upstream failed", "type": "server_error", "code": None}},
    "anthropic": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    "aws": {"__type": "ThrottlingException", "message": "Too many requests"},
    "message_only": {"message": "Internal server error"},
}


@pytest.mark.parametrize("shape", list(ERROR_BODIES), ids=list(ERROR_BODIES))
def test_a_200_error_object_is_relayed_and_is_no_success_for_the_deployment(
    fake_provider, make_router, clock, shape
) -> None:
    router = make_router(passthrough(fake_provider, "only", key="operator-key", num_retries=2, cooldown_time=5))
    state = router.deployment_state("only")
    fake_provider.fail_next(1, 500)
    with pytest.raises(openai.InternalServerError):
        caller(router, "key-a").chat.completions.create(model="gpt", messages=HI)
    clock.advance(5)
    assert state.breaker.state == "half_open"
    count, usage = fake_provider.count(), state.window_usage()
    fake_provider.fail_next(1, 200, ERROR_BODIES[shape])
    answer = caller(router, "key-a").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.http_response.json() == ERROR_BODIES[shape]
    assert fake_provider.count() == count + 1  # relayed as it came: not sent again
    assert state.breaker.state == "half_open"  # the probe is given back, the breaker not closed
    assert (state.latency, state.seconds, state.ttft) == (None, None, None)  # no speed recorded
    assert state.window_usage() == usage  # nor counted in its usage window
    served = caller(router, "key-b").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert served.status_code == 200 and state.breaker.state == "closed"  # a real answer closes it


def test_a_keyless_deployments_401_to_a_keyless_caller_is_the_callers_failure(fake_provider, make_router) -> None:
    """Neither the router nor the gateway put a key in: the 401 refuses the credential the caller did not
    send, which only the caller controls. Cooling the deployment would let anyone who omits a key cool a
    pass-through deployment for every caller who brings one; it is relayed, not retried, not counted."""
    router = make_router(passthrough(fake_provider, "only", num_retries=2))
    fake_provider.fail_next(3, 401)
    anonymous = httpx2.Client(transport=RouterTransport(router), base_url=fake_provider.openai_base_url)
    for _ in range(3):
        refused = anonymous.post("/chat/completions", json={"model": "gpt", "messages": HI, "max_tokens": 10**9})
        assert refused.status_code == 401 and "x-router-error" not in refused.headers
    assert fake_provider.count() == 3  # not sent again, nor to anyone else
    assert router.deployment_state("only").breaker.state == "closed"
    assert router.deployment_state("only").window_usage() == (0, 0)
    answer = caller(router, "key-b").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "only"
    assert fake_provider.last.headers["authorization"] == "Bearer key-b"


def usage_router(fake: Any, make_router: Any) -> Any:
    config = passthrough(fake, "one", "two", key="operator-key", routing_strategy="usage")
    for deployment in config["groups"]["gpt"]["deployments"]:
        deployment["tpm"] = 100_000
    return make_router(config)


def test_a_success_counts_the_tokens_it_used_not_the_max_tokens_it_asked_for(fake_provider, make_router) -> None:
    """The usage window is reserved with what a request may cost (its prompt and `max_tokens`), then
    settled to what the answer says it used. Before, a caller asking for `max_tokens: 90_000` (allowed,
    and answered in a few tokens) filled the deployment's `tpm` window for a minute, and the `usage`
    strategy sent every other caller elsewhere."""
    router = usage_router(fake_provider, make_router)
    answer = caller(router, "key-a").chat.completions.create(model="gpt", messages=HI, max_tokens=90_000)
    used = answer.usage.total_tokens if answer.usage else None
    assert used is not None and 0 < used < 1000
    windows = {d: router.deployment_state(d).window_usage() for d in ("one", "two")}
    assert sorted(windows.values()) == [(0, 0), (1, used)]


@pytest.mark.parametrize("reported", [10**12, -5, "lots", 2.5, None])
def test_usage_an_answer_reports_never_counts_more_than_was_reserved(fake_provider, make_router, reported) -> None:
    """A hostile or broken deployment's usage numbers can only lower a success's count to what it says it
    used, never raise it past the reservation nor below zero; what is not a count is ignored."""
    router = usage_router(fake_provider, make_router)
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "real-one",
        "choices": [],
        "usage": {"prompt_tokens": reported, "completion_tokens": reported, "total_tokens": reported},
    }
    fake_provider.fail_next(1, 200, body)
    caller(router, "key-a").chat.completions.with_raw_response.create(model="gpt", messages=HI, max_tokens=500)
    reserved = sorted(router.deployment_state(d).window_usage() for d in ("one", "two"))[1]
    assert reserved[0] == 1 and 500 <= reserved[1] < 600


TRANSLATED_ERRORS = {
    "anthropic": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    "gemini": {"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}},
}


@pytest.mark.parametrize("family", list(TRANSLATED_ERRORS))
def test_a_200_error_object_from_another_family_reaches_the_caller_as_an_error_not_an_empty_answer(
    fake_provider, family
) -> None:
    """Translated as a success, it became an empty chat completion (`content: null`, `finish_reason:
    "stop"`, zero usage) that a cache in front would store and serve to everyone."""
    router = (claude_router if family == "anthropic" else gemini_router)(fake_provider)
    fake_provider.fail_next(1, 200, TRANSLATED_ERRORS[family])
    answer = client(router).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    body = answer.http_response.json()
    assert "choices" not in body and body["error"]["message"] == "Overloaded"
