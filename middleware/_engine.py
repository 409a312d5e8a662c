"""The cache engine: every caching decision lives here.

The drivers (the ASGI middleware, the httpx transports) only convert types and perform what the
engine asks. For each intercepted call they:

1. `route()` the method and path (None: not an LLM call, it passes through untouched), then
   `prepare_route()` the body into a `CacheRequest` (or a `ForwardAsIs`, or a `Rejection`);
2. `hit()`: a straight-line lookup that returns a ready response when the cache has one;
3. otherwise drive `plan()`, a sans-IO generator that yields the rest of the call as actions
   (`types.Run`, `types.Forward`, `types.ReadBody`, `types.SideCall`) and returns its end
   (`types.Answer`, `types.Untouched` or `types.Relay`, whose `Recorder` stores the upstream answer
   if it may). Parts of the plan that need actions of their own (a Gemini cachedContent's store
   reads and creation) are generators too, run with `yield from`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import orjson

from .._log_limit import LogLimit
from . import _overrides as overrides
from ._additions import STREAM_USAGE, Additions
from ._entry import Entry, EntryError, EntryMemo, pack
from ._headers import METHOD_OVERRIDES, lower_headers
from ._hooks import AnswerView, HitView, Hook, Hooks, LookupView, RequestInfo
from ._items import Items
from ._keys import (
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
    key_space,
    namespace_prefix,
    parse_body,
    volatile_set,
)
from ._loop_thread import LoopThread
from ._meaning import Meanings
from ._policy import DEFAULT_POLICY, PolicyError, parse_policy
from ._prepared_memo import PreparedMemo
from ._printable import printable
from ._recorder import Recorder, replayed_origin
from ._replays import ReplayMemo
from ._settings import CacheSettings, CacheStats
from ._singleflight import SingleFlight
from ._types import (
    CACHE_HEADER,
    KEY_HEADER,
    Abandoned,
    Action,
    Answer,
    CacheRequest,
    End,
    Forward,
    ForwardAsIs,
    Lookup,
    Outcome,
    Prepared,
    ReadBody,
    Rejection,
    Relay,
    Reply,
    ResponseParts,
    Run,
    Untouched,
    json_headers,
)
from .providers import DEFAULT_ENDPOINTS, Endpoint, Route, resolve
from .providers.base import JSON_MEDIA_TYPE, HeaderPairs, loads_object
from .stores.base import (
    LockingStore,
    PrefixRulesStore,
    Store,
    StoreError,
    SyncReadStore,
    TagStore,
    abilities_of,
    invalidate_tags,
)
from .stores.memory import MemoryStore
from .stores.urls import store_from_url
from .telemetry import MAX_PATH_CHARS, Call, Telemetry

if TYPE_CHECKING:
    from ._prompt_caching import PromptCaching
    from .semantic import SemanticCache

logger = logging.getLogger("llm_cache.middleware")
T = TypeVar("T")

_RAW_CACHE_HEADER = CACHE_HEADER.encode("latin-1")
_RAW_KEY_HEADER = KEY_HEADER.encode("latin-1")
_RAW_MATCH_HEADER = b"x-cache-match"
"""On semantic hits only: `semantic` (with `x-cache-similarity`, the cosine similarity)."""
_RAW_SIMILARITY_HEADER = b"x-cache-similarity"
Plan = Generator[Action, Any, End]
"""What `Cache.plan` returns: a generator of actions, sent their results, returning the call's end."""
_MEMO_LIMIT = 1024
"""Most distinct request paths whose route a Cache remembers (and credentials whose scope hash it does)."""
_BODY_HEADERS = ("content-type", "content-encoding")
"""The headers saying how the body is read: sent twice, the key and the provider may read it apart."""
_READ_AS_SENT = frozenset({"", "identity"})
"""`content-encoding`s under which the provider reads a body's bytes as sent, the bytes the key is made of."""


