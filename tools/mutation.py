"""Mutation testing of the decision core: which small changes to the code still pass its tests.

Each mutant is one deliberate change to one module (a flipped comparison, `and` for `or`, a changed
constant, a removed `not`, a deleted statement, `return None`), applied to a copy of the tree,
never to the working tree. Of the tests mapped to that module, those that run the mutant's lines
(coverage, recorded per test in one run of them all) run against it (`-x`, a timeout): a failing
run kills the mutant; a passing one means no test pins that behaviour (a survivor), unless the
mutant is equivalent (it changes nothing observable; see docs/testing.md). A mutant no test runs is
a survivor without a run ("uncovered").

    python tools/mutation.py                             # every module in MODULES
    python tools/mutation.py --module middleware/_keys.py --max-mutants 40
    python tools/mutation.py --module middleware/_engine.py --function Cache.plan

The tests run in a child forked from a process that has already imported the third-party
packages they use, so a mutant costs its tests' time, not an interpreter start.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import difflib
import hashlib
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

HUNDRED_TENANTS = "test_a_hundred_tenants_never_see_each_others_answers"  # 30 s of load: `make test` runs it
MODULES: dict[str, tuple[str, ...]] = {
    "middleware/_keys.py": (
        "tests/middleware/test_golden_keys.py",
        "tests/middleware/test_keys.py",
        "tests/middleware/test_isolation.py",
        f"--deselect=tests/middleware/test_isolation.py::{HUNDRED_TENANTS}",
    ),
    "middleware/_policy.py": ("tests/middleware/test_policy.py", "tests/middleware/test_golden_keys.py"),
    "middleware/semantic/guard.py": (
        "tests/middleware/semantic/test_guard.py",
        "tests/middleware/semantic/test_cache.py::test_the_guard_lets_paraphrases_through",
        "tests/middleware/semantic/test_cache.py::test_the_guard_vetoes_a_changed_fact",
    ),
    "middleware/semantic/bound.py": ("tests/middleware/semantic/test_bound.py",),
    "router/_retry.py": ("tests/router/test_breaker.py", "tests/router/test_core.py"),
    "router/_breaker.py": ("tests/router/test_breaker.py", "tests/router/test_core.py"),
    "router/_core.py": (
        "tests/router/test_core.py",
        "tests/router/test_errors.py",
        "tests/router/test_api.py",
        "tests/router/test_cancellation.py",
        "tests/router/test_telemetry.py",
        "tests/router/test_cross_family.py",
    ),
    "middleware/_engine.py": (
        "tests/middleware/test_engine.py",
        "tests/middleware/test_plan.py",
        "tests/middleware/test_what_may_be_stored.py",
        "tests/middleware/test_prepared_memo.py",
        "tests/middleware/semantic/test_cache.py",
        "tests/middleware/test_telemetry.py",
        "tests/middleware/test_distributed.py",
        "tests/middleware/test_additions.py",
    ),
    "middleware/_additions.py": (
        "tests/middleware/test_additions.py",
        "tests/middleware/test_prompt_caching.py",
        "tests/middleware/test_plan.py",
        "tests/middleware/test_prepared_memo.py::test_an_addition_the_upstream_refused_is_left_out_of_requests_prepared_before",
    ),
    "middleware/_singleflight.py": (
        "tests/middleware/test_engine.py",
        "tests/middleware/test_distributed.py",
        "tests/middleware/test_singleflight.py",
    ),
    "middleware/_recorder.py": (
        "tests/middleware/test_recorder.py",
        "tests/middleware/test_engine.py",
        "tests/middleware/test_plan.py",
        "tests/middleware/test_what_may_be_stored.py",
        "tests/middleware/test_telemetry.py",
        "tests/middleware/test_additions.py",
        "tests/router/test_with_cache.py",
        "tests/middleware/test_transport.py::test_a_stream_is_stored_at_its_terminal_event_whatever_the_reader_does_next",
        "tests/middleware/test_hooks.py",
        "tests/middleware/test_distributed.py",
        "tests/middleware/semantic/test_cache.py",
    ),
    "middleware/_relay.py": (
        "tests/middleware/test_relay.py",
        "tests/middleware/test_asgi.py",
        "tests/middleware/test_stream_fidelity.py",
    ),
    "middleware/_prepared_memo.py": ("tests/middleware/test_prepared_memo.py",),
    "middleware/providers/openai.py": (
        "tests/middleware/providers/test_openai.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_chat_stream_properties.py",
        "tests/middleware/providers/test_storable_replays.py",
    ),
    "middleware/providers/anthropic.py": (
        "tests/middleware/providers/test_anthropic.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_bedrock.py",
        "tests/middleware/providers/test_storable_replays.py",
    ),
    "middleware/providers/gemini.py": (
        "tests/middleware/providers/test_gemini.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_storable_replays.py",
    ),
    "middleware/providers/bedrock.py": (
        "tests/middleware/providers/test_bedrock.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/test_bedrock.py",
    ),
    "middleware/providers/base.py": (
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_openai.py",
        "tests/middleware/providers/test_anthropic.py",
        "tests/middleware/providers/test_gemini.py",
    ),
    "middleware/providers/converse.py": (
        "tests/middleware/providers/test_converse.py",
        "tests/middleware/providers/test_converse_stream_properties.py",
        "tests/middleware/test_bedrock.py",
    ),
    "middleware/providers/deltas.py": (
        "tests/middleware/providers/test_deltas.py",
        "tests/middleware/providers/test_chat_stream_properties.py",
    ),
    "middleware/providers/sse.py": (
        "tests/middleware/providers/test_sse.py",
        "tests/middleware/providers/test_anthropic.py",
    ),
    "middleware/providers/eventstream.py": (
        "tests/middleware/providers/test_eventstream.py",
        "tests/middleware/providers/test_bedrock.py",
    ),
}
"""The modules mutated by default, each with the tests that specify it (missing files are skipped)
and any other pytest arguments."""

COMPARE_FLIPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
OPERATOR_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Pow: ast.Mult,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
QUIET_CALLS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "warn", "_warn"})
"""Calls whose string arguments are messages for people: their wording is not mutated."""
SKIP_PRAGMA = "pragma: no mutate"
TYPE_FORMS = frozenset({"Callable", "Union", "Optional", "Literal", "Annotated", "TypeAlias", "Mapping", "Sequence"})
DELETABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Raise, ast.Delete)
"""Statements replaced by `pass` (inside functions only: deleting a module's or class's definitions
fails every import, which says nothing about the tests)."""


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    description: str
    start: tuple[int, int]
    end: tuple[int, int]
    replacement: str
    function: str = ""
    """The qualified name of the function the mutant is in (`Cache.plan`); empty outside functions."""
    lines: tuple[int, ...] = ()
    """The lines whose coverage says which tests run the mutant: its statement's first line to its end."""

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}"


