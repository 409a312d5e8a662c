"""What the Recorder stores from an upstream answer to a miss, and the reason it gives when it stores nothing.

Driven through the async transport; the upstream is `httpx2.MockTransport`, standing in for the
provider only. The reason is read where an operator reads it: the span event of the call.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import orjson
import pytest
import redis as syncredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware
from llm_cache.middleware._entry import unpack
from llm_cache.middleware._hooks import AnswerView
from llm_cache.middleware.config import ConfigError, parse_config
from llm_cache.middleware.providers import DEFAULT_ENDPOINTS, RequestView, StreamAssembler
from llm_cache.middleware.providers.openai import ChatCompletions
from llm_cache.middleware.stores import RedisStore
from llm_cache.middleware.telemetry import Telemetry
from tests.middleware.stores.conftest import SLACK, unique_prefix
from tests.middleware.test_plan import ANSWER, BODY
from tests.middleware.test_relay import SSE, relaying
from tests.support.stores import CountingStore

URL = "http://provider.test/v1/chat/completions"
AUTH = {"authorization": "Bearer sk-recorder"}
PARTIAL = b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\n'
"""A chat stream's first chunk, without the terminal event."""
USAGE_CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}\n\n'
)
"""The usage-only chunk an upstream sends when asked for `stream_options.include_usage`."""
CONTENT_CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"4"},"finish_reason":"stop"}]}\n\n'
)
STREAM = CONTENT_CHUNK + USAGE_CHUNK + b"data: [DONE]\n\n"
"""A complete chat stream, with the usage chunk the cache asks for on a stream whose caller did not."""


