"""Bounded mode: semantic matches are served only while wrong answers are shown under the operator's
bound (a share of semantic lookups by default, or of semantic hits); verification is what teaches it,
and a judge without a verdict never says "right".

The workloads here have known answers: each candidate's chance of being right rises with its
similarity along a curve of its own stored answer (some neighbourhoods are denser with near-misses
than others), drawn from seeded generators.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from llm_cache.middleware.semantic import RedisEvidence, SemanticCache
from llm_cache.middleware.semantic import bound as bound_module
from llm_cache.middleware.semantic.bound import (
    BINS,
    Decision,
    ErrorBound,
    InProcessEvidence,
    Tally,
    answer,
    binomial_cdf,
    learned_threshold,
    needed,
    risk_bin,
    served_limit,
    traffic_shares,
)
from llm_cache.middleware.semantic.judges import EmbeddingJudge, ExactJudge, answer_content
from llm_cache.middleware.semantic.risk import HISTORY
from tests.support.races import JOIN_DEADLINE, raced
from tests.support.semantic_workload import known_answer_workload

# -- the statistics ------------------------------------------------------------------------------


def test_the_binomial_tail_is_the_sum_of_its_terms() -> None:
    for n, p in ((10, 0.3), (40, 0.02), (7, 0.5)):
        for k in range(n + 1):
            direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
            assert binomial_cdf(k, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-15)


def test_a_large_sample_at_a_small_rate_does_not_underflow() -> None:
    assert binomial_cdf(2000, 100_000, 0.02) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(("bound", "confidence", "verdicts"), [(0.02, 0.95, 149), (0.01, 0.95, 299), (0.05, 0.9, 45)])
def test_it_takes_this_many_right_verdicts_in_a_row_to_show_a_rate_under_the_bound(
    bound: float, confidence: float, verdicts: int
) -> None:
    assert needed(bound, confidence) == verdicts
    assert (1 - bound) ** verdicts <= 1 - confidence < (1 - bound) ** (verdicts - 1)


def test_the_threshold_is_the_lowest_one_shown_safe_from_the_top_down() -> None:
    checked = [0] * 10
    wrong = [0] * 10
    checked[9], checked[8], checked[5] = 100, 100, 300
    wrong[5] = 60  # the bins below 8 are wrong a fifth of the time
    assert learned_threshold(checked, wrong, 0.02, 0.95) == (8, 200)


def test_a_threshold_is_not_shown_on_too_few_verdicts() -> None:
    assert learned_threshold([0, 0, 148], [0, 0, 0], 0.02, 0.95) == (None, 0)
    assert learned_threshold([0, 0, 149], [0, 0, 0], 0.02, 0.95) == (2, 149)


def test_the_test_stops_at_the_first_threshold_it_cannot_show() -> None:
    checked, wrong = [1000, 100, 1000], [0, 50, 0]
    # From bin 0 up the share is 50/2100 < 2.4%, yet bin 1 failed first: the sequence stopped there.
    assert learned_threshold(checked, wrong, 0.03, 0.95) == (2, 1000)


def test_per_request_a_served_set_may_be_wrong_more_often_the_rarer_it_is_served() -> None:
    assert served_limit(0.02, share=0.1) == pytest.approx(0.2)  # 20 wrong in 1000 lookups at most
    assert served_limit(0.02, share=1.0) == pytest.approx(0.02)  # every lookup served: as per hit
    assert served_limit(0.02, share=0.05) == pytest.approx(0.25)  # never past the ceiling per hit...
    assert served_limit(0.02, share=0.0) == 0.25  # ...however many lookups find nothing (anyone's, junk too)
    assert served_limit(0.02, share=0.05, ceiling=0.5) == pytest.approx(0.4)
    assert served_limit(0.3, share=0.5, ceiling=0.25) == pytest.approx(0.3)  # nor under the bound itself


async def test_a_flood_of_lookups_that_find_nothing_never_loosens_a_hit_past_the_ceiling() -> None:
    bound = ErrorBound(0.02, refresh=0.0, min_verify=0.0, seed=11)
    for i in range(200):  # a served set wrong 30% of the time: over the 25% ceiling
        await judged(bound, f"k{i}", 0.9, wrong=i % 10 < 3)
    for _ in range(1_000_000):  # a flood: the candidates are now 0.02% of the lookups
        bound.looked_up()
    assert await bound.decide("new", 0.9) is Decision.VERIFY
    assert bound.threshold is None


def test_the_share_of_traffic_is_the_larger_of_the_whole_history_s_and_the_recent_one() -> None:
    # The cache filled up: lately half the lookups find a candidate in bin 1, over its life a tenth.
    assert traffic_shares([0, 100], 1000, ([0, 50], 100)) == [0.0, 0.5]
    assert traffic_shares([0, 100], 1000, ([0, 5], 100)) == [0.0, 0.1]
    # Lookups never fewer than candidates: decided candidates nobody counted a lookup for.
    assert traffic_shares([30, 10], 0) == [0.75, 0.25]


def test_per_request_the_threshold_test_uses_each_served_set_s_own_limit() -> None:
    checked, wrong = [0] * 10, [0] * 10
    checked[9], checked[8], checked[5] = 100, 100, 300
    wrong[5] = 60
    # Per hit, bin 5 (60 wrong of 500) fails; when those 500 candidates come with 10,000 lookups, the
    # set may be wrong 40% of the time per candidate and still answer under 2% of the requests wrongly.
    assert learned_threshold(checked, wrong, 0.02, 0.95) == (8, 200)
    assert learned_threshold(checked, wrong, 0.02, 0.95, shares=[c / 10_000 for c in checked]) == (5, 500)
    # The same verdicts when every lookup found a candidate: the per-hit answer.
    assert learned_threshold(checked, wrong, 0.02, 0.95, shares=[c / 500 for c in checked]) == (8, 200)


def test_per_request_a_threshold_still_rests_on_verdicts_of_its_own() -> None:
    shares = [0.0, 0.0, 0.005]
    # The set may be wrong up to the ceiling, 25%: 11 right verdicts in a row show it.
    assert learned_threshold([0, 0, 10], [0, 0, 0], 0.02, 0.95, shares=shares) == (None, 0)
    assert learned_threshold([0, 0, 11], [0, 0, 0], 0.02, 0.95, shares=shares) == (2, 11)


# -- synthetic workloads with known answers -----------------------------------------------------------


def still() -> float:
    """A clock that never moves: the bound tests its caps again after verdicts only, never because
    wall-clock time passed, so a slow machine replays exactly what a fast one does."""
    return 0.0


async def replay(
    bound: ErrorBound, candidates: Sequence[tuple[str, float, bool]], empty_lookups: int = 0
) -> tuple[int, int, int]:
    """Served, served wrongly, verified; each candidate one lookup, and `empty_lookups` more lookups
    finding no candidate, spread among them."""
    served = wrong = verified = 0
    every = len(candidates) // empty_lookups if empty_lookups else 0
    for i, (key, similarity, right) in enumerate(candidates):
        bound.looked_up()
        if every and i % every == 0:
            bound.looked_up()
        decision = await bound.decide(key, similarity)
        if decision is Decision.SERVE:
            served += 1
            wrong += not right
        elif decision is Decision.VERIFY:
            verified += 1
            await bound.learn(key, similarity, wrong=not right)
    return served, wrong, verified


def best_static(candidates: Sequence[tuple[str, float, bool]], wrong_share: float) -> int:
    """The most hits any one similarity threshold serves on `candidates` (all of them, in hindsight)
    with a wrong share at most `wrong_share`."""
    ranked = sorted(((similarity, right) for _, similarity, right in candidates), reverse=True)
    best = wrong = 0
    for served, (_, right) in enumerate(ranked, start=1):
        wrong += not right
        if wrong <= wrong_share * served:
            best = served
    return best


def best_static_per_request(candidates: Sequence[tuple[str, float, bool]], wrong_answers: int) -> int:
    """The most hits any one similarity threshold serves on `candidates` (in hindsight) with at most
    `wrong_answers` wrong."""
    ranked = sorted(((similarity, right) for _, similarity, right in candidates), reverse=True)
    best = wrong = 0
    for served, (_, right) in enumerate(ranked, start=1):
        wrong += not right
        if wrong <= wrong_answers:
            best = served
    return best


@pytest.mark.parametrize("max_error_rate", [0.01, 0.02, 0.05])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_share_of_wrong_semantic_hits_stays_under_the_bound(max_error_rate: float, seed: int) -> None:
    candidates = known_answer_workload(seed, 20_000)
    bound = ErrorBound(max_error_rate, error_rate_of="hits", seed=seed, clock=still)
    served, wrong, _ = await replay(bound, candidates)

    assert wrong <= max_error_rate * served
    # Thresholds of each answer's own beat the best single threshold chosen in hindsight, at the same wrong share.
    assert served >= best_static(candidates, wrong / served)


@pytest.mark.parametrize("max_error_rate", [0.01, 0.02, 0.05])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_share_of_requests_answered_wrongly_stays_under_the_bound(max_error_rate: float, seed: int) -> None:
    candidates = known_answer_workload(seed, 20_000)
    lookups = len(candidates) + 10_000  # a third of the lookups find no candidate at all
    bound = ErrorBound(max_error_rate, seed=seed, clock=still)
    served, wrong, _ = await replay(bound, candidates, empty_lookups=10_000)

    assert wrong <= max_error_rate * lookups
    # More hits than the best single threshold chosen in hindsight with as many wrong answers.
    assert served >= best_static_per_request(candidates, wrong)


async def test_fewer_servable_candidates_are_verified_as_evidence_grows() -> None:
    bound = ErrorBound(0.02, error_rate_of="hits", seed=4, clock=still)
    candidates = known_answer_workload(4, 20_000)
    await replay(bound, candidates[:1000])
    early = [await bound.decide("k0", 0.99 - i / 1e7) for i in range(1000)]  # distinct prompts, never repeats
    await replay(bound, candidates[1000:])
    late = [await bound.decide("k0", 0.9899 - i / 1e7) for i in range(1000)]

    assert early.count(Decision.VERIFY) > 3 * late.count(Decision.VERIFY)
    assert late.count(Decision.VERIFY) >= 0.01 * len(late)  # min_verify: a changed workload is still noticed


async def judged(bound: ErrorBound, key: str, similarity: float, wrong: bool, partition: str = "") -> None:
    """A verification as the cache runs one: decided, then judged."""
    await bound.decide(key, similarity, partition)
    await bound.learn(key, similarity, wrong=wrong, partition=partition)


async def two_kinds_of_evidence(bound: ErrorBound, partition: str = "") -> ErrorBound:
    """200 answers each right at 0.97 and wrong at 0.86, three times over; "safe" right at 0.87."""
    for _ in range(3):
        for i in range(200):
            await judged(bound, f"a{i}", 0.97, False, partition)
            await judged(bound, f"a{i}", 0.86, True, partition)
    for _ in range(10):
        await judged(bound, "safe", 0.87, False, partition)
    return bound


async def test_an_answer_judged_right_where_others_are_wrong_is_served_there() -> None:
    bound = await two_kinds_of_evidence(ErrorBound(0.02, min_verify=0.0, seed=5, clock=still))

    assert await bound.risk("safe", 0.88) < 0.01 < 0.9 < await bound.risk("new", 0.88)
    assert await bound.decide("safe", 0.88) is Decision.SERVE
    assert await bound.decide("new", 0.88) is Decision.VERIFY  # an answer without verdicts is judged by the pool
    assert bound.threshold is not None and 0.9 < bound.threshold < 0.97


async def test_an_answer_once_judged_wrong_is_not_served_again_at_or_below_that_similarity() -> None:
    bound = await two_kinds_of_evidence(ErrorBound(0.02, min_verify=0.0, seed=5, clock=still))
    assert await bound.decide("good", 0.96) is Decision.SERVE

    await bound.learn("dense", 0.96, wrong=True)

    assert await bound.decide("dense", 0.96) is Decision.VERIFY
    assert await bound.decide("dense", 0.965) is Decision.VERIFY  # within the margin
    assert await bound.decide("dense", 0.98) is Decision.SERVE


async def test_an_answer_judged_wrong_before_each_partition_kept_its_own_record_is_not_served_there() -> None:
    """Until each partition kept its own record of a stored answer (`bound.answer`), a verdict on it was
    kept under its key alone, and Redis evidence keeps it 30 days: after an upgrade (or beside pods not
    yet upgraded) an answer once judged wrong at a similarity must not be served there unverified."""
    bound = await two_kinds_of_evidence(ErrorBound(0.02, min_verify=0.0, seed=5, clock=still), partition="p")
    assert await bound.decide("good", 0.96, partition="p") is Decision.SERVE
    bin = risk_bin(await bound.risk("dense", 0.96, partition="p"))

    await bound.evidence.record("dense", bin, 0.96, True, "p")  # as the release before kept it

    assert await bound.decide("dense", 0.96, partition="p") is Decision.VERIFY
    assert await bound.decide("dense", 0.98, partition="p") is Decision.SERVE


async def test_a_prompt_served_by_meaning_is_verified_when_it_comes_back() -> None:
    bound = await two_kinds_of_evidence(ErrorBound(0.02, min_verify=0.0, seed=5, clock=still))
    assert await bound.decide("good", 0.96) is Decision.SERVE
    assert await bound.decide("good", 0.965) is Decision.SERVE  # another prompt near the same answer

    assert await bound.decide("good", 0.96) is Decision.VERIFY  # the same prompt again: not an independent sample


async def test_a_prompt_that_comes_back_is_a_miss_once_the_verification_cap_is_spent() -> None:
    # The cap (one a minute, spent on the evidence below) must never turn "verify it" into "serve it":
    # a prompt served by meaning that comes back is not vouched for by the evidence, only by a verdict.
    capped = ErrorBound(0.02, min_verify=0.0, verifications_per_minute=1, seed=5, clock=still)
    bound = await two_kinds_of_evidence(capped)
    assert await bound.decide("good", 0.96) is Decision.SERVE  # shown safe: served, no verification spent

    assert await bound.decide("good", 0.96) is Decision.SKIP  # the same prompt again: a miss, not served
    assert await bound.decide("new", 0.88) is Decision.SKIP  # not shown safe: a miss, as before


async def test_one_caller_s_flood_of_hits_never_lets_another_caller_s_served_prompt_be_served_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bound_module, "REMEMBERED", 50)  # (20,000 in use: the same rule, fewer decisions)
    bound = ErrorBound(0.02, min_verify=0.0, seed=5, clock=still)
    await two_kinds_of_evidence(bound, partition="bob")
    await two_kinds_of_evidence(bound, partition="mallory")
    assert await bound.decide("good", 0.96, partition="bob") is Decision.SERVE
    served = [await bound.decide("good", 0.97 + i / 1e5, partition="mallory") for i in range(200)]
    assert served.count(Decision.SERVE) > 50  # more than the memory holds: it gave up Mallory's own

    assert await bound.decide("good", 0.96, partition="bob") is Decision.VERIFY  # Bob's prompt back: checked


async def test_a_caller_s_hits_under_many_namespaces_never_let_another_caller_s_served_prompt_be_served_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The served prompts remembered are given up by the payer holding the most (the caller without its
    namespace): Mallory's hits, a few in each of its namespaces, push out only its own, never Bob's,
    all in one namespace."""
    monkeypatch.setattr(bound_module, "REMEMBERED", 10)  # (20,000 in use: the same rule, fewer decisions)
    bound = ErrorBound(0.02, min_verify=0.0, seed=5, clock=still)
    mallory = [f"mallory's namespace {n}" for n in range(8)]
    for partition in ("bob's namespace", *mallory):
        for _ in range(3):  # the evidence of `two_kinds_of_evidence`, learned without serving anything
            for i in range(200):
                await bound.learn(f"a{i}", 0.97, wrong=False, partition=partition)
                await bound.learn(f"a{i}", 0.86, wrong=True, partition=partition)
    bob = [await bound.decide("good", 0.96 + i / 1e4, "bob's namespace", payer="bob") for i in range(3)]
    assert bob == [Decision.SERVE] * 3
    for n, partition in enumerate(mallory):  # two in each namespace, fewer than Bob's three
        for i in range(2):
            assert await bound.decide("good", 0.97 + (2 * n + i) / 1e5, partition, payer="mallory") is Decision.SERVE

    assert await bound.decide("good", 0.96, "bob's namespace", payer="bob") is Decision.VERIFY  # his oldest: checked


