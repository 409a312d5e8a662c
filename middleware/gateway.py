"""The caching gateway that `llm-cache serve` runs: a Starlette reverse proxy wrapped in `CacheMiddleware`.

Requests are sent to the upstream of their API family (OpenAI, Anthropic, Gemini, Azure OpenAI)
through one shared `httpx2.AsyncClient` created in the lifespan, and streamed back chunk by chunk.
The cache itself lives in the middleware; this module only forwards, and adds `/health`,
`/metrics` and the admin-key protected `/cache/*` management endpoints.

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
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .config import ConfigError, GatewayConfig, build_cache, default_config, load_config, with_upstreams
from .engine import Cache
from .keys import NAMESPACE_PATTERN
from .stores.base import StoreError

logger = logging.getLogger("middleware.gateway")

__all__ = ["create_gateway", "family_of", "gateway_from_env", "upstream_url"]

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
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "x-admin-key"}
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters HTTP/1.1 never carries in a field value (HTAB is allowed)."""
_MANAGEMENT_ENV = "LLM_CACHE_CONFIG"
_UPSTREAMS_ENV = "LLM_CACHE_UPSTREAMS"


def family_of(path: str) -> str | None:
    """The API family whose upstream serves `path`, or None for paths the gateway does not proxy."""
    if path.startswith("/openai/"):
        return "azure"
    if path == "/v1/messages" or path.startswith(("/v1/messages/", "/v1/complete")):
        return "anthropic"
    if path.startswith("/v1beta/") or (path.startswith(("/v1/models/", "/v1alpha/")) and ":" in path):
        return "gemini"
    if path.startswith("/v1/"):
        return "openai"
    return None


def upstream_url(base_url: str, path: str, query: str = "") -> str:
    """`base_url` + `path`, without repeating a version segment both end and start with.

    `https://api.openai.com/v1` + `/v1/chat/completions` -> `https://api.openai.com/v1/chat/completions`;
    `https://api.anthropic.com` + `/v1/messages` -> `https://api.anthropic.com/v1/messages`.
    """
    base = base_url.rstrip("/")
    last = urlsplit(base).path.rstrip("/").rpartition("/")[2]
    if last and (path == f"/{last}" or path.startswith(f"/{last}/")):
        path = path[len(last) + 1 :]
    return f"{base}{path}" + (f"?{query}" if query else "")


def error_body(family: str | None, status: int, message: str) -> bytes:
    """An error answer shaped the way the family's API shapes errors, so SDKs raise their usual errors."""
    if family == "anthropic":
        kind = "api_error" if status >= 500 else "invalid_request_error"
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    if family == "gemini":
        status_name = {502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 404: "NOT_FOUND"}
        return orjson.dumps(
            {"error": {"code": status, "message": message, "status": status_name.get(status, "UNKNOWN")}}
        )
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": kind,
                "param": None,
                "code": "upstream_unavailable" if status in (502, 504) else None,
            }
        }
    )


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _bad(message: str, status: int = 400, kind: str = "invalid_request_error") -> Response:
    return _json({"error": {"message": message, "type": kind}}, status)


class _Counters:
    """What the gateway itself counts (the cache counts the rest in `cache.stats`)."""

    def __init__(self) -> None:
        self.upstream: Counter[tuple[str, str]] = Counter()
        self.upstream_errors: Counter[str] = Counter()


