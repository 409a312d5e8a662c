"""Per-answer risk: the chance that a stored answer is wrong for a prompt at a given similarity.

After vCache's per-prompt thresholds: each stored answer `k` has its own switch point `m_k`, the
similarity below which it tends to be wrong, and `P(wrong | s) = 1 / (1 + exp(-slope * (m_k - s)))`.
The switch points of all answers follow a distribution `G` (a prior on a grid, fitted by EM to the
verdicts of recently judged answers, the slope chosen from a few by the same fit's likelihood), so
an answer with no verdicts of its own is judged by the pool, and one with verdicts by its posterior.
The model only *orders* candidates by risk; what is served is decided by the test in `bound.py`,
which holds whether or not the model fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STEP = 0.005
"""The spacing of the switch-point grid."""
SLOPES = (20.0, 40.0, 80.0, 160.0)
"""Candidate slopes: from a curve rising over about 0.2 of similarity to one rising over 0.03."""
HISTORY = 32
"""Verdicts kept per stored answer (the most recent)."""
ROUNDS = 30
"""EM iterations per fit."""

History = Sequence[tuple[float, bool]]
"""One stored answer's verdicts: (similarity, judged wrong)."""


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


class RiskModel:
    """The prior over switch points and the slope; `risk` gives a candidate's posterior risk."""

    def __init__(self, floor: float) -> None:
        self.grid = np.arange(floor - 0.05, 1.05 + STEP / 2, STEP)
        self.slope = SLOPES[0]
        self.log_prior = np.full(len(self.grid), -np.log(len(self.grid)))

    def _log_likelihood(self, history: History, slope: float) -> np.ndarray:
        """log P(verdicts | m) for every switch point `m` of the grid."""
        if not history:
            return np.zeros(len(self.grid))
        similarity = np.fromiter((s for s, _ in history), float, len(history))
        wrong = np.fromiter((w for _, w in history), bool, len(history))
        logits = slope * (self.grid[None, :] - similarity[:, None])
        return np.where(wrong[:, None], _log_sigmoid(logits), _log_sigmoid(-logits)).sum(axis=0)

    def fit(self, histories: Sequence[History], slopes: Sequence[float] = SLOPES) -> None:
        """Refit the prior, and the slope among `slopes`, to these answers' verdicts (each answer
        counts once)."""
        histories = [h for h in histories if h]
        if not histories:
            return
        length = max(len(h) for h in histories)
        similarity = np.zeros((len(histories), length))
        outcome = np.zeros((len(histories), length))  # +1 wrong, -1 right, 0 no verdict
        for row, verdicts in enumerate(histories):
            similarity[row, : len(verdicts)] = [s for s, _ in verdicts]
            outcome[row, : len(verdicts)] = [1.0 if w else -1.0 for _, w in verdicts]
        distance = self.grid[None, None, :] - similarity[:, :, None]
        best = -np.inf
        for slope in slopes:
            terms = _log_sigmoid(outcome[:, :, None] * slope * distance)
            loglik = np.where(outcome[:, :, None] != 0, terms, 0.0).sum(axis=1)
            log_prior, evidence = _em(loglik)
            if evidence > best:
                best, self.slope, self.log_prior = evidence, slope, log_prior

    def risk(self, history: History, similarity: float) -> float:
        """P(wrong) for this answer at `similarity`, given its verdicts."""
        log_post = self.log_prior + self._log_likelihood(history, self.slope)
        log_post -= np.logaddexp.reduce(log_post)
        log_wrong = _log_sigmoid(self.slope * (self.grid - similarity))
        return float(np.exp(np.logaddexp.reduce(log_post + log_wrong)))


def _em(loglik: np.ndarray) -> tuple[np.ndarray, float]:
    """The grid prior maximising the answers' marginal likelihood (rows: answers), smoothed by one
    answer's worth of uniform mass so that no switch point is ever ruled out; and that likelihood."""
    answers, points = loglik.shape
    top = loglik.max(axis=1, keepdims=True)
    likelihood = np.exp(loglik - top)
    prior = np.full(points, 1.0 / points)
    for _ in range(ROUNDS):
        joint = likelihood * prior
        post = joint / joint.sum(axis=1, keepdims=True)
        prior = (post.sum(axis=0) + 1.0 / points) / (answers + 1.0)
    evidence = float((np.log((likelihood * prior).sum(axis=1)) + top[:, 0]).sum())
    return np.log(prior), evidence


__all__ = ["HISTORY", "History", "RiskModel"]
