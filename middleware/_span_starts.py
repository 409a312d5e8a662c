"""The memo of span starts (`Telemetry._labels`): what a call's span starts with, by the endpoint,
path, model and upstream it was worked out from, all of them the caller's text.

Kept first come, a caller naming junk models (ones the upstream refuses) filled it, and every real
model named afterwards was worked out again on each call for the life of the process. So, as model
labels are (`_model_labels.py`), a start earns a lasting place (`PROVEN` of them) only once a call
with it got a 2xx answer or a hit; until then it waits among the `UNPROVEN` most recently used, where
junk pushes out only other unproven starts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from ._model_labels import MAX_MODELS

PROVEN = 4 * MAX_MODELS
"""Starts of calls that got an answer, kept for good (until the memo is cleared)."""
UNPROVEN = 64
"""Starts no answer has proven yet, the most recently used."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class StartMemo(Generic[K, V]):
    """Proven starts in `proven` (read first, in line, by the hit path) and unproven ones beside them."""

    __slots__ = ("proven", "unproven")

    def __init__(self) -> None:
        self.proven: dict[K, V] = {}
        self.unproven: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self.proven.get(key)
        if found is None:
            found = self.unproven.get(key)
            if found is not None:
                self.unproven.move_to_end(key)
        return found

    def add(self, key: K, start: V) -> None:
        """A start worked out for `key`, not proven yet."""
        unproven = self.unproven
        unproven[key] = start
        unproven.move_to_end(key)
        while len(unproven) > UNPROVEN:
            unproven.popitem(last=False)

    def prove(self, key: K, start: V) -> bool:
        """A call started with `start` got an answer: keep it for good, while places last. True when kept."""
        self.unproven.pop(key, None)
        if len(self.proven) >= PROVEN:
            return False
        self.proven[key] = start
        return True

    def discard(self, stale: Callable[[K], bool]) -> None:
        """Drop the starts whose key is `stale` (worked out with a model label that has changed since)."""
        for memo in (self.proven, self.unproven):
            for key in [key for key in memo if stale(key)]:
                del memo[key]

    def clear(self) -> None:
        self.proven.clear()
        self.unproven.clear()

    def __iter__(self) -> Iterator[K]:
        yield from self.proven
        yield from self.unproven

    def __len__(self) -> int:
        return len(self.proven) + len(self.unproven)


__all__ = ["PROVEN", "UNPROVEN", "StartMemo"]
