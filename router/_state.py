"""Runtime state per deployment (in-flight count, latency EWMA, usage window, breaker).

All of it lives on the ``Router`` instance that owns it: no module-level mutable state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from ._breaker import Breaker
from ._config import Deployment

USAGE_WINDOW = 60.0

#: The most one latency sample moves a figure: it is taken as at most this many times the figure, or at
#: least the figure over it. One answer built to be slow (a long prompt, ``max_tokens: 1``) or one
#: implausibly fast cannot swing a deployment's figure; a real change still shows within a few samples.
SAMPLE_CLIP = 2.0


@dataclass
class DeploymentState:
    deployment: Deployment
    breaker: Breaker
    clock: Callable[[], float]
    in_flight: int = 0
    latency: float | None = None  # EWMA of a whole answer's seconds per output token (`_latency.py`)
    seconds: float | None = None  # EWMA of a whole answer's seconds, for answers that report no count
    ttft: float | None = None  # EWMA of a stream's seconds to its first byte
    usage: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens), last 60 s
    picked_at: float | None = None  # when the router last sent it a request (`stale`)

    @property
    def id(self) -> str:
        return self.deployment.id

    def stale(self, max_age: float) -> bool:
        """Whether its latency figures are too old to trust: nothing was sent here for ``max_age`` seconds.
        A deployment outside the latency band is never sent anything, so it is never measured again; a
        stale one is unmeasured (`strategies.within_latency_band`) and so explored once, and that answer
        starts its figure afresh. Before, one slow answer shut a deployment out for good."""
        return self.picked_at is not None and self.clock() - self.picked_at > max_age

    def observe_latency(
        self, seconds: float, alpha: float, stream: bool = False, tokens: int | None = None, fresh: bool = False
    ) -> None:
        """Fold in a success's time: a stream's to its first byte, a whole answer's per output token when
        it reports ``tokens``, else whole. Each unit has its own average: mixed, an answer without a count
        would weigh ~100x a per-token figure and exile its deployment for good. A time that is not a
        positive finite number is no sample; a sample moves a figure by at most `SAMPLE_CLIP`, unless the
        figure is ``fresh`` (it was stale: the sample replaces it)."""
        if not (math.isfinite(seconds) and seconds > 0):
            return
        if stream:
            self.ttft = _ewma(None if fresh else self.ttft, seconds, alpha)
        elif tokens:
            self.latency = _ewma(None if fresh else self.latency, seconds / tokens, alpha)
        else:
            self.seconds = _ewma(None if fresh else self.seconds, seconds, alpha)

    def record_usage(self, tokens: int) -> tuple[float, int]:
        """Count a request sent here; the entry returned withdraws it (`withdraw_usage`)."""
        entry = (self.clock(), tokens)
        self.usage.append(entry)
        return entry

    def withdraw_usage(self, entry: tuple[float, int]) -> None:
        """Uncount a request the deployment refused for the caller's own reasons: it used nothing here."""
        with suppress(ValueError):  # already out of the window
            self.usage.remove(entry)

    def settle_usage(self, entry: tuple[float, int], tokens: int) -> None:
        """Count a success at the ``tokens`` its answer says it used, when fewer than were reserved (its
        prompt and ``max_tokens``): a caller's generous ``max_tokens`` costs the window what it used.
        Never more than reserved: the count is the upstream's word."""
        if tokens >= entry[1]:
            return
        with suppress(ValueError):  # already out of the window
            self.usage[self.usage.index(entry)] = (entry[0], tokens)

    def window_usage(self) -> tuple[int, int]:
        """(requests, tokens) in the last minute."""
        cutoff = self.clock() - USAGE_WINDOW
        while self.usage and self.usage[0][0] <= cutoff:
            self.usage.popleft()
        return len(self.usage), sum(t for _, t in self.usage)


def _ewma(average: float | None, value: float, alpha: float) -> float:
    if average is None:
        return value
    value = min(max(value, average / SAMPLE_CLIP), average * SAMPLE_CLIP)
    return alpha * value + (1 - alpha) * average


__all__ = ["DeploymentState", "SAMPLE_CLIP", "USAGE_WINDOW"]