class Cache:
    """Exact-match LLM response cache over any `Store`.

    >>> cache = Cache(store=MemoryStore(max_entries=10_000), ttl=900)
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        endpoints: tuple[Endpoint, ...] = DEFAULT_ENDPOINTS,
        telemetry: Telemetry | None = None,
        semantic: SemanticCache | None = None,
        # The settings: declared (with their descriptions and rules) in `CacheSettings`; the defaults
        # are repeated here for IDEs, and tests/middleware/test_engine_api.py keeps the two in step.
        ttl: float | None = 600.0,
        key_prefix: str = "",
        scope: str | ScopeFunction = "credential",
        anonymous: Literal["bypass", "shared"] = "bypass",
        ignored_fields: Collection[str] = (),
        key_builder: KeyBuilder | str | None = None,
        mode: Literal["default", "opt_in"] = "default",
        max_body_bytes: int = 4 * 1024 * 1024,
        max_response_bytes: int = 16 * 1024 * 1024,
        max_stored_items: int | None = 256,
        capture_stream_usage: bool = True,
        coalesce: bool = True,
        coalesce_timeout: float = 120.0,
        distributed_lock: bool = True,
        lock_ttl: float = 30.0,
        lock_wait: float = 30.0,
        cacheable_statuses: Collection[int] = frozenset({200}),
        upstream_cache_control: Literal["honour", "ignore"] = "honour",
        cache_fallbacks: bool = False,
        fallback_ttl: float | None = None,
        stale_if_error: float = 0.0,
        max_ttl: float | None = 30 * 24 * 3600.0,
        prompt_caching: PromptCaching | Mapping[str, Any] | None = None,
        hooks: Hooks | Mapping[str, Sequence[Hook | str]] | None = None,
        hook_timeout: float = 0.05,
    ) -> None:
        """`store`: a `Store`, or a URL that builds one (`redis://cache:6379/0`, `s3://bucket/prefix`, ...;
        `stores/urls.py`); default: a `MemoryStore`. The settings are validated by `CacheSettings`."""
        settings: dict[str, Any] = {
            "ttl": ttl,
            "key_prefix": key_prefix,
            "scope": scope,
            "anonymous": anonymous,
            "ignored_fields": ignored_fields,
            "key_builder": key_builder,
            "mode": mode,
            "max_body_bytes": max_body_bytes,
            "max_response_bytes": max_response_bytes,
            "max_stored_items": max_stored_items,
            "capture_stream_usage": capture_stream_usage,
            "coalesce": coalesce,
            "coalesce_timeout": coalesce_timeout,
            "distributed_lock": distributed_lock,
            "lock_ttl": lock_ttl,
            "lock_wait": lock_wait,
            "cacheable_statuses": cacheable_statuses,
            "upstream_cache_control": upstream_cache_control,
            "cache_fallbacks": cache_fallbacks,
            "fallback_ttl": fallback_ttl,
            "stale_if_error": stale_if_error,
            "max_ttl": max_ttl,
        }
        if prompt_caching is not None:
            settings["prompt_caching"] = prompt_caching
        settings["hooks"], settings["hook_timeout"] = hooks, hook_timeout
        self.settings = CacheSettings.model_validate(settings)
        self.semantic = semantic
        """Looks up misses by meaning (`llm_cache.middleware.semantic.SemanticCache`), or None: exact only."""
        if isinstance(store, str):
            store = store_from_url(store)
        self.store = store if store is not None else MemoryStore()
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self.key_space = key_space(self.settings.key_prefix)
        """What this cache's keys, clears and tag names begin with (`_keys.key_space`): no other cache's
        begins with it, whatever the two `key_prefix`es."""
        _check_prefixes(self.store, self.key_space, self.settings.key_prefix)
        self.telemetry.watch_store(self.store)
        self.endpoints = endpoints
        self.stats = CacheStats()
        self._key_builder: KeyBuilder | None = self.settings.key_builder
        locker = (
            cast(LockingStore, self.store)
            if self.settings.distributed_lock and abilities_of(self.store).locking
            else None
        )
        self._flights = SingleFlight(self.settings, self.stats, locker, self._poll, self._store_failed)
        self._meanings = (
            None
            if semantic is None
            else Meanings(
                semantic,
                self.settings,
                self.stats,
                self.telemetry,
                self._context_key,
                self._stored,
                self._store_failed,
                self._source,
            )
        )
        hooks = self.settings.hooks
        self.hooks = hooks if isinstance(hooks, Hooks) else Hooks(hooks, self.settings.hook_timeout)
        """The operator's hooks (`_hooks.py`): `cache.hooks.on_hit(fn)` registers one."""
        self._looking, self._hitting = self.hooks.points["before_lookup"], self.hooks.points["on_hit"]
        self._answering = self.hooks.points["after_answer"]
        self._additions = Additions(self.settings.prompt_caching, self.store, self.key_space, self.hooks)
        self._items = Items(self)
        self._routes: dict[str, Route | None] = {}
        self._entries = EntryMemo()
        self._heads: dict[tuple[str, float, int, bytes, str], _Heads] = {}
        """A JSON hit's headers before and after `age`, by entry (fingerprint, write time, body length),
        outcome and key."""
        self._replays = ReplayMemo()
        """A streamed hit's events, by entry, when its stream's cut was kept (`_replays.py`)."""
        self._memo: PreparedMemo[CacheRequest] | None = None
        """Requests prepared before, by what their preparation read (`_prepared_memo.py`); not with a
        scope function or a key builder, the operator's code, which may read anything."""
        if self._key_builder is None and not callable(self.settings.scope):
            self._memo = PreparedMemo()
        self._scopes: dict[str, str] = {}
        self.warnings = LogLimit(logger)
        """Requests it could not key: a hostile or broken caller sends them at request rate."""
        self._sync_loop: LoopThread | None = None
        ignored = self.settings.ignored_fields
        self._volatile = {endpoint.name: volatile_set(ignored, endpoint.volatile_fields) for endpoint in endpoints}

    @property
    def store(self) -> Store:
        """Where the entries are kept."""
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store
        self._read_now = cast(SyncReadStore, store).get_now if abilities_of(store).sync_reads else None
        """The store's read without an await (`SyncReadStore`), when it has one: the lookup calls it."""

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
        upstream: str | None = None,
        client: str | None = None,
    ) -> CacheRequest | ForwardAsIs | Rejection | None:
        """Classify a request. `headers` must answer `.get()` for lower-case names."""
        route = self.route(method, path)
        if route is None:
            return None
        return self.prepare_route(route, method, path, query, headers, body, repeated, asgi_scope, upstream, client)

    def prepare_route(
        self,
        route: Route,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        repeated: Collection[str] = (),
        asgi_scope: Mapping[str, Any] | None = None,
        upstream: str | None = None,
        client: str | None = None,
    ) -> CacheRequest | ForwardAsIs | Rejection:
        """The engine's view of an LLM call. Never raises: a request it cannot key is a `ForwardAsIs`.

        `repeated` names the headers the request sent more than once (adapters that collapse headers
        into a dict pass it; only credential headers matter). `asgi_scope` is the ASGI scope a scope
        function may read (CacheMiddleware passes it). `upstream` is the URL the driver sends the call
        to (`scheme://host:port/path`), from what the driver trusts (its own configuration, the
        gateway's routing): the key names it, so two upstreams never share an entry. Never a request
        header: a caller's `x-llm-cache-upstream` is just another header here. `client` is the network
        peer that sent it (an ASGI driver's `scope["client"]` host, as its server trusts it), never a
        header either: the source of a caller without a credential under a shared scope (`_source`);
        the transports name none (their process is the caller)."""
        try:
            memo = self._memo
            prepared: CacheRequest | ForwardAsIs | Rejection
            if memo is None or type(body) is not bytes:  # (a bytearray cannot be a dict key)
                prepared = self._prepare(route, method, path, query, headers, body, repeated, asgi_scope, upstream)
            else:
                names = repeated if isinstance(repeated, frozenset) else frozenset(repeated)
                identity = (method, path, query, body, names, upstream)
                known = memo.find(identity, headers)
                if known is not None:
                    prepared = known.again(headers)
                elif (reads := memo.recorder(identity, headers)) is None:
                    prepared = self._prepare(route, method, path, query, headers, body, repeated, asgi_scope, upstream)
                else:
                    prepared = self._prepare(route, method, path, query, reads, body, repeated, asgi_scope, upstream)
                    if isinstance(prepared, CacheRequest):
                        prepared.headers = headers
                        if prepared.bypass is None:
                            memo.add(identity, reads, prepared.again(headers))
            if client is not None and type(prepared) is CacheRequest:  # who sent this call, not how it is keyed
                prepared.client = client
            return prepared
        except Exception as error:  # fail open: a request the engine cannot read goes upstream untouched
            self.warnings.warning(
                ("unread", type(error)),
                "%s while preparing a request; forwarding it untouched",
                type(error).__name__,
                exc_info=error,
            )
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
        upstream: str | None,
    ) -> CacheRequest | ForwardAsIs | Rejection:
        if self.too_large(len(body)):
            return self.oversized(route, path)
        encoding = headers.get("content-encoding")
        if encoding is not None and encoding.strip().lower() not in _READ_AS_SENT:
            return self._passthrough(route, path, "a body the provider decodes first (content-encoding)")
        if repeated and any(name in repeated for name in _BODY_HEADERS):  # read here as the last, upstream maybe not
            return self._passthrough(route, path, "a header saying how to read the body is sent twice")
        for name in METHOD_OVERRIDES:  # keyed as this method, answered as the one named
            named = headers.get(name)
            if named is not None and (named.strip().upper() != method or name in repeated):
                return self._passthrough(route, path, f"`{name}` names another method than the request's")
        if query and any(named != method for named in overrides.in_query(query)):
            return self._passthrough(route, path, "the query names another method than the request's")
        endpoint = route.endpoint
        if endpoint.form_body:  # an upload: keyed by its fields and the file's bytes
            parsed, exact = endpoint.read_form(headers.get("content-type") or "", body), False
            if parsed is None:
                return self._passthrough(route, path, "malformed multipart/form-data body")
        else:
            try:
                parsed, exact = parse_body(body)
            except ValueError:
                return self._passthrough(route, path, "malformed JSON body")
            if not isinstance(parsed, dict):
                return self._passthrough(route, path, "JSON body is not an object")
        if (endpoint.form_body or overrides.BODY_FIELD in parsed) and any(
            named != method for named in overrides.in_fields(parsed, form=endpoint.form_body)
        ):
            return self._passthrough(route, path, "the body's `_method` names another method than the request's")
        if not endpoint.form_body and overrides.read_as_form(content_type := headers.get("content-type")):
            named_in_form = overrides.in_body(content_type or "", body)  # as a server behind reads it
            if named_in_form is None or any(named != method for named in named_in_form):
                return self._passthrough(route, path, "the body, read as a form, names another method")

        cache_field = None
        forward_body = body
        if "cache" in parsed and not endpoint.form_body:  # the control field (`null` too) is never forwarded
            if endpoint.signed_body:
                message = (
                    "the body's cache field would change a signed body; use the x-cache-* or Cache-Control headers"
                )
                return Rejection(400, error_body(message, "cache"))
            cache_field = parsed.pop("cache")
            forward_body = orjson.dumps(parsed)
        try:
            policy = parse_policy(headers, cache_field, self.settings.max_ttl, repeated)
        except PolicyError as error:
            return Rejection(400, error_body(error.message, error.param))

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
        item_keys: tuple[str, ...] = ()
        try:
            scope = self._scope(route, path, query, headers, repeated, asgi_scope)
            if repeated and endpoint.keyed_headers:  # the key holds one value; the provider reads every one
                twice = next((name for name, _ in endpoint.header_key(headers) if name in repeated), None)
                if twice is not None:
                    raise KeyFailure(f"the {twice} header appears more than once")
            key = self._key(route, query, headers, parsed, namespace, scope, exact, upstream)
            items = endpoint.items(route, parsed) if bypass is None and not stream else None
            if items is not None:  # a list request, served item by item (`_items.py`)
                item_keys = tuple(
                    self._key(route, query, headers, item, namespace, scope, exact, upstream) for item in items
                )
        except (NoIdentity, KeyFailure) as error:
            bypass, item_keys = self._unkeyed(path, error), ()
        captured = False
        caller_body = forward_body
        if stream and bypass is None and not policy.no_store and self.settings.capture_stream_usage:
            capture = (
                endpoint.capture_body(parsed)
                if self._additions.accepts(
                    upstream, headers, endpoint, STREAM_USAGE, scope, endpoint.model(route, parsed)
                )
                else None
            )
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
            item_keys=item_keys,
            upstream=upstream,
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

    def _source(self, request: CacheRequest) -> str:
        """Who sent a request whose key scope every caller shares (`scope: shared`, `anonymous: shared`):
        `c` + the hash of the credential its provider authenticates; without one, `a` + the hash of the
        network peer its ASGI driver named (`prepare_route`'s `client`), else `anon` (a transport: the
        process is the caller); "" under any other scope, whose segment already names the caller.
        Bounded semantic mode learns per source: callers who may see each other's answers may not
        decide what the others are served unverified."""
        if request.scope != "shared" and request.scope != ANONYMOUS:
            return ""
        route = request.route
        try:
            return credential_scope(route.auth or route.endpoint.auth, request.headers, request.query, (), self._scopes)
        except NoIdentity:
            client = request.client
            return ANONYMOUS if not client else "a" + _memo_hash(client, self._scopes)

    def _unkeyed(self, path: str, error: NoIdentity | KeyFailure) -> str:
        """The bypass reason of a request without a key (`lookup` counts it and logs it at DEBUG);
        a failure, rather than a missing identity, is a WARNING too."""
        reason = str(error)
        if isinstance(error, KeyFailure) or not error.anonymous:
            self.warnings.warning(
                "unkeyed",
                "not caching a request to %s: %s",
                printable(path, MAX_PATH_CHARS),
                reason,
                exc_info=error.__cause__,
            )
        return reason

    def refused(self, request: CacheRequest, status: int) -> None:
        """The answer to a request sent again without an addition its upstream refused (`Additions.refused`)."""
        if self._additions.refused(request, status) and self._memo is not None:
            self._memo.clear()  # preparations made with the addition (usage capture) are out of date

    def too_large(self, size: int, limit: int | None = None) -> bool:
        """Whether a request body of `size` bytes is past caching (`limit`, default `max_body_bytes`):
        it then goes upstream as it came (`oversized`)."""
        return size > (self.settings.max_body_bytes if limit is None else limit)

    def oversized(self, route: Route, path: str) -> ForwardAsIs:
        """A body over the size limit: counted, and forwarded untouched. Adapters that stop reading
        a body early (the ASGI middleware streams it) call this themselves."""
        self.stats.oversized += 1
        return self._passthrough(route, path, "body over max_body_bytes")

    def _passthrough(self, route: Route, path: str, reason: str) -> ForwardAsIs:
        self.stats.bypasses += 1
        self.telemetry.passthrough(route.endpoint.family, path, reason)
        return ForwardAsIs(reason)

    def _key(
        self,
        route: Route,
        query: str,
        headers: Mapping[str, str],
        body: dict[str, Any],
        namespace: str,
        scope: str,
        exact: bool,
        upstream: str | None,
    ) -> str:
        endpoint = route.endpoint
        model = endpoint.model(route, body)
        volatile = self._volatile[endpoint.name]
        keyed_query = endpoint.key_query(route, query)
        if endpoint.keyed_headers:  # settings some APIs take in headers (Bedrock's guardrails, trace, ...)
            if keyed_query and endpoint.header_key(dict(keyed_query)):  # kept beside the query: never spelled in it
                raise KeyFailure("a query parameter is named as a header setting the key holds")
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
        if upstream:  # the answers of two upstream URLs never mix
            digest = f"u{_memo_hash(endpoint.upstream_identity(upstream), self._scopes)}.{digest}"
        return compose_key(self.key_space, namespace, scope, digest)

    def _context_key(self, request: CacheRequest, body: dict[str, Any], namespace: str) -> str:
        return self._key(
            request.route,
            request.query,
            request.headers,
            body,
            namespace,
            request.scope,
            request.exact,
            request.upstream,
        )

    def key_for(
        self,
        path: str,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        query: str = "",
        method: str = "POST",
        upstream: str | None = None,
    ) -> str:
        """The key a request would be stored under, computed ahead of time (for targeted deletes).

        `path` is the request's path as the ASGI middleware sees it, or the full URL the request is
        sent to (`https://api.openai.com/v1/chat/completions`): the transports and the gateway key
        their entries by that URL (so two upstreams never share one), and so must a targeted delete.
        `upstream` names that URL apart, for a path the driver sends elsewhere than it reads (the gateway's)."""
        return self._prepared(path, body, headers, query, method, upstream).key

    def _prepared(
        self,
        path: str,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None,
        query: str,
        method: str = "POST",
        upstream: str | None = None,
    ) -> CacheRequest:
        try:
            raw = body if isinstance(body, bytes) else orjson.dumps(dict(body))
        except TypeError as error:  # orjson.JSONEncodeError: nested too deep, or not JSON
            raise ValueError(f"the body cannot be encoded as JSON ({error})") from None
        lowered = lower_headers(headers or {})
        if path.startswith(("http://", "https://")):  # a full URL: keyed as the transports key it
            url = urlsplit(path)
            upstream = upstream or f"{url.scheme}://{url.netloc}{url.path}"
            path, query = url.path, query or url.query
        prepared = self.prepare(method, path, query, lowered, raw, upstream=upstream)
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
        if self._looking and request.bypass is None:
            await self._before_lookup(request)
        if request.bypass is not None:
            self.stats.bypasses += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("CACHE BYPASS path=%s reason=%s", printable(request.path, MAX_PATH_CHARS), request.bypass)
            return Lookup(Outcome.BYPASS)
        policy = request.policy
        if policy.no_cache:
            self.stats.refreshes += 1
            return Lookup(Outcome.REFRESH)

        since = self._flights.landings  # (a flight that lands while we read: `join` reads again)
        lookup = await self._read(request)
        if lookup.entry is None and self._meanings is not None and not lookup.store_error:
            similar = await self._meanings.find(request, lookup)
            if similar is not None and await self._serves(request, similar.entry, "semantic"):
                self.stats.semantic_hits += 1  # counted once served: a match an on_hit hook vetoes is a miss
                return self._count(similar, request)
        if lookup.entry is not None or not self.settings.coalesce:
            return self._count(lookup, request)
        joined = await self._flights.join(request, lookup, since)
        if joined.entry is not None and not await self._serves(request, joined.entry, "coalesced"):
            joined = Lookup(Outcome.MISS)  # the waiter goes upstream itself, as when its leader failed
        return self._count(joined, request)

    async def _serves(self, request: CacheRequest, entry: Entry | None, match: str = "exact") -> bool:
        """The on_hit hooks' verdict on serving `entry` (True without hooks): an exact hit, a match by
        meaning or an answer shared by coalescing alike."""
        if entry is None or not self._hitting:
            return entry is not None
        age = max(0.0, time.time() - entry.created_at)
        view = HitView(request_info(request), entry.status, entry.body, age, match=match)
        return (await self.hooks.run("on_hit", view)).serve

    async def _before_lookup(self, request: CacheRequest) -> None:
        """Run the before-lookup hooks and apply what they changed: the key (from their body and
        namespace, in the request's own scope), the TTL, a bypass."""
        policy = request.policy
        namespace = policy.namespace or DEFAULT_NAMESPACE
        ttl = policy.ttl if policy.ttl is not None else self.settings.ttl
        view = LookupView(request_info(request), copy.deepcopy(request.body), namespace, ttl)
        view = await self.hooks.run("before_lookup", view)
        if view.bypass:
            request.bypass = "a before_lookup hook bypassed the cache"
            return
        if view.ttl != ttl:
            request.policy = replace(policy, ttl=view.ttl)
        if view.key_body != request.body or view.namespace != namespace:  # (checked by the hooks' run)
            request.key = self._context_key(request, view.key_body, view.namespace)
            # The key's inputs are the semantic context's and the entry's tags' too: whatever a hook keeps
            # apart by key stays apart by meaning and is invalidated by its namespace.
            request.key_body = view.key_body if view.key_body != request.body else None
            if view.namespace != namespace:
                request.policy = replace(request.policy, namespace=view.namespace)

    async def _poll(self, request: CacheRequest) -> Entry | None:
        """The usable entry for `request` another pod may have stored (store errors propagate)."""
        entry = await self._stored(request.key)
        return entry if entry is not None and request.accepts(entry) else None

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

    async def _read(self, request: CacheRequest) -> Lookup:
        key = request.key
        call = request.call
        span = call.child("llm_cache.lookup") if call is not None and call.recording else None
        read_now = self._read_now
        started = time.perf_counter()
        try:
            data = read_now(key) if read_now is not None else await self.store.get(key)
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
        if not request.accepts(entry):
            stale = entry if request.serves_stale(entry, self.grace(request)) else None
            return Lookup(Outcome.MISS, stale=stale)
        if self._hitting and not await self._serves(request, entry):
            return Lookup(Outcome.MISS)
        return Lookup(Outcome.HIT, entry)

    def grace(self, request: CacheRequest) -> float:
        """Seconds past its TTL an entry may be served when the upstream fails: the request's
        `stale-if-error` directive, else the `stale_if_error` setting."""
        asked = request.policy.stale_if_error
        return self.settings.stale_if_error if asked is None else asked

    def _count(self, lookup: Lookup, request: CacheRequest) -> Lookup:
        if lookup.entry is not None:
            self.stats.hits += 1
            return lookup
        self.stats.misses += 1
        if request.policy.only_if_cached:
            lookup.only_if_cached_miss = True
            self._flights.land(lookup.flight, None, left=True)  # it never goes upstream: a waiter leads
            lookup.flight = None
        return lookup

    # -- the call: a straight-line hit, then the plan ---------------------------------------------

    def hit(
        self, request: CacheRequest, kind: Literal["client", "internal"] = "internal"
    ) -> Coroutine[Any, Any, ResponseParts | None]:
        """The hit path, one straight line: the call's telemetry begins here, in the caller's context
        (the sync transport runs the coroutine on the engine's loop; a call that records nothing but
        its counts, `Telemetry.quiet`, begins after the lookup, or not at all on an exact hit), then the
        coroutine looks the request up and gives the hit's response, or None: drive `plan` for the rest."""
        if request.call is None and not self.telemetry.quiet():
            request.call = Call(self.telemetry, request, kind)  # (`Telemetry.begin`, one call less on a hit)
        return self._hit(request, kind)

    def _items_apart(self) -> bool:
        """Whether list requests are served item by item: not while the operator has hooks, which
        decide on the request and its one answer (a bypass, a veto, what is stored): a list served
        item by item has neither, so it goes the whole request's way and its hooks run."""
        return not any(self.hooks.points.values())

    async def _hit(self, request: CacheRequest, kind: Literal["client", "internal"]) -> ResponseParts | None:
        if request.item_keys and self._items_apart():  # served item by item, in the plan
            if request.call is None:
                request.call = Call(self.telemetry, request, kind)
            return None
        lookup = request.lookup = await self._lookup(request)
        call = request.call
        try:
            if call is None:  # a quiet call (`Telemetry.quiet`): an exact hit is counted without a `Call`
                entry = lookup.entry
                if entry is not None and lookup.match == "exact" and not lookup.coalesced:
                    parts = self._entry_response(request, entry, b"HIT")
                    self.telemetry.hit_quietly(request, entry)
                    return parts
                call = request.call = Call(self.telemetry, request, kind)
            call.decided(lookup)
            return None if lookup.entry is None else self.answer(request, lookup)
        except EntryError as error:  # an entry that cannot be replayed as asked: the call goes upstream
            await self._unservable(request, lookup, kind, error)
            return None

    async def _unservable(
        self, request: CacheRequest, lookup: Lookup, kind: Literal["client", "internal"], error: EntryError
    ) -> Lookup:
        """A hit whose entry cannot be served in the form the request asked for (a stream of a corrupt
        body, or of another schema's): counted as an invalid entry and a miss, and deleted."""
        entry = lookup.entry
        assert entry is not None
        self.stats.hits -= 1
        self.stats.semantic_hits -= lookup.match == "semantic"
        self.stats.misses += 1
        self.stats.invalid_entries += 1
        logger.warning("discarding invalid cache entry %s: %s", entry.fingerprint[-16:], error)
        await self._delete_quietly(entry.fingerprint)
        miss = request.lookup = Lookup(Outcome.MISS)
        call = request.call
        if call is None:
            call = request.call = Call(self.telemetry, request, kind)
        call.match = None
        call.decided(miss)
        return miss

    def plan(self, request: Prepared) -> Plan:
        """Everything of an intercepted call after `hit`, as a sans-IO generator: it yields actions
        (`Run`, `Forward`, `ReadBody`, `SideCall`), receives their results and returns how the call
        ends (`Answer`, `Untouched`, `Relay`). A driver performs the actions and throws into the plan
        whatever exception performing one raised."""
        if isinstance(request, Rejection):
            return Answer(request.response())
        if isinstance(request, ForwardAsIs):
            return Untouched(request.header)
        if request.item_keys and self._items_apart():
            return (yield from self._items.plan(request))
        lookup = request.lookup
        if lookup is None:  # a driver that did not call `hit` first
            lookup = request.lookup = yield Run(self.lookup(request))
        try:
            parts = self.answer(request, lookup)
        except EntryError as error:  # (as in `_hit`)
            parts, lookup = None, (yield Run(self._unservable(request, lookup, "internal", error)))
        if parts is not None:
            return Answer(parts)
        recorder = Recorder(self, request, lookup)
        read = False
        try:
            body = request.forward_body
            additions = self._additions
            if additions.rewrites:  # prompt caching, before_forward hooks
                body = yield from additions.upstream_body(request, request_info(request))
            reply: Reply = yield Forward(body)
            if additions.may_retry(request, reply.status):  # did the upstream refuse what the cache added?
                reply, read = (yield ReadBody()), True
                retry = yield Run(additions.retry_body(request, reply.status, reply.body))
                if retry is not None:
                    reply, read = (yield Forward(retry)), False
        except GeneratorExit:
            raise
        except BaseException as error:
            # A timeout or a refused connection: an entry past its TTL may answer instead.
            stale = lookup.stale if isinstance(error, Exception) and not isinstance(error, Abandoned) else None
            parts = None if stale is None else self.stale_response(request, stale)
            yield Run(recorder.abort(None if isinstance(error, Abandoned) else error))
            if parts is not None:
                return Answer(parts)
            raise
        parts = None if lookup.stale is None or reply.status < 500 else self.stale_response(request, lookup.stale)
        if parts is not None:
            if not read:
                yield ReadBody()  # the failure is read whole (its connection released), and not relayed
            yield Run(recorder.abort(None))
            return Answer(parts)
        recorder.start(reply.status, reply.headers, reply.raw)
        return Relay(recorder, reply.status, recorder.forward_headers(reply.raw))

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
        """Status, headers and body of a hit, in the form the caller asked for (`EntryError`: the entry
        cannot be replayed so)."""
        parts = self._entry_response(request, entry, b"HIT")
        if request.call is not None:
            request.call.hit(entry)
        return parts

    def stale_response(self, request: CacheRequest, entry: Entry) -> ResponseParts | None:
        """The response of an entry past its TTL, served because the upstream failed: `x-cache: STALE`,
        and an `age` beyond the TTL. None when the entry cannot be replayed so (the upstream's failure stands)."""
        try:
            parts = self._entry_response(request, entry, b"STALE")
        except EntryError:
            return None
        self.stats.stale += 1
        if request.call is not None:
            request.call.stale()
        return parts

    def _entry_response(self, request: CacheRequest, entry: Entry, outcome: bytes) -> ResponseParts:
        age = int(time.time() - entry.created_at)
        endpoint = request.endpoint
        if request.stream:
            view = request.view()
            try:
                events = self._replays.events(entry, endpoint)
                body = (
                    endpoint.render_stream(entry.body, view) if events is None else endpoint.render_events(events, view)
                )
            except Exception as error:  # a body no stream is made of: a corrupt entry, or another schema's
                raise EntryError(f"cannot be replayed as a stream ({type(error).__name__})") from error
            opening = endpoint.answer_headers.of(endpoint.stream_media_type(view))
            before, after = _entry_heads(opening, outcome, request.key, body, replayed_origin(endpoint, entry))
        else:
            # An entry answers JSON the same way every time but for its age: the rest is made once. (Its
            # body's length too: an entry rewritten under its key and time must not be framed by the old one.)
            body = entry.body
            memo_key = (entry.fingerprint, entry.created_at, len(body), outcome, request.key)
            heads = self._heads.get(memo_key)
            if heads is None:
                if len(self._heads) >= _MEMO_LIMIT:
                    self._heads.clear()
                opening = endpoint.answer_headers.of(JSON_MEDIA_TYPE)
                origin = replayed_origin(endpoint, entry)
                heads = self._heads[memo_key] = _entry_heads(opening, outcome, request.key, body, origin)
            before, after = heads
        return ResponseParts(entry.status, [*before, (b"age", b"%d" % age if age > 0 else b"0"), *after], body)

    @staticmethod
    def only_if_cached_response(request: CacheRequest) -> ResponseParts:
        if request.call is not None:
            request.call.end()
        body = error_body("no cached response and the request said only-if-cached", "Cache-Control")
        headers = json_headers(body)
        headers += [(_RAW_CACHE_HEADER, b"MISS"), (_RAW_KEY_HEADER, request.key.encode("latin-1"))]
        return ResponseParts(504, headers, body)

    # -- 4. recording -------------------------------------------------------------------------

    async def store_entry(
        self, request: CacheRequest, entry: Entry, ttl: float | None = None, tags: frozenset[str] = frozenset()
    ) -> bool:
        """Write a recorded answer under its key, `entry.fingerprint` (the request's, or one of its
        items'), with its automatic tags, the request's and `tags` (custom ones, e.g. from a hook);
        False if the store failed. A store with a tag index records the tags first: no entry is stored
        that its tags cannot find."""
        if ttl is None:
            ttl = request.policy.ttl if request.policy.ttl is not None else self.settings.ttl
        entry = replace(entry, tags=entry_tags(request) | request.policy.tags | tags)
        if ttl is not None:  # fresh until its TTL; kept past it for as long as it may be served stale
            entry = replace(entry, expires_at=entry.created_at + ttl)
            ttl += max(self.settings.stale_if_error, request.policy.stale_if_error or 0.0)
        ends = answer_ends(request.endpoint, entry.body)
        if ends is not None:  # what the answer names is gone then: never served, nor kept, past it
            if entry.expires_at is None or ends < entry.expires_at:
                entry = replace(entry, expires_at=ends)
            left = max(1.0, ends - entry.created_at)
            ttl = left if ttl is None else min(ttl, left)
        data = pack(entry)
        span = request.call.child("llm_cache.store") if request.call is not None else None
        started = time.perf_counter()
        try:
            if abilities_of(self.store).tags:
                await cast(TagStore, self.store).tag(entry.fingerprint, self._indexed(entry.tags), ttl)
            await self.store.set(entry.fingerprint, data, ttl)
        except Exception as error:
            self.telemetry.store_done(span, started, len(data), error)
            self._store_failed("set", error)
            return False
        self.telemetry.store_done(span, started, len(data), None)
        self.stats.stored += 1
        return True

    async def after_answer(self, request: CacheRequest, entry: Entry, ttl: float | None) -> AnswerView | None:
        """The after-answer hooks' verdict on a storable answer (None: there are none). `ttl` is the
        Recorder's (None: the request's or the default), and the view's the one to store with."""
        if not self._answering:
            return None
        if ttl is None:
            ttl = request.policy.ttl if request.policy.ttl is not None else self.settings.ttl
        view = AnswerView(request_info(request), entry.status, entry.body, ttl=ttl)
        return await self.hooks.run("after_answer", view)

    def release_waiters(self, lookup: Lookup, entry: Entry | None, left: bool = False) -> None:
        self._flights.land(lookup.flight, entry, left)

    async def release_lock(self, request: CacheRequest, lookup: Lookup) -> None:
        await self._flights.unlock(request.key, lookup)

    def release_lock_soon(self, request: CacheRequest, lookup: Lookup) -> None:
        self._flights.unlock_soon(request.key, lookup)

    async def index_by_meaning(self, request: CacheRequest, lookup: Lookup) -> None:
        if self._meanings is not None:
            await self._meanings.remember(request, lookup)

    async def withdraw_entry(self, request: CacheRequest, entry: Entry) -> None:
        self.stats.withdrawn += 1
        self.telemetry.withdrawn()
        try:
            await self.store.delete(entry.fingerprint)
        except Exception as error:  # counted; the entry lives until its TTL
            self._store_failed("delete", error)
        if self._meanings is not None:
            await self._meanings.forget(entry.fingerprint)

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
        for key in request.item_keys:  # a list request's items, each stored on its own
            await self.store.delete(key)
        meanings = self._meanings
        if meanings is not None:
            await meanings.forget(request.key)
            for key in await meanings.similar_keys(request):
                await self.store.delete(key)
                await meanings.forget(key)
        return request.key

    async def clear(self, namespace: str | None = None) -> None:
        """Remove one namespace's entries, or every entry under this cache's key prefix."""
        prefix = self.key_space
        if namespace is not None:
            await self.store.clear(namespace_prefix(prefix, namespace))
        else:
            await self.store.clear(prefix or None)
        # The semantic index is left alone: it may be shared with other prefixes and pods, and a row
        # whose entry is gone is dropped the first time a search finds it.

    async def start(self) -> None:
        """Get ready for the first request: load the semantic cache's embedding model and check its
        index's server (`IndexUnavailable` for a Redis without RediSearch). The gateway calls this in
        its lifespan; without it, both happen on first use."""
        if self.semantic is not None:
            await self.semantic.start()

    async def invalidate(self, tags: Collection[str]) -> list[str]:
        """Remove every entry under this cache's `key_prefix` carrying any of `tags`, from the store and
        the semantic index; the keys removed (some may have expired already). `NoTagIndex` (a
        `StoreError`) from a store without a tag index (memcached): it cannot list what a tag names,
        and says so rather than remove nothing."""
        wanted = frozenset(tags)
        if not wanted:
            return []
        keys = await invalidate_tags(self.store, self._indexed(wanted))
        meanings = self._meanings
        if meanings is not None:
            for key in keys:
                await meanings.forget(key)
        return keys

    def _indexed(self, tags: frozenset[str]) -> frozenset[str]:
        """The names `tags` have in the store's tag index: under this cache's `key_prefix`, as its keys
        are, so an invalidation (like a flush) never reaches another prefix's entries in a shared store."""
        prefix = self.key_space
        return frozenset(prefix + tag for tag in tags) if prefix else tags

    async def close(self) -> None:
        if self._meanings is not None:
            await self._meanings.drain()
        await self._flights.drain()
        await self.store.close()
        if self.semantic is not None:
            await self.semantic.close()
        sync_loop, self._sync_loop = self._sync_loop, None
        if sync_loop is not None:  # after the store: it closes that loop's clients on that loop
            sync_loop.close()

    # the same, for code without an event loop: run on a private loop thread, started on first use

    def delete_sync(self, key: str) -> None:
        """`delete`, from synchronous code."""
        self._run_sync(self.delete(key))

    def delete_request_sync(
        self, path: str, body: bytes | Mapping[str, Any], headers: Mapping[str, str] | None = None, query: str = ""
    ) -> str:
        """`delete_request`, from synchronous code."""
        return self._run_sync(self.delete_request(path, body, headers, query))

    def clear_sync(self, namespace: str | None = None) -> None:
        """`clear`, from synchronous code."""
        self._run_sync(self.clear(namespace))

    def invalidate_sync(self, tags: Collection[str]) -> list[str]:
        """`invalidate`, from synchronous code."""
        return self._run_sync(self.invalidate(tags))

    def close_sync(self) -> None:
        """`close`, from synchronous code (it also stops the loop thread the other `_sync` helpers use)."""
        loop, self._sync_loop = self._sync_loop or LoopThread("llm-cache-sync"), None
        try:
            loop.run(self.close())
        finally:
            loop.close()

    def _run_sync(self, work: Coroutine[Any, Any, T]) -> T:
        if self._sync_loop is None:
            self._sync_loop = LoopThread("llm-cache-sync")
        return self._sync_loop.run(work)

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.store.delete(key)
        except Exception as error:
            self._store_failed("delete", error)

    def _store_failed(self, operation: str, error: Exception) -> None:
        self.stats.store_errors += 1
        self.telemetry.store_error(operation, error)  # counted, and logged at most once a minute


