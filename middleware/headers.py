"""Request headers as the engine reads them: a lower-cased dict, and the names sent more than once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class _LowerHeaders(dict[str, str]):
    """A plain mapping made case-insensitive for `.get()`, for callers passing dicts."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of `headers` whose `.get()` ignores case, for callers passing plain dicts."""
    return _LowerHeaders(headers)


def read_headers(raw: Sequence[tuple[bytes, bytes]]) -> tuple[dict[str, str], frozenset[str]]:
    """(the request headers as a lower-cased dict, the names sent more than once), from the raw
    latin-1 pairs both adapters hold. Repeats are looked for only when the dict came out shorter than
    the raw list, so a normal request pays nothing for them."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
    if len(headers) == len(raw):
        return headers, _NO_REPEATS
    seen: set[str] = set()
    repeated: set[str] = set()
    for name, _ in raw:
        lowered = name.decode("latin-1").lower()
        (repeated if lowered in seen else seen).add(lowered)
    return headers, frozenset(repeated)


_NO_REPEATS: frozenset[str] = frozenset()


__all__ = ["lower_headers", "read_headers"]
