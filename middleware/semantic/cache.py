"""`SemanticCache`: finds a stored answer to a similar prompt in the same context."""

from __future__ import annotations

import asyncio

import numpy as np

from .._deadline import within
from ._local_model import ModelBusy
from .bound import Decision, ErrorBound, ErrorRateOf
from .embedders import Embedder, SentenceTransformerEmbedder, unit_rows
from .guard import agrees
from .index import InProcessIndex, Neighbour, VectorIndex
from .judges import EmbeddingJudge, Judge, answer_content
from .outcomes import OUTCOMES, InProcessOutcomes, OutcomeLog
from .rerankers import Reranker

COSINE_SLACK = 1e-4
"""How far past 1 a similarity an index reports may be and still be a cosine (float32 rounding)."""


class Unreadable(ValueError):
    """The embedder cannot read the text whole (it gave a zero vector): it is matched exactly only."""


class SemanticCache:
    """What `Cache(semantic=...)` takes: an embedder, a vector index and the rules of a match.

    A request is looked up by meaning only after its exact lookup missed, and only when its last
    turn is plain user text no longer than `max_text_chars` (an embedding model reads a limited
    window; two long prompts that differ past it would look the same). The nearest stored prompts
    in the same context (everything else in the request, credential scope included) are tried best
    first: one at or above `threshold` (default: the embedder's `default_threshold`, measured for its
    model, else 0.9) whose facts agree (`guard`) is a hit. Any error (a local model
    refusing a call past its `max_in_flight` included) or a lookup slower than `timeout` seconds is a
    miss: the request goes upstream.

    Bounded mode (`max_error_rate`, a share of semantic lookups or, with `error_rate_of="hits"`, of
    semantic hits; or a configured `bound`): `threshold` is only the lowest similarity considered
    (default 0.75 there), and the `ErrorBound` decides, from verified evidence, which candidates are
    served (docs/semantic.md). `judge` compares a stored answer with
    a fresh one (default: `EmbeddingJudge` with this cache's embedder); a judge slower than
    `judge_timeout` seconds, or one that fails, counts as a wrong answer.

    A second check (`reranker`, with `rerank_min_score`) reads the candidates that cleared the
    threshold and the guard beside the query, all in one call, and keeps those scoring at least
    `rerank_min_score`; a reranker that fails or is slower than its `timeout` makes the lookup a miss.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        index: VectorIndex | None = None,
        *,
        threshold: float | None = None,
        guard: bool = True,
        candidates: int = 4,
        max_text_chars: int = 1000,
        timeout: float = 2.0,
        max_error_rate: float | None = None,
        error_rate_of: ErrorRateOf = "requests",
        bound: ErrorBound | None = None,
        judge: Judge | None = None,
        judge_timeout: float = 10.0,
        reranker: Reranker | None = None,
        rerank_min_score: float | None = None,
    ) -> None:
        if bound is None and max_error_rate is not None:
            bound = ErrorBound(
                max_error_rate, error_rate_of=error_rate_of, floor=0.75 if threshold is None else threshold
            )
        embedder = embedder if embedder is not None else SentenceTransformerEmbedder()
        if threshold is None:
            threshold = static_threshold(embedder) if bound is None else bound.floor
        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold is a cosine similarity, between -1 and 1")
        if candidates < 1 or max_text_chars < 1 or timeout <= 0 or judge_timeout <= 0:
            raise ValueError("candidates, max_text_chars, timeout and judge_timeout must be positive")
        if (reranker is None) != (rerank_min_score is None):
            raise ValueError("a reranker needs rerank_min_score (its scale is the model's own), and the reverse")
        self.embedder: Embedder = embedder
        self.index: VectorIndex = index if index is not None else InProcessIndex()
        self.threshold = threshold
        self.guard = guard
        self.candidates = candidates
        self.max_text_chars = max_text_chars
        self.timeout = timeout
        self.bound = bound
        """Bounded mode's decisions, or None: every match at or above `threshold` is served."""
        self.judge: Judge = judge if judge is not None else EmbeddingJudge(self.embedder, max_chars=max_text_chars)
        self.judge_timeout = judge_timeout
        self.reranker = reranker
        """The second check on the candidates that cleared the threshold and the guard, or None."""
        self.rerank_min_score = rerank_min_score
        evidence = bound.evidence if bound is not None else None
        self.outcomes: OutcomeLog = evidence if isinstance(evidence, OutcomeLog) else InProcessOutcomes()
        """The recent verification outcomes: beside the evidence when it keeps them (Redis), else here."""

    async def start(self) -> None:
        """Get ready for the first request: load the embedder's and the reranker's models (`start`, or
        else `warm_up` in a thread, if they have one: a local model takes seconds) and check the index's
        server (`start`, if it has one; `IndexUnavailable` when it cannot work there). Without this,
        both happen on first use."""
        for model in (self.embedder, self.reranker):
            if (start := getattr(model, "start", None)) is not None:
                await start()
            elif (warm_up := getattr(model, "warm_up", None)) is not None:
                await asyncio.to_thread(warm_up)
        await self.check_index()

    async def check_index(self) -> None:
        """`IndexUnavailable` if the index cannot work on its server (checked by its `start`, if it has one)."""
        start = getattr(self.index, "start", None)
        if start is not None:
            await start()

    def eligible(self, text: str) -> bool:
        return 0 < len(text) <= self.max_text_chars

    async def embed(self, text: str) -> np.ndarray:
        """`text`'s unit vector; `Unreadable` when the embedder gives a zero vector (a local model does
        for a text it cannot read whole, see `embedders.unread_zeroed`)."""
        vectors = await within(self.timeout, self.embedder.embed([text]))
        raw = np.asarray(vectors[0], dtype=np.float32)
        if not np.isfinite(raw).all():
            raise ValueError(f"{self.embedder.name} returned a vector that is not finite")
        if not raw.any():
            raise Unreadable(f"{self.embedder.name} cannot read this text whole")
        return unit_rows(raw)[0]

    async def matches(self, context: str, text: str, vector: np.ndarray) -> list[Neighbour]:
        """The stored prompts of `context` that clear the threshold and the guard, best first."""
        return self.matching(text, await self.nearest(context, vector))

    async def nearest(self, context: str, vector: np.ndarray) -> list[Neighbour]:
        """The `candidates` stored prompts of `context` nearest `vector`, best first."""
        return await within(self.timeout, self.index.search(context, vector, self.candidates))

    def matching(self, text: str, neighbours: list[Neighbour]) -> list[Neighbour]:
        """Those of `neighbours` (best first) that clear the threshold and whose facts agree with `text`."""
        found = []
        for neighbour in neighbours:
            if not abs(neighbour.similarity) <= 1.0 + COSINE_SLACK:  # (a NaN compares false)
                continue  # no cosine (NaN, infinite, past 1: a broken or hostile index) is never a match
            if neighbour.similarity < self.threshold:
                break  # best first: the rest are further away
            if not self.guard or agrees(text, neighbour.text):
                found.append(neighbour)
        return found

    def looked_up(self, partition: str = "") -> None:
        """Count a semantic lookup of `partition` that searched the index (bounded mode's requests)."""
        if self.bound is not None:
            self.bound.looked_up(partition)

    async def reranked(self, text: str, matches: list[Neighbour]) -> list[Neighbour]:
        """Those of `matches` (best first) that the reranker scores at least `rerank_min_score` against
        `text`, still in order of similarity: the reranker vetoes, as the guard does, and bounded mode
        learns and decides by similarity. Raises when the reranker fails, gives the wrong number of
        scores or takes longer than its `timeout`."""
        reranker, floor = self.reranker, self.rerank_min_score
        if reranker is None or floor is None or not matches:
            return matches
        scores = await within(reranker.timeout, reranker.score(text, [m.text for m in matches]))
        if len(scores) != len(matches):
            raise ValueError(f"{reranker.name} gave {len(scores)} scores for {len(matches)} candidates")
        return [match for match, score in zip(matches, scores, strict=True) if score >= floor]  # NaN never passes

    async def decide(self, match: Neighbour, partition: str = "", payer: str | None = None) -> Decision:
        """Serve `match` (a stored answer that is still there), verify it, or skip it, on what
        `partition` (the caller's, see `ErrorBound`) has learned; a verification spends `payer`'s cap."""
        if self.bound is None:
            return Decision.SERVE
        return await self.bound.decide(match.key, match.similarity, partition, payer)

    async def verified(
        self,
        text: str,
        key: str,
        similarity: float,
        stored: bytes,
        fresh: bytes,
        partition: str = "",
        payer: str | None = None,
    ) -> bool | None:
        """Judge the answer stored under `key`, a candidate at `similarity`, against the fresh answer
        to `text`, and learn from it in `partition` (`payer`'s record, as in `decide`):
        True if the stored one was right, False if wrong, None if the judge gave no verdict (learned
        as wrong) or never ran (a local model too busy to take the call: nothing is learned, since
        nothing was compared, and another caller's load must not write this one's evidence)."""
        if self.bound is None:
            return None
        ran = True
        try:
            verdict = await self._judged(text, stored, fresh)
        except ModelBusy:
            verdict, ran = None, False
        except Exception:
            verdict = None
        right = verdict if isinstance(verdict, bool) else None  # anything else is no verdict
        if ran:
            await self.bound.learn(key, similarity, wrong=right is not True, partition=partition, payer=payer)
        await self.outcomes.log_outcome(similarity, OUTCOMES[right])
        return right

    async def _judged(self, question: str, stored: bytes, fresh: bytes) -> object:
        """The verdict on two answers: their tool calls must be the same calls (the judge reads texts,
        and two answers that only call a tool have none), and their texts, if any, the judge's same."""
        (stored_text, stored_calls), (fresh_text, fresh_calls) = answer_content(stored), answer_content(fresh)
        if stored_calls != fresh_calls:
            return False
        if not (stored_text or fresh_text):
            if not stored_calls:
                raise ValueError("neither answer holds a text or a tool call to compare")
            return True
        return await within(self.judge_timeout, self.judge.same(question, stored_text, fresh_text))

    async def remember(
        self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None, owner: str = ""
    ) -> None:
        """Index a stored answer; `owner` (the caller, `Meaning.payer`) to an index that bounds rows per
        caller (`owned`), so that no caller's flood pushes out another's rows."""
        index = self.index
        if owner and getattr(index, "owned", False):
            await within(self.timeout, index.add(context, key, text, vector, ttl, owner=owner))  # type: ignore[call-arg]
        else:
            await within(self.timeout, index.add(context, key, text, vector, ttl))

    async def forget(self, key: str) -> None:
        await self.index.delete(key)

    async def close(self) -> None:
        await self.index.close()
        evidence = self.bound.evidence if self.bound is not None else None
        for part in (self.embedder, self.judge, self.reranker, evidence):
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()


def static_threshold(embedder: Embedder) -> float:
    """The threshold measured for `embedder`'s model (its `default_threshold`), else 0.9."""
    measured = getattr(embedder, "default_threshold", None)
    return 0.9 if measured is None else float(measured)
