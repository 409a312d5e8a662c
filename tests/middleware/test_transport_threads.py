"""The sync transport as Flask, Django, Celery and gunicorn workers use it: many threads through one
transport and one cache, callers that abandon a stream, `close()` while threads are mid-call, and a
transport created before `fork()` and used after it.

Every wait is bounded: a thread that does not finish within `BOUND` fails the test instead of
hanging it. Every SDK client is built with `max_retries=0`, so each provider call is one the cache
let through; the fake provider gives every answer a fresh id.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest

from llm_cache.middleware import Cache, CachingTransport, LookupView
from llm_cache.middleware.stores import RedisStore
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.forked import ForkedChild
from tests.support.gateway_process import proc_figures
from tests.support.servers import RedisServer
from tests.support.stores import CountingStore

BOUND = 20.0
CHAT = "/chat/completions"
LIBS = pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
PAST_THE_FIRST_EVENT = 300
"""Bytes of a chat stream the fake provider sends before it stalls: its first event (the role delta,
286 bytes) whole, the second not."""


def sdk(transport: CachingTransport, base_url: str, api_key: str, lib: Any = httpx2) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=base_url, http_client=lib.Client(transport=transport), max_retries=0)


def messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def ask(client: openai.OpenAI, question: str) -> Any:
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages(question))


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call on a thread of its own, all at once; what each returned or raised, in order."""
    outcomes: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int, call: Callable[[], Any]) -> None:
        start.wait(BOUND)
        try:
            outcomes[index] = call()
        except BaseException as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + BOUND
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert stuck == 0, f"{stuck} of {len(threads)} threads did not finish within {BOUND}s"
    return outcomes


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND}s: {what}"
        time.sleep(0.001)  # a bounded poll of state other threads change


def loop_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "llm-cache-loop"]


@pytest.fixture
def no_loop_thread_left() -> Iterator[None]:
    """The test's transports stop their loop threads when closed (none was running before it)."""
    before = set(loop_threads())
    yield
    assert set(loop_threads()) <= before


# -- many threads through one transport ----------------------------------------------------------


@LIBS
def test_many_threads_each_get_their_own_tenants_answer_from_one_upstream_call_per_question(
    fake_provider: RunningFakeProvider, lib: Any, no_loop_thread_left: None
) -> None:
    """12 threads x 12 requests: 3 tenants, JSON and streamed questions, hits and identical misses at
    once. Each (tenant, question) is produced once and every caller of it gets that answer, never
    another tenant's; every stream is read whole and stored whole; `close()` closes every upstream
    connection the threads opened."""
    tenants = ["sk-alice", "sk-bob", "sk-carol"]
    plain = [f"plain question {n}" for n in range(3)]
    streamed = [f"streamed question {n}" for n in range(3)]
    transport = CachingTransport(cache=Cache())
    clients = {tenant: sdk(transport, fake_provider.openai_base_url, tenant, lib) for tenant in tenants}
    plan = random.Random(7)
    schedules = [[(plan.choice(tenants), plan.choice(plain + streamed)) for _ in range(12)] for _ in range(12)]

    def one(tenant: str, question: str) -> tuple[str, str, str, str]:
        client = clients[tenant]
        if question in plain:
            answer = ask(client, question)
            completion = answer.parse()
            return tenant, question, completion.id, completion.choices[0].message.content
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages(question), stream=True))
        return tenant, question, chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    def worker(schedule: list[tuple[str, str]]) -> Callable[[], list[tuple[str, str, str, str]]]:
        return lambda: [one(tenant, question) for tenant, question in schedule]

    try:
        outcomes = in_threads(*(worker(schedule) for schedule in schedules))
    finally:
        transport.close()
    assert proc_figures(os.getpid(), fake_provider.port).connections == 0  # every upstream connection closed
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors == []
    served = [answer for outcome in outcomes for answer in outcome]
    asked = {(tenant, question) for tenant, question, _, _ in served}
    ids = {pair: {answer_id for t, q, answer_id, _ in served if (t, q) == pair} for pair in asked}
    assert all(len(one_id) == 1 for one_id in ids.values())  # one answer per tenant and question
    assert len({next(iter(one_id)) for one_id in ids.values()}) == len(asked)  # no answer served to two tenants
    assert all(text.endswith(question) for _, question, _, text in served)
    assert fake_provider.count(CHAT) == len(asked)


