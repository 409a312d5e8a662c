"""A call run in a child forked now (as gunicorn's pre-fork workers are), its result sent back."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

BOUND = 20.0
"""The longest a child may take to answer: one that does not is wedged (and killed)."""


def _report(report: Any, call: Callable[[], Any]) -> None:
    try:
        report.send(call())
    except BaseException as error:
        report.send(repr(error))


class ForkedChild:
    """`call()` run in a child forked now, its result (or the repr of what it raised) sent back."""

    def __init__(self, call: Callable[[], Any]) -> None:
        context = multiprocessing.get_context("fork")
        self._result, report = context.Pipe()
        self._process = context.Process(target=_report, args=(report, call))
        self._process.start()

    def result(self) -> Any:
        """What `call()` returned (or the repr of what it raised), and the child is gone: bounded waits."""
        try:
            assert self._result.poll(BOUND), f"the child did not answer within {BOUND}s"
            result = self._result.recv()
            self._process.join(BOUND)
            assert self._process.exitcode == 0
            return result
        finally:
            if self._process.is_alive():
                self._process.kill()
                self._process.join(BOUND)
