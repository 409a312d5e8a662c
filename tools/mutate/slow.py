"""The slow path: the mutant written into a copy of the tree and its tests run by a fresh pytest, which
imports and collects everything again. It expresses every mutant, including those that run on
import or class creation."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from .coverage_map import CoverageMap
from .operators import Mutant, apply, diff
from .report import Result
from .runs import SlowLast, copy_tree, enter, finished


@dataclass
class Worker:
    """One copy of the tree, in which one mutant at a time is written and its tests run."""

    tree: Path
    timeout_floor: float
    maps: dict[str, CoverageMap]

    def run(self, tests: tuple[str, ...], timeout: float) -> tuple[int | None, float]:
        """(pytest's exit code, or None when it ran out of time; seconds)."""
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: run the tests, never return
            code = 3
            try:
                enter(self.tree, self.tree / ".mutation-output.txt")
                import pytest

                code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests], plugins=[SlowLast()]))
            finally:
                os._exit(code)
        return finished(pid, started + timeout), time.monotonic() - started

    def judge(self, mutant: Mutant) -> Result:
        path = self.tree / mutant.module
        source = path.read_text()
        mutated = apply(source, mutant)
        test_map = self.maps[mutant.module]
        tests = test_map.tests_for(mutant)
        assert tests, "an uncovered mutant is never run"
        path.write_text(mutated)
        try:
            code, seconds = self.run(tests, test_map.timeout(mutant, self.timeout_floor))
        finally:
            path.write_text(source)
        status = "timeout" if code is None else "survived" if code == 0 else "killed"
        return Result(mutant, status, seconds, diff(source, mutated) if status == "survived" else "", "slow")


def judge_slowly(
    chosen: list[Mutant], source: Path, parent: Path, workers: int, timeout_floor: float, maps: dict[str, CoverageMap]
) -> Iterator[Result]:
    """Each mutant's result, in order, from `workers` copies of `source` made under `parent`."""
    context = get_context("fork")
    with ProcessPoolExecutor(workers, context, _start_worker, (source, parent, timeout_floor, maps)) as pool:
        yield from pool.map(_judge, chosen)


_worker: Worker | None = None
"""The pool process's worker (a process pool hands its tasks to functions, not objects)."""


def _start_worker(source: Path, parent: Path, timeout_floor: float, maps: dict[str, CoverageMap]) -> None:
    global _worker
    sys.dont_write_bytecode = True
    _worker = Worker(copy_tree(source, parent), timeout_floor, maps)


def _judge(mutant: Mutant) -> Result:
    assert _worker is not None
    return _worker.judge(mutant)
