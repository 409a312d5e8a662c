"""Bounded mode: a semantic match is served only while wrong answers stay under the operator's bound
(`max_error_rate`), with a stated confidence. The bound is a share of semantic lookups by default
(`error_rate_of="requests"`: of the requests looked up by meaning, at most that share is answered
wrongly, vCache's definition), or of semantic hits (`"hits"`: at most that share of the answers served
by meaning is wrong, a promise on precision).

The cache learns by verification. A candidate match it may not serve yet, and a small share of those
it may, goes upstream like a miss; the fresh answer is served, and a judge compares it with the
stored one. Each candidate's risk (the chance its stored answer is wrong) is estimated from that
answer's own verdicts and the pool's (`risk.py`: per-answer thresholds, after vCache); verdicts are
counted per risk bin, and the highest risk whose served set is provably accurate enough becomes the
serving cap. A stored answer once judged wrong for a prompt at similarity `w` is not served again at
`w` or below. The statistics are in docs/semantic.md.

Everything learned is kept per partition: the callers the exact cache keeps apart (key prefix,
namespace, credential scope) under one embedder. One tenant's verdicts and traffic never change what
another is served or how often another is verified. The per-minute cap on verifications (the
judge's calls, the operator's) is per payer: the partition without its namespace, which a caller
names freely. Under a scope every caller shares, the partition and the payer name the caller's source
too (`_meaning.py`), and each partition keeps its own record of a stored answer (`answer`): whoever
may see every answer still decides only what it is served unverified itself.
"""

from __future__ import annotations

import inspect
import math
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from .._fork import renew_after_fork
from ._fair import FairAges
from .risk import HISTORY, SLOPES, History, RiskModel

WIDTH = 0.005
"""The similarity step at which `ErrorBound.threshold` (the serving similarity of an answer with no
verdicts of its own) is reported."""
RATIO = 1.1
"""Risk bins are geometric: bin `j` holds the candidates whose estimated risk is in
`(RATIO ** -(j + 1), RATIO ** -j]`; a higher bin is a safer one."""
BINS = 128
"""Risk bins kept: the last holds every risk under `RATIO ** -127` (about 5e-6)."""
EXPLORE = 0.1
"""Of servable candidates, the share verified is `EXPLORE * n_needed / n_above` (at least
`min_verify`): a tenth when the cap has just been shown, less as verdicts above it grow.
(Chosen on the synthetic workload of `benchmarks/semantic_eval.py --synthetic`, never on Quora.)"""
FIT_ANSWERS = 1000
"""The most recently judged answers whose verdicts fit the pooled prior."""
START = 3
"""The first threshold tested rests on `START * needed` verdicts at its limit (see `learned_threshold`)."""
FIT_EVERY = 100
"""Verdicts between two fits of the prior (a fit reads every judged answer's verdicts); every
fifth fit also chooses the slope again."""
MAX_HIT_ERROR_RATE = 0.25
"""Per request, a served set may be wrong more often than the bound allows per hit (it is diluted by
the lookups that found no candidate), but never more often than this by default. Anyone's lookups
dilute: a flood of prompts that match nothing must not make what a hit may be any worse."""
REMEMBERED = 20_000
"""Served candidates remembered, so that a prompt served by meaning is verified when it comes back.
A popular prompt asked again and again is not an independent sample: served unverified each time, one
wrong pairing would repeat its wrong answer to every caller. Verified, its fresh answer is stored
under its own key, and its repeats are exact hits."""
HALF_LIFE = 2000
"""Lookups over which this process's recent traffic counts halve. A cache filling up finds a
candidate for more and more of its lookups: the share of traffic a served set answers is taken as
the larger of the whole history's and the recent one's, so growth never loosens the limit."""

PARTITIONS = 10_000
"""Partitions whose learned state (risk model, cap, traffic not yet counted) this process keeps, the
most recently used; one dropped starts again from its evidence (nothing, in process: nothing served)."""

