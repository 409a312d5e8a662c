"""`Cache.hit` and `Cache.plan` (_engine.py), driven without any I/O: what the engine asks a driver to
do for each kind of call, and what it does with the answers. The drivers' own tests (test_asgi.py,
test_transport.py) run the same calls through real apps, clients and servers."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware._engine import Plan, drive
from llm_cache.middleware._entry import Entry, pack
from llm_cache.middleware._types import (
    Abandoned,
    Action,
    Answer,
    CacheRequest,
    Forward,
    Prepared,
    ReadBody,
    Relay,
    Reply,
    Run,
    SideCall,
    Untouched,
)

PATH = "/v1/chat/completions"
HEADERS = {"authorization": "Bearer sk-plan", "content-type": "application/json"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2+2?"}]}
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }
)
JSON = {"content-type": "application/json"}


def prepare(cache: Cache, body: dict[str, Any] = BODY, headers: dict[str, str] | None = None) -> Prepared:
    prepared = cache.prepare("POST", PATH, "", {**HEADERS, **(headers or {})}, orjson.dumps(body))
    assert prepared is not None
    return prepared


def reply(status: int, headers: dict[str, str], body: bytes = b"") -> Reply:
    return Reply(status, headers, list(headers.items()), body)


class Upstream:
    """Performs the plan's actions: answers each `Forward` and `SideCall` with the next of `answers`
    and keeps the bodies it was asked to send (and the side calls)."""

    def __init__(self, *answers: Reply) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []
        self.side_calls: list[SideCall] = []
        self.actions: list[str] = []
        self.current: Reply | None = None

    async def __call__(self, action: Action) -> Any:
        self.actions.append(type(action).__name__)
        if isinstance(action, Run):
            return await action.work
        if isinstance(action, SideCall):
            self.side_calls.append(action)
            return self.answers.pop(0)
        if isinstance(action, Forward):
            self.sent.append(action.body)
            self.current = self.answers.pop(0)
            return Reply(self.current.status, self.current.headers, self.current.raw)
        assert isinstance(action, ReadBody) and self.current is not None
        return self.current


async def relay_body(end: Relay, body: bytes) -> None:
    """What a driver does with a `Relay` end: every chunk through the recorder, then finish."""
    end.recorder.feed(body)
    end.recorder.flush()
    await end.recorder.finish(exhausted=True)


async def test_a_miss_sends_the_callers_body_and_relays_the_answer_through_a_recorder_that_stores_it() -> None:
    cache = Cache()
    prepared = prepare(cache, {**BODY, "cache": {"ttl": 60}})
    assert isinstance(prepared, CacheRequest)
    assert await cache.hit(prepared) is None
    upstream = Upstream(reply(200, JSON))
    end = await drive(cache.plan(prepared), upstream)
    assert upstream.actions == ["Forward"]
    assert orjson.loads(upstream.sent[0]) == BODY  # the cache control field never goes upstream
    assert isinstance(end, Relay) and end.status == 200
    assert ("x-cache", "MISS") in end.headers and ("x-cache-key", prepared.key) in end.headers
    await relay_body(end, ANSWER)
    assert cache.stats.stored == 1


async def test_a_hit_is_answered_by_hit_alone() -> None:
    cache = Cache()
    first = prepare(cache)
    assert isinstance(first, CacheRequest) and await cache.hit(first) is None
    end = await drive(cache.plan(first), Upstream(reply(200, JSON)))
    assert isinstance(end, Relay)
    await relay_body(end, ANSWER)
    second = prepare(cache)
    assert isinstance(second, CacheRequest)
    parts = await cache.hit(second)
    assert parts is not None and parts.status == 200 and parts.body == ANSWER
    assert (b"x-cache", b"HIT") in parts.headers


async def test_an_answer_the_upstream_refused_because_of_an_addition_is_read_and_sent_again_without_it() -> None:
    cache = Cache()
    prepared = prepare(cache, {**BODY, "stream": True})
    assert isinstance(prepared, CacheRequest) and await cache.hit(prepared) is None
    refusal = b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}'
    upstream = Upstream(reply(400, JSON, refusal), reply(200, {"content-type": "text/event-stream"}))
    end = await drive(cache.plan(prepared), upstream)
    assert upstream.actions == ["Forward", "ReadBody", "Run", "Forward"]
    assert b"stream_options" in upstream.sent[0] and b"stream_options" not in upstream.sent[1]
    assert isinstance(end, Relay) and end.status == 200
    await end.recorder.abort()


async def test_an_answer_of_its_own_refusal_is_relayed_from_the_bytes_read() -> None:
    cache = Cache()
    prepared = prepare(cache, {**BODY, "stream": True})
    assert isinstance(prepared, CacheRequest) and await cache.hit(prepared) is None
    upstream = Upstream(reply(400, JSON, b'{"error": {"message": "messages: too long"}}'))
    end = await drive(cache.plan(prepared), upstream)
    assert upstream.actions == ["Forward", "ReadBody", "Run"]
    assert isinstance(end, Relay) and end.status == 400
    await relay_body(end, b"")
    assert cache.stats.stored == 0


async def test_a_body_the_engine_cannot_read_goes_upstream_untouched_without_any_action() -> None:
    cache = Cache()
    prepared = cache.prepare("POST", PATH, "", HEADERS, b"{not json")
    assert prepared is not None and not isinstance(prepared, CacheRequest)
    upstream = Upstream()
    assert await drive(cache.plan(prepared), upstream) == Untouched(("x-cache", "BYPASS"))
    assert upstream.actions == []


async def test_a_cache_control_the_engine_cannot_honour_ends_in_its_400() -> None:
    cache = Cache()
    prepared = prepare(cache, {**BODY, "cache": {"ttl": "soon"}})
    end = await drive(cache.plan(prepared), Upstream())
    assert isinstance(end, Answer) and end.parts.status == 400


async def test_an_only_if_cached_miss_ends_in_a_504_and_nothing_goes_upstream() -> None:
    cache = Cache()
    prepared = prepare(cache, headers={"cache-control": "only-if-cached"})
    assert isinstance(prepared, CacheRequest) and await cache.hit(prepared) is None
    upstream = Upstream()
    end = await drive(cache.plan(prepared), upstream)
    assert isinstance(end, Answer) and end.parts.status == 504
    assert upstream.actions == []


async def test_an_upstream_failure_is_thrown_into_the_plan_which_stores_nothing_and_raises_it() -> None:
    cache = Cache()
    prepared = prepare(cache)
    assert isinstance(prepared, CacheRequest) and await cache.hit(prepared) is None
    actions: list[str] = []

    async def failing(action: Action) -> Any:
        actions.append(type(action).__name__)
        if isinstance(action, Run):
            return await action.work
        raise ConnectionError("upstream unreachable")

    with pytest.raises(ConnectionError):
        await drive(cache.plan(prepared), failing)
    assert actions == ["Forward", "Run"]  # the Run aborts the recorder
    assert cache.stats.not_stored == 1


async def test_a_plan_closed_while_it_waits_for_the_upstream_ends_quietly() -> None:
    cache = Cache()
    prepared = prepare(cache)
    assert isinstance(prepared, CacheRequest) and await cache.hit(prepared) is None
    plan = cache.plan(prepared)
    assert isinstance(next(plan), Forward)
    plan.close()  # what a driver does when its caller goes away mid-call
    assert cache.stats.stored == 0


async def past_its_ttl(cache: Cache, prepared: Prepared) -> CacheRequest:
    """`prepared`, looked up after an entry for it went past its TTL a minute ago (the cache's grace,
    `stale_if_error`, lets it answer a failure)."""
    assert isinstance(prepared, CacheRequest)
    now = time.time()
    await cache.store.set(
        prepared.key, pack(Entry(prepared.key, now - 120, 200, ANSWER, False, expires_at=now - 60)), None
    )
    assert await cache.hit(prepared) is None
    return prepared


def answered_stale(end: Any) -> bool:
    return isinstance(end, Answer) and end.parts.body == ANSWER and (b"x-cache", b"STALE") in end.parts.headers


@pytest.mark.parametrize("status", [500, 503])
async def test_a_failure_answered_by_an_entry_past_its_ttl_is_read_whole_and_never_relayed(status: int) -> None:
    cache = Cache(stale_if_error=300)
    prepared = await past_its_ttl(cache, prepare(cache))
    upstream = Upstream(reply(status, JSON, b'{"error": "overloaded"}'))
    end = await drive(cache.plan(prepared), upstream)
    assert upstream.actions == ["Forward", "ReadBody", "Run"]  # the Run aborts the recorder
    assert answered_stale(end) and cache.stats.stale == 1


async def test_a_failure_after_a_retry_without_an_addition_is_read_whole_before_the_stale_answer() -> None:
    cache = Cache(stale_if_error=300)
    prepared = await past_its_ttl(cache, prepare(cache, {**BODY, "stream": True}))
    refusal = b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}'
    upstream = Upstream(reply(400, JSON, refusal), reply(503, JSON, b'{"error": "overloaded"}'))
    end = await drive(cache.plan(prepared), upstream)
    assert upstream.actions == ["Forward", "ReadBody", "Run", "Forward", "ReadBody", "Run"]
    assert isinstance(end, Answer) and (b"x-cache", b"STALE") in end.parts.headers


async def test_an_upstream_that_cannot_be_reached_is_answered_by_an_entry_past_its_ttl() -> None:
    cache = Cache(stale_if_error=300)
    prepared = await past_its_ttl(cache, prepare(cache))

    async def unreachable(action: Action) -> Any:
        if isinstance(action, Run):
            return await action.work
        raise ConnectionError("upstream unreachable")

    assert answered_stale(await drive(cache.plan(prepared), unreachable))


@pytest.mark.parametrize("gone", [Abandoned(), asyncio.CancelledError()], ids=["abandoned", "cancelled"])
async def test_a_call_nobody_waits_for_any_more_is_never_answered_stale(gone: BaseException) -> None:
    cache = Cache(stale_if_error=300)
    prepared = await past_its_ttl(cache, prepare(cache))

    async def going(action: Action) -> Any:
        if isinstance(action, Run):
            return await action.work
        raise gone

    with pytest.raises(type(gone)):
        await drive(cache.plan(prepared), going)
    assert cache.stats.stale == 0


async def test_a_plan_looks_the_request_up_itself_when_the_driver_did_not() -> None:
    cache = Cache()
    prepared = prepare(cache)
    plan: Plan = cache.plan(prepared)
    upstream = Upstream(reply(200, JSON))
    end = await drive(plan, upstream)
    assert upstream.actions == ["Run", "Forward"]
    assert isinstance(end, Relay)
    await end.recorder.abort()


GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_BODY = {
    "systemInstruction": {"parts": [{"text": "You answer for a bicycle shop. " + "Policy text. " * 400}]},
    "contents": [{"role": "user", "parts": [{"text": "Can I return a helmet?"}]}],
}


async def gemini_plan(cache: Cache, upstream: Upstream) -> Any:
    prepared = cache.prepare("POST", GEMINI_PATH, "", {"x-goog-api-key": "gm-plan"}, orjson.dumps(GEMINI_BODY))
    assert isinstance(prepared, CacheRequest) and await cache.hit(prepared) is None
    return await drive(cache.plan(prepared), upstream)


async def test_a_gemini_cached_content_is_created_by_a_side_call_the_plan_yields_before_it_forwards() -> None:
    cache = Cache(prompt_caching={"gemini": {"cached_contents": True}})
    created = reply(200, JSON, b'{"name": "cachedContents/plan1"}')
    upstream = Upstream(created, reply(200, JSON))
    end = await gemini_plan(cache, upstream)
    assert upstream.actions.count("SideCall") == 1 and upstream.actions[-1] == "Forward"
    (call,) = upstream.side_calls
    assert (call.path, call.headers["x-goog-api-key"]) == ("/v1beta/cachedContents", "gm-plan")
    assert orjson.loads(call.body)["systemInstruction"] == GEMINI_BODY["systemInstruction"]
    forwarded = orjson.loads(upstream.sent[0])
    assert forwarded["cachedContent"] == "cachedContents/plan1" and "systemInstruction" not in forwarded
    assert isinstance(end, Relay)
    await end.recorder.abort()

    again = Upstream(reply(200, JSON))  # the next request with the same prefix names it without a side call
    await (await gemini_plan(cache, again)).recorder.abort()
    assert "SideCall" not in again.actions and orjson.loads(again.sent[0])["cachedContent"] == "cachedContents/plan1"


async def test_a_side_call_that_fails_is_thrown_into_the_plan_which_sends_the_request_as_written() -> None:
    cache = Cache(prompt_caching={"gemini": {"cached_contents": True}})

    class Unreachable(Upstream):
        async def __call__(self, action: Action) -> Any:
            if isinstance(action, SideCall):
                self.actions.append("SideCall")
                raise ConnectionError("upstream unreachable")
            return await super().__call__(action)

    upstream = Unreachable(reply(200, JSON))
    end = await gemini_plan(cache, upstream)
    assert "SideCall" in upstream.actions and orjson.loads(upstream.sent[0]) == GEMINI_BODY
    assert isinstance(end, Relay)
    await end.recorder.abort()


DRIVERS = ("_asgi.py", "_transport.py", "_relay.py")
PROVIDER_WORDS = re.compile(
    r"openai|anthropic|gemini|bedrock|azure|vertex|cachedcontent|family|stream_options|cache_control|usage",
    re.IGNORECASE,
)


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_drivers_know_no_provider(driver: str) -> None:
    source = (Path(__file__).parents[2] / "middleware" / driver).read_text()
    assert PROVIDER_WORDS.findall(source) == []