class _GatewayCollector(Collector):
    """The gateway's own metrics, read at scrape time (no per-request metric work).

    The request, store and savings metrics come from the cache's telemetry collector
    (`middleware.telemetry`), registered next to this one.
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
        errors = CounterMetricFamily(
            "llm_cache_upstream_errors", "Upstreams unreachable or timed out.", labels=["family"]
        )
        for family, value in sorted(self.counters.upstream_errors.items()):
            errors.add_metric([family], value)
        yield errors


class _Gateway:
    """The state of one gateway app: config, cache, shared client, counters."""

    def __init__(self, config: GatewayConfig, cache: Cache | None, router: Any = None) -> None:
        self.config = config
        self.cache = cache
        self.router = router
        self.client: httpx2.AsyncClient | None = None
        self.counters = _Counters()
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
            from router import RouterTransport

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
        warm_up = getattr(self.cache.semantic.embedder, "warm_up", None) if self.cache and self.cache.semantic else None
        if warm_up is not None:  # load a local embedding model now, not on the first miss
            await asyncio.to_thread(warm_up)
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

    async def proxy(self, request: Request) -> Response:
        try:  # Starlette reads the URL from the Host header and the query as UTF-8: either may not parse
            path, query = request.url.path, request.url.query
        except ValueError:
            message = "the request's Host or query cannot be read"
            return Response(error_body(None, 400, message), 400, media_type="application/json")
        family = family_of(path)
        if family is None:
            return Response(error_body(None, 404, f"no upstream serves {path}"), 404, media_type="application/json")
        upstreams = self.config.upstreams
        base_url = upstreams.base_url(family)
        if base_url is None:
            message = f"no upstream configured for {family}: set upstreams.{family}.base_url"
            return Response(error_body(family, 502, message), 502, media_type="application/json")
        upstream = getattr(upstreams, family)
        headers = [(k, v) for k, v in request.headers.items() if k not in _REQUEST_DROP]
        connection = request.headers.get("connection")
        if connection:
            named = {token.strip().lower() for token in connection.split(",")}
            headers = [(k, v) for k, v in headers if k not in named]
        if upstream.api_key:
            headers, query = _with_credentials(family, upstream.api_key, headers, query)
        wire = _wire_headers(headers)
        if wire is None:
            message = "a request header cannot be forwarded (a name that is not a token, or a control character)"
            return Response(error_body(family, 400, message), 400, media_type="application/json")
        body = await request.body()
        assert self.client is not None, "the gateway's lifespan has not started"
        try:
            outgoing = self.client.build_request(
                request.method,
                upstream_url(base_url, path, query),
                headers=wire,
                content=body,
                timeout=httpx2.Timeout(upstream.timeout, connect=10.0),
            )
        except httpx2.InvalidURL:
            message = "the request path or query cannot be forwarded"
            return Response(error_body(family, 400, message), 400, media_type="application/json")
        _caller_headers_only(outgoing, request.headers.get("accept-encoding"), {k for k, _ in headers})
        try:
            response = await self.client.send(outgoing, stream=True)
        except httpx2.TimeoutException:
            self.counters.upstream_errors[family] += 1
            logger.warning("upstream %s timed out", family)
            return Response(
                error_body(family, 504, f"the {family} upstream timed out"), 504, media_type="application/json"
            )
        except (httpx2.TransportError, OSError) as error:
            self.counters.upstream_errors[family] += 1
            logger.warning("upstream %s unreachable (%s)", family, type(error).__name__)
            return Response(
                error_body(family, 502, f"the {family} upstream is unreachable"), 502, media_type="application/json"
            )
        self.counters.upstream[(family, f"{response.status_code // 100}xx")] += 1
        response_headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        return _UpstreamResponse(response, response_headers)

    # -- operations -----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
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
        given = request.headers.get("x-admin-key")
        if given is None:
            authorization = request.headers.get("authorization", "")
            if authorization[:7].lower() == "bearer ":
                given = authorization[7:].strip()
        if given is None:
            return _json(
                {
                    "error": {
                        "message": "admin key required (Authorization: Bearer <key> or x-admin-key)",
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
        return _json(stats)

    async def _admin_body(self, request: Request) -> dict[str, Any] | Response:
        """The JSON object a management call sent, once the admin key checks out; else the answer."""
        if (refused := self._refuse(request)) is not None:
            return refused
        return await self._body(request)

    async def _store_call(self, operation: str, call: Any, answer: dict[str, Any]) -> Response:
        try:
            await call
        except Exception as error:
            logger.warning("cache %s failed (%s)", operation, type(error).__name__)
            return _bad("the cache store did not answer", 503, "store_error")
        return _json(answer)

    async def delete(self, request: Request) -> Response:
        data = await self._admin_body(request)
        if isinstance(data, Response):
            return data
        assert self.cache is not None
        key = data.get("key")
        if key is None:
            path, body, headers = data.get("path"), data.get("body"), data.get("headers") or {}
            query = data.get("query") or ""
            if not isinstance(path, str) or not isinstance(body, dict) or not isinstance(headers, dict):
                return _bad('send {"key": "..."} or {"path": "/v1/...", "body": {...}, "headers": {...}}')
            if not isinstance(query, str) or not all(isinstance(value, str) for value in headers.values()):
                return _bad("headers must map names to strings, and query must be a string")
            try:
                key = self.cache.key_for(path, body, headers, query)
            except ValueError as error:
                return _bad(str(error))
        if not isinstance(key, str) or not key:
            return _bad("key must be a non-empty string")
        return await self._store_call("delete", self.cache.delete(key), {"deleted": key})

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
                logger.warning("cache flush failed (%s)", type(error).__name__)
                return _bad("the cache store did not answer", 503, "store_error")
            return _json({"flushed": {"prefix": prefix}})
        flushed = namespace if namespace is not None else "all"
        return await self._store_call("flush", self.cache.clear(namespace), {"flushed": flushed})

    async def ping(self, request: Request) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        assert self.cache is not None
        store = self.cache.store
        key = f"{self.cache.settings.key_prefix}__ping__:{uuid.uuid4().hex}"
        value = uuid.uuid4().bytes
        started = time.perf_counter()

        async def probe() -> bool:
            await store.set(key, value, 30.0)
            found = await store.get(key) == value
            await store.delete(key)
            return found

        try:
            ok = await asyncio.wait_for(probe(), 5.0)
        except Exception as error:  # the answer never carries exception text or host names
            logger.warning("cache ping failed (%s)", type(error).__name__)
            ok = False
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        return _json({"ok": ok, "store": store.name, "latency_ms": elapsed}, 200 if ok else 503)


class _UpstreamResponse(StreamingResponse):
    """Relays an upstream response body as it arrives and always closes the upstream response.

    Unlike Starlette's StreamingResponse, a client disconnect cancels the relay only while body chunks
    are still being sent: once the last chunk is on its way, whatever the layers above do after
    sending it (CacheMiddleware stores the captured answer there) runs to completion instead of
    being cancelled by the disconnect that the server reports once the response is complete.
    """

    def __init__(self, upstream: httpx2.Response, headers: list[tuple[str, str]]) -> None:
        super().__init__(
            self._relay(upstream), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
        )
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    @staticmethod
    async def _relay(upstream: httpx2.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
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


def _with_credentials(
    family: str, api_key: str, headers: list[tuple[str, str]], query: str
) -> tuple[list[tuple[str, str]], str]:
    """Replace the caller's credentials with the configured upstream key."""
    headers = [(k, v) for k, v in headers if k not in _CREDENTIAL_HEADERS]
    if family == "openai":
        headers.append(("authorization", f"Bearer {api_key}"))
    elif family == "azure":
        headers.append(("api-key", api_key))
    elif family == "anthropic":
        headers.append(("x-api-key", api_key))
    else:
        headers.append(("x-goog-api-key", api_key))
        if "key=" in query:
            query = urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "key"])
    return headers, query


