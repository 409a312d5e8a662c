"""Cancellation is safe: a caller giving up at any point leaves every deployment as if the call had
failed or never started.

An attempt claims three things when it is sent: an `in_flight` slot, and in half-open the breaker's
single probe, plus (on success) latency and affinity records. Cancelling (the plan closed at a
yield, an exception thrown into it, an asyncio task cancelled while sending, sleeping or peeking a
stream, a caller's timeout, a stream closed early) must give back the claims and record nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import httpx2
import pytest

from llm_cache.router import RouterTransport
from llm_cache.router._core import Send, Sent, Sleep

from .conftest import FakeClock, dep

SYSTEM = {"role": "system", "content": "A shared system prompt, so the request has an affinity key."}
BODY = {"model": "gpt", "stream": True, "messages": [SYSTEM, {"role": "user", "content": "hi"}]}
AUTH = {"authorization": "Bearer caller"}


def health(router: Any) -> tuple[Any, ...]:
    """Everything an attempt may record about a deployment (claims aside)."""
    states = {st.id: st for group in router.states.values() for st in group}
    return (
        {
            i: (st.breaker.opened, st.breaker.open_until, tuple(st.breaker.failures), st.latency)
            for i, st in states.items()
        },
        dict(router.affinity._entries),
    )


def claims(router: Any) -> dict[str, tuple[int, bool]]:
    """What an attempt holds while it runs: in-flight slots and half-open probes."""
    return {st.id: (st.in_flight, st.breaker.probing) for group in router.states.values() for st in group}


def released(router: Any) -> dict[str, tuple[int, bool]]:
    return {i: (0, False) for i in claims(router)}


def half_open(router: Any, clock: FakeClock, dep_id: str) -> None:
    """Put `dep_id` in half-open: its cool-off just ended, the next request to it is the probe."""
    router.deployment_state(dep_id).breaker.record_failure(10.0)
    clock.advance(10.0)
    assert router.deployment_state(dep_id).breaker.state == "half_open"


# ----------------------------------------------------------------------------- the plan, at each yield


def scenario(make_router: Any, clock: FakeClock) -> tuple[Any, Any]:
    """`gpt` = a (half-open, order 0) + b (order 1), falling back to `backup` = c."""
    router = make_router(
        {
            "groups": {
                "gpt": {
                    "deployments": [dep("http://a.test/v1", id="a", order=0), dep("http://b.test/v1", id="b", order=1)]
                },
                "backup": {"deployments": [dep("http://c.test/v1", id="c")]},
            },
            "settings": {
                "num_retries": 2,
                "allowed_fails": 1,
                "cooldown_time": 30,
                "backoff_initial": 1.0,
                "backoff_jitter": 0.0,
                "fallbacks": [{"gpt": ["backup"]}],
            },
        }
    )
    half_open(router, clock, "a")
    raw = json.dumps(BODY).encode()
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", content=raw, headers=AUTH)
    return router, router.prepare(httpx2, request, raw)


def error(status: int, headers: dict[str, str] | None = None) -> Sent:
    body = json.dumps({"error": {"message": f"fake {status}", "type": "fake"}}).encode()
    return Sent(response=httpx2.Response(status, headers=headers, content=body), body=body)


#: The provider's answers, one per Send, in order: a's probe fails, b rate-limits, b's probe fails, c streams.
REPLIES = [
    error(500),
    error(429, {"retry-after": "5"}),
    error(503),
    Sent(response=httpx2.Response(200, stream=httpx2.ByteStream(b'data: {"choices": []}\n\n'))),
]
#: What the plan asks for, in order (checked, so the cancellation points below are the ones named).
ACTIONS = ["send a", "sleep 1.0", "send b", "sleep 5.0", "send b", "send c"]


def describe(action: Any) -> str:
    if isinstance(action, Sleep):
        return f"sleep {action.seconds}"
    assert isinstance(action, Send)
    return f"send {action.request.url.host.split('.')[0]}"


def drive(plan: Any, clock: FakeClock, steps: int | None = None) -> tuple[list[str], Any]:
    """Run the plan, answering Sends from REPLIES; stop once `steps` actions were yielded (if given)."""
    seen: list[str] = []
    replies = iter(REPLIES)
    reply: Any = None
    while True:
        try:
            action = plan.send(reply)
        except StopIteration as stop:
            return seen, stop.value
        seen.append(describe(action))
        if steps is not None and len(seen) == steps:
            return seen, None
        if isinstance(action, Sleep):
            clock.sleep(action.seconds)
            reply = None
        else:
            reply = next(replies)


def test_the_scenario_runs_to_the_fallback_and_releases_its_stream(make_router, clock):
    router, prepared = scenario(make_router, clock)
    seen, final = drive(router.plan(prepared), clock)
    assert seen == ACTIONS
    assert final.response.status_code == 200 and final.response.headers["x-router-deployment"] == "c"
    assert claims(router)["c"] == (1, False)  # the stream holds its slot until it is closed
    final.release(False)
    assert claims(router) == released(router)


CANCELS = {
    "close": lambda plan: plan.close(),  # GeneratorExit at the yield
    "cancelled": lambda plan: plan.throw(asyncio.CancelledError()),
    "timeout": lambda plan: plan.throw(TimeoutError()),
    "interrupt": lambda plan: plan.throw(KeyboardInterrupt()),
}


@pytest.mark.parametrize("how", CANCELS)
@pytest.mark.parametrize("step", range(1, len(ACTIONS) + 1), ids=[f"{i}-{a}" for i, a in enumerate(ACTIONS, 1)])
def test_cancelling_the_plan_at_any_yield_releases_every_claim_and_records_nothing(make_router, clock, step, how):
    router, prepared = scenario(make_router, clock)
    plan = router.plan(prepared)
    seen, final = drive(plan, clock, steps=step)
    assert final is None and seen == ACTIONS[:step]
    before = health(router)
    if seen[-1].startswith("send"):
        held = claims(router)[seen[-1][-1]]
        assert held[0] == 1  # the attempt did claim its slot (so the release below is real)
        assert held[1] == (step in (1, 5))  # a's first and b's later attempt are half-open probes
    try:
        CANCELS[how](plan)
    except (asyncio.CancelledError, TimeoutError, KeyboardInterrupt):
        assert how != "close"
    assert claims(router) == released(router)
    assert health(router) == before
    with pytest.raises(StopIteration):
        plan.send(None)  # the plan is over; nothing runs later (at garbage collection)


@pytest.mark.parametrize("step", range(1, len(ACTIONS) + 1), ids=[f"{i}-{a}" for i, a in enumerate(ACTIONS, 1)])
def test_a_cancelled_attempt_is_taken_back_out_of_the_usage_window(make_router, clock, step):
    """The usage strategy routes every caller by the tokens sent in the last minute: an attempt cancelled
    before its answer counts no more than one never sent; the attempts that ended still count."""
    router, prepared = scenario(make_router, clock)
    plan = router.plan(prepared)
    seen, _ = drive(plan, clock, steps=step)
    plan.close()
    ended = [a for a in (seen[:-1] if seen[-1].startswith("send") else seen) if a.startswith("send")]
    usage = {st.id: st.window_usage()[0] for group in router.states.values() for st in group}
    assert usage == {i: ended.count(f"send {i}") for i in usage}


def test_a_cancelled_request_never_releases_a_probe_another_request_holds(make_router, clock):
    router = make_router({"groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a")]}}})
    raw = json.dumps({**BODY, "stream": False}).encode()

    def prepared() -> Any:
        request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", content=raw, headers=AUTH)
        return router.prepare(httpx2, request, raw)

    first = router.plan(prepared())
    assert describe(first.send(None)) == "send a"  # sent while the breaker is closed: not a probe
    half_open(router, clock, "a")  # meanwhile other requests' failures opened it, and the cool-off ended
    second = router.plan(prepared())
    assert describe(second.send(None)) == "send a"  # this one is the probe
    assert claims(router) == {"a": (2, True)}
    first.close()
    assert claims(router) == {"a": (1, True)}  # the probe is still the second request's
    ok = b'{"choices": []}'
    with pytest.raises(StopIteration):
        second.send(Sent(response=httpx2.Response(200, content=ok), body=ok))
    assert claims(router) == {"a": (0, False)} and router.deployment_state("a").breaker.state == "closed"


# ----------------------------------------------------------------------------- async cancellation, real I/O


def gpt(*deps: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {
        "groups": {"gpt": {"deployments": list(deps)}},
        "settings": {"num_retries": 1, "backoff_initial": 1.0, "backoff_jitter": 0.0, "timeout": 10.0, **settings},
    }


async def wait_for_thread_event(event: Any) -> None:
    assert await asyncio.to_thread(event.wait, 10), "the fake provider never saw the request"


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=lambda m: m.__name__)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_task_cancelled_while_a_send_is_in_flight_gives_the_probe_back(fakes, make_router, clock, lib, stream):
    a = fakes["a"].fail("stall")
    router = make_router(gpt(dep(a)))
    half_open(router, clock, "a")
    async with lib.AsyncClient(transport=RouterTransport(router), base_url="https://api.openai.com/v1") as client:
        call = asyncio.create_task(client.post("/chat/completions", json={**BODY, "stream": stream}, headers=AUTH))
        await wait_for_thread_event(a.arrived)
        assert claims(router) == {"a": (1, True)}
        before = health(router)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert claims(router) == {"a": (0, False)}
        assert health(router) == before
        assert router.deployment_state("a").breaker.available()  # the group is still in service
        a.gate.set()
        again = await client.post("/chat/completions", json={**BODY, "stream": False}, headers=AUTH)
    assert again.status_code == 200 and again.headers["x-router-deployment"] == "a"
    assert router.deployment_state("a").breaker.state == "closed"  # the next probe succeeded


async def test_a_caller_timeout_while_sending_gives_the_probe_back(fakes, make_router, clock):
    a = fakes["a"].fail("stall")
    router = make_router(gpt(dep(a)))
    half_open(router, clock, "a")
    async with httpx2.AsyncClient(transport=RouterTransport(router), base_url="https://api.openai.com/v1") as client:
        with pytest.raises(asyncio.TimeoutError):
            # The provider holds the request until the gate opens, so the caller's timeout always fires.
            await asyncio.wait_for(client.post("/chat/completions", json=BODY, headers=AUTH), 0.5)
    assert claims(router) == {"a": (0, False)}
    assert router.deployment_state("a").breaker.available()


async def test_task_cancelled_while_sleeping_between_attempts_leaves_the_failure_recorded(fakes, make_router, clock):
    a = fakes["a"].fail(("status", 500, None, None))
    sleeping = asyncio.Event()

    async def sleep_until_cancelled(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    router = make_router(gpt(dep(a), allowed_fails=5), async_sleep=sleep_until_cancelled)
    async with httpx2.AsyncClient(transport=RouterTransport(router), base_url="https://api.openai.com/v1") as client:
        call = asyncio.create_task(client.post("/chat/completions", json=BODY, headers=AUTH))
        await asyncio.wait_for(sleeping.wait(), 10)
        before = health(router)
        assert before[0]["a"][2] == (clock.now,)  # the 500 is recorded: as if the call had failed
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert claims(router) == {"a": (0, False)}
    assert health(router) == before
    assert a.count == 1


class Probe(httpx2.AsyncBaseTransport):
    """A real HTTP transport that signals once response headers are in, and records stream closes."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.headers_in = asyncio.Event()
        self.closed: list[bool] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        original, closed = response.stream, self.closed

        class Recorded(httpx2.AsyncByteStream):
            async def __aiter__(self) -> Any:
                async for chunk in original:
                    yield chunk

            async def aclose(self) -> None:
                closed.append(True)
                await original.aclose()

        response.stream = Recorded()
        self.headers_in.set()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_task_cancelled_while_peeking_a_stream_closes_it_and_gives_the_probe_back(fakes, make_router, clock):
    a = fakes["a"].fail("stall_stream")
    router = make_router(gpt(dep(a)))
    half_open(router, clock, "a")
    probe = Probe()
    async with httpx2.AsyncClient(transport=RouterTransport(router, inner=probe), base_url="https://a/v1") as client:
        call = asyncio.create_task(client.post("/chat/completions", json=BODY, headers=AUTH))
        await asyncio.wait_for(probe.headers_in.wait(), 10)  # 200 headers in; the first byte is held
        await wait_for_thread_event(a.arrived)
        assert claims(router) == {"a": (1, True)}
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await probe.aclose()
    assert probe.closed == [True]  # the connection was given back, not left half-read
    assert claims(router) == {"a": (0, False)}
    assert router.deployment_state("a").breaker.available()


