"""Semantic-cache match quality on labelled prompt pairs: precision and recall by threshold, with
and without the guard, using a local embedder (`--model`, default all-MiniLM-L6-v2).

    .venv/bin/python benchmarks/semantic_eval.py [--data ../shared/data] [--qqp 5000] [--seed 7] [--model NAME]
    .venv/bin/python benchmarks/semantic_eval.py --speed [--model NAME]
    .venv/bin/python benchmarks/semantic_eval.py --replay [--seeds 1 2 3] [--dev-pairs 5000]
    .venv/bin/python benchmarks/semantic_eval.py --replay --prior-pairs 5000 [--prior-kind neighbours] [--overrule]
    .venv/bin/python benchmarks/semantic_eval.py --lookup [--entries 100000]
    .venv/bin/python benchmarks/semantic_eval.py --synthetic 20000 [--seeds 1 2 3]

A pair counts as "served" when its cosine similarity clears the threshold (and, with the guard,
when `llm_cache.middleware.semantic.agrees` passes); label 1 means the same answer is acceptable. Precision:
of the pairs served, how many should have been (a wrong answer served is the costly error).
Recall: of the pairs that could have been served, how many were. Two sets (see the data's
PROVENANCE.md; evaluation only, never shipped):

- `redis_langcache_eval_chatgpt_pairs.csv`: 716 short prompts whose negatives differ by one
  entity, number, direction or qualifier (the `**` markers around changed words are stripped);
- `gptcache_similiar_qqp_full.json`: Quora question pairs, a seeded random sample of `--qqp`.

Each set ends with a summary: average precision of the raw cosine ranking, precision and recall at
the model's default threshold with the guard, and the lowest threshold whose precision (guard on)
reaches 0.90, with its recall. `--model` also takes the benchmark-only candidates of
`candidate_embedders.py` (models found inside package-registry wheels). `--speed` measures the CPU
one embedding call takes (one text, and a batch of 32). `--split dev` scores only the development
sets (LangCache and the Quora sample).

`--replay` replays Quora questions as a workload (see `replay`): bounded mode at 1%, 2% and 5%
against static thresholds. With `--prior-pairs N`, bounded mode is also replayed warm-started from N
development pairs that share no question with the replay (`warm_bound.py`; a benchmark option, not
in the library). `--lookup` times the semantic lookup (search and guard, no embedding)
over an in-process index of `--entries` rows.

Data discipline: Quora pairs whose sha256(text_a + "\n" + text_b) hex ends in "0" are the held-out
test split (`test_split`); nothing here is tuned on them, and they are reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from llm_cache.middleware.semantic import (
    ErrorBound,
    ExactJudge,
    InProcessIndex,
    Neighbour,
    SemanticCache,
    agrees,
)
from llm_cache.middleware.semantic.embedders import OnnxMiniLMEmbedder, SentenceTransformerEmbedder, local_embedder
from llm_cache.middleware.semantic.models import MINILM, MODELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, when run as a script
from benchmarks.candidate_embedders import CANDIDATES, Candidate  # noqa: E402
from benchmarks.warm_bound import WarmBound  # noqa: E402
from tests.support.semantic_workload import known_answer_workload  # noqa: E402

THRESHOLDS = (0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.93, 0.95)
TARGET_PRECISION = 0.90
LocalEmbedder = SentenceTransformerEmbedder | OnnxMiniLMEmbedder | Candidate


def langcache(data: Path) -> tuple[list[str], list[str], np.ndarray]:
    with (data / "redis_langcache_eval_chatgpt_pairs.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    a = [row["sentence1"].replace("**", "") for row in rows]
    b = [row["sentence2"].replace("**", "") for row in rows]
    return a, b, np.array([int(row["label"]) for row in rows])


def qqp(data: Path, size: int | None, seed: int, held_out: bool) -> tuple[list[str], list[str], np.ndarray]:
    """A seeded sample of `size` pairs (None: all) of the held-out test split or of the others."""
    every = json.loads((data / "gptcache_similiar_qqp_full.json").read_text("utf-8"))
    sample = sampled(every, held_out, size, seed)
    return [p["text_a"] for p in sample], [p["text_b"] for p in sample], np.array([p["label"] for p in sample])


async def scores(embedder: LocalEmbedder, a: list[str], b: list[str]) -> np.ndarray:
    texts = sorted({*a, *b})
    vectors = await embedded(embedder, texts)
    row = {text: i for i, text in enumerate(texts)}
    return np.asarray((vectors[[row[x] for x in a]] * vectors[[row[y] for y in b]]).sum(axis=1))


def table(name: str, a: list[str], b: list[str], labels: np.ndarray, similarity: np.ndarray, default: float) -> None:
    guard = np.array([agrees(x, y) for x, y in zip(a, b, strict=True)])
    positives = int(labels.sum())
    print(f"\n## {name}: {len(labels)} pairs, {positives} positive")
    passed_positive, passed_negative = guard[labels == 1].mean(), guard[labels == 0].mean()
    print(f"The guard passes {passed_positive:.0%} of positives and {passed_negative:.0%} of negatives.\n")
    print("| threshold | guard | precision | recall | wrong answers served |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for threshold in sorted({*THRESHOLDS, default}):
        for use_guard in (False, True):
            served = (similarity >= threshold) & (guard if use_guard else True)
            right = int((served & (labels == 1)).sum())
            wrong = int((served & (labels == 0)).sum())
            precision = right / (right + wrong) if right + wrong else 1.0
            mode = "on" if use_guard else "off"
            print(f"| {threshold:.3g} | {mode} | {precision:.3f} | {right / positives:.3f} | {wrong} |")
    served = (similarity >= default) & guard
    right = int((served & (labels == 1)).sum())
    precision = right / max(int(served.sum()), 1)
    reach = lowest_threshold(similarity[guard], labels[guard], TARGET_PRECISION)
    reached = (
        f"{reach[0]:.3f} (recall {reach[1] * labels[guard].sum() / positives:.3f})" if reach is not None else "never"
    )
    print(
        f"\nSummary: average precision {average_precision(similarity, labels):.3f}; at the default threshold "
        f"{default:.3g} with the guard, precision {precision:.3f}, recall {right / positives:.3f}; "
        f"precision {TARGET_PRECISION:.2f} (guard on) from threshold {reached}."
    )


def average_precision(similarity: np.ndarray, labels: np.ndarray) -> float:
    """The mean, over the positives ranked by similarity, of the precision at each one's rank."""
    ranked = labels[np.argsort(-similarity, kind="stable")]
    hits = np.cumsum(ranked)
    return float((hits / np.arange(1, len(ranked) + 1))[ranked == 1].mean())


