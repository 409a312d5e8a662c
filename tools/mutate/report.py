"""A mutant's result, and the per-module scores and survivors a run prints."""

from __future__ import annotations

from dataclasses import dataclass

from .operators import Mutant


@dataclass
class Result:
    mutant: Mutant
    status: str  # killed, survived, timeout, uncovered (a survivor no test runs)
    seconds: float
    diff: str = ""
    path: str = ""
    """How it was judged: "fast" (code swapped in a fork of a collected session), "slow" (a fresh
    pytest over a tree copy holding the mutant), "" when not run."""
    reason: str = ""
    """On the slow path, why the fast one could not express the mutant ("" when `--slow` chose it)."""
    killer: str = ""
    """On the fast path, the node id of the test that failed."""


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
