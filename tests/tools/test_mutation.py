"""The mutation tool: which changes it makes, where, what it leaves alone, and which tests run each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.mutate.coverage_map import CoverageMap
from tools.mutate.fast import Compiled, live_functions, unswappable
from tools.mutate.operators import Mutant, apply, diff, in_functions, mutants

SOURCE = '''"""A module."""

LIMIT = 3
__all__ = ["within"]


def within(n: int, names: list[str]) -> bool:
    """Whether n is small."""
    if not names:
        raise ValueError("no names")
    total = n + 1
    return total < LIMIT and "x" in names  # pragma: no mutate


def label(n: int) -> str:
    return "many" if n > LIMIT else "few"
'''


def described(source: str) -> list[tuple[int, str]]:
    return [(m.line, m.description) for m in mutants("m.py", source)]


def test_each_operator_makes_its_mutant_at_its_line() -> None:
    assert described(SOURCE) == [
        (3, "3 -> 4"),
        (9, "Not removed"),
        (10, "statement deleted"),
        (11, "statement deleted"),
        (11, "Add -> Sub"),
        (11, "1 -> 2"),
        (16, "return None"),
        (16, "string changed"),
        (16, "Gt -> GtE"),
        (16, "string changed"),
    ]


def test_docstrings_annotations_messages_all_and_marked_lines_are_left_alone() -> None:
    lines = {line for line, _ in described(SOURCE)}
    assert not lines & {1, 4, 7, 8, 12}


def test_a_mutant_replaces_only_its_own_span_and_compiles() -> None:
    flipped = next(m for m in mutants("m.py", SOURCE) if m.description == "Gt -> GtE")
    mutated = apply(SOURCE, flipped)
    compile(mutated, "m.py", "exec")
    assert diff(SOURCE, mutated) == (
        '-    return "many" if n > LIMIT else "few"\n+    return "many" if (n >= LIMIT) else "few"'
    )


def test_columns_are_counted_in_bytes_as_ast_counts_them() -> None:
    source = 'def f(n: int) -> str:\n    return "é" if n < 1 else "ü"\n'
    flipped = next(m for m in mutants("m.py", source) if m.description == "Lt -> LtE")
    assert apply(source, flipped).splitlines()[1] == '    return "é" if (n <= 1) else "ü"'


def test_a_module_level_definition_is_never_deleted() -> None:
    assert (3, "statement deleted") not in described(SOURCE)


def test_a_mutant_knows_its_function_by_qualified_name() -> None:
    source = "class Cache:\n    def plan(self, n: int) -> bool:\n        return n > 1\n\n\ndef free() -> int:\n"
    source += "    return 2\n"
    found = mutants("m.py", source)
    assert {(m.line, m.function) for m in found} == {(3, "Cache.plan"), (7, "free")}
    for name in ("Cache.plan", "plan", "Cache"):
        assert {m.line for m in found if in_functions(m, [name])} == {3}
    assert not [m for m in found if in_functions(m, ["Other.plan", "pla"])]


def test_a_mutant_inside_a_statement_spanning_lines_is_looked_up_from_the_statements_first_line() -> None:
    source = "def f(a: int, b: int) -> bool:\n    return (\n        a > 1\n        and b > 2\n    )\n"
    flipped = next(m for m in mutants("m.py", source) if m.description == "Gt -> GtE" and m.line == 4)
    assert flipped.lines == (2, 3, 4)


MAPPED = CoverageMap(
    tests=("tests/test_m.py", "--deselect=tests/test_m.py::test_slow"),
    seconds=1.0,
    modules=[],
    lines={2: ["tests/test_m.py::test_a", "tests/test_m.py::test_b"], 3: ["", "tests/test_m.py::test_a"]},
    ran=["tests/test_m.py::test_b", "tests/test_m.py::test_c", "tests/test_m.py::test_a"],
)


def at(*lines: int) -> Mutant:
    return Mutant("m.py", lines[0], "Gt -> GtE", (lines[0], 0), (lines[-1], 1), "x", "f", lines)


def test_a_mutant_runs_only_the_tests_that_cover_its_lines_in_their_order_with_the_modules_options() -> None:
    assert MAPPED.tests_for(at(2)) == (
        "--deselect=tests/test_m.py::test_slow",
        "tests/test_m.py::test_b",
        "tests/test_m.py::test_a",
    )


def test_a_mutant_on_a_line_run_at_import_runs_every_test_and_one_no_test_runs_runs_none() -> None:
    assert MAPPED.tests_for(at(3)) == MAPPED.tests
    assert MAPPED.tests_for(at(5, 6)) == ()


SWAPPED = """LIMIT = 3


class Gate:
    opened: bool = False

    def allows(self, n: int, extra: int = 1) -> bool:
        return n + extra < LIMIT

    def counter(self) -> object:
        def count(n: int) -> int:
            return n + 1

        return count
"""


def swappable(description: str, line: int) -> str:
    """Why the fast path sends the mutant at `line` to the slow one ("" when a code swap expresses it),
    with a live function for every function the module defines at import."""
    mutant = next(m for m in mutants("m.py", SWAPPED) if m.line == line and m.description == description)
    original = Compiled.of(SWAPPED, "m.py")
    carried = {i for i, code in enumerate(original.codes) if code.co_qualname in ("Gate.allows", "Gate.counter")}
    return unswappable(original, Compiled.of(apply(SWAPPED, mutant), "m.py"), carried)


def test_a_mutant_in_a_function_body_is_expressed_by_swapping_its_code() -> None:
    assert swappable("Add -> Sub", 8) == ""
    assert swappable("Lt -> LtE", 8) == ""


def test_a_mutant_in_a_function_made_at_call_time_is_expressed_through_the_function_that_makes_it() -> None:
    assert swappable("Add -> Sub", 12) == ""


def test_a_mutant_run_on_import_or_class_creation_needs_the_slow_path() -> None:
    assert swappable("3 -> 4", 1) == "it runs on import or class creation"
    assert swappable("False -> True", 5) == "it runs on import or class creation"
    assert swappable("1 -> 2", 7) == "it runs on import or class creation"  # a default value


def test_the_live_functions_of_a_module_take_their_mutated_twins_code(tmp_path: Path) -> None:
    path = tmp_path / "swapped_module.py"
    path.write_text(SWAPPED)
    namespace: dict[str, Any] = {}
    exec(compile(SWAPPED, str(path), "exec", dont_inherit=True), namespace)
    gate = namespace["Gate"]()
    assert gate.allows(1)
    live = live_functions(path.resolve())
    mutant = next(m for m in mutants("m.py", SWAPPED) if m.line == 8 and m.description == "Add -> Sub")
    ((filename, functions),) = live.items()
    twins = Compiled.of(apply(SWAPPED, mutant), filename).codes
    for function, index in functions:
        function.__code__ = twins[index]
    assert gate.allows(3, extra=1)  # 3 - 1 < 3
    assert gate.counter()(1) == 2
