"""The gateway and CacheMiddleware under HTTP/2 (hypercorn: h2c with prior knowledge, and TLS with ALPN):
the trust rules hold when one connection carries many callers, a stream is reset halfway, the host is
named by `:authority` and the client sends what HTTP/1.1 has no room for (trailers, `te`)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llm_cache.middleware import Cache, CacheMiddleware
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.middleware.test_asgi_uvicorn import Seen
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.granian_apps import LIMIT, gateway_for
from tests.support.granian_server import GranianServer
from tests.support.h2_client import DEADLINE, RawH2
from tests.support.hypercorn_server import HypercornServer

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"
CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection")


Server = HypercornServer | GranianServer


def gateway_app(provider: RunningFakeProvider) -> Any:
    return gateway_for(provider.openai_base_url)


@pytest.fixture(scope="module")
def h2_gateway(_fake_provider_session_server: RunningFakeProvider) -> Iterator[HypercornServer]:
    """The gateway `llm-cache serve` runs, under hypercorn, one for the module (each test its own prompt)."""
    with HypercornServer(gateway_app(_fake_provider_session_server)) as server:
        yield server


@pytest.fixture(scope="module", params=["hypercorn", "granian"])
def h2_server(request: pytest.FixtureRequest, h2_gateway: HypercornServer) -> Iterator[Server]:
    """The gateway under each HTTP/2 server: hypercorn (h2, in this process) and granian (hyper, a child)."""
    if request.param == "hypercorn":
        yield h2_gateway
        return
    upstream: RunningFakeProvider = request.getfixturevalue("_fake_provider_session_server")
    with GranianServer("gateway", UPSTREAM=upstream.openai_base_url) as server:
        yield server


def cache_of(server: HypercornServer) -> Cache:
    cache: Cache = server.app.state.cache
    return cache


def request_headers(
    path: str = CHAT,
    authority: bytes | None = b"127.0.0.1",
    key: str = "sk-alice",
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> list[tuple[bytes, bytes]]:
    pseudo = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode())]
    if authority is not None:
        pseudo.append((b":authority", authority))
    return [*pseudo, (b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json"), *extra]


def chat_body(content: str, stream: bool = False) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream}).encode()


def settled(cache: Cache) -> None:
    """Wait (bounded) until every miss has been stored or given up: the server's loop ends on its own time."""
    end = time.monotonic() + DEADLINE
    while cache._flights._flights or cache.stats.stored + cache.stats.not_stored < cache.stats.misses:
        assert time.monotonic() < end, cache.stats
        time.sleep(0.01)


def wait_until(condition: Any) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, "not within the deadline"
        time.sleep(0.005)


# -- Host and :authority --------------------------------------------------------------------------


