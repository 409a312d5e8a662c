"""A bounded memo of prepared requests: a request prepared before is prepared again by a lookup.

Preparing a request (reading its body exactly, hashing its canonical form, reading its cache
controls and its credential) is a function of what it reads: the method, path, query and body, the
names of the headers sent more than once, the upstream its driver named, and the values of the
headers it looks at. The memo keeps, for each such identity, which headers the preparation read and
what they held (`HeaderReads` records them), and hands the same preparation to a later request whose
headers hold the same values under those names: it would read the same inputs and take the same
steps. A preparation that iterated the headers (Bedrock's keyed settings) is only reused for the
very same headers. An identity is remembered from its second sight on: the first is only noted, so a
prompt asked once costs a hash, not the recording.

Only the engine's own preparation may be memoised: a scope function or a key builder is the
operator's code, which may read anything or answer differently each time (see `Cache.prepare_route`).
Like the engine's other memos it starts over when full, which is also safe when the sync transport
prepares from several threads at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")

MEMO_ENTRIES = 512
"""Most preparations remembered."""
MEMO_BYTES = 4 * 1024 * 1024
"""Most request body bytes remembered (each preparation holds its body and the parsed form)."""

_SIGHTINGS = 4 * MEMO_ENTRIES
"""Most first sights noted."""

Identity = tuple[str, str, str, bytes, Collection[str], str | None]
"""(method, path, query, body, names of repeated headers, the upstream the driver named)."""


class HeaderReads(Mapping[str, str]):
    """Request headers that remember which names were read and what they held (None: absent).
    Iterating them (`items()`, `keys()`, `len()`) counts as reading all of them."""

    __slots__ = ("headers", "read", "read_all")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers
        self.read: dict[str, str | None] = {}
        self.read_all = False

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self.read[name] = self.headers.get(name)
        return default if value is None else value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        self.read_all = True
        return iter(self.headers)

    def __len__(self) -> int:
        self.read_all = True
        return len(self.headers)


_EVERY_HEADER = None
"""The read names of a preparation that iterated the headers: it matches only the very same headers."""

Names = tuple[str, ...] | None
Values = tuple[object, ...]


class PreparedMemo(Generic[T]):
    """Identity, then the names read and the values they held -> a preparation (see the module's docstring).

    Requests of one identity usually read the same names (the same code runs) and differ in the
    values (each caller's credential), so a lookup is one dict access per distinct set of names."""

    def __init__(self, max_entries: int = MEMO_ENTRIES, max_bytes: int = MEMO_BYTES) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._seen: dict[Identity, dict[Names, dict[Values, T]]] = {}
        self._entries = 0
        self._bytes = 0
        self._sighted: set[int] = set()
        """Hashes of identities seen once (a collision only means recording a preparation early)."""

    def find(self, identity: Identity, headers: Mapping[str, str]) -> T | None:
        by_names = self._seen.get(identity)
        if by_names is None:
            return None
        for names, by_values in list(by_names.items()):  # a copy: another thread may add meanwhile
            found = by_values.get(_values(names, headers))
            if found is not None:
                return found
        return None

    def recorder(self, identity: Identity, headers: Mapping[str, str]) -> HeaderReads | None:
        """`headers`, recording what a preparation reads, when `identity` has been seen before; None
        at its first sight, which is only noted: most prompts are asked once, and noting is cheaper."""
        mark = hash(identity)
        if mark in self._sighted:
            return HeaderReads(headers)
        if len(self._sighted) >= _SIGHTINGS:
            self._sighted = set()
        self._sighted.add(mark)
        return None

    def add(self, identity: Identity, reads: HeaderReads, value: T) -> None:
        size = len(identity[3])
        if size > self._max_bytes // 16:
            return  # a body this large would crowd out many others
        if self._entries >= self._max_entries or self._bytes + size > self._max_bytes:
            self.clear()
        names: Names = _EVERY_HEADER if reads.read_all else tuple(reads.read)
        values = _values(names, reads.headers) if reads.read_all else tuple(reads.read.values())
        self._entries += 1
        self._bytes += size
        self._seen.setdefault(identity, {}).setdefault(names, {})[values] = value

    def clear(self) -> None:
        self._seen = {}
        self._sighted = set()
        self._entries = self._bytes = 0


def _values(names: Names, headers: Mapping[str, str]) -> Values:
    return tuple(headers.items()) if names is None else tuple(map(headers.get, names))
