"""How much memory a piece of work allocates at its peak (tracemalloc: deterministic for given input)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def with_peak(work: Callable[[], T]) -> tuple[T, int]:
    """`work()`'s result and the most bytes it held allocated at once while it ran."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