# ----------------------------------------------------------------------------- streams closed early


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=lambda m: m.__name__)
def test_a_stream_closed_early_by_a_sync_caller_frees_its_slot(fakes, make_router, lib):
    router = make_router(gpt(dep(fakes["a"])))
    with lib.Client(transport=RouterTransport(router), base_url="https://api.openai.com/v1") as client:
        with client.stream("POST", "/chat/completions", json=BODY, headers=AUTH) as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            next(chunks)
            assert claims(router) == {"a": (1, False)}  # still reading
        assert claims(router) == {"a": (0, False)}  # closed: freed at once, not when the client closes
    assert router.deployment_state("a").breaker.state == "closed"


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=lambda m: m.__name__)
async def test_a_stream_closed_early_by_an_async_caller_frees_its_slot(fakes, make_router, lib):
    router = make_router(gpt(dep(fakes["a"])))
    async with lib.AsyncClient(transport=RouterTransport(router), base_url="https://api.openai.com/v1") as client:
        async with client.stream("POST", "/chat/completions", json=BODY, headers=AUTH) as response:
            chunks = response.aiter_raw()
            await chunks.__anext__()
            assert claims(router) == {"a": (1, False)}  # still reading
        assert claims(router) == {"a": (0, False)}  # closed: freed at once, not when the client closes
