"""Canonical request form, hashing, scopes and pluggable key builders.

A key is `{key space}{namespace}:{scope}:{digest}`:

- the key space is the operator's `key_prefix` (its version tag; bumping it invalidates everything at
  once), as `key_space` makes it: one `:`-terminated segment, so no cache's keys begin another's;
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
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from .._wire import GEMINI, AmbiguousCredential, Auth
from . import _exact_json as exact_json

KEY_FORMAT = 1
"""The version of the canonical form below. Changing the form changes every key, orphaning every
stored entry (they expire by their TTL), so it is done on purpose: bump this, and replace the golden
keys (tests/middleware/test_golden_keys.py). Format 1 is implicit: its form carries no version."""
DEFAULT_VOLATILE_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier", "cache"})
QUERY_IGNORED = frozenset(GEMINI.query)
"""Query parameters that carry a credential (Gemini's `key`, Google's `access_token`): they scope the entry
(`Auth.credential`) and are never keyed in clear. A family's other query rules: `Endpoint.key_query`."""
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
    so its form can never equal one of the fast path's. Keys are sorted in the conversation only
    (`CONVERSATION_FIELDS`)."""
    kept = {k: v for k, v in body.items() if k not in volatile_fields}
    for name, value in kept.items():
        if name not in CONVERSATION_FIELDS and isinstance(value, (dict, list)):
            kept[name] = orjson.Fragment(orjson.dumps(value))  # in its own key order (written as is)
    form = {"api": family, "endpoint": endpoint, "model": model, "target": target, "query": query, "body": kept}
    if exact:
        form["numbers"] = "exact"
    return hashlib.sha256(orjson.dumps(form, option=orjson.OPT_SORT_KEYS)).hexdigest()


CONVERSATION_FIELDS = frozenset({"messages", "input", "contents", "prompt", "system", "instructions"})
"""Top-level body fields that hold the conversation: the canonical form sorts their keys at every
level. Every other object (tools, a structured output's schema, generation settings) is written in
its own key order, because a provider may answer in it: a structured output comes in the order of
its schema's properties, and a model told to give its `reasoning` before its `answer` answers
differently. An object already in sorted order is written as the sorted form writes it, so its key
is the same either way."""


def parse_body(body: bytes) -> tuple[Any, bool]:
    """(the JSON body, parsed without loss; True when it took the exact path). Raises ValueError.

    The exact path's canonical form is marked (`digest_of(..., exact=True)`), so it can never equal
    a fast-path form. See `exact_json.loads_every_number`."""
    return exact_json.loads_every_number(body)


_BUILT = b"key_builder\x00"


def key_query(query: str) -> tuple[tuple[str, str], ...]:
    """The query's (name, value) pairs, sorted by name, without the credentials (`QUERY_IGNORED`).

    Only by name: a server reads a name sent twice as its first value, its last or all in order,
    so the values of one name keep the order they were sent in (`?v=1&v=2` is not `?v=2&v=1`)."""
    if not query:
        return ()
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in QUERY_IGNORED]
    return tuple(sorted(pairs, key=_name))


def _name(pair: tuple[str, str]) -> str:
    return pair[0]


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
    """`c` + the hash of the credential the request's provider authenticates (see `llm_cache/_wire.py`)."""
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


_ONE_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+:")


def key_space(key_prefix: str) -> str:
    """What a cache's keys, clears and tag names begin with, for its `key_prefix`.

    Two caches on one store must never reach each other's entries, yet `v1` begins `v10` and `app:`
    begins `app:x:`: joined as they came, one's keys, flushes and tag names were the other's. So the
    key space holds exactly one `:`, at its end; then no space begins another, and whatever follows
    (a namespace, a tag) cannot make one into another. A prefix of that form (`v1:`, `prod-v2:`, the
    usual one) is its own space, keys unchanged; any other (`v1`, `prod:v1:`) is percent-quoted and
    ends in `~:`, a form no such prefix has. The empty prefix is the whole store (its flush clears
    everything), as before.
    """
    if not key_prefix or _ONE_SEGMENT.fullmatch(key_prefix):
        return key_prefix
    return quote(key_prefix, safe="") + "~:"


def compose_key(key_space: str, namespace: str, scope: str, digest: str) -> str:
    """A key in `key_space` (from `key_space(key_prefix)`, never the raw prefix)."""
    return f"{key_space}{namespace}:{scope}:{digest}"


def key_owner(key: str) -> str:
    """Who holds `key` in a bounded store: its key space and scope (`v1:c3f...`), never its namespace,
    which a caller picks freely (a flood spread over namespaces is still one owner's). Every key
    `compose_key` makes has three `:` segments after its key space's one. A key of another form (a
    shared registry entry, a probe) is its second-to-last segment's, or the empty owner's."""
    parts = key.split(":")
    if len(parts) == 4:
        return f"{parts[0]}:{parts[2]}"
    return parts[1] if len(parts) == 3 else ""


def namespace_prefix(key_space: str, namespace: str) -> str:
    return f"{key_space}{namespace}:"


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
