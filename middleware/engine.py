"""The cache engine: every caching decision lives here.

The ASGI middleware and the httpx transports are thin adapters around one
`Cache`. Each intercepted call goes through the same four steps:

1. `prepare()` turns method, path, query, headers and body into a `CacheRequest`
   (or None for traffic that is not an LLM call, which passes through untouched);
2. `lookup()` answers HIT, MISS, REFRESH, BYPASS or "only-if-cached and missing",
   coalescing concurrent identical misses onto one upstream call;
3. `answer()` gives the status, headers and body of what the cache answers itself
   (a hit, or the 504 of only-if-cached), or None: the call goes upstream;
4. on a miss, a `Recorder` watches the upstream response as it streams through
   and stores it only if it was a complete 2xx JSON response or a stream that
   reached the provider's terminal event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .entry import Entry, EntryError, EntryMemo, pack
from .keys import (
    ANONYMOUS,
    DEFAULT_NAMESPACE,
    KeyBuilder,
    KeyFailure,
    KeyRequest,
    NoIdentity,
    ScopeFunction,
    ScopeRequest,
    _memo_hash,
    built_digest,
    compose_key,
    credential_scope,
    digest_of,
    function_scope,
    header_scope,
    key_query,
    namespace_prefix,
    parse_body,
    resolve_key_builder,
    validate_scope,
    volatile_set,
)
from .native import REFUSALS, CachedContent, CachedContents, PromptCaching, SideCall, refused_cached_content
from .policy import DEFAULT_POLICY, Policy, PolicyError, parse_policy
from .prepared_memo import PreparedMemo
from .providers import DEFAULT_ENDPOINTS, Endpoint, RequestView, Route, StreamAssembler, resolve
from .providers.base import StreamFilter
from .stores.base import LockingStore, Store, StoreError
from .stores.memory import MemoryStore
from .telemetry import Call, Telemetry

if TYPE_CHECKING:
    from .semantic import SemanticCache

logger = logging.getLogger("llm_cache.middleware")

CACHE_HEADER = "x-cache"
KEY_HEADER = "x-cache-key"
UPSTREAM_HEADER = "x-llm-cache-upstream"
"""Set by the adapters that know the upstream (gateway, transports), never by callers: the upstream URL
(scheme, host, port, path; no query), which the key then includes."""
_RAW_CACHE_HEADER = CACHE_HEADER.encode("latin-1")
_RAW_KEY_HEADER = KEY_HEADER.encode("latin-1")
_RAW_MATCH_HEADER = b"x-cache-match"
"""On semantic hits only: `semantic` (with `x-cache-similarity`, the cosine similarity)."""
_RAW_SIMILARITY_HEADER = b"x-cache-similarity"
_MEMO_LIMIT = 1024
"""Most distinct request paths whose route a Cache remembers (and credentials whose scope hash it does)."""
_WARNING_INTERVAL = 60.0
"""Seconds between two WARNINGs about requests the engine could not key."""
_LOCK_POLL_FIRST = 0.005
_LOCK_POLL_MAX = 0.1
"""Seconds between store polls while another pod holds a key's lock: doubling from the first to the max."""


FALLBACK_FROM_HEADER = "x-router-fallback-from"
"""Set by the router on an answer from a fallback group (naming the requested group)."""
ORIGIN_HEADERS = frozenset(
    {"x-router-deployment", "x-router-model", "x-router-family", "x-router-group", FALLBACK_FROM_HEADER}
)
"""Response headers saying what produced an answer: stored with the entry and replayed on hits."""
STREAM_USAGE = "stream usage capture"
PROMPT_CACHE_HINTS = "prompt-caching hints"
_USAGE_WORDS = (b"stream_options", b"include_usage")
_HINT_WORDS = (b"cache_control", b"prompt_cache_key", b"prompt_cache_retention", b"cachepoint")
"""Words of a 400's body that name what the cache added (usage capture, prompt-caching hints)."""


def _upstream_of(headers: Mapping[str, str], endpoint: Endpoint) -> str:
    """The upstream a refusal is remembered for: the URL the adapter names (transports, gateway, a
    `CacheMiddleware` given `upstream`), else the request's host and endpoint."""
    return headers.get(UPSTREAM_HEADER) or f"{headers.get('host') or ''} {endpoint.name}"


class Outcome(str, Enum):
    """The `x-cache` answer to a call (and the telemetry result label, lower-cased)."""

    HIT = "HIT"
    MISS = "MISS"
    REFRESH = "REFRESH"
    BYPASS = "BYPASS"


class CacheSettings(BaseModel):
    """Engine settings; `Cache(**kwargs)` validates through this model."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    ttl: float | None = Field(600.0, description="Seconds an entry lives; None keeps it until evicted.")
    key_prefix: str = Field("", description="Prepended to every key; change it to invalidate everything.")
    scope: Any = Field(
        "credential",
        description="'credential', 'shared', 'header:<name>', or a scope function (or its dotted path) that "
        "returns a request's identity.",
    )
    anonymous: Literal["bypass", "shared"] = Field(
        "bypass", description="Requests with no identity the scope can read: not cached, or sharing one scope."
    )
    ignored_fields: tuple[str, ...] = Field((), description="Extra body fields that never change the key.")
    key_builder: Any = Field(None, description="Callable or dotted path `pkg.mod:func`.")
    mode: Literal["default", "opt_in"] = "default"
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_response_bytes: int = Field(16 * 1024 * 1024, gt=0)
    capture_stream_usage: bool = Field(
        True, description="Ask OpenAI-style streams for their usage chunk (hidden from callers who did not ask)."
    )
    coalesce: bool = True
    coalesce_timeout: float = Field(120.0, gt=0)
    distributed_lock: bool = Field(
        True, description="With a store that can lock (Redis), one pod per key goes upstream; the others wait."
    )
    lock_ttl: float = Field(30.0, gt=0, description="Seconds a pod's lock on a key lives if it is never released.")
    lock_wait: float = Field(
        30.0, gt=0, description="Most seconds a miss waits for another pod's answer before going upstream itself."
    )
    cacheable_statuses: frozenset[int] = frozenset({200})
    cache_fallbacks: bool = Field(
        False,
        description="Store answers a router's fallback group gave in place of the requested one "
        "(by default they are served but not stored, so the requested model answers again once it recovers).",
    )
    fallback_ttl: float | None = Field(None, gt=0, description="Seconds a stored fallback answer lives (default: ttl).")
    prompt_caching: PromptCaching = Field(
        default_factory=PromptCaching,
        description="Provider-native prompt caching hints added to requests on their way upstream.",
    )

    @field_validator("ttl")
    @classmethod
    def _positive_ttl(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("ttl must be a positive number of seconds, or null for no expiry")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: Any) -> str | ScopeFunction:
        return validate_scope(value)

    @field_validator("key_builder")
    @classmethod
    def _key_builder(cls, value: Any) -> KeyBuilder | None:
        if value is not None and not (callable(value) or isinstance(value, str)):
            raise ValueError("key_builder must be a callable or a dotted path 'package.module:function'")
        return resolve_key_builder(value)


@dataclass
class CacheStats:
    """Counters of one Cache instance (telemetry exports richer views of the same events)."""

    hits: int = 0
    misses: int = 0
    refreshes: int = 0
    bypasses: int = 0
    stored: int = 0
    not_stored: int = 0
    store_errors: int = 0
    coalesced: int = 0
    lock_waits: int = 0
    """Misses that found another pod holding the key's lock and waited for its answer."""
    lock_hits: int = 0
    """Of those, the ones answered from the entry the other pod stored."""
    invalid_entries: int = 0
    oversized: int = 0
    semantic_hits: int = 0
    """Hits served from a similar prompt's answer (counted in `hits` too)."""
    semantic_errors: int = 0
    """Embedder or vector index failures (the request went upstream)."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def upstream_name(url: Any) -> str:
    """How an httpx URL names its upstream in `UPSTREAM_HEADER`: `scheme://host:port/path`, no query."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.partition(b'?')[0].decode('ascii')}"


