"""Engine rules, driven through the async transport with an in-memory upstream.

The upstream here is `httpx2.MockTransport`: it stands in for the provider only.
The SDK-level behaviour against a real HTTP server is in test_transport.py.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import msgpack
import orjson
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware._entry import SCHEMA_VERSION, unpack
from llm_cache.middleware.stores import MemoryStore
from tests.support.stores import CountingStore, DeadStore

URL = "http://provider.test/v1/chat/completions"
AUTH = {"authorization": "Bearer sk-test"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2+2?"}]}


def completion(n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }


class Upstream:
    """Counts calls and answers with a fresh completion id each time, unless told otherwise."""

    def __init__(self, respond: Callable[[httpx2.Request, int], httpx2.Response] | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.respond = respond

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.requests.append(request)
        if self.respond is not None:
            return self.respond(request, len(self.requests))
        return httpx2.Response(200, json=completion(len(self.requests)))

    @property
    def calls(self) -> int:
        return len(self.requests)


def client(cache: Cache, upstream: Upstream) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(upstream)))


async def post(http: httpx2.AsyncClient, body: dict[str, Any] = BODY, **headers: str) -> httpx2.Response:
    return await http.post(URL, json=body, headers={**AUTH, **headers})


async def test_second_identical_call_is_a_hit_with_key_and_age() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        miss = await post(http)
        hit = await post(http)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert hit.headers["x-cache-key"] == miss.headers["x-cache-key"]
    assert int(hit.headers["age"]) >= 0
    assert hit.json() == miss.json() and hit.json()["id"] == "chatcmpl-1"
    assert upstream.calls == 1


async def test_a_memory_store_subclass_that_overrides_get_is_read_through_it() -> None:
    """The lookup reads a memory store without an await (`get_now`) only where that is the same read."""

    class Refusing(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            return None  # e.g. a store that checks who may read an entry

    upstream = Upstream()
    async with client(Cache(store=Refusing()), upstream) as http:
        answers = [(await post(http)).headers["x-cache"] for _ in range(2)]
    assert answers == ["MISS", "MISS"] and upstream.calls == 2
    assert MemoryStore.abilities.sync_reads and not Refusing.abilities.sync_reads


async def test_entries_are_versioned_msgpack_with_the_request_fingerprint() -> None:
    store = MemoryStore()
    async with client(Cache(store=store), Upstream()) as http:
        key = (await post(http)).headers["x-cache-key"]
    entry = unpack(await store.get(key) or b"")
    assert entry.fingerprint == key
    assert orjson.loads(entry.body)["id"] == "chatcmpl-1"
    assert SCHEMA_VERSION == 4 and entry.usage_requested
    assert entry.cut is None  # a JSON answer: no stream cut to keep


async def test_entries_of_schema_version_1_are_still_served() -> None:
    """Version 2 added `usage_requested`; every version-1 entry was stored from a request with usage."""
    store = MemoryStore()
    cache = Cache(store=store)
    async with client(cache, Upstream()) as http:
        key = (await post(http)).headers["x-cache-key"]
        entry = unpack(await store.get(key) or b"")
        old = msgpack.packb([1, key, entry.created_at, 200, entry.body, False], use_bin_type=True)
        await store.set(key, old, None)
        again = await post(http)
    assert again.headers["x-cache"] == "HIT" and again.content == entry.body


@pytest.mark.parametrize("corrupt", [b"not msgpack at all \xff", None])
async def test_undecodable_or_mismatched_entries_are_misses_and_deleted(corrupt: bytes | None) -> None:
    store = MemoryStore()
    cache = Cache(store=store)
    upstream = Upstream()
    async with client(cache, upstream) as http:
        key = (await post(http)).headers["x-cache-key"]
        if corrupt is None:  # a valid entry written under another key: a store-level collision
            other = (await post(http, {**BODY, "temperature": 1})).headers["x-cache-key"]
            corrupt = await store.get(other)
        await store.set(key, corrupt or b"", None)
        again = await post(http)
    assert again.headers["x-cache"] == "MISS"
    assert cache.stats.invalid_entries == 1
    assert unpack(await store.get(key) or b"").fingerprint == key  # replaced by the fresh answer


async def test_an_undecodable_entry_is_deleted_even_when_the_next_answer_is_not_stored() -> None:
    def fail_after_the_first(request: httpx2.Request, n: int) -> httpx2.Response:
        return httpx2.Response(200, json=completion(n)) if n == 1 else httpx2.Response(500, json={"error": "down"})

    store = MemoryStore()
    async with client(Cache(store=store), Upstream(fail_after_the_first)) as http:
        key = (await post(http)).headers["x-cache-key"]
        await store.set(key, b"not msgpack at all \xff", None)
        failed = await post(http)
    assert failed.status_code == 500
    assert await store.get(key) is None


HOSTILE_FIELDS = {
    "created_at NaN": (2, float("nan")),
    "created_at -inf": (2, float("-inf")),
    "expires_at NaN": (8, float("nan")),
    "status 0": (3, 0),
    "status 99999": (3, 99999),
    "status true": (3, True),
    "origin outside latin-1": (7, [["x-router-model", "gpt-\u20ac"]]),
    "origin with CR LF": (7, [["x-router-model", "m\r\nset-cookie: session=stolen"]]),
    "origin name not a token": (7, [["x-router model:", "m"]]),
    "status 101": (3, 101),
    "status 204": (3, 204),
    "status 302": (3, 302),
    "status 304": (3, 304),
    "status 500": (3, 500),
    "origin set-cookie": (7, [["set-cookie", "session=stolen"]]),
    "origin content-length": (7, [["content-length", "0"]]),
    "origin transfer-encoding": (7, [["transfer-encoding", "chunked"]]),
    "origin x-cache": (7, [["x-cache", "MISS"]]),
    "origin location": (7, [["location", "https://evil.example/"]]),
}


@pytest.mark.parametrize("stored_in", ["memory", "redis"])
@pytest.mark.parametrize("field", list(HOSTILE_FIELDS))
async def test_an_entry_whose_values_a_hit_cannot_send_is_a_miss_and_deleted(
    field: str, stored_in: str, request: pytest.FixtureRequest
) -> None:
    """A corrupt or other-schema entry under the right key: its fields have the right types but values
    a hit cannot compute with or send (an age from NaN, a status no server sends, a header that does
    not encode or splits in two). Before, such an entry made every hit of its key raise, or sent them."""
    if stored_in == "redis":
        from llm_cache.middleware.stores import RedisStore

        store: Any = RedisStore(request.getfixturevalue("redis_server").url, prefix=f"hostile-{uuid.uuid4().hex}:")
    else:
        store = MemoryStore()
    cache = Cache(store=store)
    upstream = Upstream()
    position, value = HOSTILE_FIELDS[field]
    async with client(cache, upstream) as http:
        key = (await post(http)).headers["x-cache-key"]
        fields = msgpack.unpackb(await store.get(key), raw=False)
        fields[position] = value
        await store.set(key, msgpack.packb(fields, use_bin_type=True), None)
        again = await post(http)
        after = await post(http)
    await store.close()
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    assert again.json()["id"] == "chatcmpl-2" and "set-cookie" not in again.headers
    assert cache.stats.invalid_entries == 1
    assert after.headers["x-cache"] == "HIT" and after.json()["id"] == "chatcmpl-2"  # replaced by the fresh answer


async def test_a_hit_names_the_length_of_the_body_it_sends_after_its_entry_was_rewritten() -> None:
    """An entry rewritten under its key and creation time with another body (a store someone else can
    write; the body is the store's to answer): a hit's headers are made once per entry and reused, and
    they named the first body's length, so the hit was framed wrong (an ASGI server's 500, or a body
    cut short), as an entry's own `content-length` header would have framed it."""
    store = MemoryStore()
    async with client(Cache(store=store), Upstream()) as http:
        key = (await post(http)).headers["x-cache-key"]
        assert (await post(http)).headers["x-cache"] == "HIT"  # the entry's headers are made
        fields = msgpack.unpackb(await store.get(key), raw=False)
        fields[4] = orjson.dumps({**orjson.loads(fields[4]), "padding": "x" * 100})
        await store.set(key, msgpack.packb(fields, use_bin_type=True), None)
        rewritten = await post(http)
    assert rewritten.headers["x-cache"] == "HIT" and rewritten.json()["padding"] == "x" * 100
    assert rewritten.headers["content-length"] == str(len(rewritten.content))