@pytest.mark.parametrize("abandon", ["break", "close", "raise"])
@LIBS
def test_a_stream_abandoned_halfway_stores_nothing_and_its_waiter_leads_anew(
    fake_provider: RunningFakeProvider, lib: Any, abandon: str, no_loop_thread_left: None
) -> None:
    """A caller leaves a stream after its first event (breaks out of the SDK's iterator, closes it,
    or raises in the loop that reads it) while a second thread waits on the same miss: nothing is
    stored, the waiter asks upstream itself at once, and other threads go on meanwhile."""
    store = CountingStore()
    cache = Cache(store=store)
    transport = CachingTransport(cache=cache)
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice", lib)
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages("a long story"), "stream": True}
    fake_provider.break_body_after(PAST_THE_FIRST_EVENT, stall=True)
    waiter: list[Any] = []

    def wait_on_the_same_miss() -> None:
        chunks = list(client.chat.completions.create(**request))
        waiter.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

    def parked() -> None:
        """The first event is read; a second thread waits on this miss; a third asks another question."""
        second.start()
        wait_until(lambda: store.reads == 2, "the second request waits on the first")
        meanwhile.extend(in_threads(lambda: ask(client, "meanwhile, another question")))

    def leave() -> None:
        if abandon == "close":
            stream = client.chat.completions.create(**request)
            next(iter(stream))
            parked()
            stream.close()
        elif abandon == "raise":
            with client.chat.completions.create(**request) as stream:
                for _ in stream:
                    parked()
                    raise LookupError("the consuming loop failed")
        else:
            for _ in client.chat.completions.create(**request):
                parked()
                break  # never closed: dropped when collected, the SDK's stream being a reference cycle
            gc.collect()

    second = threading.Thread(target=wait_on_the_same_miss, daemon=True)
    meanwhile: list[Any] = []
    try:
        (left,) = in_threads(leave)
        second.join(BOUND)
        assert not second.is_alive(), f"the waiter was still waiting after {BOUND}s"
    finally:
        fake_provider.release()
        transport.close()
    assert isinstance(left, LookupError) if abandon == "raise" else left is None
    assert meanwhile[0].headers["x-cache"] == "MISS"
    assert waiter and waiter[0].endswith("a long story")
    assert fake_provider.count(CHAT) == 3  # the abandoned stream, the other question, the waiter leading anew
    assert cache.stats.stored == 2  # the other question's answer and the waiter's, whole; nothing partial


def test_a_stream_the_collector_finalises_on_the_engines_loop_is_settled_there_without_waiting(
    fake_provider: RunningFakeProvider, no_loop_thread_left: None
) -> None:
    """A stream dropped unread is finalised wherever the garbage collector runs, which may be the
    engine's own loop thread (any allocation there may collect, e.g. while an answer is stored): its
    abandonment is handed to the loop there, never waited for, which would wait for ever."""
    cache = Cache()
    transport = CachingTransport(cache=cache)
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice")
    request: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages("dropped on the loop"), "stream": True}
    fake_provider.break_body_after(PAST_THE_FIRST_EVENT, stall=True)
    try:
        held = [client.chat.completions.create(**request)]
        next(iter(held[0]))  # the first event read, the body stalled

        async def collected_here() -> None:
            held.clear()  # the SDK's stream is a reference cycle: only the collector finalises it
            gc.collect()

        loop = transport._loop._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(collected_here(), loop).result(BOUND)  # before: waited on itself
        fake_provider.release()
        raw = client.chat.completions.with_raw_response.create(**request)
        assert raw.headers["x-cache"] == "MISS" and "".join(
            c.choices[0].delta.content or "" for c in raw.parse() if c.choices
        ).endswith("dropped on the loop")
        assert cache.stats.stored == 1  # the second call's whole answer; nothing of the dropped one
    finally:
        fake_provider.release()
        transport.close()


