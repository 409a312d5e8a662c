"""One caller cannot shut a deployment out of `latency` routing, nor can one upstream take all of it.

A deployment's latency figures are shared by every caller and fed by what answers report. Before: one
answer taking 3 s for one token (a long prompt, `max_tokens: 1`) put a deployment at 300x its sibling's
time per token and it was never sent anything again, so never measured again; an upstream reporting
`completion_tokens: 10**30` (or answering in "0 s") made its figure ~0 and the band shut out everyone
else; a 200 stream whose first event is an error counted as a success with a fast time to first byte.
The plan harness drives the decisions on a fake clock; streams go through the real SDKs and
``RouterTransport`` to the fake provider.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.router import RouterTransport
from llm_cache.router._core import Sent
from tests.support.fake_provider import encoded_events

from .conftest import FakeClock, dep
from .test_callers import HI, caller, passthrough
from .test_core import planned
from .test_cross_family import anthropic_client

#: (seconds the answer took, output tokens it reports, the request's max_tokens or None)
Took = Callable[[str, int], tuple[float, Any, Any]]


def latency_router(make_router: Any, **settings: Any) -> Any:
    groups = {"gpt": {"deployments": [dep("http://a.test/v1", id="a"), dep("http://b.test/v1", id="b")]}}
    config = {"groups": groups, "settings": {"routing_strategy": "latency", "affinity": False, **settings}}
    return make_router(config, rng=random.Random(32))


def serve(router: Any, clock: FakeClock, plans: int, took: Took, gap: float = 1.0) -> list[str]:
    """Drive ``plans`` whole requests, ``gap`` seconds apart on the fake clock, each sending the
    ``max_tokens`` ``took`` gives (None: none); returns the hosts picked."""
    picks = []
    for n in range(plans):
        body: dict[str, Any] = {"model": "gpt", "messages": HI}
        seconds, tokens, cap = took("", n)
        if cap is not None:
            body["max_tokens"] = cap
        plan = planned(router, body)
        host = plan.send(None).request.url.host
        seconds, tokens, _ = took(host, n)
        clock.advance(seconds)
        raw = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": tokens}}).encode()
        with pytest.raises(StopIteration):
            plan.send(Sent(response=httpx2.Response(200, content=raw), body=raw))
        picks.append(host)
        clock.advance(gap)
    return picks


def honest(host: str, n: int) -> tuple[float, Any, Any]:
    return 0.1, 10, 100  # both answer 10 tokens in 0.1 s


def test_one_slow_answer_does_not_shut_a_deployment_out_for_good(make_router, clock):
    """The repro: a caller's long prompt with `max_tokens: 1` takes 3 s on b. b's figure moves by a
    bounded factor, and once nothing was sent to b for `latency_max_age` (60 s) it is explored again:
    its next honest answer starts its figure afresh and it shares the traffic again."""
    router = latency_router(make_router)
    serve(router, clock, 20, honest)
    poisoned = []

    def caller_aims_at_b(host: str, n: int) -> tuple[float, Any, Any]:
        if host == "b.test" and not poisoned:
            poisoned.append(n)
            return 3.0, 1, 1
        return honest(host, n)

    serve(router, clock, 10, caller_aims_at_b)
    assert poisoned  # b answered one request in 3 s for one token
    b = router.deployment_state("b")
    assert b.latency is not None and b.latency < 0.01 * 2  # one sample moves the figure a bounded factor
    picks = serve(router, clock, 200, honest)
    first_b = picks.index("b.test")
    assert first_b < 70  # explored again within the max age (requests 1 s apart on the fake clock)
    assert Counter(picks[first_b:])["b.test"] > len(picks[first_b:]) // 4  # and back in the band for good


def test_an_honestly_slower_deployment_still_gets_less_traffic(make_router, clock):
    """Forgetting with age explores b about once per `latency_max_age`; it does not undo the routing."""
    router = latency_router(make_router)

    def b_is_slower(host: str, n: int) -> tuple[float, Any, Any]:
        return (0.5 if host == "b.test" else 0.1), 10, 100

    picks = Counter(serve(router, clock, 300, b_is_slower))
    assert 1 <= picks["b.test"] <= 10 and picks["a.test"] >= 290  # 300 s: b explored about every 60 s


@pytest.mark.parametrize("lie", [(0.1, 10**30), (0.1, 2**53 + 1), (0.0, 10), (0.1, 1e30), (0.1, "10")], ids=str)
def test_an_upstream_lying_about_its_speed_gets_no_more_than_an_honest_one(make_router, clock, lie):
    """b answers as fast as a does but reports an absurd count (or a time of 0): a count is taken only up
    to the request's `max_tokens`, a count past 2**53 or not an integer is none, and 0 s is no sample,
    so b cannot look faster than it is and shut a out."""
    router = latency_router(make_router)

    def b_lies(host: str, n: int) -> tuple[float, Any, Any]:
        if host == "b.test":
            return lie[0], lie[1], 10
        return 0.1, 10, 10

    picks = Counter(serve(router, clock, 200, b_lies))
    assert picks["a.test"] >= 60, picks  # a keeps a fair share: it is never shut out


def test_a_count_above_what_the_request_allowed_is_the_cap(make_router, clock):
    router = latency_router(make_router)
    serve(router, clock, 1, lambda host, n: (1.0, 10**12, 50))
    figures = [router.deployment_state(d).latency for d in ("a", "b")]
    assert sorted(f for f in figures if f is not None) == [pytest.approx(1.0 / 50)]


# ----------------------------------------------------------------------------- streams


class TickingClock(FakeClock):
    """A fake clock that moves 10 ms each time it is read: every attempt takes a known, nonzero time."""

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


ANTHROPIC_ERROR = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
OPENAI_ERROR = {"error": {"message": "upstream failed", "type": "server_error", "code": None}}


def _stream_anthropic(router: Any, fake: Any) -> None:
    with anthropic_client(router).messages.stream(model="claude", max_tokens=10, messages=HI) as stream:
        stream.until_done()


def _stream_openai(router: Any, fake: Any) -> None:
    for _ in caller(router, "key-a").chat.completions.create(model="gpt", messages=HI, stream=True):
        pass


def _stream_openai_async(router: Any, fake: Any) -> None:
    async def run() -> None:
        transport = RouterTransport(router)
        async with httpx2.AsyncClient(transport=transport) as http:
            client = openai.AsyncOpenAI(api_key="key-a", max_retries=0, http_client=http)
            async for _ in await client.chat.completions.create(model="gpt", messages=HI, stream=True):
                pass

    asyncio.run(run())


def _claude_config(fake: Any) -> dict[str, Any]:
    deployment = {"id": "only", "family": "anthropic", "model": "claude-real", "api_base": fake.url, "api_key": "k"}
    return {
        "groups": {"claude": {"deployments": [deployment]}},
        "settings": {"num_retries": 0, "allowed_fails": 1, "cooldown_time": 5},
    }


STREAMS = {
    "anthropic": (_claude_config, [ANTHROPIC_ERROR], _stream_anthropic, anthropic.APIError),
    "openai": (
        lambda fake: passthrough(fake, "only", key="operator-key", cooldown_time=5),
        [OPENAI_ERROR],
        _stream_openai,
        openai.APIError,
    ),
    "openai-async": (
        lambda fake: passthrough(fake, "only", key="operator-key", cooldown_time=5),
        [OPENAI_ERROR],
        _stream_openai_async,
        openai.APIError,
    ),
}


@pytest.mark.parametrize("family", list(STREAMS))
def test_a_stream_whose_first_event_is_an_error_is_no_success_and_no_time_to_first_byte(
    fake_provider, make_router, family
) -> None:
    """A 200 stream opening with Anthropic's `event: error` or an OpenAI error object is judged as a 200
    error object is (`_wire.error_object`): relayed, no latency sample, and a cooling deployment's probe
    answered so is given back without closing its breaker."""
    config, events, stream, error = STREAMS[family]
    clock = TickingClock()
    router = make_router(config(fake_provider), clock=clock, sleep=clock.sleep, async_sleep=clock.async_sleep)
    state = router.deployment_state("only")
    fake_provider.fail_next(1, 500)
    with pytest.raises(error):
        stream(router, fake_provider)
    clock.advance(5)
    assert state.breaker.state == "half_open"
    fake_provider.stream_next(events)
    with pytest.raises(error):
        stream(router, fake_provider)
    assert state.ttft is None  # its instant "first byte" is no speed
    assert state.breaker.state == "half_open"  # the probe is given back, the breaker not closed
    stream(router, fake_provider)
    assert state.ttft is not None and state.breaker.state == "closed"  # a real stream is a success


@pytest.mark.parametrize("family", list(STREAMS))
def test_a_stream_whose_first_event_is_an_error_split_at_any_byte_is_no_success(
    fake_provider, make_router, family
) -> None:
    """The router judged a stream's first event only if it came whole in the first chunk: the same
    error event cut anywhere by the network (the second part held until the first was read alone)
    counted as a success with a time to first byte. It reads on until the first event ends (at most
    `FIRST_EVENT_MAX` bytes of an uncompressed event stream), so each cut is judged as the whole event."""
    config, events, stream, error = STREAMS[family]
    size = len(b"".join(encoded_events(events)))

    def release_when_parked() -> None:
        fake_provider.wait_for_parked(1)
        fake_provider.release()

    for offset in range(1, size):
        clock = TickingClock()
        router = make_router(config(fake_provider), clock=clock, sleep=clock.sleep, async_sleep=clock.async_sleep)
        fake_provider.stream_next(events, split_at=offset, hold=True)
        releaser = threading.Thread(target=release_when_parked)
        releaser.start()
        with pytest.raises(error):
            stream(router, fake_provider)
        releaser.join(10)
        assert not releaser.is_alive()
        assert router.deployment_state("only").ttft is None, f"an error event cut at byte {offset} was a success"


@pytest.mark.parametrize("family", list(STREAMS))
def test_a_gzipped_stream_whose_first_event_is_an_error_is_no_success(fake_provider, make_router, family) -> None:
    """The router judged a compressed event stream on its first raw chunk, gzip bytes that hold no event:
    an error event behind `content-encoding: gzip` (whole, or cut by the network) was a success with a
    time to first byte. Its first event is now read decoded, to its end, and the caller still gets the
    bytes as they came (its SDK decodes them and raises the error)."""
    config, events, stream, error = STREAMS[family]
    size = len(b"".join(encoded_events(events)))
    fake_provider.gzip_streams()

    def release_when_parked() -> None:
        fake_provider.wait_for_parked(1)
        fake_provider.release()

    for offset in (None, 1, size // 2, size - 1):
        clock = TickingClock()
        router = make_router(config(fake_provider), clock=clock, sleep=clock.sleep, async_sleep=clock.async_sleep)
        fake_provider.stream_next(events, split_at=offset, hold=offset is not None)
        releaser = threading.Thread(target=release_when_parked) if offset is not None else None
        if releaser is not None:
            releaser.start()
        with pytest.raises(error):
            stream(router, fake_provider)
        if releaser is not None:
            releaser.join(10)
            assert not releaser.is_alive()
        assert router.deployment_state("only").ttft is None, f"a gzipped error event cut at {offset} was a success"


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_first_event_longer_than_the_router_reads_reaches_the_caller_unchanged(
    fake_provider, make_router, gzipped
) -> None:
    """A first event that does not end within `FIRST_EVENT_MAX` (a 200 KiB chunk of text, plain or gzip)
    is judged unread, and every byte of the stream reaches the caller as the provider sent it."""
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "real-only", "created": 1}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "x" * 200_000}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        "[DONE]",
    ]
    if gzipped:
        fake_provider.gzip_streams()
    fake_provider.stream_next(events)
    router = make_router(passthrough(fake_provider, "only", key="operator-key"))
    with httpx2.Client(transport=RouterTransport(router)) as http:
        body = {"model": "gpt", "messages": HI, "stream": True}
        with http.stream("POST", "https://api.openai.com/v1/chat/completions", json=body) as answer:
            received = b"".join(answer.iter_bytes())
    assert answer.status_code == 200 and received == b"".join(encoded_events(events))