ErrorRateOf = Literal["requests", "hits"]
"""What `max_error_rate` is a share of: semantic lookups (default) or semantic hits."""


class Decision(str, Enum):
    SERVE = "serve"
    VERIFY = "verify"
    """Send it upstream, serve the fresh answer, judge the stored one against it."""
    SKIP = "skip"
    """An ordinary miss: not served, not judged."""


class Tally(NamedTuple):
    """What the evidence counts per risk bin (each list `bins` long), read in one go."""

    checked: list[int]
    """Verdicts."""
    wrong: list[int]
    """Verdicts that found the stored answer wrong."""
    seen: list[int]
    """Candidates decided (the traffic a served set answers)."""
    lookups: int
    """Semantic lookups, whether or not they found a candidate."""


@runtime_checkable
class Evidence(Protocol):
    """Where verdicts are kept: per risk bin (pooled over a partition's answers) and per stored answer.
    `partition` names the callers a tally belongs to (`""`: a bound used alone); the per-answer methods
    are given a partition's own name for the answer (`answer`), so need no partition of their own.
    An evidence that bounds what it keeps per caller declares `owned = True`: `ErrorBound` then gives its
    `record` and `count` an `owner` keyword, the payer (the partition without its namespace, which a
    caller names freely) when it knows it."""

    async def record(self, key: str, bin: int, similarity: float, wrong: bool, partition: str = "") -> None:
        """One verdict on serving `key`'s answer to a prompt at `similarity` (in risk `bin`)."""
        ...

    async def tally(self, bins: int, partition: str = "") -> Tally:
        """`partition`'s verdicts and traffic per bin, `bins` long each, since the start."""
        ...

    async def wrong_at(self, key: str) -> float | None:
        """The highest similarity at which `key`'s answer was judged wrong, if ever."""
        ...

    async def history(self, key: str) -> list[tuple[float, bool]]:
        """`key`'s most recent verdicts (at most `risk.HISTORY`): (similarity, judged wrong), oldest first."""
        ...

    async def count(self, seen: Sequence[int], lookups: int, partition: str = "") -> None:
        """Add `partition`'s traffic: candidates decided per risk bin (`seen`), and semantic lookups."""
        ...


class _Counts:
    """One partition's tallies: verdicts, wrong verdicts and candidates per bin, and lookups."""

    __slots__ = ("checked", "lookups", "seen", "wrong")

    def __init__(self) -> None:
        self.checked: list[int] = []
        self.wrong: list[int] = []
        self.seen: list[int] = []
        self.lookups = 0


