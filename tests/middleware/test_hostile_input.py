"""Hostile input never crashes anything (issue 11, item 7).

Generated requests (hypothesis, derandomised: the same examples on every run) go through every way
in: the async and sync caching transports inside httpx2 and httpx clients, the ASGI middleware in
front of a Starlette app, and the gateway (in-process, and a real uvicorn server for the bytes only
a real HTTP parser hands over). Bodies are JSON text the parser accepts or almost accepts: any
nesting depth up to 2,000, huge arrays, duplicate keys, NaN/Infinity, numbers past 64 bits and past
double range, lone surrogates, raw bytes that are not UTF-8. Headers are latin-1 and control bytes;
queries are raw bytes.

The rule every answer must follow: it is the upstream's answer (passed through, or a miss), a hit,
or a precise 4xx the cache gave itself (or only-if-cached's 504); never a 500, never an exception
into the client. A request the cache could not key is never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.semantic import InProcessIndex, SemanticCache
from llm_cache.middleware.semantic.embedders import unit_rows
from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.telemetry import MAX_MODEL_CHARS
from tests.middleware.hostile import (
    DEPTHS,
    LATIN1_HEADER,
    PATHS,
    PLACES,
    UPSTREAM_MARK,
    Upstream,
    bodies,
    deep,
    headers,
    placed,
    printable_queries,
    queries,
    stream_twin,
    values,
)

ADMIN = "adm-hostile"
HOST = "http://upstream.test"


def examples(n: int) -> settings:
    """Bounded and deterministic: `n` examples, the same ones every run, no example database."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


# -- the rule --------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[bytes, bytes]]


Send = Callable[[str, bytes, Sequence[tuple[bytes, bytes]], bytes], Reply]
"""(path, raw query, raw headers, body) -> the reply a client sees; POST."""


class Referee:
    """Sends one request through an adapter and checks its answer against the rule."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.store = cache.store
        assert isinstance(self.store, MemoryStore)

    def check(
        self, send: Send, path: str, query: bytes, raw_headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        stored, entries = self.cache.stats.stored, len(self.store)
        reply = send(path, query, raw_headers, body)
        outcome = reply.headers.get("x-cache")
        assert reply.status < 500 or self._only_if_cached(reply, raw_headers), (reply.status, reply.body[:300])
        if reply.headers.get(UPSTREAM_MARK[0]) == UPSTREAM_MARK[1]:
            assert reply.status == 200  # the upstream's own answer, relayed with its header bytes
            assert (LATIN1_HEADER[0].encode(), LATIN1_HEADER[1].encode("latin-1")) in reply.raw_headers
        elif outcome == "HIT":
            assert reply.status == 200 and reply.body
        else:  # the cache (or the gateway) answered by itself: a precise client error in JSON
            assert 400 <= reply.status < 500 or self._only_if_cached(reply, raw_headers), reply.status
            assert "error" in orjson.loads(reply.body), reply.body[:300]
        if outcome in ("BYPASS", None):  # not keyed, or not to be cached: nothing stored
            assert (self.cache.stats.stored, len(self.store)) == (stored, entries), (outcome, body[:200])

    @staticmethod
    def _only_if_cached(reply: Reply, raw_headers: Sequence[tuple[bytes, bytes]]) -> bool:
        asked = any(b"only-if-cached" in value.lower() for name, value in raw_headers if name == b"cache-control")
        return reply.status == 504 and asked and reply.headers.get("x-cache") == "MISS"

    def check_with_twin(
        self,
        send: Send,
        path: str,
        query: bytes,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        twin_first: bool = False,
    ) -> None:
        """The request and its stream form, in either order: they share a key, so the second one may be
        answered from the first one's entry, replayed in the other form."""
        twin_path, twin_query, twin_body = stream_twin(path, query, body)
        pair = [(path, query, body), (twin_path, twin_query, twin_body)]
        for one_path, one_query, one_body in reversed(pair) if twin_first else pair:
            self.check(send, one_path, one_query, raw_headers, one_body)


def _reply(response: Any) -> Reply:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Reply(response.status_code, headers, response.content, list(response.headers.raw))


# -- stand-ins --------------------------------------------------------------------------------------


class HashingEmbedder:
    """A deterministic stand-in for the embedding model: vectors from the text's SHA-256."""

    name = "hashing"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.frombuffer(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest(), np.uint8) for t in texts]
        return unit_rows(np.stack(rows).astype(np.float32) + 1.0)