@pytest.mark.parametrize("body", [b"\xff\x00", b"[]", b'{"choices": 5}', b'{"choices": [{"message": 3}]}'])
async def test_an_entry_no_stream_can_be_made_of_is_a_miss_and_deleted(body: bytes) -> None:
    """A stream is rendered from the stored answer on each hit; a body it cannot be rendered from (a
    corrupt entry, or another schema's, under the right key) raised into the caller. Now it is an
    invalid entry, like one that does not decode: a miss, counted, deleted; the answer from upstream."""

    def streamed(request: httpx2.Request, n: int) -> httpx2.Response:
        events = [
            {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": "4"}, "finish_reason": "stop"}]},
            {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
        ]  # fmt: skip
        sse = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events) + b"data: [DONE]\n\n"
        return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    store = MemoryStore()
    cache = Cache(store=store)
    stream = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with client(cache, Upstream(streamed)) as http:
        key = (await post(http, stream)).headers["x-cache-key"]
        fields = msgpack.unpackb(await store.get(key), raw=False)
        fields[4] = body
        await store.set(key, msgpack.packb(fields, use_bin_type=True), None)
        again = await post(http, stream)
        after = await post(http, stream)
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS" and b"chatcmpl-2" in again.content
    assert cache.stats.invalid_entries == 1 and cache.stats.hits == 1 and cache.stats.misses == 2
    assert after.headers["x-cache"] == "HIT" and b"chatcmpl-2" in after.content  # replaced by the fresh answer


async def test_origin_headers_a_hit_could_not_send_are_not_stored() -> None:
    """An upstream's origin header that a hit could not send again (text outside latin-1) is left out
    of the entry, so the entry stays readable; the miss passes the upstream's header on as it came."""

    def with_origin(request: httpx2.Request, n: int) -> httpx2.Response:
        headers = [(b"x-router-model", "gpt-\u20ac".encode()), (b"x-router-group", b"chat")]
        return httpx2.Response(200, json=completion(n), headers=headers)

    cache = Cache()
    async with client(cache, Upstream(with_origin)) as http:
        miss = await post(http)
        hit = await post(http)
    assert miss.headers["x-router-model"] == "gpt-\u20ac"
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-router-group"] == "chat"
    assert "x-router-model" not in hit.headers and cache.stats.invalid_entries == 0


async def test_a_dead_store_never_fails_a_request() -> None:
    cache = Cache(store=DeadStore())
    upstream = Upstream()
    async with client(cache, upstream) as http:
        first = await post(http)
        second = await post(http)
    assert first.status_code == second.status_code == 200
    assert upstream.calls == 2
    assert cache.stats.store_errors == 4  # two failed reads, two failed writes


@pytest.mark.parametrize(
    "answer",
    [
        lambda r, n: httpx2.Response(500, json={"error": {"message": "boom"}}),
        lambda r, n: httpx2.Response(429, json={"error": {"message": "slow down"}}),
        lambda r, n: httpx2.Response(200, text="<html>proxy error</html>", headers={"content-type": "text/html"}),
        lambda r, n: httpx2.Response(200, content=b"{truncated", headers={"content-type": "application/json"}),
        lambda r, n: httpx2.Response(200, content=b"[1, 2]", headers={"content-type": "application/json"}),
    ],
    ids=["500", "429", "html", "truncated-json", "json-array"],
)
async def test_errors_and_non_json_answers_are_never_stored(answer: Any) -> None:
    upstream = Upstream(answer)
    async with client(Cache(), upstream) as http:
        await post(http)
        second = await post(http)
    assert second.headers["x-cache"] == "MISS"
    assert upstream.calls == 2


async def test_gzip_encoded_answers_are_stored_decoded() -> None:
    def gzipped(request: httpx2.Request, n: int) -> httpx2.Response:
        return httpx2.Response(
            200,
            content=gzip.compress(orjson.dumps(completion(n))),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )

    upstream = Upstream(gzipped)
    async with client(Cache(), upstream) as http:
        miss = await post(http)
        hit = await post(http)
    assert hit.headers["x-cache"] == "HIT" and "content-encoding" not in hit.headers
    assert hit.json() == miss.json()


async def test_no_cache_skips_lookup_but_stores_the_fresh_answer() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        await post(http)
        refreshed = await post(http, **{"cache-control": "no-cache"})
        after = await post(http)
    assert refreshed.headers["x-cache"] == "REFRESH"
    assert after.json()["id"] == refreshed.json()["id"] == "chatcmpl-2"


async def test_no_store_answers_are_not_kept() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        await post(http, **{"cache-control": "no-store"})
        second = await post(http)
    assert second.headers["x-cache"] == "MISS"


async def test_max_age_refuses_older_entries() -> None:
    store = MemoryStore()
    upstream = Upstream()
    async with client(Cache(store=store), upstream) as http:
        key = (await post(http)).headers["x-cache-key"]
        entry = unpack(await store.get(key) or b"")
        # Age the stored entry by rewriting its timestamp, instead of waiting.
        from llm_cache.middleware._entry import Entry, pack

        await store.set(key, pack(Entry(key, entry.created_at - 120, 200, entry.body, False)), None)
        fresh_enough = await post(http, **{"cache-control": "max-age=600"})
        too_old = await post(http, **{"cache-control": "max-age=60"})
    assert fresh_enough.headers["x-cache"] == "HIT" and int(fresh_enough.headers["age"]) >= 120
    assert too_old.headers["x-cache"] == "MISS"


async def test_an_entry_dated_in_the_future_is_young_enough_for_no_max_age() -> None:
    """An entry someone else wrote to a shared store (or a pod whose clock runs years ahead) dated in
    the future would be age 0 for ever and meet every max-age: beyond five minutes of clock skew, it
    meets none (still a hit without one)."""
    store = MemoryStore()
    upstream = Upstream()
    async with client(Cache(store=store), upstream) as http:
        key = (await post(http)).headers["x-cache-key"]
        entry = unpack(await store.get(key) or b"")
        from llm_cache.middleware._entry import Entry, pack

        await store.set(key, pack(Entry(key, entry.created_at + 60, 200, entry.body, False)), None)
        skewed = await post(http, **{"cache-control": "max-age=60"})
        await store.set(key, pack(Entry(key, entry.created_at + 10 * 365 * 86400, 200, entry.body, False)), None)
        without_max_age = await post(http)
        with_max_age = await post(http, **{"cache-control": "max-age=60"})
    assert skewed.headers["x-cache"] == "HIT" and skewed.headers["age"] == "0"
    assert without_max_age.headers["x-cache"] == "HIT" and without_max_age.headers["age"] == "0"
    assert with_max_age.headers["x-cache"] == "MISS"


async def test_only_if_cached_answers_504_on_a_miss_without_calling_upstream() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        response = await post(http, **{"cache-control": "only-if-cached"})
        await post(http)
        cached = await post(http, **{"cache-control": "only-if-cached"})
    assert response.status_code == 504 and upstream.calls == 1
    assert cached.headers["x-cache"] == "HIT"


async def test_ttl_comes_from_settings_header_or_body() -> None:
    store = CountingStore()
    async with client(Cache(store=store, ttl=900), Upstream()) as http:
        await post(http)
        await post(http, {**BODY, "temperature": 0.1}, **{"x-cache-ttl": "30"})
        await post(http, {**BODY, "temperature": 0.2, "cache": {"ttl": 5}})
    assert store.ttls == [900.0, 30.0, 5.0]


async def test_no_caller_keeps_an_entry_longer_than_max_ttl() -> None:
    store = CountingStore()
    async with client(Cache(store=store, ttl=900, max_ttl=3600), Upstream()) as http:
        await post(http, **{"x-cache-ttl": "999999999"})
        await post(http, {**BODY, "temperature": 0.1, "cache": {"ttl": 1e300}})
        await post(http, {**BODY, "temperature": 0.2}, **{"cache-control": "stale-if-error=999999999"})
    assert store.ttls == [3600.0, 3600.0, 900.0 + 3600.0]  # a stale grace is cut to max_ttl too


async def test_the_operators_own_ttl_is_not_cut_by_max_ttl() -> None:
    store = CountingStore()
    async with client(Cache(store=store, ttl=7200, max_ttl=3600), Upstream()) as http:
        await post(http)
    assert store.ttls == [7200.0]


async def test_body_cache_field_is_stripped_before_forwarding() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        await post(http, {**BODY, "cache": {"no-store": True}})
    forwarded = orjson.loads(upstream.requests[0].content)
    assert "cache" not in forwarded and forwarded == BODY
    assert upstream.requests[0].headers["content-length"] == str(len(upstream.requests[0].content))


async def test_malformed_cache_controls_get_a_400_naming_the_field() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        response = await post(http, {**BODY, "cache": {"ttl": "forever"}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "cache.ttl"
    assert upstream.calls == 0


async def test_opt_in_mode_caches_only_requests_that_ask() -> None:
    upstream = Upstream()
    async with client(Cache(mode="opt_in"), upstream) as http:
        plain = [await post(http) for _ in range(2)]
        asked = [await post(http, {**BODY, "cache": {"use-cache": True}}) for _ in range(2)]
    assert [r.headers["x-cache"] for r in plain] == ["BYPASS", "BYPASS"]
    assert [r.headers["x-cache"] for r in asked] == ["MISS", "HIT"]


async def test_malformed_json_and_oversized_bodies_pass_through_uncached() -> None:
    upstream = Upstream(lambda r, n: httpx2.Response(400, json={"error": {"message": "bad json"}}))
    async with client(Cache(max_body_bytes=64), upstream) as http:
        malformed = await http.post(URL, content=b"{not json", headers=AUTH)
        oversized = await post(http, {**BODY, "padding": "x" * 100})
    assert malformed.status_code == 400 and malformed.headers["x-cache"] == "BYPASS"
    assert upstream.requests[0].content == b"{not json"
    assert oversized.headers["x-cache"] == "BYPASS"
    assert upstream.calls == 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "x-unknown", "identity, gzip"])
async def test_a_body_sent_with_a_content_encoding_is_forwarded_untouched_and_never_keyed(encoding: str) -> None:
    """The provider decodes a body sent with a `content-encoding` before it reads it; the cache would key
    the bytes as sent. Keyed, a JSON body labelled `br` (or raw deflate, which some servers take for
    `deflate`) would name one request and ask the provider another, so such a body is never keyed."""
    upstream = Upstream()
    raw = orjson.dumps(BODY)
    async with client(Cache(), upstream) as http:
        answers = [await http.post(URL, content=raw, headers={**AUTH, "content-encoding": encoding}) for _ in range(2)]
        plain = [(await post(http, **headers)).headers["x-cache"] for headers in ({}, {"content-encoding": "identity"})]
    assert [a.headers["x-cache"] for a in answers] == ["BYPASS", "BYPASS"]
    assert [(r.content, r.headers["content-encoding"]) for r in upstream.requests[:2]] == [(raw, encoding)] * 2
    assert plain == ["MISS", "HIT"]  # "identity" alone, or no encoding, is the bytes the provider reads


@pytest.mark.parametrize(
    "sent",
    [
        [("content-encoding", "gzip"), ("content-encoding", "identity")],
        [("content-type", "multipart/form-data; boundary=a"), ("content-type", "application/json")],
    ],
    ids=["content-encoding", "content-type"],
)
async def test_a_header_saying_how_to_read_the_body_sent_twice_makes_the_request_bypass(
    sent: list[tuple[str, str]],
) -> None:
    """The cache reads a header sent twice as its last value, a server may read the first or both (a
    body is decoded by every encoding named, a form split by the boundary it reads): such a body would be
    keyed as one request and read as another."""
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        answers = [await http.post(URL, content=orjson.dumps(BODY), headers=[*AUTH.items(), *sent]) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["BYPASS", "BYPASS"]
    assert [r.headers.get_list(sent[0][0]) for r in upstream.requests] == [[v for _, v in sent]] * 2


@pytest.mark.parametrize("name", ["x-http-method-override", "x-http-method", "x-method-override"])
async def test_a_request_naming_another_method_in_an_override_header_is_forwarded_untouched(name: str) -> None:
    """Google's front ends act on `X-HTTP-Method-Override` as the method (other servers on its variants):
    a POST naming GET would be keyed as the POST and answered as the GET, so it is never keyed. Naming
    its own method changes nothing; naming it and another (sent twice) is as naming another."""
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        overridden = [(await post(http, **{name: "GET"})).headers["x-cache"] for _ in range(2)]
        own = [(await post(http, **{name: "post"})).headers["x-cache"] for _ in range(2)]
        twice = await http.post(URL, json=BODY, headers=[*AUTH.items(), (name, "GET"), (name, "POST")])
    assert overridden == ["BYPASS", "BYPASS"] and twice.headers["x-cache"] == "BYPASS"
    assert [r.headers[name] for r in upstream.requests[:2]] == ["GET", "GET"]
    assert own == ["MISS", "HIT"]


AUDIO = "http://provider.test/v1/audio/transcriptions"
NAMED_ELSEWHERE: dict[str, tuple[str, dict[str, Any]]] = {
    "query _method": (URL + "?_method=GET", {"json": BODY}),
    "query escaped and PHP-mangled": (URL + "?%2Emethod=get", {"json": BODY}),
    "query $httpMethod": (URL + "?%24httpMethod=GET", {"json": BODY}),
    "query after a semicolon": (URL + "?x=1;_method=GET", {"json": BODY}),
    "query, named twice": (URL + "?_method=POST&_method=GET", {"json": BODY}),
    "JSON body _method": (URL, {"json": {**BODY, "_method": "GET"}}),
    "form field _method": (AUDIO, {"data": {"model": "whisper-1", "_method": "GET"}, "files": {"file": b"RIFF"}}),
}


@pytest.mark.parametrize("where", list(NAMED_ELSEWHERE))
async def test_a_request_naming_another_method_in_its_query_or_body_is_forwarded_untouched(where: str) -> None:
    """Servers behind a front end read the method from the query (`_method`, Google's `$httpMethod`)
    and from the body (`_method`): such a POST would be keyed as the POST and answered as the method
    named, so it is never keyed. Naming its own method changes nothing."""
    url, content = NAMED_ELSEWHERE[where]
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        overridden = [(await http.post(url, **content, headers=AUTH)).headers["x-cache"] for _ in range(2)]
        own = [
            (await http.post(URL + "?_method=POST", json={**BODY, "_method": "post"}, headers=AUTH)) for _ in range(2)
        ]
    assert overridden == ["BYPASS", "BYPASS"]
    assert [str(r.url) for r in upstream.requests[:2]] == [url] * 2
    assert [r.headers["x-cache"] for r in own] == ["MISS", "HIT"]


READ_AS_A_FORM = {
    "a form's content-type": {"content-type": "application/x-www-form-urlencoded"},
    "no content-type (Rack reads a POST body without one as a form)": {},
}


@pytest.mark.parametrize("sent", list(READ_AS_A_FORM))
async def test_a_json_body_sent_as_a_form_that_names_another_method_there_is_forwarded_untouched(sent: str) -> None:
    """A server that reads a body by its content-type reads this one as a form whatever it holds, and a
    JSON object whose text holds `&_method=GET&` names GET there, though its JSON has no `_method`: the
    gateway judges it so (`_overrides.in_body`), and the cache must not key it as the POST. Naming the
    request's own method so changes nothing."""
    headers = {**AUTH, **READ_AS_A_FORM[sent]}
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        named = orjson.dumps({**BODY, "user": "&_method=GET&"})
        overridden = [(await http.post(URL, content=named, headers=headers)).headers["x-cache"] for _ in range(2)]
        own = orjson.dumps({**BODY, "user": "&_method=POST&"})
        same = [(await http.post(URL, content=own, headers=headers)).headers["x-cache"] for _ in range(2)]
    assert overridden == ["BYPASS", "BYPASS"]
    assert same == ["MISS", "HIT"]


async def test_non_llm_requests_pass_through_untouched() -> None:
    upstream = Upstream(lambda r, n: httpx2.Response(200, json={"data": []}))
    async with client(Cache(), upstream) as http:
        models = await http.get("http://provider.test/v1/models", headers=AUTH)
        files = await http.post("http://provider.test/v1/files", content=b"...", headers=AUTH)
    assert "x-cache" not in models.headers and "x-cache" not in files.headers
    assert upstream.calls == 2


async def test_fifty_concurrent_identical_misses_make_one_upstream_call() -> None:
    release = asyncio.Event()
    upstream_calls = 0

    async def slow_upstream(request: httpx2.Request) -> httpx2.Response:
        nonlocal upstream_calls
        upstream_calls += 1
        await asyncio.wait_for(release.wait(), timeout=10)
        return httpx2.Response(200, json=completion(upstream_calls))

    store = CountingStore()
    cache = Cache(store=store)
    async with httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(slow_upstream))
    ) as http:
        tasks = [asyncio.create_task(post(http)) for _ in range(50)]
        async with asyncio.timeout(10):
            while upstream_calls == 0 or store.reads < 50:
                await asyncio.sleep(0)  # yield until every request has looked up
        release.set()
        responses = await asyncio.gather(*tasks)
    assert upstream_calls == 1
    assert {r.json()["id"] for r in responses} == {"chatcmpl-1"}
    assert cache.stats.coalesced == 49


