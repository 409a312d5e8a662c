"""Per-deployment circuit breaker: closed → open (cooling) → half-open (one probe) → closed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class Breaker:
    """Failures within ``window`` seconds reaching ``allowed_fails`` open the breaker for ``cooldown``.

    A 429 carrying Retry-After opens it at once until then. When the cool-off ends the breaker is
    half-open: exactly one request (a probe) may go through; success closes it, failure re-opens it.
    """

    allowed_fails: int
    window: float
    cooldown: float
    clock: Callable[[], float]
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0
    opened: bool = False
    probing: bool = False
    on_open: Callable[[float], None] | None = None

    @property
    def state(self) -> str:
        if not self.opened:
            return CLOSED
        return OPEN if self.clock() < self.open_until else HALF_OPEN

    def available(self) -> bool:
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def acquire(self) -> bool:
        """Called when a request is sent here; in half-open that request is the probe (returns True)."""
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def record_success(self) -> None:
        self.failures.clear()
        self.opened = False
        self.probing = False

    def record_failure(self, retry_after: float | None = None) -> None:
        now = self.clock()
        if self.opened and self.probing:  # failed probe: back to cooling
            self._open(now + max(self.cooldown, retry_after or 0.0))
            return
        if retry_after is not None:
            self._open(now + retry_after)
            return
        self.failures.append(now)
        while self.failures and self.failures[0] <= now - self.window:
            self.failures.popleft()
        if len(self.failures) >= self.allowed_fails:
            self._open(now + self.cooldown)

    def release_without_outcome(self, probe: bool = True) -> None:
        """The request ended with a verdict that says nothing about health (e.g. a 400).

        A probe that got one closes the breaker (the deployment answered); any other request leaves
        the breaker, and a probe another request holds, alone.
        """
        if probe and self.probing:
            self.probing = False
            if self.state == HALF_OPEN:
                self.record_success()

    def abandon(self, probe: bool) -> None:
        """The request was cancelled by its caller, or failed before it left this process: as if it
        had never been sent.

        A probe's claim is given back (the next request may probe); nothing is recorded.
        """
        if probe:
            self.probing = False

    def _open(self, until: float) -> None:
        self.opened = True
        self.probing = False
        self.open_until = max(until, self.open_until if self.state == OPEN else 0.0)
        self.failures.clear()
        if self.on_open is not None:
            self.on_open(self.open_until - self.clock())

    def retry_in(self) -> float:
        """Seconds until this deployment may take a request again (0 if it may now)."""
        return max(0.0, self.open_until - self.clock()) if self.opened else 0.0


__all__ = ["Breaker", "CLOSED", "HALF_OPEN", "OPEN"]
