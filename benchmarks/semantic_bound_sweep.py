"""Bounded mode's settings varied on the Quora development replay: does any setting close the gap to
the best static threshold at the same wrong rate?

    PYTHONPATH=. .venv/bin/python benchmarks/semantic_bound_sweep.py [VARIANT ...]

Each variant replays the same development questions as `semantic_eval.py --replay --split dev
--dev-pairs 5000 --seeds 1 2 3 --of requests` with one setting of `ErrorBound` (a constructor
argument or a module constant of `llm_cache.middleware.semantic.bound`) changed, and prints the
bound's wrong rate and hit rate next to the best static threshold at or under that wrong rate.
Development data only: the held-out split is never loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.*, when run as a script
import benchmarks.semantic_eval as evaluation  # noqa: E402
from llm_cache.middleware.semantic import bound  # noqa: E402

VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "defaults": ({}, {}),
    "confidence 0.8": ({"confidence": 0.8}, {}),
    "verify less (min_verify 0.01, EXPLORE 0.05)": ({"min_verify": 0.01}, {"EXPLORE": 0.05}),
    "first test on needed verdicts (START 1)": ({}, {"START": 1}),
    "recent window HALF_LIFE 4000": ({}, {"HALF_LIFE": 4000}),
    "recent window HALF_LIFE 1000": ({}, {"HALF_LIFE": 1000}),
    "max_hit_error_rate 0.35": ({"max_hit_error_rate": 0.35}, {}),
}


def replayed(
    questions: list[str], cluster: dict[str, str], arguments: dict[str, Any], constants: dict[str, Any]
) -> str:
    """The replay's comparison rows with these settings, as printed by `semantic_eval.replay`."""
    saved = {name: getattr(bound, name) for name in constants}
    original = bound.ErrorBound.__init__

    def init(self: bound.ErrorBound, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, **arguments})

    printed = io.StringIO()
    try:
        for name, value in constants.items():
            setattr(bound, name, value)
        bound.ErrorBound.__init__ = init  # type: ignore[method-assign]
        embedder = evaluation.local_embedder(evaluation.MINILM)
        with contextlib.redirect_stdout(printed):
            asyncio.run(evaluation.replay("dev", questions, cluster, [1, 2, 3], embedder, ("requests",)))
    finally:
        bound.ErrorBound.__init__ = original  # type: ignore[method-assign]
        for name, value in saved.items():
            setattr(bound, name, value)
    rows = [line for line in printed.getvalue().splitlines() if "of requests |" in line and line.count("|") == 5]
    return " | ".join(cell for line in rows for cell in line.strip("| ").split(" | ")[1:])


def main() -> None:
    chosen = sys.argv[1:] or list(VARIANTS)
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    pairs = json.loads((data / "gptcache_similiar_qqp_full.json").read_text("utf-8"))
    questions = evaluation.replay_questions(pairs, False, 5000, 7)
    cluster = evaluation.clusters(pairs)
    print(
        "| setting | 1%: wrong, hits | best static | ratio | 2%: wrong, hits | best static | ratio "
        "| 5%: wrong, hits | best static | ratio |"
    )
    print("| --- |" + " --- | --- | ---: |" * 3)
    for name in chosen:
        arguments, constants = VARIANTS[name]
        print(f"| {name} | {replayed(questions, cluster, arguments, constants)} |", flush=True)


if __name__ == "__main__":
    main()