async def test_a_failed_leader_releases_its_waiters_to_go_upstream() -> None:
    release = asyncio.Event()
    calls = 0

    async def first_fails(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.wait_for(release.wait(), timeout=10)
            return httpx2.Response(500, json={"error": {"message": "boom"}})
        return httpx2.Response(200, json=completion(calls))

    store = CountingStore()
    cache = Cache(store=store)
    async with httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(first_fails))
    ) as http:
        tasks = [asyncio.create_task(post(http)) for _ in range(3)]
        async with asyncio.timeout(10):
            while store.reads < 3 or calls < 1:
                await asyncio.sleep(0)
        release.set()
        statuses = sorted(r.status_code for r in await asyncio.gather(*tasks))
    assert statuses == [200, 200, 500]


async def test_targeted_and_bulk_invalidation() -> None:
    upstream = Upstream()
    cache = Cache(key_prefix="v1:")
    async with client(cache, upstream) as http:
        await post(http)
        await post(http, **{"x-cache-namespace": "faq"})
        await cache.delete_request(URL, BODY, AUTH)  # the URL the transport sent it to
        assert (await post(http)).headers["x-cache"] == "MISS"
        assert (await post(http, **{"x-cache-namespace": "faq"})).headers["x-cache"] == "HIT"
        await cache.clear(namespace="faq")
        assert (await post(http, **{"x-cache-namespace": "faq"})).headers["x-cache"] == "MISS"
        key = (await post(http)).headers["x-cache-key"]
        assert key == cache.key_for(URL, BODY, AUTH)
        await cache.delete(key)
        assert (await post(http)).headers["x-cache"] == "MISS"
        await cache.clear()
        assert (await post(http)).headers["x-cache"] == "MISS"