# -- the store down or hung ----------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_a_store_down_or_hung_fails_open_for_every_thread_then_hits_resume(
    fake_provider: RunningFakeProvider, redis_factory: Callable[..., RedisServer], fault: str
) -> None:
    """Redis stopped (connections refused) or paused with SIGSTOP (nothing answers, each call waits
    its 0.25 s timeout) while 8 threads ask: every caller gets its own answer from upstream, the
    store errors are counted, and once Redis is back answers are stored and served again."""
    redis = redis_factory()
    cache = Cache(store=RedisStore(redis.url, prefix="down:", cooldown=0.1))
    transport = CachingTransport(cache=cache)
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice")
    questions = [f"question {n}" for n in range(8)]
    try:
        assert ask(client, "asked before").headers["x-cache"] == "MISS"
        redis.stop() if fault == "stopped" else os.kill(redis.pid or 0, signal.SIGSTOP)
        try:
            answers = in_threads(*(lambda q=question: ask(client, q) for question in questions))
        finally:
            redis.start() if fault == "stopped" else os.kill(redis.pid or 0, signal.SIGCONT)
        texts = [answer.parse().choices[0].message.content for answer in answers]
        assert all(text.endswith(question) for text, question in zip(texts, questions, strict=True))
        assert cache.stats.store_errors > 0
        wait_until(lambda: ask(client, "asked after").headers["x-cache"] == "HIT", "hits once Redis is back")
    finally:
        transport.close()


# -- close() ------------------------------------------------------------------------------------


def test_close_while_threads_are_mid_call_fails_them_at_once_and_leaves_no_loop_thread(
    fake_provider: RunningFakeProvider, no_loop_thread_left: None
) -> None:
    """A worker shutting down closes the transport while one thread's miss is upstream and three wait
    on it: the waiters fail at once instead of hanging, the leader fails too (its connection closed
    under it, or the loop gone when its answer arrives: which comes first is a race), nothing is
    stored, and no loop thread is left."""
    store = CountingStore()
    transport = CachingTransport(cache=Cache(store=store))
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice")
    fake_provider.hold()
    calls = [lambda: ask(client, "held") for _ in range(4)]
    outcomes: list[Any] = []
    mid_call = threading.Thread(target=lambda: outcomes.extend(in_threads(*calls)), daemon=True)
    mid_call.start()
    try:
        fake_provider.wait_for_in_flight(1, BOUND)
        wait_until(lambda: store.reads == 4, "one request leads, three wait on it")
        transport.close()
    finally:
        fake_provider.release()
    mid_call.join(BOUND)
    assert not mid_call.is_alive() and len(outcomes) == 4
    loop_closed = [outcome for outcome in outcomes if isinstance(outcome, RuntimeError) and "closed" in str(outcome)]
    cut = [outcome for outcome in outcomes if isinstance(outcome, openai.APIConnectionError)]
    assert len(loop_closed) >= 3 and len(loop_closed) + len(cut) == 4, outcomes
    assert fake_provider.count(CHAT) == 1 and store.ttls == []  # nothing stored


@LIBS
def test_a_transport_closed_with_one_client_serves_the_next_as_httpx_transports_do(
    fake_provider: RunningFakeProvider, lib: Any, no_loop_thread_left: None
) -> None:
    """A view that opens `with OpenAI(http_client=Client(transport=shared))` per request closes the
    shared transport at the end of each (the SDK closes its client, the client its transport): the
    next request is served, from the cache, as httpx's own transports serve a request after `close()`."""
    transport = CachingTransport(cache=Cache())
    try:
        for expected in ("MISS", "HIT"):
            with sdk(transport, fake_provider.openai_base_url, "sk-alice", lib) as client:
                assert ask(client, "asked in each request").headers["x-cache"] == expected
    finally:
        transport.close()
    assert fake_provider.count(CHAT) == 1


# -- fork() -------------------------------------------------------------------------------------


def asked(client: openai.OpenAI, questions: list[str]) -> list[tuple[str, str]]:
    """(x-cache, answer text) of each question."""
    answers = [ask(client, question) for question in questions]
    return [(a.headers["x-cache"], a.parse().choices[0].message.content) for a in answers]


