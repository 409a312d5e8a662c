"""A bounded await that never swallows its caller's cancel.

`asyncio.wait_for` before Python 3.12 returns the result of work that finished just as the waiting task
was cancelled, and the cancel is lost (bpo-42130): the call goes on for a caller who left. For a sync
caller that gave up during a lookup, the lookup then led a miss nobody would send, holding its
single-flight slot and lock. `asyncio.timeout` (3.11+) counts cancel requests and keeps the caller's.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(seconds: float | None, work: Awaitable[T]) -> T:
    """`await work`, or `TimeoutError` after `seconds` (None: no limit)."""
    if sys.version_info < (3, 11):  # pragma: no cover - no asyncio.timeout: wait_for's race stays
        return await asyncio.wait_for(work, seconds)
    async with asyncio.timeout(seconds):
        return await work