async def test_a_prefix_bump_invalidates_everything() -> None:
    store = MemoryStore()
    upstream = Upstream()
    async with client(Cache(store=store, key_prefix="v1:"), upstream) as http:
        await post(http)
    async with client(Cache(store=store, key_prefix="v2:"), upstream) as http:
        assert (await post(http)).headers["x-cache"] == "MISS"
    assert upstream.calls == 2


def test_settings_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="scope"):
        Cache(scope="per-user")
    with pytest.raises(ValueError, match="ttl"):
        Cache(ttl=-5)


def sse_upstream(request: httpx2.Request, n: int) -> httpx2.Response:
    body = orjson.loads(request.content)
    head = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    events = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "4"}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(
            {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}
        )
    data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"})


async def test_streams_are_stored_with_usage_the_caller_did_not_ask_to_see() -> None:
    upstream = Upstream(sse_upstream)
    async with client(Cache(), upstream) as http:
        streamed = await post(http, {**BODY, "stream": True})
        plain = await post(http)
    assert orjson.loads(upstream.requests[0].content)["stream_options"] == {"include_usage": True}
    assert b'"choices":[]' not in streamed.content and streamed.content.endswith(b"data: [DONE]\n\n")
    assert "content-length" not in streamed.headers or int(streamed.headers["content-length"]) == len(streamed.content)
    assert plain.headers["x-cache"] == "HIT"
    assert plain.json()["usage"]["total_tokens"] == 10
    assert plain.json()["choices"][0]["message"]["content"] == "4"