async def test_one_partition_s_verdicts_on_a_stored_answer_never_lower_its_risk_for_another() -> None:
    # Under a shared scope every caller's lookups find the same stored answers; each caller is a
    # partition of its own, and keeps its own record of each answer.
    bound = ErrorBound(0.02, seed=5, clock=still)
    before = await bound.risk("everyone-s", 0.8, partition="bob")
    for _ in range(32):
        await bound.learn("everyone-s", 0.8, wrong=False, partition="mallory")

    assert await bound.risk("everyone-s", 0.8, partition="mallory") < before
    assert await bound.risk("everyone-s", 0.8, partition="bob") == before


async def test_nothing_is_served_before_the_evidence_shows_the_bound() -> None:
    bound = ErrorBound(0.02, seed=6, clock=still)
    assert bound.threshold is None
    assert await bound.decide("k", 0.999) is Decision.VERIFY
    assert await bound.decide("k", 0.70) is Decision.SKIP  # under the floor: an ordinary miss


async def test_verifications_per_minute_are_capped() -> None:
    now = [0.0]
    bound = ErrorBound(0.02, verifications_per_minute=2, clock=lambda: now[0], seed=7)
    decisions = [await bound.decide("k", 0.9) for _ in range(3)]
    assert decisions == [Decision.VERIFY, Decision.VERIFY, Decision.SKIP]
    now[0] = 60.0
    assert await bound.decide("k", 0.9) is Decision.VERIFY


