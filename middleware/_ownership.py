"""Which admitted caller each provider-held id was minted for, on a gateway spending its owner's key.

Every caller of such a gateway spends one provider account, so the provider cannot tell them apart: a
Responses id (and its output items), a conversation, an uploaded file or a Gemini cached content one
caller created is reachable by any other who names it. The gateway records, for each id an answer
hands a caller, who that caller is (a hash of the key it presented), and refuses a request that names
an id recorded for nobody or for someone else (`providers.held` says where ids are named and minted).

Records live in the cache's store, under the cache's key prefix, so that every pod of a shared store
agrees, for `TTL` (the provider keeps a stored response 30 days), with a bounded in-process memo in
front: a caller continuing its own id is answered by the memo without a round trip. With no cache
(`cache.enabled: false`) a `MemoryStore` of the process's own holds them: fair between callers (one
caller's flood of records gives way before another's), which one LRU memo for all is not.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

import orjson

from .._log_limit import LogLimit
from .._wire import decompressor
from .providers import held
from .stores.base import Store, TTLStore, abilities_of
from .stores.memory import MemoryStore

logger = logging.getLogger("llm_cache.middleware.gateway")

__all__ = ["TTL", "Ownership", "StoreDown", "caller_of", "recording"]

TTL = 30 * 24 * 3600.0
"""How long an id stays its caller's: as long as OpenAI keeps a stored response."""
_MEMO_ENTRIES = 10_000
_UNSURE = 60.0
"""How long the memo keeps a record read from a store that does not say how long it has left: the
record may be near its end, so a short while (a round trip a minute for an id in use), never a full `TTL`."""
_BATCH = 64
"""Most store reads in flight at once for one list answer's entries."""
_READ_LIMIT = 16 * 1024 * 1024
"""The most decoded bytes of one answer read for its ids (past it, none are recorded: the caller cannot
name them later, which refuses, never opens)."""


class StoreDown(Exception):
    """The store did not answer whose an id is: nobody can be told it is theirs."""


def caller_of(values: Iterable[bytes], keys: tuple[bytes, ...]) -> str:
    """Who a caller is: a hash of the keys it presented (`values`), of the gateway's client keys among
    them when `keys` (`auth.keys`) are set. A caller that presents none is the anonymous caller."""
    presented = sorted({value for value in values if value and (not keys or value in keys)})
    return hashlib.sha256(b"\n".join(presented)).hexdigest()[:32]