def test_under_http2_the_gateway_judges_the_authority_a_browser_names_and_a_host_beside_it_cannot_hide_it(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """A browser sends the host in `:authority` (no `Host`); hypercorn hands it to the app as `host`. A
    rebound page's authority is refused; a `host` that differs from `:authority` (which no browser can
    send) is a malformed request the server refuses before the gateway; a request with only `host` is
    judged by it."""
    port = h2_server.port
    body = chat_body("h2 authority")
    sent = (
        request_headers(authority=f"evil.example:{port}".encode()),
        request_headers(authority=None, extra=((b"host", b"evil.example"),)),
        request_headers(authority=f"127.0.0.1:{port}".encode()),
    )
    statuses = []
    for headers in sent:  # (a connection each: see `refused` below)
        with RawH2(port) as h2c:
            answer = h2c.answer(h2c.send(headers, body))
            statuses.append(answer.status)
            assert answer.status == 200 or b"server.allowed_hosts" in answer.body
    assert statuses == [403, 403, 200]
    # `host` beside a different `:authority` (no browser can send it): hypercorn (h2) refuses the request as
    # malformed; granian hands the app `host` and drops the authority, which is then what is judged
    for authority, host in ((b"127.0.0.1", b"evil.example"), (b"evil.example", b"127.0.0.1")):
        with RawH2(port) as h2c:
            both = h2c.answer(h2c.send(request_headers(authority=authority, extra=((b"host", host),)), body))
        if isinstance(h2_server, HypercornServer):
            assert h2c.terminated or both.reset
        else:
            assert both.status == (403 if host == b"evil.example" else 200)
    assert fake_provider_session.count(CHAT) == 1  # (granian's 200 beside: a hit)


def test_a_gateway_over_tls_negotiates_http2_and_judges_the_authority(
    tmp_path: Path, _fake_provider_session_server: RunningFakeProvider
) -> None:
    """HTTPS with ALPN (a certificate the test makes): the same rules, a miss then a hit, on HTTP/2."""
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    verify = ssl.create_default_context()
    authority.configure_trust(verify)
    app = gateway_app(_fake_provider_session_server)
    with HypercornServer(app, tls=(certfile, keyfile), verify=verify) as server:

        async def calls() -> list[httpx.Response]:
            async with server.client() as http:
                body, key = chat_body("over tls"), {"authorization": "Bearer sk-alice"}
                first, second = [await http.post(CHAT, content=body, headers=key) for _ in range(2)]
                page = await http.post(CHAT, content=body, headers={**key, "host": "evil.example"})
                return [first, second, page]

        first, second, page = asyncio.run(calls())
    assert first.http_version == "HTTP/2" and first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT" and second.content == first.content
    assert page.status_code == 403


def test_a_refusal_that_ends_the_connection_under_http1_is_a_valid_http2_answer(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """A body over `max_request_bytes` is a 413 that, under HTTP/1.1, closes the connection (`connection:
    close`: the rest of the body is not read). HTTP/2 has no such header (a server refuses to send it and
    resets the stream): the caller gets its 413, and the connection's other streams go on."""
    with RawH2(h2_server.port) as h2c:
        over = ((b"content-length", str(LIMIT + 1).encode()),)
        sid = h2c.send(request_headers(extra=over), end=False)
        refused = h2c.answer(sid)
        assert refused.status == 413, refused
        assert not {name for name, _ in refused.headers} & set(CONNECTION_SPECIFIC)
        h2c.reset(sid)  # (the body the client will not send; granian may have reset the stream already)
        answered = h2c.answer(h2c.send(request_headers(), chat_body("h2 after a refusal")))
    assert answered.status == 200
    assert fake_provider_session.count(CHAT) == 1


def test_a_body_with_no_content_length_reaches_the_upstream_whole(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """HTTP/2 ends a body with its stream: a request may send one with no `content-length` (a streamed
    upload, a browser's `ReadableStream`), in one DATA frame or several. The upstream gets it whole, as
    the cache keyed it; a GET with none still sends none."""
    one, several = chat_body("h2 no length"), chat_body("h2 no length, in pieces", stream=True)
    with RawH2(h2_server.port) as h2c:
        whole = h2c.answer(h2c.send(request_headers(), one))
        sid = h2c.send(request_headers(), several[:10], end=False)
        h2c.conn.send_data(sid, several[10:40])
        h2c.conn.send_data(sid, several[40:], end_stream=True)
        h2c.flush()
        pieces = h2c.answer(sid)
        models = h2c.answer(h2c.send([(b":method", b"GET"), *request_headers(path="/v1/models")[1:]]))
    assert (whole.status, pieces.status) == (200, 200) and models.status == 404  # (the fake serves no list)
    first, second, listing = fake_provider_session.requests
    assert first.raw == one and second.body["messages"] == json.loads(several)["messages"] and listing.raw == b""
    assert "transfer-encoding" not in fake_provider_session.last.headers


def test_a_method_named_in_a_body_with_no_content_length_is_judged_by_the_allow_rules(
    fake_provider_session: RunningFakeProvider,
) -> None:
    """A gateway holding the owner's key judges the methods a body names (`_method`: Laravel, Rails):
    under HTTP/2 the body may come with no length, and is read and judged all the same."""
    upstream = {"base_url": fake_provider_session.openai_base_url, "api_key": "sk-owner"}
    config = {"cache": {"store": {"type": "memory"}}, "auth": {"keys": ["gw-key"]}, "upstreams": {"openai": upstream}}
    with HypercornServer(create_gateway(parse_config(config))) as server, RawH2(server.port) as h2c:
        named = h2c.answer(h2c.send(request_headers(key="gw-key"), b'{"_method": "DELETE"}'))
    assert named.status == 403 and b"does not forward DELETE" in named.body, named
    assert fake_provider_session.requests == []


def test_an_upload_cut_by_rst_stream_never_reaches_the_upstream_and_the_connection_goes_on(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """The caller's stream is reset halfway through its body: the upstream never gets that request whole
    (the gateway's upstream call, begun with the body's first piece, is cut with it) and nothing is
    stored; the next stream on the connection is answered."""
    body = chat_body("h2 gateway cut upload")
    with RawH2(h2_server.port) as h2c:
        length = ((b"content-length", str(len(body)).encode()),)
        cut = h2c.send(request_headers(extra=length), body[: len(body) // 2], end=False)
        h2c.reset(cut)
        answered = h2c.answer(h2c.send(request_headers(), chat_body("h2 after a cut upload")))
        again = h2c.answer(h2c.send(request_headers(), body))
    assert answered.status == 200 and answered.header(b"x-cache") == b"MISS"
    assert again.status == 200 and again.header(b"x-cache") == b"MISS"
    bodies = [request.body for request in fake_provider_session.requests]
    whole = [body["messages"][0]["content"] for body in bodies if isinstance(body, dict)]
    assert whole == ["h2 after a cut upload", "h2 gateway cut upload"]  # the second: `again`
    assert all(len(part) < len(body) for part in bodies if isinstance(part, bytes))


# -- many callers on one connection ---------------------------------------------------------------


def test_concurrent_streams_on_one_connection_never_cross_callers_and_identical_ones_coalesce(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """Two callers (two keys) asking the same question on one connection get their own entries; five
    identical concurrent streams call the provider once; every hit goes to the stream that asked."""

    async def calls() -> tuple[list[httpx.Response], list[httpx.Response], list[httpx.Response]]:
        async with h2_server.client() as http:

            def ask(key: str, content: str) -> Any:
                headers = {"authorization": f"Bearer {key}"}
                return http.post(CHAT, content=chat_body(content), headers=headers)

            fake_provider_session.hold()
            together = [asyncio.ensure_future(ask("sk-alice", "h2 coalesced")) for _ in range(5)]
            await fake_provider_session.wait_for_in_flight_async(1)
            fake_provider_session.release()
            coalesced = list(await asyncio.gather(*together))
            questions = [(key, f"h2 question {n}") for n in range(4) for key in ("sk-alice", "sk-bob")]
            misses = list(await asyncio.gather(*(ask(key, content) for key, content in questions)))
            hits = list(await asyncio.gather(*(ask(key, content) for key, content in reversed(questions))))
            return coalesced, misses, hits[::-1]

    coalesced, misses, hits = asyncio.run(calls())
    assert {response.http_version for response in coalesced + misses + hits} == {"HTTP/2"}
    assert len({response.content for response in coalesced}) == 1
    assert fake_provider_session.count(CHAT) == 1 + len(misses)  # the five identical ones: one call
    assert {response.headers["x-cache"] for response in misses} == {"MISS"}
    assert {response.headers["x-cache"] for response in hits} == {"HIT"}
    for miss, hit in zip(misses, hits, strict=True):
        assert hit.content == miss.content and hit.headers["x-cache-key"] == miss.headers["x-cache-key"]
    keys = {miss.headers["x-cache-key"] for miss in misses}
    assert len(keys) == len(misses)  # alice's and bob's same questions are distinct entries


def test_a_stream_reset_halfway_through_a_streamed_miss_stores_nothing_partial_and_spares_the_other_streams(
    h2_gateway: HypercornServer, fake_provider_session: RunningFakeProvider
) -> None:
    """RST_STREAM on a streamed miss whose upstream has sent part of its answer: the coalesced waiter on
    the same key is freed and gets a whole stream of its own, another stream on the connection is
    answered, and what is stored is only a whole answer."""
    cache = cache_of(h2_gateway)
    settled(cache)
    streamed = chat_body("h2 reset me", stream=True)
    fake_provider_session.break_body_after(300, stall=True)  # part of the answer, then nothing until release
    with RawH2(h2_gateway.port) as h2c:
        leader = h2c.send(request_headers(), streamed)
        h2c.until(lambda: len(h2c.streams[leader].body) > 0)
        waiter = h2c.send(request_headers(), streamed)
        wait_until(lambda: cache.stats.coalesce_waiting == 1)  # the waiter waits on the leader's flight
        h2c.reset(leader)
        other = h2c.send(request_headers(), chat_body("h2 another question"))
        assert h2c.answer(other).status == 200
        whole = h2c.answer(waiter)
        assert whole.status == 200 and whole.body.rstrip().endswith(b"data: [DONE]")
        fake_provider_session.release()
        settled(cache)
        again = h2c.answer(h2c.send(request_headers(), streamed))
    assert again.header(b"x-cache") == b"HIT" and again.body == whole.body
    assert fake_provider_session.count(CHAT) == 3  # the reset leader's, the freed waiter's, the other's


# -- what HTTP/2 carries that HTTP/1.1 does not -----------------------------------------------------


def test_te_trailers_request_trailers_and_header_order_are_neither_forwarded_nor_keyed(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """`te: trailers` (the one `te` HTTP/2 allows) is for this hop; trailers after the body (a credential
    among them) never reach the app; the pseudo-headers in another order name the same request."""
    body = chat_body("h2 trailers")
    with RawH2(h2_server.port) as h2c:
        plain = h2c.answer(h2c.send(request_headers(), body))
        assert plain.status == 200 and plain.header(b"x-cache") == b"MISS"
        pseudo, regular = request_headers()[:4], request_headers()[4:]
        reordered = [*reversed(pseudo), *regular, (b"te", b"trailers")]
        trailed = h2c.send(reordered, body, trailers=[(b"authorization", b"Bearer sk-bob"), (b"x-extra", b"1")])
        hit = h2c.answer(trailed)
    assert hit.status == 200 and hit.header(b"x-cache") == b"HIT", hit.body
    assert hit.header(b"x-cache-key") == plain.header(b"x-cache-key")
    sent = fake_provider_session.last.headers
    assert "te" not in sent and "x-extra" not in sent and sent["authorization"] == "Bearer sk-alice"


def test_a_hit_replays_no_connection_specific_header_from_the_upstream(
    h2_server: Server, fake_provider_session: RunningFakeProvider
) -> None:
    """An upstream (or a proxy before it) that answers `connection: keep-alive`, `keep-alive: ...`: HTTP/2
    forbids those headers, and a server would reset the stream that carried them. Neither the miss nor
    the hit carries one."""
    fake_provider_session.send_headers({"connection": "keep-alive", "keep-alive": "timeout=5, max=100"})
    body = chat_body("h2 hop headers")
    with RawH2(h2_server.port) as h2c:
        answers = [h2c.answer(h2c.send(request_headers(), body)) for _ in range(2)]
    assert [answer.status for answer in answers] == [200, 200]
    assert [answer.header(b"x-cache") for answer in answers] == [b"MISS", b"HIT"]
    for answer in answers:
        assert not {name for name, _ in answer.headers} & set(CONNECTION_SPECIFIC)


def test_the_openai_sdk_over_http2_gets_a_miss_then_an_identical_hit(h2_server: Server) -> None:
    """The real openai SDK on an HTTP/2-only httpx2 client (the SDK's own HTTP library), through the gateway."""

    async def calls() -> list[Any]:
        async with httpx2.AsyncClient(http1=False, http2=True, timeout=DEADLINE) as http:
            client = openai.AsyncOpenAI(
                base_url=f"{h2_server.url}/v1", api_key="sk-alice", http_client=http, max_retries=0
            )
            answers = []
            for _ in range(2):
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": "h2 sdk"}]
                )
                answers.append((raw.http_response.http_version, raw.headers["x-cache"], raw.parse()))
            return answers

    (version, first, miss), (_, second, hit) = asyncio.run(calls())
    assert version == "HTTP/2" and (first, second) == ("MISS", "HIT")
    assert hit == miss and hit.choices[0].message.content


# -- CacheMiddleware in a user's app --------------------------------------------------------------


def user_app(cache: Cache, seen: Seen) -> Starlette:
    """A user's Starlette app behind CacheMiddleware that copies an upstream's hop-by-hop headers."""

    async def chat(request: Request) -> Response:
        await seen.body(request)
        choice = {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        answer = {"id": f"c{len(seen.reads)}", "object": "chat.completion", "model": MODEL, "choices": [choice]}
        return JSONResponse(answer, headers={"connection": "keep-alive", "keep-alive": "timeout=5"})

    async def health(request: Request) -> Response:
        return JSONResponse({})

    app = Starlette(routes=[Route(CHAT, chat, methods=["POST"]), Route("/health", health)])
    return CacheMiddleware(app, cache=cache)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def h2_user_app() -> Iterator[tuple[HypercornServer, Cache, Seen]]:
    cache, seen = Cache(), Seen()
    with HypercornServer(user_app(cache, seen)) as server:
        yield server, cache, seen


def test_an_upload_cut_by_rst_stream_reaches_the_app_as_a_disconnect_and_stores_nothing(
    h2_user_app: tuple[HypercornServer, Cache, Seen],
) -> None:
    server, cache, seen = h2_user_app
    seen.reads.clear()
    seen.read.clear()
    body = chat_body("h2 cut upload")
    with RawH2(server.port) as h2c:
        cut = h2c.send(request_headers(authority=b"127.0.0.1"), body[: len(body) // 2], end=False)
        h2c.reset(cut)
        assert seen.read.wait(DEADLINE)
        whole = h2c.answer(h2c.send(request_headers(authority=b"127.0.0.1"), body))
    assert isinstance(seen.reads[0], ClientDisconnect)
    assert whole.status == 200 and whole.header(b"x-cache") == b"MISS"


def test_a_hit_from_cache_middleware_is_valid_http2_when_the_app_sent_hop_by_hop_headers(
    h2_user_app: tuple[HypercornServer, Cache, Seen],
) -> None:
    """The app's answer names `connection` and `keep-alive` (copied from an upstream): under HTTP/2 the
    stream must still be answered, and the hit must not replay them."""
    server, _, _ = h2_user_app
    body = chat_body("h2 user hop headers")
    with RawH2(server.port) as h2c:
        answers = [h2c.answer(h2c.send(request_headers(authority=b"127.0.0.1"), body)) for _ in range(2)]
    assert [answer.status for answer in answers] == [200, 200], answers
    assert [answer.header(b"x-cache") for answer in answers] == [b"MISS", b"HIT"]
    for answer in answers:
        assert not {name for name, _ in answer.headers} & set(CONNECTION_SPECIFIC)
