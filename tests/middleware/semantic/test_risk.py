"""Per-answer risk: an answer's chance of being wrong rises as similarity falls, around a switch point
of its own; answers without verdicts are judged by the pool's switch points."""

from __future__ import annotations

import math
import random

from llm_cache.middleware.semantic.risk import HISTORY, RiskModel


def verdicts(switch: float, seed: int, count: int = HISTORY) -> list[tuple[float, bool]]:
    """`count` verdicts at similarities uniform in 0.75-1, wrong along a slope-80 curve around `switch`."""
    draw = random.Random(seed)
    out = []
    for _ in range(count):
        similarity = draw.uniform(0.75, 1.0)
        out.append((similarity, draw.random() < 1 / (1 + math.exp(-80 * (switch - similarity)))))
    return out


def test_without_verdicts_every_switch_point_is_possible() -> None:
    model = RiskModel(floor=0.75)
    assert model.risk((), 0.76) > model.risk((), 0.9) > model.risk((), 0.99) > 0.0


def test_the_fit_finds_the_pool_s_switch_points_and_slope() -> None:
    model = RiskModel(floor=0.75)
    model.fit([verdicts(0.85 if i % 2 else 0.95, seed=i) for i in range(200)])

    assert model.slope in (40.0, 80.0, 160.0)
    assert model.risk((), 0.80) > 0.9  # below every switch point
    assert 0.3 < model.risk((), 0.90) < 0.7  # between the two kinds of answer
    assert model.risk((), 0.995) < 0.02


def test_an_answer_s_own_verdicts_place_it_among_the_pool_s_kinds() -> None:
    model = RiskModel(floor=0.75)
    model.fit([verdicts(0.85 if i % 2 else 0.95, seed=i) for i in range(200)])
    early, late = verdicts(0.85, seed=1000, count=8), verdicts(0.95, seed=1001, count=8)

    assert model.risk(early, 0.91) < 0.05 < 0.9 < model.risk(late, 0.91)


def test_fitting_no_verdicts_changes_nothing() -> None:
    model = RiskModel(floor=0.75)
    before = model.risk((), 0.9)
    model.fit([[], []])
    assert model.risk((), 0.9) == before
