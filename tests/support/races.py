"""Threads run against one another as closely as CPython lets them: for state that the sync and async
transports may touch at once from their loops' threads."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable

JOIN_DEADLINE = 120.0
"""Seconds each thread is given to end (the CI machine is loaded: far above what the work takes)."""


def raced(work: Callable[[str], None], names: Iterable[str]) -> list[BaseException]:
    """Run `work(name)` on a thread per name at once, the threads changing places between nearly every
    two bytecodes; what each raised (a thread that did not end in time is an AssertionError)."""
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            work(name)
        except BaseException as error:  # noqa: BLE001 (what the work raised is the finding)
            errors.append(error)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=run, args=(name,), daemon=True) for name in names]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(JOIN_DEADLINE)
    finally:
        sys.setswitchinterval(previous)
    assert not any(worker.is_alive() for worker in workers), "a racing thread did not end in time"
    return errors