async def test_usage_capture_can_be_switched_off() -> None:
    upstream = Upstream(sse_upstream)
    async with client(Cache(capture_stream_usage=False), upstream) as http:
        await post(http, {**BODY, "stream": True})
    assert "stream_options" not in orjson.loads(upstream.requests[0].content)


@pytest.mark.parametrize("status", ["queued", "in_progress", "incomplete"])
async def test_unfinished_responses_api_answers_are_not_stored(status: str) -> None:
    def unfinished(request: httpx2.Request, n: int) -> httpx2.Response:
        return httpx2.Response(200, json={"id": f"resp_{n}", "object": "response", "status": status, "output": []})

    upstream = Upstream(unfinished)
    url = "http://provider.test/v1/responses"
    async with client(Cache(), upstream) as http:
        for _ in range(2):
            response = await http.post(url, json={"model": "gpt-4o-mini", "input": "hi"}, headers=AUTH)
    assert response.headers["x-cache"] == "MISS"
    assert upstream.calls == 2


# -- the control field and hostile requests ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"gpt-4o-mini","messages":[],"cache":null}',
        b'{"model":"gpt-4o-mini","messages":[],"cache":{}}',
        b'{"cache":{"no-store":true},"model":"gpt-4o-mini","messages":[],"cache":null}',
        b'{"model":"gpt-4o-mini","messages":[],"seed":123456789012345678901234567890,"cache":null}',
    ],
    ids=["null", "empty", "twice", "with-a-big-integer"],
)
async def test_the_cache_field_in_any_form_is_removed_before_forwarding(raw: bytes) -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        answer = await http.post(URL, content=raw, headers=AUTH)
    assert answer.headers["x-cache"] == "MISS"
    forwarded = upstream.requests[0].content
    assert b'"cache"' not in forwarded
    assert (b"123456789012345678901234567890" in forwarded) == (b"1234567890123456789" in raw)  # numbers verbatim