class InProcessEvidence:
    """Verdicts in this process; per-answer records for at most `max_keys` judged answers, tallies for
    the `max_partitions` most recently used partitions. A full table of records gives up the least
    recently judged answer of the partition holding the most (`_fair.py`): a caller flooding it with
    verdicts, under as many sources as it likes, only pushes out its own records, never the verdict
    that keeps another caller from being served an answer judged wrong for it.

    Each method holds the evidence's lock (none awaits): the sync and async transports may share it,
    each from its own loop's thread, and a tally or record found then replaced lost verdicts."""

    owned = True
    """`record` and `count` take the `owner` of a record (see `Evidence`): whose records a full table
    gives up first, when it holds the most (default: the partition)."""

    def __init__(self, max_keys: int = 100_000, max_partitions: int = PARTITIONS) -> None:
        self.max_keys = max_keys
        self.max_partitions = max_partitions
        self._counts: OrderedDict[str, _Counts] = OrderedDict()
        self._wrong_at: dict[str, float] = {}
        self._history: dict[str, deque[tuple[float, bool]]] = {}
        self._judged: FairAges[str] = FairAges()
        """The judged answers (`answer` names) by partition, least recently judged first."""
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        self._lock = threading.Lock()

    def partitions(self) -> list[str]:
        """The partitions tallied here, least recently used first."""
        with self._lock:
            return list(self._counts)

    def _of(self, partition: str) -> _Counts:
        counts = self._counts.pop(partition, None) or _Counts()
        self._counts[partition] = counts
        while len(self._counts) > self.max_partitions:
            self._counts.popitem(last=False)
        return counts

    async def record(
        self, key: str, bin: int, similarity: float, wrong: bool, partition: str = "", owner: str | None = None
    ) -> None:
        with self._lock:
            self._record(key, bin, similarity, wrong, partition, partition if owner is None else owner)

    def _record(self, key: str, bin: int, similarity: float, wrong: bool, partition: str, owner: str) -> None:
        counts = self._of(partition)
        if bin >= len(counts.checked):
            grow = bin + 1 - len(counts.checked)
            counts.checked += [0] * grow
            counts.wrong += [0] * grow
        counts.checked[bin] += 1
        if wrong:
            counts.wrong[bin] += 1
            self._wrong_at[key] = max(similarity, self._wrong_at.get(key, -1.0))
        verdicts = self._history.get(key)
        if verdicts is None:
            verdicts = self._history[key] = deque(maxlen=HISTORY)
        verdicts.append((similarity, wrong))
        judged = self._judged
        judged.add(owner, key)
        while len(judged) > self.max_keys:
            dropped = judged.evict()
            self._history.pop(dropped, None)
            self._wrong_at.pop(dropped, None)

    async def tally(self, bins: int, partition: str = "") -> Tally:
        def fitted(counts: list[int]) -> list[int]:
            return (counts + [0] * max(0, bins - len(counts)))[:bins]

        with self._lock:
            counts = self._of(partition)
            return Tally(fitted(counts.checked), fitted(counts.wrong), fitted(counts.seen), counts.lookups)

    async def wrong_at(self, key: str) -> float | None:
        return self._wrong_at.get(key)

    async def history(self, key: str) -> list[tuple[float, bool]]:
        with self._lock:  # (no other thread adds to the record while it is copied)
            return list(self._history.get(key, ()))

    async def count(self, seen: Sequence[int], lookups: int, partition: str = "", owner: str | None = None) -> None:
        with self._lock:
            counts = self._of(partition)
            if len(seen) > len(counts.seen):
                counts.seen += [0] * (len(seen) - len(counts.seen))
            for bin, candidates in enumerate(seen):
                counts.seen[bin] += candidates
            counts.lookups += lookups


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be large, p small)."""
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    head = math.lgamma(n + 1)
    terms = [head - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def needed(max_error_rate: float, confidence: float) -> int:
    """Verdicts without a single wrong one it takes to show a rate under `max_error_rate`."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-max_error_rate))


def served_limit(max_error_rate: float, share: float, ceiling: float = MAX_HIT_ERROR_RATE) -> float:
    """The wrong share a served set may have when `max_error_rate` is a share of requests: answering
    `share` of the lookups from it, wrong answers stay under the bound while its wrong share stays
    under `max_error_rate / share` (never past `ceiling`, nor under the bound itself)."""
    ceiling = max(ceiling, max_error_rate)
    if share <= 0.0:
        return ceiling
    return min(ceiling, max_error_rate / min(1.0, share))


def traffic_shares(seen: Sequence[float], lookups: float, *recent: tuple[Sequence[float], float]) -> list[float]:
    """Per bin, the share of lookups whose candidate fell in it: the larger of the whole history's
    (`seen`, `lookups`) and each recent window's. Lookups are never fewer than candidates (each
    candidate was a lookup's, counted or not)."""
    windows = [(counts, max(total, sum(counts))) for counts, total in ((seen, lookups), *recent)]
    return [max((counts[j] / total if total > 0 else 0.0) for counts, total in windows) for j in range(len(seen))]