class Spans:
    """A Telemetry on a private tracer provider, and the not-stored reasons its spans recorded."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = Telemetry(tracer_provider=self.provider)

    def reasons(self) -> list[str]:
        return [
            str((event.attributes or {})["llm_cache.reason"])
            for span in self.exporter.get_finished_spans()
            for event in span.events
            if "llm_cache.reason" in (event.attributes or {})
        ]


@pytest.fixture
def spans() -> Iterator[Spans]:
    recorded = Spans()
    yield recorded
    recorded.provider.shutdown()


def answering(status: int = 200, content: bytes = ANSWER, **headers: str) -> httpx2.MockTransport:
    """An upstream that answers every call with exactly this status, body and headers."""
    headers.setdefault("content_type", "application/json")
    fields = {name.replace("_", "-"): value for name, value in headers.items() if value}
    stream = httpx2.ByteStream(content)  # as sent: not decoded on the way
    return httpx2.MockTransport(lambda request: httpx2.Response(status, headers=fields, stream=stream))


async def twice(
    cache: Cache, upstream: httpx2.MockTransport, body: Any = BODY, **headers: str
) -> tuple[httpx2.Response, ...]:
    """The same request sent twice through the cache."""
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http:
        first = await http.post(URL, json=body, headers={**AUTH, **headers})
        second = await http.post(URL, json=body, headers={**AUTH, **headers})
    return first, second


async def raw_once(cache: Cache, upstream: httpx2.MockTransport, body: Any = BODY) -> tuple[httpx2.Response, bytes]:
    """One request through the cache, and the body bytes the caller received, undecoded."""
    async with (
        httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http,
        http.stream("POST", URL, json=body, headers=AUTH) as response,
    ):
        return response, b"".join([chunk async for chunk in response.aiter_raw()])


def outcomes(responses: tuple[httpx2.Response, ...]) -> list[str]:
    return [response.headers["x-cache"] for response in responses]


async def test_an_answer_of_a_status_outside_cacheable_statuses_is_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    responses = await twice(cache, answering(201))
    assert outcomes(responses) == ["MISS", "MISS"]
    assert spans.reasons() == ["status 201 is not cacheable"] * 2
    assert (cache.stats.stored, cache.stats.not_stored) == (0, 2)


async def test_a_status_listed_in_cacheable_statuses_is_stored() -> None:
    responses = await twice(Cache(cacheable_statuses=frozenset({200, 201})), answering(201))
    assert outcomes(responses) == ["MISS", "HIT"]
    assert responses[1].status_code == 201


@pytest.mark.parametrize("status", [200, 201])
async def test_an_answer_that_names_a_location_is_relayed_and_not_stored(spans: Spans, status: int) -> None:
    """A hit replays no `location`: an answer that points elsewhere (a 201's new resource, a proxy's
    redirect dressed as a 200) would reach the next caller without where it points."""
    cache = Cache(cacheable_statuses=frozenset({200, 201}), telemetry=spans.telemetry)
    responses = await twice(cache, answering(status, location="https://elsewhere.example/"))
    assert outcomes(responses) == ["MISS", "MISS"]
    assert all(r.headers["location"] == "https://elsewhere.example/" for r in responses)
    assert spans.reasons() == ["the answer names a location"] * 2


@pytest.mark.parametrize("status", [202, 203, 204, 205, 206, 226, 301, 302, 304, 404, 500, 199, 600])
def test_only_statuses_of_a_complete_answer_can_be_made_cacheable(status: int) -> None:
    """A hit replays the status with the body and none of the upstream's other headers, to every caller
    of the key: a 206 is a part, a 202 is not done, a 203 is a proxy's rewrite of an answer, a 204 or 205
    has no content, a 3xx is no answer without its `Location`. Listing one is a settings error, in a
    config file too, never an answer stored."""
    with pytest.raises(ValueError, match=f"cacheable_statuses.*{status}"):
        Cache(cacheable_statuses=frozenset({200, status}))
    with pytest.raises(ConfigError, match=f"cache.cacheable_statuses.*{status}"):
        parse_config({"cache": {"cacheable_statuses": [200, status]}})


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        ("text/plain", "content-type text/plain is not application/json"),
        ("", "content-type missing is not application/json"),
    ],
)
async def test_a_json_request_answered_in_another_media_type_is_not_stored(
    spans: Spans, content_type: str, reason: str
) -> None:
    cache = Cache(telemetry=spans.telemetry)
    responses = await twice(cache, answering(content_type=content_type))
    assert outcomes(responses) == ["MISS", "MISS"]
    assert responses[0].content == ANSWER
    assert spans.reasons() == [reason] * 2


async def test_the_media_type_is_matched_without_regard_to_case() -> None:
    responses = await twice(Cache(), answering(content_type="Application/JSON; charset=utf-8"))
    assert outcomes(responses) == ["MISS", "HIT"]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        (" GZIP ", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda body: body),
    ],
)
async def test_a_compressed_answer_is_stored_decoded_and_replayed_as_json(encoding: str, compress: Any) -> None:
    responses = await twice(Cache(), answering(content=compress(ANSWER), content_encoding=encoding))
    assert outcomes(responses) == ["MISS", "HIT"]
    assert responses[1].json() == orjson.loads(ANSWER)


async def test_an_answer_in_an_encoding_the_cache_cannot_read_is_passed_on_and_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    response, raw = await raw_once(cache, answering(content=b"\x1b\x00", content_encoding="zstd2"))
    assert (response.headers["x-cache"], raw) == ("MISS", b"\x1b\x00")
    assert spans.reasons() == ["content-encoding zstd2 is not supported"]


async def test_a_corrupt_compressed_answer_is_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    corrupt = gzip.compress(ANSWER)[:10] + b"not gzip at all"
    _, raw = await raw_once(cache, answering(content=corrupt, content_encoding="gzip"))
    assert raw == corrupt
    assert spans.reasons() == ["undecodable compressed body"]
    assert cache.stats.stored == 0


async def test_an_answer_of_exactly_max_response_bytes_is_stored_and_one_byte_more_is_not(spans: Spans) -> None:
    at_limit = await twice(Cache(max_response_bytes=len(ANSWER)), answering())
    assert outcomes(at_limit) == ["MISS", "HIT"]
    over = Cache(max_response_bytes=len(ANSWER) - 1, telemetry=spans.telemetry)
    assert outcomes(await twice(over, answering())) == ["MISS", "MISS"]
    assert spans.reasons() == ["response over max_response_bytes"] * 2


async def test_the_limit_counts_the_decoded_size_of_a_compressed_answer() -> None:
    cache = Cache(max_response_bytes=len(ANSWER) - 1)
    responses = await twice(cache, answering(content=gzip.compress(ANSWER), content_encoding="gzip"))
    assert outcomes(responses) == ["MISS", "MISS"]


async def test_no_store_is_the_reason_given_and_a_bypass_gives_none(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    assert outcomes(await twice(cache, answering(), **{"cache-control": "no-store"})) == ["MISS", "MISS"]
    assert spans.reasons() == ["no-store requested"] * 2
    assert cache.stats.not_stored == 2


async def test_a_response_the_caller_closes_unread_is_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=answering())) as http:
        async with http.stream("POST", URL, json=BODY, headers=AUTH) as response:
            assert response.headers["x-cache"] == "MISS"
        again = await http.post(URL, json=BODY, headers=AUTH)
    assert again.headers["x-cache"] == "MISS"
    assert spans.reasons()[0] == "caller closed the response early"


async def test_a_fallback_groups_answer_is_stored_only_when_cache_fallbacks_is_on(spans: Spans) -> None:
    from_fallback = answering(x_router_fallback_from="gpt-4o", x_router_deployment="backup")
    refused = Cache(telemetry=spans.telemetry)
    assert outcomes(await twice(refused, from_fallback)) == ["MISS", "MISS"]
    assert spans.reasons()[0] == "answer from a fallback group in place of gpt-4o"
    store = CountingStore()
    kept = Cache(store, cache_fallbacks=True, fallback_ttl=30.0)
    assert outcomes(await twice(kept, from_fallback)) == ["MISS", "HIT"]
    assert store.ttls == [30.0]


@pytest.mark.parametrize(
    ("origin", "settings"),
    [
        ({"x_router_deployment": "primary"}, {}),
        ({"x_router_deployment": "backup", "x_router_fallback_from": "gpt-4o"}, {"cache_fallbacks": True}),
    ],
    ids=["own-group", "fallback-group"],
)
async def test_an_answer_a_router_made_is_held_to_the_same_status_and_media_type_rules(
    spans: Spans, origin: dict[str, str], settings: dict[str, Any]
) -> None:
    cache = Cache(telemetry=spans.telemetry, **settings)
    assert outcomes(await twice(cache, answering(201, **origin))) == ["MISS", "MISS"]
    assert outcomes(await twice(cache, answering(content_type="text/plain", **origin))) == ["MISS", "MISS"]
    assert (
        spans.reasons() == ["status 201 is not cacheable"] * 2 + ["content-type text/plain is not application/json"] * 2
    )


async def test_an_after_answer_hooks_veto_is_the_reason_given_and_its_ttl_is_kept_otherwise(spans: Spans) -> None:
    def keep_only_second_answers(view: AnswerView) -> None:
        view.store = b"chatcmpl-2" in view.body
        view.ttl = 42

    store = CountingStore()
    vetoing = Cache(store, hooks={"after_answer": [keep_only_second_answers]}, telemetry=spans.telemetry)
    assert outcomes(await twice(vetoing, answering())) == ["MISS", "MISS"]
    assert spans.reasons() == ["hook: an after_answer hook vetoed storing"] * 2
    keeping = Cache(store, hooks={"after_answer": [keep_only_second_answers]}, key_prefix="second:")
    second = answering(content=ANSWER.replace(b"chatcmpl-1", b"chatcmpl-2"))
    assert outcomes(await twice(keeping, second)) == ["MISS", "HIT"]
    assert store.ttls == [42]


async def test_a_stream_answered_in_another_media_type_is_passed_on_and_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=answering())) as http:
        answer = await http.post(URL, json={**BODY, "stream": True}, headers=AUTH)
    assert (answer.headers["x-cache"], answer.content) == ("MISS", ANSWER)
    assert spans.reasons() == ["content-type application/json is not text/event-stream"]


class BreaksOff(httpx2.AsyncByteStream):
    """A body that fails after its first bytes, as a dropped connection does."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield ANSWER[:10]
        raise httpx2.ReadError("connection reset")