@dataclass
class Result:
    mutant: Mutant
    status: str  # killed, survived, timeout, uncovered (a survivor no test runs)
    seconds: float
    diff: str = ""


# -- mutants ---------------------------------------------------------------------------------------


def _parented(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _skipped(tree: ast.Module) -> set[ast.AST]:
    """Nodes never mutated: docstrings, annotations, decorators, f-strings, `TYPE_CHECKING` blocks,
    `__all__`, and the messages of raised errors and log calls."""
    skipped: set[ast.AST] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            for statement in node.body:  # every bare string statement documents what precedes it
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    skip(statement)
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
            skip(node.returns)
            for argument in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs):
                skip(argument.annotation)
            for argument in (node.args.vararg, node.args.kwarg):
                skip(argument.annotation if argument else None)
            for decorator in node.decorator_list:
                skip(decorator)
        elif isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                skip(decorator)
        elif isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.JoinedStr) or _type_checking(node) or _dunder_all(node) or _type_alias(node):
            skip(node)
        elif isinstance(node, ast.Raise):
            for message in ast.walk(node):
                if isinstance(message, ast.Constant) and isinstance(message.value, str):
                    skipped.add(message)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in QUIET_CALLS:
                for message in ast.walk(node):
                    if isinstance(message, ast.Constant) and isinstance(message.value, str):
                        skipped.add(message)
    return skipped


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _dunder_all(node: ast.AST) -> bool:
    return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)


def _type_alias(node: ast.AST) -> bool:
    """`ScopeFunction = Callable[[ScopeRequest], "str | None"]`: its strings are types, never values."""
    return (
        isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Subscript)
        and ast.unparse(node.value.value).rpartition(".")[2] in TYPE_FORMS
    )


