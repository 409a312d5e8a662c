"""The Recorder: watches one upstream answer to a miss as it streams to the caller, then stores it or not.

It stores only a complete answer of a cacheable status and the endpoint's own shape: a JSON body read
to its end, or a stream that reached the provider's terminal event. It asks its Cache for nothing but
what `RecorderHandle` names.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import zlib
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Protocol

from .._log_limit import LogLimit
from .._wire import decompressor
from ._entry import Entry, EntryError, replayable_header
from ._freshness import capped_ttl, upstream_rules
from ._hooks import AnswerView
from ._settings import CacheSettings, CacheStats
from ._types import CACHE_HEADER, FALLBACK_FROM_HEADER, KEY_HEADER, ORIGIN_HEADERS, CacheRequest, Lookup, Outcome
from .providers import Endpoint, StreamAssembler
from .providers.base import JSON_MEDIA_TYPE, StreamFilter

logger = logging.getLogger("llm_cache.middleware")


class RecorderHandle(Protocol):
    """What a Recorder may ask of its Cache."""

    settings: CacheSettings
    stats: CacheStats
    warnings: LogLimit
    """Its WARNINGs a caller could repeat at request rate."""

    def refused(self, request: CacheRequest, status: int) -> None:
        """The answer to a request sent again without an addition the upstream refused."""

    async def store_entry(
        self, request: CacheRequest, entry: Entry, ttl: float | None, tags: frozenset[str] = frozenset()
    ) -> bool:
        """Write the entry with these custom tags besides the automatic ones; False if the store failed
        (counted)."""

    async def after_answer(self, request: CacheRequest, entry: Entry, ttl: float | None) -> AnswerView | None:
        """The after-answer hooks' verdict (store or not, the TTL), or None when there are none."""

    def release_waiters(self, lookup: Lookup, entry: Entry | None, left: bool = False) -> None:
        """Hand the stored entry (or None) to the misses coalesced on this one; `left`: the caller left
        before the answer was complete, so one of them leads anew."""

    async def release_lock(self, request: CacheRequest, lookup: Lookup) -> None:
        """Release this call's distributed lock, if it holds one."""

    def release_lock_soon(self, request: CacheRequest, lookup: Lookup) -> None:
        """Start releasing this call's distributed lock, if it holds one, without waiting for it."""

    async def index_by_meaning(self, request: CacheRequest, lookup: Lookup) -> None:
        """Index a stored answer for semantic lookups (a no-op without a semantic cache)."""

    async def withdraw_entry(self, request: CacheRequest, entry: Entry) -> None:
        """Delete `entry`, stored at its stream's terminal event, and its index row: what the stream sent
        after that event made it another answer than its caller got (counted; a store error too)."""


MAX_ORIGIN_CHARS = 256
"""Longest router header value an entry keeps: an upstream's own `x-router-*` must not bloat every hit."""


def answer_origin(request: CacheRequest, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What an entry keeps of the upstream's headers, to replay on its hits: the router's (deployment,
    model, family, group; at most `MAX_ORIGIN_CHARS` each) and the family's request id, each only if a
    hit can send it back."""
    lowered = ((k.lower(), v) for k, v in headers.items())
    origin = tuple(
        (k, v) for k, v in lowered if k in ORIGIN_HEADERS and len(v) <= MAX_ORIGIN_CHARS and replayable_header(k, v)
    )
    return origin + request.endpoint.answer_headers.stored_of(headers)


def replayed_origin(endpoint: Endpoint, entry: Entry) -> tuple[tuple[str, str], ...]:
    """`entry`'s origin headers, which a hit of `endpoint` replays: only names `answer_origin` keeps for
    its family (`EntryError` for another). An entry read from a store someone else can write may name
    any header: `set-cookie`, `location`, or a `content-length` or `transfer-encoding` that would
    reframe the hit (a 500, or a body cut short)."""
    answer_headers = endpoint.answer_headers
    for name, _ in entry.origin:
        if name not in ORIGIN_HEADERS and not answer_headers.stores(name):
            raise EntryError(f"its origin names a header no answer of its family stores ({name[:64]!r})")
    return entry.origin


def fallback_storage(settings: CacheSettings, headers: Mapping[str, str]) -> tuple[str | None, float | None]:
    """(why an upstream answer may not be stored, the TTL it is stored with) for an answer from a
    router's fallback group: stored only when `cache_fallbacks` says so, for `fallback_ttl`; (None,
    None) for any other answer. A fallback model's answer under the requested model's key would be
    served as that model's (for embeddings: vectors of another space)."""
    requested = headers.get(FALLBACK_FROM_HEADER)
    if requested is None:
        return None, None
    if not settings.cache_fallbacks:
        return f"answer from a fallback group in place of {requested}", None
    return None, settings.fallback_ttl