def lowest_threshold(similarity: np.ndarray, labels: np.ndarray, target: float) -> tuple[float, float] | None:
    """The lowest similarity at which serving everything at or above it has precision >= `target`,
    and the recall there (of these pairs' positives); None if no threshold reaches it."""
    order = np.argsort(-similarity, kind="stable")
    ranked, values = labels[order], similarity[order]
    precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    last = np.r_[values[1:] != values[:-1], True]  # a cut falls between distinct similarities only
    good = np.flatnonzero(last & (precision >= target))
    if len(good) == 0:
        return None
    cut = good[-1]
    return float(values[cut]), float(ranked[: cut + 1].sum() / max(labels.sum(), 1))


async def speed(embedder: LocalEmbedder, texts: list[str], rounds: int = 7, calls: int = 20) -> None:
    """CPU (all threads) and wall time of one `embed` call, on one text and on a batch of 32: the
    round (of `calls` calls) with the least wall time, of `rounds`, so that other work on a shared
    machine counts as little as it can."""
    embedder.warm_up()
    await embedder.embed(texts[:32])
    print(f"\n## Embedding cost (best of {rounds} rounds of {calls} calls, after warm-up; CPU counts every thread)\n")
    print("| call | CPU ms per call | wall ms per call |")
    print("| --- | ---: | ---: |")
    for size in (1, 32):
        best = (float("inf"), float("inf"))
        for round_ in range(rounds):
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(calls):
                start = ((round_ * calls + n) * size) % (len(texts) - size)
                await embedder.embed(texts[start : start + size])
            best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
        wall_ms, cpu_ms = (value / calls * 1000 for value in best)
        print(f"| {size} text{'s' if size > 1 else ''} | {cpu_ms:.1f} | {wall_ms:.1f} |")


