"""The per-deployment breaker and the retry policy's pieces, with an injected clock."""

from __future__ import annotations

import random

import pytest
from tenacity import DoAttempt, DoSleep, RetryCallState, Retrying

from llm_cache.router._breaker import Breaker
from llm_cache.router._config import RouterSettings
from llm_cache.router._errors import Failure, Kind, classify_status, parse_retry_after
from llm_cache.router._retry import (
    AttemptResult,
    policy,
    steps,
    stop_at_deadline,
    wait_exponential_jitter,
    wait_retry_after,
)


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


# -- the breaker's rules, one at a time -----------------------------------------------------------


def breaker(clock: Clock, allowed_fails: int = 2, window: float = 10, cooldown: float = 30, **kw: object) -> Breaker:
    return Breaker(allowed_fails, window, cooldown, clock, **kw)  # type: ignore[arg-type]


def probing(clock: Clock) -> Breaker:
    """A breaker whose cooldown has just ended, with the probe handed out."""
    br = breaker(clock, allowed_fails=1)
    br.record_failure()
    clock.now = 30
    assert br.acquire()
    return br


def test_a_failure_exactly_window_seconds_old_no_longer_counts() -> None:
    clock = Clock()
    br = breaker(clock)
    br.record_failure()
    clock.now = 10
    br.record_failure()
    assert br.state == "closed"
    clock.now = 19.9
    br.record_failure()
    assert br.state == "open"


def test_a_success_forgets_the_failures_before_it() -> None:
    clock = Clock()
    br = breaker(clock)
    br.record_failure()
    br.record_success()
    br.record_failure()
    assert br.state == "closed" and br.available() and br.retry_in() == 0.0


def test_the_breaker_is_half_open_from_the_instant_its_cooldown_ends() -> None:
    clock = Clock()
    br = breaker(clock, allowed_fails=1)
    br.record_failure()
    clock.now = 29.9
    assert br.state == "open" and br.retry_in() == pytest.approx(0.1)
    clock.now = 30
    assert br.state == "half_open" and br.retry_in() == 0.0


def test_only_a_half_open_breaker_hands_out_the_probe() -> None:
    clock = Clock()
    br = breaker(clock, allowed_fails=1)
    assert br.acquire() is False and br.available()  # closed: an ordinary request
    br.record_failure()
    assert br.acquire() is False  # open: no probe yet
    clock.now = 30
    assert br.acquire() is True
    assert br.acquire() is False  # the probe is taken


@pytest.mark.parametrize(("retry_after", "cooling"), [(None, 30), (5.0, 30), (50.0, 50)])
def test_a_failed_probe_cools_for_the_cooldown_or_a_longer_retry_after(
    retry_after: float | None, cooling: float
) -> None:
    clock = Clock()
    br = probing(clock)
    br.record_failure(retry_after)
    assert br.state == "open" and br.retry_in() == pytest.approx(cooling)
    assert br.available() is False
    clock.now = 30 + cooling
    assert br.available() is True  # the failed probe's claim was dropped with it


def test_a_shorter_retry_after_never_shortens_an_open_breaker() -> None:
    clock = Clock()
    br = breaker(clock)
    br.record_failure(retry_after=20)
    br.record_failure(retry_after=5)
    assert br.retry_in() == pytest.approx(20)
    br.record_failure(retry_after=40)
    assert br.retry_in() == pytest.approx(40)


def test_a_retry_after_of_zero_lets_a_probe_through_at_once() -> None:
    br = breaker(Clock())
    br.record_failure(retry_after=0)
    assert br.state == "half_open" and br.available()


def test_opening_reports_how_long_the_deployment_cools() -> None:
    clock = Clock()
    clock.now = 100
    opened: list[float] = []
    br = breaker(clock, on_open=opened.append)
    br.record_failure()
    br.record_failure()
    br.record_failure(retry_after=45)
    assert opened == [30, 45]


def test_opening_forgets_the_failures_before_it() -> None:
    clock = Clock()
    br = breaker(clock)
    br.record_failure()
    clock.now = 1
    br.record_failure(retry_after=2)
    clock.now = 3
    br.record_failure()  # one failure since the opening, not two
    assert br.state == "half_open"


def test_with_no_cooldown_a_failed_probe_lets_the_next_probe_through_at_once() -> None:
    clock = Clock()
    br = breaker(clock, allowed_fails=1, cooldown=0)
    br.record_failure()
    assert br.acquire() is True
    br.record_failure()
    assert br.state == "half_open" and br.available()


