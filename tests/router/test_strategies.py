"""Selection steps: weighted random, least in-flight, latency band, usage-aware, affinity."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from llm_cache.router import Router
from llm_cache.router._breaker import Breaker
from llm_cache.router._config import Deployment
from llm_cache.router._state import SAMPLE_CLIP, DeploymentState
from llm_cache.router.strategies import (
    AffinityMap,
    PickContext,
    affinity_key,
    build,
    chain,
    least_in_flight,
    lowest_order,
    under_usage_limits,
    weighted_random,
    within_latency_band,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def states(clock: Clock, **deps: dict) -> list[DeploymentState]:
    out = []
    for name, kw in deps.items():
        d = Deployment(id=name, model="m", api_base="http://h", **kw)
        out.append(DeploymentState(d, Breaker(3, 60, 30, clock), clock))
    return out


def ctx(seed: int = 1, **kw) -> PickContext:
    return PickContext(group="g", rng=random.Random(seed), **kw)


def test_weighted_selection_matches_weights_over_2000_draws():
    clock = Clock()
    cands = states(clock, a={"weight": 5}, b={"weight": 3}, c={"weight": 2})
    c = ctx(seed=2026)
    n = 2000
    counts = Counter(weighted_random(cands, c)[0].id for _ in range(n))
    for name, p in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) < 4 * sd, (name, counts)  # 4σ: deterministic with the seed anyway


def test_rpm_is_the_share_when_no_weight_is_set():
    clock = Clock()
    cands = states(clock, a={"rpm": 100}, b={"rpm": 300})
    c = ctx(seed=3)
    counts = Counter(weighted_random(cands, c)[0].id for _ in range(2000))
    assert abs(counts["b"] / 2000 - 0.75) < 0.04


def test_least_in_flight():
    clock = Clock()
    a, b, c = states(clock, a={}, b={}, c={})
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert least_in_flight([a, b, c], ctx())[0] is b


def test_latency_band_keeps_near_fastest_and_unmeasured():
    clock = Clock()
    a, b, c, d = states(clock, a={}, b={}, c={}, d={})
    a.latency, b.latency, c.latency = 1.0, 1.15, 2.0
    kept = within_latency_band(0.2)([a, b, c, d], ctx())
    assert kept == [a, b, d]
    # over many picks both fast deployments get traffic, the slow one none
    step = build("latency", tolerance=0.2, affinity=False)
    picks = Counter(step([a, b, c], ctx(seed=i))[0].id for i in range(200))
    assert picks["a"] > 50 and picks["b"] > 50 and picks["c"] == 0


def test_a_streamed_request_is_routed_by_time_to_first_byte_and_a_whole_one_by_time_per_token():
    clock = Clock()
    a, b = states(clock, a={}, b={})
    a.latency, a.ttft = 0.01, 2.0  # fast per token, slow to start
    b.latency, b.ttft = 0.05, 0.3
    band = within_latency_band(0.2)
    assert band([a, b], ctx(stream=True)) == [b]
    assert band([a, b], ctx()) == [a]


def test_latency_ewma():
    clock = Clock()
    (a,) = states(clock, a={})
    a.observe_latency(1.0, 0.5)
    a.observe_latency(1.5, 0.5)
    a.observe_latency(0.1, 0.5, tokens=10)
    a.observe_latency(0.15, 0.5, tokens=10)
    assert (a.seconds, a.latency) == (pytest.approx(1.25), pytest.approx(0.0125))  # each unit its own average


def test_a_latency_sample_moves_a_figure_by_at_most_a_bounded_factor():
    """One answer built to be slow (a long prompt with `max_tokens: 1`: 3 s for one token) or one
    implausibly fast counts as at most `SAMPLE_CLIP` times the figure, or the figure over it."""
    clock = Clock()
    (a,) = states(clock, a={})
    a.observe_latency(0.1, 0.3, tokens=10)
    a.observe_latency(3.0, 0.3, tokens=1)
    assert a.latency == pytest.approx(0.7 * 0.01 + 0.3 * 0.01 * SAMPLE_CLIP)
    a.observe_latency(1e-9, 0.3, tokens=10)
    assert a.latency > 0.7 * 0.013 and a.latency == pytest.approx(0.7 * 0.013 + 0.3 * 0.013 / SAMPLE_CLIP)


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.inf, math.nan])
def test_a_time_that_is_not_a_positive_finite_number_is_no_sample(seconds):
    clock = Clock()
    (a,) = states(clock, a={})
    for stream, tokens in ((True, None), (False, 10), (False, None)):
        a.observe_latency(seconds, 0.3, stream=stream, tokens=tokens)
    assert (a.ttft, a.latency, a.seconds) == (None, None, None)
    a.observe_latency(0.5, 0.3, tokens=10)
    a.observe_latency(seconds, 0.3, tokens=10)
    assert a.latency == pytest.approx(0.05)


def test_a_deployment_sent_nothing_for_the_max_age_is_unmeasured_in_the_band():
    clock = Clock()
    a, b = states(clock, a={}, b={})
    a.latency, b.latency = 0.01, 3.0
    a.picked_at = b.picked_at = clock.now
    band = within_latency_band(0.2, max_age=60)
    assert band([a, b], ctx()) == [a]
    clock.now += 60
    assert band([a, b], ctx()) == [a]  # not yet older than the max age
    clock.now += 1
    a.picked_at = clock.now  # a is in use; b was sent nothing for 61 s
    assert band([a, b], ctx()) == [a, b]


def test_a_whole_answer_is_compared_per_token_when_any_candidate_has_a_figure_else_in_whole_seconds():
    clock = Clock()
    a, b, c = states(clock, a={}, b={}, c={})
    a.latency, a.seconds = 0.01, 5.0  # one stray answer without usage, slow in whole seconds
    b.latency = 0.011
    c.seconds = 0.5  # never reports usage: unmeasured per token
    band = within_latency_band(0.2)
    assert band([a, b, c], ctx()) == [a, b, c]
    assert band([a, c], ctx()) == [a, c]
    b.latency, b.seconds = None, 1.0
    assert band([b, c], ctx()) == [c]


def test_usage_aware_stays_under_rpm_and_tpm():
    clock = Clock()
    a, b = states(clock, a={"rpm": 2}, b={"tpm": 1000})
    step = build("usage", affinity=False)
    for _ in range(2):
        a.record_usage(10)
    assert under_usage_limits([a, b], ctx(est_tokens=10)) == [b]
    assert step([a, b], ctx(est_tokens=10))[0] is b
    b.record_usage(995)
    # both over budget: soft limit → still answer, least utilised first
    assert under_usage_limits([a, b], ctx(est_tokens=10)) == [a, b]
    clock.now += 61  # the window slides
    assert under_usage_limits([a, b], ctx(est_tokens=10)) == [a, b]
    assert a.window_usage() == (0, 0)


def test_order_prefers_lowest():
    clock = Clock()
    a, b = states(clock, a={"order": 2}, b={"order": 1})
    assert lowest_order([a, b], ctx()) == [b]


def test_chain_composes_custom_steps():
    clock = Clock()
    a, b, c = states(clock, a={}, b={}, c={})

    def not_b(cands, ctx):
        return [x for x in cands if x.id != "b"]

    step = chain(not_b, least_in_flight)
    a.in_flight = 1
    assert step([a, b, c], ctx())[0] is c


def test_custom_strategy_plugs_into_router():
    calls = []

    def always_last(cands, ctx):
        calls.append(ctx.group)
        return [cands[-1]]

    router = Router(
        {"groups": {"g": {"deployments": [{"id": "x", "model": "m"}, {"id": "y", "model": "m"}]}}},
        strategies={"g": always_last},
    )
    assert router.steps["g"] is always_last


# ----------------------------------------------------------------------------- affinity


def test_affinity_key_uses_prefix_up_to_last_cache_control():
    sys_block = [{"type": "text", "text": "big doc", "cache_control": {"type": "ephemeral"}}]
    body1 = {"system": sys_block, "messages": [{"role": "user", "content": "q1"}]}
    body2 = {"system": sys_block, "messages": [{"role": "user", "content": "q2"}]}
    assert affinity_key("g", body1) == affinity_key("g", body2)
    marked = {"role": "user", "content": [{"type": "text", "text": "ctx", "cache_control": {"type": "ephemeral"}}]}
    b3 = {"messages": [marked, {"role": "assistant", "content": "a"}, {"role": "user", "content": "x"}]}
    b4 = {"messages": [marked, {"role": "assistant", "content": "b"}, {"role": "user", "content": "y"}]}
    assert affinity_key("g", b3) == affinity_key("g", b4)
    assert affinity_key("g", b3) != affinity_key("other-group", b3)


def test_affinity_key_system_prompt_and_prompt_cache_key():
    sys = {"role": "system", "content": "S"}
    a = {"messages": [sys, {"role": "user", "content": "1"}]}
    b = {
        "messages": [
            sys,
            {"role": "user", "content": "2"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "3"},
        ]
    }
    assert affinity_key("g", a) == affinity_key("g", b)
    assert affinity_key("g", {"messages": [{"role": "user", "content": "lone"}]}) is None
    assert affinity_key("g", {"prompt_cache_key": "tenant-1", "messages": []}) == affinity_key(
        "g", {"prompt_cache_key": "tenant-1", "messages": [sys]}
    )


def test_affinity_map_expires_with_the_provider_cache():
    clock = Clock()
    m = AffinityMap(ttl=300, clock=clock)
    m.put("k", "a")
    assert m.get("k") == "a"
    clock.now += 301
    assert m.get("k") is None
