"""Retry policy for one model group, built from tenacity's strategy objects.

The router drives tenacity's ``Retrying.iter`` state machine itself (the same loop tenacity's own
``__iter__`` runs), so one policy serves the sync and the async path, and sleeping and time come from
injectable functions. Attempt results are never raised inside the loop: each attempt returns an
``AttemptResult`` and the ``retry`` predicate inspects it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._config import RouterSettings
from ._errors import Failure


@dataclass
class AttemptResult:
    """One attempt's outcome: a response to return, or a failure (with its response/exception)."""

    deployment: str | None
    failure: Failure | None = None
    response: Any = None
    exception: BaseException | None = None
    alternatives: bool = False  # another healthy deployment in the group could take the retry
    fail_over: bool = False  # stop retrying this group now (e.g. Retry-After beyond the cap)
    final: bool = False  # the provider may have acted on a request that must not be sent twice (`_repeat.py`)
    callers: bool = False  # the failure is the caller's own (its key, its body): says nothing of the deployment

    @property
    def ok(self) -> bool:
        return self.failure is None


class wait_exponential_jitter(wait_base):
    """``min(max, initial·2^(n-1))`` shrunk by up to ``jitter`` (a fraction), from an injectable RNG."""

    def __init__(self, initial: float, maximum: float, jitter: float, rng: random.Random) -> None:
        self.initial, self.maximum, self.jitter, self.rng = initial, maximum, min(jitter, 1.0), rng

    def __call__(self, retry_state: RetryCallState) -> float:
        base = min(self.maximum, self.initial * 2 ** (retry_state.attempt_number - 1))
        return base * (1 - self.jitter * self.rng.random())


class wait_retry_after(wait_base):
    """Honour the provider's Retry-After (already capped); skip waiting when another deployment is free."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        result: AttemptResult = retry_state.outcome.result()  # type: ignore[union-attr]
        if result.alternatives and result.failure is not None and result.failure.retry_after is not None:
            return 0.0
        if result.failure is not None and result.failure.retry_after is not None:
            return result.failure.retry_after
        return self.fallback(retry_state)


class stop_at_deadline(stop_base):
    """Stop when the coming sleep would end past the request's total deadline."""

    def __init__(self, deadline: float | None, clock: Callable[[], float]) -> None:
        self.deadline, self.clock = deadline, clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        return self.clock() + (retry_state.upcoming_sleep or 0.0) >= self.deadline


class stop_past_patience(stop_base):
    """Stop when the coming sleep is longer than the caller waits for a byte (its read timeout): the
    caller would be gone before it ends. Each wait is bounded, not their sum."""

    def __init__(self, patience: float | None) -> None:
        self.patience = patience

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.patience is not None and (retry_state.upcoming_sleep or 0.0) > self.patience


def _should_retry(result: AttemptResult) -> bool:
    return result.failure is not None and result.failure.retryable and not result.fail_over and not result.final


def policy(
    settings: RouterSettings,
    *,
    rng: random.Random,
    clock: Callable[[], float],
    deadline: float | None,
    patience: float | None = None,
) -> Retrying:
    """The tenacity ``Retrying`` for one group's attempts within one request. ``deadline``: the
    operator's total (`settings.deadline`); ``patience``: the caller's read timeout, bounding each wait."""
    return Retrying(
        stop=stop_after_attempt(settings.num_retries + 1)
        | stop_at_deadline(deadline, clock)
        | stop_past_patience(patience),
        wait=wait_retry_after(
            wait_exponential_jitter(settings.backoff_initial, settings.backoff_max, settings.backoff_jitter, rng)
        ),
        retry=retry_if_result(_should_retry),
        retry_error_callback=lambda rs: rs.outcome.result(),  # type: ignore[union-attr]
    )


def steps(retrying: Retrying) -> Any:
    """Generator over tenacity's decisions: yields ``DoAttempt()`` (send back an AttemptResult) or
    ``DoSleep(seconds)`` (send back None); returns the final AttemptResult."""
    retrying.begin()
    state = RetryCallState(retrying, fn=None, args=(), kwargs={})
    while True:
        do = retrying.iter(state)
        if isinstance(do, DoAttempt):
            result = yield do
            state.set_result(result)
        elif isinstance(do, DoSleep):
            state.prepare_for_next_attempt()
            yield do
        else:
            return do


__all__ = [
    "AttemptResult",
    "policy",
    "steps",
    "stop_at_deadline",
    "stop_past_patience",
    "wait_exponential_jitter",
    "wait_retry_after",
]
