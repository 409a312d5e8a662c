"""Bounded mode warm-started from labelled pairs (issue 17), a benchmark option of `semantic_eval.py`.

Each labelled pair is a prior verdict at its similarity (label 1: the stored answer was right),
counted into the pooled per-bin evidence beside the live verdicts; the traffic shares still come from
live lookups only. `weight`: the prior counts at most as much as this many live verdicts (None: all of
them). `overrule`: the live verdicts above the cap are also tested on their own, and when they show the
served set wrong more often than its limit, the cap rises. `share_margin`: the traffic shares are
taken this much larger than measured (a margin for the traffic, which the prior's test has none for).
`fit_prior`: the risk model is fitted on the prior's pairs too (beside the judged answers').

The experiment of benchmarks/README.md "Bounded mode warm-started from labelled pairs": not shipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from llm_cache.middleware.semantic.bound import (
    BINS,
    RATIO,
    START,
    ErrorBound,
    binomial_cdf,
    learned_threshold,
    needed,
    served_limit,
    traffic_shares,
)
from llm_cache.middleware.semantic.risk import SLOPES

RECOUNT = 200
"""Lookups after which the caps are tested again (the traffic shares moved)."""
SHARES_FROM = 1000
"""Lookups counted before the traffic shares are read: until then a served set is taken to answer
every lookup (its limit is the bound itself), since a prior says nothing about this traffic."""


def upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return 1.0 if k <= 0 else 1.0 - binomial_cdf(k - 1, n, p)


class WarmBound(ErrorBound):
    def __init__(
        self,
        *args: object,
        prior: Sequence[tuple[float, bool]],
        weight: int | None = None,
        overrule: bool = False,
        fit_prior: bool = True,
        share_margin: float = 0.0,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.prior = [(s, w) for s, w in prior if s >= self.floor]
        self.prior_similarity = np.array([s for s, _ in self.prior])
        self.prior_wrong = np.array([w for _, w in self.prior], dtype=bool)
        self.scale = 1.0 if weight is None or weight >= len(self.prior) else weight / len(self.prior)
        self.overrule = overrule
        self.fit_prior = fit_prior
        self.share_margin = share_margin
        self._binned: dict[str, tuple[int, list[int], list[int]]] = {}

    def _learned(self, partition: str):  # type: ignore[no-untyped-def]
        fresh = partition not in self._partitions
        learned = super()._learned(partition)
        if fresh and self.fit_prior and self.prior:
            learned.model.fit(self._prior_histories(), SLOPES)
        return learned

    def _prior_histories(self) -> list[list[tuple[float, bool]]]:
        step = max(1, len(self.prior) // 1000)
        return [[pair] for pair in self.prior[::step]]

    async def _fit(self, learned) -> None:  # type: ignore[no-untyped-def]
        learned.unfitted = 0
        learned.fits += 1
        slopes = SLOPES if learned.fits % 5 == 1 else (learned.model.slope,)
        live = [await self.evidence.history(key) for key in learned.judged]
        extra = self._prior_histories() if self.fit_prior else []
        learned.model.fit(live + extra, slopes)

    def _prior_bins(self, learned, partition: str) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
        known = self._binned.get(partition)
        if known is not None and known[0] == learned.fits:
            return known[1], known[2]
        model = learned.model
        prob = np.exp(model.log_prior)
        logits = model.slope * (model.grid[None, :] - self.prior_similarity[:, None])
        risk = (prob[None, :] / (1.0 + np.exp(-logits))).sum(axis=1)
        bins = np.where(
            risk > 0, np.clip((-np.log(np.maximum(risk, 1e-300)) / math.log(RATIO)).astype(int), 0, BINS - 1), BINS - 1
        )
        checked = np.bincount(bins, minlength=BINS)
        wrong = np.bincount(bins[self.prior_wrong], minlength=BINS)
        c = [int(round(x * self.scale)) for x in checked]
        w = [int(round(x * self.scale)) for x in wrong]
        self._binned[partition] = (learned.fits, c, w)
        return c, w

    async def decide(self, key: str, similarity: float, partition: str = ""):  # type: ignore[no-untyped-def]
        learned = self._learned(partition)
        if learned.lookups >= RECOUNT:
            await self._recompute(learned, partition)
        return await super().decide(key, similarity, partition)

    async def _recompute(self, learned, partition: str) -> None:  # type: ignore[no-untyped-def]
        """The cold bound's recompute (traffic counted, live cap), then the cap again on the live and
        prior verdicts together, with traffic shares read only from `SHARES_FROM` lookups on."""
        await super()._recompute(learned, partition)
        checked, wrong, seen, everyone = await self.evidence.tally(BINS, partition)
        shares = None
        if self.error_rate_of == "requests" and everyone >= SHARES_FROM:
            seen = [max(candidates, verdicts) for candidates, verdicts in zip(seen, checked, strict=True)]
            shares = traffic_shares(seen, everyone, (learned.recent_seen, learned.recent_lookups))
            shares = [share * (1.0 + self.share_margin) for share in shares]
        learned.shares = shares
        prior_checked, prior_wrong = self._prior_bins(learned, partition)
        both_checked = [a + b for a, b in zip(checked, prior_checked, strict=True)]
        both_wrong = [a + b for a, b in zip(wrong, prior_wrong, strict=True)]
        cap, above = learned_threshold(
            both_checked,
            both_wrong,
            self.max_error_rate,
            self.confidence,
            START,
            shares=shares,
            ceiling=self.max_hit_error_rate,
        )
        if cap is not None and self.overrule:
            cap = self._overruled(cap, checked, wrong, shares)
            above = sum(both_checked[cap:]) if cap is not None else 0
        learned.cap, learned.above = cap, above
        learned.threshold = None if learned.cap is None else self._fresh_threshold(learned)
        learned.needed = needed(self._limit(learned), self.confidence)

    def _overruled(self, cap: int, checked: list[int], wrong: list[int], shares: list[float] | None) -> int | None:
        """The lowest bin from `cap` up whose live verdicts alone do not show its served set wrong
        more often than its limit."""
        alpha = 1.0 - self.confidence
        for j in range(cap, BINS):
            total, bad = sum(checked[j:]), sum(wrong[j:])
            limit = self.max_error_rate
            if shares is not None:
                limit = served_limit(self.max_error_rate, sum(shares[j:]), self.max_hit_error_rate)
            if total == 0 or upper_tail(bad, total, limit) > alpha:
                return j
        return None