@LIBS
def test_a_transport_made_before_fork_serves_the_child_on_its_own_loop_and_connections(
    fake_provider: RunningFakeProvider, redis_server: RedisServer, lib: Any
) -> None:
    """gunicorn --preload: the parent built the transport and used it (its loop thread, its Redis
    and upstream connections are open) before the fork. The child, asking at the same time as the
    parent, gets its own answers: it runs a loop and opens connections of its own, and shares the
    parent's entries only through the store."""
    store = RedisStore(redis_server.url, prefix=f"fork-{lib.__name__}:")
    transport = CachingTransport(cache=Cache(store=store))
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice", lib)
    assert ask(client, "asked before the fork").headers["x-cache"] == "MISS"
    questions = [f"child question {n}" for n in range(8)] + ["asked before the fork"]
    try:
        child = ForkedChild(lambda: asked(client, questions))
        in_parent = asked(client, [f"parent question {n}" for n in range(8)])
        in_child = child.result()
    finally:
        transport.close()
    assert isinstance(in_child, list), in_child
    assert [text.endswith(question) for (_, text), question in zip(in_child, questions, strict=True)] == [True] * 9
    assert [outcome for outcome, _ in in_child] == ["MISS"] * 8 + ["HIT"]
    assert all(text.endswith(f"parent question {n}") for n, (_, text) in enumerate(in_parent))


def test_a_fork_while_a_parent_thread_hands_a_call_to_the_loop_does_not_wedge_the_child(
    fake_provider: RunningFakeProvider,
) -> None:
    """A thread of the parent holds the loop thread's lock (it is handing its call to the loop) at the
    very moment another forks: the child has the lock held, by a thread it does not have."""
    transport = CachingTransport(cache=Cache())
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice")
    try:
        assert ask(client, "asked before the fork").headers["x-cache"] == "MISS"
        with transport._loop._lock:  # as a thread inside LoopThread.run does, for a few µs
            child = ForkedChild(lambda: asked(client, ["asked before the fork", "asked in the child"]))
        assert [outcome for outcome, _ in child.result()] == ["HIT", "MISS"]
    finally:
        transport.close()


def test_threads_making_the_first_call_in_a_forked_child_start_one_loop(fake_provider: RunningFakeProvider) -> None:
    """Eight threads of a forked child make their first call at once: one loop thread starts and serves
    them all. Before, each thread that found the parent's loop renewed the lock for itself, and several
    started a loop of their own: the loops not kept, and the connections opened on them, stayed open."""
    transport = CachingTransport(cache=Cache())
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice")

    def first_calls_at_once() -> tuple[list[str], int]:
        calls = [lambda n=n: ask(client, f"child question {n}").headers["x-cache"] for n in range(8)]
        outcomes = [str(outcome) for outcome in in_threads(*calls)]
        return outcomes, sum(thread.name == "llm-cache-loop" for thread in threading.enumerate())

    try:
        assert ask(client, "asked before the fork").headers["x-cache"] == "MISS"
        outcomes, loops = ForkedChild(first_calls_at_once).result()
    finally:
        transport.close()
    assert outcomes == ["MISS"] * 8 and loops == 1


def private_questions_bypass(view: LookupView) -> None:
    """An operator's policy: a question marked private is never stored nor served from the cache."""
    view.bypass = "private" in str(view.request.body)


def test_sync_hooks_run_in_a_forked_child_as_in_its_parent(fake_provider: RunningFakeProvider) -> None:
    """The parent ran a sync hook (its hook threads started) before the fork: in the child the hook
    still runs on every call, so the policy it carries holds there too."""
    cache = Cache(hooks={"before_lookup": [private_questions_bypass]}, hook_timeout=1.0)  # µs of work
    transport = CachingTransport(cache=cache)
    client = sdk(transport, fake_provider.openai_base_url, "sk-alice")
    try:
        assert [outcome for outcome, _ in asked(client, ["private one", "private one"])] == ["BYPASS"] * 2
        in_child = ForkedChild(lambda: asked(client, ["private two", "private two", "public", "public"])).result()
    finally:
        transport.close()
    assert [outcome for outcome, _ in in_child] == ["BYPASS", "BYPASS", "MISS", "HIT"], in_child