def deep(levels: int) -> bytes:
    return b'{"model":"m","messages":[],"x":' + b"[" * levels + b"]" * levels + b"}"


def builder_that_raises(request: Any, default: Any) -> str:
    raise RecursionError("a hostile builder")


@pytest.mark.parametrize(
    ("body", "headers", "settings"),
    [
        (deep(300), AUTH, {}),  # orjson reads 1024 levels but writes 254
        (deep(1000), AUTH, {}),
        (deep(300).replace(b'"x"', b'"metadata"'), AUTH, {}),  # a volatile field: only re-encoding fails
        (deep(300).replace(b"[]}", b'[],"cache":{}}'), AUTH, {}),
        (deep(3000), AUTH, {}),
        (b'{"model":"m","messages":[],"n":' + b"9" * 5000 + b"}", AUTH, {}),
        (b'{"model":"m","messages":[],"n":1e99999999999}', AUTH, {}),
        (b'{"model":"m","messages":[],"n":0e99999999999999999999}', AUTH, {}),
        (b'{"model":"m","messages":[],"s":"\\ud800"}', AUTH, {}),
        (orjson.dumps(BODY), {"authorization": "Bearer \x00\x7f\xff\xe9"}, {}),
        (orjson.dumps(BODY), AUTH, {"key_builder": builder_that_raises}),
        (orjson.dumps({**BODY, "model": {"not": "a string"}}), AUTH, {}),
    ],
    ids=[
        "depth-300",
        "depth-1000",
        "depth-300-volatile",
        "depth-300-with-cache-field",
        "depth-3000",
        "5000-digit-integer",
        "huge-exponent",
        "zero-with-a-huge-exponent",
        "lone-surrogate",
        "odd-header-bytes",
        "hostile-key-builder",
        "odd-model",
    ],
)
def test_prepare_never_raises(body: bytes, headers: dict[str, str], settings: dict[str, Any]) -> None:
    from llm_cache.middleware._types import CacheRequest, ForwardAsIs

    cache = Cache(**settings)
    prepared = cache.prepare("POST", "/v1/chat/completions", "", headers, body)
    assert isinstance(prepared, CacheRequest | ForwardAsIs)
    if isinstance(prepared, ForwardAsIs):
        assert cache.stats.bypasses == 1


