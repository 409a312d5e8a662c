"""Canonical request form, hashing, scopes and pluggable key builders.

A key is `{key_prefix}{namespace}:{scope}:{digest}`:

- `key_prefix` is the operator's version tag; bumping it invalidates everything at once;
- `namespace` comes from the request (`x-cache-namespace`, body `cache.namespace`) or is `default`;
- `scope` isolates callers: a hash of the credential by default, never the credential itself;
- `digest` is SHA-256 over the canonical form of the request.

The canonical form covers the API family, the endpoint, the model, the query
string (minus credentials and the stream form) and the JSON body with keys
sorted recursively and compact separators, minus a deny-list of volatile
fields. It is a deny-list on purpose: an unknown provider parameter changes
the key, so a new knob can never be served an answer computed without it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .providers.auth import AmbiguousCredential, Auth

DEFAULT_VOLATILE_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier", "cache"})
QUERY_IGNORED = frozenset({"key", "alt", "$alt"})  # Gemini's API key and stream form
DEFAULT_NAMESPACE = "default"
SCOPE_MEMO_LIMIT = 1024
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """What a key builder sees: the parsed request, before volatile fields are dropped."""

    family: str
    endpoint: str
    model: str | None
    target: str | None
    """The model or deployment named by the path (Gemini, Azure), which the body may not repeat."""
    body: Mapping[str, Any]
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    volatile_fields: frozenset[str]
    exact: bool = False
    """The body held numbers a double cannot carry: they are `orjson.Fragment`s of their text (see `parse_body`)."""


DefaultDigest = Callable[[KeyRequest], str]
KeyBuilder = Callable[[KeyRequest, DefaultDigest], str]
"""A custom key builder: `(request, default_digest) -> str`. It may call `default_digest(request)`.
Its answer chooses what is compared, never who may read it: the engine hashes it under its own
prefix, namespace and scope (`built_digest`)."""


class KeyFailure(Exception):
    """The request's key could not be computed (a key builder raised or answered something unusable)."""


def default_digest(request: KeyRequest) -> str:
    return digest_of(
        request.family,
        request.endpoint,
        request.model,
        request.target,
        request.query,
        request.body,
        request.volatile_fields,
        request.exact,
    )


def built_digest(builder: KeyBuilder, request: KeyRequest) -> str:
    """SHA-256 of a custom builder's answer, which must be ASCII text; `KeyFailure` otherwise."""
    try:
        value = builder(request, default_digest)
    except Exception as error:
        raise KeyFailure(f"the key builder raised {type(error).__name__}") from error
    if not isinstance(value, str):
        raise KeyFailure(f"the key builder returned {type(value).__name__}, not str")
    if not value.isascii():
        raise KeyFailure("the key builder returned non-ASCII text")
    return hashlib.sha256(_BUILT + value.encode("ascii")).hexdigest()