def unstorable_head(settings: CacheSettings, status: int, headers: Mapping[str, str]) -> str | None:
    """Why an upstream answer with this status and these headers is not stored, or None. A hit replays
    the status with the body alone: no `location`, which would not say where the answer points."""
    if status not in settings.cacheable_statuses:
        return f"status {status} is not cacheable"
    if headers.get("location") is not None:
        return "the answer names a location"
    return None


_LENGTH = re.compile(r"[0-9]{1,19}")


def declared_length(raw: Iterable[tuple[str, str]]) -> tuple[int | None, str | None]:
    """(the body length an answer's `content-length` declares, or None; why no length can be believed:
    two different ones, or one that is not a number). A server in front that does not hold the
    upstream to it (an ASGI server may not) passes on a body cut short or padded."""
    values = {part.strip() for name, value in raw if name.lower() == "content-length" for part in value.split(",")}
    if not values:
        return None, None
    value = values.pop()
    if values or not _LENGTH.fullmatch(value):
        return None, "content-length: the answer declares no single length"
    return int(value), None


def miss_headers(request: CacheRequest, lookup: Lookup) -> list[tuple[str, str]]:
    """`x-cache` (and `x-cache-key` unless bypassed) on an answer that came from upstream."""
    if lookup.outcome is Outcome.BYPASS:
        return [(CACHE_HEADER, Outcome.BYPASS.value)]
    return [(CACHE_HEADER, lookup.outcome.value), (KEY_HEADER, request.key)]


