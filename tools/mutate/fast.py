"""The fast path: collect once, fork per mutant, swap the code of the live functions.

One session process runs pytest over the module's tests in a copy of the tree, collecting them but
running none. For each mutant it forks a child, which gives every function of the module the code
of its twin in the mutated module (compiled with the same file name; code objects paired by
qualified name and order of occurrence), runs the tests that cover the mutant with `-x` semantics
and exits 1 when one failed. A child starts from the session's state: the tree's modules and the
tests imported and collected, no fixture set up.

A swap changes what functions do when called, nothing that already ran, so a mutant goes to the
slow path instead when it changes code run on import or class creation (module level, class
bodies, decorators, default values), a function run on import or collection, a function's closure
(`co_freevars`), or code no live function carries.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FunctionType
from typing import Any, NoReturn

import pytest

from .coverage_map import CoverageMap
from .operators import Mutant, apply, diff
from .report import Result
from .runs import SlowLast, copy_tree, enter, exited, finished, kill_group

SWAP_FAILED = 4
"""A child's exit code when it could not give the functions their mutated code."""


@dataclass(frozen=True)
class Deferred:
    """A mutant the fast path cannot express, for the slow path."""

    mutant: Mutant
    reason: str


@dataclass(frozen=True)
class Compiled:
    """A module's code objects in order of occurrence (depth first), with each one's enclosing code."""

    codes: list[CodeType]
    parents: list[int]
    """The index of each code's enclosing code; -1 for the module's."""

    @classmethod
    def of(cls, source: str, filename: str) -> Compiled:
        codes: list[CodeType] = []
        parents: list[int] = []
        pending: list[tuple[CodeType, int]] = [(compile(source, filename, "exec", dont_inherit=True), -1)]
        while pending:
            code, parent = pending.pop()
            parents.append(parent)
            codes.append(code)
            inner = [const for const in code.co_consts if isinstance(const, CodeType)]
            pending.extend((const, len(codes) - 1) for const in reversed(inner))
        return cls(codes, parents)


def _shape(code: CodeType) -> tuple[object, ...]:
    """What a code object does, without where its lines are or the inner code objects it holds
    (those are compared on their own)."""
    constants = tuple(
        ("code", c.co_qualname) if isinstance(c, CodeType) else (type(c).__name__, repr(c)) for c in code.co_consts
    )
    return (
        code.co_code,
        constants,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_flags,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
    )


def _is_function(code: CodeType) -> bool:
    """A function's code (run when called), as opposed to a module's or class body's (run once)."""
    return bool(code.co_flags & inspect.CO_NEWLOCALS)


def unswappable(original: Compiled, mutated: Compiled, carried: set[int]) -> str:
    """Why swapping code objects cannot express the mutation; "" when it can. `carried`: the
    indexes of the codes that live functions run."""
    if [code.co_qualname for code in original.codes] != [code.co_qualname for code in mutated.codes]:
        return "it changes which functions the module defines"
    for index, (before, after) in enumerate(zip(original.codes, mutated.codes, strict=True)):
        if _shape(before) == _shape(after):
            continue
        if not _is_function(before):
            return "it runs on import or class creation"
        if before.co_freevars != after.co_freevars:
            return "it changes a closure"
        while index not in carried:  # a nested function's code reaches it through its parent's
            index = original.parents[index]
            if index < 0 or not _is_function(original.codes[index]):
                return "no live function holds it"
    return ""


def live_functions(path: Path) -> dict[str, list[tuple[FunctionType, int]]]:
    """The module's function objects in this process (methods, properties' accessors, closures made on
    import...), by the file name they were compiled with, each with its code's index in `Compiled`."""
    ours: dict[str, bool] = {}
    by_filename: dict[str, list[FunctionType]] = {}
    for thing in gc.get_objects():
        if isinstance(thing, FunctionType):
            filename = thing.__code__.co_filename
            if ours.setdefault(filename, Path(filename).resolve() == path):
                by_filename.setdefault(filename, []).append(thing)
    source = path.read_text()
    found: dict[str, list[tuple[FunctionType, int]]] = {}
    for filename, functions in by_filename.items():
        codes = Compiled.of(source, filename).codes
        for function in functions:
            index = next((i for i, code in enumerate(codes) if code == function.__code__), None)
            if index is not None:  # else compiled from another version of the file: left alone
                found.setdefault(filename, []).append((function, index))
    return found


@dataclass
class _Running:
    index: int
    deadline: float
    started: float = field(default_factory=time.monotonic)
    output: int = -1
    """The read end of the pipe the child writes the failed test's node id to."""


