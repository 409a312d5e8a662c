"""Semantic-cache match quality on labelled prompt pairs: precision and recall by threshold, with
and without the guard, using the default embedder (all-MiniLM-L6-v2, local).

    .venv/bin/python benchmarks/semantic_eval.py [--data ../shared/data] [--qqp 5000] [--seed 7]

A pair counts as "served" when its cosine similarity clears the threshold (and, with the guard,
when `llm_cache.middleware.semantic.agrees` passes); label 1 means the same answer is acceptable. Precision:
of the pairs served, how many should have been (a wrong answer served is the costly error).
Recall: of the pairs that could have been served, how many were. Two sets (see the data's
PROVENANCE.md; evaluation only, never shipped):

- `redis_langcache_eval_chatgpt_pairs.csv`: 716 short prompts whose negatives differ by one
  entity, number, direction or qualifier (the `**` markers around changed words are stripped);
- `gptcache_similiar_qqp_full.json`: Quora question pairs, a seeded random sample of `--qqp`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import platform
import random
import time
from pathlib import Path

import numpy as np

from llm_cache.middleware.semantic import SentenceTransformerEmbedder, agrees

THRESHOLDS = (0.8, 0.85, 0.88, 0.9, 0.92, 0.95)


def langcache(data: Path) -> tuple[list[str], list[str], np.ndarray]:
    with (data / "redis_langcache_eval_chatgpt_pairs.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    a = [row["sentence1"].replace("**", "") for row in rows]
    b = [row["sentence2"].replace("**", "") for row in rows]
    return a, b, np.array([int(row["label"]) for row in rows])


def qqp(data: Path, size: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    pairs = json.loads((data / "gptcache_similiar_qqp_full.json").read_text(encoding="utf-8"))
    sample = random.Random(seed).sample(pairs, min(size, len(pairs)))
    return [p["text_a"] for p in sample], [p["text_b"] for p in sample], np.array([p["label"] for p in sample])


async def scores(embedder: SentenceTransformerEmbedder, a: list[str], b: list[str]) -> np.ndarray:
    left, right = await embedder.embed(a), await embedder.embed(b)
    return np.asarray((left * right).sum(axis=1))


def table(name: str, a: list[str], b: list[str], labels: np.ndarray, similarity: np.ndarray) -> None:
    guard = np.array([agrees(x, y) for x, y in zip(a, b, strict=True)])
    positives = int(labels.sum())
    print(f"\n## {name}: {len(labels)} pairs, {positives} positive")
    passed_positive, passed_negative = guard[labels == 1].mean(), guard[labels == 0].mean()
    print(f"The guard passes {passed_positive:.0%} of positives and {passed_negative:.0%} of negatives.\n")
    print("| threshold | guard | precision | recall | wrong answers served |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for threshold in THRESHOLDS:
        for use_guard in (False, True):
            served = (similarity >= threshold) & (guard if use_guard else True)
            right = int((served & (labels == 1)).sum())
            wrong = int((served & (labels == 0)).sum())
            precision = right / (right + wrong) if right + wrong else 1.0
            mode = "on" if use_guard else "off"
            print(f"| {threshold:.2f} | {mode} | {precision:.3f} | {right / positives:.3f} | {wrong} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--qqp", type=int, default=5000, help="QQP pairs to sample")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder()
    print(
        f"# {time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · {platform.machine()} · {embedder.name}"
    )
    for name, (a, b, labels) in (
        ("LangCache hard pairs", langcache(args.data)),
        (f"QQP sample (seed {args.seed})", qqp(args.data, args.qqp, args.seed)),
    ):
        started = time.perf_counter()
        similarity = asyncio.run(scores(embedder, a, b))
        elapsed = time.perf_counter() - started
        table(name, a, b, labels, similarity)
        print(f"\nEmbedding {2 * len(a)} texts took {elapsed:.1f} s (batched, CPU).")


if __name__ == "__main__":
    main()