def learned_threshold(
    checked: Sequence[int],
    wrong: Sequence[int],
    max_error_rate: float,
    confidence: float,
    start: int | None = None,
    *,
    shares: Sequence[float] | None = None,
    ceiling: float = MAX_HIT_ERROR_RATE,
) -> tuple[int | None, int]:
    """The lowest bin from which up wrong answers are shown under `max_error_rate`, and the verdicts
    from it up; (None, 0) when no bin is shown yet.

    Thresholds are tested from the top down, each on the verdicts at or above it, with the exact
    (Clopper-Pearson) one-sided test: the wrong share of the served set is shown under its limit when
    seeing as few wrongs as were seen would have probability at most `1 - confidence` at the limit
    itself. The test stops at the first threshold it cannot show (a fixed sequence: no correction for
    testing many). Only bins with verdicts of their own are candidate thresholds: no threshold rests
    on no evidence.

    The limit is `max_error_rate` itself when the bound is a share of hits. When it is a share of
    requests (`shares`: per bin, the share of semantic lookups whose candidate fell in it), serving
    the bins from `j` up answers their summed share `q_j` of the lookups from the set, so the set's
    wrong share may reach `max_error_rate / q_j` (never past `ceiling`). Traffic is not an
    outcome, so the sequence of tests and their limits are still fixed before the verdicts are read.

    `start`: the verdicts the first threshold tested must rest on, as a multiple of `needed` at that
    threshold's limit (default 1: the fewest that can show it at all). A larger start lets the first
    test absorb a wrong verdict or a few, so that one early wrong does not stop the whole sequence."""
    alpha = 1.0 - confidence
    factor = 1 if start is None else start
    best, above = None, 0
    total = bad = 0
    share = 0.0
    for j in range(len(checked) - 1, -1, -1):
        total += checked[j]
        bad += wrong[j]
        limit = max_error_rate
        if shares is not None:
            share += shares[j]
            limit = served_limit(max_error_rate, share, ceiling)
        if total < factor * needed(limit, confidence) or not checked[j]:
            continue  # too little evidence yet, or none at this bin: no threshold here
        if binomial_cdf(bad, total, limit) > alpha:
            break
        best, above = j, total
    return best, above


def risk_bin(risk: float) -> int:
    """The bin of a candidate whose stored answer is wrong with probability `risk` (a risk that is not
    a number, from hostile or broken evidence, is the riskiest)."""
    if math.isnan(risk):
        return 0
    if not risk > 0.0:
        return BINS - 1
    return min(BINS - 1, max(0, int(-math.log(risk) / math.log(RATIO))))


def answer(key: str, partition: str) -> str:
    """The name `partition`'s verdicts on the stored answer `key` are kept under. A stored answer is
    every caller's under a shared scope, and each caller (a partition of its own, see `SemanticCache`)
    keeps its own record of it: another caller's verdicts, forced to agree, must not make it look safe."""
    return f"{partition}\n{key}" if partition else key


_PARTITIONED = {"record": 5, "tally": 2, "count": 3}
"""The Evidence methods `ErrorBound` passes a partition to, and how many arguments they then get."""


def _takes(method: Callable[..., object], arity: int) -> bool:
    """Whether `method` can be called with `arity` positional arguments (an Evidence written before
    partitions takes one fewer, and every decision would raise)."""
    try:
        inspect.signature(method).bind(*range(arity))
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): taken on trust
        return True
    return True


