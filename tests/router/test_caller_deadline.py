"""The caller's own read timeout bounds each wait of the routed request, not its total.

A client's read timeout (httpx's `timeout` extension) is a limit on each silence: a router sleeping a
provider's `Retry-After` longer than it, or an attempt given the router's longer `timeout`, works for
a caller that is gone (and may be billed for nobody). But it is not a deadline for the plan: waits
each within it are slept, and a retried attempt's reads keep the caller's full read timeout (only
`settings.deadline`, the operator's total, shrinks them).
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


def test_each_wait_is_bounded_by_the_callers_read_timeout_not_their_sum(fakes, make_router, clock):
    """httpx's default 5 s read timeout limits each silence, not the request: waits of 3 s and 3 s are
    each shorter than it, and the caller (no timeout of its own through a custom transport) is still there."""
    retry = ("status", 503, {"retry-after": "3"}, None)
    fakes["a"].fail(retry, retry)
    router = make_router({"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": {"num_retries": 2}})
    sdk(router, timeout=5.0).chat.completions.create(model="gpt", messages=HI)
    assert clock.sleeps == [3.0, 3.0] and fakes["a"].count == 3


def test_a_retried_streams_reads_keep_the_callers_read_timeout(fakes, make_router, clock):
    """After a 4.9 s wait, 0.1 s of a 5 s read timeout would be 'left'; a stream that goes quiet for 1 s
    is well within the caller's per-read limit and completes."""
    fakes["a"].fail(("status", 429, {"retry-after": "4.9"}, None), ("gap", 1.0))
    router = make_router({"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": {"num_retries": 1}})
    stream = sdk(router, timeout=5.0).chat.completions.create(model="gpt", messages=HI, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "hello from a!" and clock.sleeps == [4.9]


def test_a_retry_after_beyond_the_callers_read_timeout_goes_to_a_sibling_at_once(fakes, make_router, clock):
    fakes["a"].fail(("status", 429, {"retry-after": "20"}, None))
    deployments = [dep(fakes["a"], weight=1000), dep(fakes["b"], weight=1)]
    router = make_router({"groups": {"gpt": {"deployments": deployments}}, "settings": {"num_retries": 2}})
    answer = sdk(router, timeout=5.0).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.headers["x-router-deployment"] == "b" and clock.sleeps == []
    assert (fakes["a"].count, fakes["b"].count) == (1, 1)


def test_a_retry_after_beyond_the_callers_read_timeout_falls_back_without_sleeping(fakes, make_router, clock):
    fakes["a"].fail(("status", 503, {"retry-after": "20"}, None))
    groups = {"gpt": {"deployments": [dep(fakes["a"])]}, "backup": {"deployments": [dep(fakes["b"])]}}
    settings = {"num_retries": 2, "fallbacks": [{"gpt": ["backup"]}]}
    router = make_router({"groups": groups, "settings": settings})
    answer = sdk(router, timeout=5.0).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.headers["x-router-fallback-from"] == "gpt" and clock.sleeps == []
    assert (fakes["a"].count, fakes["b"].count) == (1, 1)
