"""Per-request cache controls from headers and from the body's `cache` field.

Headers: `Cache-Control: no-cache | no-store | max-age=N | only-if-cached | stale-if-error=N`,
`x-cache-ttl: N`, `x-cache-namespace: NAME`, `x-cache-tags: a,b`. Body (as LiteLLM clients send it):
`"cache": {"no-cache": bool, "no-store": bool, "ttl": N, "s-maxage": N,
"namespace": str, "use-cache": bool}` (`s-max-age` is an alias of `s-maxage`,
as LiteLLM reads both). The body field is always stripped before the request is forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ._cache_control import directives
from ._headers import SINGLE_CONTROLS
from ._keys import NAMESPACE_PATTERN

MAX_TAGS = 16
"""Most custom tags one request may give its entry."""
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,128}")
"""A custom tag: 1-128 characters of letters, digits and `_.:/@+=-` (no commas, spaces or controls)."""


class PolicyError(ValueError):
    """A cache control the client sent cannot be honoured; answered with a 400 naming it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass(frozen=True, slots=True)
class Policy:
    no_cache: bool = False
    no_store: bool = False
    max_age: float | None = None
    only_if_cached: bool = False
    ttl: float | None = None
    namespace: str | None = None
    use_cache: bool | None = None
    stale_if_error: float | None = None
    """RFC 5861's request directive: seconds past its TTL an entry may be served when the upstream fails
    (and kept that long by the store, when this request's answer is stored)."""
    tags: frozenset[str] = frozenset()
    """Custom tags for the stored entry (`x-cache-tags`), besides the automatic ones."""


DEFAULT_POLICY = Policy()
_MAX_AGE_FIELDS = ("s-maxage", "s-max-age")
_BODY_FIELDS = {"no-cache", "no-store", "ttl", *_MAX_AGE_FIELDS, "namespace", "use-cache"}


def _shown(value: Any) -> str:
    """A client's value as an error message quotes it: short, and never the repr of a deep or huge one."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "an integer past 64 bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _seconds(param: str, value: Any) -> float:
    if isinstance(value, bool):
        raise PolicyError(param, "expected a number of seconds")
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise PolicyError(param, f"expected a number of seconds, got {_shown(value)}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise PolicyError(param, f"expected a finite number of seconds >= 0, got {_shown(value)}")
    return seconds


def _namespace(param: str, value: Any) -> str:
    if not isinstance(value, str) or not NAMESPACE_PATTERN.fullmatch(value):  # `$` would let "ns\n" through
        raise PolicyError(param, "expected 1-64 characters of letters, digits, '_', '.' or '-'")
    return value


def parse_tags(param: str, value: str) -> frozenset[str]:
    """Comma-separated custom tags, each a `TAG_PATTERN`, at most `MAX_TAGS` of them."""
    tags = frozenset(part.strip() for part in value.split(",") if part.strip())
    if len(tags) > MAX_TAGS:
        raise PolicyError(param, f"at most {MAX_TAGS} tags, got {len(tags)}")
    for tag in tags:
        if not TAG_PATTERN.fullmatch(tag):
            raise PolicyError(param, f"tag {_shown(tag)}: expected 1-128 characters of letters, digits or _.:/@+=-")
    return tags


def _flag(param: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise PolicyError(param, f"expected true or false, got {_shown(value)}")


def _cache_control(value: str) -> dict[str, Any]:
    """The `Policy` fields a request's `Cache-Control` sets (`_cache_control.directives` reads it as an
    answer's is read). A directive given twice takes its most restrictive value (the shorter age); any
    bad value of it is a `PolicyError`."""
    found = directives(value)
    values: dict[str, Any] = {}
    for name in ("no-cache", "no-store", "only-if-cached"):
        if name in found:
            values[name.replace("-", "_")] = True
    if "max-age" in found:
        values["max_age"] = min(_seconds("Cache-Control max-age", argument) for argument in found["max-age"])
    given = [argument for argument in found.get("stale-if-error", ()) if argument]  # (RFC 5861 has no bare form)
    if given:
        values["stale_if_error"] = min(_seconds("Cache-Control stale-if-error", argument) for argument in given)
    return values


def parse_policy(
    headers: Mapping[str, str], cache_field: Any, max_ttl: float | None = None, repeated: Collection[str] = ()
) -> Policy:
    """Combine header and body controls; the body wins where both set a value. A lifetime asked for
    (`ttl`, `stale_if_error`) longer than `max_ttl` is cut to it. `repeated` names the headers sent
    more than once (`read_headers`): a single-valued control among them is a `PolicyError`."""
    twice = SINGLE_CONTROLS.intersection(repeated) if repeated else None
    if twice:
        raise PolicyError(min(twice), "sent more than once; send one value")
    cache_control = headers.get("cache-control")
    header_ttl = headers.get("x-cache-ttl")
    header_namespace = headers.get("x-cache-namespace")
    header_tags = headers.get("x-cache-tags")
    if (
        cache_control is None
        and header_ttl is None
        and header_namespace is None
        and header_tags is None
        and cache_field is None
    ):
        return DEFAULT_POLICY

    values: dict[str, Any] = {}
    if cache_control:
        values.update(_cache_control(cache_control))
    if header_ttl is not None:
        values["ttl"] = _seconds("x-cache-ttl", header_ttl)
    if header_namespace is not None:
        values["namespace"] = _namespace("x-cache-namespace", header_namespace)
    if header_tags is not None:
        values["tags"] = parse_tags("x-cache-tags", header_tags)

    if cache_field is not None:
        if not isinstance(cache_field, dict):
            raise PolicyError("cache", 'expected an object such as {"no-cache": true}')
        unknown = set(cache_field) - _BODY_FIELDS
        if unknown:
            named = [_shown(name) for name in sorted(unknown)[:3]]
            raise PolicyError("cache", f"unknown control(s) {', '.join(named)}; allowed: {sorted(_BODY_FIELDS)}")
        if "no-cache" in cache_field:
            values["no_cache"] = _flag("cache.no-cache", cache_field["no-cache"]) or values.get("no_cache", False)
        if "no-store" in cache_field:
            values["no_store"] = _flag("cache.no-store", cache_field["no-store"]) or values.get("no_store", False)
        if "ttl" in cache_field:
            values["ttl"] = _seconds("cache.ttl", cache_field["ttl"])
        for name in _MAX_AGE_FIELDS:  # the strictest of the header's and the body's ages wins
            if name in cache_field:
                body_age = _seconds(f"cache.{name}", cache_field[name])
                header_age = values.get("max_age")
                values["max_age"] = body_age if header_age is None else min(body_age, header_age)
        if "namespace" in cache_field:
            values["namespace"] = _namespace("cache.namespace", cache_field["namespace"])
        if "use-cache" in cache_field:
            values["use_cache"] = _flag("cache.use-cache", cache_field["use-cache"])
    if max_ttl is not None:
        for name in ("ttl", "stale_if_error"):
            if name in values:
                values[name] = min(values[name], max_ttl)
    return Policy(**values)