def semantic_cache() -> Cache:
    return Cache(MemoryStore(), semantic=SemanticCache(HashingEmbedder(), InProcessIndex(), threshold=0.99))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def closing(loop: asyncio.AbstractEventLoop) -> Iterator[ExitStack]:
    """Closes the test's clients (before its loop closes)."""
    with ExitStack() as stack:
        yield stack


request_parts = st.sampled_from(PATHS).flatmap(
    lambda path: st.tuples(st.just(path), printable_queries, headers, bodies(path), st.booleans())
)
"""(path, query, headers, body, whether the stream twin goes first)."""


def generated(referee: Referee, send: Send, n: int, parts: st.SearchStrategy[Any] = request_parts) -> None:
    """`n` generated requests, each with its stream twin, through `send`; every answer held to the rule."""

    @examples(n)
    @given(parts)
    def property(parts: tuple[str, bytes, list[tuple[bytes, bytes]], bytes, bool]) -> None:
        referee.check_with_twin(send, *parts)

    property()
    # Amid it all, the cache still caches: a well-formed request with its family's credential, twice.
    control = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"still caching?"}]}'
    credential = [(b"authorization", b"Bearer sk-control"), (b"content-type", b"application/json")]
    first, second = (send("/v1/chat/completions", b"", credential, control) for _ in range(2))
    assert (first.headers.get("x-cache"), second.headers.get("x-cache")) == ("MISS", "HIT")
    assert referee.cache.stats.stored > 0 and referee.cache.stats.hits > 0
    labels = [label for series in referee.cache.telemetry.snapshot().values() for key in series for label in key]
    assert max(map(len, labels)) <= MAX_MODEL_CHARS  # a caller's huge model name is not kept in full


def _url(path: str, query: bytes) -> str:
    return HOST + path + ("?" + query.decode("ascii") if query else "")


# -- (a) the transports -----------------------------------------------------------------------------

LIBRARIES = {"httpx2": httpx2, "httpx": httpx}


def async_sender(client: Any, loop: asyncio.AbstractEventLoop, closing: ExitStack) -> Send:
    """POSTs through an async client, each on `loop`; the client is closed with `closing`."""
    closing.callback(lambda: loop.run_until_complete(client.aclose()))

    def send(path: str, query: bytes, raw_headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        async def call() -> Reply:
            return _reply(await client.post(_url(path, query), headers=list(raw_headers), content=body))

        return loop.run_until_complete(call())

    return send


def async_transport_sender(lib: Any, cache: Cache, upstream: Upstream, closing: ExitStack, loop: Any) -> Send:
    inner = lib.MockTransport(upstream.httpx_handler)
    return async_sender(lib.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=inner)), loop, closing)


def sync_transport_sender(lib: Any, cache: Cache, upstream: Upstream, closing: ExitStack) -> Send:
    client = lib.Client(transport=CachingTransport(cache=cache, inner=lib.MockTransport(upstream.httpx_handler)))
    closing.callback(client.close)

    def send(path: str, query: bytes, raw_headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        return _reply(client.post(_url(path, query), headers=list(raw_headers), content=body))

    return send


@pytest.mark.parametrize("library", LIBRARIES)
def test_async_transport_answers_every_generated_request(library: str, loop: Any, closing: ExitStack) -> None:
    cache, upstream = semantic_cache(), Upstream()
    referee = Referee(cache)
    send = async_transport_sender(LIBRARIES[library], cache, upstream, closing, loop)

    generated(referee, send, 250)
    assert cache.stats.semantic_errors == 0


@pytest.mark.parametrize("library", LIBRARIES)
def test_sync_transport_answers_every_generated_request(library: str, closing: ExitStack) -> None:
    cache, upstream = Cache(MemoryStore()), Upstream()
    referee = Referee(cache)
    send = sync_transport_sender(LIBRARIES[library], cache, upstream, closing)

    generated(referee, send, 150)


# -- (b) the ASGI middleware ------------------------------------------------------------------------


def asgi_sender(cache: Cache, upstream: Upstream, closing: ExitStack, loop: asyncio.AbstractEventLoop) -> Send:
    app = CacheMiddleware(Starlette(routes=[Route("/{path:path}", upstream.asgi, methods=["POST"])]), cache=cache)
    return async_sender(httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)), loop, closing)


def test_asgi_middleware_answers_every_generated_request(loop: Any, closing: ExitStack) -> None:
    cache, upstream = semantic_cache(), Upstream()
    referee = Referee(cache)
    send = asgi_sender(cache, upstream, closing, loop)

    generated(referee, send, 400)
    assert cache.stats.semantic_errors == 0


