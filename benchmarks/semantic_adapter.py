"""Does a linear map learned from labelled pairs separate duplicates better than the raw cosine?

    PYTHONPATH=. .venv/bin/python benchmarks/semantic_adapter.py [--model NAME] [--pairs 20000]

An "embedding adapter" (a weight per dimension, or a full matrix near the identity) is fitted on
three quarters of a Quora development sample (logistic loss on the scaled cosine of the mapped
vectors) and scored on the last quarter (pairs split by their first question, so that a question
asked in a scored pair is never an anchor of a fitted one), and on LangCache's hard pairs at the
threshold where the scored quarter reaches precision 0.90 with the guard. Development data only:
the held-out split is never loaded. Vectors come from `semantic_eval.py`'s cache when it has them.

A research probe, not a feature: weights fitted on Quora may not ship (its licence allows internal
evaluation only), so what it could show is what a user fitting on their own labelled traffic gains.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.*, when run as a script
from benchmarks.semantic_eval import (  # noqa: E402
    MINILM,
    MODELS,
    agrees,
    average_precision,
    embedded,
    langcache,
    local_embedder,
    lowest_threshold,
    qqp,
)

Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]


def cosine(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.asarray((x * z).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(z, axis=1))


def fitted(x: np.ndarray, z: np.ndarray, labels: np.ndarray, diagonal: bool, pull: float) -> Similarity:
    """The cosine after a map fitted on (x, z, labels); `pull` ties a full matrix to the identity."""
    import torch

    torch.manual_seed(0)
    left, right = torch.tensor(x), torch.tensor(z)
    target = torch.tensor(labels, dtype=torch.float32)
    dim = left.shape[1]
    identity = torch.eye(dim)
    weights = torch.zeros(dim, requires_grad=True) if diagonal else identity.clone().requires_grad_(True)
    scale, shift = torch.tensor(20.0, requires_grad=True), torch.tensor(-17.0, requires_grad=True)
    optimiser = torch.optim.Adam([weights, scale, shift], lr=0.01)

    def mapped(vectors: torch.Tensor) -> torch.Tensor:
        return vectors * torch.exp(weights) if diagonal else vectors @ weights

    for _ in range(300):
        optimiser.zero_grad()
        similarity = torch.nn.functional.cosine_similarity(mapped(left), mapped(right))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * similarity + shift, target)
        if not diagonal:
            loss = loss + pull * ((weights - identity) ** 2).sum()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        matrix = torch.diag(torch.exp(weights)) if diagonal else weights
    matrix_np = matrix.detach().numpy()
    return lambda a, b: cosine(a @ matrix_np, b @ matrix_np)


async def vectors(model: str, a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    texts = sorted({*a, *b})
    found = await embedded(local_embedder(model), texts)
    row = {text: i for i, text in enumerate(texts)}
    return found[[row[x] for x in a]], found[[row[y] for y in b]]


async def run(data: Path, model: str, pairs: int) -> None:
    a, b, labels = qqp(data, pairs, 7, held_out=False)
    left, right = await vectors(model, a, b)
    scored = np.array([int(hashlib.sha256(x.encode()).hexdigest()[-1], 16) % 4 == 0 for x in a])
    guard = np.array([agrees(x, y) for x, y in zip(a, b, strict=True)])
    hard_a, hard_b, hard_labels = langcache(data)
    hard_left, hard_right = await vectors(model, hard_a, hard_b)
    hard_guard = np.array([agrees(x, y) for x, y in zip(hard_a, hard_b, strict=True)])
    fit = ~scored
    print(f"{model}: {pairs} development pairs, fitted on {fit.sum()}, scored on {scored.sum()}\n")
    print("| map | Quora scored: AP | precision 0.90 from (recall) | LangCache: AP | precision / recall |")
    print("| --- | ---: | ---: | ---: | ---: |")
    maps: dict[str, Similarity] = {
        "none (raw cosine)": cosine,
        "a weight per dimension": fitted(left[fit], right[fit], labels[fit], diagonal=True, pull=0.0),
        "full matrix": fitted(left[fit], right[fit], labels[fit], diagonal=False, pull=0.0),
        "full matrix, pulled to identity (0.1)": fitted(left[fit], right[fit], labels[fit], diagonal=False, pull=0.1),
    }
    for name, similarity in maps.items():
        quora = similarity(left[scored], right[scored])
        ys, kept = labels[scored], guard[scored]
        reach = lowest_threshold(quora[kept], ys[kept], 0.90)
        threshold, recall = (reach[0], reach[1] * ys[kept].sum() / ys.sum()) if reach else (1.0, 0.0)
        hard = similarity(hard_left, hard_right)
        served = (hard >= threshold) & hard_guard
        right_served = int((served & (hard_labels == 1)).sum())
        print(
            f"| {name} | {average_precision(quora, ys):.3f} | {threshold:.3f} ({recall:.3f}) | "
            f"{average_precision(hard, hard_labels):.3f} | "
            f"{right_served / max(int(served.sum()), 1):.3f} / {right_served / hard_labels.sum():.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--model", choices=sorted(MODELS), default=MINILM)
    parser.add_argument("--pairs", type=int, default=20000, help="Quora development pairs to sample (seed 7)")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.data, arguments.model, arguments.pairs))


if __name__ == "__main__":
    main()