class Ownership:
    """Which ids each caller was handed: one record per (caller, id) in `store` (may be None) under
    `prefix`, with a bounded TTL'd memo that never vouches for a record longer than the store keeps it:
    one just written, `ttl`; one read back, the time the store says it has left (`ttl_reads`), else
    `_UNSURE` at most. `clock` is monotonic seconds."""

    def __init__(
        self,
        store: Store | None,
        prefix: str,
        ttl: float = TTL,
        memo_entries: int = _MEMO_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store: Store = store if store is not None else MemoryStore(max_entries=memo_entries, max_bytes=None)
        """(With no cache, a store of the process's own, fair between callers as the memo is not.)"""
        self.prefix = f"{prefix}__owner__:"
        self.ttl = ttl
        self.memo_entries = memo_entries
        self.clock = clock
        self.memo: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.warnings = LogLimit(logger)
        """A store that is down fails every answer's record: one WARNING an interval."""

    @staticmethod
    def _digest(family: str, kind: str, held_id: str) -> str:
        """The id (the memo's key: it says whose the id is)."""
        return hashlib.sha256(f"{family}\0{kind}\0{held_id}".encode("utf-8", "surrogatepass")).hexdigest()[:40]

    def _key(self, caller: str, digest: str) -> str:
        """The store's record that the id is `caller`'s. The caller is a segment of its own
        (`_keys.key_owner`): a bounded store that gives way by tenant takes one caller's flood of
        records from that caller, never from the records of every caller at once."""
        return f"{self.prefix}{caller}:{digest}"

    def _remember(self, digest: str, caller: str, left: float) -> None:
        """Memo that the id is `caller`'s for the next `left` seconds."""
        self.memo[digest] = (caller, self.clock() + min(left, self.ttl))
        self.memo.move_to_end(digest)
        while len(self.memo) > self.memo_entries:
            self.memo.popitem(last=False)

    async def record(self, caller: str, family: str, ids: Iterable[held.Held]) -> None:
        """`ids` were minted for `caller` (a store that fails is logged: the memo still holds them)."""
        for kind, held_id in ids:
            digest = self._digest(family, kind, held_id)
            self._remember(digest, caller, self.ttl)
            try:
                await self.store.set(self._key(caller, digest), caller.encode("ascii"), self.ttl)
            except Exception as error:
                self.warnings.warning(
                    "record", "recording whose a %s id is failed (%r): other pods will refuse it", kind, error
                )

    async def foreign(self, caller: str, family: str, ids: Iterable[held.Held]) -> held.Held | None:
        """The first of `ids` not minted for `caller` (minted for another, or never seen), or None.
        Raises `StoreDown` when the store cannot say."""
        for kind, held_id in ids:
            digest = self._digest(family, kind, held_id)
            memo = self.memo.get(digest)
            if memo is not None and memo[1] > self.clock():
                if memo[0] != caller:
                    return kind, held_id
                continue
            try:
                owner, left = await self._read(self._key(caller, digest))
            except Exception as error:
                raise StoreDown(f"the store did not say whose a {kind} id is ({type(error).__name__})") from error
            if owner is None or owner.decode("ascii", "replace") != caller:
                return kind, held_id
            self._remember(digest, caller, left)
        return None

    async def _read(self, key: str) -> tuple[bytes | None, float]:
        """A record and how long the memo may keep it: the time the store says it has left (no expiry:
        `ttl`), or `_UNSURE` from a store that does not say."""
        if not abilities_of(self.store).ttl_reads:
            return await self.store.get(key), _UNSURE
        value, left = await cast(TTLStore, self.store).get_with_ttl(key)
        return value, self.ttl if left is None else left

    async def only_callers(self, caller: str, family: str, listing: held.Listing, answer: bytes) -> bytes | None:
        """A list answer (`held.listed`) with only the entries minted for `caller`, or None for an answer not
        of that shape (shown to nobody). Its other fields (the provider's cursors) are kept as they are, so a
        next page starts where the provider's left off. Raises `StoreDown`."""
        kind, field, id_field = listing
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return None
        entries = parsed.get(field, []) if isinstance(parsed, dict) else None
        if not isinstance(entries, list):
            return None
        ids = [entry.get(id_field) if isinstance(entry, dict) else None for entry in entries]
        theirs: list[bool] = []
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            found = await asyncio.gather(
                *(self.foreign(caller, family, [(kind, one)]) if isinstance(one, str) else _refused() for one in batch)
            )
            theirs += [other is None for other in found]
        parsed[field] = [entry for entry, mine in zip(entries, theirs, strict=True) if mine]
        return orjson.dumps(parsed)


async def _refused() -> held.Held:
    return "", ""


async def recording(
    chunks: AsyncIterator[bytes],
    encoding: str | None,
    stream: bool,
    family: str,
    ids_of: Callable[[Any], list[held.Held]],
    record: Callable[[list[held.Held]], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """`chunks` (an answer's raw body, maybe gzip) passed on as they come, with the ids `ids_of` reads in
    the answer recorded before its caller can have them: for a stream, before the chunk that ends an
    event naming them (the family's `held.SSE_MARKERS` and `STREAM_EVENTS`) is passed on; for JSON,
    before its last chunk is."""
    markers = held.SSE_MARKERS.get(family, ())
    events = held.STREAM_EVENTS.get(family, frozenset())
    try:
        decoder = decompressor(encoding)
    except ValueError:  # an encoding not read (the upstream was asked for gzip or none): nothing recorded
        async for chunk in chunks:
            yield chunk
        return
    reading = True
    if stream:
        pending = bytearray()  # the decoded stream since the last event's end
        recorded: set[held.Held] = set()  # (a chat stream names its stored id in every chunk: recorded once)
        async for chunk in chunks:
            if reading:
                seen = max(len(pending) - 3, 0)  # (an end may begin in what came before)
                pending += _decode(decoder, chunk)
                found = [
                    found
                    for event in _ended(pending, seen)
                    if any(m in event for m in markers)
                    for found in _ids(event, events, ids_of)
                    if found not in recorded
                ]
                if found:
                    found = list(dict.fromkeys(found))
                    await record(found)
                    recorded.update(found)
                if len(pending) > _READ_LIMIT:  # one event past the limit: read no further
                    reading = False
                    pending.clear()
            yield chunk
        return
    text = bytearray()
    last: bytes | None = None
    async for chunk in chunks:
        if last is not None:
            yield last
        last = chunk
        if reading:
            text += _decode(decoder, chunk)
            reading = len(text) <= _READ_LIMIT
            if not reading:
                text.clear()
    if reading and text:
        try:
            found = ids_of(orjson.loads(text))
        except orjson.JSONDecodeError:
            found = []
        if found:
            await record(found)
    if last is not None:
        yield last


_EVENT_END = re.compile(rb"\r?\n\r?\n")


def _ended(pending: bytearray, seen: int) -> list[bytes]:
    """The events `pending` ends (taken out of it; what follows the last stays), looking for their ends
    from `seen` on (no end lies before it)."""
    events = []
    start = 0
    for end in _EVENT_END.finditer(pending, seen):
        events.append(bytes(pending[start : end.start()]))
        start = end.end()
    if start:
        del pending[:start]
    return events


def _decode(decoder: Any, chunk: bytes) -> bytes:
    if decoder is None:
        return chunk
    try:
        out: bytes = decoder.decompress(chunk, _READ_LIMIT + 1)
    except zlib.error:
        return b""
    return out


def _ids(event: bytes, types: frozenset[str], ids_of: Callable[[Any], list[held.Held]]) -> list[held.Held]:
    data = b"\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    # (an event of another type may quote a marker in its text; a chat chunk says what it is in `object`)
    if not isinstance(parsed, dict) or parsed.get("type", parsed.get("object")) not in types:
        return []
    return ids_of(parsed)