def server_view_sender(app: Any, loop: asyncio.AbstractEventLoop) -> Send:
    """Calls `app` with the scope a lenient server builds: the raw query bytes and header bytes as they
    arrived (an HTTP client would have percent-encoded or refused some of them)."""

    async def call(path: str, query: bytes, raw_headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Reply:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [*raw_headers, (b"host", b"app"), (b"content-length", b"%d" % len(body))],
            "client": ("127.0.0.1", 50000),
            "server": ("app", 80),
        }
        messages: list[Any] = []
        done = asyncio.Event()
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Any:
            if pending:
                return pending.pop()
            await done.wait()  # the client stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            messages.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        await app(scope, receive, send)
        start = messages[0]
        raw = list(start["headers"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return Reply(start["status"], headers, content, raw)

    return lambda *parts: loop.run_until_complete(call(*parts))


raw_request_parts = st.sampled_from(PATHS).flatmap(
    lambda path: st.tuples(st.just(path), queries, headers, bodies(path), st.booleans())
)
"""As `request_parts`, with the raw query bytes a server may hand over."""


def test_asgi_middleware_takes_the_raw_bytes_a_server_hands_over(loop: Any) -> None:
    cache, upstream = Cache(MemoryStore()), Upstream()
    app = CacheMiddleware(Starlette(routes=[Route("/{path:path}", upstream.asgi, methods=["POST"])]), cache=cache)
    generated(Referee(cache), server_view_sender(app, loop), 200, raw_request_parts)


# -- (c) the gateway ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_server() -> Iterator[tuple[BackgroundServer, Upstream]]:
    """The stand-in upstream on a real loopback port (the gateway's client sends real HTTP)."""
    upstream = Upstream()
    app = Starlette(routes=[Route("/{path:path}", upstream.asgi, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
    with BackgroundServer(app, lifespan="off") as server:
        yield server, upstream


def gateway_app(url: str) -> Starlette:
    return create_gateway(
        parse_config(
            {
                "cache": {"store": {"type": "memory"}},
                "admin_key": ADMIN,
                "upstreams": {
                    "openai": {"base_url": f"{url}/v1"},
                    "anthropic": {"base_url": url},
                    "gemini": {"base_url": url},
                    "azure": {"base_url": url},
                },
            }
        )
    )


class InProcessGateway:
    """The gateway app with its lifespan running, reached through httpx2's ASGITransport."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, closing: ExitStack) -> None:
        self.app = gateway_app(url)
        self.cache: Cache = self.app.state.cache
        self.loop = loop
        self._lifespan = self.app.router.lifespan_context(self.app)
        loop.run_until_complete(self._lifespan.__aenter__())
        closing.callback(self.close)  # after the client, which `async_sender` closes first
        self.client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app))
        self.send = async_sender(self.client, loop, closing)

    def close(self) -> None:
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))


@pytest.fixture
def gateway(
    echo_server: tuple[BackgroundServer, Upstream], loop: asyncio.AbstractEventLoop, closing: ExitStack
) -> InProcessGateway:
    return InProcessGateway(echo_server[0].url, loop, closing)


def test_gateway_answers_every_generated_request(gateway: InProcessGateway) -> None:
    generated(Referee(gateway.cache), gateway.send, 300)


def test_gateway_takes_the_raw_bytes_a_server_hands_over(gateway: InProcessGateway) -> None:
    generated(Referee(gateway.cache), server_view_sender(gateway.app, gateway.loop), 150, raw_request_parts)


# -- deep nesting, every family, every way in ---------------------------------------------------------


def _deep_cases() -> list[tuple[str, int, str, str]]:
    return [
        (path, depth, kind, place)
        for path in PATHS
        for depth in DEPTHS
        for kind in ("array", "object")
        for place in PLACES
    ]


def _check_deep(referee: Referee, send: Send) -> None:
    key = [(b"authorization", b"Bearer sk-deep")]
    for path, depth, kind, place in _deep_cases():
        body = placed(deep(depth, kind), place)
        referee.check_with_twin(send, path, b"", key, body)
        if kind == "object" and place == "messages":  # the same body once more: any stored answer is hit
            referee.check(send, path, b"", key, body)
    stats = referee.cache.stats
    assert stats.stored > 0 and stats.hits > 0  # what the cache can key (depth < 254), it still caches


def test_deep_nesting_through_the_async_transport(loop: Any, closing: ExitStack) -> None:
    cache, upstream = semantic_cache(), Upstream()
    _check_deep(Referee(cache), async_transport_sender(httpx2, cache, upstream, closing, loop))
    assert cache.stats.semantic_errors == 0


def test_deep_nesting_through_the_sync_transport(closing: ExitStack) -> None:
    cache, upstream = Cache(MemoryStore()), Upstream()
    _check_deep(Referee(cache), sync_transport_sender(httpx, cache, upstream, closing))


def test_deep_nesting_through_the_asgi_middleware(loop: Any, closing: ExitStack) -> None:
    cache, upstream = semantic_cache(), Upstream()
    _check_deep(Referee(cache), asgi_sender(cache, upstream, closing, loop))
    assert cache.stats.semantic_errors == 0


def test_deep_nesting_through_the_gateway(gateway: InProcessGateway) -> None:
    _check_deep(Referee(gateway.cache), gateway.send)


def test_a_body_the_cache_cannot_key_is_forwarded_byte_for_byte(loop: Any, closing: ExitStack) -> None:
    """Deeper than the encoder goes but within the parser's limit: the cache stands aside, the
    upstream gets the caller's exact bytes, nothing is stored."""
    cache, upstream = Cache(MemoryStore()), Upstream()
    send = async_transport_sender(httpx2, cache, upstream, closing, loop)
    body = placed(deep(1000, "array"), "messages")
    for _ in range(2):
        reply = send("/v1/chat/completions", b"", [(b"authorization", b"Bearer sk-a")], body)
        assert (reply.status, reply.headers["x-cache"]) == (200, "BYPASS")
        assert upstream.received[-1] == body
    assert cache.stats.stored == 0 and len(cache.store) == 0  # type: ignore[arg-type]


# -- the management API --------------------------------------------------------------------------------

MANAGEMENT_VALUES = {
    "key": (b'"default:shared:abc"', b'""', b"1", b'"\\u0000"', b'"' + b"k" * 5000 + b'"'),
    "path": (*(orjson.dumps(path) for path in PATHS), b'"/nope"', b'""', b"1"),
    "body": (
        b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"m","cache":{"ttl":' + deep(1000, "array") + b"}}",
        b'{"model":"m","cache":{"ttl":123456789012345678901234567890}}',
        deep(300, "object"),
        deep(1000, "object"),
        b"{}",
        b"[]",
    ),
    "headers": (
        b"{}",
        b'{"authorization":"Bearer sk-a"}',
        b'{"x-cache-ttl":"1e400","cache-control":"max-age=NaN"}',
        b'{"x-cache-namespace":"ns\\n"}',
        b'{"authorization":' + deep(1000, "array") + b"}",
        b'{"authorization":1}',
        b"[]",
    ),
    "query": (b'""', b'"key=a&alt=sse"', b'"%ff%00"', b"1", deep(1000, "array"), b"null"),
    "namespace": (b'"ns"', b'"*"', b'"ns\\n"', b'""', b"1", b'"\\u00e9"'),
    "prefix": (b'"default:"', b'"*"', b'"\\u0000"', b'""', b"[]"),
    "all": (b"true", b"false", b"1", b"null"),
}
"""The management calls' fields, in their right and wrong types and shapes."""


def _management_field(name: str, odd: bool = True) -> st.SearchStrategy[tuple[str, bytes]]:
    meant = st.sampled_from(MANAGEMENT_VALUES[name])
    return st.tuples(st.just(name), st.one_of(meant, values) if odd else meant)


@st.composite
def management_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    """(endpoint, body): a delete by request (path, body, headers, query) or by key, a flush, any fields,
    any JSON, any bytes."""
    kind = draw(st.sampled_from(("request", "request", "request", "key", "flush", "fields", "value", "bytes")))
    endpoint = "/cache/flush" if kind == "flush" else draw(st.sampled_from(("/cache/delete", "/cache/flush")))
    if kind in ("request", "key"):
        endpoint = "/cache/delete"
    if kind == "value":
        return endpoint, draw(values)
    if kind == "bytes":
        return endpoint, draw(st.binary(max_size=40))
    if kind == "request":
        optional = draw(st.lists(st.sampled_from(("headers", "query")), max_size=2))
        fields = [draw(_management_field("path", odd=False)), draw(_management_field("body", odd=False))]
        fields += [draw(_management_field(name)) for name in optional]
    else:
        names = {
            "key": ["key"],
            "flush": draw(st.lists(st.sampled_from(("namespace", "prefix", "all")), min_size=1, max_size=3)),
            "fields": draw(st.lists(st.sampled_from(sorted(MANAGEMENT_VALUES)), max_size=4)),
        }[kind]
        fields = [draw(_management_field(name)) for name in names]
    return endpoint, b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in fields) + b"}"


def test_management_api_never_fails_on_odd_json(gateway: InProcessGateway) -> None:
    async def call(path: str, body: bytes, admin: bytes) -> Reply:
        response = await gateway.client.post(HOST + path, headers=[(b"x-admin-key", admin)], content=body)
        return _reply(response)

    @examples(300)
    @given(management_calls(), headers)
    def property(endpoint_body: tuple[str, bytes], extra: list[tuple[bytes, bytes]]) -> None:
        endpoint, body = endpoint_body
        reply = gateway.loop.run_until_complete(call(endpoint, body, ADMIN.encode()))
        assert reply.status in (200, 400), (reply.status, body[:200], reply.body[:300])
        if reply.status == 400:
            assert "error" in orjson.loads(reply.body)
        odd_key = next((value for name, value in extra if name != b"x-admin-key"), b"\xe9\x01")
        refused = gateway.loop.run_until_complete(call(endpoint, body, odd_key))
        assert refused.status == 403

    property()


# -- a real HTTP parser's bytes ------------------------------------------------------------------------

RAW_HEADER_VALUES = (b"Bearer \xe9\xff\x80", b"Bearer sk\ta", b"\xc3\xa9t\xc3\xa9", b"", b"Bearer sk\x01\x1f\x7f")
"""latin-1, a tab, UTF-8, empty, and control characters h11 passes on (the last: refused by the gateway)."""
SERVED_TARGETS = (
    b"/v1/chat/completions?key=%e9&alt=%ff&%ED%A0%80=1",
    b"/v1beta/models/x:generateContent?key=k&alt=sse",
    b"/v1/messages?%zz",
    b"/v1/%ff/chat/completions",
    b"/v1/responses?;;;&&&==",
)
"""Odd but well-formed targets the gateway forwards."""
REFUSED_TARGETS = (b"/v1/chat/completions?a=\xe9", b"/openai/deployments/d%00/chat/completions", b"/model/x%2Fy/invoke")
"""Raw non-ASCII (the HTTP parser's 400), a NUL in the path (the gateway's 400), Bedrock (no upstream: 404)."""
RAW_BODIES = (
    b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"cache":{"namespace":"ns\\n"}}',
    placed(deep(600, "object"), "messages"),
)


def raw_exchange(port: int, request: bytes) -> bytes:
    """One request on a fresh connection; the whole answer (the server closes: `connection: close`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_gateway_behind_a_real_http_server_takes_latin1_and_control_bytes(
    echo_server: tuple[BackgroundServer, Upstream],
) -> None:
    with BackgroundServer(gateway_app(echo_server[0].url)) as server:
        for target in SERVED_TARGETS + REFUSED_TARGETS:
            for value in RAW_HEADER_VALUES:
                for body in RAW_BODIES:
                    for name in (b"authorization", b"cache-control"):
                        head = b"POST " + target + b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n"
                        head += b"content-type: application/json\r\n" + name + b": " + value + b"\r\n"
                        answer = raw_exchange(server.port, head + b"content-length: %d\r\n\r\n" % len(body) + body)
                        status = int(answer.split(b" ", 2)[1])
                        assert status < 500, (target, name, value, answer[:500])
                        answered = status == 200 and (b"x-upstream: echo" in answer or b"x-cache: HIT" in answer)
                        assert answered or status in (400, 404), (target, name, value, body[:80], answer[:300])
                        if target in SERVED_TARGETS and b"\x01" not in value and b"ns\\n" not in body:
                            assert answered, (target, name, value, body[:80], answer[:300])


def test_telemetry_keeps_no_huge_model_name(loop: Any, closing: ExitStack) -> None:
    """A caller names the model: metric labels and span names keep at most MAX_MODEL_CHARS of it."""
    cache, upstream = Cache(MemoryStore()), Upstream()
    send = async_transport_sender(httpx2, cache, upstream, closing, loop)
    for n in range(3):
        body = b'{"model":"' + str(n).encode() * 100_000 + b'","messages":[{"role":"user","content":"hi"}]}'
        assert send("/v1/chat/completions", b"", [(b"authorization", b"Bearer sk-a")], body).status == 200
    requests = cache.telemetry.snapshot()["llm_cache_requests"]
    assert sorted(len(labels[2]) for labels in requests) == [MAX_MODEL_CHARS] * 3