def refusing(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


def breaking_off(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "application/json"}, stream=BreaksOff())


@pytest.mark.parametrize(
    ("fails", "error"), [(refusing, httpx2.ConnectError), (breaking_off, httpx2.ReadError)], ids=["before", "during"]
)
async def test_an_upstream_that_fails_before_or_during_its_answer_stores_nothing_and_its_error_is_the_calls(
    spans: Spans, fails: Any, error: type[Exception]
) -> None:
    cache = Cache(telemetry=spans.telemetry)
    async with httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(fails))
    ) as http:
        with pytest.raises(error):
            await http.post(URL, json=BODY, headers=AUTH)
    (call,) = [span for span in spans.exporter.get_finished_spans() if not span.name.startswith("llm_cache.")]
    assert (call.attributes or {})["error.type"] == error.__name__
    assert (cache.stats.stored, cache.stats.not_stored) == (0, 1)  # counted once, though the response is closed too
    assert cache.telemetry.snapshot()["llm_cache_not_stored"] == {("upstream_failed",): 1}


async def test_a_stream_the_caller_closes_before_its_terminal_event_is_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    upstream = answering(content=PARTIAL, content_type="text/event-stream")
    async with (
        httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http,
        http.stream("POST", URL, json={**BODY, "stream": True}, headers=AUTH) as response,
    ):
        assert response.headers["x-cache"] == "MISS"
    assert spans.reasons() == ["caller closed the stream early"]


