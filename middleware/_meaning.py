"""The engine's side of the semantic cache (`llm_cache.middleware.semantic`): a miss looked up by
meaning, a stored answer indexed by meaning. Every failure here fails open: the request goes upstream,
or the answer is simply not indexed, and the error is counted."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._entry import Entry
from ._keys import DEFAULT_NAMESPACE, compose_key, key_space
from ._settings import CacheSettings, CacheStats
from ._types import CacheRequest, Lookup, Meaning, Outcome, Verification
from .semantic._local_model import ModelBusy
from .semantic.cache import Unreadable
from .semantic.outcomes import OUTCOMES

if TYPE_CHECKING:
    from .semantic import SemanticCache
    from .semantic.index import Neighbour
    from .telemetry import Telemetry

DRAIN = 5.0
"""Seconds `Cache.close` waits for background semantic work before cancelling it."""

ContextKey = Callable[[CacheRequest, dict[str, Any], str], str]
"""The full key a request would have with another body (its context) in a namespace."""


class Meanings:
    """Semantic lookup and indexing for one Cache."""

    def __init__(
        self,
        semantic: SemanticCache,
        settings: CacheSettings,
        stats: CacheStats,
        telemetry: Telemetry,
        context_key: ContextKey,
        stored: Callable[[str], Awaitable[Entry | None]],
        store_failed: Callable[[str, Exception], None],
        source: Callable[[CacheRequest], str],
    ) -> None:
        self.semantic = semantic
        self._settings = settings
        self._space = key_space(settings.key_prefix)
        self._stats = stats
        self._telemetry = telemetry
        self._context_key = context_key
        self._stored = stored
        self._store_failed = store_failed
        self._source = source
        """Who sent a request, when its scope does not say (`Cache._source`)."""
        self._background: set[asyncio.Future[None]] = set()
        """Indexing that nobody waits for (answers to refreshes), kept until done."""
        if semantic.bound is not None:  # a verification the per-minute cap refused is counted too
            semantic.bound.on_capped = lambda: telemetry.semantic_verified("capped")

    async def of(self, request: CacheRequest) -> Meaning | None:
        """The request's context digest, last user text and its vector; None if it is not eligible."""
        semantic = self.semantic
        body = request.body if request.key_body is None else request.key_body  # a hook's key body, if any
        split = request.endpoint.semantic_query(body)
        if split is None or not semantic.eligible(split[1]):
            return None
        context_body, text = split
        namespace = request.policy.namespace or DEFAULT_NAMESPACE
        context = self._context_key(request, context_body, namespace)
        vector = await semantic.embed(text)
        # The digest of the context's whole key (prefix, namespace and credential scope included) and of
        # the embedder's name: vectors of two models are never compared, even in one shared index.
        # Bounded mode learns per partition, the same without the request's content: whose lookup it is.
        # Under a scope every caller shares, that is the caller who sent it (its source): one caller's
        # verdicts never let another be served unverified, nor does one spend another's verifications.
        source = self._source(request)
        who = compose_key(self._space, namespace, request.scope, "")
        payer = f"{self._settings.key_prefix}\n{request.scope}"
        if source:
            who, payer = f"{who}\n{source}", f"{payer}\n{source}"
        name = semantic.embedder.name
        return Meaning(_digest(name, context), text, vector, _digest(name, who), _digest(name, payer))

    async def find(self, request: CacheRequest, lookup: Lookup) -> Lookup | None:
        """A hit on a similar prompt's stored answer in the same context, or None (fail open)."""
        try:
            meaning = lookup.meaning = await self.of(request)
        except Unreadable:
            lookup.meaning_failed = True  # matched exactly only, and not embedded again to be indexed
            return None
        except Exception as error:
            lookup.meaning_failed = True
            self._failed("semantic_embed", error)
            return None
        if meaning is None:
            return None
        try:
            neighbours = await self.semantic.nearest(meaning.context, meaning.vector)
        except Exception as error:
            lookup.meaning_failed = True
            self._failed("semantic_search", error)
            return None
        self.semantic.looked_up(meaning.partition)
        if neighbours and math.isfinite(neighbours[0].similarity):
            self._telemetry.semantic_nearest(neighbours[0].similarity)
        try:
            matches = await self.semantic.reranked(meaning.text, self.semantic.matching(meaning.text, neighbours))
        except Exception as error:  # never a hit on a candidate the second check did not pass
            self._failed("semantic_rerank", error)
            return None
        for match in matches:
            try:
                entry = await self._stored(match.key)
            except Exception as error:
                self._store_failed("get", error)
                return None
            if entry is None:  # gone from the store: so is its row
                await self.forget(match.key)
                continue
            if not request.accepts(entry):
                continue  # too old for this request only: the row stays
            return await self._decided(match, entry, lookup, meaning)
        return None

    async def _decided(self, match: Neighbour, entry: Entry, lookup: Lookup, meaning: Meaning) -> Lookup | None:
        """The nearest usable candidate: a hit, or (bounded mode) a miss that verifies it, or a miss."""
        try:
            decision = await self.semantic.decide(match, meaning.partition, meaning.payer)
        except Exception as error:
            self._failed("semantic_search", error)
            return None
        if decision == "serve":
            return Lookup(Outcome.HIT, entry, match="semantic", similarity=match.similarity)
        if decision == "verify":
            self._stats.semantic_verifications += 1
            lookup.similarity = match.similarity
            lookup.verifying = Verification(match.key, match.text, match.similarity, entry.body)
        return None

    async def remember(self, request: CacheRequest, lookup: Lookup) -> None:
        """Index a stored answer by meaning (never raises). A miss's vector is indexed right away;
        an answer without one (a refresh) is embedded in the background, so no caller waits."""
        if lookup.verifying is not None and lookup.meaning is not None:
            self._later(self._verify(request.key, lookup.meaning, lookup.verifying))
        if lookup.meaning_failed:
            return
        if lookup.meaning is not None:
            await self._index(request, lookup.meaning)
            return
        self._later(self._embed_and_index(request))

    def _later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _verify(self, key: str, meaning: Meaning, candidate: Verification) -> None:
        """Judge a candidate's stored answer against the fresh one just stored under `key` (never raises)."""
        try:
            fresh = await self._stored(key)
        except Exception as error:
            self._store_failed("get", error)
            return
        if fresh is None:
            return
        try:
            semantic = self.semantic
            verdict = await semantic.verified(
                meaning.text,
                candidate.key,
                candidate.similarity,
                candidate.stored,
                fresh.body,
                meaning.partition,
                meaning.payer,
            )
        except Exception as error:
            self._failed("semantic_verify", error)
            return
        self._telemetry.semantic_verified(OUTCOMES[verdict])

    async def similar_keys(self, request: CacheRequest) -> list[str]:
        """The keys of the stored answers a search for `request` would find (errors propagate)."""
        try:
            meaning = await self.of(request)
        except Unreadable:
            return []
        if meaning is None:
            return []
        return [match.key for match in await self.semantic.matches(meaning.context, meaning.text, meaning.vector)]

    async def forget(self, key: str) -> None:
        try:
            await self.semantic.forget(key)
        except Exception as error:
            self._failed("semantic_index", error)

    async def drain(self) -> None:
        """Wait (at most `DRAIN` seconds) for this loop's background indexing and judgments, then cancel
        what is left: no task outlives the cache, and a judgment cut short records no verdict. Tasks
        of other loops finish on theirs."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self._background if task.get_loop() is loop]
        if not mine:
            return
        _, left = await asyncio.wait(mine, timeout=DRAIN)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=DRAIN)

    async def _embed_and_index(self, request: CacheRequest) -> None:
        try:
            meaning = await self.of(request)
        except Unreadable:
            return
        except Exception as error:
            self._failed("semantic_embed", error)
            return
        if meaning is not None:
            await self._index(request, meaning)

    async def _index(self, request: CacheRequest, meaning: Meaning) -> None:
        ttl = request.policy.ttl if request.policy.ttl is not None else self._settings.ttl
        try:
            await self.semantic.remember(meaning.context, request.key, meaning.text, meaning.vector, ttl, meaning.payer)
        except Exception as error:
            self._failed("semantic_index", error)

    def _failed(self, operation: str, error: Exception) -> None:
        """Count and log a failure under the part that failed: the embedder, the reranker or the index,
        not the store. A local model that refused the call (`ModelBusy`: too many already running or
        waiting) is counted as `semantic_busy`, apart from the model's errors and timeouts."""
        self._stats.semantic_errors += 1
        semantic = self.semantic
        if operation == "semantic_embed":
            part = f"embedder:{semantic.embedder.name}"
        elif operation == "semantic_rerank" and semantic.reranker is not None:
            part = f"reranker:{semantic.reranker.name}"
        else:
            part = f"index:{semantic.index.name}"
        self._telemetry.store_error("semantic_busy" if isinstance(error, ModelBusy) else operation, error, part)


def _digest(embedder: str, key: str) -> str:
    return hashlib.sha256(f"{embedder}\n{key}".encode()).hexdigest()[:32]


__all__ = ["Meanings"]