class Recorder:
    """Captures one upstream response as it streams to the caller, then stores it or not.

    `feed()` is synchronous and cheap (it runs on every chunk); `finish()` and
    `abort()` are idempotent and release any coalesced waiters.
    """

    __slots__ = (
        "_assembler",
        "_body",
        "_decoder",
        "_done",
        "_filter",
        "_fresh_for",
        "_handle",
        "_length",
        "_lookup",
        "_origin",
        "_received",
        "_request",
        "_size",
        "_status",
        "_storable",
        "_stored",
        "_ttl",
        "_why",
        "_withdrawn",
    )

    def __init__(self, handle: RecorderHandle, request: CacheRequest, lookup: Lookup) -> None:
        self._handle = handle
        self._request = request
        self._lookup = lookup
        self._storable = lookup.outcome in (Outcome.MISS, Outcome.REFRESH) and not request.policy.no_store
        self._why: str | None = None
        """Why the answer is not stored (span event and `not_stored` reason label), once known."""
        if request.policy.no_store and lookup.outcome is not Outcome.BYPASS:
            self._why = "no-store requested"
        self._assembler: StreamAssembler | None = None
        self._decoder: Any = None
        self._filter: StreamFilter | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._done = False
        self._origin: tuple[tuple[str, str], ...] = ()
        self._ttl: float | None = None
        self._fresh_for: float | None = None
        """The most seconds the upstream lets its answer be kept (its `s-maxage`/`max-age`), if it said."""
        self._length: int | None = None
        """The body length the answer's `content-length` declares, if it declares one."""
        self._received = 0
        """Bytes of the body recorded so far, as sent (before any decoding)."""
        self._stored: Entry | None = None
        """The entry stored at the stream's terminal event while the rest of the stream is watched: what
        the provider's grammar does not allow after that event withdraws it (`after_chunk`)."""
        self._withdrawn = False
        """What followed the terminal event broke the stream: the stored entry is to be withdrawn."""

    def start(self, status: int, headers: Mapping[str, str], raw: Iterable[tuple[str, str]] = ()) -> None:
        """Called with the upstream status and headers (`raw`: every pair, as sent), before any body chunk."""
        request = self._request
        if request.refused is not None:
            self._handle.refused(request, status)
        if (
            request.captured
            and 200 <= status < 300
            and (headers.get("content-type") or "").startswith("text/event-stream")
        ):
            self._filter = _caller_filter(request, headers.get("content-encoding"), self._handle.warnings)
        self._status = status
        if not self._storable:
            return
        self._origin = answer_origin(request, headers)
        refused, fallback_ttl = fallback_storage(self._handle.settings, headers)
        if refused is not None:
            self._not_storable(refused)
            return
        if fallback_ttl is not None:
            self._ttl = fallback_ttl
        refused = unstorable_head(self._handle.settings, status, headers)
        if refused is None:
            self._length, refused = declared_length(raw)
        if refused is not None:
            self._not_storable(refused)
            return
        content_type = (headers.get("content-type") or "").lower()
        expected = request.endpoint.stream_media_type(request.view()) if request.stream else JSON_MEDIA_TYPE
        if not content_type.startswith(expected):
            self._not_storable(f"content-type {content_type or 'missing'} is not {expected}")
            return
        refused, self._fresh_for = upstream_rules(self._handle.settings, request, expected, raw)
        if refused is not None:
            self._not_storable(refused)
            return
        if self._fresh_for is not None:
            self._ttl = capped_ttl(self._ttl, self._fresh_for, self._default_ttl())
        if request.stream:
            self._assembler = request.endpoint.assembler(request.view())
        try:
            self._decoder = decompressor(headers.get("content-encoding"))
        except ValueError as error:
            self._not_storable(str(error))

    def _default_ttl(self) -> float | None:
        policy_ttl = self._request.policy.ttl
        return policy_ttl if policy_ttl is not None else self._handle.settings.ttl

    def _not_storable(self, why: str) -> None:
        """The answer will not be stored: what was recorded of it is let go (a stream past the bound
        may go on for ever), and its coalesced waiters, who have nothing to wait for, go upstream now,
        not when its body ends (a long generation, or a stream that never ends); so do other pods'
        waiters on its distributed lock, released now."""
        self._storable = False
        if self._why is None:
            self._why = why
        self._body.clear()
        self._assembler = self._decoder = None
        self._handle.release_waiters(self._lookup, None)
        if self._lookup.lock is not None:
            self._handle.release_lock_soon(self._request, self._lookup)

    def forward_headers(self, upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The upstream response headers to pass on (after `start()`), plus `x-cache` and `x-cache-key`.

        `x-cache` and `x-cache-*` are the cache's own: an upstream's (a CDN's, another cache's) are not
        passed on beside them, so a client reads one outcome."""
        dropped = frozenset[str]()
        if self._filter is not None:
            dropped = _DECODED_DROPS if isinstance(self._filter, _DecodedFilter) else _FILTERED_DROPS
        upstream = [(k, v) for k, v in upstream if not _ours_or_in(k.lower(), dropped)]
        return upstream + miss_headers(self._request, self._lookup)

    @property
    def decodes(self) -> bool:
        """The stream is decoded for the caller (`_DecodedFilter`): the relay feeds it in slices of
        `DECODED_SLICE` bytes, so that no piece decodes to more than about a thousand times that."""
        return isinstance(self._filter, _DecodedFilter)

    @property
    def complete(self) -> bool:
        """The stream's terminal event has been recorded: the answer can be stored now, before the
        caller reads on (an SDK may stop reading at the terminal event and never close the stream)."""
        return not self._done and self._assembler is not None and self._assembler.complete

    def feed(self, chunk: bytes) -> bytes:
        """Record one upstream chunk; returns the bytes to pass on to the caller."""
        forward = chunk if self._filter is None else self._filter.feed(chunk)
        if self._storable and not self._done:
            self._received += len(chunk)
            if self._length is not None and self._received > self._length:
                self._not_storable(f"content-length: the body is longer than the {self._length} bytes it declares")
            else:
                self._record(chunk)
        elif self._stored is not None and not self._withdrawn:
            self._watch(chunk)
        return forward

    def after_chunk(self) -> Coroutine[Any, Any, Any] | None:
        """What to await once a chunk was fed, if anything: the store, when it held the terminal event
        (an SDK may stop reading there and never close the stream); the withdrawal of that entry, when
        a later chunk held what may not follow the event (the caller got another answer, or an error)."""
        if self.complete:
            return self.finish(exhausted=True)
        return self._withdraw() if self._withdrawn else None

    def _watch(self, chunk: bytes) -> None:
        """Feed the assembler what follows the terminal event, by the same grammar as what came before
        it (`StreamAssembler.complete` turns False on what the provider does not send after the end)."""
        assert self._assembler is not None
        chunk, why = self._decoded(chunk)
        if why is None:
            try:
                self._assembler.feed(chunk)
            except Exception:  # a tail the assembler cannot read is no tail the entry can be trusted with
                logger.debug("stream assembly failed after its terminal event", exc_info=True)
                why = "stream could not be assembled"
        self._withdrawn = why is not None or not self._assembler.complete

    async def _withdraw(self) -> None:
        entry, self._stored = self._stored, None
        if entry is None:
            return
        logger.debug("entry %s withdrawn: the stream went on after its terminal event", entry.fingerprint)
        await asyncio.shield(asyncio.ensure_future(self._handle.withdraw_entry(self._request, entry)))

    def flush(self) -> bytes:
        """Bytes still held back for the caller once the upstream body has ended."""
        return b"" if self._filter is None else self._filter.flush()

    def _decoded(self, chunk: bytes) -> tuple[bytes, str | None]:
        """`chunk` decoded and counted, and why the answer cannot be kept after it (or None)."""
        limit = self._handle.settings.max_response_bytes
        if self._decoder is not None:
            try:  # never past the limit: a small compressed chunk can decode to a thousand times its size
                chunk = self._decoder.decompress(chunk, limit - self._size + 1)
            except zlib.error:
                return chunk, "undecodable compressed body"
        self._size += len(chunk)
        return chunk, "response over max_response_bytes" if self._size > limit else None

    def _record(self, chunk: bytes) -> None:
        chunk, why = self._decoded(chunk)
        if why is not None:
            self._not_storable(why)
            return
        if self._assembler is not None:
            try:
                self._assembler.feed(chunk)
            except Exception:  # an assembler that cannot read the stream must not break the caller's
                logger.debug("stream assembly failed", exc_info=True)
                self._not_storable("stream could not be assembled")
                return
        else:
            self._body.append(chunk)

    async def finish(self, exhausted: bool = True) -> bool:
        """The caller has read the response (`exhausted`) or closed it. Stores it if complete.

        The write runs in its own task behind a shield: a complete answer is stored and the
        coalesced waiters are released even if the caller's task is cancelled meanwhile
        (Starlette cancels a streaming response's task when the client goes away).
        """
        if self._done:
            if exhausted and self._stored is not None and not self._withdrawn:  # the body ended
                self._withdrawn = self._assembler is None or not self._assembler.complete
            if self._withdrawn:
                await self._withdraw()
            self._stored = None  # (a caller that closed the stream early leaves its tail unseen)
            return False
        self._done = True
        entry = self._entry(exhausted) if self._storable else None
        if entry is None:
            if self._lookup.outcome is not Outcome.BYPASS:
                self._handle.stats.not_stored += 1
            self._complete_call(None, False, left=self._storable and not exhausted)
            if self._lookup.lock is not None:
                await asyncio.shield(asyncio.ensure_future(self._handle.release_lock(self._request, self._lookup)))
            return False
        return await asyncio.shield(asyncio.ensure_future(self._write(entry)))

    async def _write(self, entry: Entry) -> bool:
        stored = False
        try:
            ttl, tags = self._ttl, frozenset[str]()
            verdict = await self._handle.after_answer(self._request, entry, ttl)
            if verdict is not None:  # (a hook's TTL too is cut to what the upstream allows)
                ttl, tags = capped_ttl(verdict.ttl, self._fresh_for, self._default_ttl()), frozenset(verdict.tags)
            if verdict is not None and not verdict.store:
                self._why = "hook: an after_answer hook vetoed storing"
            else:
                stored = await self._handle.store_entry(self._request, entry, ttl, tags)
                if not stored:
                    self._why = "store write failed"
        finally:
            if stored and self._assembler is not None:
                self._stored = entry  # its stream is read on
            self._complete_call(entry, stored)
            if self._lookup.lock is not None:  # after the write: a pod that takes the lock next finds the entry
                await self._handle.release_lock(self._request, self._lookup)
        if stored:
            await self._handle.index_by_meaning(self._request, self._lookup)
        return stored

    def _complete_call(self, entry: Entry | None, stored: bool, left: bool = False) -> None:
        self._handle.release_waiters(self._lookup, entry if stored else None, left)
        call = self._request.call
        if call is not None:
            call.finished(self._status, entry, stored, self._why, self._request.stream)

    async def abort(self, error: BaseException | None = None) -> None:
        """The upstream call or the stream failed (`error`, an Exception), or the caller left (no error,
        or a cancellation): store nothing."""
        if self._done:
            self._stored = None  # the stream failed or was left after its terminal event: no tail read
            return
        self._done = True
        if self._lookup.outcome is not Outcome.BYPASS:
            self._handle.stats.not_stored += 1
        self._handle.release_waiters(self._lookup, None, left=not isinstance(error, Exception))
        if self._request.call is not None:
            self._request.call.failed(error if error is not None else sys.exc_info()[1])
        if self._lookup.lock is not None:
            await asyncio.shield(asyncio.ensure_future(self._handle.release_lock(self._request, self._lookup)))

    def _cut(self, body: bytes) -> bytes | None:
        """How the provider cut the stream the answer came in (store time), or None: a JSON answer, or
        an assembler that keeps no cut (an operator's own, written before cuts: hits synthesise)."""
        if self._assembler is None:
            return None
        try:
            return self._assembler.cut(body)
        except Exception:  # a cut is fidelity, never a reason to store nothing
            logger.debug("stream cut failed", exc_info=True)
            return None

    def _entry(self, exhausted: bool) -> Entry | None:
        if self._assembler is not None:
            if not exhausted and not self._assembler.complete:  # (Gemini's SSE form has no terminal event)
                self._why = "caller closed the stream early"
                return None
            try:
                body = self._assembler.result()
            except Exception:  # a stream of odd shapes must not break the caller's response
                logger.debug("stream assembly failed", exc_info=True)
                self._why = "stream could not be assembled"
                return None
            from_stream = True
            if body is None:
                self._why = "stream incomplete: no terminal event" if exhausted else "caller closed the stream early"
                return None
        else:
            if not exhausted:
                self._why = "caller closed the response early"
                return None
            if self._length is not None and self._received != self._length:  # (a stream may end past its last event)
                self._why = f"content-length: the body's {self._received} bytes are not the {self._length} it declares"
                return None
            body = b"".join(self._body)
            from_stream = False
        # Only a success of the endpoint's own shape, that replays as JSON and as a stream, is kept,
        # and only for a request the provider and the key read alike.
        request = self._request
        self._why = request.endpoint.unstorable(body, request.view()) or request.unstorable()
        if self._why is not None:
            return None
        asked = request.captured or request.endpoint.asks_for_usage(request.body, request.stream)
        return Entry(
            request.key, time.time(), self._status, body, from_stream, asked, self._origin, cut=self._cut(body)
        )


def _ours_or_in(name: str, dropped: frozenset[str]) -> bool:
    """Whether a lower-case header `name` is one the cache sets itself (`x-cache`, `x-cache-*`) or in `dropped`."""
    return name in dropped or (name.startswith("x-cache") and (len(name) == 7 or name[7] == "-"))


DECODED_SLICE = 4096
"""Compressed bytes a stream decoded for its caller is fed in at a time: at most about 4 MiB decoded
(gzip's ratio is at most about 1,032), whatever size the upstream's chunks are."""

_FILTERED_DROPS = frozenset({"content-length"})
_DECODED_DROPS = frozenset({"content-length", "content-encoding"})


def _caller_filter(request: CacheRequest, encoding: str | None, warnings: LogLimit) -> StreamFilter | None:
    """What undoes the usage capture on the stream the caller sees. A compressed stream is decoded
    for the caller first (its `content-encoding` is dropped), so the added chunk never gets through."""
    stream_filter = request.endpoint.stream_filter(request.view())
    if stream_filter is None:
        return None
    try:
        decoder = decompressor(encoding)
    except ValueError:  # an encoding the cache cannot read: the caller gets the stream as sent
        warnings.warning("usage-chunk", "cannot hide the usage chunk in a %s-encoded stream", encoding)
        return None
    return stream_filter if decoder is None else _DecodedFilter(decoder, stream_filter)


class _DecodedFilter:
    """Decompresses the upstream stream, then filters it; the caller receives it decoded."""

    def __init__(self, decoder: Any, inner: StreamFilter) -> None:
        self._decoder = decoder
        self._inner = inner

    def feed(self, chunk: bytes) -> bytes:
        return self._inner.feed(self._decoder.decompress(chunk))

    def flush(self) -> bytes:
        return self._inner.feed(self._decoder.flush()) + self._inner.flush()


__all__ = ["DECODED_SLICE", "Recorder", "RecorderHandle", "miss_headers"]