def test_split(pair: dict[str, object]) -> bool:
    """The held-out Quora split: about 1 pair in 16, never tuned on."""
    text = f"{pair['text_a']}\n{pair['text_b']}"
    return hashlib.sha256(text.encode()).hexdigest().endswith("0")


def clusters(pairs: list[dict[str, object]]) -> dict[str, str]:
    """Question -> its duplicate cluster (connected components of the label-1 pairs, all of them)."""
    parent: dict[str, str] = {}

    def root(q: str) -> str:
        parent.setdefault(q, q)
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for pair in pairs:
        a, b = root(str(pair["text_a"])), root(str(pair["text_b"]))
        if pair["label"] == 1 and a != b:
            parent[a] = b
    return {q: root(q) for q in parent}


NEGATIVES: set[frozenset[str]] = set()
"""The pairs labelled "not duplicates" (filled by `main`): a wrong hit on one is a known wrong hit;
the other wrong hits are questions no label links, some of them unlabelled duplicates."""


def answer(cluster: str) -> bytes:
    """The fake provider's answer: one per duplicate cluster, the same every time."""
    return json.dumps({"choices": [{"message": {"content": f"answer of {cluster}"}}]}).encode()


EMBEDDINGS = Path("/tmp/llm-cache-semantic-eval")
"""Embeddings of replayed questions, kept between runs (embedding 10,000 questions takes minutes)."""