@dataclass(slots=True)
class CacheRequest:
    """An intercepted LLM call, as the engine sees it."""

    route: Route
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    """The parsed body, read only: calls prepared from the same request share it (`again`)."""
    forward_body: bytes
    """The body to send upstream: the original bytes, or re-encoded without the `cache` field."""
    stream: bool
    policy: Policy
    key: str
    bypass: str | None = None
    """Why this call is not cached (opt-in mode, ...), or None."""
    captured: bool = False
    """True when `forward_body` was rewritten by the provider's `capture_body` (see Recorder.feed)."""
    call: Call | None = None
    """This call's telemetry (span, decision), set by `Cache.begin` or the first `lookup`."""
    cached_content: CachedContent | None = None
    """The Gemini cachedContent `upstream_body` named instead of the prefix, if any."""
    caller_body: bytes = b""
    """The body as the caller meant it (without the `cache` field), before any addition of the cache's."""
    hinted: bool = False
    """True when `upstream_body` added prompt-caching hints."""
    refused: str | None = None
    """What the upstream's 400 named among the cache's additions, while the request is sent again without it."""
    scope: str = ""
    """The key's scope segment (the semantic context is keyed under it too); empty when not cached."""
    exact: bool = False
    """The body took `parse_body`'s exact path (numbers a double cannot carry)."""

    @property
    def endpoint(self) -> Endpoint:
        return self.route.endpoint

    @property
    def model(self) -> str | None:
        return self.route.endpoint.model(self.route, self.body)

    def view(self) -> RequestView:
        return RequestView(self.body, self.query, self.route, self.stream)

    def again(self, headers: Mapping[str, str]) -> CacheRequest:
        """This request as `prepare` made it, for another call with these (equally read) headers."""
        return CacheRequest(
            self.route,
            self.method,
            self.path,
            self.query,
            headers,
            self.body,
            self.forward_body,
            self.stream,
            self.policy,
            self.key,
            self.bypass,
            self.captured,
            caller_body=self.caller_body,
            scope=self.scope,
            exact=self.exact,
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """A call the engine answers itself with a client error (a cache control it cannot honour)."""

    status: int
    body: bytes

    def response(self) -> ResponseParts:
        return ResponseParts(self.status, _json_headers(self.body), self.body)


@dataclass(frozen=True, slots=True)
class Passthrough:
    """An LLM path whose body the engine cannot use (malformed JSON, too large): forward as is."""

    reason: str
    header: ClassVar[tuple[str, str]] = (CACHE_HEADER, "BYPASS")
    """Added to the forwarded response, so the caller can see the cache stood aside."""


@dataclass(slots=True)
class Lookup:
    outcome: Outcome
    entry: Entry | None = None
    only_if_cached_miss: bool = False
    coalesced: bool = False
    store_error: bool = False
    flight: _Flight | None = None
    lock: str | None = None
    """The token of this pod's distributed lock on the key, while this call leads it upstream."""
    match: str = "exact"
    """How a hit matched: `exact`, or `semantic` (a similar prompt's answer)."""
    similarity: float | None = None
    meaning: _Meaning | None = None
    """The miss's context, text and vector, kept so the answer is indexed once it is stored."""
    meaning_failed: bool = False
    """The embedder or index failed on this miss: its answer is not indexed (no second attempt)."""


@dataclass(frozen=True, slots=True)
class _Meaning:
    context: str
    text: str
    vector: Any


@dataclass(slots=True)
class ResponseParts:
    """A response the engine answers itself, `content-length` included; raw header pairs, as both
    ASGI and httpx take them."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(slots=True)
class _Flight:
    key: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Entry | None] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()


class Cache:
    """Exact-match LLM response cache over any `Store`.

    >>> cache = Cache(store=MemoryStore(max_entries=10_000), ttl=900)
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        endpoints: tuple[Endpoint, ...] = DEFAULT_ENDPOINTS,
        telemetry: Telemetry | None = None,
        semantic: SemanticCache | None = None,
        **settings: Any,
    ) -> None:
        self.settings = CacheSettings(**settings)
        self.semantic = semantic
        """Looks up misses by meaning (`llm_cache.middleware.semantic.SemanticCache`), or None: exact only."""
        self._background: set[asyncio.Future[None]] = set()
        """Semantic indexing that nobody waits for (answers to refreshes), kept until done."""
        self.store: Store = store if store is not None else MemoryStore()
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        _check_prefixes(self.store, self.settings.key_prefix)
        self.telemetry.watch_store(self.store)
        self.endpoints = endpoints
        self.stats = CacheStats()
        self._key_builder: KeyBuilder | None = self.settings.key_builder
        self._flights: dict[str, _Flight] = {}
        self._locker: LockingStore | None = None
        """The store, when it can lock keys across pods (checked once here, not per request)."""
        if self.settings.distributed_lock and isinstance(self.store, LockingStore):
            self._locker = self.store
        prompt_caching = self.settings.prompt_caching
        self._prompt_caching = prompt_caching if prompt_caching.enabled else None
        self._cached_contents = (
            CachedContents(prompt_caching.gemini, self.store, self.settings.key_prefix)
            if prompt_caching.gemini.cached_contents
            else None
        )
        self._routes: dict[str, Route | None] = {}
        self._entries = EntryMemo()
        self._memo: PreparedMemo[CacheRequest] | None = None
        """Requests prepared before, by what their preparation read (`prepared_memo.py`); not with a
        scope function or a key builder, the operator's code, which may read anything."""
        if self._key_builder is None and not callable(self.settings.scope):
            self._memo = PreparedMemo()
        self._scopes: dict[str, str] = {}
        self._warned_at = -float("inf")
        self._refusals: dict[str, frozenset[str]] = {}
        """Upstream (host and endpoint) -> the additions it refused with a 400 (`retry_body`)."""
        ignored = self.settings.ignored_fields
        self._volatile = {endpoint.name: volatile_set(ignored, endpoint.volatile_fields) for endpoint in endpoints}

    # -- 1. prepare ---------------------------------------------------------------------------

    def route(self, method: str, path: str) -> Route | None:
        """The provider route of an LLM call, or None for traffic the cache leaves alone."""
        if method != "POST":
            return None
        routes = self._routes
        if path in routes:
            return routes[path]
        if len(routes) >= _MEMO_LIMIT:  # many distinct paths (Azure deployments, Gemini models): start over
            routes.clear()
        route = routes[path] = resolve(path, self.endpoints)
        return route

    def prepare(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        repeated: Collection[str] = (),
        asgi_scope: Mapping[str, Any] | None = None,
    ) -> CacheRequest | Passthrough | Rejection | None:
        """Classify a request. `headers` must answer `.get()` for lower-case names."""
        route = self.route(method, path)
        if route is None:
            return None
        return self.prepare_route(route, method, path, query, headers, body, repeated=repeated, asgi_scope=asgi_scope)

    def prepare_route(
        self,
        route: Route,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        repeated: Collection[str] = (),
        asgi_scope: Mapping[str, Any] | None = None,
    ) -> CacheRequest | Passthrough | Rejection:
        """The engine's view of an LLM call. Never raises: a request it cannot key is a `Passthrough`.

        `repeated` names the headers the request sent more than once (adapters that collapse headers
        into a dict pass it; only credential headers matter). `asgi_scope` is the ASGI scope a scope
        function may read (CacheMiddleware passes it)."""
        try:
            memo = self._memo
            if memo is None or type(body) is not bytes:  # (a bytearray cannot be a dict key)
                return self._prepare(route, method, path, query, headers, body, repeated, asgi_scope)
            identity = (method, path, query, body, repeated if isinstance(repeated, frozenset) else frozenset(repeated))
            known = memo.find(identity, headers)
            if known is not None:
                return known.again(headers)
            reads = memo.recorder(identity, headers)
            if reads is None:
                return self._prepare(route, method, path, query, headers, body, repeated, asgi_scope)
            prepared = self._prepare(route, method, path, query, reads, body, repeated, asgi_scope)
            if isinstance(prepared, CacheRequest):
                prepared.headers = headers
                if prepared.bypass is None:
                    memo.add(identity, reads, prepared.again(headers))
            return prepared
        except Exception as error:  # fail open: a request the engine cannot read goes upstream untouched
            self._warn(f"{type(error).__name__} while preparing a request; forwarding it untouched", error)
            return self._passthrough(route, path, f"the request could not be keyed ({type(error).__name__})")

    def _prepare(
        self,
        route: Route,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        repeated: Collection[str],
        asgi_scope: Mapping[str, Any] | None,
    ) -> CacheRequest | Passthrough | Rejection:
        if len(body) > self.settings.max_body_bytes:
            return self.oversized(route, path)
        try:
            parsed, exact = parse_body(body)
        except ValueError:
            return self._passthrough(route, path, "malformed JSON body")
        if not isinstance(parsed, dict):
            return self._passthrough(route, path, "JSON body is not an object")

        endpoint = route.endpoint
        cache_field = None
        forward_body = body
        if "cache" in parsed:  # the control field, in any form (`null` too), is never forwarded
            if endpoint.signed_body:
                message = (
                    "the body's cache field would change a signed body; use the x-cache-* or Cache-Control headers"
                )
                return Rejection(400, _error_body(message, "cache"))
            cache_field = parsed.pop("cache")
            forward_body = orjson.dumps(parsed)
        try:
            policy = parse_policy(headers, cache_field)
        except PolicyError as error:
            return Rejection(400, _error_body(error.message, error.param))

        namespace = policy.namespace or DEFAULT_NAMESPACE
        stream = endpoint.is_stream(route, query, parsed)
        bypass = None
        if self.settings.mode == "opt_in" and policy.use_cache is not True:
            bypass = "opt-in mode and the request did not ask for the cache"
        elif policy.use_cache is False:
            bypass = "the request asked not to use the cache"
        else:
            bypass = endpoint.server_state(route, headers, parsed)
        key = scope = ""
        try:
            scope = self._scope(route, path, query, headers, repeated, asgi_scope)
            key = self._key(route, query, headers, parsed, namespace, scope, exact)
        except (NoIdentity, KeyFailure) as error:
            bypass = self._unkeyed(path, error)
        captured = False
        caller_body = forward_body
        if stream and bypass is None and not policy.no_store and self.settings.capture_stream_usage:
            capture = endpoint.capture_body(parsed) if self._accepts(headers, endpoint, STREAM_USAGE) else None
            if capture is not None:
                forward_body, captured = orjson.dumps(capture), True
        return CacheRequest(
            route,
            method,
            path,
            query,
            headers,
            parsed,
            forward_body,
            stream,
            policy,
            key,
            bypass,
            captured,
            caller_body=caller_body,
            scope=scope,
            exact=exact,
        )

    def _scope(
        self,
        route: Route,
        path: str,
        query: str,
        headers: Mapping[str, str],
        repeated: Collection[str],
        asgi_scope: Mapping[str, Any] | None,
    ) -> str:
        """The key's scope segment; `NoIdentity` when the request has none (unless anonymous requests share)."""
        scope = self.settings.scope
        if scope == "shared":
            return "shared"
        try:
            if scope == "credential":
                auth = route.auth or route.endpoint.auth  # `route.credentials`, without a call
                return credential_scope(auth, headers, query, repeated, self._scopes)
            if isinstance(scope, str):
                return header_scope(scope[len("header:") :], headers, repeated, self._scopes)
            return function_scope(scope, ScopeRequest(path, query, headers, asgi_scope), self._scopes)
        except NoIdentity as missing:
            if missing.anonymous and self.settings.anonymous == "shared":
                return ANONYMOUS
            raise

    def _unkeyed(self, path: str, error: NoIdentity | KeyFailure) -> str:
        """The bypass reason of a request without a key (`lookup` counts it and logs it at DEBUG);
        a failure, rather than a missing identity, is a WARNING too."""
        reason = str(error)
        if isinstance(error, KeyFailure) or not error.anonymous:
            self._warn(f"not caching a request to {path}: {reason}", error.__cause__)
        return reason

    def _warn(self, message: str, error: BaseException | None) -> None:
        """A WARNING at most once a minute (a hostile or broken caller must not flood the log)."""
        now = time.monotonic()
        if now - self._warned_at >= _WARNING_INTERVAL:
            self._warned_at = now
            logger.warning("%s (for a minute, more such warnings are logged at DEBUG)", message, exc_info=error)
        else:
            logger.debug("%s", message, exc_info=error)

    @property
    def rewrites_upstream(self) -> bool:
        """Whether `upstream_body` can differ from `forward_body` (prompt caching is on)."""
        return self._prompt_caching is not None

    async def upstream_body(self, request: CacheRequest, side_call: SideCall | None = None) -> bytes:
        """The body to send upstream on a miss: `forward_body`, with the provider's prompt-caching
        hints added when `prompt_caching` asks for them (the key was computed before, from the
        caller's body). `side_call` lets Gemini's cachedContents be created through the adapter's own
        way upstream. Adapters call it once per upstream call, and `retry_body` on its answer."""
        body = request.forward_body
        caching = self._prompt_caching
        if caching is None or not self._accepts(request.headers, request.endpoint, PROMPT_CACHE_HINTS):
            return body
        endpoint = request.endpoint
        try:
            parsed = parse_body(body)[0]  # parsed again (and only) on the way upstream: hits never pay for it
            changes = caching.rewrite(endpoint.family, endpoint.name, parsed)
            contents = self._cached_contents
            if contents is not None and side_call is not None and endpoint.family == "gemini":
                named = await contents.rewrite(request.path, request.query, request.headers, parsed, side_call)
                if named is not None:
                    request.cached_content = named
                    changes.append("gemini_cached_content")
            rewritten = orjson.dumps(parsed) if changes else body
        except Exception:  # fail open: the request goes out as the caller wrote it
            logger.warning("prompt-caching rewrite failed; sending the request as written", exc_info=True)
            request.cached_content = None
            return body
        if changes and request.call is not None:
            request.call.prompt_caching(changes)
        request.hinted = any(change != "gemini_cached_content" for change in changes)
        return rewritten

    def holds_refusals(self, request: CacheRequest) -> bool:
        """Whether the upstream's answer may refuse something the cache added to the request (usage
        capture, prompt-caching hints, a Gemini cachedContent): if so, adapters check `may_retry`
        before relaying the answer."""
        return request.captured or request.hinted or request.cached_content is not None

    def may_retry(self, request: CacheRequest, status: int) -> bool:
        """Whether an answer with `status` may refuse something the cache added to the request: if so,
        the adapter reads its (small, error) body and asks `retry_body`."""
        if request.cached_content is not None and status in REFUSALS:
            return True
        return status == 400 and (request.captured or request.hinted)

    async def retry_body(self, request: CacheRequest, status: int, error: bytes) -> bytes | None:
        """The body to send once more when the provider refused what the cache added: a cachedContent
        it no longer has (the handle is forgotten), or a field it does not know (`stream_options`,
        `cache_control`, ...: the refusal is remembered for this upstream, so it is not added again).
        None: relay the answer as it is (the request itself was refused, and would be again)."""
        named = request.cached_content
        if named is not None and self._cached_contents is not None and refused_cached_content(status, error):
            request.cached_content = None
            await self._cached_contents.forget(named)
            return request.forward_body
        if status != 400:
            return None
        lowered = error.lower()
        for addition, words in ((STREAM_USAGE, _USAGE_WORDS), (PROMPT_CACHE_HINTS, _HINT_WORDS)):
            added = request.captured if addition is STREAM_USAGE else request.hinted
            if added and any(word in lowered for word in words):
                request.captured = request.hinted = False
                request.refused = addition  # remembered once the request succeeds without it (`refused`)
                return request.caller_body
        return None

    def refused(self, request: CacheRequest, status: int) -> None:
        """The answer to a request sent again without what the upstream named in its 400: a success
        proves the addition was the problem, so it is not added for this upstream again. (Remembered
        only then: a caller whose own malformed field the upstream names cannot switch it off for all.)"""
        addition, request.refused = request.refused, None
        if addition is None or not 200 <= status < 300:
            return
        self._refuse(request.headers, request.endpoint, addition)
        logger.warning(
            "upstream %s refused the %s the cache adds; sending without it from now on",
            _upstream_of(request.headers, request.endpoint),
            addition,
        )

    def _accepts(self, headers: Mapping[str, str], endpoint: Endpoint, addition: str) -> bool:
        refused = self._refusals.get(_upstream_of(headers, endpoint))
        return refused is None or addition not in refused

    def _refuse(self, headers: Mapping[str, str], endpoint: Endpoint, addition: str) -> None:
        if self._memo is not None:
            self._memo.clear()  # preparations made with the addition (usage capture) are out of date
        upstream = _upstream_of(headers, endpoint)
        if len(self._refusals) >= _MEMO_LIMIT and upstream not in self._refusals:
            self._refusals.clear()
        self._refusals[upstream] = self._refusals.get(upstream, frozenset()) | {addition}

    def oversized(self, route: Route, path: str) -> Passthrough:
        """A body over the size limit: counted, and forwarded untouched. Adapters that stop reading
        a body early (the ASGI middleware streams it) call this themselves."""
        self.stats.oversized += 1
        return self._passthrough(route, path, "body over max_body_bytes")

    def _passthrough(self, route: Route, path: str, reason: str) -> Passthrough:
        self.stats.bypasses += 1
        self.telemetry.passthrough(route.endpoint.family, path, reason)
        return Passthrough(reason)

    def _key(
        self,
        route: Route,
        query: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        namespace: str,
        scope: str,
        exact: bool,
    ) -> str:
        endpoint = route.endpoint
        model = endpoint.model(route, body)
        volatile = self._volatile[endpoint.name]
        keyed_query = key_query(query)
        if endpoint.keyed_headers:  # settings some APIs take in headers (Bedrock's guardrails, trace, ...)
            keyed_query += endpoint.header_key(headers)
        if self._key_builder is None:  # the hot path: no KeyRequest to build
            digest = digest_of(endpoint.family, endpoint.name, model, route.model, keyed_query, body, volatile, exact)
        else:
            key_request = KeyRequest(
                family=endpoint.family,
                endpoint=endpoint.name,
                model=model,
                target=route.model,
                body=body,
                query=keyed_query,
                headers=headers,
                volatile_fields=volatile,
                exact=exact,
            )
            digest = built_digest(self._key_builder, key_request)
        upstream = headers.get(UPSTREAM_HEADER)
        if upstream:  # the answers of two upstream URLs never mix
            digest = f"u{_memo_hash(endpoint.upstream_identity(upstream), self._scopes)}.{digest}"
        return compose_key(self.settings.key_prefix, namespace, scope, digest)

    def key_for(
        self,
        path: str,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        query: str = "",
        method: str = "POST",
    ) -> str:
        """The key a request would be stored under, computed ahead of time (for targeted deletes).

        `path` is the request's path as the ASGI middleware sees it, or the full URL the request is
        sent to (`https://api.openai.com/v1/chat/completions`): the transports and the gateway key
        their entries by that URL (so two upstreams never share one), and so must a targeted delete."""
        return self._prepared(path, body, headers, query, method).key

    def _prepared(
        self,
        path: str,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None,
        query: str,
        method: str = "POST",
    ) -> CacheRequest:
        try:
            raw = body if isinstance(body, bytes) else orjson.dumps(dict(body))
        except TypeError as error:  # orjson.JSONEncodeError: nested too deep, or not JSON
            raise ValueError(f"the body cannot be encoded as JSON ({error})") from None
        lowered = _LowerHeaders(headers or {})
        if path.startswith(("http://", "https://")):  # a full URL: keyed as the transports key it
            url = urlsplit(path)
            lowered[UPSTREAM_HEADER] = f"{url.scheme}://{url.netloc}{url.path}"
            path, query = url.path, query or url.query
        prepared = self.prepare(method, path, query, lowered, raw)
        if not isinstance(prepared, CacheRequest):
            raise ValueError(f"not a cacheable LLM request: {path!r}")
        if not prepared.key:
            raise ValueError(f"{path!r}: this request is never cached ({prepared.bypass})")
        return prepared

    # -- 2. lookup ----------------------------------------------------------------------------

    def begin(self, request: CacheRequest, kind: Literal["client", "internal"] = "internal") -> Call:
        """Start this call's telemetry (its span) in the caller's context; adapters call it before `lookup`
        (the transports with "client", the ASGI middleware with "internal"). `lookup` calls it if they don't."""
        call = request.call = self.telemetry.begin(request, kind)
        return call

    async def lookup(self, request: CacheRequest) -> Lookup:
        call = request.call if request.call is not None else self.begin(request)
        lookup = await self._lookup(request)
        call.decided(lookup)
        return lookup

    async def _lookup(self, request: CacheRequest) -> Lookup:
        if request.bypass is not None:
            self.stats.bypasses += 1
            logger.debug("CACHE BYPASS path=%s reason=%s", request.path, request.bypass)
            return Lookup(Outcome.BYPASS)
        policy = request.policy
        if policy.no_cache:
            self.stats.refreshes += 1
            return Lookup(Outcome.REFRESH)

        lookup = await self._read(request)
        if lookup.entry is None and self.semantic is not None and not lookup.store_error:
            similar = await self._by_meaning(request, lookup)
            if similar is not None:
                return self._count(similar, request)
        if lookup.entry is not None or not self.settings.coalesce:
            return self._count(lookup, request)

        flight = self._flights.get(request.key)
        loop = asyncio.get_running_loop()
        if flight is not None and flight.loop is loop:
            try:
                entry = await asyncio.wait_for(asyncio.shield(flight.future), self.settings.coalesce_timeout)
            except asyncio.TimeoutError:
                entry = None
            if entry is not None and self._usable(entry, request):
                self.stats.coalesced += 1
                return self._count(Lookup(Outcome.HIT, entry, coalesced=True), request)
            return self._count(lookup, request)
        if flight is None and not policy.no_store:
            lookup.flight = _Flight(request.key, loop)
            self._flights[request.key] = lookup.flight
            if self._locker is not None and not lookup.store_error and not policy.only_if_cached:
                return await self._lead(self._locker, request, lookup)
        return self._count(lookup, request)

    async def _lead(self, locker: LockingStore, request: CacheRequest, lookup: Lookup) -> Lookup:
        """Distributed single-flight for this process's leader of a miss.

        Take the key's lock in the store and go upstream (`lookup.lock` holds the token until the
        Recorder releases it). If another pod holds the lock, poll the store with a doubling delay
        for the entry it will write, at most `lock_wait` seconds; when the lock frees up without an
        entry (its holder failed, or its lock expired) take it over. Any store error: go upstream.
        """
        try:
            entry, waited = await self._wait_or_lock(locker, request, lookup)
        except BaseException:  # cancelled while waiting: release this process's waiters and the lock
            self._land(lookup.flight, None)
            await asyncio.shield(asyncio.ensure_future(self._unlock(request.key, lookup)))
            raise
        if entry is None:
            return self._count(lookup, request)
        if waited:
            self.stats.lock_hits += 1
        self._land(lookup.flight, entry)  # this process's coalesced waiters get it too
        return self._count(Lookup(Outcome.HIT, entry, coalesced=True), request)

    async def _wait_or_lock(
        self, locker: LockingStore, request: CacheRequest, lookup: Lookup
    ) -> tuple[Entry | None, bool]:
        """(the entry another pod stored, whether we waited for it), or (None, _) to go upstream."""
        key = request.key
        settings = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.lock_wait
        delay = _LOCK_POLL_FIRST
        waited = False
        while True:
            try:
                lookup.lock = await locker.try_lock(key, settings.lock_ttl)
                if lookup.lock is not None:
                    # the holder may have stored and unlocked between our read and our lock: look again
                    entry = await self._poll(request)
                    if entry is not None:
                        await self._unlock(key, lookup)
                    return entry, waited
            except Exception as error:  # fail open (a lock we got is released by the Recorder)
                self._store_failed("lock", error)
                return None, waited
            if not waited:
                waited = True
                self.stats.lock_waits += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None, waited
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _LOCK_POLL_MAX)
            try:
                entry = await self._poll(request)
            except Exception as error:  # fail open
                self._store_failed("get", error)
                return None, waited
            if entry is not None:
                return entry, waited

    async def _poll(self, request: CacheRequest) -> Entry | None:
        """The usable entry for `request` another pod may have stored (store errors propagate)."""
        entry = await self._stored(request.key)
        return entry if entry is not None and self._usable(entry, request) else None

    async def _stored(self, key: str) -> Entry | None:
        """The readable entry stored under `key`, if any, whatever its age (store errors propagate).
        An unreadable one is left for the next exact read of the key, which deletes it."""
        data = await self.store.get(key)
        if data is None:
            return None
        try:
            entry = self._entries.unpack(data)
        except EntryError:
            return None
        return entry if entry.fingerprint == key else None

    # -- semantic lookup ------------------------------------------------------------------------

    async def _meaning(self, request: CacheRequest) -> _Meaning | None:
        """The request's context digest, last user text and its vector; None if it is not eligible."""
        semantic = self.semantic
        if semantic is None:
            return None
        split = request.endpoint.semantic_query(request.body)
        if split is None or not semantic.eligible(split[1]):
            return None
        context_body, text = split
        namespace = request.policy.namespace or DEFAULT_NAMESPACE
        context = self._key(
            request.route, request.query, request.headers, context_body, namespace, request.scope, request.exact
        )
        vector = await semantic.embed(text)
        # The digest of the context's whole key: prefix, namespace and credential scope included.
        return _Meaning(hashlib.sha256(context.encode()).hexdigest()[:32], text, vector)

    async def _by_meaning(self, request: CacheRequest, lookup: Lookup) -> Lookup | None:
        """A hit on a similar prompt's stored answer in the same context, or None (fail open)."""
        semantic = self.semantic
        assert semantic is not None
        try:
            meaning = lookup.meaning = await self._meaning(request)
            if meaning is None:
                return None
            matches = await semantic.matches(meaning.context, meaning.text, meaning.vector)
        except Exception as error:
            lookup.meaning_failed = True
            self._semantic_failed("semantic_search", error)
            return None
        for match in matches:
            try:
                entry = await self._stored(match.key)
            except Exception as error:
                self._store_failed("get", error)
                return None
            if entry is None:  # gone from the store: so is its row
                await self._forget(match.key)
                continue
            if not self._usable(entry, request):
                continue  # too old for this request only: the row stays
            self.stats.semantic_hits += 1
            return Lookup(Outcome.HIT, entry, match="semantic", similarity=match.similarity)
        return None

    async def _remember(self, request: CacheRequest, lookup: Lookup) -> None:
        """Index a stored answer by meaning (never raises). A miss's vector is indexed right away;
        an answer without one (a refresh) is embedded in the background, so no caller waits."""
        if self.semantic is None or lookup.meaning_failed:
            return
        if lookup.meaning is not None:
            await self._index(request, lookup.meaning)
            return
        task = asyncio.ensure_future(self._embed_and_index(request))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _embed_and_index(self, request: CacheRequest) -> None:
        try:
            meaning = await self._meaning(request)
        except Exception as error:
            self._semantic_failed("semantic_index", error)
            return
        if meaning is not None:
            await self._index(request, meaning)

    async def _index(self, request: CacheRequest, meaning: _Meaning) -> None:
        assert self.semantic is not None
        ttl = request.policy.ttl if request.policy.ttl is not None else self.settings.ttl
        try:
            await self.semantic.remember(meaning.context, request.key, meaning.text, meaning.vector, ttl)
        except Exception as error:
            self._semantic_failed("semantic_index", error)

    async def _forget(self, key: str) -> None:
        if self.semantic is None:
            return
        try:
            await self.semantic.forget(key)
        except Exception as error:
            self._semantic_failed("semantic_index", error)

    def _semantic_failed(self, operation: str, error: Exception) -> None:
        self.stats.semantic_errors += 1
        self.telemetry.store_error(operation, error)

    async def _unlock(self, key: str, lookup: Lookup) -> None:
        """Release the call's distributed lock, if it holds one (never raises: it expires anyway)."""
        token, lookup.lock = lookup.lock, None
        if token is None or self._locker is None:
            return
        try:
            await self._locker.unlock(key, token)
        except Exception as error:
            self._store_failed("unlock", error)

    async def _read(self, request: CacheRequest) -> Lookup:
        key = request.key
        call = request.call
        span = call.child("llm_cache.lookup") if call is not None else None
        started = time.perf_counter()
        try:
            data = await self.store.get(key)
        except Exception as error:  # fail open: a broken store is a miss
            self.telemetry.lookup_done(call, span, started, error)
            self._store_failed("get", error)
            return Lookup(Outcome.MISS, store_error=True)
        self.telemetry.lookup_done(call, span, started, None)
        if data is None:
            return Lookup(Outcome.MISS)
        try:
            entry = self._entries.unpack(data)
            if entry.fingerprint != key:
                raise EntryError("fingerprint does not match the request")
        except EntryError as error:
            self.stats.invalid_entries += 1
            logger.warning("discarding invalid cache entry %s: %s", key[-16:], error)
            await self._delete_quietly(key)
            return Lookup(Outcome.MISS)
        if not self._usable(entry, request):
            return Lookup(Outcome.MISS)
        return Lookup(Outcome.HIT, entry)

    def _count(self, lookup: Lookup, request: CacheRequest) -> Lookup:
        if lookup.entry is not None:
            self.stats.hits += 1
            return lookup
        self.stats.misses += 1
        if request.policy.only_if_cached:
            lookup.only_if_cached_miss = True
            self._land(lookup.flight, None)
            lookup.flight = None
        return lookup

    @staticmethod
    def _usable(entry: Entry, request: CacheRequest) -> bool:
        """Young enough for the request's max-age, and holding usage if the request would get usage."""
        max_age = request.policy.max_age
        if max_age is not None and time.time() - entry.created_at > max_age:
            return False
        return entry.usage_requested or not request.endpoint.asks_for_usage(request.body, request.stream)

    # -- 3. answering -------------------------------------------------------------------------

    def answer(self, request: CacheRequest, lookup: Lookup) -> ResponseParts | None:
        """The response the cache gives itself after `lookup` (a hit, or only-if-cached's 504),
        or None: the call goes upstream."""
        if lookup.entry is not None:
            parts = self.hit_response(request, lookup.entry)
            if lookup.match != "exact":  # x-cache-key names the entry served, so it can be invalidated
                served = lookup.entry.fingerprint.encode("latin-1")
                parts.headers = [(k, served if k == _RAW_KEY_HEADER else v) for k, v in parts.headers]
                parts.headers.append((_RAW_MATCH_HEADER, lookup.match.encode("latin-1")))
                parts.headers.append((_RAW_SIMILARITY_HEADER, f"{lookup.similarity or 0.0:.4f}".encode("latin-1")))
            return parts
        if lookup.only_if_cached_miss:
            return self.only_if_cached_response(request)
        return None

    def hit_response(self, request: CacheRequest, entry: Entry) -> ResponseParts:
        """Status, headers and body of a hit, in the form the caller asked for."""
        if request.call is not None:
            request.call.hit(entry)
        age = max(0, int(time.time() - entry.created_at))
        if request.stream:
            view = request.view()
            body = request.endpoint.render_stream(entry.body, view)
            media_type = request.endpoint.stream_media_type(view)
        else:
            body = entry.body
            media_type = "application/json"
        headers = [
            (b"content-type", media_type.encode("latin-1")),
            (_RAW_CACHE_HEADER, b"HIT"),
            (_RAW_KEY_HEADER, request.key.encode("latin-1")),
            (b"age", str(age).encode("latin-1")),
            (b"content-length", str(len(body)).encode("latin-1")),
        ]
        for name, value in entry.origin:
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
        return ResponseParts(entry.status, headers, body)

    @staticmethod
    def only_if_cached_response(request: CacheRequest) -> ResponseParts:
        if request.call is not None:
            request.call.end()
        body = _error_body("no cached response and the request said only-if-cached", "Cache-Control")
        headers = _json_headers(body)
        headers += [(_RAW_CACHE_HEADER, b"MISS"), (_RAW_KEY_HEADER, request.key.encode("latin-1"))]
        return ResponseParts(504, headers, body)

    @staticmethod
    def miss_headers(request: CacheRequest, lookup: Lookup) -> list[tuple[str, str]]:
        if lookup.outcome is Outcome.BYPASS:
            return [(CACHE_HEADER, Outcome.BYPASS.value)]
        return [(CACHE_HEADER, lookup.outcome.value), (KEY_HEADER, request.key)]

    # -- 4. recording -------------------------------------------------------------------------

    def recorder(self, request: CacheRequest, lookup: Lookup) -> Recorder:
        """Watches the upstream answer to a miss; always call `finish()` or `abort()` on it."""
        return Recorder(self, request, lookup)

    async def _store(self, request: CacheRequest, entry: Entry, ttl: float | None = None) -> bool:
        if ttl is None:
            ttl = request.policy.ttl if request.policy.ttl is not None else self.settings.ttl
        data = pack(entry)
        span = request.call.child("llm_cache.store") if request.call is not None else None
        started = time.perf_counter()
        try:
            await self.store.set(request.key, data, ttl)
        except Exception as error:
            self.telemetry.store_done(span, started, len(data), error)
            self._store_failed("set", error)
            return False
        self.telemetry.store_done(span, started, len(data), None)
        self.stats.stored += 1
        return True

    def _land(self, flight: _Flight | None, entry: Entry | None) -> None:
        if flight is None:
            return
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if not flight.future.done():
            flight.future.set_result(entry)

    # -- management -----------------------------------------------------------------------------

    async def delete(self, key: str) -> None:
        await self.store.delete(key)

    async def delete_request(
        self, path: str, body: bytes | Mapping[str, Any], headers: Mapping[str, str] | None = None, query: str = ""
    ) -> str:
        """Delete the entry a request would hit, exactly or by meaning; returns its exact key.
        `path` is a path or the full URL, as for `key_for`.

        With a semantic cache, the stored answers to similar prompts that would be served for this
        request are deleted too (and their index rows), so no hit of any kind survives the call."""
        request = self._prepared(path, body, headers, query)
        await self.store.delete(request.key)
        if self.semantic is not None:
            await self._forget(request.key)
            meaning = await self._meaning(request)
            if meaning is None:
                return request.key
            for match in await self.semantic.matches(meaning.context, meaning.text, meaning.vector):
                await self.store.delete(match.key)
                await self._forget(match.key)
        return request.key

    async def clear(self, namespace: str | None = None) -> None:
        """Remove one namespace's entries, or every entry under this cache's key prefix."""
        prefix = self.settings.key_prefix
        if namespace is not None:
            await self.store.clear(namespace_prefix(prefix, namespace))
        else:
            await self.store.clear(prefix or None)
        # The semantic index is left alone: it may be shared with other prefixes and pods, and a row
        # whose entry is gone is dropped the first time a search finds it.

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        mine = [task for task in self._background if task.get_loop() is loop]  # others finish on their loop
        if mine:
            await asyncio.wait(mine, timeout=5)
        await self.store.close()
        if self.semantic is not None:
            await self.semantic.close()

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.store.delete(key)
        except Exception as error:
            self._store_failed("delete", error)

    def _store_failed(self, operation: str, error: Exception) -> None:
        self.stats.store_errors += 1
        self.telemetry.store_error(operation, error)  # counted, and logged at most once a minute


