"""What the Recorder stores from an upstream answer to a miss, and the reason it gives when it stores nothing.

Driven through the async transport; the upstream is `httpx2.MockTransport`, standing in for the
provider only. The reason is read where an operator reads it: the span event of the call.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware._hooks import AnswerView
from llm_cache.middleware.telemetry import Telemetry
from tests.middleware.test_plan import ANSWER, BODY
from tests.support.stores import CountingStore

URL = "http://provider.test/v1/chat/completions"
AUTH = {"authorization": "Bearer sk-recorder"}
PARTIAL = b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\n'
"""A chat stream's first chunk, without the terminal event."""


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


async def twice(cache: Cache, upstream: httpx2.MockTransport, **headers: str) -> tuple[httpx2.Response, ...]:
    """The same request sent twice through the cache."""
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http:
        first = await http.post(URL, json=BODY, headers={**AUTH, **headers})
        second = await http.post(URL, json=BODY, headers={**AUTH, **headers})
    return first, second


async def raw_once(cache: Cache, upstream: httpx2.MockTransport) -> tuple[httpx2.Response, bytes]:
    """One request through the cache, and the body bytes the caller received, undecoded."""
    async with (
        httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=upstream)) as http,
        http.stream("POST", URL, json=BODY, headers=AUTH) as response,
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


async def test_an_answer_a_router_made_is_held_to_the_same_status_and_media_type_rules(spans: Spans) -> None:
    cache = Cache(telemetry=spans.telemetry)
    assert outcomes(await twice(cache, answering(201, x_router_deployment="primary"))) == ["MISS", "MISS"]
    assert spans.reasons() == ["status 201 is not cacheable"] * 2


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


async def test_an_upstream_that_fails_stores_nothing_and_its_error_type_is_the_calls(spans: Spans) -> None:
    def unreachable(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    cache = Cache(telemetry=spans.telemetry)
    async with httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(unreachable))
    ) as http:
        with pytest.raises(httpx2.ConnectError):
            await http.post(URL, json=BODY, headers=AUTH)
    (call,) = [span for span in spans.exporter.get_finished_spans() if not span.name.startswith("llm_cache.")]
    assert (call.attributes or {})["error.type"] == "ConnectError"
    assert (cache.stats.stored, cache.stats.not_stored) == (0, 1)
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
