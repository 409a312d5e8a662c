"""Deployment selection as small composable steps (in the spirit of tenacity's strategy objects).

A *step* is a callable ``(candidates, ctx) -> candidates``. Filters narrow the list (and return it
unchanged rather than empty it: a soft limit never turns into an outage); pickers move their choice
to the front. ``chain(...)`` composes steps; the router sends to ``result[0]``. Write your own step
as a plain function.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._breakpoints import mentions_cache_control
from ._state import DeploymentState

Candidates = list[DeploymentState]


@dataclass
class PickContext:
    group: str
    rng: random.Random
    affinity_key: str | None = None
    est_tokens: int = 0
    affinity: AffinityMap | None = None
    stream: bool = False  # the request streams: deployments compare by time to first byte


Step = Callable[[Candidates, PickContext], Candidates]


def chain(*steps: Step) -> Step:
    def run(cands: Candidates, ctx: PickContext) -> Candidates:
        for step in steps:
            if len(cands) <= 1:
                break
            cands = step(cands, ctx)
        return cands

    run.__name__ = "chain(" + ", ".join(getattr(s, "__name__", repr(s)) for s in steps) + ")"
    return run


def _soft(kept: Candidates, cands: Candidates) -> Candidates:
    return kept or cands


# ---------------------------------------------------------------- filters


def lowest_order(cands: Candidates, ctx: PickContext) -> Candidates:
    """LiteLLM's ``order``: use the lowest order that has a healthy deployment."""
    best = min(c.deployment.order for c in cands)
    return [c for c in cands if c.deployment.order == best]


def under_parallel_limit(cands: Candidates, ctx: PickContext) -> Candidates:
    mp = [
        c
        for c in cands
        if c.deployment.max_parallel_requests is None or c.in_flight < c.deployment.max_parallel_requests
    ]
    return _soft(mp, cands)


def under_usage_limits(cands: Candidates, ctx: PickContext) -> Candidates:
    """Keep deployments whose rpm/tpm budget for the last minute still has room for this request."""
    kept = []
    for c in cands:
        reqs, toks = c.window_usage()
        d = c.deployment
        if d.rpm is not None and reqs + 1 > d.rpm:
            continue
        if d.tpm is not None and toks + ctx.est_tokens > d.tpm:
            continue
        kept.append(c)
    return _soft(kept, cands)


def within_latency_band(tolerance: float = 0.2, max_age: float = 60.0) -> Step:
    """Keep deployments within ``(1 + tolerance) ×`` the fastest EWMA; unmeasured ones stay in (explore).
    A stream is routed by time to first byte, a whole answer by time per output token (`_latency.py`)
    or, when no candidate has a per-token figure, by whole seconds: units are never compared with each
    other, and a candidate with no figure in the unit compared is unmeasured. So is one sent nothing
    for ``max_age`` seconds (`DeploymentState.stale`): its figures are too old to keep it out."""

    def within_latency_band(cands: Candidates, ctx: PickContext) -> Candidates:
        if ctx.stream:
            measure = {c.id: c.ttft for c in cands}
        elif any(c.latency is not None for c in cands):
            measure = {c.id: c.latency for c in cands}
        else:
            measure = {c.id: c.seconds for c in cands}
        measure.update({c.id: None for c in cands if c.stale(max_age)})
        known = [m for m in measure.values() if m is not None]
        if not known:
            return cands
        limit = min(known) * (1 + tolerance)
        return [c for c in cands if (m := measure[c.id]) is None or m <= limit]

    return within_latency_band


def prefer_affinity(cands: Candidates, ctx: PickContext) -> Candidates:
    """If this request's cacheable prefix was served by a candidate, go there again."""
    if ctx.affinity is None or ctx.affinity_key is None:
        return cands
    dep_id = ctx.affinity.get(ctx.affinity_key)
    for c in cands:
        if c.id == dep_id:
            return [c]
    return cands


# ---------------------------------------------------------------- pickers


def shares(cands: Candidates) -> list[float]:
    """LiteLLM's simple-shuffle rule: explicit ``weight`` if any is set, else ``rpm``, else ``tpm``,
    else equal shares. A deployment missing the chosen field gets the others' mean."""
    for field in ("weight", "rpm", "tpm"):
        values = [getattr(c.deployment, field) for c in cands]
        present = [v for v in values if v is not None]
        if present:
            mean = sum(present) / len(present)
            return [float(mean if v is None else v) for v in values]
    return [1.0] * len(cands)