class _Learned:
    """What one partition has learned and not yet counted: its risk model, its cap, its traffic."""

    __slots__ = (
        "above",
        "cap",
        "fits",
        "judged",
        "lookups",
        "model",
        "needed",
        "payer",
        "pending",
        "recent_lookups",
        "recent_seen",
        "refreshed",
        "seen",
        "shares",
        "threshold",
        "unfitted",
    )

    def __init__(self, floor: float, needed: int) -> None:
        self.model = RiskModel(floor)
        self.needed = needed
        """Verdicts without a wrong one that show the served set's limit (per request: at the cap)."""
        self.seen = [0] * BINS
        self.lookups = 0
        """Traffic not yet added to the evidence: candidates decided per bin, semantic lookups."""
        self.recent_seen = [0.0] * BINS
        self.recent_lookups = 0.0
        """This process's traffic, halving every `HALF_LIFE` lookups."""
        self.shares: list[float] | None = None
        self.cap: int | None = None
        """The lowest risk bin served."""
        self.threshold: float | None = None
        self.above = 0
        self.refreshed = -math.inf
        self.pending = 0
        """Verdicts recorded since the cap was last computed."""
        self.unfitted = self.fits = 0
        """Verdicts recorded since the prior was last fitted; fits so far."""
        self.judged: OrderedDict[str, None] = OrderedDict()
        """Recently judged answers, whose verdicts fit the model's prior."""
        self.payer = ""
        """Whose partition it is, without the namespace (the last `decide` or `learn` that named it)."""


