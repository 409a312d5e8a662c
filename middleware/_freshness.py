"""What an upstream's `Cache-Control` lets the cache do with its answer (RFC 9111, as a shared cache
that cannot revalidate reads it): `no-store` is never stored; `private` only in an entry scoped to
the caller's own credential; `s-maxage` (else `max-age`), less the answer's `Age`, bounds the TTL,
and an answer stale on arrival is not stored. `no-cache`, `must-revalidate` and their kin ask for a
revalidation an LLM answer cannot have (no validator; a POST sent again is a new generation), and
every provider stream carries them: they are not read. Neither are the directives a family's API
sends with every answer of a form (its `AnswerHeaders`, which its hits replay): a constant says
nothing about one answer. Runs once per miss, never on a hit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ._cache_control import Directives, directives
from ._keys import ANONYMOUS
from ._settings import CacheSettings
from ._types import CacheRequest
from .providers import Endpoint

MAX_DELTA = 2**31
"""The largest delta-seconds a cache need honour (RFC 9111 1.2.2); longer ones are read as it."""

_DELTA = re.compile(r"[0-9]+")


def _delta(argument: str) -> int:
    """Seconds of a delta-seconds argument; an invalid one is 0 (RFC 9111 4.2.1: "stale")."""
    if not _DELTA.fullmatch(argument):
        return 0
    return MAX_DELTA if len(argument) > 10 else min(int(argument), MAX_DELTA)


def _constant(endpoint: Endpoint, media_type: str) -> Directives | None:
    """The directives `endpoint`'s API sends with every answer in `media_type`, if it sends any."""
    for name, value in endpoint.answer_headers.of(media_type):
        if name == b"cache-control":
            return directives(value.decode("latin-1"))
    return None


def upstream_storage(
    endpoint: Endpoint, media_type: str, raw: Iterable[tuple[str, str]], own_credential: bool
) -> tuple[str | None, float | None]:
    """(why the answer may not be stored, the most seconds it may be stored) by the upstream's
    `Cache-Control` and `Age` headers (`raw`: every pair, as sent); (None, None) when they say
    nothing. `own_credential`: the entry is scoped to the credential of the caller it answered."""
    values, ages = [], []
    for name, value in raw:
        lowered = name.lower()
        if lowered == "cache-control":
            values.append(value)
        elif lowered == "age":
            ages.append(value)
    if not values:
        return None, None
    found = directives(",".join(values))
    if found == _constant(endpoint, media_type):
        return None, None
    if "no-store" in found:
        return "upstream-no-store: the upstream's Cache-Control says no-store", None
    if not own_credential and "" in found.get("private", ()):  # (`private="field"` names headers a hit never sends)
        return "upstream-private: the upstream's Cache-Control says private, and the entry would be shared", None
    ages_named = found.get("s-maxage") or found.get("max-age")
    if ages_named is None:
        return None, None
    lifetime = min(_delta(argument.strip()) for argument in ages_named)
    age = _delta(ages[0].strip()) if len(ages) == 1 else 0
    if lifetime - age <= 0:
        return f"upstream-max-age: the upstream's answer is stale on arrival (max-age {lifetime}, age {age})", None
    return None, float(lifetime - age)


def upstream_rules(
    settings: CacheSettings, request: CacheRequest, media_type: str, raw: Iterable[tuple[str, str]]
) -> tuple[str | None, float | None]:
    """`upstream_storage` for an answer to `request` in `media_type`, as the settings read it (not at
    all with `upstream_cache_control: ignore`). Only the credential scope keys an entry by the
    credential the upstream answered: a `header:` or function scope may name a whole tenant."""
    if settings.upstream_cache_control == "ignore":
        return None, None
    own = settings.scope == "credential" and request.scope != ANONYMOUS
    return upstream_storage(request.endpoint, media_type, raw, own)


def capped_ttl(ttl: float | None, fresh_for: float | None, default: float | None) -> float | None:
    """`ttl` (None: `default`, the request's or the settings') cut to `fresh_for` seconds, if given."""
    if fresh_for is None:
        return ttl
    base = ttl if ttl is not None else default
    return fresh_for if base is None else min(base, fresh_for)


__all__ = ["capped_ttl", "upstream_rules", "upstream_storage"]