def test_a_verdict_less_release_is_for_the_probe_unless_told_otherwise() -> None:
    clock = Clock()
    br = probing(clock)
    br.release_without_outcome()
    assert br.state == "closed"


def test_a_probe_answered_without_a_verdict_closes_the_breaker() -> None:
    clock = Clock()
    br = probing(clock)
    br.release_without_outcome(probe=True)
    assert br.state == "closed" and br.available()


def test_a_request_that_is_not_the_probe_leaves_the_probe_in_flight() -> None:
    clock = Clock()
    br = probing(clock)
    br.release_without_outcome(probe=False)
    br.abandon(probe=False)
    assert br.state == "half_open" and not br.available()


def test_a_request_without_a_verdict_outside_a_probe_changes_nothing() -> None:
    clock = Clock()
    br = breaker(clock, allowed_fails=1)
    br.record_failure()
    br.release_without_outcome(probe=True)
    assert br.state == "open"


def test_an_abandoned_probe_gives_its_claim_back_and_records_nothing() -> None:
    clock = Clock()
    br = probing(clock)
    br.abandon(probe=True)
    assert br.state == "half_open" and br.available()


# -- the retry policy's pieces ----------------------------------------------------------------------


class FixedRandom(random.Random):
    """A `random()` that always answers `value`: the jitter's extremes, exactly."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def attempt(number: int, result: AttemptResult | None = None, upcoming_sleep: float = 0.0) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = number
    state.upcoming_sleep = upcoming_sleep
    if result is not None:
        state.set_result(result)
    return state


@pytest.mark.parametrize(("number", "no_jitter", "most_jitter"), [(1, 1, 0.5), (2, 2, 1), (3, 4, 2), (4, 4, 2)])
def test_backoff_doubles_from_initial_up_to_max_and_jitter_shrinks_it_by_at_most_its_fraction(
    number: int, no_jitter: float, most_jitter: float
) -> None:
    assert wait_exponential_jitter(1, 4, 0.5, FixedRandom(0.0))(attempt(number)) == no_jitter
    assert wait_exponential_jitter(1, 4, 0.5, FixedRandom(1.0))(attempt(number)) == most_jitter


def test_a_jitter_over_one_never_makes_a_negative_wait() -> None:
    assert wait_exponential_jitter(1, 4, 3.0, FixedRandom(1.0))(attempt(2)) == 0.0
    assert wait_exponential_jitter(1, 4, 3.0, FixedRandom(0.5))(attempt(2)) == 1.0


@pytest.mark.parametrize(
    ("result", "wait"),
    [
        (fail(Kind.RATE_LIMIT, 3.0), 3.0),
        (fail(Kind.RATE_LIMIT, 3.0, alternatives=True), 0.0),
        (fail(alternatives=True), 2.0),
        (fail(), 2.0),
    ],
)
def test_retry_after_sets_the_wait_and_a_free_deployment_skips_it_but_not_the_backoff(
    result: AttemptResult, wait: float
) -> None:
    assert wait_retry_after(wait_exponential_jitter(1, 8, 0, FixedRandom(0)))(attempt(2, result)) == wait


@pytest.mark.parametrize(("now", "sleep", "stops"), [(0, 4.9, False), (0, 5, True), (5, 0, True), (4.9, 0, False)])
def test_retries_stop_when_the_coming_sleep_would_reach_the_deadline(now: float, sleep: float, stops: bool) -> None:
    clock = Clock()
    clock.now = now
    assert stop_at_deadline(5.0, clock)(attempt(1, upcoming_sleep=sleep)) is stops


def test_without_a_deadline_retries_never_stop_for_time() -> None:
    clock = Clock()
    clock.now = 1e12
    assert stop_at_deadline(None, clock)(attempt(1, upcoming_sleep=1e12)) is False


def test_every_retry_exhausted_answers_the_last_failure_itself() -> None:
    last = fail(Kind.RATE_LIMIT)
    result, attempts, sleeps = drive(RouterSettings(num_retries=2, backoff_jitter=0), [fail(), fail(), last], Clock())
    assert (result, attempts, sleeps) == (last, 3, [0.5, 1.0])


def test_no_retries_means_one_attempt() -> None:
    assert drive(RouterSettings(num_retries=0), [fail()], Clock())[1] == 1


def test_the_deadline_cuts_the_retries_short() -> None:
    settings = RouterSettings(num_retries=5, backoff_initial=1, backoff_jitter=0)
    result, attempts, sleeps = drive(settings, [fail()] * 6, Clock(), deadline=3.5)
    assert (attempts, sleeps) == (3, [1.0, 2.0])
