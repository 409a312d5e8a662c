"""A list request served item by item: an embeddings `input` list, Gemini's `batchEmbedContents`.

Each item is keyed as its own single-item request is (`Endpoint.items`), so an item is found
whichever list (or lone request) stored it. The items the store has are served from it; the
others go upstream in one request holding only them (each distinct item once), and every item
that comes back is stored on its own, up to `max_stored_items` a request (the rest are answered, not
stored: no caller fills a store with 2,048 entries a request). The answer is the list answer put
back together in input order (`Endpoint.batch_answer`); its usage is the upstream's, for the items
sent.

`x-cache` says `HIT` (every item was stored: nothing went upstream), `MISS` (none was) or
`PARTIAL`; `x-cache-items-hit` and `x-cache-items-missed` count the list's positions each way.
A MISS whose list holds no repeated item is sent upstream as the caller wrote it and answered with
the upstream's own bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from . import _exact_json as exact_json
from ._entry import Entry, EntryError, unpack
from ._freshness import capped_ttl, upstream_rules
from ._headers import encoded, with_length
from ._recorder import answer_origin, fallback_storage, replayed_origin, unstorable_head
from ._settings import CacheSettings, CacheStats
from ._types import (
    CACHE_HEADER,
    KEY_HEADER,
    Action,
    Answer,
    CacheRequest,
    End,
    Forward,
    Lookup,
    Outcome,
    ReadBody,
    Reply,
    ResponseParts,
    Run,
)
from .providers.base import JSON_MEDIA_TYPE
from .stores.base import Store, get_many

logger = logging.getLogger("llm_cache.middleware")

ITEMS_HIT_HEADER = "x-cache-items-hit"
ITEMS_MISSED_HEADER = "x-cache-items-missed"
PARTIAL = "PARTIAL"
ITEM_CAP = "item_cap: past the items one request may store (max_stored_items)"


class ItemsHandle(Protocol):
    """What serving items asks of its Cache."""

    settings: CacheSettings
    stats: CacheStats
    store: Store

    async def store_entry(self, request: CacheRequest, entry: Entry, ttl: float | None = None) -> bool:
        """Write the entry under its fingerprint; False if the store failed (counted)."""

    def only_if_cached_response(self, request: CacheRequest) -> ResponseParts:
        """The 504 of a request that said only-if-cached."""

    def _store_failed(self, operation: str, error: Exception) -> None: ...


class Items:
    """The part of `Cache.plan` that serves a list request item by item."""

    def __init__(self, cache: ItemsHandle) -> None:
        self._cache = cache

    def plan(self, request: CacheRequest) -> Generator[Action, Any, End]:
        keys = request.item_keys
        distinct = list(dict.fromkeys(keys))
        found: dict[str, _Item] = {}
        if not request.policy.no_cache:
            found = yield Run(self._read(request, distinct))
        missing = [key for key in distinct if key not in found]
        hits = sum(1 for key in keys if key in found)
        counts = [(ITEMS_HIT_HEADER, str(hits)), (ITEMS_MISSED_HEADER, str(len(keys) - hits))]
        outcome = Outcome.HIT if not missing else Outcome.REFRESH if request.policy.no_cache else Outcome.MISS
        self._count(outcome)
        call = request.call
        if call is not None:
            call.decided(Lookup(outcome))
        if not missing:
            return Answer(self._assembled(request, [found[key] for key in keys], counts))
        if request.policy.only_if_cached:
            return Answer(self._cache.only_if_cached_response(request))
        endpoint = request.endpoint
        whole = not found and len(distinct) == len(keys)
        if whole:
            body = request.forward_body
        else:
            positions = [keys.index(key) for key in missing]
            body = exact_json.dumps(endpoint.batch_body(request.route, request.body, positions))
        try:
            yield Forward(body)
            reply: Reply = yield ReadBody()
        except BaseException as error:
            if call is not None:
                call.failed(error)
            raise
        upstream = self._readable(request, reply)
        answers = None if upstream is None else endpoint.item_answers(upstream, len(missing))
        if (upstream is None or answers is None) and not whole and reply.status < 400:
            # A success the items cannot be taken from answers only the items asked for: the caller's
            # own request goes instead, and its answer is relayed as it comes (nothing is stored).
            yield Forward(request.forward_body)
            reply = yield ReadBody()
            whole, upstream, answers = True, None, None
        if upstream is None or answers is None:
            if call is not None:
                call.finished(reply.status, None, False, None, False)
            return Answer(_upstream_parts(reply, reply.body, outcome.value, request.key, counts))
        fresh = dict(zip(missing, answers, strict=True))
        settings = self._cache.settings
        fallback, ttl = fallback_storage(settings, reply.headers)
        refused, fresh_for = upstream_rules(settings, request, JSON_MEDIA_TYPE, reply.raw)
        ttl = capped_ttl(ttl, fresh_for, request.policy.ttl if request.policy.ttl is not None else settings.ttl)
        why = request.unstorable() or fallback or refused
        kept = _capped(fresh, settings.max_stored_items)
        stored = why is None and (yield Run(self._store(request, reply, kept, ttl)))
        if why is not None:
            self._cache.stats.not_stored += 1
        elif len(kept) < len(fresh) and not request.policy.no_store:  # answered, not stored: one list's share
            self._cache.stats.not_stored += len(fresh) - len(kept)
            if call is not None:
                call.not_stored(ITEM_CAP, len(fresh) - len(kept))
        if call is not None:
            call.finished(reply.status, None, stored, why, False)
        if whole:
            return Answer(_upstream_parts(reply, reply.body, outcome.value, request.key, counts))
        merged = [found[key].answer if key in found else fresh[key] for key in keys]
        body = exact_json.dumps(endpoint.batch_answer(merged, upstream))
        return Answer(_upstream_parts(reply, body, PARTIAL if found else outcome.value, request.key, counts))

    def _count(self, outcome: Outcome) -> None:
        stats = self._cache.stats
        if outcome is Outcome.HIT:
            stats.hits += 1
        elif outcome is Outcome.REFRESH:
            stats.refreshes += 1
        else:
            stats.misses += 1

    async def _read(self, request: CacheRequest, keys: Sequence[str]) -> dict[str, _Item]:
        """The usable items of these keys; a store that fails is a miss of every item. An entry that
        does not decode, or whose answer no list answer can be made of (a corrupt body, another
        schema's), is an invalid entry: that item is missing, goes upstream and is stored again."""
        try:
            stored = await get_many(self._cache.store, keys)
        except Exception as error:  # fail open: a broken store is a miss
            self._cache._store_failed("get", error)
            return {}
        found = {}
        for key, data in zip(keys, stored, strict=True):
            if data is None:
                continue
            try:
                entry = unpack(data)
                if entry.fingerprint != key or not request.accepts(entry):
                    continue
                replayed_origin(request.endpoint, entry)
                found[key] = _Item(entry, _answer_of(request, entry))
            except EntryError as error:
                self._cache.stats.invalid_entries += 1
                logger.warning("discarding invalid cache entry %s: %s", key[-16:], error)
        return found

    def _readable(self, request: CacheRequest, reply: Reply) -> dict[str, Any] | None:
        """The upstream's list answer when it is a success the items can be taken from."""
        if unstorable_head(self._cache.settings, reply.status, reply.headers) or request.endpoint.unstorable(
            reply.body, request.view()
        ):
            return None
        return exact_json.loads(reply.body)  # type: ignore[no-any-return]

    async def _store(
        self, request: CacheRequest, reply: Reply, answers: Mapping[str, dict[str, Any]], ttl: float | None
    ) -> bool:
        """Store each item's answer on its own (not when the request said no-store), with what the
        Recorder keeps of a single answer's headers (the router's, the request id of the call)."""
        if request.policy.no_store:
            return False
        now = time.time()
        limit = self._cache.settings.max_response_bytes
        origin = answer_origin(request, reply.headers)
        writes = []
        for key, answer in answers.items():
            body = exact_json.dumps(answer)
            if len(body) <= limit:
                entry = Entry(key, now, reply.status, body, False, origin=origin)
                writes.append(self._cache.store_entry(request, entry, ttl))
        return all(await asyncio.gather(*writes))

    def _assembled(self, request: CacheRequest, items: list[_Item], counts: list[tuple[str, str]]) -> ResponseParts:
        """Every item from the store: one list answer, as old as its oldest item, naming the call that
        answered its items when one call answered them all."""
        entries = [item.entry for item in items]
        answer = request.endpoint.batch_answer([item.answer for item in items], None)
        body = exact_json.dumps(answer)
        age = max(0, int(time.time() - min(entry.created_at for entry in entries)))
        headers = [(CACHE_HEADER, Outcome.HIT.value), (KEY_HEADER, request.key), ("age", str(age)), *counts]
        origins = {entry.origin for entry in entries}
        if len(origins) == 1:
            headers += origins.pop()
        opening = request.endpoint.answer_headers.of(JSON_MEDIA_TYPE)
        if request.call is not None:
            request.call.end()
        return ResponseParts(entries[0].status, with_length([*opening, *encoded(headers)], len(body)), body)


def _capped(answers: dict[str, Any], cap: int | None) -> dict[str, Any]:
    """The first `cap` of the answers (in the list's order), the ones a list request stores."""
    if cap is None or len(answers) <= cap:
        return answers
    return dict(itertools.islice(answers.items(), cap))


class _Item(NamedTuple):
    """A stored item: its entry, and the answer a list answer is made of."""

    entry: Entry
    answer: dict[str, Any]


def _answer_of(request: CacheRequest, entry: Entry) -> dict[str, Any]:
    """`entry`'s answer, checked by making a list answer of it alone (`EntryError`: none can be).
    The answers are only read to make one, never changed, so repeated items share theirs."""
    try:
        answer = exact_json.loads(entry.body)
        request.endpoint.batch_answer([answer], None)
    except Exception as error:
        raise EntryError(f"no list answer can be made of it ({type(error).__name__})") from error
    if not isinstance(answer, dict):
        raise EntryError("its answer is not a JSON object")
    return answer


def _upstream_parts(reply: Reply, body: bytes, outcome: str, key: str, counts: list[tuple[str, str]]) -> ResponseParts:
    """The upstream's answer (or the list put back together) with the upstream's headers."""
    headers = [(name, value) for name, value in reply.raw if name.lower() not in _REPLACED]
    headers += [(CACHE_HEADER, outcome), (KEY_HEADER, key), *counts]
    return ResponseParts(reply.status, with_length(encoded(headers), len(body)), body)


_REPLACED = frozenset({"content-length", "transfer-encoding", CACHE_HEADER, KEY_HEADER})