async def test_a_request_the_engine_cannot_key_goes_upstream_untouched() -> None:
    upstream = Upstream()
    async with client(Cache(), upstream) as http:
        answers = [await http.post(URL, content=deep(300), headers=AUTH) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["BYPASS", "BYPASS"]
    assert [r.content for r in upstream.requests] == [deep(300)] * 2


async def test_each_lookup_is_counted_once_by_its_outcome() -> None:
    cache = Cache()
    async with client(cache, Upstream()) as http:
        outcomes = [
            (await post(http)).headers["x-cache"],
            (await post(http)).headers["x-cache"],
            (await post(http, **{"cache-control": "no-cache"})).headers["x-cache"],
            (await post(http, {**BODY, "cache": {"use-cache": False}})).headers["x-cache"],
        ]
    assert outcomes == ["MISS", "HIT", "REFRESH", "BYPASS"]
    counted = cache.stats.as_dict()
    assert [counted[name] for name in ("misses", "hits", "refreshes", "bypasses", "stored")] == [1, 1, 1, 1, 2]


async def test_an_invalid_entry_is_logged_by_the_end_of_its_key_and_why(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    cache = Cache(store=store)
    async with client(cache, Upstream()) as http:
        key = (await post(http)).headers["x-cache-key"]
        await store.set(key, b"not an entry", None)
        with caplog.at_level("WARNING", logger="llm_cache.middleware"):
            await post(http)
    [warning] = [r.getMessage() for r in caplog.records if "invalid" in r.getMessage()]
    prefix = f"discarding invalid cache entry {key[-16:]}: "
    assert warning.startswith(prefix) and warning[len(prefix) :]  # then why


async def test_a_waiter_whose_leader_outlives_coalesce_timeout_goes_upstream_itself() -> None:
    release, arrived = asyncio.Event(), asyncio.Event()
    calls = 0

    async def first_is_slow(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        n = calls
        if n == 1:
            arrived.set()
            await asyncio.wait_for(release.wait(), timeout=10)
        return httpx2.Response(200, json=completion(n))

    cache = Cache(coalesce_timeout=0.05)
    async with httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(first_is_slow))
    ) as http:
        leader = asyncio.create_task(post(http))
        await asyncio.wait_for(arrived.wait(), timeout=10)
        waiter = await asyncio.wait_for(post(http), timeout=10)  # not answered by the leader in time
        release.set()
        led = await leader
    assert (waiter.json()["id"], led.json()["id"]) == ("chatcmpl-2", "chatcmpl-1")
    assert waiter.headers["x-cache"] == "MISS" and cache.stats.coalesced == 0