def _changed(node: ast.AST) -> Iterator[tuple[str, ast.AST | str]]:
    """(description, replacement node or text) for each mutation of `node` itself."""
    if isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            flipped = COMPARE_FLIPS.get(type(op))
            if flipped is not None:
                mutated = copy.deepcopy(node)
                mutated.ops[index] = flipped()
                yield f"{type(op).__name__} -> {flipped.__name__}", mutated
    elif isinstance(node, ast.BinOp | ast.AugAssign):
        swapped = OPERATOR_SWAPS.get(type(node.op))
        if swapped is not None:
            mutated = copy.deepcopy(node)
            mutated.op = swapped()
            yield f"{type(node.op).__name__} -> {swapped.__name__}", mutated
    elif isinstance(node, ast.BoolOp):
        mutated = copy.deepcopy(node)
        mutated.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"{type(node.op).__name__} -> {type(mutated.op).__name__}", mutated
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        yield f"{type(node.op).__name__} removed", node.operand
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield f"{value} -> {not value}", ast.Constant(not value)
        elif isinstance(value, int | float):
            yield f"{value!r} -> {value + 1!r}", ast.Constant(value + 1)
        elif isinstance(value, str):
            yield "string changed", ast.Constant(f"XX{value}XX")
        elif isinstance(value, bytes):
            yield "bytes changed", ast.Constant(b"XX" + value + b"XX")
    elif isinstance(node, ast.Return) and node.value is not None:
        value = node.value
        if not (isinstance(value, ast.Constant) and (value.value is None or isinstance(value.value, bool))):
            yield "return None", "return None"
    elif isinstance(node, ast.Break):
        yield "break -> continue", "continue"
    elif isinstance(node, ast.Continue):
        yield "continue -> break", "break"
    if isinstance(node, DELETABLE) and getattr(node, "value", True) is not None:
        yield "statement deleted", "pass"


def _owners(tree: ast.Module) -> dict[ast.AST, str]:
    """Each node's innermost enclosing function by qualified name (`Cache.plan`), "" outside any."""
    owners: dict[ast.AST, str] = {}

    def visit(node: ast.AST, path: tuple[str, ...], function: str) -> None:
        for child in ast.iter_child_nodes(node):
            owners[child] = function
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                inner = (*path, child.name)
                visit(child, inner, function if isinstance(child, ast.ClassDef) else ".".join(inner))
            else:
                visit(child, path, function)

    visit(tree, (), "")
    return owners


def _statement_lines(tree: ast.Module) -> dict[ast.AST, int]:
    """Each node's innermost enclosing statement's first line: where coverage records it."""
    first: dict[ast.AST, int] = {}
    for statement in ast.walk(tree):
        if isinstance(statement, ast.stmt):
            for node in _own_nodes(statement):
                first[node] = statement.lineno
    return first


def _own_nodes(statement: ast.stmt) -> Iterator[ast.AST]:
    """The statement and the nodes inside it that no statement nested in it holds."""
    pending: list[ast.AST] = [statement]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, ast.stmt))


def in_functions(mutant: Mutant, names: list[str]) -> bool:
    """Whether the mutant is in one of the named functions (`plan`, `Cache.plan`; `Cache`: its methods)."""
    return any(f".{name}." in f".{mutant.function}." for name in names)


def mutants(module: str, source: str) -> list[Mutant]:
    """Every mutant of `source` that still compiles, in source order."""
    tree = ast.parse(source)
    skipped = _skipped(tree)
    owners = _owners(tree)
    statement_lines = _statement_lines(tree)
    definitions = {id(s) for n in ast.walk(tree) if isinstance(n, ast.Module | ast.ClassDef) for s in n.body}
    lines = source.split("\n")  # ast's numbering: str.splitlines would also split on form feeds
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if node in skipped or not hasattr(node, "end_lineno") or node.end_lineno is None:
            continue
        if SKIP_PRAGMA in lines[node.lineno - 1]:
            continue
        for description, replacement in _changed(node):
            if replacement == "pass" and id(node) in definitions:
                continue
            text = replacement if isinstance(replacement, str) else f"({ast.unparse(replacement)})"
            if isinstance(node, ast.stmt) and not isinstance(replacement, str):
                text = ast.unparse(replacement)
            mutant = Mutant(
                module,
                node.lineno,
                description,
                (node.lineno, node.col_offset),
                (node.end_lineno, node.end_col_offset or 0),
                text,
                owners.get(node, ""),
                tuple(range(statement_lines.get(node, node.lineno), node.end_lineno + 1)),
            )
            try:
                compile(apply(source, mutant), module, "exec")
            except SyntaxError:
                continue
            found.append(mutant)
    found.sort(key=lambda m: (m.start, m.description))
    return found


