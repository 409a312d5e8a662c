"""The caching gateway that `llm-cache serve` runs: a Starlette reverse proxy wrapped in `CacheMiddleware`.

Requests are sent to the upstream of their API family (OpenAI, Anthropic, Gemini, Azure OpenAI)
through one shared `httpx2.AsyncClient` created in the lifespan, and streamed back chunk by chunk.
The cache itself lives in the middleware; this module only forwards, and adds `/health`,
`/metrics` and the admin-key protected `/cache/*` management endpoints.

In front of both sits `_Guard`, the gateway's front door: it refuses request paths that could leave
their upstream's base path, checks the client keys of the LLM routes (`auth.keys`, LiteLLM's
`master_key`), bounds request bodies (`server.max_request_bytes`, `server.body_read_timeout`) and
names the upstream in the cache key. Request and response bodies stream: the gateway never holds a
body the cache does not parse.

When the config has a `model_list` / `router` section, the shared client sends through the
`router` package's `RouterTransport`, so misses go to the router's deployments. This is the only
module of `middleware` that imports `router`: the gateway composes caching and routing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import sys
import time
import types
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import httpx2
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._log_limit import LogLimit
from .._refusals import REFUSAL, rule_for
from .._wire import (
    CREDENTIAL_HEADERS,
    CREDENTIALS_FOR,
    OPERATORS_KEY,
    api_of,
    auth_header,
    decoded,
    decompressor,
    error_document,
    without_query_credential,
)
from . import _overrides as overrides
from ._browsers import BrowserRules
from ._engine import Cache
from ._exact_json import duplicate_key
from ._forwarding import DEFAULT_ALLOW, Allowed
from ._keys import NAMESPACE_PATTERN
from ._ownership import Ownership, StoreDown, caller_of, recording
from ._paths import routed_path
from ._types import KEY_HEADER, UPSTREAM_HEADER, UPSTREAM_SCOPE
from ._version import __version__
from .config import FAMILIES, ConfigError, GatewayConfig, build_cache, default_config, load_config, with_upstreams
from .providers import ACCOUNT_HEADERS
from .providers import held as held_ids
from .stores.base import ClearRefused, NoTagIndex, StoreError

logger = logging.getLogger("llm_cache.middleware.gateway")

__all__ = ["create_gateway", "family_of", "forwarded_path", "gateway_from_env", "upstream_url"]

# RFC 9110 7.6.1 connection-specific headers, plus the ones the client library recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "x-admin-key", UPSTREAM_HEADER}
# The server that answers the caller (uvicorn) sets its own; the upstream's would be a second copy.
_RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}
# The headers a client key may come in, as LiteLLM's proxy reads its master key.
_CLIENT_KEY_HEADERS = frozenset(name.encode("latin-1") for name in (*CREDENTIAL_HEADERS, "x-litellm-api-key"))
_OPERATIONS = frozenset(
    {
        "/health",
        "/health/liveliness",
        "/health/readiness",
        "/metrics",
        "/cache/stats",
        "/cache/delete",
        "/cache/invalidate",
        "/cache/flush",
        "/cache/flushall",
        "/cache/ping",
        "/cache/redis/info",
        "/cache/semantic/verifications",
    }
)
# Where an admin key may come, in this order: ours, then the two LiteLLM's proxy reads its master key from.
_ADMIN_KEY_HEADERS = ("x-admin-key", "x-litellm-api-key")
_MAX_DELETE_KEYS = 1000
_MAX_VERIFICATIONS = 10_000
"""The most verification outcomes one /cache/semantic/verifications answer carries."""
_MAX_TAG_CHARS = 256
"""Longest tag an invalidation may name (automatic `model:` tags carry the model's name, unchecked)."""
_PROBE_TIMEOUT = 5.0
_READINESS_REUSE = 1.0
"""Seconds a /health/readiness answer is reused (it needs no key: probes must not be multiplied)."""
# The Redis INFO fields /cache/redis/info passes on: versions, memory, hit counts; never paths, ports or ids.
_REDIS_INFO_FIELDS = (
    "redis_version",
    "redis_mode",
    "uptime_in_seconds",
    "connected_clients",
    "used_memory",
    "used_memory_human",
    "maxmemory",
    "maxmemory_policy",
    "keyspace_hits",
    "keyspace_misses",
    "expired_keys",
    "evicted_keys",
)
MANAGEMENT_BODY_LIMIT = 1024 * 1024
"""The largest body a /cache/* call may send (they are small JSON objects)."""
ROUTED_BODY_LIMIT = 64 * 1024 * 1024
"""The largest body a gateway with a router or `allow` rules takes when `server.max_request_bytes` is not
set: the router reads a body whole (it picks a group from it and may resend it), `allow` rules read a JSON
or form one whole (for a `_method`). Above every provider's own model-call limit."""
_RAW_UPSTREAM = UPSTREAM_HEADER.encode("latin-1")
_RAW_KEY = KEY_HEADER.encode("latin-1")
_ANTHROPIC_VERSION = b"anthropic-version"
_RAW_LITELLM_KEY = b"x-litellm-cache-key"
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})
"""`Connection` values that name no other header (what clients send), looked at no further."""
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})
_SCREENED_NAMES = _CLIENT_KEY_HEADERS | {
    b"content-length",
    b"transfer-encoding",
    b"connection",
    _RAW_UPSTREAM,
    b"host",
    b"origin",
    _ANTHROPIC_VERSION,
}
"""The request headers the guard looks at."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters HTTP/1.1 never carries in a field value (HTAB is allowed)."""
_MANAGEMENT_ENV = "LLM_CACHE_CONFIG"
_UPSTREAMS_ENV = "LLM_CACHE_UPSTREAMS"
ADMIN_KEY_ENV_ENV = "LLM_CACHE_ADMIN_KEY_ENV"
"""Names, for each worker process, the variable `serve --admin-key-env` read the admin key from."""


def family_of(path: str, anthropic: bool = False) -> str | None:
    """The API family whose upstream serves `path`, or None for paths the gateway does not proxy.

    Anthropic serves some paths OpenAI does (`/v1/models`, `/v1/files`): a request naming
    `anthropic-version` (`anthropic`: every Anthropic client sends it, no OpenAI client does) is
    Anthropic's, so its caller's key never goes to the OpenAI upstream, nor the owner's OpenAI key for it.
    """
    if path.startswith("/openai/"):
        return "azure"
    if path == "/v1/messages" or path.startswith(("/v1/messages/", "/v1/complete")):
        return "anthropic"
    if path.startswith("/v1beta/") or (path.startswith("/v1alpha/") and ":" in path) or api_of(path) == "gemini":
        return "gemini"
    if path.startswith("/v1/"):
        return "anthropic" if anthropic else "openai"
    return None


# RFC 3986 pchar minus the percent sign (escapes are checked on their own): kept as the client wrote them.
_PCHAR = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
_CLEAN_PATH = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
# A backslash or control byte, an empty segment before the last, a dot segment (`..;x` too).
_UNSAFE_PATH = re.compile(rb"[\x00-\x1f\x7f\\]|//|/\.\.?(?:;[^/]*)?(?:/|$)")
_CLEAN_QUERY = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_DECODE_ROUNDS = 4
_SEEN_PATHS = 1024
"""How many request paths the guard remembers the facts of (all are forgotten when it is full)."""


def forwarded_path(raw_path: bytes) -> str | None:
    """The request path as the gateway forwards it, or None when it is refused.

    Refused: a path that does not start with `/`, contains a backslash or a control character, an empty
    segment (`//`) or a `.`/`..` segment (also `..;x`), in the raw form or after any number of rounds of
    percent-decoding (`%2e%2e`, `..%2f`, `%252e%252e`, `%5c`). What is kept is the raw path with every
    byte outside RFC 3986's path characters percent-encoded, so the upstream decodes exactly the
    segments checked here and a `?` or `#` can never end the path early.
    """
    if not raw_path.startswith(b"/"):
        return None
    decoded = raw_path
    for _ in range(_DECODE_ROUNDS):
        if _UNSAFE_PATH.search(decoded) is not None:
            return None
        if b"%" not in decoded:
            break
        step = unquote_to_bytes(decoded)
        if step == decoded:
            break
        decoded = step
    else:
        return None  # still encoded after several rounds: nobody sends that in good faith
    if _CLEAN_PATH.fullmatch(raw_path) is not None:
        return raw_path.decode("ascii")
    return _percent_encoded(raw_path, b"/")


