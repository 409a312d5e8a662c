"""State renewed in a child forked from this process (gunicorn `--preload`, `multiprocessing` with fork).

A child gets a copy of the parent's memory but only the thread that forked. A lock another thread held
at that moment stays held for ever in the child, and state naming the parent's threads, tasks or calls
in flight (a loop thread, a listener task, a probe in flight, worker threads) names nothing there. An
object holding such state registers itself, and `os.register_at_fork` calls its `_renew_after_fork()`
in the child right after the fork, while the child has one thread: no call there sees the parent's copy.
A registration is a weak reference: it keeps nothing alive.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Protocol

logger = logging.getLogger("llm_cache.fork")


class Renewable(Protocol):
    def _renew_after_fork(self) -> None:
        """Replace, in a forked child, the locks and the state that name the parent's threads."""


_OWNERS: dict[int, weakref.ReferenceType[Any]] = {}
"""id -> the object to renew. Process-wide by nature, as the fork hook it feeds is (the stdlib's
`logging` keeps its locks to renew the same way); keyed by id, so an unhashable owner is welcome."""


def renew_after_fork(owner: Renewable) -> None:
    """Call `owner._renew_after_fork()` in every child forked while `owner` lives."""
    key = id(owner)

    def forget(ref: weakref.ReferenceType[Any]) -> None:
        if _OWNERS.get(key) is ref:
            del _OWNERS[key]

    _OWNERS[key] = weakref.ref(owner, forget)


def _renew_in_child() -> None:
    for ref in list(_OWNERS.values()):
        owner = ref()
        if owner is None:
            continue
        try:
            owner._renew_after_fork()
        except Exception:  # one owner's failure leaves the others renewed
            logger.exception("renewing %r after fork failed", owner)


os.register_at_fork(after_in_child=_renew_in_child)


__all__ = ["Renewable", "renew_after_fork"]