def weighted_random(cands: Candidates, ctx: PickContext) -> Candidates:
    weights = shares(cands)
    total = sum(weights)
    if total <= 0:
        i = ctx.rng.randrange(len(cands))
    else:
        x = ctx.rng.random() * total
        i = len(cands) - 1
        for j, w in enumerate(weights):
            x -= w
            if x < 0:
                i = j
                break
    return [cands[i], *cands[:i], *cands[i + 1 :]]


def least_in_flight(cands: Candidates, ctx: PickContext) -> Candidates:
    low = min(c.in_flight for c in cands)
    return weighted_random([c for c in cands if c.in_flight == low], ctx)


def lowest_utilisation(cands: Candidates, ctx: PickContext) -> Candidates:
    def util(c: DeploymentState) -> float:
        reqs, toks = c.window_usage()
        d = c.deployment
        return max(reqs / d.rpm if d.rpm else 0.0, toks / d.tpm if d.tpm else 0.0)

    low = min(util(c) for c in cands)
    return weighted_random([c for c in cands if util(c) <= low + 1e-9], ctx)


# ---------------------------------------------------------------- named strategies


def build(name: str, *, tolerance: float = 0.2, affinity: bool = True, max_age: float = 60.0) -> Step:
    """The step for a configured ``routing_strategy`` name (after alias resolution)."""
    head: list[Step] = [lowest_order, under_parallel_limit]
    if affinity:
        head.append(prefer_affinity)
    tails: dict[str, list[Step]] = {
        "weighted": [weighted_random],
        "least-busy": [least_in_flight],
        "latency": [within_latency_band(tolerance, max_age), weighted_random],
        "usage": [under_usage_limits, lowest_utilisation],
    }
    if name not in tails:
        raise ValueError(f"unknown strategy {name!r}; use one of {sorted(tails)}")
    return chain(*head, *tails[name])


# ---------------------------------------------------------------- prompt-cache affinity


class AffinityMap:
    """prefix key → deployment id, each entry living ``ttl`` seconds (the provider cache's lifetime)."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str) -> str | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] <= self.clock():
            del self._entries[key]
            return None
        return hit[0]

    def put(self, key: str, dep_id: str) -> None:
        self._entries[key] = (dep_id, self.clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def affinity_key(group: str, body: Mapping[str, Any]) -> str | None:
    """The cacheable prefix of a chat request, hashed; ``None`` when there is nothing worth pinning.

    In order: OpenAI's explicit ``prompt_cache_key``; everything up to the last ``cache_control``
    marker (tools, system, messages: Anthropic's cache order); else the system prompt and tools (or,
    without them, the opening message of a multi-turn conversation).
    """
    if body.get("prompt_cache_key"):
        return _digest(group, ["pck", body["prompt_cache_key"]])
    messages = body.get("messages") if isinstance(body.get("messages"), list) else None
    if messages is None and isinstance(body.get("contents"), list):  # Gemini
        messages = body["contents"]
    if messages is None:
        return None
    tools = body.get("tools")
    system = body.get("system", body.get("systemInstruction"))
    parts: list[Any] = [tools, system]
    seq: Sequence[Any] = messages
    marked = [i for i, m in enumerate(messages) if mentions_cache_control(m)]
    if marked or mentions_cache_control(system) or mentions_cache_control(tools):
        seq = messages[: marked[-1] + 1] if marked else []
    else:
        # No markers: the system prompt and tools are the prefix conversations share; a request
        # without them is pinned by its opening message (so a growing conversation stays put).
        leading = [m for m in messages if isinstance(m, Mapping) and m.get("role") in ("system", "developer")]
        seq = leading or messages[:1]
        if not leading and system is None and tools is None and len(messages) < 2:
            return None
    parts.append(list(seq))
    return _digest(group, parts)


def _digest(group: str, parts: Any) -> str:
    raw = json.dumps([group, parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


__all__ = [
    "AffinityMap",
    "Candidates",
    "PickContext",
    "Step",
    "affinity_key",
    "build",
    "chain",
    "least_in_flight",
    "lowest_order",
    "lowest_utilisation",
    "prefer_affinity",
    "shares",
    "under_parallel_limit",
    "under_usage_limits",
    "weighted_random",
    "within_latency_band",
]
