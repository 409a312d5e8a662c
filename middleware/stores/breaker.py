"""A circuit breaker for remote stores: stop calling a back-end that keeps failing, then probe it.

States: *closed* (calls go through), *open* (calls fail fast with `StoreError` without touching
the network, for `cooldown` seconds after the last failure), *half-open* (one probe call goes
through; success closes the breaker, failure opens it again for another cool-off). While one probe
is in flight, other calls fail fast. The engine counts each fast failure as a store `error` and goes
upstream, so a dead Redis costs nothing but a counter increment per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .._fork import renew_after_fork
from .base import StoreError

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitOpenError(StoreError):
    """The breaker is open: the store was skipped without a network call."""


class CircuitBreaker:
    """Counts consecutive failures; thread-safe, so one breaker serves every event loop of a store."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "store",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown < 0:
            raise ValueError("cooldown must be >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0  # how many times the breaker has opened
        self.rejected = 0  # calls failed fast while open
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """In a forked child: a lock and a probe in flight of the parent's threads are not the child's
        (waiting for that probe's verdict, every call of the child failed fast for ever)."""
        self._lock = threading.Lock()
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown:
                return HALF_OPEN
            return self._state

    def before(self) -> None:
        """Call before touching the back-end; raises `CircuitOpenError` when the call must be skipped."""
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN and not self._probing:
                self._probing = True  # this caller is the probe
                return
            self.rejected += 1
        raise CircuitOpenError(f"{self.name}: circuit open after repeated failures; skipping the store")

    def success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state != OPEN:
                    self.opened += 1
                self._state = OPEN
                self._opened_at = self._clock()

    def release(self) -> None:
        """The call ended without a verdict (cancelled): let another caller probe."""
        with self._lock:
            self._probing = False

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        errors: tuple[type[BaseException], ...],
        what: str = "call",
    ) -> T:
        """Run `operation` through the breaker; `errors` count as failures and become `StoreError`."""
        self.before()
        try:
            result = await operation()
        except errors as error:
            self.failure()
            raise StoreError(f"{self.name} {what} failed: {error!r}") from error
        except BaseException:
            self.release()
            raise
        self.success()
        return result