async def test_what_one_partition_learns_never_decides_for_another() -> None:
    bound = ErrorBound(0.02, min_verify=0.0, seed=5, clock=still)
    for _ in range(20_000):  # tenant a: right at 0.9, again and again
        await bound.learn("a-answer", 0.9, wrong=False, partition="a")

    assert await bound.decide("a-new", 0.9, partition="a") is Decision.SERVE
    assert await bound.decide("b-new", 0.9, partition="b") is Decision.VERIFY  # b has shown nothing
    assert bound.threshold_of("a") is not None and bound.threshold_of("b") is None


async def test_one_partition_spending_its_verifications_leaves_another_its_own() -> None:
    bound = ErrorBound(0.02, verifications_per_minute=2, seed=7, clock=still)
    flood = [await bound.decide(f"a{i}", 0.9, partition="a") for i in range(3)]

    assert flood == [Decision.VERIFY, Decision.VERIFY, Decision.SKIP]
    assert await bound.decide("b", 0.9, partition="b") is Decision.VERIFY


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_evidence_tallies_each_partition_apart(store: str, redis_server: Any) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    evidence: Any = InProcessEvidence() if store == "memory" else RedisEvidence(redis_server.url)
    await evidence.record("a-answer", 3, 0.9, wrong=True, partition="a")
    await evidence.count([0, 1], lookups=4, partition="a")

    a, b = await evidence.tally(5, "a"), await evidence.tally(5, "b")
    assert (a.checked, a.wrong, a.seen, a.lookups) == ([0, 0, 0, 1, 0], [0, 0, 0, 1, 0], [0, 1, 0, 0, 0], 4)
    assert (b.checked, b.wrong, b.seen, b.lookups) == ([0] * 5, [0] * 5, [0] * 5, 0)
    if store == "redis":
        assert 0 < redis.Redis.from_url(redis_server.url).ttl("llm-cache:bound:risk:a") <= evidence.keep
        await evidence.aclose()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_traffic_is_added_up_per_bin_beside_the_lookups(store: str, redis_server: Any) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    pods: list[Any] = [InProcessEvidence()]
    if store == "redis":
        pods = [RedisEvidence(redis_server.url), RedisEvidence(redis_server.url)]  # two pods, one hash
    await pods[0].count([0, 2, 1], lookups=10)
    await pods[-1].count([1, 0, 0, 4], lookups=5)
    await pods[0].record("a", 1, 0.9, wrong=True)

    tally = await pods[-1].tally(5)  # verdicts and traffic in one read
    assert (tally.seen, tally.lookups) == ([1, 2, 1, 4, 0], 15)
    assert (tally.checked, tally.wrong) == ([0, 1, 0, 0, 0], [0, 1, 0, 0, 0])  # the verdicts are apart
    for pod in pods:
        close = getattr(pod, "aclose", None)
        if close is not None:
            await close()


