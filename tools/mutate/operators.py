"""Mutants: the small deliberate changes the tool makes to a module's source, and where they are."""

from __future__ import annotations

import ast
import copy
import difflib
from collections.abc import Iterator
from dataclasses import dataclass

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
