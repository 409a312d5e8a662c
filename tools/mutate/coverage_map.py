"""Which of a module's tests run each of its lines: what bounds the tests a mutant runs."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .operators import Mutant
from .runs import SlowLast, copy_tree, enter, finished, third_party

MAPS = Path(tempfile.gettempdir()) / "llm-cache-mutation-maps"
"""Maps kept between runs, one per module, tests and tree contents."""


class _PerTest:
    """A pytest plugin: coverage records each test's lines under its node id ("": import and collection)."""

    def __init__(self, measured: Any) -> None:
        self.measured = measured
        self.durations: dict[str, float] = {}
        """Each test's node id and seconds (its fixtures' included), in the order they ran."""
        self.started = 0.0

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.measured.switch_context(nodeid)
        self.started = time.monotonic()

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.durations[nodeid] = time.monotonic() - self.started
        self.measured.switch_context("")


@dataclass
class CoverageMap:
    """Which of a module's tests run each of its lines, from one run of them all under coverage."""

    tests: tuple[str, ...]
    seconds: float
    """That run's time; coverage slows it, so it bounds a mutant's run from above."""
    modules: list[str]
    """The third-party modules it imported, preloaded so that each mutant's run starts with them."""
    lines: dict[int, list[str]]
    """line -> the node ids of the tests that ran it."""
    ran: list[str]
    """Every test's node id, in the order they ran (quick ones first, so `-x` stops early)."""
    durations: dict[str, float] = field(default_factory=dict)
    """Each test's seconds in that run."""

    def test_ids(self, mutant: Mutant) -> list[str]:
        """The node ids of the tests that run the mutant's lines, in their order ("" first when a line
        runs on import or collection)."""
        ids = {test for line in mutant.lines for test in self.lines.get(line, ())}
        return [""] * ("" in ids) + [test for test in self.ran if test in ids]

    def tests_for(self, mutant: Mutant) -> tuple[str, ...]:
        """pytest's arguments for the tests that run the mutant's lines, in their order; empty when none does."""
        ids = self.test_ids(mutant)
        if ids[:1] == [""]:  # run on import or collection (a constant, a default): any test may depend on it
            return self.tests
        options = tuple(option for option in self.tests if option.startswith("-"))
        return (*options, *ids) if ids else ()

    def timeout(self, mutant: Mutant, floor: float) -> float:
        """How long the mutant's tests may take: three times what they took in the mapping run (all of
        it for a mutant run on import) and 5 s, at least `floor`."""
        ids = self.test_ids(mutant)
        spent = self.seconds if ids[:1] == [""] else sum(self.durations.get(test, self.seconds) for test in ids)
        return max(floor, 3 * spent + 5)


def map_tests(tree: Path, module: str, tests: tuple[str, ...]) -> CoverageMap:
    """Run the module's tests once under coverage in `tree`; they must pass, or no mutant could be judged."""
    output, data, ran, loaded = (
        tree / name for name in (".mutation-output.txt", ".mutation-coverage", ".ran", ".mods")
    )
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run the tests, never return
        code = 3
        try:
            enter(tree, output)
            import coverage
            import pytest

            recorder = coverage.Coverage(
                str(data), include=[str(tree / module), str(tree / "llm_cache" / module)], config_file=False
            )
            recorder.start()
            per_test = _PerTest(recorder)
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests], plugins=[SlowLast(), per_test]))
            recorder.stop()
            recorder.save()
            ran.write_text(json.dumps(per_test.durations))
            loaded.write_text(json.dumps(third_party(tree)))
        finally:
            os._exit(code)
    exit_code = finished(pid, started + 1200)
    seconds = time.monotonic() - started
    if exit_code != 0:
        tail = output.read_text()[-3000:]
        raise SystemExit(f"{module}: its tests fail with no mutant (exit {exit_code}): {' '.join(tests)}\n{tail}")
    import coverage

    measured = coverage.CoverageData(str(data))
    measured.read()
    lines: dict[int, set[str]] = {}
    for path in measured.measured_files():
        if Path(path).resolve() == (tree / module).resolve():
            for line, ids in measured.contexts_by_lineno(path).items():
                lines.setdefault(line, set()).update(ids)
    by_line = {line: sorted(ids) for line, ids in lines.items()}
    durations = json.loads(ran.read_text())
    return CoverageMap(tests, seconds, json.loads(loaded.read_text()), by_line, list(durations), durations)


def coverage_maps(source: Path, modules: dict[str, tuple[str, ...]], parent: Path) -> dict[str, CoverageMap]:
    """Each module's map (`modules`: each one's pytest arguments), from a cache kept per module, tests
    and tree contents (in the temporary folder), else made in a copy of `source` of its own. The
    modules the runs imported are preloaded here, so that every process forked later starts with them."""
    maps: dict[str, CoverageMap] = {}
    mapper: Path | None = None
    for module, tests in modules.items():
        cached = MAPS / f"{module.replace('/', '-')}-{_tree_hash(source, module, tests)}.json"
        if cached.exists():
            saved = json.loads(cached.read_text())
            saved["lines"] = {int(line): ids for line, ids in saved["lines"].items()}
            maps[module] = CoverageMap(**{**saved, "tests": tuple(saved["tests"])})
        else:
            print(f"mapping the lines of {module} to its tests (once per tree)", flush=True)
            mapper = mapper or copy_tree(source, parent)
            maps[module] = map_tests(mapper, module, tests)
            cached.parent.mkdir(exist_ok=True)
            cached.write_text(json.dumps(asdict(maps[module])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # in the order the runs imported them: asyncio, for one, breaks when its submodules come in another
        for name in dict.fromkeys(name for test_map in maps.values() for name in test_map.modules):
            with contextlib.suppress(Exception):  # a module that cannot be preloaded is imported later
                importlib.import_module(name)
    return maps


def _tree_hash(source: Path, module: str, tests: tuple[str, ...]) -> str:
    digest = hashlib.sha256(json.dumps([module, tests]).encode())
    for folder in ("middleware", "router", "llm_cache", "tests", "tools"):
        for path in sorted((source / folder).rglob("*.py")):
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]