def request_info(request: CacheRequest) -> RequestInfo:
    """What the hooks see of a request (read only)."""
    endpoint = request.endpoint
    return RequestInfo(
        request.method,
        request.path,
        request.query,
        request.headers,
        request.body,
        endpoint.family,
        endpoint.name,
        request.model,
        request.stream,
    )


def advance(plan: Plan, reply: Any, error: BaseException | None) -> Action | End:
    """The plan's next action, or its end; `error` (what performing the last action raised) is thrown
    into it instead of a reply."""
    try:
        return plan.send(reply) if error is None else plan.throw(error)
    except StopIteration as stop:
        end: End = stop.value
        return end


async def drive(plan: Plan, perform: Callable[[Action], Awaitable[Any]]) -> End:
    """Run `plan` to its end with an async `perform` of its actions."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        step = advance(plan, reply, error)
        if isinstance(step, _ENDS):
            return step
        reply, error = None, None
        try:
            reply = await perform(step)
        except BaseException as failure:
            error = failure


def drive_sync(plan: Plan, perform: Callable[[Action], Any]) -> End:
    """Run `plan` to its end with a blocking `perform` of its actions (the sync transport): the same
    loop as `drive`, whose coroutine never suspends here, so it ends on its first step."""

    async def now(action: Action) -> Any:
        return perform(action)

    loop = drive(plan, now)
    try:
        loop.send(None)
    except StopIteration as stop:
        end: End = stop.value
        return end
    loop.close()
    raise RuntimeError("a blocking plan suspended")


_ENDS = (Answer, Untouched, Relay)


def _check_prefixes(store: Store, space: str, key_prefix: str) -> None:
    """Refuse, when the cache is built, a key space whose clears the store could not honour
    (memcached cannot scan keys: it clears only `:`-terminated prefixes of a few segments)."""
    if not abilities_of(store).prefix_rules:
        return
    for prefix in (space, namespace_prefix(space, DEFAULT_NAMESPACE)):
        try:
            cast(PrefixRulesStore, store).check_prefix(prefix)
        except StoreError as error:
            raise ValueError(f"key_prefix {key_prefix!r} does not fit the {store.name} store: {error}") from None


def answer_ends(endpoint: Endpoint, body: bytes) -> float | None:
    """When something a stored answer names on the provider stops existing (`Endpoint.answer_ends`);
    the body is read only when it holds an `expires_at`."""
    if b'"expires_at"' not in body:
        return None
    response = loads_object(body)
    return None if response is None else endpoint.answer_ends(response)


def entry_tags(request: CacheRequest) -> frozenset[str]:
    """The tags every entry carries: its model, namespace and credential scope (the scope's hash,
    never the credential), so an operator can drop one model's, tenant's or caller's answers."""
    namespace = request.policy.namespace or DEFAULT_NAMESPACE
    tags = {f"namespace:{namespace}", f"scope:{request.scope}"}
    model = request.model
    if model:
        tags.add(f"model:{model}")
    return frozenset(tags)


_Heads = tuple[tuple[tuple[bytes, bytes], ...], tuple[tuple[bytes, bytes], ...]]
"""A hit's headers before `age` and after it."""


def _entry_heads(
    opening: HeaderPairs, outcome: bytes, key: str, body: bytes, origin: tuple[tuple[str, str], ...]
) -> _Heads:
    """The headers of an entry served as `body` under `key`, but for its `age`: what goes before, what
    after. `opening`: the family's content-type (and cache-control) for the form served
    (`Endpoint.answer_headers`); the entry's origin (router headers, the provider's request id;
    `replayed_origin`) ends them."""
    before = (*opening, (_RAW_CACHE_HEADER, outcome), (_RAW_KEY_HEADER, key.encode("latin-1")))
    encoded = tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in origin)
    return before, ((b"content-length", b"%d" % len(body)), *encoded)


def error_body(message: str, param: str | None) -> bytes:
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
    "ForwardAsIs",
    "Lookup",
    "Outcome",
    "Plan",
    "Recorder",
    "Rejection",
    "ResponseParts",
    "advance",
    "drive",
    "drive_sync",
    "entry_tags",
]