async def test_a_bound_counts_its_lookups_and_candidates_into_the_evidence() -> None:
    bound = ErrorBound(0.02, refresh=0.0, seed=9)
    for _ in range(3):
        bound.looked_up()
    await bound.decide("k", 0.9)
    await bound.decide("k", 0.7)  # under the floor: a lookup, never a candidate
    await bound.decide("k", 0.9)  # the traffic of the last decision is added at the next recompute
    tally = await bound.evidence.tally(BINS)
    assert (sum(tally.seen), tally.lookups) == (1, 3)


async def test_in_process_evidence_tallies_per_bin_and_keeps_the_highest_wrong_similarity() -> None:
    evidence = InProcessEvidence(max_keys=2)
    await evidence.record("a", 3, 0.9, wrong=True)
    await evidence.record("a", 1, 0.8, wrong=True)
    await evidence.record("b", 1, 0.8, wrong=False)
    await evidence.record("c", 0, 0.76, wrong=True)
    await evidence.record("d", 0, 0.77, wrong=True)
    assert (await evidence.tally(5))[:2] == ([2, 2, 0, 1, 0], [2, 1, 0, 1, 0])
    assert (await evidence.wrong_at("a"), await evidence.wrong_at("b")) == (None, None)  # "a" was the oldest
    assert (await evidence.wrong_at("c"), await evidence.wrong_at("d")) == (0.76, 0.77)
    assert (await evidence.history("b"), await evidence.history("d")) == ([], [(0.77, True)])  # "b" is older


