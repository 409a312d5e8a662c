"""The per-deployment breaker and the retry policy's pieces, with an injected clock."""

from __future__ import annotations

import random

import pytest
from tenacity import DoAttempt, DoSleep

from llm_cache.router.breaker import Breaker
from llm_cache.router.config import RouterSettings
from llm_cache.router.errors import Failure, Kind, classify_status, parse_retry_after
from llm_cache.router.retry import AttemptResult, policy, steps


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_within_window_open_the_breaker():
    clock = Clock()
    br = Breaker(allowed_fails=3, window=10, cooldown=30, clock=clock)
    br.record_failure()
    clock.now = 11  # the first failure left the window
    br.record_failure()
    br.record_failure()
    assert br.state == "closed"
    br.record_failure()
    assert br.state == "open" and not br.available()
    assert br.retry_in() == pytest.approx(30)


def test_half_open_allows_exactly_one_probe():
    clock = Clock()
    br = Breaker(1, 60, 30, clock)
    br.record_failure()
    clock.now = 30
    assert br.state == "half_open" and br.available()
    br.acquire()
    assert not br.available()  # probe in flight
    br.record_success()
    assert br.state == "closed" and br.available()


def test_retry_after_opens_immediately_for_that_long():
    clock = Clock()
    opened = []
    br = Breaker(5, 60, 30, clock, on_open=opened.append)
    br.record_failure(retry_after=12)
    assert br.state == "open" and br.retry_in() == pytest.approx(12)
    assert opened == [12]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, b"{}", Kind.RATE_LIMIT),
        (500, b"{}", Kind.SERVER),
        (529, b"{}", Kind.SERVER),
        (400, b'{"error":{"code":"context_length_exceeded","message":"x"}}', Kind.CONTEXT_WINDOW),
        (
            400,
            b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 1 > 0"}}',
            Kind.CONTEXT_WINDOW,
        ),
        (
            400,
            b'{"error":{"code":400,"message":"The input token count (5) exceeds the maximum number of tokens '
            b'allowed (4).","status":"INVALID_ARGUMENT"}}',
            Kind.CONTEXT_WINDOW,
        ),
        (400, b'{"error":{"code":"content_filter","message":"filtered"}}', Kind.CONTENT_POLICY),
        (400, b'{"error":{"code":"content_policy_violation","message":"no"}}', Kind.CONTENT_POLICY),
        (400, b'{"error":{"message":"bad"}}', Kind.CLIENT),
        (401, b"{}", Kind.CLIENT),
        (403, b"{}", Kind.CLIENT),
    ],
)
def test_classify(status, body, kind):
    assert classify_status(status, body, RouterSettings().retry_on_status) is kind


def test_parse_retry_after():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "9"}) == 9
    assert parse_retry_after({}) is None


def drive(settings, results, clock, deadline=None):
    gen = steps(policy(settings, rng=random.Random(0), clock=clock, deadline=deadline))
    sleeps, attempts = [], 0
    try:
        do = next(gen)
        while True:
            if isinstance(do, DoAttempt):
                attempts += 1
                do = gen.send(results[attempts - 1])
            else:
                assert isinstance(do, DoSleep)
                sleeps.append(float(do))
                clock.now += float(do)
                do = gen.send(None)
    except StopIteration as stop:
        return stop.value, attempts, sleeps


def fail(kind=Kind.SERVER, retry_after=None, **kw):
    return AttemptResult("d", Failure(kind, 500, retry_after), **kw)


def test_policy_backoff_is_exponential_with_jitter_and_capped():
    s = RouterSettings(num_retries=5, backoff_initial=1, backoff_max=4, backoff_jitter=0.5)
    _, attempts, sleeps = drive(s, [fail()] * 6, Clock())
    assert attempts == 6
    for got, base in zip(sleeps, [1, 2, 4, 4, 4], strict=True):
        assert base * 0.5 <= got <= base


def test_policy_does_not_retry_client_errors_or_fail_over():
    s = RouterSettings(num_retries=5)
    assert drive(s, [fail(Kind.CLIENT)], Clock())[1] == 1
    assert drive(s, [fail(fail_over=True)], Clock())[1] == 1
    ok = AttemptResult("d")
    assert drive(s, [fail(), ok], Clock())[:2] == (ok, 2)


def test_policy_retry_after_overrides_backoff_unless_another_deployment_is_free():
    s = RouterSettings(num_retries=1, backoff_initial=1)
    assert drive(s, [fail(Kind.RATE_LIMIT, 3.0), AttemptResult("d")], Clock())[2] == [3.0]
    assert drive(s, [fail(Kind.RATE_LIMIT, 3.0, alternatives=True), AttemptResult("d")], Clock())[2] == [0.0]