def apply(source: str, mutant: Mutant) -> str:
    """`source` with the mutant's span (ast positions: 1-based lines, UTF-8 byte columns) replaced."""
    lines = source.encode("utf-8").splitlines(keepends=True)
    (first, start), (last, end) = mutant.start, mutant.end
    head = b"".join(lines[: first - 1]) + lines[first - 1][:start]
    tail = lines[last - 1][end:] + b"".join(lines[last:])
    return (head + mutant.replacement.encode("utf-8") + tail).decode("utf-8")


def diff(source: str, mutated: str) -> str:
    changed = difflib.unified_diff(source.splitlines(), mutated.splitlines(), lineterm="", n=0)
    return "\n".join(line for line in changed if line[:1] in "+-" and line[:3] not in ("+++", "---"))


# -- running ---------------------------------------------------------------------------------------


class _SlowLast:
    """A pytest plugin: property-based and `slow` tests run after the quick ones, so `-x` stops sooner."""

    def pytest_collection_modifyitems(self, items: list) -> None:  # type: ignore[type-arg]
        def slow(item) -> bool:  # type: ignore[no-untyped-def]
            hypothesis = getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
            return bool(hypothesis or item.get_closest_marker("slow"))

        items.sort(key=slow)


class _PerTest:
    """A pytest plugin: coverage records each test's lines under its node id ("": import and collection)."""

    def __init__(self, measured: Any) -> None:
        self.measured = measured
        self.ran: list[str] = []

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.measured.switch_context(nodeid)
        self.ran.append(nodeid)

    def pytest_runtest_logfinish(self) -> None:
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

    def tests_for(self, mutant: Mutant) -> tuple[str, ...]:
        """pytest's arguments for the tests that run the mutant's lines, in their order; empty when none does."""
        ids = {test for line in mutant.lines for test in self.lines.get(line, ())}
        if "" in ids:  # run on import or collection (a constant, a default): any test may depend on it
            return self.tests
        options = tuple(option for option in self.tests if option.startswith("-"))
        return (*options, *(test for test in self.ran if test in ids)) if ids else ()