async def test_a_flood_of_verdicts_from_invented_sources_never_pushes_out_another_caller_s_records() -> None:
    """Full, the records give up the least recently judged answer of the partition holding the most:
    Bob's verdict that an answer is wrong for him stays, however many sources Mallory's verdicts come from."""
    evidence = InProcessEvidence(max_keys=10)
    await evidence.record(answer("k", "bob"), 0, 0.9, wrong=True, partition="bob")
    for n in range(200):  # one source after another, each judging a few answers
        for i in range(3):
            await evidence.record(answer(f"m{i}", f"mallory{n}"), 0, 0.9, wrong=False, partition=f"mallory{n}")

    assert await evidence.wrong_at(answer("k", "bob")) == 0.9
    assert await evidence.history(answer("k", "bob")) == [(0.9, True)]
    assert await evidence.history(answer("m0", "mallory0")) == []  # Mallory's own gave way


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_caller_naming_a_namespace_per_verdict_only_pushes_out_its_own_records(
    store: str, redis_server: Any
) -> None:
    """Full, the records give up the oldest of the payer holding the most (the caller without its
    namespace), not of the partition: Mallory's verdicts in one namespace each, as many as it likes,
    never push out Bob's, however few partitions of its own each holds."""
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    evidence: Any = InProcessEvidence(max_keys=4)
    if store == "redis":
        evidence = RedisEvidence(redis_server.url, max_records=4, max_tallies=4)
    bound = ErrorBound(0.02, seed=8, evidence=evidence)
    for key in ("k1", "k2"):
        await bound.learn(key, 0.9, wrong=True, partition="bob's namespace", payer="bob")
    for n in range(30):
        await bound.learn(f"m{n}", 0.9, wrong=True, partition=f"mallory's namespace {n}", payer="mallory")

    for key in ("k1", "k2"):
        assert await evidence.wrong_at(answer(key, "bob's namespace")) == 0.9
        assert await evidence.history(answer(key, "bob's namespace")) == [(0.9, True)]
    assert await evidence.history(answer("m29", "mallory's namespace 29")) == [(0.9, True)]
    assert await evidence.history(answer("m0", "mallory's namespace 0")) == []  # Mallory's own gave way
    if store == "redis":
        raw = redis.Redis.from_url(redis_server.url)
        assert len(list(raw.scan_iter("llm-cache:bound:history:*"))) == 4
        assert sum((await evidence.tally(BINS, "bob's namespace")).checked) == 2  # Bob's tally stays too
        assert len(list(raw.scan_iter("llm-cache:bound:risk:*"))) == 4  # Mallory's tallies: its own gave way
        raw.close()
        await evidence.aclose()


async def test_redis_evidence_forgets_records_gone_by_their_time(redis_server: Any) -> None:
    """A record Redis dropped when its `keep` ran out is no longer counted: it never makes another go."""
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    now, later = RedisEvidence(redis_server.url, max_records=2), RedisEvidence(redis_server.url, max_records=2)
    later._records.clock = lambda: time.time() + 2 * now.keep  # a pod writing once their time is up
    await now.record(answer("a", "alice"), 0, 0.9, wrong=True, partition="alice")
    raw = redis.Redis.from_url(redis_server.url)
    raw.delete(now._answer_key("history", answer("a", "alice")), now._answer_key("wrong", answer("a", "alice")))
    for key in ("b1", "b2"):  # Bob's two fit beside Alice's record, gone by its time
        await later.record(answer(key, "bob"), 0, 0.9, wrong=True, partition="bob")

    assert [await now.wrong_at(answer(key, "bob")) for key in ("b1", "b2")] == [0.9, 0.9]
    assert int(raw.get("llm-cache:bound:fair:records:rows")) == 2
    raw.close()
    for pod in (now, later):
        await pod.aclose()


