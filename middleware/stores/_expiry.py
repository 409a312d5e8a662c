"""Expiry for object stores that never delete by themselves (S3, GCS, Azure Blob): a wall-clock deadline
kept in the object's user metadata, written on `set` and enforced on read."""

from __future__ import annotations

from collections.abc import Callable


def deadline(clock: Callable[[], float], ttl: float | None) -> str | None:
    """The metadata value for an entry written now with `ttl` seconds to live; None: it never expires."""
    return None if ttl is None else f"{clock() + ttl:.3f}"


def expired(value: str | None, clock: Callable[[], float]) -> bool:
    """Whether an object whose metadata holds `value` is past its deadline (an unreadable one counts as expired)."""
    if value is None:
        return False
    try:
        return float(value) <= clock()
    except ValueError:
        return True
