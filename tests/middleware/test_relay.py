"""The relay of a miss's answer (`_relay.py`): which ends of a body store it, and that a relay ends once.

Driven without I/O: `Cache.plan` hands over the Recorder of a miss (test_plan.py), and each test plays
a driver's part with `Relaying`, awaiting the work it is given as the drivers do.
"""

from __future__ import annotations

from typing import Any

from llm_cache.middleware import Cache
from llm_cache.middleware._engine import drive
from llm_cache.middleware._relay import Relaying
from llm_cache.middleware._types import CacheRequest, Relay
from tests.middleware.test_plan import ANSWER, BODY, JSON, Upstream, prepare, reply

SSE = {"content-type": "text/event-stream"}
STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"4"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


async def relaying(cache: Cache, body: dict[str, Any], headers: dict[str, str]) -> Relaying:
    request = prepare(cache, body)
    assert isinstance(request, CacheRequest) and await cache.hit(request) is None
    end = await drive(cache.plan(request), Upstream(reply(200, headers)))
    assert isinstance(end, Relay)
    return Relaying(end.recorder)


async def test_a_json_answer_read_to_its_end_is_stored() -> None:
    cache = Cache()
    relay = await relaying(cache, BODY, JSON)
    forward, work = relay.chunk(ANSWER)
    assert forward == ANSWER and work is None  # a JSON body has no terminal event
    assert relay.last() == (b"", None)
    assert await relay.finished() is True and cache.stats.stored == 1


async def test_a_json_answer_its_caller_closes_before_the_end_of_the_body_is_not_stored() -> None:
    """Even with every byte relayed: only the end of the body says the answer is whole."""
    cache = Cache()
    relay = await relaying(cache, BODY, JSON)
    relay.chunk(ANSWER)
    assert await relay.closed() is False and cache.stats.stored == 0


async def test_a_stream_is_stored_at_its_terminal_event_before_the_caller_reads_on() -> None:
    cache = Cache()
    relay = await relaying(cache, {**BODY, "stream": True}, SSE)
    forward, work = relay.chunk(STREAM)
    assert forward and work is not None
    assert await work is True and cache.stats.stored == 1


async def test_a_relay_ends_once_whichever_way_it_ends() -> None:
    """After the body ended, was closed or was given up, giving it up leaves nothing to do."""
    for end in ("finished", "closed", "abandoned"):
        cache = Cache()
        relay = await relaying(cache, BODY, JSON)
        relay.chunk(ANSWER)
        await getattr(relay, end)()
        assert relay.abandoned(RuntimeError("upstream failed")) is None
        assert cache.stats.stored == (1 if end == "finished" else 0)
