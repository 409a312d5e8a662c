"""Calibration from labelled prompt pairs, or from the verification outcomes a gateway collected:
what each threshold, with and without the guard, would serve, and which threshold meets a target
precision (`llm-cache calibrate`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._json_files import json_lines
from .embedders import Embedder
from .guard import agrees

THRESHOLDS = tuple(round(0.70 + 0.01 * i, 2) for i in range(30))
_FIELDS = (("a", "b"), ("text_a", "text_b"), ("sentence1", "sentence2"), ("prompt", "other"))


@dataclass(frozen=True, slots=True)
class Row:
    threshold: float
    guard: bool
    served: int
    right: int
    wrong: int
    positives: int
    negatives: int

    @property
    def precision(self) -> float:
        return self.right / self.served if self.served else 1.0

    @property
    def recall(self) -> float:
        return self.right / self.positives if self.positives else 0.0

    @property
    def wrong_rate(self) -> float:
        """Wrong answers among those served (1 - precision)."""
        return self.wrong / self.served if self.served else 0.0


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Prompt pairs from JSON lines: `{"a": ..., "b": ..., "label": 1}` (1: the same answer serves
    both); `text_a`/`text_b` and `sentence1`/`sentence2` are read too."""
    a, b, labels = [], [], []
    for number, item in json_lines(path):
        found = (names for names in _FIELDS if names[0] in item and names[1] in item)
        names = next(found, None) if isinstance(item, dict) else None
        if names is None or item.get("label") not in (0, 1, True, False):
            raise ValueError(f"{path}:{number}: expected {{'a': ..., 'b': ..., 'label': 0 or 1}}")
        a.append(str(item[names[0]]))
        b.append(str(item[names[1]]))
        labels.append(int(item["label"]))
    if not labels:
        raise ValueError(f"{path}: no pairs")
    return a, b, np.array(labels)


async def similarities(embedder: Embedder, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    left, right = await embedder.embed(list(a)), await embedder.embed(list(b))
    return np.asarray((np.asarray(left) * np.asarray(right)).sum(axis=1))


def table(
    similarity: np.ndarray, guard: np.ndarray, labels: np.ndarray, thresholds: Iterable[float] = THRESHOLDS
) -> list[Row]:
    """What each threshold serves, guard off and on."""
    positives, negatives = int(labels.sum()), int((labels == 0).sum())
    rows = []
    for threshold in thresholds:
        for use_guard in (False, True):
            served = (similarity >= threshold) & (guard if use_guard else True)
            right, wrong = int((served & (labels == 1)).sum()), int((served & (labels == 0)).sum())
            rows.append(Row(threshold, use_guard, right + wrong, right, wrong, positives, negatives))
    return rows


def meeting(rows: Sequence[Row], target: float, guard: bool) -> Row | None:
    """The lowest threshold whose precision (with the guard as given) reaches `target`, serving something."""
    return next((r for r in rows if r.guard == guard and r.served and r.precision >= target), None)


def report(a: Sequence[str], b: Sequence[str], labels: np.ndarray, similarity: np.ndarray, target: float) -> str:
    guard = np.array([agrees(x, y) for x, y in zip(a, b, strict=True)])
    head = f"{len(labels)} pairs, {int(labels.sum())} labelled 'same answer'"
    return _report(head, table(similarity, guard, labels), similarity, labels, target, (True, False))


def outcomes_report(records: Sequence[tuple[float, str]], target: float) -> str:
    """The same report over verification outcomes (a gateway's): `agreed` is a pair labelled 'same
    answer', `disagreed` one labelled different, and `not_verified` is left out (no verdict). Every
    candidate verified had passed the guard, so only the guard-on rows are there."""
    judged = [(s, outcome == "agreed") for s, outcome in records if outcome in ("agreed", "disagreed")]
    similarity = np.array([s for s, _ in judged], dtype=np.float64)
    labels = np.array([int(same) for _, same in judged], dtype=np.int64)
    unjudged = len(records) - len(judged)
    head = (
        f"{len(records)} verifications: {int(labels.sum())} agreed, {len(labels) - int(labels.sum())} disagreed, "
        f"{unjudged} not verified (left out)"
    )
    if not judged:
        return head + "\nNothing to calibrate on yet: no verification has a verdict."
    rows = [r for r in table(similarity, np.ones(len(labels), dtype=bool), labels) if r.guard]
    return _report(head, rows, similarity, labels, target, (True,))


def _report(
    head: str, rows: Sequence[Row], similarity: np.ndarray, labels: np.ndarray, target: float, guards: Sequence[bool]
) -> str:
    """Per threshold: served, precision, recall, wrong-hit rate; the threshold meeting `target` per
    guard setting; and a histogram of the similarities, same answer against different."""
    lines = [head, ""]
    lines += ["threshold  guard  served  precision  recall  wrong-hit rate"]
    lines += [
        f"{r.threshold:9.2f}  {'on ' if r.guard else 'off'}  {r.served:6d}  {r.precision:9.3f}  {r.recall:6.3f}"
        f"  {r.wrong_rate:14.3f}"
        for r in rows
    ]
    lines.append("")
    for use_guard in guards:
        best = meeting(rows, target, use_guard)
        setting = "guard on" if use_guard else "guard off"
        if best is None:
            lines.append(f"No threshold reaches precision {target:.3f} with the {setting}.")
        else:
            lines.append(
                f"Precision {target:.3f} with the {setting}: threshold {best.threshold:.2f} "
                f"(precision {best.precision:.3f}, recall {best.recall:.3f})."
            )
    lines += ["", "similarity   same  different"]
    edges = np.round(np.arange(-1.0, 1.0001, 0.05), 2)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (similarity >= low) & ((similarity < high) | (high >= 1.0))
        same, other = int((inside & (labels == 1)).sum()), int((inside & (labels == 0)).sum())
        if same or other:
            lines.append(f"{low:5.2f}-{high:4.2f}  {same:5d}  {other:9d}")
    return "\n".join(lines)
