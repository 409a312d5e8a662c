"""Synthetic semantic-cache candidates with known answers, shared by the bounded-mode tests and
`benchmarks/semantic_eval.py --synthetic`."""

from __future__ import annotations

import math
import random


def known_answer_workload(seed: int, size: int, entries: int = 300) -> list[tuple[str, float, bool]]:
    """(stored answer, similarity, is the stored answer right) for `size` candidates: the chance of a
    right answer is a logistic curve of similarity whose midpoint is the stored answer's own (0.80 to
    0.92: some neighbourhoods are denser with near-misses than others)."""
    draw = random.Random(seed)
    midpoints = [draw.uniform(0.80, 0.92) for _ in range(entries)]
    out = []
    for _ in range(size):
        entry = draw.randrange(entries)
        similarity = draw.uniform(0.75, 1.0)
        right = draw.random() < 1 / (1 + math.exp(-80 * (similarity - midpoints[entry])))
        out.append((f"k{entry}", similarity, right))
    return out