async def test_a_stream_read_to_its_end_without_a_terminal_event_is_not_stored(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    upstream = answering(content=PARTIAL, content_type="text/event-stream")
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http:
        answer = await http.post(URL, json={**BODY, "stream": True}, headers=AUTH)
    assert answer.content == PARTIAL
    assert spans.reasons() == ["stream incomplete: no terminal event"]


# -- what the caller of a stream sees ---------------------------------------------------------------


def streaming(content: bytes = STREAM, status: int = 200, **headers: str) -> httpx2.MockTransport:
    return answering(status, content, content_type="text/event-stream", **headers)


async def streamed_once(cache: Cache, upstream: httpx2.MockTransport, **body: Any) -> tuple[httpx2.Response, bytes]:
    """One stream request (BODY with `stream` and these fields) through the cache, and the body bytes
    its caller received, undecoded."""
    return await raw_once(cache, upstream, {**BODY, "stream": True, **body})


@pytest.mark.parametrize(("status", "seen"), [(200, CONTENT_CHUNK), (300, CONTENT_CHUNK + USAGE_CHUNK)])
async def test_the_usage_chunk_the_cache_asked_for_is_hidden_from_a_success_stream_only(
    status: int, seen: bytes
) -> None:
    response, raw = await streamed_once(Cache(), streaming(status=status, content_length=str(len(STREAM))))
    assert raw == seen + b"data: [DONE]\n\n"
    length = None if status == 200 else str(len(STREAM))  # the upstream's length, dropped when bytes are
    assert (response.headers.get("content-length"), response.headers["content-type"]) == (length, "text/event-stream")


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_streams_last_event_reaches_the_caller_even_without_its_closing_blank_line(encoding: str) -> None:
    unended = CONTENT_CHUNK + USAGE_CHUNK + b"data: [DONE]"
    sent = gzip.compress(unended) if encoding == "gzip" else unended
    response, raw = await streamed_once(
        Cache(), streaming(sent, content_encoding=encoding, content_length=str(len(sent)))
    )
    assert raw == CONTENT_CHUNK + b"data: [DONE]"  # decoded for the caller, the added usage chunk hidden
    assert response.headers.get("content-encoding") == (None if encoding == "gzip" else "identity")
    assert "content-length" not in response.headers


async def test_a_stream_in_an_encoding_the_cache_cannot_read_reaches_the_caller_as_sent_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        response, raw = await streamed_once(Cache(), streaming(b"\x1b\x00", content_encoding="br"))
    assert (response.headers["content-encoding"], raw) == ("br", b"\x1b\x00")
    warnings = [r.getMessage() for r in caplog.records if r.name == "llm_cache.middleware"]
    assert warnings == ["cannot hide the usage chunk in a br-encoded stream"]


class FailingAssembler:
    """A chat stream assembler that reads every chunk, then fails `at` one step: raising while fed
    (after reading the chunk) or when asked for the result."""

    def __init__(self, inner: StreamAssembler, at: str) -> None:
        self._inner, self._at = inner, at

    @property
    def complete(self) -> bool:
        return self._inner.complete

    def feed(self, chunk: bytes) -> None:
        self._inner.feed(chunk)
        if self._at == "feed":
            raise ValueError("an event this adapter cannot read")

    def result(self) -> bytes | None:
        if self._at == "result":
            raise ValueError("an answer this adapter cannot assemble")
        return self._inner.result()


class ChatAssembledBadly(ChatCompletions):
    """Chat completions, as an operator's own adapter might be: its assembler fails `at` one step."""

    def __init__(self, at: str) -> None:
        super().__init__()
        self.at = at

    def assembler(self, request: RequestView) -> StreamAssembler:
        return FailingAssembler(super().assembler(request), self.at)


@pytest.mark.parametrize("at", ["feed", "result"])
async def test_a_stream_its_adapter_fails_to_assemble_reaches_the_caller_whole_and_is_not_stored(
    spans: Spans, at: str
) -> None:
    cache = Cache(endpoints=(ChatAssembledBadly(at), *DEFAULT_ENDPOINTS), telemetry=spans.telemetry)
    for _ in range(2):  # the caller asked for usage itself: the stream is relayed as sent
        response, raw = await streamed_once(cache, streaming(), stream_options={"include_usage": True})
        assert (response.headers["x-cache"], raw) == ("MISS", STREAM)
    assert spans.reasons() == ["stream could not be assembled"] * 2
    assert cache.stats.stored == 0


async def test_a_stream_of_an_operator_s_assembler_that_keeps_no_cut_is_stored_and_replayed(
    spans: Spans,
) -> None:
    """An adapter's assembler written before cuts were kept (no `cut`): its streams are stored as
    before, and their streamed hits synthesised from the answer."""
    cache = Cache(endpoints=(ChatAssembledBadly("nowhere"), *DEFAULT_ENDPOINTS), telemetry=spans.telemetry)
    miss, hit = await twice(cache, streaming(), {**BODY, "stream": True, "stream_options": {"include_usage": True}})
    assert outcomes((miss, hit)) == ["MISS", "HIT"] and cache.stats.stored == 1
    assert hit.content.count(b"data: ") == 4  # content, finish reason, usage, [DONE]: made from the answer


# -- the distributed lock, and the error a failed call is given ------------------------------------


async def answer_to(cache: Cache, upstream: httpx2.MockTransport) -> int:
    """The status of one request through the cache (0: the upstream failed)."""
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http:
        try:
            return (await http.post(URL, json=BODY, headers=AUTH)).status_code
        except httpx2.ConnectError:
            return 0


@pytest.mark.parametrize(
    ("upstream", "status", "stored"),
    [(answering(), 200, 1), (answering(201), 201, 0), (httpx2.MockTransport(refusing), 0, 0)],
    ids=["stored", "not-storable", "upstream-failed"],
)
async def test_the_distributed_lock_a_miss_took_is_released_however_its_answer_ends(
    redis_server: Any, upstream: httpx2.MockTransport, status: int, stored: int
) -> None:
    prefix = unique_prefix()
    cache = Cache(RedisStore(redis_server.url, prefix=prefix, **SLACK))
    try:
        assert await answer_to(cache, upstream) == status
    finally:
        await cache.close()
    assert (cache.stats.stored, cache.stats.store_errors) == (stored, 0)
    with syncredis.Redis.from_url(redis_server.url) as raw:
        assert list(raw.scan_iter(match=f"{prefix}lock:*")) == []


async def test_an_app_failing_mid_answer_gives_the_call_its_error_type_and_stores_nothing(spans: Spans) -> None:
    async def breaks_off(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": ANSWER[:10], "more_body": True})
        raise RuntimeError("the app broke off its answer")

    cache = Cache(telemetry=spans.telemetry)
    app = CacheMiddleware(breaks_off, cache=cache)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://app") as http:
        with pytest.raises(RuntimeError):
            await http.post("/v1/chat/completions", json=BODY, headers=AUTH)
    (call,) = [span for span in spans.exporter.get_finished_spans() if not span.name.startswith("llm_cache.")]
    assert (call.attributes or {})["error.type"] == "RuntimeError"
    assert (cache.stats.stored, cache.stats.not_stored) == (0, 1)


@pytest.mark.parametrize("stream", [False, True])
async def test_an_entry_records_whether_it_was_assembled_from_a_stream(stream: bool) -> None:
    store = CountingStore()
    response, _ = await raw_once(Cache(store), streaming() if stream else answering(), {**BODY, "stream": stream})
    stored = await store.get(response.headers["x-cache-key"])
    assert stored is not None
    entry = unpack(stored)
    assert (entry.from_stream, entry.usage_requested, entry.status) == (stream, True, 200)


async def test_a_stream_stored_at_its_terminal_event_is_not_stored_again_when_its_body_ends() -> None:
    cache = Cache()
    relay = await relaying(cache, {**BODY, "stream": True}, SSE)
    _, work = relay.chunk(STREAM)
    assert work is not None and await work is True
    assert relay.last() == (b"", None)
    assert await relay.finished() is False  # finished once already: nothing more is stored
    assert (cache.stats.stored, cache.stats.not_stored) == (1, 0)
