"""The mutation tool's mutants: which changes it makes, where, and what it leaves alone."""

from __future__ import annotations

from tools.mutation import apply, diff, mutants

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
