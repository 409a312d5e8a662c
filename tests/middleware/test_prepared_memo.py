"""A request prepared again is prepared exactly as the first time, and never as another caller's.

`Cache` remembers its preparations (`_prepared_memo.py`) by what they read; these tests hold the
remembered answer to the one a new cache computes.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware._engine import CacheRequest
from llm_cache.middleware._prepared_memo import HeaderReads, PreparedMemo
from llm_cache.middleware._types import UPSTREAM_HEADER
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stores import DeadStore

CHAT = "/v1/chat/completions"
CONVERSE = "/model/anthropic.claude-3-haiku/converse"
PATHS = [CHAT, "/v1/messages", CONVERSE]
BODIES = [
    orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
    orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "stream": True}),
    b'{"model":"gpt-4o-mini","messages":[],"seed":12345678901234567890}',
    orjson.dumps({"model": "gpt-4o-mini", "messages": [], "cache": {"ttl": 5, "namespace": "team"}}),
]
HEADER_CHOICES = {
    "authorization": ["Bearer sk-alice", "Bearer sk-bob"],
    "x-api-key": ["sk-ant-alice", "sk-ant-bob"],
    "cache-control": ["no-cache", "max-age=5", "only-if-cached"],
    "x-cache-namespace": ["one", "two"],
    "x-cache-ttl": ["30"],
    UPSTREAM_HEADER: ["https://one.example/v1/chat/completions"],  # a caller's: just another header
    "x-amzn-bedrock-trace": ["ENABLED"],
    "x-amzn-bedrock-guardrailversion": ["DRAFT", "1"],
    "anthropic-beta": ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"],
    "anthropic-version": ["2023-06-01", "2023-01-01"],
    "user-agent": ["OpenAI/Python 1.0", "curl/8"],
}
headers_strategy = st.fixed_dictionaries(
    {}, optional={name: st.sampled_from(values) for name, values in HEADER_CHOICES.items()}
)
UPSTREAMS = [None, "https://one.example/v1/chat/completions", "https://two.example/v1/chat/completions"]
"""What a driver names as the request's upstream (`Cache.prepare_route`'s `upstream`)."""
request_strategy = st.tuples(
    st.sampled_from(PATHS), st.sampled_from(BODIES), headers_strategy, st.sampled_from(UPSTREAMS)
)


def prepared(cache: Cache, path: str, body: bytes, headers: dict[str, str], upstream: str | None = None) -> Any:
    return cache.prepare("POST", path, "", headers, body, upstream=upstream)


def decisions(request: Any) -> Any:
    """Everything a preparation decides (`call` and the upstream's later answers are the call's own)."""
    if not isinstance(request, CacheRequest):
        return request
    return (
        request.key,
        request.scope,
        request.bypass,
        request.policy,
        request.stream,
        orjson.dumps(request.body),  # numbers a double cannot carry are Fragments, equal by their text
        request.forward_body,
        request.caller_body,
        request.captured,
        request.exact,
        request.headers,
        request.upstream,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(request_strategy, min_size=2, max_size=12))
def test_a_request_prepared_again_is_prepared_as_a_new_cache_prepares_it(requests: list[Any]) -> None:
    cache = Cache()
    for path, body, headers, upstream in requests * 3:  # remembered from the second sight, reused from the third
        again = prepared(cache, path, bytes(body), dict(headers), upstream)  # new objects, as a new request brings
        assert decisions(again) == decisions(prepared(Cache(), path, body, headers, upstream))


def test_two_callers_of_one_body_never_share_a_preparation() -> None:
    cache = Cache()
    body = BODIES[0]
    keys = {
        caller: [prepared(cache, CHAT, body, {"authorization": f"Bearer {caller}"}).key for _ in range(3)]
        for caller in ("sk-alice", "sk-bob")
    }
    assert len(set(keys["sk-alice"])) == len(set(keys["sk-bob"])) == 1
    assert keys["sk-alice"][0] != keys["sk-bob"][0]


def test_each_call_gets_its_own_request_with_its_own_headers() -> None:
    cache = Cache()
    first = prepared(cache, CHAT, BODIES[1], {"authorization": "Bearer sk-alice", "user-agent": "a"})
    second = prepared(cache, CHAT, BODIES[1], {"authorization": "Bearer sk-alice", "user-agent": "b"})
    assert first is not second and first.key == second.key
    assert second.headers["user-agent"] == "b"
    first.captured = False  # what a retry without usage capture does to its own call
    assert second.captured is True


def test_a_scope_function_and_a_key_builder_run_for_every_request() -> None:
    seen: list[str] = []

    def scope(request: Any) -> str:
        seen.append("scope")
        return "tenant"

    def builder(request: Any, default: Any) -> str:
        seen.append("builder")
        return str(default(request))

    for cache in (Cache(scope=scope), Cache(key_builder=builder)):
        for _ in range(3):
            prepared(cache, CHAT, BODIES[0], {"authorization": "Bearer sk-alice"})
    assert seen == ["scope"] * 3 + ["builder"] * 3


def test_an_addition_the_upstream_refused_is_left_out_of_requests_prepared_before(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.refuse_field("stream_options")
    cache = Cache(store=DeadStore())  # nothing is stored: the same request goes upstream each time
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )

    def ask() -> str:
        messages: Any = [{"role": "user", "content": "What is the capital of France?"}]
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert ask() and fake_provider.count("/chat/completions") == 2  # refused once, then sent as written
    assert ask() and fake_provider.count("/chat/completions") == 3  # the same request: sent as written at once


def test_a_request_is_remembered_from_its_second_sight() -> None:
    memo: PreparedMemo[str] = PreparedMemo()
    identity = ("POST", CHAT, "", BODIES[0], frozenset())
    headers = {"authorization": "Bearer sk-alice"}
    assert memo.recorder(identity, headers) is None  # a first sight is only noted
    reads = memo.recorder(identity, headers)
    assert isinstance(reads, HeaderReads)
    reads.get("authorization")
    memo.add(identity, reads, "prepared")
    assert memo.find(identity, headers) == "prepared"
    assert memo.find(identity, {"authorization": "Bearer sk-bob"}) is None


def test_header_reads_remember_what_was_read_and_iterating_reads_everything() -> None:
    reads = HeaderReads({"authorization": "Bearer sk-alice", "accept": "*/*"})
    assert reads.get("authorization") == "Bearer sk-alice" and reads.get("x-api-key") is None
    assert "cache-control" not in reads
    assert reads.read == {"authorization": "Bearer sk-alice", "x-api-key": None, "cache-control": None}
    assert not reads.read_all
    assert dict(reads) == {"authorization": "Bearer sk-alice", "accept": "*/*"}
    assert reads.read_all


def test_the_memo_is_bounded_by_entries_and_bytes() -> None:
    memo: PreparedMemo[str] = PreparedMemo(max_entries=2, max_bytes=1600)
    headers = {"authorization": "Bearer sk-alice"}

    def add(body: bytes) -> None:
        reads = HeaderReads(headers)
        reads.get("authorization")
        memo.add(("POST", CHAT, "", body, frozenset()), reads, body.decode())

    def found(body: bytes) -> str | None:
        return memo.find(("POST", CHAT, "", body, frozenset()), headers)

    add(b"1")
    add(b"2")
    assert (found(b"1"), found(b"2")) == ("1", "2")
    add(b"3")  # a third entry: the memo starts over
    assert (found(b"1"), found(b"2"), found(b"3")) == (None, None, "3")
    add(b"x" * 99)
    add(b"y" * 101)  # over a sixteenth of the bytes: not remembered
    assert found(b"x" * 99) == "x" * 99 and found(b"y" * 101) is None


def test_a_missing_header_is_a_key_error_and_counting_the_headers_reads_them_all() -> None:
    reads = HeaderReads({"authorization": "Bearer sk-alice"})
    with pytest.raises(KeyError):
        reads["x-api-key"]
    assert reads.read == {"x-api-key": None} and not reads.read_all
    assert len(reads) == 1 and reads.read_all


def remembered(memo: PreparedMemo[bytes], body: bytes) -> bool:
    identity = ("POST", CHAT, "", body, frozenset())
    memo.add(identity, HeaderReads({}), body)
    return memo.find(identity, {}) == body


def test_by_default_the_memo_holds_512_preparations() -> None:
    memo: PreparedMemo[bytes] = PreparedMemo()
    assert all(remembered(memo, b"%d" % n) for n in range(512))
    assert memo.find(("POST", CHAT, "", b"0", frozenset()), {}) == b"0"
    assert remembered(memo, b"one more")  # the 513th starts over
    assert memo.find(("POST", CHAT, "", b"0", frozenset()), {}) is None
    assert remembered(memo, b"and another")  # ... with room for 511 more
    assert memo.find(("POST", CHAT, "", b"one more", frozenset()), {}) == b"one more"


def test_by_default_the_memo_holds_4_mib_of_bodies_each_at_most_a_sixteenth_of_it() -> None:
    memo: PreparedMemo[bytes] = PreparedMemo()
    sixteenth = 4 * 1024 * 1024 // 16
    assert not remembered(memo, b"x" * (sixteenth + 1))
    bodies = [bytes([65 + n]) * sixteenth for n in range(16)]  # 4 MiB exactly
    assert all(remembered(memo, body) for body in bodies)
    assert memo.find(("POST", CHAT, "", bodies[0], frozenset()), {}) == bodies[0]
    assert remembered(memo, b"z" * sixteenth)  # one byte past 4 MiB: the memo starts over
    assert memo.find(("POST", CHAT, "", bodies[0], frozenset()), {}) is None


def test_first_sights_are_noted_up_to_2048_then_the_notes_start_over() -> None:
    memo: PreparedMemo[bytes] = PreparedMemo()

    def sight(n: int) -> HeaderReads | None:
        return memo.recorder(("POST", CHAT, "", b"%d" % n, frozenset()), {})

    assert [sight(n) for n in range(2048)] == [None] * 2048
    assert isinstance(sight(0), HeaderReads)  # its second sight, 2047 others in between
    assert sight(2048) is None  # a 2049th first sight: the notes start over with it
    assert sight(1) is None and isinstance(sight(2048), HeaderReads)


def test_starting_over_forgets_the_first_sights_too() -> None:
    memo: PreparedMemo[bytes] = PreparedMemo()
    identity = ("POST", CHAT, "", BODIES[0], frozenset())
    assert memo.recorder(identity, {}) is None
    memo.clear()
    assert memo.recorder(identity, {}) is None  # a first sight again
