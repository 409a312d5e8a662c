"""The stored form of a cached response: msgpack, versioned, fingerprinted."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import msgpack

from ._memo import BoundedMemo

SCHEMA_VERSION = 4
"""2 added `usage_requested` and `origin`, 3 `expires_at` and `tags`, 4 `cut`; entries of versions 1 to
3 are still read (all version-1 entries were stored with usage; neither 1 nor 2 knows when it stops
being fresh; entries before 3 carry no tags, and no tag index names them; entries before 4 carry no
cut: a streamed hit of theirs synthesises its stream)."""


COMPLETE_ANSWERS = frozenset({200, 201})
"""The statuses an entry may hold: those of an answer whole in its body, the only ones ever stored
(`cacheable_statuses` may name no other). Any other is a corrupt or hostile entry: a hit would replay
a 204 or 304 with a body, a 101 that switches protocols, a redirect without its `Location`."""


class EntryError(ValueError):
    """Bytes from a store that are not a valid entry of this schema."""


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
"""An HTTP header name (a token), lower-case as the Recorder keeps it."""
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
"""A header value a hit can send: latin-1 text without CR, LF, NUL or other controls."""


def replayable_header(name: str, value: str) -> bool:
    """Whether `name: value` can be sent again on a hit (the Recorder keeps only those, and an entry
    holding another is invalid: a hit would fail to encode it, or split it into two headers)."""
    return _HEADER_NAME.fullmatch(name) is not None and _HEADER_VALUE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Entry:
    fingerprint: str
    """The full key the entry was written under; a mismatch means a store-level collision."""
    created_at: float
    """Wall-clock seconds (time.time()) when the response was stored; gives `age`."""
    status: int
    body: bytes
    """The final JSON response, exactly as the provider sent it (or as assembled from a stream)."""
    from_stream: bool
    usage_requested: bool = True
    """Whether the request that produced it asked the provider for token usage (a stream may opt out):
    an entry without is never served to a request that would get usage from the provider."""
    origin: tuple[tuple[str, str], ...] = ()
    """Headers saying what produced the answer (the router's deployment, model, family and group; the
    provider's id of the call, `AnswerHeaders.request_id`), replayed on every hit."""
    expires_at: float | None = None
    """Wall-clock seconds when the entry stops being fresh (`created_at` + its TTL), or None: fresh as
    long as the store keeps it. Past it, the entry is only served stale, when the upstream fails
    (`stale_if_error`); the store keeps it that much longer."""
    tags: frozenset[str] = frozenset()
    """What a tag invalidation removes it by: the automatic `model:`, `namespace:` and `scope:` tags
    and the custom ones (`x-cache-tags`); metadata, never part of the key."""
    cut: bytes | None = None
    """How the provider cut the stream that filled the entry (`providers/cuts.py`), so a streamed hit
    sends the same events; None for an answer that came as JSON (its streamed hits are synthesised)."""


def pack(entry: Entry) -> bytes:
    return msgpack.packb(
        [
            SCHEMA_VERSION,
            entry.fingerprint,
            entry.created_at,
            entry.status,
            entry.body,
            entry.from_stream,
            entry.usage_requested,
            [list(pair) for pair in entry.origin],
            entry.expires_at,
            sorted(entry.tags),
            entry.cut,
        ],
        use_bin_type=True,
    )


def unpack(data: bytes) -> Entry:
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as error:  # msgpack raises several unrelated types
        raise EntryError(f"undecodable entry: {error}") from error
    if type(fields) is not list:
        raise EntryError("entry of another schema version")
    expires_at = None
    tags: frozenset[str] = frozenset()
    cut = None
    version = fields[0] if fields else None
    if (len(fields), version) in ((11, SCHEMA_VERSION), (10, 3)):  # version 4 added `cut`, last
        _, fingerprint, created_at, status, body, from_stream, usage_requested, pairs, expires_at, names = fields[:10]
        cut = fields[10] if version == SCHEMA_VERSION else None
        if cut is not None and not isinstance(cut, bytes):
            raise EntryError("entry with fields of the wrong types")
        origin = _pairs(pairs) if pairs else ()
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise EntryError("entry with fields of the wrong types")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise EntryError("entry with fields of the wrong types")
        tags = frozenset(names)
    elif len(fields) == 8 and fields[0] == 2:
        _, fingerprint, created_at, status, body, from_stream, usage_requested, pairs = fields
        origin = _pairs(pairs) if pairs else ()
    elif len(fields) == 6 and fields[0] == 1:
        _, fingerprint, created_at, status, body, from_stream = fields
        usage_requested, origin = True, ()
    else:
        raise EntryError("entry of another schema version")
    if not (
        isinstance(fingerprint, str)
        and isinstance(created_at, (int, float))
        and type(status) is int
        and isinstance(body, bytes)
    ):
        raise EntryError("entry with fields of the wrong types")
    # Values a hit computes with or sends: a corrupt or other-schema entry must fail here, not in the hit.
    if not (
        math.isfinite(created_at) and status in COMPLETE_ANSWERS and (expires_at is None or math.isfinite(expires_at))
    ):
        raise EntryError("entry with fields out of range")
    return Entry(
        fingerprint,
        float(created_at),
        status,
        body,
        bool(from_stream),
        bool(usage_requested),
        origin,
        None if expires_at is None else float(expires_at),
        tags,
        cut,
    )


def _pairs(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
        and replayable_header(pair[0], pair[1])
        for pair in value
    ):
        raise EntryError("entry with fields of the wrong types")
    return tuple((name, text) for name, text in value)


class EntryMemo:
    """Entries already decoded, by their stored bytes: a hit on a hot key decodes nothing.

    Equal bytes decode to equal entries (entries are immutable), so sharing one is safe; a store
    outside the process hands new bytes each read, which costs their hash instead of msgpack. Bounded
    like the engine's other memos (it starts over when full); large entries are decoded each time."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 4 * 1024 * 1024) -> None:
        self._entries: BoundedMemo[bytes, Entry] = BoundedMemo(max_entries, max_bytes)

    def unpack(self, data: bytes) -> Entry:
        """`unpack(data)`, remembered; raises EntryError as it does."""
        entry = self._entries.get(data)
        if entry is None:
            entry = unpack(data)
            self._entries.put(data, entry, len(data))
        return entry
