"""Facts about the providers' wire formats that both the cache and the router need, in one place.

- which headers carry a credential, and which credential each API family authenticates (`Auth`);
- the header a family expects when we hold the key (`Auth.header`);
- which API family a request path speaks (the path patterns the provider matchers are built from);
- how each family shapes an error body, so SDKs raise their usual exceptions;
- `${VAR}`, `${VAR:-default}` and `os.environ/VAR` references in config values (an unset
  `os.environ/VAR` reads as None where the field is optional: `expand_optional`);
- which HTTP library (`httpx2` or legacy `httpx`) built a request, and how its URL names the upstream;
- which `content-encoding`s a body is read through, never decoded past a bound (`decompressor`, `decoded`).

This module is neutral: it imports neither `llm_cache.middleware` nor `llm_cache.router`.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import httpx
import httpx2

Family = Literal["openai", "azure", "anthropic", "gemini", "bedrock"]

# -- credentials ----------------------------------------------------------------------------------

_SIGV4 = "AWS4-HMAC-SHA256 "
_SIGV4_KEY_ID = re.compile(r"Credential=([^/,\s]+)/")


class AmbiguousCredential(ValueError):
    """The request names more than one credential (or one header twice): its identity is unknown."""


@dataclass(frozen=True, slots=True)
class Auth:
    """Where one API family carries the credential the provider authenticates.

    `headers` are read in order; `authorization` holds a `Bearer` token (or a SigV4 signature,
    whose access key id and session token are the credential, not the per-request signature).
    `query` names the query parameters that carry the credential (Gemini's `key`, and Google's
    `access_token` and its older name `oauth_token`, an OAuth token as `Authorization: Bearer` holds).
    """

    headers: tuple[str, ...]
    query: tuple[str, ...] = ()

    def credential(self, headers: Mapping[str, str], query: str, repeated: Collection[str] = ()) -> str | None:
        """The credential, or None when the request carries none (or only empty ones).

        Raises `AmbiguousCredential` when a credential header appears more than once (`repeated`
        names the headers that did) or two places carry different credentials."""
        found: str | None = None
        for name in self.headers:
            value = headers.get(name)
            if name in repeated:
                raise AmbiguousCredential(f"the {name} header appears more than once")
            if value and name == "authorization":  # inline: this runs on every request
                value = value[7:].strip() if value[:7].lower() == "bearer " else _other_scheme(value, headers)
            if not value:
                continue
            if found is not None and value != found:
                raise AmbiguousCredential(f"two different credentials ({', '.join(self.sources)})")
            found = value
        # (a name may come escaped, `%6Bey=`: the provider decodes it, so the parse runs for any escape)
        if self.query and ("%" in query or any(f"{name}=" in query for name in self.query)):
            values = {value for name, value in parse_qsl(query) if name in self.query and value}
            if len(values) > 1 or (values and found is not None and found not in values):
                raise AmbiguousCredential(f"two different credentials ({', '.join(self.sources)})")
            if values:
                found = values.pop()
        return found or None

    def header(self, api_key: str) -> tuple[str, str]:
        """The header that presents `api_key` to this family: its first credential header."""
        name = self.headers[0]
        return (name, f"Bearer {api_key}") if name == "authorization" else (name, api_key)

    @property
    def sources(self) -> tuple[str, ...]:
        return self.headers + tuple(f"{name}=" for name in self.query)


def _other_scheme(value: str, headers: Mapping[str, str]) -> str:
    """The credential in a non-Bearer `authorization` value: SigV4's key id and session token, or
    the whole value for any other scheme."""
    if value.startswith(_SIGV4):  # the signature changes on every request, the key id does not
        found = _SIGV4_KEY_ID.search(value)
        if found is None:
            return value
        # A temporary credential's session token is secret; a long-term key id alone is not.
        return f"aws:{found.group(1)}:{headers.get('x-amz-security-token') or ''}"
    return value


OPENAI = Auth(("authorization",))
"""OpenAI and OpenAI-compatible servers: `Authorization: Bearer <key>`."""
AZURE = Auth(("api-key", "authorization"))
"""Azure OpenAI: `api-key`, or `Authorization: Bearer` with a Microsoft Entra token."""
ANTHROPIC = Auth(("x-api-key", "authorization"))
"""Anthropic: `x-api-key`, or `Authorization: Bearer` with an OAuth token (the SDK's `auth_token`)."""
GEMINI = Auth(("x-goog-api-key", "authorization"), query=("key", "access_token", "oauth_token"))
"""Gemini: `x-goog-api-key` or `?key=`, or an OAuth token (Vertex AI) in `Authorization: Bearer` or, as
Google's system parameter, `?access_token=`."""
BEDROCK = Auth(("authorization",))
"""Bedrock: a SigV4 signature (access key id and session token), or a Bedrock API key as a Bearer token."""

AUTH: Mapping[str, Auth] = {
    "openai": OPENAI,
    "azure": AZURE,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
    "bedrock": BEDROCK,
}
"""Family -> where its credential is."""

CREDENTIAL_HEADERS: tuple[str, ...] = tuple(dict.fromkeys(name for auth in AUTH.values() for name in auth.headers))
"""Every header any family reads a credential from (lower case)."""


CREDENTIALS_FOR = "llm_cache.credentials_for"
"""A request extension: the base URL an operator's key in the request's credential headers is for
(a gateway's `upstreams.<family>.api_key`). A router sends that key to no URL outside it."""

OPERATORS_KEY = "llm_cache.operators_key"
"""A response extension the router sets (True) on an answer sent on a key every caller shares (a
deployment's own `api_key`, or `CREDENTIALS_FOR`'s): a gateway relays it as one on its owner's key
(no header naming the owner's account, a refusal of the key is the gateway's to explain)."""


def under(url: str, base: str) -> bool:
    """Whether `url` is `base` or below it (`base` + `/`, `?` or nothing more)."""
    base = base.rstrip("/")
    return url == base or url.startswith((f"{base}/", f"{base}?"))


def without_query_credential(query: str) -> str:
    """`query` without the credentials a query string may carry (Gemini's `key=`, Google's `access_token=`,
    their names escaped or not: the provider decodes them, as `Auth.credential` does)."""
    names = GEMINI.query
    if "%" not in query and not any(f"{name}=" in query for name in names):
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k not in names]
    return query if len(kept) == len(pairs) else urlencode(kept)  # (a query naming none is forwarded as written)