def digest_of(
    family: str,
    endpoint: str,
    model: str | None,
    target: str | None,
    query: tuple[tuple[str, str], ...],
    body: Mapping[str, Any],
    volatile_fields: frozenset[str],
    exact: bool = False,
) -> str:
    """SHA-256 of the canonical form; the engine calls it directly so a hit builds no `KeyRequest`.

    A body parsed by `parse_body`'s exact path is marked in the canonical form (`"numbers": "exact"`),
    so its form can never equal one of the fast path's."""
    kept = {k: v for k, v in body.items() if k not in volatile_fields}
    form = {"api": family, "endpoint": endpoint, "model": model, "target": target, "query": query, "body": kept}
    if exact:
        form["numbers"] = "exact"
    return hashlib.sha256(orjson.dumps(form, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_body(body: bytes) -> tuple[Any, bool]:
    """(the JSON body, parsed without loss; True when it took the exact path). Raises ValueError.

    orjson reads numbers as doubles (and refuses integers beyond 64 bits), so two bodies that differ
    only past a double's precision would parse alike. A number token is carried exactly by a double
    when it has at most 15 significant digits and an exponent of at most two digits (then it is a
    normal double too), so a body without a longer token is parsed by orjson (the fast path). Any
    other body is parsed by the standard library, keeping every number a double cannot carry as an
    `orjson.Fragment` of its own text, which the canonical form and a re-encoded body then repeat
    verbatim. The scan cannot tell a number from digits inside a string: those take the exact path
    too, which is slower but never wrong."""
    if _may_lose_numbers(body):
        return _loads_exact(body), True
    return orjson.loads(body), False


def _may_lose_numbers(body: bytes) -> bool:
    """Whether `body` may hold a number token of 16 or more `[0-9.]` characters, or an exponent of
    three or more digits. Both hold three digits in a row, so a body without any is settled by one
    search; each run of three digits is then looked at (at most `_RUNS_LOOKED_AT`, then: maybe)."""
    marks = body.translate(_NUMBER_MARKS)
    search = _THREE_DIGITS.search  # a literal pattern: faster than bytes.find here
    match = search(marks)
    looked_at = 0
    while match is not None:
        found = match.start()
        looked_at += 1
        if looked_at > _RUNS_LOOKED_AT:
            return True
        start = found
        while start and marks[start - 1] in _RUN:
            start -= 1
        end = _RUN_PATTERN.match(marks, found).end()  # type: ignore[union-attr]
        if end - start >= 16:
            return True
        sign = start >= 2 and marks[start - 1] == _SIGN
        if start and marks[start - 1 - sign] == _EXPONENT:
            return True
        match = search(marks, end)
    return False


def _loads_exact(body: bytes) -> Any:
    try:
        return json.loads(
            body.decode("utf-8"), parse_float=_exact_float, parse_int=_exact_int, parse_constant=_no_constant
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _exact_float(text: str) -> float | orjson.Fragment:
    value = float(text)
    try:
        if math.isfinite(value) and Decimal(repr(value)) == Decimal(text):
            return value  # the double's shortest form has the token's exact value: nothing is lost
    except ArithmeticError:  # an exponent beyond what Decimal holds
        pass
    return orjson.Fragment(text)


def _exact_int(text: str) -> int | orjson.Fragment:
    return int(text) if len(text) <= 18 else orjson.Fragment(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number_marks() -> bytes:
    table = bytearray(b" " * 256)
    for char in b"0123456789":
        table[char] = ord("d")
    table[ord(".")] = ord(".")
    for char in b"eE":
        table[char] = ord("e")
    for char in b"+-":
        table[char] = ord("s")
    return bytes(table)


_NUMBER_MARKS = _number_marks()
"""`bytes.translate` table: digits become `d`, exponent marks `e`, signs `s`, `.` stays, the rest a space."""
_RUN = frozenset(b"d.")
_RUN_PATTERN = re.compile(rb"[d.]*")
_THREE_DIGITS = re.compile(rb"ddd")
_EXPONENT = ord("e")
_SIGN = ord("s")
_RUNS_LOOKED_AT = 32
_BUILT = b"key_builder\x00"


def key_query(query: str) -> tuple[tuple[str, str], ...]:
    if not query:
        return ()
    return tuple(sorted((k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in QUERY_IGNORED))


ANONYMOUS = "anon"
"""The scope segment of requests without an identity, when the operator lets them share (`anonymous: shared`)."""


class NoIdentity(Exception):
    """The request carries no identity the scope can read: it is not cached (or shares `anon`).

    `anonymous` is True when the request simply has none (no credential, no header, the scope
    function returned None): `anonymous: shared` lets those share. False when it is ambiguous or
    the scope function failed: those always bypass."""

    def __init__(self, reason: str, anonymous: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.anonymous = anonymous


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    """What a scope function sees: `scope(request) -> identity or None`.

    `asgi_scope` is the raw ASGI scope when the call comes through `CacheMiddleware` (so the
    function can read `scope["user"]` set by Starlette's `AuthenticationMiddleware`, or
    `scope["state"]`); None in the httpx transports."""

    path: str
    query: str
    headers: Mapping[str, str]
    asgi_scope: Mapping[str, Any] | None = None


ScopeFunction = Callable[[ScopeRequest], "str | None"]


def _hash_scope(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _memo_hash(value: str, memo: dict[str, str] | None) -> str:
    """`_hash_scope(value)`, remembered in `memo` (bounded) since a client sends the same credential each time."""
    if memo is None:
        return _hash_scope(value)
    hashed = memo.get(value)
    if hashed is None:
        if len(memo) >= SCOPE_MEMO_LIMIT:
            memo.clear()
        hashed = memo[value] = _hash_scope(value)
    return hashed


def credential_scope(
    auth: Auth,
    headers: Mapping[str, str],
    query: str,
    repeated: Collection[str] = (),
    memo: dict[str, str] | None = None,
) -> str:
    """`c` + the hash of the credential the request's provider authenticates (see `providers/auth.py`)."""
    try:
        credential = auth.credential(headers, query, repeated)
    except AmbiguousCredential as error:
        raise NoIdentity(str(error), anonymous=False) from None
    if credential is None:
        raise NoIdentity(f"no credential ({', '.join(auth.sources)})")
    return "c" + _memo_hash(credential, memo)


def header_scope(
    name: str, headers: Mapping[str, str], repeated: Collection[str] = (), memo: dict[str, str] | None = None
) -> str:
    """`h` + the hash of the `header:<name>` scope's header."""
    if name in repeated:
        raise NoIdentity(f"the {name} header appears more than once", anonymous=False)
    value = headers.get(name)
    if not value:
        raise NoIdentity(f"no {name} header")
    return "h" + _memo_hash(value, memo)


def function_scope(function: ScopeFunction, request: ScopeRequest, memo: dict[str, str] | None = None) -> str:
    """`u` + the hash of the identity a scope function returns (never stored in clear)."""
    try:
        identity = function(request)
    except Exception as error:
        raise NoIdentity(f"the scope function raised {type(error).__name__}", anonymous=False) from error
    if identity is None or identity == "":
        raise NoIdentity("the scope function returned no identity")
    if not isinstance(identity, str):
        raise NoIdentity(f"the scope function returned {type(identity).__name__}, not str", anonymous=False)
    return "u" + _memo_hash(identity, memo)


def validate_scope(scope: Any) -> str | ScopeFunction:
    """`credential`, `shared`, `header:<name>`, a scope function, or a dotted path to one."""
    if callable(scope):
        return scope  # type: ignore[no-any-return]
    if not isinstance(scope, str):
        raise ValueError(f"scope must be a string or a function, not {type(scope).__name__}")
    if scope in ("credential", "shared"):
        return scope
    if scope.startswith("header:") and len(scope) > len("header:"):
        return scope.lower()  # adapters hand the engine lower-cased header names
    try:
        return load_callable(scope)
    except ValueError as error:
        raise ValueError(
            "scope must be 'credential', 'shared' or 'header:<name>', or a scope function's dotted path "
            f"'package.module:function' ({error})"
        ) from None


def compose_key(key_prefix: str, namespace: str, scope: str, digest: str) -> str:
    return f"{key_prefix}{namespace}:{scope}:{digest}"


def namespace_prefix(key_prefix: str, namespace: str) -> str:
    return f"{key_prefix}{namespace}:"


def load_callable(path: str) -> Callable[..., Any]:
    """Import `package.module:function` or `package.module.function`."""
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"expected 'package.module:function' or 'package.module.function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} for {path!r}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as error:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from error
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target  # type: ignore[no-any-return]


def resolve_key_builder(builder: KeyBuilder | str | None) -> KeyBuilder | None:
    if builder is None or callable(builder):
        return builder
    return load_callable(builder)


def volatile_set(extra: Iterable[str], endpoint_fields: frozenset[str]) -> frozenset[str]:
    return DEFAULT_VOLATILE_FIELDS | endpoint_fields | frozenset(extra)