async def test_redis_evidence_still_writes_once_the_server_has_forgotten_its_scripts(redis_server: Any) -> None:
    """Its scripts run by digest: a server that lacks them (restarted, `SCRIPT FLUSH`ed) is sent them
    before the write, which is kept whole (no tally counted twice, no verdict lost)."""
    import redis

    raw = redis.Redis.from_url(redis_server.url)
    raw.flushall()
    evidence = RedisEvidence(redis_server.url)
    await evidence.record(answer("a", "alice"), 1, 0.8, wrong=True, partition="alice")
    raw.script_flush()
    await evidence.record(answer("a", "alice"), 1, 0.9, wrong=True, partition="alice")
    await evidence.count([0, 3], lookups=2, partition="alice")
    raw.script_flush()
    await evidence.count([0, 1], lookups=1, partition="alice")

    tally = await evidence.tally(3, "alice")
    assert (tally.checked, tally.wrong, tally.seen, tally.lookups) == ([0, 2, 0], [0, 2, 0], [0, 4, 0], 3)
    assert await evidence.wrong_at(answer("a", "alice")) == 0.9
    assert await evidence.history(answer("a", "alice")) == [(0.8, True), (0.9, True)]
    assert int(raw.get("llm-cache:bound:fair:records:rows")) == 1
    raw.close()
    await evidence.aclose()


async def test_in_process_evidence_keeps_the_tallies_of_its_most_recently_used_partitions() -> None:
    """A partition dropped to make room starts again from nothing; one used since is kept."""
    evidence = InProcessEvidence(max_partitions=2)
    await evidence.record("a", 0, 0.9, wrong=False, partition="alice")
    await evidence.count([1], 1, partition="bob")
    await evidence.tally(1, partition="alice")  # alice used again: bob is now the least recent
    await evidence.record("c", 0, 0.9, wrong=False, partition="carol")
    assert evidence.partitions() == ["alice", "carol"]
    assert (await evidence.tally(1, partition="alice")).checked == [1]
    assert await evidence.tally(1, partition="bob") == ([0], [0], [0], 0)


async def test_an_answer_s_history_keeps_its_most_recent_verdicts_oldest_first() -> None:
    evidence = InProcessEvidence()
    for i in range(HISTORY + 5):
        await evidence.record("a", 0, i / 100, wrong=i % 2 == 0)
    history = await evidence.history("a")
    assert len(history) == HISTORY
    assert history[0] == (0.05, False) and history[-1] == ((HISTORY + 4) / 100, True)


def test_evidence_without_the_traffic_counts_is_refused_at_once() -> None:
    class VerdictsOnly:  # an Evidence written before traffic was counted: no `count`
        async def record(self, key: str, bin: int, similarity: float, wrong: bool) -> None: ...
        async def tally(self, bins: int) -> tuple[list[int], list[int]]: ...
        async def wrong_at(self, key: str) -> float | None: ...
        async def history(self, key: str) -> list[tuple[float, bool]]: ...

    with pytest.raises(TypeError, match="history and count"):
        ErrorBound(0.02, evidence=VerdictsOnly())  # type: ignore[arg-type]


def test_evidence_that_cannot_keep_partitions_apart_is_refused_at_once() -> None:
    """An Evidence written before bounded mode learned per partition: its `record`, `tally` and
    `count` take no `partition`. Accepted, every decision raised (each lookup a miss, logged as a
    search failure) and no verdict was ever recorded, silently; refused, it names what is missing."""

    class Unpartitioned:
        async def record(self, key: str, bin: int, similarity: float, wrong: bool) -> None: ...
        async def tally(self, bins: int) -> Tally: ...
        async def wrong_at(self, key: str) -> float | None: ...
        async def history(self, key: str) -> list[tuple[float, bool]]: ...
        async def count(self, seen: list[int], lookups: int) -> None: ...

    with pytest.raises(TypeError, match="record, tally, count .*partition"):
        ErrorBound(0.02, evidence=Unpartitioned())  # type: ignore[arg-type]


@pytest.mark.parametrize("max_error_rate", [0.0, 1.0, -0.1])
def test_a_bound_outside_0_to_1_is_refused(max_error_rate: float) -> None:
    with pytest.raises(ValueError, match="max_error_rate"):
        ErrorBound(max_error_rate)


# -- judges ----------------------------------------------------------------------------------------------


PARIS_ARGS = {"location": "Paris"}
PARIS_OPENAI = {"name": "get_weather", "arguments": '{"location": "Paris"}'}


def chat_answer(text: str) -> bytes:
    return orjson.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (chat_answer("Paris."), "Paris."),
        ({"content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}, "Hi\nthere"),
        ({"candidates": [{"content": {"parts": [{"text": "Gemini"}], "role": "model"}}]}, "Gemini"),
        ({"output": [{"type": "message", "content": [{"type": "output_text", "text": "R"}]}]}, "R"),
        ({"output": {"message": {"content": [{"text": "Bedrock"}]}}}, "Bedrock"),
        ({"id": "no text", "usage": {"total_tokens": 3}}, ""),
    ],
)
def test_the_answer_text_is_found_in_every_family_s_shape(body: bytes | dict[str, object], text: str) -> None:
    assert answer_content(body if isinstance(body, bytes) else orjson.dumps(body))[0] == text