@dataclass
class Worker:
    """One copy of the tree, in which one mutant at a time is written and its tests run."""

    tree: Path
    timeout_floor: float
    maps: dict[str, CoverageMap] = field(default_factory=dict)

    @classmethod
    def create(cls, parent: Path, timeout_floor: float, maps: dict[str, CoverageMap] | None = None) -> Worker:
        tree = Path(tempfile.mkdtemp(prefix="tree-", dir=parent))
        shutil.copytree(ROOT, tree, symlinks=True, ignore=_not_copied, dirs_exist_ok=True)
        if (ROOT / ".cache").exists():  # the Redis Stack libraries the server fixtures look for
            (tree / ".cache").symlink_to((ROOT / ".cache").resolve())
        return cls(tree, timeout_floor, maps or {})

    def run(
        self, tests: tuple[str, ...], timeout: float, measured: str | None = None
    ) -> tuple[int | None, float, list[str]]:
        """(pytest's exit code or None on timeout, seconds, third-party modules the run imported);
        with `measured` (a module), its lines are recorded per test in `.mutation-coverage`."""
        loaded = self.tree / ".mutation-modules.json"
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: run the tests, never return
            code = 3
            try:
                os.setpgid(0, 0)
                output = os.open(self.tree / ".mutation-output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(output, 1)
                os.dup2(output, 2)
                os.chdir(self.tree)
                sys.path.insert(0, str(self.tree))
                import pytest

                plugins: list[object] = [_SlowLast()]
                if measured is not None:
                    import coverage

                    paths = [str(self.tree / measured), str(self.tree / "llm_cache" / measured)]
                    data = str(self.tree / ".mutation-coverage")
                    recorder = coverage.Coverage(data, include=paths, config_file=False)
                    recorder.start()
                    plugins.append(per_test := _PerTest(recorder))
                code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests], plugins=plugins))
                if measured is not None:
                    recorder.stop()
                    recorder.save()
                    (self.tree / ".mutation-ran.json").write_text(json.dumps(per_test.ran))
                loaded.write_text(json.dumps(_third_party(self.tree)))
            finally:
                os._exit(code)
        deadline = started + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                seconds = time.monotonic() - started
                modules = json.loads(loaded.read_text()) if loaded.exists() else []
                loaded.unlink(missing_ok=True)
                return os.waitstatus_to_exitcode(status), seconds, modules
            if time.monotonic() > deadline:
                _kill_group(pid)
                os.waitpid(pid, 0)
                return None, time.monotonic() - started, []
            time.sleep(0.02)  # polling a child's exit: the tool's own loop, not a test's synchronisation

    def map_tests(self, module: str, tests: tuple[str, ...]) -> CoverageMap:
        """Run the module's tests once under coverage; they must pass, or no mutant could be judged."""
        code, seconds, modules = self.run(tests, timeout=1200, measured=module)
        if code != 0:
            output = (self.tree / ".mutation-output.txt").read_text()[-3000:]
            raise SystemExit(f"{module}: its tests fail with no mutant (exit {code}): {' '.join(tests)}\n{output}")
        import coverage

        data = coverage.CoverageData(str(self.tree / ".mutation-coverage"))
        data.read()
        lines: dict[int, set[str]] = {}
        for path in data.measured_files():
            if Path(path).resolve() == (self.tree / module).resolve():
                for line, ids in data.contexts_by_lineno(path).items():
                    lines.setdefault(line, set()).update(ids)
        ran = json.loads((self.tree / ".mutation-ran.json").read_text())
        return CoverageMap(tests, seconds, modules, {line: sorted(ids) for line, ids in lines.items()}, ran)

    def judge(self, mutant: Mutant) -> Result:
        path = self.tree / mutant.module
        source = path.read_text()
        mutated = apply(source, mutant)
        test_map = self.maps[mutant.module]
        tests = test_map.tests_for(mutant)
        if not tests:
            return Result(mutant, "uncovered", 0.0, diff(source, mutated))
        path.write_text(mutated)
        try:
            code, seconds, _ = self.run(tests, max(self.timeout_floor, 3 * test_map.seconds + 5))
        finally:
            path.write_text(source)
        status = "timeout" if code is None else "survived" if code == 0 else "killed"
        return Result(mutant, status, seconds, diff(source, mutated) if status == "survived" else "")