async def embedded(embedder: LocalEmbedder, texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\n".join([embedder.name, *texts]).encode()).hexdigest()[:16]
    path = EMBEDDINGS / f"{digest}.npy"
    if path.exists():
        return np.load(path)
    vectors = np.asarray(await embedder.embed(texts), dtype=np.float32)
    EMBEDDINGS.mkdir(exist_ok=True)
    np.save(path, vectors)
    return vectors


def nearest(vectors: np.ndarray, k: int = 32) -> list[list[tuple[int, float]]]:
    """Each question's `k` nearest other questions by cosine, best first (blocked matrix products).
    A replay looks among them for the nearest *stored* ones, as the index search would: 10,000
    exact searches per replay would take this machine minutes, and the nearest stored prompt is
    almost always among a question's 32 nearest."""
    out = []
    for start in range(0, len(vectors), 512):
        scores = vectors[start : start + 512] @ vectors.T
        for row, line in enumerate(scores):
            line[start + row] = -2.0  # not itself
            best = np.argpartition(-line, k)[:k]
            best = best[np.argsort(-line[best])]
            out.append([(int(j), float(line[j])) for j in best])
    return out


async def replay_once(
    order: list[int],
    questions: list[str],
    near: list[list[tuple[int, float]]],
    cluster: dict[str, str],
    semantic: SemanticCache,
    agreed: dict[tuple[int, int], bool],
    clock: ReplayClock | None = None,
) -> dict[str, float]:
    """The questions of `order` asked in turn: one asked before and stored is an exact hit (never
    wrong, not a semantic lookup); any other is matched as `SemanticCache.matches` does (the nearest
    `candidates` stored prompts, best first, at or above the threshold, the guard) and decided by
    `semantic`: a served answer from another cluster is a wrong hit; a verified one is judged on the
    two clusters' answers by the cache's judge. A question not served is stored (a question served
    by meaning is not: asked again, it is looked up by meaning again, as in the cache)."""
    hits = wrong = verified = labelled_wrong = exact = 0
    stored: set[int] = set()
    for q in order:
        question = questions[q]
        if q in stored:
            exact += 1
            continue
        semantic.looked_up()
        if clock is not None:
            clock.tick()
        served = False
        for j, similarity in [(j, sim) for j, sim in near[q] if j in stored][: semantic.candidates]:
            if not similarity >= semantic.threshold:
                break
            if semantic.guard:
                if (q, j) not in agreed:
                    agreed[q, j] = agrees(question, questions[j])
                if not agreed[q, j]:
                    continue
            match = Neighbour(str(j), questions[j], similarity)
            decision = await semantic.decide(match)
            if decision == "serve":
                served = True
                hits += 1
                wrong += cluster[questions[j]] != cluster[question]
                labelled_wrong += frozenset((question, questions[j])) in NEGATIVES
            elif decision == "verify":
                verified += 1
                stored_answer, fresh = answer(cluster[questions[j]]), answer(cluster[question])
                await semantic.verified(question, match.key, similarity, stored_answer, fresh)
            break  # the nearest usable candidate decides
        if not served:
            stored.add(q)
    return {
        "requests": len(order) - exact,
        "exact": exact,
        "hits": hits,
        "wrong": wrong,
        "verified": verified,
        "labelled_wrong": labelled_wrong,
    }


def zipf_stream(ranked: list[int], exponent: float, draw: random.Random, length: int | None = None) -> list[int]:
    """`length` requests (default: three per question) drawn from `ranked` with Zipf weights: the
    question at rank `r` (from 1) is asked with probability proportional to `r ** -exponent`."""
    weights = [rank**-exponent for rank in range(1, len(ranked) + 1)]
    return draw.choices(ranked, weights=weights, k=length or 3 * len(ranked))


def possible_hits(order: list[int], questions: list[str], cluster: dict[str, str]) -> int:
    """What a perfect cache serves by meaning: every request for a question not stored whose cluster
    was asked before (the first question of a cluster is stored, and asked again is an exact hit)."""
    seen: set[str] = set()
    stored: set[int] = set()
    count = 0
    for q in order:
        if q in stored:
            continue
        if cluster[questions[q]] in seen:
            count += 1
        else:
            stored.add(q)
            seen.add(cluster[questions[q]])
    return count


STATIC = (
    *(round(0.75 + 0.01 * step, 2) for step in range(10)),
    *(round(0.85 + 0.0025 * step, 4) for step in range(59)),
)
"""Static thresholds replayed: every 0.01 up to 0.85, every 0.0025 from there (where the bounds land)."""
BOUNDS = (0.01, 0.02, 0.05)
ERROR_RATES_OF = ("requests", "hits")


def per_request(result: dict[str, float]) -> float:
    """Wrong answers per semantic lookup: what the bound of requests promises."""
    return result["wrong"] / result["requests"] if result["requests"] else 0.0


def per_hit(result: dict[str, float]) -> float:
    return result["wrong"] / result["hits"] if result["hits"] else 0.0


def overall(result: dict[str, float]) -> tuple[float, float]:
    """Answered from the cache (exact or by meaning) and wrong answers, each per request of the stream."""
    everyone = result["requests"] + result["exact"]
    return (result["hits"] + result["exact"]) / everyone, result["wrong"] / everyone


def summed(results: list[dict[str, float]]) -> dict[str, float]:
    return {name: sum(r[name] for r in results) for name in results[0]}


def best_static(rows: dict[str, list[dict[str, float]]], rate: float, of: str) -> tuple[str, float]:
    """The static threshold answering the most requests from the cache with a wrong-answer rate (per
    request of the stream, or per semantic hit; over all seeds) at or under `rate`; its name and its
    cache hit rate (per request) or semantic hits."""
    fitting = []
    for mode, results in rows.items():
        total = summed(results)
        if not mode.startswith("static"):
            continue
        if of == "requests" and overall(total)[1] <= rate:
            fitting.append((overall(total)[0], mode))
        elif of == "hits" and per_hit(total) <= rate:
            fitting.append((total["hits"], mode))
    value, mode = max(fitting) if fitting else (0.0, "none")
    return mode, value


async def replay(
    name: str,
    questions: list[str],
    cluster: dict[str, str],
    seeds: list[int],
    embedder: LocalEmbedder,
    error_rates_of: tuple[str, ...] = ERROR_RATES_OF,
    zipf: float = 0.0,
    prior: Prior | None = None,
) -> None:
    """Bounded mode (both definitions of its bound) against static thresholds (guard on in both),
    `seeds` random orders; with `prior`, bounded mode is warm-started from those labelled pairs."""
    vectors = await embedded(embedder, questions)
    stream = f", a Zipf({zipf}) stream of {3 * len(questions)} requests" if zipf else ", each asked once"
    print(f"\n## Replay, {name}: {len(questions)} questions{stream}")
    near = nearest(vectors)
    agreed: dict[tuple[int, int], bool] = {}
    rows: dict[str, list[dict[str, float]]] = {}
    kinds: list[tuple[str, Prior | None]] = [("bounded", None)] + ([("warm-started", prior)] if prior else [])
    for seed in seeds:
        order = list(range(len(questions)))
        random.Random(seed).shuffle(order)
        if zipf:
            order = zipf_stream(order, zipf, random.Random(seed))
        best = possible_hits(order, questions, cluster)
        for threshold in STATIC:
            semantic = SemanticCache(_Unused(), threshold=threshold)
            result = await replay_once(order, questions, near, cluster, semantic, agreed)
            rows.setdefault(f"static {threshold:.4f}", []).append(result | {"possible": best})
        for kind, start in kinds:
            for of in error_rates_of:
                for bound in BOUNDS:
                    clock = ReplayClock()
                    errors = bounded(bound, of, seed, start, clock)
                    semantic = SemanticCache(_Unused(), bound=errors, judge=ExactJudge())
                    result = await replay_once(order, questions, near, cluster, semantic, agreed, clock)
                    rows.setdefault(f"{kind} {bound:.0%} of {of}", []).append(result | {"possible": best})
    print(
        f"Seeds {seeds}; sums over the seeds (worst: the worst seed's). Lookups: requests looked up by meaning "
        "(a question asked before and stored is an exact hit instead). Per lookup: wrong hits / lookups, what a "
        "bound of requests promises; per hit: wrong hits / semantic hits; of all: per request of the stream.\n"
    )
    print(
        "| mode | semantic hits | wrong (labelled) | wrong per lookup | wrong per hit | exact hits "
        "| answered from cache, of all | wrong, of all | share of possible | verified |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, results in rows.items():
        total = summed(results)
        shown = "" if mode.startswith("static") else f"{total['verified']:.0f}"
        answered, wrong = overall(total)
        print(
            f"| {mode} | {total['hits']:.0f} | {total['wrong']:.0f} ({total['labelled_wrong']:.0f}) "
            f"| {per_request(total):.2%} ({max(map(per_request, results)):.2%}) "
            f"| {per_hit(total):.2%} ({max(map(per_hit, results)):.2%}) | {total['exact']:.0f} "
            f"| {answered:.2%} | {wrong:.2%} | {total['hits'] / max(total['possible'], 1):.1%} | {shown} |"
        )
    print("\n| bound | bounded: wrong, answered from cache | best static at or under that wrong rate | ratio |")
    print("| --- | --- | --- | ---: |")
    for (kind, _), of, bound in ((k, o, b) for k in kinds for o in error_rates_of for b in BOUNDS):
        total = summed(rows[f"{kind} {bound:.0%} of {of}"])
        name = f"{bound:.0%} of {of}" + ("" if kind == "bounded" else f", {kind}")
        if of == "requests":
            answered, rate = overall(total)
            mode, best = best_static(rows, rate, of)
            ratio = f"{answered / best:.2f}" if best else "-"
            print(f"| {name} | {rate:.2%}, {answered:.2%} | {mode}: {best:.2%} | {ratio} |")
        else:
            rate = per_hit(total)
            mode, best = best_static(rows, rate, of)
            ratio = f"{total['hits'] / best:.2f}" if best else "-"
            print(f"| {name} | {rate:.2%}, {total['hits']:.0f} hits | {mode}: {best:.0f} | {ratio} |")


async def synthetic_replay(seeds: list[int], size: int, prior: Prior | None = None) -> None:
    """Bounded mode against every static threshold on the same candidate streams (each candidate
    one lookup), for both definitions of the bound."""
    print(f"\n## Synthetic candidates with known answers: {size} per seed, seeds {seeds}\n")
    print("| bound | bounded: measured rate (worst seed) | hits | verified | best static at that rate | hits | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    streams = [known_answer_workload(seed, size) for seed in seeds]
    for of in ERROR_RATES_OF:
        for bound in BOUNDS:
            hits = wrong = verified = 0
            worst = 0.0
            for seed, stream in zip(seeds, streams, strict=True):
                clock = ReplayClock()
                errors = bounded(bound, of, seed, prior, clock)
                served = bad = 0
                for key, similarity, right in stream:
                    errors.looked_up()
                    clock.tick()
                    decision = await errors.decide(key, similarity)
                    if decision == "serve":
                        served += 1
                        bad += not right
                    elif decision == "verify":
                        verified += 1
                        await errors.learn(key, similarity, wrong=not right)
                hits, wrong = hits + served, wrong + bad
                denominator = len(stream) if of == "requests" else served
                worst = max(worst, bad / denominator if denominator else 0.0)
            requests = sum(len(stream) for stream in streams)
            rate = wrong / (requests if of == "requests" else max(hits, 1))
            best = (0, 1.0)
            for threshold in np.arange(0.75, 1.0, 0.0025):
                s_hits = sum(1 for stream in streams for _, sim, _ in stream if sim >= threshold)
                s_wrong = sum(1 for stream in streams for _, sim, ok in stream if sim >= threshold and not ok)
                s_rate = s_wrong / (requests if of == "requests" else max(s_hits, 1))
                if s_hits and s_rate <= rate and s_hits > best[0]:
                    best = (s_hits, float(threshold))
            ratio = f"{hits / best[0]:.2f}" if best[0] else "-"
            print(
                f"| {bound:.0%} of {of} | {rate:.2%} ({worst:.2%}) | {hits} | {verified} | {best[1]:.4f} "
                f"| {best[0]} | {ratio} |"
            )


LOOKUPS_PER_SECOND = 100.0
"""The replay's pace: semantic lookups per second of one busy process (caps are re-tested on time every
`refresh` = 5 s, so every 500 lookups, besides after verdicts)."""


class Prior(NamedTuple):
    """Labelled pairs to warm-start bounded mode from: (similarity, stored answer wrong), and how."""

    prior: list[tuple[float, bool]]
    weight: int | None
    overrule: bool
    fit_prior: bool
    share_margin: float = 0.0


class ReplayClock:
    """Time in a replay: each lookup takes `1 / LOOKUPS_PER_SECOND` seconds. Bounded mode also tests its
    caps again every `refresh` seconds; on the wall clock, how many lookups that is depends on how busy
    the machine is, and a replay on a loaded machine served other sets than the same replay on an idle
    one. On this clock every run of a replay gives the same figures."""

    def __init__(self) -> None:
        self.now = 0.0

    def tick(self) -> None:
        self.now += 1.0 / LOOKUPS_PER_SECOND

    def __call__(self) -> float:
        return self.now


def bounded(bound: float, of: str, seed: int, prior: Prior | None, clock: ReplayClock) -> ErrorBound:
    if prior is None:
        return ErrorBound(bound, error_rate_of=of, seed=seed, clock=clock)  # type: ignore[arg-type]
    return WarmBound(bound, error_rate_of=of, seed=seed, clock=clock, **prior._asdict())


async def dev_prior(
    pairs: list[dict[str, Any]], replayed: set[str], size: int, seed: int, embedder: LocalEmbedder, args: Any
) -> Prior:
    """`size` development pairs sharing no question with `replayed`, as prior verdicts (guard passed)."""
    dev = [p for p in pairs if not test_split(p)]
    disjoint = [p for p in dev if str(p["text_a"]) not in replayed and str(p["text_b"]) not in replayed]
    chosen = random.Random(seed).sample(disjoint, min(size, len(disjoint)))
    a, b = [str(p["text_a"]) for p in chosen], [str(p["text_b"]) for p in chosen]
    overlap = len(({*a, *b}) & replayed)
    if args.prior_kind == "neighbours":
        verdicts = await neighbour_verdicts(sorted({*a, *b}), clusters(dev), embedder, seed)
    else:
        similarity = await scores(embedder, a, b)
        guard = [agrees(x, y) for x, y in zip(a, b, strict=True)]
        verdicts = [(float(s), p["label"] != 1) for s, p, g in zip(similarity, chosen, guard, strict=True) if g]
    wrong = sum(w for _, w in verdicts)
    print(
        f"\nPrior: {len(chosen)} development pairs (seed {seed}), question overlap with the replay {overlap}; "
        f"{len(verdicts)} verdicts ({args.prior_kind}, guard passed), {wrong} of them wrong; "
        f"weight {args.prior_weight}, overrule {args.overrule}, fit {not args.no_prior_fit}"
    )
    assert overlap == 0
    return Prior(verdicts, args.prior_weight, args.overrule, not args.no_prior_fit, args.share_margin)


async def neighbour_verdicts(
    questions: list[str], cluster: dict[str, str], embedder: LocalEmbedder, seed: int
) -> list[tuple[float, bool]]:
    """Labelled pairs like the cache's own candidates: `questions` asked once in a seeded order, each
    paired with its nearest earlier question passing the guard (at 0.75 or more), labelled by the
    duplicate clusters (of the development pairs only): what a user labelling their cache's
    candidates would hold."""
    vectors = await embedded(embedder, questions)
    near = nearest(vectors)
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    asked: set[int] = set()
    verdicts = []
    for q in order:
        for j, similarity in near[q]:
            if similarity < 0.75:
                break
            if j in asked and agrees(questions[q], questions[j]):
                verdicts.append((similarity, cluster[questions[q]] != cluster[questions[j]]))
                break
        asked.add(q)
    return verdicts


class _Unused:
    """The replay embeds ahead, in batches; the cache's own embedder is never called."""

    name = "precomputed"

    async def embed(self, texts: object) -> np.ndarray:
        raise AssertionError("the replay gives vectors")


def sampled(pairs: list[dict[str, Any]], held_out: bool, size: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of `size` pairs (None: all) of the held-out test split, or of the others."""
    chosen = [p for p in pairs if test_split(p) == held_out]
    return chosen if size is None or size >= len(chosen) else random.Random(seed).sample(chosen, size)


def replay_questions(pairs: list[dict[str, Any]], held_out: bool, size: int | None, seed: int) -> list[str]:
    return sorted({str(p[side]) for p in sampled(pairs, held_out, size, seed) for side in ("text_a", "text_b")})


async def lookup_timing(entries: int, rounds: int = 2000) -> None:
    """p50 and p99 of `SemanticCache.matches` (index search and guard, no embedding) at `entries` rows,
    and recall@1 of the index against exact search, for queries at three distances from a stored row."""
    draw = np.random.default_rng(11)
    index = InProcessIndex(entries + 1)
    vectors = draw.standard_normal((entries, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(entries):
        await index.add("ctx", f"k{i}", f"stored question number {i} about bicycles", vectors[i], None)
    semantic = SemanticCache(_Unused(), index, threshold=0.0, timeout=60)
    print(f"\n## Semantic lookup at {entries} entries (one context, no embedding), {rounds} lookups")
    # Queries near rows drawn from the whole index (not only the first rows, which trained the cells).
    sources = draw.choice(entries, rounds, replace=False)
    for noise in (0.025, 0.038, 0.05):
        queries = vectors[sources] + noise * draw.standard_normal((rounds, 384)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = np.concatenate([np.argmax(vectors @ part.T, axis=0) for part in np.array_split(queries, 20)])
        times, cpu, found = [], [], 0
        for query, nearest in zip(queries, exact, strict=True):
            started, started_cpu = time.perf_counter(), time.process_time()
            await semantic.matches("ctx", "stored question about bicycles", query)  # the guard vetoes all 4
            cpu.append(time.process_time() - started_cpu)
            times.append(time.perf_counter() - started)
            found += (await index.search("ctx", query, 1))[0].key == f"k{nearest}"
        times.sort()
        cpu.sort()
        similarity = float(np.median(np.einsum("ij,ij->i", queries, vectors[exact])))
        print(f"\nqueries at similarity {similarity:.2f} (median) to their nearest row:")
        print(f"  recall@1 against exact search {found / rounds:.4f}")
        print(f"  wall p50 {statistics.median(times) * 1000:.2f} ms, p99 {times[int(0.99 * rounds)] * 1000:.2f} ms")
        print(f"  CPU p50 {statistics.median(cpu) * 1000:.2f} ms, p99 {cpu[int(0.99 * rounds)] * 1000:.2f} ms")
    print(f"(load average while measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--qqp", type=int, default=5000, help="QQP pairs to sample")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replay", action="store_true", help="replay Quora questions: bounded vs static")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--dev-pairs", type=int, default=5000, help="development pairs to replay (not held out)")
    parser.add_argument("--test-pairs", type=int, default=None, help="held-out pairs to use (default: all)")
    parser.add_argument("--split", choices=("dev", "test", "both"), default="both", help="pairs to score or replay")
    parser.add_argument("--of", choices=ERROR_RATES_OF, nargs="+", default=ERROR_RATES_OF, help="bounds of what")
    parser.add_argument(
        "--zipf", type=float, default=0.0, metavar="S", help="replay a Zipf(S) stream, three requests per question"
    )
    parser.add_argument("--prior-pairs", type=int, default=0, metavar="N", help="warm-start from N dev pairs")
    parser.add_argument("--prior-weight", type=int, default=None, help="the prior counts as at most N verdicts")
    parser.add_argument(
        "--prior-kind",
        choices=("labelled", "neighbours"),
        default="labelled",
        help="the pairs as labelled, or each prior question with its nearest earlier one, labelled by cluster",
    )
    parser.add_argument("--overrule", action="store_true", help="live verdicts above the cap tested alone too")
    parser.add_argument("--share-margin", type=float, default=0.0, help="traffic shares taken this much larger")
    parser.add_argument("--no-prior-fit", action="store_true", help="the risk model is not fitted on the prior")
    parser.add_argument("--lookup", action="store_true", help="time the semantic lookup")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="bounded vs static on N known answers")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument(
        "--model", choices=[*sorted(MODELS), *CANDIDATES], default=MINILM, help="the local embedding model"
    )
    parser.add_argument("--speed", action="store_true", help="time one embedding call (1 text, 32 texts)")
    args = parser.parse_args()
    embedder = CANDIDATES[args.model]() if args.model in CANDIDATES else local_embedder(args.model)
    default = embedder.default_threshold or 0.9
    print(
        f"# {time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · {platform.machine()} · {embedder.name}"
    )
    if args.synthetic:
        prior = None
        if args.prior_pairs:  # labelled pairs from the same distribution: another draw of the workload
            verdicts = [(s, not right) for _, s, right in known_answer_workload(1000 + args.seed, args.prior_pairs)]
            prior = Prior(verdicts, args.prior_weight, args.overrule, not args.no_prior_fit)
            print(f"\nPrior: {len(verdicts)} pairs of another draw (seed {1000 + args.seed}), {args.prior_weight=}")
        asyncio.run(synthetic_replay(args.seeds, args.synthetic, prior))
        return
    if args.lookup:
        asyncio.run(lookup_timing(args.entries))
        return
    if args.replay:
        pairs = json.loads((args.data / "gptcache_similiar_qqp_full.json").read_text(encoding="utf-8"))
        cluster = clusters(pairs)
        NEGATIVES.update(frozenset((str(p["text_a"]), str(p["text_b"]))) for p in pairs if p["label"] == 0)
        for name, held_out, size in (
            (f"development pairs (a sample of {args.dev_pairs})", False, args.dev_pairs),
            (f"held-out test split ({args.test_pairs or 'all'} pairs)", True, args.test_pairs),
        ):
            if args.split != "both" and held_out != (args.split == "test"):
                continue
            questions = replay_questions(pairs, held_out, size, args.seed)
            prior = None
            if args.prior_pairs:
                prior = asyncio.run(dev_prior(pairs, set(questions), args.prior_pairs, args.seed + 1, embedder, args))
            asyncio.run(replay(name, questions, cluster, args.seeds, embedder, tuple(args.of), args.zipf, prior))
        return
    if args.speed:
        asyncio.run(speed(embedder, qqp(args.data, 2000, args.seed, held_out=False)[0]))
        return
    sets = {
        "LangCache hard pairs": (False, lambda: langcache(args.data)),
        f"QQP development sample (seed {args.seed})": (False, lambda: qqp(args.data, args.qqp, args.seed, False)),
        f"QQP held-out test split ({args.test_pairs or 'all'})": (
            True,
            lambda: qqp(args.data, args.test_pairs, args.seed, True),
        ),
    }
    for name, (held_out, load) in sets.items():
        if args.split != "both" and held_out != (args.split == "test"):
            continue
        a, b, labels = load()
        started = time.perf_counter()
        similarity = asyncio.run(scores(embedder, a, b))
        elapsed = time.perf_counter() - started
        table(name, a, b, labels, similarity, default)
        print(f"\nEmbedding took {elapsed:.1f} s (batched, CPU; none when kept from an earlier run).")


if __name__ == "__main__":
    main()
