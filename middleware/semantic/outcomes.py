"""Bounded mode's recent verification outcomes, kept for calibration on real traffic (the gateway
serves them to `llm-cache calibrate --from-gateway`)."""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

OUTCOMES = {True: "agreed", False: "disagreed", None: "not_verified"}
"""A verification's outcome by the judge's verdict (None: the judge failed, timed out or said neither)."""


@runtime_checkable
class OutcomeLog(Protocol):
    """The most recent (similarity, outcome) records, newest first; older ones are dropped."""

    async def log_outcome(self, similarity: float, outcome: str) -> None: ...

    async def outcomes(self, limit: int) -> list[tuple[float, str]]: ...


class InProcessOutcomes:
    """The last `max_records` outcomes of this process."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: deque[tuple[float, str]] = deque(maxlen=max_records)

    async def log_outcome(self, similarity: float, outcome: str) -> None:
        self._records.appendleft((similarity, outcome))

    async def outcomes(self, limit: int) -> list[tuple[float, str]]:
        return list(self._records)[: max(0, limit)]


__all__ = ["OUTCOMES", "InProcessOutcomes", "OutcomeLog"]