class ErrorBound:
    """The decisions of bounded mode (see the module docstring).

    `error_rate_of`: "requests" (default) bounds wrong answers per semantic lookup, "hits" per answer
    served by meaning. `max_hit_error_rate`: with "requests", the wrong share per hit a served set may
    never exceed, however diluted by lookups that found no candidate (0.25). `floor`: candidates
    below this similarity are never served nor verified. `min_verify`: the share of servable
    candidates still verified once evidence is plentiful (so a changed workload is noticed).
    `verifications_per_minute`: a cap per payer (`decide`'s, by default the partition); past it,
    candidates are served or skipped unverified. `seed`: the verification draws, for reproducible runs.

    Every method takes the `partition` its lookup belongs to (`SemanticCache` passes the caller's:
    key prefix, namespace and credential scope, with the embedder's name); what one partition learns,
    and its traffic, never decide for another. A bound used alone may leave it out.

    The sync and async transports may share a bound, each deciding on its own loop's thread: its tables
    and counts change under its lock, held around each change and never across an await.
    """

    def __init__(
        self,
        max_error_rate: float = 0.02,
        *,
        error_rate_of: ErrorRateOf = "requests",
        max_hit_error_rate: float = MAX_HIT_ERROR_RATE,
        confidence: float = 0.95,
        floor: float = 0.75,
        min_verify: float = 0.02,
        verifications_per_minute: int | None = None,
        margin: float = 0.01,
        evidence: Evidence | None = None,
        refresh: float = 5.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < max_error_rate < 1.0:
            raise ValueError("max_error_rate is a share of requests or hits, between 0 and 1 (0.02: 2%)")
        if not 0.0 < max_hit_error_rate <= 0.5:
            raise ValueError("max_hit_error_rate is a share of semantic hits, above 0 and at most 0.5")
        if error_rate_of not in ("requests", "hits"):
            raise ValueError('error_rate_of is "requests" (wrong answers per semantic lookup) or "hits"')
        if not 0.5 <= confidence < 1.0:
            raise ValueError("confidence is a probability, at least 0.5 and below 1 (0.95)")
        if not -1.0 <= floor < 1.0 or not 0.0 <= min_verify <= 1.0:
            raise ValueError("floor is a cosine similarity below 1; min_verify a share between 0 and 1")
        if verifications_per_minute is not None and verifications_per_minute < 0:
            raise ValueError("verifications_per_minute must not be negative")
        self.max_error_rate = max_error_rate
        self.error_rate_of: ErrorRateOf = error_rate_of
        self.max_hit_error_rate = max_hit_error_rate
        self.confidence = confidence
        self.floor = floor
        self.min_verify = min_verify
        self.verifications_per_minute = verifications_per_minute
        self.margin = margin
        self.evidence: Evidence = evidence if evidence is not None else InProcessEvidence()
        if not isinstance(self.evidence, Evidence):
            raise TypeError("evidence needs record, tally, wrong_at, history and count (the Evidence protocol)")
        unpartitioned = [name for name, n in _PARTITIONED.items() if not _takes(getattr(self.evidence, name), n)]
        if unpartitioned:
            raise TypeError(f"evidence's {', '.join(unpartitioned)} must take the `partition` (the Evidence protocol)")
        self.refresh = refresh
        self._owned = getattr(self.evidence, "owned", False) is True
        """The evidence takes an `owner` (see `Evidence`)."""
        self._partitions: OrderedDict[str, _Learned] = OrderedDict()
        self._random = random.Random(seed)
        self._clock = clock
        self._served: FairAges[tuple[str, float]] = FairAges()
        """Candidates served unverified (at most `REMEMBERED`, by the payer they were served to; full,
        the oldest of the payer holding the most goes, so no caller's flood of hits pushes out
        another's): the same prompt at the same similarity, back again, is verified rather than served a
        second time, whichever caller sent it (callers sharing a scope find the same answers: one wrong
        pairing must not reach them all)."""
        self._asked: OrderedDict[tuple[str, float], int] = OrderedDict()
        """Verifications under way: their risk bin when they were decided."""
        self.on_capped: Callable[[], None] | None = None
        """Called when the cap refuses a verification (the Cache using this bound counts it)."""
        self._verifications: OrderedDict[str, deque[float]] = OrderedDict()
        """Per payer (the `PARTITIONS` most recent), when the verifications of the last minute were decided
        (only with a cap)."""
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        self._lock = threading.Lock()

    def _learned(self, partition: str) -> _Learned:
        with self._lock:
            return self._of(partition)

    def _of(self, partition: str) -> _Learned:
        """`partition`'s learned state, made the most recently used (under the lock)."""
        learned = self._partitions.pop(partition, None)
        if learned is None:
            learned = _Learned(self.floor, needed(self.max_error_rate, self.confidence))
        self._partitions[partition] = learned
        while len(self._partitions) > PARTITIONS:
            self._partitions.popitem(last=False)
        return learned

    @property
    def threshold(self) -> float | None:
        """`threshold_of("")`: the serving similarity of a bound used alone."""
        return self.threshold_of("")

    def threshold_of(self, partition: str) -> float | None:
        """The similarity from which a stored answer of `partition` with no verdicts of its own is
        served (None: nothing is shown safe yet). Answers with verdicts have thresholds of their own."""
        learned = self._partitions.get(partition)
        return None if learned is None else learned.threshold

    async def risk(self, key: str, similarity: float, partition: str = "") -> float:
        """The estimated chance that `key`'s answer is wrong for a prompt at `similarity`."""
        return self._learned(partition).model.risk(await self.evidence.history(answer(key, partition)), similarity)

    def looked_up(self, partition: str = "") -> None:
        """Count one semantic lookup, whether or not it found a candidate (the requests a share of
        which may be answered wrongly)."""
        with self._lock:
            self._of(partition).lookups += 1

    async def decide(self, key: str, similarity: float, partition: str = "", payer: str | None = None) -> Decision:
        """What to do with the stored answer `key` for a prompt at `similarity` (guard passed): the
        nearest usable candidate of a lookup, one per lookup. A verification spends `payer`'s cap per
        minute (None: the partition's); `SemanticCache` passes the caller without its namespace, which
        the caller names freely, so no caller multiplies the judge's calls by naming namespaces."""
        if not similarity >= self.floor:  # `not >=`: a NaN is never a candidate
            return Decision.SKIP
        learned = self._learned(partition)
        if payer is None:
            payer = partition
        else:
            learned.payer = payer
        if self._clock() - learned.refreshed >= self.refresh:
            await self._recompute(learned, partition)
        bin = risk_bin(await self.risk(key, similarity, partition))
        with self._lock:
            learned.seen[bin] += 1
        servable = learned.cap is not None and bin >= learned.cap
        if servable:
            wrong = await self._wrong_at(key, partition)
            servable = wrong is None or similarity > wrong + self.margin
        if servable:
            decision, capped = self._serve_or_verify(key, similarity, learned, payer)
        else:
            with self._lock:
                capped = not self._spend(payer)
            decision = Decision.SKIP if capped else Decision.VERIFY
        if capped and self.on_capped is not None:
            self.on_capped()
        return self._asking(answer(key, partition), similarity, bin) if decision is Decision.VERIFY else decision

    def _serve_or_verify(self, key: str, similarity: float, learned: _Learned, payer: str) -> tuple[Decision, bool]:
        """A servable candidate's decision, and whether the cap refused a verification. Whether it was
        served, the draw, the cap and remembering it served are one step under the lock: two threads
        deciding the same prompt at once must not both find it not yet served and both serve it."""
        with self._lock:
            if (key, similarity) in self._served:  # the same prompt again: checked now, and stored for it
                # alone if it was right; never served unverified a second time (no verification left: a miss)
                capped = not self._spend(payer)
                return (Decision.SKIP if capped else Decision.VERIFY), capped
            share = max(self.min_verify, min(1.0, EXPLORE * learned.needed / max(1, learned.above)))
            capped = False
            if self._random.random() < share:
                capped = not self._spend(payer)
                if not capped:
                    return Decision.VERIFY, False
            served = self._served
            served.add(payer, (key, similarity))  # (by the payer: a caller names namespaces freely)
            while len(served) > REMEMBERED:
                served.evict()
            return Decision.SERVE, capped

    async def _wrong_at(self, key: str, partition: str) -> float | None:
        """The highest similarity at which `partition` judged `key`'s answer wrong. A verdict kept under the
        key alone, as before each partition kept its own record (`answer`; Redis evidence keeps it `keep`
        seconds, and pods not yet upgraded still write it), counts too: it can only make a candidate
        verified, never served. (One more evidence read for a servable candidate of a partition.)"""
        wrong = await self.evidence.wrong_at(answer(key, partition))
        if not partition:
            return wrong
        before = await self.evidence.wrong_at(key)
        return before if wrong is None else wrong if before is None else max(wrong, before)

    def _asking(self, judged: str, similarity: float, bin: int) -> Decision:
        """A verification of the answer a partition names `judged` (`answer`), decided in risk `bin`."""
        with self._lock:
            self._asked[judged, similarity] = bin
            while len(self._asked) > 10_000:  # verdicts that never came
                self._asked.popitem(last=False)
        return Decision.VERIFY

    async def learn(
        self, key: str, similarity: float, wrong: bool, partition: str = "", payer: str | None = None
    ) -> None:
        """Record a verdict; `partition`'s cap follows (at once while evidence is scarce, then in steps).
        `payer` (as `decide`'s) owns the record, for an evidence that bounds records per caller."""
        learned = self._learned(partition)
        if payer is not None:
            learned.payer = payer
        judged = answer(key, partition)
        with self._lock:
            asked = self._asked.pop((judged, similarity), None)
        bin = asked if asked is not None else risk_bin(await self.risk(key, similarity, partition))
        await self.evidence.record(judged, bin, similarity, wrong, partition, **self._owner(learned))
        fit: tuple[list[str], tuple[float, ...]] | None = None
        with self._lock:
            learned.judged.pop(judged, None)
            learned.judged[judged] = None
            while len(learned.judged) > FIT_ANSWERS:
                learned.judged.popitem(last=False)
            learned.pending += 1
            learned.unfitted += 1
            if learned.unfitted >= FIT_EVERY:
                learned.unfitted = 0
                learned.fits += 1
                fit = list(learned.judged), SLOPES if learned.fits % 5 == 1 else (learned.model.slope,)
            recompute = learned.pending * 16 >= max(learned.needed, learned.above)
        if fit is not None:
            await self._fit(learned, *fit)
        if recompute:
            await self._recompute(learned, partition)

    async def _fit(self, learned: _Learned, judged: list[str], slopes: Sequence[float]) -> None:
        """Refit the prior to the `judged` answers' verdicts: here, after a verdict, never on a caller's
        lookup (it reads every judged answer's history, one store read each; `judged` is a copy, which
        other verdicts may change during those reads)."""
        learned.model.fit([await self.evidence.history(key) for key in judged], slopes)

    async def _recompute(self, learned: _Learned, partition: str) -> None:
        """Add this process's traffic to the evidence and test the caps again. A bin never counts
        fewer candidates than verdicts (another pod's traffic may not be added yet)."""
        with self._lock:  # (the traffic taken is no other thread's to count, and none is lost)
            learned.refreshed = self._clock()
            learned.pending = 0
            fresh, learned.seen, lookups, learned.lookups = learned.seen, [0] * BINS, learned.lookups, 0
            decay = 0.5 ** (lookups / HALF_LIFE)
            learned.recent_seen = [old * decay + new for old, new in zip(learned.recent_seen, fresh, strict=True)]
            learned.recent_lookups = learned.recent_lookups * decay + lookups
            recent, shares = (learned.recent_seen, learned.recent_lookups), learned.shares
        await self.evidence.count(fresh, lookups, partition, **self._owner(learned))
        checked, wrong, seen, everyone = await self.evidence.tally(BINS, partition)
        if self.error_rate_of == "requests":
            seen = [max(candidates, verdicts) for candidates, verdicts in zip(seen, checked, strict=True)]
            shares = traffic_shares(seen, everyone, recent)
        cap, above = learned_threshold(
            checked,
            wrong,
            self.max_error_rate,
            self.confidence,
            START,
            shares=shares,
            ceiling=self.max_hit_error_rate,
        )
        threshold = None if cap is None else self._fresh_threshold(learned.model, cap)
        verdicts_needed = needed(self._limit(shares, cap), self.confidence)
        with self._lock:  # (a decision reads a cap with its own threshold and needs)
            learned.shares, learned.cap, learned.above = shares, cap, above
            learned.threshold, learned.needed = threshold, verdicts_needed

    def _owner(self, learned: _Learned) -> dict[str, str]:
        """The `owner` keyword for an evidence that takes one and a partition whose payer is known."""
        return {"owner": learned.payer} if self._owned and learned.payer else {}

    def _limit(self, shares: Sequence[float] | None, cap: int | None) -> float:
        """The wrong share a served set may have from risk bin `cap` up, with these traffic `shares`."""
        if shares is None or cap is None:
            return self.max_error_rate
        return served_limit(self.max_error_rate, sum(shares[cap:]), self.max_hit_error_rate)

    def _fresh_threshold(self, model: RiskModel, cap: int) -> float | None:
        no_verdicts: History = ()
        steps = math.ceil((1.0 - self.floor) / WIDTH)
        for step in range(steps + 1):
            similarity = min(1.0, self.floor + step * WIDTH)
            if risk_bin(model.risk(no_verdicts, similarity)) >= cap:
                return similarity
        return None

    def _spend(self, payer: str) -> bool:
        """Spend one of `payer`'s verifications of the minute, if any is left. The caller holds the lock
        (a payer's minute found then replaced, or read then added to, let it past its cap); not
        re-entrant, so it takes none itself, and calls back no one (`on_capped` is the caller's)."""
        cap = self.verifications_per_minute
        if cap is None:
            return True
        now = self._clock()
        recent = self._verifications.pop(payer, None) or deque()
        self._verifications[payer] = recent
        while len(self._verifications) > PARTITIONS:
            self._verifications.popitem(last=False)
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= cap:
            return False
        recent.append(now)
        return True


__all__ = [
    "BINS",
    "PARTITIONS",
    "Decision",
    "ErrorRateOf",
    "ErrorBound",
    "Evidence",
    "Tally",
    "InProcessEvidence",
    "binomial_cdf",
    "learned_threshold",
    "needed",
    "served_limit",
    "traffic_shares",
    "risk_bin",
]