class _Session:
    """A pytest plugin that runs no test itself: it forks a child per mutant once the tests are
    collected (the fast path described in the module's docstring)."""

    # known once the tests are collected
    items: dict[str, pytest.Item]
    path: Path
    source: str
    original: Compiled
    live: dict[str, list[tuple[FunctionType, int]]]

    def __init__(
        self, mutants: list[Mutant], test_map: CoverageMap, workers: int, floor: float, emit: Callable[..., None]
    ) -> None:
        self.mutants = mutants
        self.test_map = test_map
        self.workers = workers
        self.floor = floor
        self.emit = emit

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.testsfailed:
            self.emit(error=f"{session.testsfailed} errors while collecting the tests")
            return True
        self.items = {item.nodeid: item for item in session.items}
        self.path = (session.config.rootpath / self.mutants[0].module).resolve()
        self.live = live_functions(self.path)
        self.source = self.path.read_text()
        self.original = Compiled.of(self.source, str(self.path))
        running: dict[int, _Running] = {}
        pending = list(range(len(self.mutants)))[::-1]
        signal.signal(signal.SIGTERM, lambda *_: self._stop(running))
        while pending or running:
            while pending and len(running) < self.workers:
                index = pending.pop()
                mutated = apply(self.source, self.mutants[index])
                reason = self._why_slow(self.mutants[index], mutated)
                if reason:
                    self.emit(index=index, slow=reason)
                else:
                    running.update(self._fork(index, session, mutated))
            for pid, run in list(running.items()):
                if exited(pid) or time.monotonic() > run.deadline:
                    del running[pid]
                    self._report(pid, run)
            time.sleep(0.02)  # polling children's exits: the tool's own loop, not a test's synchronisation
        return True

    def _why_slow(self, mutant: Mutant, mutated: str) -> str:
        """Why the mutant needs the slow path; "" when a swap expresses it."""
        ids = self.test_map.test_ids(mutant)
        if ids[:1] == [""]:
            return "a line of it runs on import or collection"
        if any(test not in self.items for test in ids):
            return "a test that runs it is not collected"
        carried = {index for functions in self.live.values() for _, index in functions}
        return unswappable(self.original, Compiled.of(mutated, str(self.path)), carried)

    def _fork(self, index: int, session: pytest.Session, mutated: str) -> dict[int, _Running]:
        mutant = self.mutants[index]
        items = [self.items[test] for test in self.test_map.test_ids(mutant)]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _judge_in_child(session, mutated, self.live, items, write)
        os.close(write)
        deadline = time.monotonic() + self.test_map.timeout(mutant, self.floor)
        return {pid: _Running(index, deadline, output=read)}

    def _report(self, pid: int, run: _Running) -> None:
        code = finished(pid, run.deadline)
        killer = os.read(run.output, 65536).decode() if code is not None else ""
        os.close(run.output)
        seconds = time.monotonic() - run.started
        if code == SWAP_FAILED:
            self.emit(index=run.index, slow=f"the swap failed: {killer}")
        else:
            status = "timeout" if code is None else "survived" if code == 0 else "killed"
            self.emit(index=run.index, status=status, seconds=seconds, killer=killer)

    def _stop(self, running: dict[int, _Running]) -> NoReturn:
        for pid in running:
            kill_group(pid)
        os._exit(1)


def _judge_in_child(
    session: pytest.Session,
    mutated: str,
    live: dict[str, list[tuple[FunctionType, int]]],
    items: list[pytest.Item],
    output: int,
) -> NoReturn:
    """Swap in the mutant, run the items with `-x` semantics, write the failed test's node id to
    `output` and exit 1 (0 when all passed)."""
    code = SWAP_FAILED
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)
        silent = os.open(os.devnull, os.O_WRONLY)
        os.dup2(silent, 1)
        os.dup2(silent, 2)
        try:
            for filename, functions in live.items():
                twins = Compiled.of(mutated, filename).codes
                for function, index in functions:
                    function.__code__ = twins[index]
        except Exception as error:
            os.write(output, repr(error).encode())
            raise
        code = 1
        for position, item in enumerate(items):
            following = items[position + 1] if position + 1 < len(items) else None
            failed = session.testsfailed
            item.ihook.pytest_runtest_protocol(item=item, nextitem=following)
            if session.testsfailed > failed or session.shouldstop:
                os.write(output, item.nodeid.encode())
                break
        else:
            code = 0
    finally:
        os._exit(code)


def judge_fast(
    mutants: list[Mutant], source: Path, parent: Path, workers: int, timeout_floor: float, test_map: CoverageMap
) -> Iterator[Result | Deferred]:
    """Each mutant of one module judged on the fast path, or deferred to the slow one, as they finish;
    the session runs in a copy of `source` made under `parent`."""
    tree = copy_tree(source, parent)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the session: never returns
        code = 3
        try:
            os.close(read)
            enter(tree, tree / ".mutation-session.txt")
            with os.fdopen(write, "w", buffering=1) as lines:

                def emit(**fields: Any) -> None:
                    lines.write(json.dumps(fields) + "\n")

                plugin = _Session(mutants, test_map, workers, timeout_floor, emit)
                arguments = ["-q", "-p", "no:cacheprovider", "--capture=sys", *test_map.tests]
                code = int(pytest.main(arguments, plugins=[SlowLast(), plugin]))
        finally:
            os._exit(code)
    os.close(write)
    judged, complete = 0, False
    try:
        with os.fdopen(read) as lines:
            for line in lines:
                fields = json.loads(line)
                if "error" in fields:
                    raise SystemExit(f"{mutants[0].module}: {fields['error']}; see {tree}/.mutation-session.txt")
                judged += 1
                mutant = mutants[fields["index"]]
                if "slow" in fields:
                    yield Deferred(mutant, fields["slow"])
                    continue
                status = fields["status"]
                original = (tree / mutant.module).read_text()
                shown = diff(original, apply(original, mutant)) if status == "survived" else ""
                yield Result(mutant, status, fields["seconds"], shown, "fast", killer=fields["killer"])
        complete = True
    finally:
        if not complete and not exited(pid):  # interrupted: the session kills the children it forked
            os.kill(pid, signal.SIGTERM)
        finished(pid, time.monotonic() + 30)
    if judged < len(mutants):
        log = (tree / ".mutation-session.txt").read_text()[-3000:]
        raise SystemExit(f"{mutants[0].module}: the fast session ended after {judged} of {len(mutants)}:\n{log}")
