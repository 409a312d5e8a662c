"""WARNINGs a caller, or one dead dependency, could repeat at request rate: at most one an interval.

A `LogLimit` lives on the instance that logs (no module-level state). Per kind of message, the first
is a WARNING at once; the ones that follow within `interval` seconds are DEBUG lines and counted, and
the first WARNING after the interval says how many were not. A kind is the code's own words (a hook's
name, a family, an operation), never a caller's text; past `MAX_KINDS` kinds, new ones share one
allowance, so the table stays bounded whatever calls it. This module is neutral: it imports neither
`llm_cache.middleware` nor `llm_cache.router`.

It takes no lock (it is called from the loop and from worker threads alike, and a lock would have to
be renewed in a forked child): two threads racing may log one WARNING too many or miscount by one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

DEFAULT_INTERVAL = 60.0
"""Seconds between two WARNINGs of one kind."""
MAX_KINDS = 256
"""Kinds a `LogLimit` keeps apart; more share the allowance of one (`_OTHERS`)."""
_OTHERS = object()


class LogLimit:
    """`limit = LogLimit(logger)`, then `limit.warning("hook-raised", "hook %s raised", name)`."""

    def __init__(
        self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        """Seconds of a monotonic clock (tests give their own)."""
        self._kinds: dict[Hashable, list[Any]] = {}
        """Per kind: [when its last WARNING was logged, how many were not logged since]."""

    def warning(self, kind: Hashable, message: str, *args: object, exc_info: Any = None) -> None:
        """Log `message % args` as a WARNING unless one of `kind` was logged within `interval` seconds
        (then at DEBUG, and counted)."""
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None and len(self._kinds) >= MAX_KINDS:
            kind = _OTHERS
            state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            self.logger.debug(message, *args, exc_info=exc_info)
            return
        suppressed = state[1] if state is not None else 0
        self._kinds[kind] = [now, 0]
        if suppressed:
            message += " (%d more like it since the last such WARNING were logged at DEBUG)"
            args = (*args, suppressed)
        self.logger.warning(message, *args, exc_info=exc_info)