class Recorder:
    """Captures one upstream response as it streams to the caller, then stores it or not.

    `feed()` is synchronous and cheap (it runs on every chunk); `finish()` and
    `abort()` are idempotent and release any coalesced waiters.
    """

    __slots__ = (
        "_assembler",
        "_body",
        "_cache",
        "_decoder",
        "_done",
        "_filter",
        "_lookup",
        "_origin",
        "_request",
        "_size",
        "_status",
        "_storable",
        "_ttl",
        "_why",
    )

    def __init__(self, cache: Cache, request: CacheRequest, lookup: Lookup) -> None:
        self._cache = cache
        self._request = request
        self._lookup = lookup
        self._storable = lookup.outcome in (Outcome.MISS, Outcome.REFRESH) and not request.policy.no_store
        self._why: str | None = None
        """Why the answer is not stored (span event and `not_stored` reason label), once known."""
        if request.policy.no_store and lookup.outcome is not Outcome.BYPASS:
            self._why = "no-store requested"
        self._assembler: StreamAssembler | None = None
        self._decoder: Any = None
        self._filter: StreamFilter | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._done = False
        self._origin: tuple[tuple[str, str], ...] = ()
        self._ttl: float | None = None

    def start(self, status: int, headers: Mapping[str, str]) -> None:
        """Called with the upstream status and headers, before any body chunk."""
        request = self._request
        if request.refused is not None:
            self._cache.refused(request, status)
        if (
            request.captured
            and 200 <= status < 300
            and (headers.get("content-type") or "").startswith("text/event-stream")
        ):
            self._filter = _caller_filter(request, headers.get("content-encoding"))
        self._status = status
        if not self._storable:
            return
        self._origin = tuple((k.lower(), v) for k, v in headers.items() if k.lower() in ORIGIN_HEADERS)
        if self._origin and not self._fallback_storable(headers):
            return
        if status not in self._cache.settings.cacheable_statuses:
            self._not_storable(f"status {status} is not cacheable")
            return
        content_type = (headers.get("content-type") or "").lower()
        if self._request.stream:
            view = self._request.view()
            expected = self._request.endpoint.stream_media_type(view)
            if not content_type.startswith(expected):
                self._not_storable(f"content-type {content_type or 'missing'} is not {expected}")
                return
            self._assembler = self._request.endpoint.assembler(view)
        elif not content_type.startswith("application/json"):
            self._not_storable(f"content-type {content_type or 'missing'} is not application/json")
            return
        try:
            self._decoder = _decoder(headers.get("content-encoding"))
        except ValueError as error:
            self._not_storable(str(error))

    def _fallback_storable(self, headers: Mapping[str, str]) -> bool:
        """An answer from a router's fallback group is stored only when `cache_fallbacks` says so."""
        requested = headers.get(FALLBACK_FROM_HEADER)
        if requested is None:
            return True
        settings = self._cache.settings
        if not settings.cache_fallbacks:
            self._not_storable(f"answer from a fallback group in place of {requested}")
            return False
        self._ttl = settings.fallback_ttl
        return True

    def _not_storable(self, why: str) -> None:
        self._storable = False
        if self._why is None:
            self._why = why

    def forward_headers(self, upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The upstream response headers to pass on (after `start()`), plus `x-cache` and `x-cache-key`."""
        if self._filter is not None:
            dropped = _DECODED_DROPS if isinstance(self._filter, _DecodedFilter) else _FILTERED_DROPS
            upstream = [(k, v) for k, v in upstream if k.lower() not in dropped]
        return upstream + Cache.miss_headers(self._request, self._lookup)

    @property
    def complete(self) -> bool:
        """The stream's terminal event has been recorded: the answer can be stored now, before the
        caller reads on (an SDK may stop reading at the terminal event and never close the stream)."""
        return not self._done and self._assembler is not None and self._assembler.complete

    def feed(self, chunk: bytes) -> bytes:
        """Record one upstream chunk; returns the bytes to pass on to the caller."""
        forward = chunk if self._filter is None else self._filter.feed(chunk)
        if self._storable and not self._done:
            self._record(chunk)
        return forward

    def flush(self) -> bytes:
        """Bytes still held back for the caller once the upstream body has ended."""
        return b"" if self._filter is None else self._filter.flush()

    def _record(self, chunk: bytes) -> None:
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk)
            except zlib.error:
                self._not_storable("undecodable compressed body")
                return
        self._size += len(chunk)
        if self._size > self._cache.settings.max_response_bytes:
            self._not_storable("response over max_response_bytes")
            self._body.clear()
            return
        if self._assembler is not None:
            try:
                self._assembler.feed(chunk)
            except Exception:  # an assembler that cannot read the stream must not break the caller's
                logger.debug("stream assembly failed", exc_info=True)
                self._not_storable("stream could not be assembled")
                return
        else:
            self._body.append(chunk)

    async def finish(self, exhausted: bool = True) -> bool:
        """The caller has read the response (`exhausted`) or closed it. Stores it if complete.

        The write runs in its own task behind a shield: a complete answer is stored and the
        coalesced waiters are released even if the caller's task is cancelled meanwhile
        (Starlette cancels a streaming response's task when the client goes away).
        """
        if self._done:
            return False
        self._done = True
        entry = self._entry(exhausted) if self._storable else None
        if entry is None:
            if self._lookup.outcome is not Outcome.BYPASS:
                self._cache.stats.not_stored += 1
            self._complete_call(None, False)
            if self._lookup.lock is not None:
                await asyncio.shield(asyncio.ensure_future(self._cache._unlock(self._request.key, self._lookup)))
            return False
        return await asyncio.shield(asyncio.ensure_future(self._write(entry)))

    async def _write(self, entry: Entry) -> bool:
        stored = False
        try:
            stored = await self._cache._store(self._request, entry, self._ttl)
            if not stored:
                self._why = "store write failed"
        finally:
            self._complete_call(entry, stored)
            if self._lookup.lock is not None:  # after the write: a pod that takes the lock next finds the entry
                await self._cache._unlock(self._request.key, self._lookup)
        if stored and self._cache.semantic is not None:
            await self._cache._remember(self._request, self._lookup)
        return stored

    def _complete_call(self, entry: Entry | None, stored: bool) -> None:
        self._cache._land(self._lookup.flight, entry if stored else None)
        call = self._request.call
        if call is not None:
            call.finished(self._status, entry, stored, self._why, self._request.stream)

    async def abort(self) -> None:
        """The upstream call or the stream failed: store nothing."""
        if self._done:
            return
        self._done = True
        if self._lookup.outcome is not Outcome.BYPASS:
            self._cache.stats.not_stored += 1
        self._cache._land(self._lookup.flight, None)
        if self._request.call is not None:
            self._request.call.failed(sys.exc_info()[1])
        if self._lookup.lock is not None:
            await asyncio.shield(asyncio.ensure_future(self._cache._unlock(self._request.key, self._lookup)))

    def _entry(self, exhausted: bool) -> Entry | None:
        if self._assembler is not None:
            try:
                body = self._assembler.result()
            except Exception:  # a stream of odd shapes must not break the caller's response
                logger.debug("stream assembly failed", exc_info=True)
                self._why = "stream could not be assembled"
                return None
            from_stream = True
            if body is None:
                self._why = "stream incomplete: no terminal event" if exhausted else "caller closed the stream early"
                return None
        else:
            if not exhausted:
                self._why = "caller closed the response early"
                return None
            body = b"".join(self._body)
            from_stream = False
        # Only a success of the endpoint's own shape, that replays as JSON and as a stream, is kept.
        self._why = self._request.endpoint.unstorable(body, self._request.view())
        if self._why is not None:
            return None
        request = self._request
        asked = request.captured or request.endpoint.asks_for_usage(request.body, request.stream)
        return Entry(request.key, time.time(), self._status, body, from_stream, asked, self._origin)


def _check_prefixes(store: Store, key_prefix: str) -> None:
    """Refuse, when the cache is built, a `key_prefix` whose clears the store could not honour
    (memcached cannot scan keys: it clears only `:`-terminated prefixes of a few segments)."""
    check = getattr(store, "check_prefix", None)
    if check is None:
        return
    for prefix in (key_prefix, namespace_prefix(key_prefix, DEFAULT_NAMESPACE)):
        try:
            check(prefix)
        except StoreError as error:
            raise ValueError(f"key_prefix {key_prefix!r} does not fit the {store.name} store: {error}") from None


_FILTERED_DROPS = frozenset({"content-length"})
_DECODED_DROPS = frozenset({"content-length", "content-encoding"})


def _decoder(encoding: str | None) -> Any:
    """A zlib decompressor for a `content-encoding` the cache can read, None for identity; raises
    ValueError for any other encoding."""
    encoding = (encoding or "identity").lower().strip()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    if encoding == "identity":
        return None
    raise ValueError(f"content-encoding {encoding} is not supported")


def _caller_filter(request: CacheRequest, encoding: str | None) -> StreamFilter | None:
    """What undoes the usage capture on the stream the caller sees. A compressed stream is decoded
    for the caller first (its `content-encoding` is dropped), so the added chunk never gets through."""
    stream_filter = request.endpoint.stream_filter(request.view())
    if stream_filter is None:
        return None
    try:
        decoder = _decoder(encoding)
    except ValueError:  # an encoding the cache cannot read: the caller gets the stream as sent
        logger.warning("cannot hide the usage chunk in a %s-encoded stream", encoding)
        return None
    return stream_filter if decoder is None else _DecodedFilter(decoder, stream_filter)


class _DecodedFilter:
    """Decompresses the upstream stream, then filters it; the caller receives it decoded."""

    def __init__(self, decoder: Any, inner: StreamFilter) -> None:
        self._decoder = decoder
        self._inner = inner

    def feed(self, chunk: bytes) -> bytes:
        return self._inner.feed(self._decoder.decompress(chunk))

    def flush(self) -> bytes:
        return self._inner.feed(self._decoder.flush()) + self._inner.flush()


class _LowerHeaders(dict[str, str]):
    """A plain mapping made case-insensitive for `.get()`, for callers passing dicts."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def lower_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
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


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("latin-1"))]


def _error_body(message: str, param: str | None) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": "cache_control_invalid",
            }
        }
    )


__all__ = [
    "DEFAULT_POLICY",
    "Cache",
    "CacheRequest",
    "CacheSettings",
    "CacheStats",
    "Lookup",
    "Outcome",
    "Passthrough",
    "Recorder",
    "Rejection",
    "ResponseParts",
]