PARIS = 'get_weather({"location":"Paris"})'


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"message": {"tool_calls": [{"id": "c", "function": PARIS_OPENAI}], "content": None}}]},
        {"output": [{"type": "function_call", "call_id": "c", **PARIS_OPENAI}]},
        {"content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": {"location": "Paris"}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": PARIS_ARGS}}]}}]},
        {
            "output": {
                "message": {"content": [{"toolUse": {"toolUseId": "t", "name": "get_weather", "input": PARIS_ARGS}}]}
            }
        },
    ],
    ids=["chat", "responses", "anthropic", "gemini", "bedrock"],
)
def test_an_answer_s_tool_calls_are_found_in_every_family_s_shape(body: dict[str, object]) -> None:
    assert answer_content(orjson.dumps(body)) == ("", (PARIS,))


async def test_the_exact_judge_compares_text_whitespace_aside() -> None:
    judge = ExactJudge()
    assert await judge.same("q", "Paris is  the capital.", "Paris is the\ncapital.")
    assert not await judge.same("q", "Paris.", "Lyon.")


class Raising:
    name = "raising"

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        raise RuntimeError("the judge's model is down")


class Slow:
    name = "slow"

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        await asyncio.Event().wait()  # never answers
        return True


class Vague:
    name = "vague"

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        return "maybe"  # type: ignore[return-value]


class Fixed:
    """Embeds to fixed vectors (a test double of the embedding model's output, not of our code)."""

    name = "fixed"

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.vectors[text] for text in texts], dtype=np.float32)


@pytest.mark.parametrize("judge", [Raising(), Slow(), Vague()], ids=["raises", "times-out", "no-verdict"])
async def test_a_judge_without_a_verdict_counts_as_a_wrong_answer_never_a_right_one(judge: object) -> None:
    semantic = SemanticCache(Fixed({}), max_error_rate=0.02, judge=judge, judge_timeout=0.05)  # type: ignore[arg-type]
    assert semantic.bound is not None
    verdict = await semantic.verified("q", "stored-key", 0.93, chat_answer("A"), chat_answer("A"))
    assert verdict is None
    checked, wrong, _, _ = await semantic.bound.evidence.tally(100)
    assert (sum(checked), sum(wrong)) == (1, 1)
    assert await semantic.bound.evidence.wrong_at("stored-key") == 0.93


async def test_the_default_judge_compares_the_answers_embeddings() -> None:
    vectors = {"Paris.": [1.0, 0.0], "It is Paris.": [0.95, 0.312], "Lyon.": [0.6, 0.8]}
    semantic = SemanticCache(Fixed(vectors), max_error_rate=0.02)
    assert isinstance(semantic.judge, EmbeddingJudge)
    assert await semantic.verified("q", "a", 0.9, chat_answer("Paris."), chat_answer("It is Paris.")) is True
    assert await semantic.verified("q", "b", 0.9, chat_answer("Paris."), chat_answer("Lyon.")) is False


def test_bounded_mode_considers_candidates_from_its_floor() -> None:
    assert SemanticCache(Fixed({}), max_error_rate=0.02).threshold == 0.75
    assert SemanticCache(Fixed({}), max_error_rate=0.02, threshold=0.8).threshold == 0.8
    assert SemanticCache(Fixed({})).threshold == 0.9
    assert SemanticCache(Fixed({})).bound is None


# -- evidence shared by pods -------------------------------------------------------------------------


async def test_hostile_records_in_redis_evidence_never_make_an_answer_servable(redis_server: Any) -> None:
    import hashlib

    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    bound = ErrorBound(0.02, min_verify=0.0, seed=8, evidence=RedisEvidence(redis_server.url), clock=still)
    for _ in range(20_000):
        await bound.learn("earlier", 0.95, wrong=False, partition="p")
    assert await bound.decide("fresh", 0.8, partition="p") is Decision.VERIFY  # 0.8 is not shown safe
    history = f"llm-cache:bound:history:{hashlib.sha256(b'victim').hexdigest()[:32]}"
    client.rpush(history, "nan:0", "inf:0", "-inf:1", "7:0", "garbage", "0.99:maybe")

    assert await bound.evidence.history("victim") == []  # nothing there is a verdict
    assert await bound.risk("victim", 0.8, "p") == await bound.risk("fresh", 0.8, "p")
    assert await bound.decide("victim", 0.8, partition="p") is Decision.VERIFY
    client.hset("llm-cache:bound:risk:p", mapping={"n0": -5, "w0": -5, "s0": "x"})
    assert (await bound.evidence.tally(BINS, "p")).checked[0] == 0  # a count is never negative
    await bound.evidence.aclose()  # type: ignore[attr-defined]


def test_a_risk_that_is_not_a_number_falls_in_the_riskiest_bin() -> None:
    assert risk_bin(math.nan) == 0
    assert risk_bin(0.0) == BINS - 1  # no risk at all: the safest