def coverage_maps(modules: list[str], parent: Path) -> dict[str, CoverageMap]:
    """Each module's map, from a cache kept per module, tests and tree contents (in the temporary
    folder), else made in a tree copy of its own. The modules the runs imported are preloaded here,
    so that the workers forked later start with them."""
    maps: dict[str, CoverageMap] = {}
    mapper: Worker | None = None
    for module in modules:
        tests = tests_of(module)
        cached = MAPS / f"{module.replace('/', '-')}-{_tree_hash(module, tests)}.json"
        if cached.exists():
            saved = json.loads(cached.read_text())
            saved["lines"] = {int(line): ids for line, ids in saved["lines"].items()}
            maps[module] = CoverageMap(**{**saved, "tests": tuple(saved["tests"])})
        else:
            print(f"mapping the lines of {module} to its tests (once per tree)", flush=True)
            mapper = mapper or Worker.create(parent, 0)
            maps[module] = mapper.map_tests(module, tests)
            cached.parent.mkdir(exist_ok=True)
            cached.write_text(json.dumps(asdict(maps[module])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # in the order the runs imported them: asyncio, for one, breaks when its submodules come in another
        for name in dict.fromkeys(name for test_map in maps.values() for name in test_map.modules):
            with contextlib.suppress(Exception):  # a module that cannot be preloaded is imported later
                importlib.import_module(name)
    return maps


MAPS = Path(tempfile.gettempdir()) / "llm-cache-mutation-maps"


def _tree_hash(module: str, tests: tuple[str, ...]) -> str:
    digest = hashlib.sha256(json.dumps([module, tests]).encode())
    for folder in ("middleware", "router", "llm_cache", "tests", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """The tree's caches, its git data and its `.cache` link (linked again, not copied)."""
    return {name for name in names if name.startswith(".") and name != ".ci" or name == "__pycache__"}


def _third_party(tree: Path) -> list[str]:
    names = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if origin and not origin.startswith(str(tree)) and name != "__main__":
            names.append(name)
    return names


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the child and the servers its fixtures started


_worker: Worker | None = None


def _start_worker(parent: Path, timeout_floor: float, maps: dict[str, CoverageMap]) -> None:
    global _worker
    sys.dont_write_bytecode = True
    _worker = Worker.create(parent, timeout_floor, maps)


def _judge(mutant: Mutant) -> Result:
    assert _worker is not None
    return _worker.judge(mutant)


def tests_of(module: str) -> tuple[str, ...]:
    return tuple(test for test in MODULES[module] if test.startswith("-") or (ROOT / test.split("::")[0]).exists())


# -- report ----------------------------------------------------------------------------------------

STATUSES = ("killed", "survived", "uncovered", "timeout")


def report(results: list[Result]) -> str:
    lines = ["module                          killed survived uncovered timeout  score"]
    by_module: dict[str, list[Result]] = {}
    for result in results:
        by_module.setdefault(result.mutant.module, []).append(result)
    for module, group in by_module.items():
        counts = [sum(r.status == status for r in group) for status in STATUSES]
        judged = len(group)
        score = 100 * (counts[0] + counts[3]) / judged if judged else 100.0
        lines.append(f"{module:32}{counts[0]:6}{counts[1]:9}{counts[2]:10}{counts[3]:8}{score:6.1f}% of {judged}")
    survivors = [r for r in results if r.status in ("survived", "uncovered")]
    if survivors:
        lines.append("\nsurvivors:")
        for result in survivors:
            mutant = result.mutant
            uncovered = "  (not covered: no test runs it)" if result.status == "uncovered" else ""
            lines.append(f"{mutant.where}  {mutant.function or '-'}  {mutant.description}{uncovered}")
            lines.extend(f"    {line}" for line in result.diff.splitlines())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", help="mutate only this module (repeatable)")
    parser.add_argument("--tests", nargs="+", help="the tests for --module, in place of MODULES' (or for another)")
    parser.add_argument("--function", action="append", help="only mutants in this function (`plan`, `Cache.plan`)")
    parser.add_argument("--max-mutants", type=int, help="at most this many per module, spread over the module")
    parser.add_argument("--line", type=int, action="append", help="only mutants on this line (repeatable)")
    parser.add_argument("--workers", type=int, default=1, help="tree copies running mutants at once (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="least seconds a mutant's tests may take")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--list", action="store_true", help="list the mutants without running them")
    args = parser.parse_args(argv)

    if args.tests:
        if not args.module:
            parser.error("--tests needs --module")
        MODULES.update({module: tuple(args.tests) for module in args.module})
    unknown = set(args.module or ()) - set(MODULES)
    if unknown:
        parser.error(f"no tests are mapped to {', '.join(sorted(unknown))}: name them with --tests")
    chosen: list[Mutant] = []
    for module in args.module or list(MODULES):
        found = mutants(module, (ROOT / module).read_text())
        if args.function:
            found = [m for m in found if in_functions(m, args.function)]
        if args.line:
            found = [m for m in found if m.line in args.line]
        if args.max_mutants is not None and len(found) > args.max_mutants:
            step = len(found) / args.max_mutants
            found = [found[int(i * step)] for i in range(args.max_mutants)]
        chosen.extend(found)
    if args.function and not chosen:
        parser.error(f"no mutant is in a function named {', '.join(args.function)}")
    if args.list:
        for mutant in chosen:
            print(f"{mutant.where}  {mutant.function or '-'}  {mutant.description}  ->  {mutant.replacement}")
        return 0

    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llm-cache-mutation-") as trees:
        maps = coverage_maps(sorted({mutant.module for mutant in chosen}), Path(trees))
        context = get_context("fork")
        with ProcessPoolExecutor(args.workers, context, _start_worker, (Path(trees), args.timeout, maps)) as pool:
            for result in pool.map(_judge, chosen):
                results.append(result)
                mutant = result.mutant
                progress = f"[{len(results)}/{len(chosen)}] {result.status:9} {mutant.where} {mutant.description}"
                print(progress, flush=True)
    print(f"\n{report(results)}\n\n{len(results)} mutants in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r.mutant), **asdict(r)} for r in results], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