def build_router(config: GatewayConfig) -> Any:
    """A `router.Router` for the config's `model_list` / `router` sections, or None without them.

    `model_list` (with `router` as its `router_settings`) is a LiteLLM model list; a `router` section
    alone is any config the router's own loader reads (native `groups`, Portkey-like `targets`).
    """
    if config.model_list is None and config.router is None:
        return None
    from router import ConfigError as RouterConfigError
    from router import Router

    source: dict[str, Any]
    if config.model_list is not None:
        source = {"model_list": config.model_list, "router_settings": config.router or {}}
    else:
        source = dict(config.router or {})
    try:
        return Router(source)
    except RouterConfigError as error:
        raise ConfigError(f"{config.source or '<config>'}: router: {error}") from None


def create_gateway(config: GatewayConfig | None = None, *, cache: Cache | None = None) -> Starlette:
    """The gateway app for `config` (default: the embedded default). `cache` overrides the configured one.

    With a `model_list` / `router` section, upstream requests go through the router (see `build_router`).
    """
    from .asgi import CacheMiddleware

    config = config if config is not None else default_config()
    router = build_router(config)
    if cache is None and config.cache.enabled:
        cache = build_cache(config.cache)
    gateway = _Gateway(config, cache, router)
    routes = [
        Route("/health", gateway.health, methods=["GET"]),
        Route("/metrics", gateway.metrics, methods=["GET"]),
        Route("/cache/stats", gateway.stats, methods=["GET"]),
        Route("/cache/delete", gateway.delete, methods=["POST"]),
        Route("/cache/flush", gateway.flush, methods=["POST"]),
        Route("/cache/ping", gateway.ping, methods=["GET"]),
        Route("/{path:path}", gateway.proxy, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    middleware = []
    if cache is not None:
        middleware.append(Middleware(CacheMiddleware, cache=cache, max_body_bytes=config.cache.max_body_bytes))
    app = Starlette(routes=routes, middleware=middleware, lifespan=gateway.lifespan)
    app.state.gateway = gateway
    app.state.cache = cache
    app.state.config = config
    app.state.router = router
    return app


def gateway_from_env() -> Starlette:
    """uvicorn factory for multi-worker serving: each worker loads the config named by the environment."""
    path = os.environ.get(_MANAGEMENT_ENV)
    try:
        config = load_config(path) if path else default_config()
        overrides = [item for item in os.environ.get(_UPSTREAMS_ENV, "").split("\n") if item]
        config = with_upstreams(config, overrides)
        return create_gateway(config)
    except ConfigError as error:
        raise SystemExit(f"llm-cache: {error}") from None
