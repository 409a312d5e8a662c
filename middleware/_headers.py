"""Request headers as the engine reads them: a lower-cased dict, and the names sent more than once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal


class _LowerHeaders(dict[str, str]):
    """A plain mapping made case-insensitive for `.get()`, for callers passing dicts."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of `headers` whose `.get()` ignores case, for callers passing plain dicts."""
    return _LowerHeaders(headers)


METHOD_OVERRIDES = ("x-http-method-override", "x-http-method", "x-method-override")
"""Headers that name the method a server acts on instead of the request's own: Google's front ends read
`X-HTTP-Method-Override`, other servers its variants."""

CONTROL_HEADERS: dict[str, Literal["list", "single"]] = {
    "cache-control": "list",
    "x-cache-tags": "list",
    "x-cache-ttl": "single",
    "x-cache-namespace": "single",
}
"""How each request header that controls the cache reads when sent on more than one line, never as
the last line alone (the one a dict keeps; a `no-store` on the first of two `Cache-Control` lines was
dropped): a `list` one is every line's value, comma-joined (RFC 9110 5.3); a `single` one is refused
with a 400 naming it (two TTLs: which one did the caller mean?)."""

LIST_FIELDS = frozenset(name for name, reading in CONTROL_HEADERS.items() if reading == "list")
SINGLE_CONTROLS = frozenset(name for name, reading in CONTROL_HEADERS.items() if reading == "single")

NAMES_KEPT = 256
"""Most header names a `names` memo keeps (one that sees more distinct names starts over)."""


def read_headers(raw: Sequence[tuple[bytes, bytes]], names: dict[bytes, str]) -> tuple[dict[str, str], frozenset[str]]:
    """(the request headers as a lower-cased dict, the names sent more than once), from the raw
    latin-1 pairs both adapters hold. `names` is the adapter's memo of raw names already decoded and
    lower-cased: requests send the same few names, and a memo read costs half a decode. Repeats are
    looked for only when the dict came out shorter than the raw list, so a normal request pays nothing
    for them; a repeated `LIST_FIELDS` header is every line's value, comma-joined."""
    headers = {}
    for name, value in raw:
        text = names.get(name)
        if text is None:
            if len(names) >= NAMES_KEPT:
                names.clear()
            text = names[name] = name.decode("latin-1").lower()
        headers[text] = value.decode("latin-1")
    if len(headers) == len(raw):
        return headers, _NO_REPEATS
    seen: set[str] = set()
    repeated: set[str] = set()
    for name, _ in raw:
        lowered = name.decode("latin-1").lower()
        (repeated if lowered in seen else seen).add(lowered)
    for field in repeated & LIST_FIELDS:  # the dict kept the last line; every line counts
        named = field.encode("latin-1")
        headers[field] = ", ".join(value.decode("latin-1") for key, value in raw if key.lower() == named)
    return headers, frozenset(repeated)


_NO_REPEATS: frozenset[str] = frozenset()

RawPairs = list[tuple[bytes, bytes]]


def encoded(pairs: Iterable[tuple[str, str]], *, lower: bool = False) -> RawPairs:
    """Text header pairs as the raw latin-1 bytes ASGI and httpx carry; `lower` for ASGI, whose
    header names are lower-case."""
    return [((k.lower() if lower else k).encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def decoded(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Raw header pairs as text, in order, as the upstream sent them."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def with_length(raw: Iterable[tuple[bytes, bytes]], length: int | None) -> RawPairs:
    """The headers of a message whose body the cache replaced: the old `content-length` dropped, and
    the new one added when `length` is given (an httpx message computes its own)."""
    kept = [(k, v) for k, v in raw if k.lower() != b"content-length"]
    if length is not None:
        kept.append((b"content-length", str(length).encode("latin-1")))
    return kept


def for_decoded_body(raw: Iterable[tuple[bytes, bytes]]) -> RawPairs:
    """The headers of an answer served again from its decoded body: no encoding, no framing."""
    return [(k, v) for k, v in raw if k.lower() not in _FRAMING]


_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


__all__ = [
    "CONTROL_HEADERS",
    "LIST_FIELDS",
    "METHOD_OVERRIDES",
    "SINGLE_CONTROLS",
    "RawPairs",
    "decoded",
    "encoded",
    "for_decoded_body",
    "lower_headers",
    "read_headers",
    "with_length",
]