def masked_query_credential(query: str) -> str:
    """`query` as sent, with the value of each credential parameter (Gemini's `key=`, Google's
    `access_token=`, their names percent-encoded or not) replaced by `***`: what a log line may show of a
    request's query."""
    names = GEMINI.query
    if "=" not in query:
        return query
    pairs = query.split("&")
    for i, pair in enumerate(pairs):
        key, equals, _ = pair.partition("=")
        if equals and unquote_plus(key) in names:
            pairs[i] = f"{key}=***"
    return "&".join(pairs)


_SECRET_QUERY = re.compile(r"(key|sig|signature|token|secret|password|credential)", re.IGNORECASE)
"""Query parameters of a URL that hold a secret (`?key=`, `api-key=`, an Azure SAS's `sig=`)."""


def masked_url(url: str) -> str:
    """`url` with its user info's password (up to the last `@`; a user alone may be a token too) and its
    secret query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "****"  # not a URL we can read: nothing of it is shown
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        netloc = f"{userinfo.partition(':')[0]}:****@{host}" if ":" in userinfo else f"****@{host}"
    query = "&".join(
        f"{name}=****" if equals and _SECRET_QUERY.search(name) else f"{name}{equals}{value}"
        for name, equals, value in (pair.partition("=") for pair in parts.query.split("&"))
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def auth_header(family: str, api_key: str) -> tuple[str, str]:
    """The header that presents `api_key` to `family` (OpenAI's `Authorization: Bearer` for unknown ones)."""
    return AUTH.get(family, OPENAI).header(api_key)


# -- paths ----------------------------------------------------------------------------------------


def suffix_pattern(suffix: str) -> re.Pattern[str]:
    """Matches paths ending in `suffix` under any base path (OpenAI-compatible servers, proxies)."""
    return re.compile(r"^(?:/.*)?" + re.escape(suffix) + r"/?$")


def azure_pattern(suffix: str) -> re.Pattern[str]:
    """Azure's `/openai/deployments/{deployment}/<suffix>` under any base path."""
    return re.compile(r"^(?:/.*)?/openai/deployments/(?P<deployment>[^/]+)/" + re.escape(suffix) + r"/?$")


def gemini_pattern(methods: str) -> re.Pattern[str]:
    """`.../models/{model}:{method}` (also `tunedModels/`, Vertex `publishers/google/models/`)."""
    return re.compile(r"^(?:/.*)?/(?:tunedModels|models)/(?P<model>[^/:]+):(?P<method>" + methods + r")/?$")


def bedrock_pattern(action: str) -> re.Pattern[str]:
    """Bedrock's `/model/{model id}/<action>` under any base path."""
    return re.compile(r"^(?:/.*?)?/model/(?P<model>.+?)/" + re.escape(action) + r"/?$")


ANTHROPIC_MESSAGES = "/v1/messages"
"""The suffix of Anthropic's messages path (and of `.../count_tokens` beneath it)."""
_ANTHROPIC_API = re.compile(r"^(?:/.*)?" + re.escape(ANTHROPIC_MESSAGES) + r"(?:/count_tokens)?/?$")
_GEMINI_API = gemini_pattern(r"predict|[a-z]+[A-Z][A-Za-z]*")
"""Gemini's and Vertex's model methods are camelCase (`generateContent`, `countTokens`) or `predict`;
a lowercase word after a colon is a model's tag (`GET /v1/models/llama3:latest`), not a method."""
_AZURE_API = re.compile(r"^(?:/.*)?/openai/deployments/(?P<deployment>[^/]+)/")


def api_of(path: str) -> Literal["openai", "anthropic", "gemini"]:
    """The request format a path speaks: Anthropic messages, a Gemini `models/{m}:{method}` call,
    or OpenAI's (Azure's deployments speak OpenAI's too)."""
    if _ANTHROPIC_API.match(path):
        return "anthropic"
    if _GEMINI_API.match(path):
        return "gemini"
    return "openai"


def is_azure(path: str) -> bool:
    """An Azure OpenAI path: a deployment's (`/openai/deployments/{d}/...` under any base path) or
    its v1 API's (`/openai/v1/...`)."""
    return path.startswith("/openai/") or _AZURE_API.match(path) is not None


def model_in_path(path: str) -> str | None:
    """The model a path names: Gemini's `models/{model}:...` or an Azure deployment."""
    found = _GEMINI_API.match(path) or _AZURE_API.match(path)
    if found is None:
        return None
    return found.group("model") if found.re is _GEMINI_API else found.group("deployment")


# -- errors ---------------------------------------------------------------------------------------

_ANTHROPIC_ERRORS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_document(
    family: str | None, status: int, message: str, code: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """An error shaped the way `family`'s API shapes errors (OpenAI's for any other), so SDKs raise
    their usual exceptions. `code` and `kind` fill OpenAI's `code` and `type` fields."""
    if family == "anthropic":
        anthropic_kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": anthropic_kind, "message": message}}
    if family == "gemini":
        return {"error": {"code": status, "message": message, "status": _GEMINI_STATUS.get(status, "UNKNOWN")}}
    kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# -- environment references in config values ------------------------------------------------------

ENV_PREFIX = "os.environ/"
_ENV_WHOLE = re.compile(r"^os\.environ/(\S+)$")
_ENV_INLINE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariable(LookupError):
    """A config value names an environment variable that is not set (and gives no fallback)."""

    def __init__(self, name: str, reference: str) -> None:
        super().__init__(name)
        self.name = name
        self.reference = reference
        """How the value wrote it: `os.environ/NAME` or `${NAME}`."""


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """`value` with its environment references replaced: `os.environ/NAME` (LiteLLM's syntax, the
    whole value) and `${NAME}` / `${NAME:-default}` (anywhere in it). One pass: text read from the
    environment is never expanded again. Raises `UnsetVariable`."""
    whole = _ENV_WHOLE.match(value.strip())
    if whole:
        name = whole.group(1)
        if name not in env:
            raise UnsetVariable(name, f"{ENV_PREFIX}{name}")
        return env[name]
    if "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise UnsetVariable(name, f"${{{name}}}")

    return _ENV_INLINE.sub(replace, value)


def expand_optional(value: str, env: Mapping[str, str]) -> str | None:
    """`expand_env`, except that a whole `os.environ/NAME` whose variable is unset reads as None, as
    LiteLLM reads it: the field it fills decides whether a value was required. An unset `${NAME}`
    without a default still raises `UnsetVariable` (that syntax can say its own fallback)."""
    try:
        return expand_env(value, env)
    except UnsetVariable as unset:
        if unset.reference.startswith(ENV_PREFIX):
            return None
        raise


# -- encoded bodies -------------------------------------------------------------------------------


def decompressor(encoding: str | None) -> Any:
    """A zlib decompressor for a `content-encoding` the cache and the router read (gzip, deflate), None
    for identity; ValueError for any other. Its output is bounded by the caller (`max_length`): an
    upstream's gzip can decode to a thousand times its size."""
    encoding = (encoding or "identity").lower().strip()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    if encoding == "identity":
        return None
    raise ValueError(f"content-encoding {encoding} is not supported")


def decoded(encoding: str | None, raw: bytes, limit: int) -> bytes | None:
    """`raw` decoded, or None when it decodes to more than `limit` bytes. A body whose encoding is not
    read, or that does not decode, is answered as it is."""
    try:
        decoder = decompressor(encoding)
    except ValueError:
        return raw
    if decoder is None:
        return raw if len(raw) <= limit else None
    try:
        out: bytes = decoder.decompress(raw, limit + 1)
    except zlib.error:
        return raw
    return out if len(out) <= limit else None


# -- HTTP libraries -------------------------------------------------------------------------------

_LIBRARIES: dict[type, ModuleType] = {httpx2.Request: httpx2, httpx.Request: httpx}


def library_of(request: Any) -> ModuleType:
    """`httpx2` or `httpx` (or an API-compatible library), whichever built this request."""
    lib = _LIBRARIES.get(type(request))
    return lib if lib is not None else sys.modules[type(request).__module__.partition(".")[0]]


def upstream_name(url: Any) -> str:
    """How an httpx URL names its upstream: `scheme://host:port/path`, no query."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.partition(b'?')[0].decode('ascii')}"


DefaultTransports = dict[tuple[str, bool, int], Any]
"""The HTTP transports an owner made with `default_transport`, by (library, async, process id)."""


def default_transport(owner: DefaultTransports, lib: ModuleType, is_async: bool) -> Any:
    """`lib`'s own HTTP transport, created on first use and kept in `owner` (who closes it).

    A forked child gets one of its own: the parent's pooled connections stay the parent's (two
    processes writing requests on one connection read each other's answers)."""
    key = (lib.__name__, is_async, os.getpid())
    transport = owner.get(key)
    if transport is None:  # threads asking at once all take the first one kept: `owner` closes each it holds
        transport = owner.setdefault(key, lib.AsyncHTTPTransport() if is_async else lib.HTTPTransport())
    return transport


# -- a 2xx that is an error ----------------------------------------------------------------

_AWS_ERROR_KEYS = ("__type", "Message")


def error_object(response: Mapping[str, Any]) -> str | None:
    """The reason when a 2xx JSON body is an error object in any family's form, else None:
    `{"error": ...}` (OpenAI and compatibles, Gemini), `{"type": "error", ...}` (Anthropic),
    AWS's `{"__type": ...}` / `{"Message": ...}` and a body that is only a `message`. The cache never
    stores one (`Endpoint.unstorable`) and the router counts none as a success (`router/_core.Router._judge`)."""
    if response.get("error") is not None:  # the Responses API sends `"error": null` on success
        return "`error` is set"
    if response.get("type") == "error":
        return "`type` is error"
    for key in _AWS_ERROR_KEYS:
        if key in response:
            return f"`{key}` is set"
    if response.keys() == {"message"}:
        return "only a `message`"
    return None


__all__ = [
    "error_object",
    "CREDENTIALS_FOR",
    "OPERATORS_KEY",
    "DefaultTransports",
    "ANTHROPIC",
    "ANTHROPIC_MESSAGES",
    "AUTH",
    "AZURE",
    "BEDROCK",
    "CREDENTIAL_HEADERS",
    "ENV_PREFIX",
    "GEMINI",
    "OPENAI",
    "AmbiguousCredential",
    "Auth",
    "Family",
    "UnsetVariable",
    "api_of",
    "auth_header",
    "azure_pattern",
    "bedrock_pattern",
    "decoded",
    "decompressor",
    "default_transport",
    "error_document",
    "expand_env",
    "expand_optional",
    "gemini_pattern",
    "is_azure",
    "library_of",
    "masked_query_credential",
    "model_in_path",
    "suffix_pattern",
    "under",
    "upstream_name",
    "without_query_credential",
]