def _percent_encoded(raw: bytes, also: bytes) -> str:
    """`raw` with each byte outside pchar and `also` percent-encoded (valid `%XX` escapes are kept)."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25 and re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3]):
            out += raw[i : i + 3]
            i += 3
            continue
        if byte in _PCHAR or byte in also:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
        i += 1
    return out.decode("ascii")


class _Base:
    """An upstream's base URL, split once: its origin, its path and that path's last segment."""

    __slots__ = ("last", "origin", "path")

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.path = parts.path.rstrip("/")
        self.last = self.path.rpartition("/")[2]

    def url(self, path: str) -> str:
        """The upstream URL (no query) for a path `forwarded_path` kept: always under the base path."""
        last = self.last
        if last and (path == f"/{last}" or path.startswith(f"/{last}/")):
            path = path[len(last) + 1 :]
        full = self.path + path
        assert full == self.path or full.startswith(self.path + "/"), "an upstream path left its base"
        return self.origin + (full or "/")


def upstream_url(base_url: str, path: str, query: str = "") -> str:
    """`base_url` + `path`, without repeating a version segment both end and start with.

    `https://api.openai.com/v1` + `/v1/chat/completions` -> `https://api.openai.com/v1/chat/completions`;
    `https://api.anthropic.com` + `/v1/messages` -> `https://api.anthropic.com/v1/messages`.
    The result is always under the base path: `path` goes through `forwarded_path` (ValueError if it
    is refused), and the query is re-encoded the same way.
    """
    safe = forwarded_path(path.encode("utf-8"))
    if safe is None:
        raise ValueError(f"refused request path {path!r}")
    return _Base(base_url).url(safe) + (f"?{_query(query)}" if query else "")


def _query(query: str) -> str:
    """The query string with every byte that could end it (`#`) or is not URL-safe percent-encoded."""
    raw = query.encode("utf-8")
    return query if _CLEAN_QUERY.fullmatch(raw) is not None else _percent_encoded(raw, b"/?")


_REFUSAL_LOGGED = 4096
"""Most bytes of an upstream's refusal the operator's log gets (and its family's rule reads)."""
_REFUSAL_DECODED = 65536
"""Most bytes the first `_REFUSAL_LOGGED` of a compressed refusal are decoded to."""


async def _first_bytes(response: httpx2.Response, limit: int) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first `limit` or more raw bytes of `response` (all of a shorter body), and the iterator
    of the rest, for the relay to go on with. A body cut short is judged on what came of it, and
    relayed cut (the rest raises the error the read did)."""
    chunks = response.aiter_raw()
    said = b""
    try:
        while len(said) < limit:
            said += await anext(chunks)
    except StopAsyncIteration:
        pass
    except httpx2.HTTPError as error:
        return said, _raising(error)
    return said, chunks


async def _raising(error: Exception) -> AsyncIterator[bytes]:
    raise error
    yield b""  # (unreachable: makes this an async generator)


_ACCOUNT = frozenset().union(*ACCOUNT_HEADERS.values())
"""Every family's headers naming the account billed (`providers.ACCOUNT_HEADERS`)."""

_OPENAI_CODES = {401: "invalid_api_key", 502: "upstream_unavailable", 504: "upstream_unavailable"}


def error_body(family: str | None, status: int, message: str, code: str | None = None) -> bytes:
    """An error answer shaped the way the family's API shapes errors, so SDKs raise their usual errors."""
    return orjson.dumps(error_document(family, status, message, code or _OPENAI_CODES.get(status)))


def _error(family: str | None, status: int, message: str, code: str | None = None) -> Response:
    return Response(error_body(family, status, message, code), status, media_type="application/json")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _bad(message: str, status: int = 400, kind: str = "invalid_request_error") -> Response:
    return _json({"error": {"message": message, "type": kind}}, status)


class _Counters:
    """What the gateway itself counts (the cache counts the rest in `cache.stats`)."""

    def __init__(self) -> None:
        self.upstream: Counter[tuple[str, str]] = Counter()
        self.upstream_errors: Counter[str] = Counter()
        self.client_disconnects: Counter[str] = Counter()
        """Callers that left before their body ended (an upstream call begun with its first piece is cut)."""
        self.credential_refused: Counter[str] = Counter()
        """Answers refusing the gateway's own upstream key, answered 502."""


class _GatewayCollector(Collector):
    """The gateway's own metrics, read at scrape time (no per-request metric work).

    The request, store and savings metrics come from the cache's telemetry collector
    (`llm_cache.middleware.telemetry`), registered next to this one.
    """

    def __init__(self, cache: Cache | None, counters: _Counters) -> None:
        self.cache = cache
        self.counters = counters

    def collect(self) -> Iterable[Any]:
        if self.cache is not None:
            stats = self.cache.stats
            for name, value, text in (
                ("llm_cache_invalid_entries", stats.invalid_entries, "Stored entries discarded as unreadable."),
                ("llm_cache_oversized", stats.oversized, "Request bodies over max_body_bytes, passed through."),
            ):
                yield CounterMetricFamily(name, text, value=value)
            total = stats.hits + stats.misses
            yield GaugeMetricFamily(
                "llm_cache_hit_ratio",
                "Hits over hits plus misses since start.",
                value=stats.hits / total if total else 0.0,
            )
        upstream = CounterMetricFamily(
            "llm_cache_upstream_requests", "Requests forwarded upstream.", labels=["family", "status_class"]
        )
        for (family, status_class), value in sorted(self.counters.upstream.items()):
            upstream.add_metric([family, status_class], value)
        yield upstream
        counters = self.counters
        for name, text, counted in (
            ("llm_cache_upstream_errors", "Upstreams unreachable or timed out.", counters.upstream_errors),
            (
                "llm_cache_client_disconnects",
                "Callers that left before their request body ended.",
                counters.client_disconnects,
            ),
            (
                "llm_cache_upstream_credential_refused",
                "Answers refusing the gateway's own upstream key (its family's refusals), answered 502.",
                counters.credential_refused,
            ),
        ):
            family_metric = CounterMetricFamily(name, text, labels=["family"])
            for family, value in sorted(counted.items()):
                family_metric.add_metric([family], value)
            yield family_metric


class _Gateway:
    """The state of one gateway app: config, cache, shared client, counters."""

    def __init__(self, config: GatewayConfig, cache: Cache | None, router: Any = None) -> None:
        self.config = config
        self.cache = cache
        self.router = router
        self.client: httpx2.AsyncClient | None = None
        self.counters = _Counters()
        self.warnings = LogLimit(logger)
        """What every call or probe may meet (an upstream down, a refused key, a store down): one WARNING
        of each kind an interval."""
        self._readiness: tuple[float, dict[str, Any], int] | None = None
        self._readiness_lock = asyncio.Lock()
        self.bases: dict[str | None, _Base] = {}
        for family in FAMILIES:
            base_url = config.upstreams.base_url(family)
            if base_url is not None:
                self.bases[family] = _Base(base_url)
        # With a key of its own (the family's, or a router's), only the calls `allow` names are forwarded.
        router_keys = any(not field.startswith("upstreams.") for field in config.upstream_keys())
        self.allowed: dict[str, Allowed] = {}
        for family in FAMILIES:
            upstream = getattr(config.upstreams, family)
            if upstream.allow is not None or upstream.api_key or router_keys:
                self.allowed[family] = Allowed(upstream.allow if upstream.allow is not None else DEFAULT_ALLOW[family])
        # ... and the ids the provider holds are reachable only by the caller they were minted for.
        self.owned = Ownership(cache.store if cache is not None else None, cache.key_space if cache is not None else "")
        self.client_keys = tuple(key.encode("utf-8") for key in config.auth.keys)
        self.registry = CollectorRegistry(auto_describe=False)
        if cache is not None:
            self.registry.register(cache.telemetry.collector)
        self.registry.register(_GatewayCollector(cache, self.counters))

    # -- lifespan -------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60.0)
        inner: httpx2.AsyncHTTPTransport | None = None
        transport: Any = None
        if self.router is not None:
            from llm_cache.router import RouterTransport

            # The router's attempts share one pooled transport with the gateway's limits.
            inner = httpx2.AsyncHTTPTransport(limits=limits, trust_env=False)
            transport = RouterTransport(self.router, inner=inner)
        self.client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(600.0, connect=10.0),
            limits=limits,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )
        if self.cache is not None:  # a local embedding model loads now, not on the first miss
            await self.cache.start()
        try:
            yield
        finally:
            await self.client.aclose()
            self.client = None
            if inner is not None:
                await inner.aclose()
            if self.cache is not None:
                await self.cache.close()

    # -- proxy ----------------------------------------------------------------------------------

    async def client_left(self, request: Request, error: Exception) -> Response:
        """A caller that hung up before its body was read whole (Starlette raises `ClientDisconnect`
        where a route reads it, the proxy's or a management one): its leaving, not an exception of the
        app. Nothing went upstream whole (a body being streamed there is cut with it) and nothing is
        stored; counted, and answered for a client still listening."""
        family = family_of(routed_path(request.scope)[0], "anthropic-version" in request.headers)
        logger.info("request ended: the client left before its body ended")
        self.counters.client_disconnects[family or "none"] += 1
        return _error(family, 400, "the client left before its body was read")

    async def proxy(self, request: Request) -> Response:
        try:  # Starlette reads the URL from the Host header and the query as UTF-8: either may not parse
            request.url.query  # noqa: B018 (raises on a Host or query that cannot be read)
        except ValueError:
            message = "the request's Host or query cannot be read"
            return Response(error_body(None, 400, message), 400, media_type="application/json")
        path, raw_path = routed_path(request.scope)  # under a root path, the path after it
        family = family_of(path, "anthropic-version" in request.headers)
        if family is None:
            return _error(None, 404, f"no upstream serves {path}")
        forwarded = forwarded_path(raw_path)
        if forwarded is None:  # the guard refused it already; checked again where the URL is built
            return _error(family, 400, REFUSED_PATH)
        allowed = self.allowed.get(family)
        held = False  # the body read whole, to judge a method it names
        if allowed is not None:
            named, held = await _methods(request)
            if named is None:
                return _error(family, 400, "a body that cannot be read may name a method (`_method`)")
            refused = next((method for method in named if not allowed(method, forwarded)), None)
            if refused is not None:
                message = f"this gateway does not forward {refused} {forwarded}: not in upstreams.{family}.allow"
                return _error(family, 403, message)
        caller = None  # on a key of the owner's: who is asking, to whom the ids it names must belong
        body: Any = None  # (its JSON body, where it may name or mint a provider-held id)
        if allowed is not None:
            caller = caller_of(_presented(request), self.client_keys)
            foreign, body = await self._foreign(request, family, forwarded, caller)
            if foreign is not None:
                return foreign
            held = held or _read_for_ids(request)  # (read whole for the ids it names)
        base = self.bases.get(family)
        if base is None:
            return _error(family, 502, f"no upstream configured for {family}: set upstreams.{family}.base_url")
        upstream = getattr(self.config.upstreams, family)
        query = request.scope.get("query_string", b"").decode("latin-1")
        headers = _forwarded_headers(request.headers.items())
        if self.config.auth.keys:  # the caller's key opens the gateway; it is not the provider's key
            headers, query = _without_client_keys(headers, query)
        if upstream.api_key:
            headers, query = _with_credentials(family, upstream.api_key, headers, query)
        # The router reads the model to pick a group and may send the body more than once.
        content = await request.body() if self.router is not None or held else await _streamed_body(request, headers)
        wire = _wire_headers(headers)
        if wire is None:
            message = "a request header cannot be forwarded (a name that is not a token, or a control character)"
            return _error(family, 400, message)
        assert self.client is not None, "the gateway's lifespan has not started"
        url = base.url(forwarded) + (f"?{_query(query)}" if query else "")
        timeout = httpx2.Timeout(upstream.timeout, connect=10.0)
        if self.router is not None and request.method == "GET" and path.rstrip("/") == "/v1/models":
            return _json({"object": "list", "data": self._models()})
        # The upstream key is for the upstream's URL: a router sends it to none of its deployments elsewhere.
        extensions = {CREDENTIALS_FOR: base.origin + base.path} if upstream.api_key else None
        try:
            outgoing = self.client.build_request(
                request.method, url, headers=wire, content=content, timeout=timeout, extensions=extensions
            )
        except httpx2.InvalidURL:
            return _error(family, 400, "the request path or query cannot be forwarded")
        _caller_headers_only(outgoing, request.headers.get("accept-encoding"), {k for k, _ in headers})
        try:
            response = await self.client.send(outgoing, stream=True)
        except httpx2.TimeoutException:
            self.counters.upstream_errors[family] += 1
            self.warnings.warning(("timeout", family), "upstream %s timed out", family)
            return _error(family, 504, f"the {family} upstream timed out")
        except (httpx2.TransportError, OSError) as error:
            self.counters.upstream_errors[family] += 1
            self.warnings.warning(("unreachable", family), "upstream %s unreachable (%s)", family, type(error).__name__)
            return _error(family, 502, f"the {family} upstream is unreachable")
        self.counters.upstream[(family, f"{response.status_code // 100}xx")] += 1
        # the owner's key: the upstream's own, or one the router sent (a deployment's `api_key`)
        owners = bool(upstream.api_key) or response.extensions.get(OPERATORS_KEY) is True
        refused = response.extensions.get(REFUSAL)
        if owners and refused is not None:  # the router judged a deployment's own answer, untranslated
            await response.aclose()
            status, said = refused
            return self._key_refused(family, status, response, said, self._owner_keys(upstream.api_key))
        refusals = rule_for(family, response.headers)
        read: tuple[bytes, AsyncIterator[bytes]] | None = None
        if owners and response.status_code in refusals.statuses:
            read = await _first_bytes(response, _REFUSAL_LOGGED)
            said = decoded(response.headers.get("content-encoding"), read[0], _REFUSAL_DECODED) or b""
            if refusals.refuse(response.status_code, response.headers, said[:_REFUSAL_LOGGED]):
                await response.aclose()
                keys = self._owner_keys(upstream.api_key)
                return self._key_refused(family, response.status_code, response, said, keys)
        # On the owner's key the account billed is the owner's: no caller is told which it is (any
        # family's headers: a router may have answered from a deployment of another family).
        account = _ACCOUNT if owners else frozenset()
        headers = _response_headers(response.headers.multi_items(), account)
        if caller is not None and response.status_code < 300:
            listing = held_ids.listed(family, request.method, forwarded)
            if listing is not None:
                return await self._callers_list(response, headers, family, listing, caller)
            if held_ids.minting(family, request.method, forwarded, body):
                read = (b"", self._recorded(response, family, forwarded, caller, body))
        return _UpstreamResponse(response, headers, read)

    async def _foreign(self, request: Request, family: str, path: str, caller: str) -> tuple[Response | None, Any]:
        """The refusal of a request naming a provider-held id not minted for `caller`, or None
        (`providers.held`): the provider's own answer for an id it does not know, before it leaves; and
        the request's JSON body where it may name or mint one (else None)."""
        body: Any = None
        if _read_for_ids(request):
            raw = await _decoded_body(request)
            if raw is None:
                return _error(family, 400, "a body that cannot be read may name a provider-held id"), None
            if any(mark in raw for mark in held_ids.ID_MARKS):  # (else no key naming one is spelt in it)
                if duplicate_key(raw) is not None:
                    message = "a body that names a key twice (or nests too deeply to tell) may name a provider-held id"
                    return _error(family, 400, message), None
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = None  # not JSON: the provider reads no id from it either
        named = held_ids.named(family, path, body)
        if not named:
            return None, body
        try:
            foreign = await self.owned.foreign(caller, family, named)
        except StoreDown as error:
            self.warnings.warning("held-id-store", "refused a call naming a provider-held id: %s", error)
            return _error(family, 503, "the gateway cannot tell whose an id this request names is; retry"), None
        if foreign is None:
            return None, body
        kind, held_id = foreign
        status, message, code = held_ids.not_found(family, kind, held_id, in_path=held_id in held_ids.as_read(path))
        logger.info("refused a call naming a %s id minted for another caller or unknown", kind)
        return _error(family, status, message, code), None

    async def _callers_list(
        self,
        response: httpx2.Response,
        headers: list[tuple[str, str]],
        family: str,
        listing: held_ids.Listing,
        caller: str,
    ) -> Response:
        """A list of the account's held state (`held.listed`) answered with the caller's entries only: every
        caller's are in the owner's account. An answer that cannot be read whole is shown to nobody."""
        raw = bytearray()
        try:
            async for chunk in response.aiter_raw():
                raw += chunk
                if len(raw) > _LIST_LIMIT:
                    return _error(family, 502, "the upstream's list is too long to show per caller: ask for fewer")
        finally:
            await response.aclose()
        text = decoded(response.headers.get("content-encoding"), bytes(raw), _LIST_LIMIT)
        try:
            body = None if text is None else await self.owned.only_callers(caller, family, listing, text)
        except StoreDown as error:
            self.warnings.warning("held-list-store", "refused a list of provider-held state: %s", error)
            return _error(family, 503, "the gateway cannot tell whose the listed entries are; retry")
        if body is None:
            return _error(family, 502, "the upstream's list cannot be read to show each caller its own")
        answer = Response(body, response.status_code)
        kept = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k.lower() not in _REWRITTEN]
        answer.raw_headers = [*kept, (b"content-length", str(len(body)).encode("ascii"))]
        return answer

    def _recorded(
        self, response: httpx2.Response, family: str, path: str, caller: str, request: Any
    ) -> AsyncIterator[bytes]:
        """The answer's body, the ids it mints for `caller` (answering `request`, its JSON body) recorded
        before the caller has them."""

        async def record(found: list[held_ids.Held]) -> None:
            await self.owned.record(caller, family, found)

        stream = response.headers.get("content-type", "").startswith("text/event-stream")
        return recording(
            response.aiter_raw(),
            response.headers.get("content-encoding"),
            stream,
            family,
            lambda answer: held_ids.minted(family, path, answer, request),
            record,
        )

    def _owner_keys(self, api_key: str | None) -> list[str]:
        """The keys of the owner's the gateway may have sent: its upstream's, its router deployments'."""
        keys = [api_key] if api_key else []
        if self.router is not None:
            keys += [
                dep.api_key for group in self.router.config.groups.values() for dep in group.deployments if dep.api_key
            ]
        return keys

    def _key_refused(
        self, family: str, status: int, response: httpx2.Response, said: bytes, keys: list[str]
    ) -> Response:
        """The upstream refused the owner's key with `status` (`llm_cache._refusals` says which answers
        do; for a router deployment the router judged its answer before translating it): its body `said`
        names the key (masked, and each of `keys` masked in the log) or the owner's project, and the
        caller's own key is not at fault. The operator reads the body in the log; the
        caller gets a 502 of the gateway's own that SDKs do not retry (`x-should-retry`: a retry is
        refused too)."""
        self.counters.credential_refused[family] += 1
        text = said[:_REFUSAL_LOGGED].decode("utf-8", "replace")
        for key in keys:
            text = text.replace(key, "***")
        deployment = response.headers.get("x-router-deployment")
        whose = f"the key sent to router deployment {deployment}" if deployment else f"upstreams.{family}.api_key"
        self.warnings.warning(
            ("key-refused", family, deployment), "the %s upstream refused %s (%d): %r", family, whose, status, text
        )
        message = (
            f"the gateway's upstream credential for {family} was refused by the provider;"
            " the gateway's operator must fix it"
        )
        answer = _error(family, 502, message, "upstream_credential_refused")
        answer.headers["x-should-retry"] = "false"
        return answer

    def _models(self) -> list[dict[str, Any]]:
        """`GET /v1/models` with a router: the model names of `model_list` (and router groups), OpenAI's shape."""
        assert self.router is not None
        names = [name for name in self.router.config.groups if name != "*"]
        names += [alias for alias in self.router.settings.model_group_alias if alias not in names]
        return [{"id": name, "object": "model", "created": 0, "owned_by": "llm-cache"} for name in names]

    # -- operations -----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def liveliness(self, request: Request) -> Response:
        """LiteLLM's liveness probe: the process answers; nothing else is checked."""
        return _json("I'm alive!")

    async def readiness(self, request: Request) -> Response:
        """Ready when the store answers a probe and some upstream accepts a connection.

        One provider down leaves the pod ready ("degraded"): it still answers hits and the other
        providers, and taking every pod out of the Service over one provider's outage would drop those
        too. Only when no upstream is reachable (egress is broken) is the pod unready.
        No auth, so the body names only the store type and the API families: never URLs, hosts or errors;
        and one check at a time, its answer reused for a second, so callers cannot multiply the probes.
        """
        async with self._readiness_lock:
            now = time.monotonic()
            if self._readiness is None or now - self._readiness[0] >= _READINESS_REUSE:
                self._readiness = (now, *await self._check_readiness())
            _, body, status = self._readiness
        return _json(body, status)

    async def _check_readiness(self) -> tuple[dict[str, Any], int]:
        families = sorted(family for family in self.bases if family is not None)
        checks = [self._probe_store(), *(self._reachable(self.bases[family]) for family in families)]
        store_ok, *reachable = await asyncio.gather(*checks)
        states = ("reachable" if ok else "unreachable" for ok in reachable)
        upstreams = dict(zip(families, states, strict=True))
        ready = bool(store_ok) and (any(reachable) or not reachable)
        body = {
            "status": "unhealthy" if not ready else "healthy" if all(reachable) else "degraded",
            "cache": self.cache.store.name if self.cache is not None else None,
            "store": "ok" if store_ok else "failing",
            "upstreams": upstreams,
            "db": "Not connected",
            "llm_cache_version": __version__,
        }
        return body, 200 if ready else 503

    async def _probe_store(self) -> bool:
        """Whether the store sets, reads back and deletes a probe key within 5 s (True without a cache)."""
        if self.cache is None:
            return True
        store = self.cache.store
        key = f"{self.cache.key_space}__ping__:{uuid.uuid4().hex}"
        value = uuid.uuid4().bytes

        async def probe() -> bool:
            await store.set(key, value, 30.0)
            found = await store.get(key) == value
            await store.delete(key)
            return found

        try:
            return await asyncio.wait_for(probe(), _PROBE_TIMEOUT)
        except Exception as error:  # the answer never carries exception text or host names
            self.warnings.warning("probe", "cache store probe failed: %r", error)
            return False

    @staticmethod
    async def _reachable(base: _Base) -> bool:
        """Whether the upstream's host accepts a TCP connection within 2 s (no request is sent)."""
        parts = urlsplit(base.origin)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), 2.0)
        except (OSError, asyncio.TimeoutError, ValueError):
            return False
        writer.close()
        return True

    async def metrics(self, request: Request) -> Response:
        if self.config.metrics_auth and (refused := self._unkeyed(request, str(self.config.admin_key))) is not None:
            return refused
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    def _refuse(self, request: Request) -> Response | None:
        """None when the request carries the admin key; else the answer to send."""
        expected = self.config.admin_key
        if not expected:
            return _json(
                {
                    "error": {
                        "message": "cache management endpoints are disabled: set admin_key in the "
                        "gateway config to enable them",
                        "type": "disabled",
                    }
                },
                404,
            )
        if self.cache is None:
            return _json({"error": {"message": "caching is disabled in the gateway config", "type": "disabled"}}, 404)
        return self._unkeyed(request, expected)

    @staticmethod
    def _unkeyed(request: Request, expected: str) -> Response | None:
        """None when the request carries `expected` as its admin key; else the 401 or 403 to send."""
        given = next((request.headers[name] for name in _ADMIN_KEY_HEADERS if name in request.headers), None)
        if given is None:
            authorization = request.headers.get("authorization", "")
            if authorization[:7].lower() == "bearer ":
                given = authorization[7:].strip()
        if given is None:
            return _json(
                {
                    "error": {
                        "message": "admin key required (Authorization: Bearer <key>, x-admin-key or x-litellm-api-key)",
                        "type": "unauthorized",
                    }
                },
                401,
            )
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _json({"error": {"message": "invalid admin key", "type": "forbidden"}}, 403)
        return None

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _bad("body must be JSON")
        if not isinstance(data, dict):
            return _bad("body must be a JSON object")
        return data

    async def stats(self, request: Request) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        assert self.cache is not None
        stats: dict[str, Any] = dict(self.cache.stats.as_dict())
        total = stats["hits"] + stats["misses"]
        stats["hit_ratio"] = round(stats["hits"] / total, 4) if total else 0.0
        stats["store"] = self.cache.store.name
        stats["upstream_requests"] = sum(self.counters.upstream.values())
        stats["upstream_errors"] = sum(self.counters.upstream_errors.values())
        stats["client_disconnects"] = sum(self.counters.client_disconnects.values())
        stats["pid"] = os.getpid()  # with `serve --workers N`, which worker these counters are
        return _json(stats)

    async def _admin_body(self, request: Request) -> dict[str, Any] | Response:
        """The JSON object a management call sent, once the admin key checks out; else the answer."""
        if (refused := self._refuse(request)) is not None:
            return refused
        return await self._body(request)

    async def _store_call(self, operation: str, call: Any, answer: dict[str, Any]) -> Response:
        try:
            await call
        except ClearRefused as error:  # the store is up: it cannot keep that clear to this gateway's prefix
            return _bad(str(error))
        except Exception as error:
            logger.warning("cache %s failed: %r", operation, error)
            return _bad("the cache store did not answer", 503, "store_error")
        return _json(answer)

    async def delete(self, request: Request) -> Response:
        data = await self._admin_body(request)
        if isinstance(data, Response):
            return data
        assert self.cache is not None
        if "keys" in data:  # LiteLLM's shape: {"keys": ["...", ...]}
            return await self._delete_keys(data["keys"])
        key = data.get("key")
        if key is None:
            path, body, headers = data.get("path"), data.get("body"), data.get("headers") or {}
            query = data.get("query") or ""
            if not isinstance(path, str) or not isinstance(body, dict) or not isinstance(headers, dict):
                return _bad('send {"key": "..."} or {"path": "/v1/...", "body": {...}, "headers": {...}}')
            if not isinstance(query, str) or not all(isinstance(value, str) for value in headers.values()):
                return _bad("headers must map names to strings, and query must be a string")
            plain = {str(k).lower(): v for k, v in headers.items()}
            base = self.bases.get(family_of(path, "anthropic-version" in plain))
            forwarded = forwarded_path(path.encode("utf-8"))
            # the key names the upstream URL, as for the calls
            upstream = base.url(forwarded) if base is not None and forwarded is not None else None
            try:
                key = self.cache.key_for(path, body, plain, query, upstream=upstream)
            except ValueError as error:
                return _bad(str(error))
            except Exception as error:  # a body the engine cannot key is the caller's mistake, never a 500
                return _bad(f"cannot compute a key for this request ({type(error).__name__})")
        if not isinstance(key, str) or not key:
            return _bad("key must be a non-empty string")
        return await self._store_call("delete", self.cache.delete(key), {"deleted": key})

    async def _delete_keys(self, keys: Any) -> Response:
        assert self.cache is not None
        if (
            not isinstance(keys, list)
            or not 0 < len(keys) <= _MAX_DELETE_KEYS
            or not all(isinstance(key, str) and key for key in keys)
        ):
            return _bad(f"keys must be a list of 1 to {_MAX_DELETE_KEYS} non-empty strings")
        cache = self.cache
        deleting = asyncio.gather(*(cache.delete(key) for key in keys))
        return await self._store_call("delete", deleting, {"status": "success", "deleted": keys})

    async def invalidate(self, request: Request) -> Response:
        """`{"tags": [...]}`: every entry carrying any of the tags, in the store and the semantic index."""
        data = await self._admin_body(request)
        if isinstance(data, Response):
            return data
        assert self.cache is not None
        tags = data.get("tags")
        if (
            not isinstance(tags, list)
            or not 0 < len(tags) <= _MAX_DELETE_KEYS
            or not all(isinstance(tag, str) and 0 < len(tag) <= _MAX_TAG_CHARS for tag in tags)
        ):
            return _bad(f'send {{"tags": [...]}}: 1 to {_MAX_DELETE_KEYS} strings of 1 to {_MAX_TAG_CHARS} characters')
        try:
            removed = await self.cache.invalidate(tags)
        except NoTagIndex as error:
            return _bad(str(error))
        except Exception as error:
            logger.warning("cache invalidate failed: %r", error)
            return _bad("the cache store did not answer", 503, "store_error")
        return _json({"invalidated": tags, "deleted": len(removed)})

    async def flushall(self, request: Request) -> Response:
        """LiteLLM's `/cache/flushall`: every entry under this gateway's key prefix (not the whole store)."""
        data = await self._admin_body(request)
        if isinstance(data, Response):
            return data
        assert self.cache is not None
        return await self._store_call("flush", self.cache.clear(None), {"status": "success", "flushed": "all"})

    async def flush(self, request: Request) -> Response:
        data = await self._admin_body(request)
        if isinstance(data, Response):
            return data
        assert self.cache is not None
        namespace, prefix = data.get("namespace"), data.get("prefix")
        if sum(x is not None for x in (namespace, prefix)) + (data.get("all") is True) != 1:
            return _bad('send one of {"namespace": "..."}, {"prefix": "..."} or {"all": true}')
        for name, value in (("namespace", namespace), ("prefix", prefix)):
            if value is not None and (not isinstance(value, str) or not value):
                return _bad(f"{name} must be a non-empty string")
        if namespace is not None and not NAMESPACE_PATTERN.fullmatch(namespace):
            return _bad("namespace must be 1-64 characters of letters, digits, '_', '.' or '-'")
        if prefix is not None:  # raw store keys, e.g. an old key_prefix after a version bump
            try:
                await self.cache.store.clear(prefix)
            except StoreError:
                return _bad(
                    f"the {self.cache.store.name} store cannot clear an arbitrary prefix; "
                    "flush a namespace or everything"
                )
            except Exception as error:
                logger.warning("cache flush failed: %r", error)
                return _bad("the cache store did not answer", 503, "store_error")
            return _json({"flushed": {"prefix": prefix}})
        flushed = namespace if namespace is not None else "all"
        return await self._store_call("flush", self.cache.clear(namespace), {"flushed": flushed})

    async def ping(self, request: Request) -> Response:
        """LiteLLM's fields (`status`, `cache_type`, `ping_response`, `set_cache_response`) and ours."""
        if (refused := self._refuse(request)) is not None:
            return refused
        assert self.cache is not None
        started = time.perf_counter()
        ok = await self._probe_store()
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        name = self.cache.store.name
        body = {
            "status": "healthy" if ok else "unhealthy",
            "cache_type": name,
            "ping_response": ok,
            "set_cache_response": "success" if ok else "failed",
            "ok": ok,
            "store": name,
            "latency_ms": elapsed,
        }
        return _json(body, 200 if ok else 503)

    async def redis_info(self, request: Request) -> Response:
        """LiteLLM's `/cache/redis/info`, for a Redis store (or a tiered store over one): a safe subset of INFO."""
        if (refused := self._refuse(request)) is not None:
            return refused
        assert self.cache is not None
        store: Any = self.cache.store
        while not str(store.name).startswith("redis") and getattr(store, "l2", None) is not None:
            store = store.l2
        if not str(store.name).startswith("redis") or not callable(getattr(store, "client", None)):
            message = f"/cache/redis/info needs a redis store; this gateway's store is {self.cache.store.name}"
            return _bad(message, 400, "not_redis")
        try:
            info = await asyncio.wait_for(store.client().info(), _PROBE_TIMEOUT)
        except Exception as error:
            logger.warning("redis INFO failed: %r", error)
            return _bad("the cache store did not answer", 503, "store_error")
        if isinstance(info, dict) and info and all(isinstance(v, dict) for v in info.values()):
            info = next(iter(info.values()))  # a cluster answers per node: the first node's view
        fields = {name: info[name] for name in _REDIS_INFO_FIELDS if name in info}
        keyspace = {name: value for name, value in info.items() if re.fullmatch(r"db\d+", str(name))}
        return _json({"num_clients": info.get("connected_clients"), "info": {**fields, **keyspace}})

    async def verifications(self, request: Request) -> Response:
        """Bounded mode's recent verification outcomes (`?limit=`, default and at most
        `_MAX_VERIFICATIONS`), newest first, for `llm-cache calibrate --from-gateway`."""
        if (refused := self._refuse(request)) is not None:
            return refused
        assert self.cache is not None
        semantic = self.cache.semantic
        if semantic is None or semantic.bound is None:
            return _bad("this gateway has no bounded semantic cache (cache.semantic.max_error_rate)", 404, "disabled")
        try:
            limit = min(_MAX_VERIFICATIONS, int(request.query_params.get("limit", _MAX_VERIFICATIONS)))
        except ValueError:
            limit = -1
        if limit < 0:
            return _bad("limit must be a non-negative integer")
        try:
            records = await asyncio.wait_for(semantic.outcomes.outcomes(limit), _PROBE_TIMEOUT)
        except Exception as error:
            logger.warning("reading the verification outcomes failed: %r", error)
            return _bad("the verification outcomes could not be read", 503, "store_error")
        bound = semantic.bound
        return _json(
            {
                "max_error_rate": bound.max_error_rate,
                "error_rate_of": bound.error_rate_of,
                "verifications": [{"similarity": s, "outcome": o} for s, o in records],
                "pid": os.getpid(),
            }
        )


