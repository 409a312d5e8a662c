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
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

DEFAULT_VOLATILE_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier", "cache"})
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_SIGV4_KEY_ID = re.compile(r"Credential=([^/,\s]+)/")
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


DefaultDigest = Callable[[KeyRequest], str]
KeyBuilder = Callable[[KeyRequest, DefaultDigest], str]
"""A custom key builder: `(request, default_digest) -> str`. It may call `default_digest(request)`."""


def default_digest(request: KeyRequest) -> str:
    return digest_of(
        request.family,
        request.endpoint,
        request.model,
        request.target,
        request.query,
        request.body,
        request.volatile_fields,
    )


def digest_of(
    family: str,
    endpoint: str,
    model: str | None,
    target: str | None,
    query: tuple[tuple[str, str], ...],
    body: Mapping[str, Any],
    volatile_fields: frozenset[str],
) -> str:
    """SHA-256 of the canonical form; the engine calls it directly so a hit builds no `KeyRequest`."""
    kept = {k: v for k, v in body.items() if k not in volatile_fields}
    canonical = orjson.dumps(
        {"api": family, "endpoint": endpoint, "model": model, "target": target, "query": query, "body": kept},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def key_query(query: str) -> tuple[tuple[str, str], ...]:
    if not query:
        return ()
    return tuple(sorted((k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in QUERY_IGNORED))


def credential_of(headers: Mapping[str, str], query: str) -> str | None:
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value:
            if value.startswith("AWS4-HMAC-SHA256 "):  # SigV4 (Bedrock): the signature changes, the key id does not
                found = _SIGV4_KEY_ID.search(value)
                if found is None:
                    return value
                # A temporary credential's session token is secret; a long-term key id alone is not.
                return f"aws:{found.group(1)}:{headers.get('x-amz-security-token') or ''}"
            return value[7:] if value[:7].lower() == "bearer " else value
    if "key=" in query:
        for name, value in parse_qsl(query):
            if name == "key" and value:
                return value
    return None


def _hash_scope(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


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


def scope_of(scope: str, headers: Mapping[str, str], query: str, memo: dict[str, str] | None = None) -> str:
    """The isolation scope of a request: `credential` (default), `shared` or `header:<name>`."""
    if scope == "shared":
        return "shared"
    if scope == "credential":
        credential = credential_of(headers, query)
        return "anon" if credential is None else "c" + _memo_hash(credential, memo)
    header = headers.get(scope[len("header:") :])
    return "anon" if not header else "h" + _memo_hash(header, memo)


def validate_scope(scope: str) -> str:
    if scope in ("credential", "shared") or (scope.startswith("header:") and len(scope) > len("header:")):
        return scope
    raise ValueError(f"scope must be 'credential', 'shared' or 'header:<name>', not {scope!r}")


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
