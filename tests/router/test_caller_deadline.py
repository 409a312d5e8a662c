"""The caller's own timeout is a deadline for the whole routed request.

A client that waits `timeout` seconds for an answer gives up then, whatever the router does: a router
sleeping a provider's `Retry-After` beyond it, or an attempt given the router's longer `timeout`,
works for a caller that is gone (and may be billed for nobody). So the caller's read timeout bounds
the router's plan as `settings.deadline` does: no sleep ends past it, no attempt is given longer.
"""

from __future__ import annotations

import httpx2
import openai
import pytest

from llm_cache.router import RouterTransport

from .conftest import dep

HI = [{"role": "user", "content": "hi"}]


def sdk(router, timeout: float) -> openai.OpenAI:
    client = httpx2.Client(transport=RouterTransport(router), timeout=timeout)
    return openai.OpenAI(api_key="caller", max_retries=0, http_client=client, timeout=timeout)


def test_the_router_never_sleeps_past_the_callers_timeout(fakes, make_router, clock):
    fakes["a"].fail(("status", 429, {"retry-after": "20"}, None))
    router = make_router({"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": {"num_retries": 2}})
    with pytest.raises(openai.RateLimitError) as limited:
        sdk(router, timeout=5.0).chat.completions.create(model="gpt", messages=HI)
    assert clock.sleeps == [] and fakes["a"].count == 1  # answered at once: the caller may wait itself
    assert limited.value.response.headers["retry-after"] == "20"


def test_a_wait_within_the_callers_timeout_is_still_slept(fakes, make_router, clock):
    fakes["a"].fail(("status", 429, {"retry-after": "2"}, None))
    router = make_router({"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": {"num_retries": 2}})
    sdk(router, timeout=60.0).chat.completions.create(model="gpt", messages=HI)
    assert clock.sleeps == [2.0] and fakes["a"].count == 2


def test_an_attempt_is_never_given_longer_than_the_callers_timeout(fakes, make_router):
    """The router's own `timeout` (30 s) is longer than the caller's (1 s): the caller's wins."""
    fakes["a"].fail("hang")
    config = {"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": {"num_retries": 0, "timeout": 30.0}}
    router = make_router(config)
    with pytest.raises(openai.APITimeoutError):  # the hang ends after 30 s with an answer: never waited for
        sdk(router, timeout=1.0).chat.completions.create(model="gpt", messages=HI)


class Recording(httpx2.BaseTransport):
    """The real HTTP transport, keeping the timeouts each attempt was sent with."""

    def __init__(self) -> None:
        self.real = httpx2.HTTPTransport()
        self.timeouts: list[dict[str, float]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return self.real.handle_request(request)

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("router_timeout", [None, 30.0, 2.0])
def test_each_phase_of_an_attempt_keeps_the_shorter_of_the_callers_and_the_routers_timeout(
    fakes, make_router, router_timeout
):
    settings = {"num_retries": 0, **({"timeout": router_timeout} if router_timeout else {})}
    router = make_router({"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": settings})
    inner = Recording()
    client = httpx2.Client(transport=RouterTransport(router, inner=inner), timeout=httpx2.Timeout(600.0, connect=5.0))
    openai.OpenAI(api_key="caller", max_retries=0, http_client=client).chat.completions.create(model="gpt", messages=HI)
    inner.close()
    cap = router_timeout or 600.0
    expected = {"connect": min(5.0, cap), "read": min(600.0, cap), "write": min(600.0, cap), "pool": min(600.0, cap)}
    assert inner.timeouts == [expected]