class _UpstreamResponse(StreamingResponse):
    """Relays an upstream response body as it arrives and always closes the upstream response.

    Unlike Starlette's StreamingResponse, a client disconnect cancels the relay only while body chunks
    are still being sent: once the last chunk is on its way, whatever the layers above do after
    sending it (CacheMiddleware stores the captured answer there) runs to completion instead of
    being cancelled by the disconnect that the server reports once the response is complete.
    """

    def __init__(
        self,
        upstream: httpx2.Response,
        headers: list[tuple[str, str]],
        read: tuple[bytes, AsyncIterator[bytes]] | None = None,
    ) -> None:
        """`read`: the body's first bytes, read already, and the iterator of the rest (`_first_bytes`)."""
        super().__init__(
            self._relay(upstream, read), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
        )
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    @staticmethod
    async def _relay(
        upstream: httpx2.Response, read: tuple[bytes, AsyncIterator[bytes]] | None
    ) -> AsyncIterator[bytes]:
        first, chunks = read if read is not None else (b"", upstream.aiter_raw())
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await upstream.aclose()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        state = {"ending": False, "disconnected": False}

        async def relay() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state["ending"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch(task: asyncio.Task[None]) -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not state["ending"]:
                        state["disconnected"] = True
                        task.cancel()
                    return

        task = asyncio.ensure_future(relay())
        watcher = asyncio.ensure_future(watch(task))
        try:
            await task
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
        finally:
            watcher.cancel()
            if not task.done():
                task.cancel()
            if self.background is not None:
                await self.background()


TWO_FRAMINGS = b"two framings"
"""What `_screened` declares for a body framed twice: by two lengths, by a length and chunks, or by
chunks under another transfer coding (`gzip, chunked`: h11 refuses it, httptools passes it on as plain)."""
TWO_FRAMINGS_REFUSED = (
    "a request framed both by content-length and by transfer-encoding (or by two lengths, or by a "
    "transfer-encoding other than chunked) is refused: a proxy in front may read its body otherwise"
)
REFUSED_PATH = "the request path is refused: '.' or '..' segments, backslashes and empty segments are not allowed"


class _BodyRefused(Exception):
    """A request body over `max_request_bytes` (413) or slower than `body_read_timeout` (408)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Deadlines:
    """The body reads of one gateway that are waiting, and one timer that expires the late ones.

    A read registers its deadline in a dict instead of arming a timer of its own (a timer per read
    was half the guard's cost on a hit, whose body is read in one piece without waiting). The timer
    ticks every quarter of the timeout (at most every second) while reads wait, so a read expires
    between `timeout` and `timeout` plus a tick after it began."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(timeout / 4, 1.0)
        self.waiting: dict[_BodyReader, float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, reader: _BodyReader) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # the app now runs on another loop: the old one's timer is gone with it
            self.loop, self.waiting, self.timer = loop, {}, None
        self.waiting[reader] = loop.time() + self.timeout
        if self.timer is None:
            self.timer = loop.call_later(self.tick, self._sweep)

    def unwatch(self, reader: _BodyReader) -> None:
        self.waiting.pop(reader, None)

    def _sweep(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        for reader, deadline in list(self.waiting.items()):
            if deadline <= now:
                del self.waiting[reader]
                reader.expire()
        self.timer = self.loop.call_later(self.tick, self._sweep) if self.waiting else None


class _BodyReader:
    """The `receive` the app behind the guard reads: it counts the body and times out its pieces.

    A piece that does not come in time ends the wait with a cancellation of the reading task (as
    `asyncio.timeout` does), turned into the 408 when nobody else cancelled the task too. A piece the
    server already holds (a small body comes with its headers) is taken without a wait to time."""

    __slots__ = ("deadlines", "done", "expired", "held", "limit", "receive", "size", "task")

    def __init__(self, receive: Receive, limit: int | None, deadlines: _Deadlines) -> None:
        self.receive = receive
        self.limit = limit
        self.deadlines = deadlines
        self.size = 0
        self.done = False
        self.expired = False
        self.task: asyncio.Task[Any] | None = None
        self.held: Message | None = None
        """A message read before the app ran (the guard reads the first), for the app's next call."""

    def expire(self) -> None:
        if self.task is not None:
            self.expired = True
            self.task.cancel()

    async def __call__(self) -> Message:
        held = self.held
        if held is not None:
            self.held = None
            return held
        if self.done:  # the body is in; what follows is the wait for a disconnect, as long as it takes
            return await self.receive()
        # (an iterator, and maybe only that: granian's receive is a future-like one with no `send`/`throw`)
        reading = self.receive().__await__()
        try:
            awaited = next(reading)
        except StopIteration as ready:  # the server had the message: nothing waited, nothing to time
            message: Message = ready.value
        else:
            message = await self._timed(reading, awaited)
        if message["type"] != "http.request":
            self.done = True
            return message
        self.size += len(message.get("body", b""))
        if self.limit is not None and self.size > self.limit:
            raise _BodyRefused(413, f"the request body is larger than {self.limit} bytes")
        self.done = not message.get("more_body", False)
        return message

    async def _timed(self, reading: Iterator[Any], awaited: Any) -> Message:
        """The rest of a read that waits (`reading` has handed the loop `awaited`), under the deadline."""
        self.task = task = asyncio.current_task()
        self.deadlines.watch(self)
        try:
            message: Message = await _resumed(reading, awaited)
            return message
        except asyncio.CancelledError:
            # Ours when the deadline passed and nobody else cancelled the task too (3.11+ counts requests).
            if self.expired and (sys.version_info < (3, 11) or (task is not None and task.uncancel() == 0)):
                timeout = self.deadlines.timeout
                raise _BodyRefused(408, f"the request body did not arrive within {timeout:g}s") from None
            raise
        finally:
            self.task = None
            self.deadlines.unwatch(self)


@types.coroutine
def _resumed(reading: Iterator[Any], awaited: Any) -> Generator[Any, Any, Message]:
    """Go on with an awaitable's iterator already stepped once by hand, which handed the event loop
    `awaited`: what `await` does after its first step (the loop's wake-ups and cancellations passed
    through). As `await` (PEP 380), an iterator with no `send` is stepped with `next`, and an error for
    one with no `throw` is raised here: a server's `receive` may be such (granian's is)."""
    while True:
        try:
            woken = yield awaited
        except BaseException as error:
            throw = getattr(reading, "throw", None)
            if throw is None:
                raise
            try:
                awaited = throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                awaited = next(reading) if woken is None else reading.send(woken)  # type: ignore[attr-defined]
            except StopIteration as done:
                return done.value


class _Guard:
    """The gateway's front door, in front of the cache.

    Every request: a path that could leave the upstream's base path is refused (400). LLM routes
    (all but /health, /metrics and /cache/*): the client key is checked when `auth.keys` is set
    (401), the upstream's URL is named to the cache in the ASGI scope (`UPSTREAM_SCOPE`, which no
    caller can reach; a caller's `x-llm-cache-upstream` header, the cache's own name, is dropped),
    and the body is bounded by `server.max_request_bytes` (413; 64 MiB when it is not set and bodies
    may be held whole: a router's, or calls judged by `allow`) and `server.body_read_timeout` (408).
    Management calls have their own admin key and a 1 MiB body limit.
    """

    def __init__(self, app: ASGIApp, gateway: _Gateway) -> None:
        self.app = app
        config = gateway.config
        self.keys = tuple(key.encode("utf-8") for key in config.auth.keys)
        self.limit = config.server.max_request_bytes
        if self.limit is None and (gateway.router is not None or gateway.allowed):  # bodies held whole
            self.limit = ROUTED_BODY_LIMIT
        self.deadlines = _Deadlines(config.server.body_read_timeout)
        self.bases = gateway.bases
        self.litellm_key = config.litellm_cache_key_header
        self.browsers = BrowserRules(config.server.allowed_hosts, config.server.allowed_origins)
        self.seen: dict[tuple[str, bytes, bool], tuple[str | None, str | None, str | None]] = {}

    def _facts(self, path: str, raw_path: bytes, anthropic: bool) -> tuple[str | None, str | None, str | None]:
        """The path's API family, its forwarded form (None: refused) and its upstream URL, worked out for a
        path `seen` does not hold: a path's facts never change, and most requests ask one of a few paths."""
        family = family_of(path, anthropic)
        forwarded = forwarded_path(raw_path)
        base = self.bases.get(family)
        upstream = None if base is None or forwarded is None else base.url(forwarded)
        if len(self.seen) >= _SEEN_PATHS:
            self.seen.clear()
        facts = self.seen[(path, raw_path, anthropic)] = (family, forwarded, upstream)
        return facts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw_path = scope.get("raw_path") or path.encode("utf-8")
        if scope.get("root_path"):  # under `--root-path` or a `Mount`: the path after it (one dict read)
            path, raw_path = routed_path(scope)
        headers, declared, given, host, origin, anthropic = _screened(scope["headers"])
        facts = self.seen.get((path, raw_path, anthropic)) or self._facts(path, raw_path, anthropic)
        family, forwarded, upstream = facts
        if forwarded is None:
            await _send_error(send, family, 400, REFUSED_PATH)
            return
        if declared is TWO_FRAMINGS:
            await _send_error(send, family, 400, TWO_FRAMINGS_REFUSED, close=True)
            return
        browsers = self.browsers  # (nearly every request: one dict read, no call)
        if (origin is not None or not browsers.passes.get(host)) and (
            page := browsers.refusal(scope.get("server"), host, origin, scope["headers"])
        ) is not None:
            await _send_error(send, family, 403, page)
            return
        limit = self.limit
        if path in _OPERATIONS:
            limit = MANAGEMENT_BODY_LIMIT if limit is None else min(limit, MANAGEMENT_BODY_LIMIT)
        else:
            if self.keys and not _authorized(self.keys, given, scope.get("query_string", b"")):
                await _send_error(send, family, 401, "a valid gateway key is required (Authorization: Bearer <key>)")
                return
            # the URL the request goes to (a router's deployments: the family's base), for the cache's key
            scope = {**scope, "headers": headers, UPSTREAM_SCOPE: upstream}
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(send, family, 413, f"the request body is larger than {limit} bytes", close=True)
            return
        reader = _BodyReader(receive, limit, self.deadlines)
        try:  # the first message now: a refusal there comes before the app can have answered
            reader.held = await reader()
        except _BodyRefused as refused:
            logger.info("request refused: %s", refused.message)
            await _send_error(send, family, refused.status, refused.message, close=True)
            return
        litellm_key = self.litellm_key
        if reader.done and not litellm_key:  # the whole body came at once (most do): nothing left to refuse
            await self.app(scope, reader, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if litellm_key:
                    message = _with_litellm_key(message)
            await send(message)

        try:
            await self.app(scope, reader, sending)
        except _BodyRefused as refused:  # a later piece of the body, maybe after the app began its answer
            logger.info("request refused: %s", refused.message)
            if not started:
                await _send_error(send, family, refused.status, refused.message, close=True)


async def _methods(request: Request) -> tuple[list[str] | None, bool]:
    """(the methods a request may be acted on as, whether its body was read whole to know them): its own,
    and any it names where a server behind may read one (`_overrides.py`: override headers, the query,
    a form or JSON body). None for a form that cannot be read and may name one."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    named = [request.method, *overrides.in_headers(request.headers.items()), *overrides.in_query(query)]
    content_type = request.headers.get("content-type", "")
    if not _json_or_form(request):
        return named, False
    body = await _decoded_body(request)
    in_body = None if body is None else overrides.in_body(content_type, body)
    return (None if in_body is None else [*named, *in_body]), True


_LIST_LIMIT = 16 * 1024 * 1024
"""The most bytes of a list answer read to show each caller its own entries (past it: a 502)."""
_REWRITTEN = frozenset({"content-length", "content-encoding", "etag", "transfer-encoding"})
"""The headers of an upstream answer that no longer describe the body the gateway rewrote."""

_DECODED_BODY = "llm_cache.gateway.decoded_body"
"""Where a request's scope keeps its body decoded (`_decoded_body`), for a second reader."""


async def _decoded_body(request: Request) -> bytes | None:
    """The request body as `_decoded` reads it, decoded once for both the readers of one request (the
    methods it names, the ids it names)."""
    if _DECODED_BODY not in request.scope:
        request.scope[_DECODED_BODY] = _decoded(request.headers.get("content-encoding"), await request.body())
    body: bytes | None = request.scope[_DECODED_BODY]
    return body


def _decoded(encoding: str | None, body: bytes) -> bytes | None:
    """`body` as a server behind reads it, which may decode its `content-encoding` first (gzip, deflate;
    at most `ROUTED_BODY_LIMIT` of it); None for an encoding it cannot decode (a method may be in it)."""
    try:
        if decompressor(encoding) is None:  # identity
            return body
    except ValueError:
        return None
    return decoded(encoding, body, ROUTED_BODY_LIMIT)


def _json_or_form(request: Request) -> bool:
    """Whether the request has a body the gateway reads whole before forwarding (a JSON or form body)."""
    return _has_body(request) and overrides.body_may_name(request.headers.get("content-type", ""))


def _read_for_ids(request: Request) -> bool:
    """Whether the request has a body read whole for the provider-held ids it names: any but a
    multipart upload's. A provider may parse JSON whatever type it is declared (`text/plain`, none)."""
    return _has_body(request) and not request.headers.get("content-type", "").lower().startswith("multipart/")


def _presented(request: Request) -> list[bytes]:
    """The keys a caller presented, where the guard reads a client key: its headers (as `_screened` reads
    them) and its query's `key`."""
    values = _screened(request.scope["headers"])[2]
    query = request.scope.get("query_string", b"")
    if query.find(b"key=") != -1:
        values += [v.encode("utf-8") for k, v in parse_qsl(query.decode("latin-1")) if k == "key"]
    return values


def _has_body(request: Request) -> bool:
    """Whether the request may carry a body (HTTP/2 and 3 may send one with no `content-length`)."""
    length = request.headers.get("content-length")
    if length is None:
        return "transfer-encoding" in request.headers or _ends_with_its_stream(request.scope)
    return length != "0"


def _ends_with_its_stream(scope: Scope) -> bool:
    """Whether the protocol ends the request body itself (HTTP/2 and 3: with the stream), so that a body
    may come with no `content-length` and no `transfer-encoding`; HTTP/1.1 has one only with either."""
    return scope.get("http_version", "1.1") not in ("1.1", "1.0")


def _screened(
    raw: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], bytes | None, list[bytes], bytes | None, bytes | None, bool]:
    """One pass over the request headers: the ones the app behind the guard gets (a copy, without
    whatever the caller sent as `x-llm-cache-upstream` and the headers its `Connection` headers name),
    the declared `content-length` (`TWO_FRAMINGS` beside another length or `transfer-encoding`),
    the client keys sent (a bearer token's scheme taken off), the `Host` and `Origin` sent (the
    first of each: h11 refuses a second `Host`, and a browser sends one `Origin`), and whether the
    headers kept name an `anthropic-version` (`family_of`: the proxy reads the family from those).

    A header named by `Connection` is for this hop only and is never forwarded, so it is dropped here,
    before the cache: a key or a scope read from it would name a request the upstream never gets. The
    client keys are read before (a key for the gateway may be meant for this hop only)."""
    declared, given, dropped, chunked = None, [], [], False
    host: bytes | None = None
    origin: bytes | None = None
    anthropic = False
    for name, value in raw:
        if name not in _SCREENED_NAMES:  # (most headers: one set lookup)
            continue
        if name == b"host":
            host = value if host is None else host
        elif name == b"content-length":
            declared = value if declared is None or declared == value else TWO_FRAMINGS
        elif name == b"transfer-encoding":  # chunks alone: another coding is a body read two ways too
            chunked = True
            declared = declared if value.strip().lower() == b"chunked" else TWO_FRAMINGS
        elif name in _CLIENT_KEY_HEADERS:
            if name == b"authorization":
                scheme, _, value = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    continue
            given.append(value.strip())
        elif name == _RAW_UPSTREAM:
            dropped.append(name)
        elif name == b"origin":
            origin = value if origin is None else origin
        elif name == _ANTHROPIC_VERSION:
            anthropic = True
        elif value not in _PLAIN_CONNECTION:  # a `connection` header naming other headers
            dropped += (option.strip().lower() for option in value.split(b","))
    if chunked and declared is not None:
        declared = TWO_FRAMINGS
    if not dropped:  # (most requests: the copy is made in C, not pair by pair)
        return list(raw), declared, given, host, origin, anthropic
    unwanted = set(dropped) - _FRAMING  # not this message's framing, which the server has read
    anthropic = anthropic and _ANTHROPIC_VERSION not in unwanted  # (as the app behind reads the family)
    return [pair for pair in raw if pair[0] not in unwanted], declared, given, host, origin, anthropic


def _with_litellm_key(start: Message) -> Message:
    """The response start with `x-litellm-cache-key` beside `x-cache-key`, as LiteLLM's clients read it."""
    headers = start.get("headers") or []
    for name, value in headers:
        if name == _RAW_KEY:
            return {**start, "headers": [*headers, (_RAW_LITELLM_KEY, value)]}
    return start


def _authorized(keys: tuple[bytes, ...], given: list[bytes], query: bytes) -> bool:
    """Whether one of the keys the request carries (in its headers, `given`, or its query) is a
    configured key; every pair is compared in constant time."""
    # (`find`, not `in`: CPython's `bytes in bytes` first tries the operand as an integer and formats
    # the TypeError it drops, about 1,800 instructions a request)
    if query.find(b"key=") != -1:
        given = given + [v.encode("utf-8") for k, v in parse_qsl(query.decode("latin-1")) if k == "key"]
    found = False
    for candidate in given:
        for key in keys:
            found |= hmac.compare_digest(candidate, key)
    return found


async def _send_error(send: Send, family: str | None, status: int, message: str, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json")]
    if close:  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    body = error_body(family, status, message)
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _wire_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]] | None:
    """The headers to send upstream as bytes (the latin-1 the server received, surrounding whitespace
    dropped), or None when one cannot be sent in HTTP/1.1: a name that is not a token, or a control
    character in a value (a server may pass them on; the upstream connection would refuse them)."""
    wire = []
    for name, value in headers:
        value = value.strip(" \t")
        if _TOKEN.fullmatch(name) is None or _CONTROL.search(value) is not None:
            return None
        wire.append((name.encode("latin-1"), value.encode("latin-1")))
    return wire


def _caller_headers_only(outgoing: httpx2.Request, accept_encoding: str | None, sent: set[str]) -> None:
    """Drop the client library's default headers the caller did not send, and ask for gzip or nothing.

    Compressed bodies are relayed as they are, so the upstream may only use an encoding the caller
    accepts, and the cache can only record gzip/deflate: anything else would make answers uncacheable.
    """
    for name in ("user-agent", "accept"):
        if name not in sent:
            outgoing.headers.pop(name, None)
    accepted = {token.split(";")[0].strip().lower() for token in (accept_encoding or "").split(",")}
    if "gzip" in accepted:
        outgoing.headers["accept-encoding"] = "gzip"
    else:
        outgoing.headers["accept-encoding"] = "identity"


def _forwarded_headers(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers to send upstream: no hop-by-hop headers (the guard has dropped the ones the
    `Connection` headers name, before the cache read them)."""
    return [(k, v) for k, v in items if k not in _REQUEST_DROP]


def _response_headers(items: Iterable[tuple[str, str]], dropped: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The upstream response headers to relay: as `_forwarded_headers`, no second `date`/`server`, and
    none of `dropped` (lower-case names)."""
    items = list(items)
    named = {token.strip().lower() for k, v in items if k.lower() == "connection" for token in v.split(",")}
    named |= dropped
    return [(k, v) for k, v in items if (lower := k.lower()) not in _RESPONSE_DROP and lower not in named]


async def _streamed_body(request: Request, headers: list[tuple[str, str]]) -> AsyncIterator[bytes] | bytes | None:
    """The request body as it arrives (never held whole), with its declared length when there is one.
    Under HTTP/2 and 3 a body may come with no length: its first piece says whether there is one, and
    is all of it when it came whole (sent with its length; nothing streamed for a GET with none)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) == 0:
            return b""
        headers.append(("content-length", length))
    elif "transfer-encoding" not in request.headers:
        if not _ends_with_its_stream(request.scope):
            return None  # no body
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        first: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return first or None
        return _rest_of_body(first, request.receive)
    return request.stream()


async def _rest_of_body(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    """A body whose `first` piece has been read, then the rest as it arrives."""
    yield first
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _without_client_keys(headers: list[tuple[str, str]], query: str) -> tuple[list[tuple[str, str]], str]:
    """The request without the key that authenticated the caller to the gateway."""
    headers = [(k, v) for k, v in headers if k.encode("latin-1") not in _CLIENT_KEY_HEADERS]
    return headers, without_query_credential(query)


def _with_credentials(
    family: str, api_key: str, headers: list[tuple[str, str]], query: str
) -> tuple[list[tuple[str, str]], str]:
    """Replace the caller's credentials with the configured upstream key."""
    headers = [(k, v) for k, v in headers if k not in CREDENTIAL_HEADERS]
    headers.append(auth_header(family, api_key))
    return headers, without_query_credential(query) if family == "gemini" else query


def build_router(config: GatewayConfig) -> Any:
    """A `router.Router` for the config's `model_list` / `router` sections, or None without them.

    `model_list` (with `router` as its `router_settings`) is a LiteLLM model list; a `router` section
    alone is any config the router's own loader reads (native `groups`, Portkey-like `targets`).
    Unless the config sets `unknown_models`, the gateway's router refuses models it does not serve.
    """
    if config.model_list is None and config.router is None:
        return None
    from llm_cache.router import ConfigError as RouterConfigError
    from llm_cache.router import Router

    source: dict[str, Any]
    if config.model_list is not None:
        source = {"model_list": config.model_list, "router_settings": config.router or {}}
    else:
        source = dict(config.router or {})
    try:
        router = Router(source)
    except RouterConfigError as error:
        raise ConfigError(f"{config.source or '<config>'}: router: {error}") from None
    if "unknown_models" not in router.settings.model_fields_set:
        # A gateway never sends a model outside its model_list to a default upstream with the caller's
        # token: the router answers 404 naming it (400 without a model) unless the config says otherwise.
        router.settings.unknown_models = "refuse"
    return router


def create_gateway(config: GatewayConfig | None = None, *, cache: Cache | None = None) -> Starlette:
    """The gateway app for `config` (default: the embedded default). `cache` overrides the configured one.

    With a `model_list` / `router` section, upstream requests go through the router (see `build_router`).
    """
    from ._asgi import CacheMiddleware

    config = config if config is not None else default_config()
    router = build_router(config)
    if cache is None and config.cache.enabled:
        cache = build_cache(config.cache)
    gateway = _Gateway(config, cache, router)
    routes = [
        Route("/health", gateway.health, methods=["GET"]),
        Route("/health/liveliness", gateway.liveliness, methods=["GET"]),
        Route("/health/readiness", gateway.readiness, methods=["GET"]),
        Route("/metrics", gateway.metrics, methods=["GET"]),
        Route("/cache/stats", gateway.stats, methods=["GET"]),
        Route("/cache/delete", gateway.delete, methods=["POST"]),
        Route("/cache/invalidate", gateway.invalidate, methods=["POST"]),
        Route("/cache/flush", gateway.flush, methods=["POST"]),
        Route("/cache/flushall", gateway.flushall, methods=["POST"]),
        Route("/cache/ping", gateway.ping, methods=["GET"]),
        Route("/cache/redis/info", gateway.redis_info, methods=["GET"]),
        Route("/cache/semantic/verifications", gateway.verifications, methods=["GET"]),
        Route("/{path:path}", gateway.proxy, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    middleware = [Middleware(_Guard, gateway=gateway)]
    if cache is not None:
        middleware.append(Middleware(CacheMiddleware, cache=cache, max_body_bytes=config.cache.max_body_bytes))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=gateway.lifespan,
        exception_handlers={ClientDisconnect: gateway.client_left},  # every route that reads a body
    )
    app.state.gateway = gateway
    app.state.cache = cache
    app.state.config = config
    app.state.router = router
    return app


def with_admin_key_from(config: GatewayConfig, name: str | None) -> GatewayConfig:
    """`config` with its admin key read from the environment variable `name` (`serve --admin-key-env`)."""
    if not name:
        return config
    key = os.environ.get(name, "").strip()
    if not key:
        raise ConfigError(f"--admin-key-env {name}: the environment variable {name} is not set or empty; export it")
    return config.model_copy(update={"admin_key": key})


def gateway_from_env() -> Starlette:
    """uvicorn factory for multi-worker serving: each worker loads the config named by the environment."""
    path = os.environ.get(_MANAGEMENT_ENV)
    try:
        config = load_config(path) if path else default_config()
        overrides = [item for item in os.environ.get(_UPSTREAMS_ENV, "").split("\n") if item]
        config = with_upstreams(config, overrides)
        config = with_admin_key_from(config, os.environ.get(ADMIN_KEY_ENV_ENV))
        return create_gateway(config)
    except ConfigError as error:
        raise SystemExit(f"llm-cache: {error}") from None