async def test_pods_sharing_redis_evidence_learn_from_each_others_verdicts(redis_server: Any) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    first = ErrorBound(0.02, min_verify=0.0, refresh=0.0, seed=8, evidence=RedisEvidence(redis_server.url))
    second = ErrorBound(0.02, min_verify=0.0, refresh=0.0, seed=8, evidence=RedisEvidence(redis_server.url))
    for _ in range(400):
        await first.learn("good", 0.95, wrong=False)
    await first.learn("dense", 0.97, wrong=True)
    await first.learn("dense", 0.96, wrong=True)  # lower than before: the highest stays

    assert await second.evidence.wrong_at("dense") == 0.97
    assert await second.evidence.wrong_at("good") is None
    checked, wrong, _, _ = await second.evidence.tally(BINS)
    assert (sum(checked), sum(wrong)) == (402, 2)
    assert await second.evidence.history("dense") == [(0.97, True), (0.96, True)]
    assert len(await second.evidence.history("good")) == HISTORY
    assert await second.decide("dense", 0.975) is Decision.VERIFY
    for bound in (first, second):
        await bound.evidence.aclose()  # type: ignore[attr-defined]


RACERS = "abcd"


def test_in_process_evidence_written_by_threads_at_once_adds_up_and_keeps_its_bound() -> None:
    """The sync and async transports may share one semantic cache, each on its own loop's thread.
    Unguarded, a partition's tallies were found by one thread and replaced by another's: verdicts and
    traffic were lost (a tally read too few wrong verdicts), and a verdict added to an answer's record
    while another thread dropped that record was lost with it."""
    evidence = InProcessEvidence(max_keys=50)
    each = 3_000

    async def write(name: str) -> None:
        for n in range(each):
            key = f"answer {n % 200}"  # the threads judge the same answers
            await evidence.record(key, n % 7, 0.8 + (n % 10) / 100, n % 3 == 0, "shared")
            await evidence.count([1, 2], 1, "shared")
            await evidence.history(key)

    assert raced(lambda name: asyncio.run(write(name)), RACERS) == []
    checked, wrong, seen, lookups = asyncio.run(evidence.tally(7, "shared"))
    racers = len(RACERS)
    assert (sum(checked), sum(wrong)) == (racers * each, racers * len(range(0, each, 3)))
    assert (seen[:2], lookups) == ([racers * each, 2 * racers * each], racers * each)
    judged = evidence._judged
    assert len(judged) <= 50 and len(evidence._history) == len(judged)
    assert all(key in judged for key in (*evidence._history, *evidence._wrong_at))


def test_a_bound_decided_on_by_threads_at_once_counts_every_lookup_and_keeps_its_caps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One bound shared by the sync and async transports decides on two threads at once. Unguarded,
    a partition's learned state or a payer's minute of verifications was found and then replaced by
    another thread's: lookups and candidates went uncounted, more verifications than the cap per
    minute went to the judge, and a decision could raise (its lookup a miss).

    Every servable candidate is verified while the cap allows (`min_verify=1`), so every decision asks
    the cap once, whatever the interleaving. With the default share, a racer whose verdicts came last,
    after the others' lookups had shrunk its answers' share of the traffic, rightly showed a serving
    cap, and a candidate served by the draw asks the cap nothing (neither a verification nor a refusal)."""
    monkeypatch.setattr(bound_module, "PARTITIONS", 8)  # (passers-by push partitions out all along)
    now = [0.0]
    cap, each = 200, 1_500
    refused: list[None] = []
    decided: list[Decision] = []
    bound = ErrorBound(0.02, min_verify=1.0, verifications_per_minute=cap, seed=3, clock=lambda: now[0])
    bound.on_capped = lambda: refused.append(None)

    async def decide(name: str) -> None:
        for n in range(each):
            bound.looked_up(f"passer-by {name}{n}")
            bound.looked_up("shared")
            decision = await bound.decide(f"{name}{n % 50}", 0.9, "shared", payer="payer")
            decided.append(decision)
            if decision is Decision.VERIFY:
                await bound.learn(f"{name}{n % 50}", 0.9, n % 5 == 0, "shared")

    assert raced(lambda name: asyncio.run(decide(name)), RACERS) == []
    racers = len(RACERS)
    assert (decided.count(Decision.VERIFY), len(refused)) == (cap, racers * each - cap)
    assert len(bound._partitions) <= 8 and "shared" in bound._partitions
    now[0] += 60.0  # the bound's traffic is added to the evidence at its next decision
    asyncio.run(bound.decide("late", 0.9, "shared"))
    checked, _, seen, lookups = asyncio.run(bound.evidence.tally(BINS, "shared"))
    assert (sum(checked), sum(seen), lookups) == (cap, racers * each, racers * each)


def test_a_prompt_decided_on_two_threads_at_once_is_served_unverified_once() -> None:
    """Whether a candidate was served, the draw, the cap and remembering it served are one step under
    the bound's lock. Two steps, two threads deciding the same prompt at the same similarity at once
    both found it not yet served, and both served it unverified: a repeat the draw must never serve.

    Every draw asks the cap (`min_verify=1`), which is spent (none a minute): its refusal (`on_capped`)
    holds each thread until the other has decided too, so that, unguarded, both had checked before
    either remembered (every wait bounded by a deadline)."""
    bound = asyncio.run(
        two_kinds_of_evidence(ErrorBound(0.02, min_verify=1.0, verifications_per_minute=0, clock=still))
    )
    both = threading.Barrier(2, timeout=JOIN_DEADLINE)
    bound.on_capped = both.wait
    decided: list[Decision] = []

    def decide(name: str) -> None:
        decided.append(asyncio.run(bound.decide("good", 0.96)))

    assert raced(decide, "ab") == []
    assert sorted(decided) == [Decision.SERVE, Decision.SKIP]  # the repeat: no verification left, a miss
