"""Single-flight across pods and within one: how misses on one key wait for one upstream call.

Two pods share a Redis (each a `LocalPod`: its own Cache, single-flight and Redis client), and the
fake provider holds the first pod's upstream call so the others are seen waiting before it answers.
Where a test acts between two of a pod's steps (another pod answers, Redis goes away), that pod's
store is a `SteppedRedis`, which holds its next read or lock attempt until the test lets it go.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import orjson
import pytest
import redis as syncredis

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from llm_cache.middleware import _singleflight as singleflight
from llm_cache.middleware._entry import Entry
from llm_cache.middleware._types import CacheRequest, Lookup, Outcome
from llm_cache.middleware.stores import DiskStore, RedisStore
from tests.middleware.stores.conftest import SLACK, unique_prefix
from tests.middleware.test_distributed import CHAT, QUESTION, LocalPod, redis_pod, second_waiting_on_first, until
from tests.middleware.test_engine import completion
from tests.support.races import raced
from tests.support.stores import CountingStore


class Held:
    """One store call held before it is sent: `reached` once a pod makes it, sent on `resume()`."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.resumed = asyncio.Event()

    async def wait(self) -> None:
        async with asyncio.timeout(10):
            await self.reached.wait()

    def resume(self) -> None:
        self.resumed.set()


class SteppedRedis(RedisStore):
    """A RedisStore that notes when each read is made and can hold its next `get` or `try_lock`."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix=prefix, **SLACK)
        self.reads: list[float] = []
        self._held: dict[str, Held] = {}

    def hold(self, operation: str) -> Held:
        held = self._held[operation] = Held()
        return held

    async def _step(self, operation: str) -> None:
        held = self._held.pop(operation, None)
        if held is not None:
            held.reached.set()
            await held.resumed.wait()

    async def get(self, key: str) -> bytes | None:
        self.reads.append(time.monotonic())
        await self._step("get")
        return await super().get(key)

    async def try_lock(self, key: str, ttl: float) -> str | None:
        await self._step("try_lock")
        return await super().try_lock(key, ttl)


Pair = Callable[..., tuple[LocalPod, LocalPod, SteppedRedis]]


@pytest.fixture
async def pair(fake_provider: Any) -> AsyncIterator[Pair]:
    """Makes two pods on the Redis at a URL, the second with these settings and a `SteppedRedis`;
    all closed at the end."""
    made: list[LocalPod] = []

    def make(url: str, **settings: Any) -> tuple[LocalPod, LocalPod, SteppedRedis]:
        prefix = unique_prefix()
        store = SteppedRedis(url, prefix)
        first = redis_pod(url, prefix, fake_provider.openai_base_url)
        second = LocalPod(store, fake_provider.openai_base_url, **settings)
        made.extend((first, second))
        return first, second, store

    yield make
    for pod in made:
        await pod.close()


async def about_to_lock(pod: LocalPod, store: SteppedRedis) -> tuple[asyncio.Future[dict[str, Any]], Held]:
    """The pod's miss, started and held just before it tries to lock the key (it read no entry)."""
    locking = store.hold("try_lock")
    asking = asyncio.ensure_future(pod.ask())
    await locking.wait()
    return asking, locking


def locks_left(url: str, store: RedisStore) -> list[bytes]:
    with syncredis.Redis.from_url(url) as raw:
        return list(raw.scan_iter(match=f"{store.lock_prefix}*"))


def store_errors(pod: LocalPod) -> dict[str, int]:
    """operation -> store errors counted by the pod's telemetry."""
    counted = pod.cache.telemetry.snapshot().get("llm_cache_store_errors", {})
    return {operation: n for (_, operation), n in counted.items()}


def coalesced_waits(pod: LocalPod) -> int:
    return int(pod.cache.telemetry.snapshot().get("llm_cache_coalesced_waits", {}).get((), 0))


@pytest.fixture
async def two_pods(fake_provider: Any, redis_server: Any) -> AsyncIterator[tuple[LocalPod, LocalPod]]:
    """Two pods on one shared Redis, closed at the end."""
    prefix = unique_prefix()
    first = redis_pod(redis_server.url, prefix, fake_provider.openai_base_url)
    second = redis_pod(redis_server.url, prefix, fake_provider.openai_base_url)
    yield first, second
    await first.close()
    await second.close()


async def test_misses_coalesced_behind_a_pod_waiting_on_another_pods_lock_share_the_entry_it_finds(
    fake_provider: Any, two_pods: tuple[LocalPod, LocalPod]
) -> None:
    first, second = two_pods
    fake_provider.hold()
    try:
        leading = asyncio.ensure_future(first.ask())
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
        # both read the store before the first pod can write: one leads (and waits on the lock), one joins it
        waiting = [asyncio.ensure_future(second.ask()) for _ in range(2)]
        await until(lambda: second.stats.lock_waits == 1, 10, "the second pod waiting on the first pod's lock")
    finally:
        fake_provider.release()
    async with asyncio.timeout(15):  # far below coalesce_timeout: the joined miss did not sit out its wait
        led, *answers = await asyncio.gather(leading, *waiting)

    assert [answer["x_cache"] for answer in answers] == ["HIT", "HIT"]
    assert {answer["id"] for answer in answers} == {led["id"]}
    assert fake_provider.count(CHAT) == 1
    assert (second.stats.lock_hits, second.stats.coalesced) == (1, 1)


async def test_a_miss_cancelled_while_waiting_on_another_pods_lock_is_cancelled_and_the_next_miss_leads_anew(
    fake_provider: Any, two_pods: tuple[LocalPod, LocalPod]
) -> None:
    first, second = two_pods
    async with second_waiting_on_first(fake_provider, first, second) as (leading, cancelled):
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # the next miss leads anew (it waits on the lock itself), not behind the cancelled one's flight
        retried = asyncio.ensure_future(second.ask())
        await until(lambda: second.stats.lock_waits == 2, 10, "the next miss waiting on the first pod's lock")
    async with asyncio.timeout(15):
        led, answer = await asyncio.gather(leading, retried)

    assert (answer["x_cache"], answer["id"]) == ("HIT", led["id"])
    assert fake_provider.count(CHAT) == 1
    assert second.stats.lock_hits == 1
    assert second.stats.store_errors == 0  # the cancelled miss held no lock, and released none


@asynccontextmanager
async def waiting_on_a_held_leader(
    fake_provider: Any, pod: LocalPod, store: CountingStore, waiters: int
) -> AsyncIterator[tuple[asyncio.Future[dict[str, Any]], list[asyncio.Future[dict[str, Any]]]]]:
    """The pod's leading miss, held by the provider, and `waiters` identical misses waiting on it;
    the provider answers once the block ends."""
    fake_provider.hold()
    try:
        leading = asyncio.ensure_future(pod.ask())
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
        joined = [asyncio.ensure_future(pod.ask()) for _ in range(waiters)]
        await until(lambda: store.reads == 1 + waiters, 10, "the later misses reading the store, then waiting")
        yield leading, joined
    finally:
        fake_provider.release()


async def test_identical_misses_in_one_process_are_answered_by_the_first_ones_call_and_counted_as_coalesced(
    fake_provider: Any,
) -> None:
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url)
    async with waiting_on_a_held_leader(fake_provider, pod, store, 2) as (leading, joined):
        pass
    async with asyncio.timeout(15):
        led, *answers = await asyncio.gather(leading, *joined)
    await pod.close()

    assert [(answer["x_cache"], answer["id"]) for answer in answers] == [("HIT", led["id"])] * 2
    assert fake_provider.count(CHAT) == 1
    assert (pod.stats.coalesced, coalesced_waits(pod)) == (2, 2)


class ReadThenHeld(DiskStore):
    """A DiskStore whose next read, once armed (`held`), is made and then held before it returns: a
    miss whose read found nothing while another call was still writing."""

    held: Held | None = None

    async def get(self, key: str) -> bytes | None:
        value = await super().get(key)
        held, self.held = self.held, None
        if held is not None:
            held.reached.set()
            await held.resumed.wait()
        return value


@pytest.mark.parametrize("others", [0, 3], ids=["alone", "after-more-landings-than-are-kept"])
async def test_a_miss_whose_store_read_missed_a_write_the_leader_finished_meanwhile_is_served_its_answer(
    fake_provider: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, others: int
) -> None:
    """A sequential repeat can read the store just before the first call's write lands (the disk
    and Redis stores read on another thread or server) and find no flight left to wait on once the
    read returns; it reads the store again instead of going upstream a second time, also when so
    many other keys landed meanwhile that its key's landing is no longer remembered."""
    monkeypatch.setattr(singleflight, "_LANDED_KEPT", 2)
    store = ReadThenHeld(str(tmp_path))
    pod = LocalPod(store, fake_provider.openai_base_url)
    held = Held()
    fake_provider.hold()
    try:
        leading = asyncio.ensure_future(pod.ask())
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
        store.held = held
        late = asyncio.ensure_future(pod.ask())
        await held.wait()  # its read found nothing and has not returned yet
    finally:
        fake_provider.release()
    async with asyncio.timeout(15):
        led = await leading  # stored, and its flight landed
        for n in range(others):
            await pod.ask(f"another question {n}")
    held.resume()
    async with asyncio.timeout(15):
        answer = await late
    await pod.close()

    assert (answer["x_cache"], answer["id"]) == ("HIT", led["id"])
    assert fake_provider.count(CHAT) == 1 + others


async def test_the_misses_waiting_on_a_flight_are_counted_while_they_wait_and_no_longer(fake_provider: Any) -> None:
    """`stats.coalesce_waiting` is a gauge: the misses now waiting on another's call in this process."""
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url)
    async with waiting_on_a_held_leader(fake_provider, pod, store, 3) as (leading, joined):
        await until(lambda: pod.stats.coalesce_waiting == 3, 10, "three misses waiting on the leader's call")
    async with asyncio.timeout(15):
        await asyncio.gather(leading, *joined)
    await pod.close()

    assert (pod.stats.coalesce_waiting, pod.stats.coalesced) == (0, 3)


async def test_when_the_leading_miss_is_cancelled_one_of_its_waiters_leads_the_others(fake_provider: Any) -> None:
    """A leader whose caller gives up brings no answer: its waiters do not all go upstream at once
    (one caller cancelling would multiply the calls by the waiters); the first leads, the rest wait on it."""
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url)
    async with waiting_on_a_held_leader(fake_provider, pod, store, 3) as (leading, joined):
        leading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leading
        await asyncio.to_thread(fake_provider.wait_for_count, 2, CHAT)
    async with asyncio.timeout(15):
        answers = await asyncio.gather(*joined)
    await pod.close()

    assert sorted(answer["x_cache"] for answer in answers) == ["HIT", "HIT", "MISS"]
    assert len({answer["id"] for answer in answers}) == 1
    assert fake_provider.count(CHAT) == 2  # the cancelled call, and the one its waiters shared
    assert pod.stats.coalesced == 2


async def test_when_the_leading_misss_answer_is_not_stored_its_waiters_go_upstream_together(fake_provider: Any) -> None:
    """A leader whose caller was answered (an error here) but stored nothing has no answer for its
    waiters: each goes upstream at once, none waits for another's call (queued behind each other,
    the last would wait as many calls as there are waiters)."""
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url)
    fake_provider.fail_next(1, 500)
    async with waiting_on_a_held_leader(fake_provider, pod, store, 2) as (leading, joined):
        fake_provider.release()  # the leader is answered with the 500; the waiters' calls are held
        fake_provider.hold()
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 2, 10)
    async with asyncio.timeout(15):
        led, *answers = await asyncio.gather(leading, *joined)
    await pod.close()

    assert (led["status"], [(answer["status"], answer["x_cache"]) for answer in answers]) == (500, [(200, "MISS")] * 2)
    assert fake_provider.count(CHAT) == 3


async def test_when_the_leading_stream_is_closed_early_one_of_its_waiters_leads_the_others(fake_provider: Any) -> None:
    """The same when the leader's caller closes its stream before the end (the answer is incomplete)."""
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url)
    fake_provider.break_body_after(40, stall=True)  # the leader's stream stops after 40 bytes
    messages = [{"role": "user", "content": QUESTION}]  # (asking for usage: the stream is passed on as it comes)
    body = {"model": "gpt-4o-mini", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    http = pod.client._client  # the pod's httpx2 client, through its caching transport
    headers = {"authorization": "Bearer sk-pod"}
    try:
        async with http.stream(
            "POST", f"{fake_provider.openai_base_url}/chat/completions", json=body, headers=headers
        ) as leading:
            assert leading.headers["x-cache"] == "MISS"
            chunks = leading.aiter_raw()  # (held: an iterator dropped now would end the stream now)
            await anext(chunks)
            joined = [asyncio.ensure_future(pod.ask()) for _ in range(3)]
            await until(lambda: store.reads == 4, 10, "the later misses reading the store, then waiting")
    finally:
        fake_provider.release()
    async with asyncio.timeout(15):
        answers = await asyncio.gather(*joined)
    await pod.close()

    assert sorted(answer["x_cache"] for answer in answers) == ["HIT", "HIT", "MISS"]
    assert len({answer["id"] for answer in answers}) == 1
    assert fake_provider.count(CHAT) == 2


FIRST_EVENT = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"P"}}]}\n\n'
GROWN_PAST_1_KIB = b": " + b"x" * 2048 + b"\n\n"
"""A comment line past the 1 KiB bound the leader's cache keeps (`max_response_bytes=1024`)."""


class LeaderThenAnswers:
    """An upstream whose first call is answered with `leaders_stream()`, every later one with a JSON answer."""

    def __init__(self, leaders_stream: Callable[[], Any]) -> None:
        self.leaders_stream = leaders_stream
        self.calls = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.calls += 1
        if self.calls == 1:
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=self.leaders_stream())
        return httpx2.Response(200, json=completion(self.calls))


async def test_waiters_on_a_leader_whose_answer_will_not_be_stored_go_upstream_before_it_ends() -> None:
    """Once the leader's answer is known not to be stored (here: its stream grew past
    `max_response_bytes`; an upstream's `no-store`, a lying length), its waiters have nothing to wait
    for and go upstream at once. Before, they waited for the leader's whole body: a long generation,
    or a stream that never ends, held them until it ended or `coalesce_timeout` passed."""
    grown, ended = asyncio.Event(), asyncio.Event()

    async def leaders_stream() -> AsyncIterator[bytes]:
        yield FIRST_EVENT
        await grown.wait()
        yield GROWN_PAST_1_KIB
        await ended.wait()  # (the test never lets it end before the waiters are answered)
        yield b"data: [DONE]\n\n"

    upstream = LeaderThenAnswers(leaders_stream)
    store = CountingStore()
    cache = Cache(store, max_response_bytes=1024)
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(upstream))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"authorization": "Bearer sk-pod"}
    streamed = {**body, "stream": True}
    async with (
        httpx2.AsyncClient(transport=transport, base_url="http://llm.test") as http,
        http.stream("POST", "/v1/chat/completions", json=streamed, headers=headers) as lead,
    ):
        chunks = lead.aiter_raw()
        await anext(chunks)
        joined = [asyncio.ensure_future(http.post("/v1/chat/completions", json=body, headers=headers)) for _ in "ab"]
        await until(lambda: store.reads == 3, 10, "the later misses reading the store, then waiting")
        grown.set()
        await anext(chunks)
        try:
            async with asyncio.timeout(15):  # while the leader's stream has not ended
                answers = await asyncio.gather(*joined)
        finally:
            ended.set()

    assert [answer.headers["x-cache"] for answer in answers] == ["MISS", "MISS"]
    assert (upstream.calls, cache.stats.stored) == (3, 2)


def test_a_blocking_callers_leader_frees_its_waiters_from_the_thread_that_reads_its_stream() -> None:
    """The same through the blocking transport, whose caller reads the leader's stream in its own
    thread: the waiters (on the engine's loop) are freed from there, safely. A future set from another
    thread than its loop's wakes no one: the waiters slept until the loop woke for something else."""
    grown, ended = threading.Event(), threading.Event()

    def leaders_stream() -> Iterator[bytes]:
        yield FIRST_EVENT
        grown.wait(15)
        yield GROWN_PAST_1_KIB
        ended.wait(15)
        yield b"data: [DONE]\n\n"

    upstream = LeaderThenAnswers(leaders_stream)
    store = CountingStore()
    cache = Cache(store, max_response_bytes=1024)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"authorization": "Bearer sk-pod"}
    answers: list[str] = []
    with (
        httpx2.Client(transport=CachingTransport(cache=cache, inner=httpx2.MockTransport(upstream))) as http,
        http.stream(
            "POST", "http://llm.test/v1/chat/completions", json={**body, "stream": True}, headers=headers
        ) as lead,
    ):
        chunks = lead.iter_raw()
        next(chunks)
        waiter = threading.Thread(
            target=lambda: answers.append(
                http.post("http://llm.test/v1/chat/completions", json=body, headers=headers).headers["x-cache"]
            ),
            daemon=True,
        )
        waiter.start()
        end = time.monotonic() + 10
        while store.reads < 2:  # the waiter has read the store, then waits on the leader
            assert time.monotonic() < end, "the later miss never reached the store"
            time.sleep(0.005)
        grown.set()
        next(chunks)  # (read here, in this thread: the Recorder learns the answer will not be stored)
        waiter.join(15)  # while the leader's stream has not ended
        ended.set()
        assert not waiter.is_alive(), "the waiter was not freed"
        assert b"".join(chunks).endswith(b"[DONE]\n\n")
    assert (answers, upstream.calls) == (["MISS"], 2)


async def test_a_leader_whose_answer_is_never_read_holds_later_misses_back_once_at_most(fake_provider: Any) -> None:
    """A caller that drops its miss's answer unread (its code failed after the status check) never ends
    that call: its flight never lands. The first miss that waits `coalesce_timeout` for it gives it up,
    so later misses do not wait on it again. Before, the flight stayed for the life of the process and
    every miss of the key that was not stored (`no-store`, an upstream error) waited the whole timeout."""
    timeout = 3.0
    pod = LocalPod(CountingStore(), fake_provider.openai_base_url, coalesce_timeout=timeout)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}
    http = pod.client._client  # the pod's httpx2 client, through its caching transport
    url, headers = f"{fake_provider.openai_base_url}/chat/completions", {"authorization": "Bearer sk-pod"}
    request = http.build_request("POST", url, json=body, headers=headers)
    dropped = await http.send(request, stream=True)  # the head only: the body is never read nor closed
    assert dropped.headers["x-cache"] == "MISS"
    no_store = {"cache-control": "no-store"}
    waits = []
    for _ in range(2):
        started = time.monotonic()
        async with asyncio.timeout(4 * timeout):
            answer = await pod.ask(headers=no_store)
        waits.append(time.monotonic() - started)
        assert answer["x_cache"] == "MISS"
    await pod.close()

    assert waits[0] >= timeout  # the first waited for the leader, as long as it may
    assert waits[1] < timeout  # the next did not wait for it again
    assert fake_provider.count(CHAT) == 3


async def lead_and_never_read(pod: LocalPod, base_url: str) -> None:
    """A miss through `pod` whose caller reads the head and drops the answer: that call never ends."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": QUESTION}]}
    http = pod.client._client  # the pod's httpx2 client, through its caching transport
    headers = {"authorization": "Bearer sk-pod"}
    request = http.build_request("POST", f"{base_url}/chat/completions", json=body, headers=headers)
    assert (await http.send(request, stream=True)).headers["x-cache"] == "MISS"


async def test_the_miss_that_gives_up_an_overdue_leader_leads_the_misses_after_it(fake_provider: Any) -> None:
    """The miss whose wait for a leader never done ran out takes the lead itself: a miss arriving while
    its call is in flight waits on it and is served its answer, instead of going upstream too."""
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url, coalesce_timeout=1.0)
    await lead_and_never_read(pod, fake_provider.openai_base_url)
    fake_provider.hold()
    try:
        overdue = asyncio.ensure_future(pod.ask())  # waits out coalesce_timeout, then leads
        await asyncio.to_thread(fake_provider.wait_for_count, 2, CHAT)
        later = asyncio.ensure_future(pod.ask())
        await until(lambda: store.reads == 3, 10, "the later miss reading the store, then waiting")
    finally:
        fake_provider.release()
    async with asyncio.timeout(15):
        led, answer = await asyncio.gather(overdue, later)
    await pod.close()

    assert (led["x_cache"], answer["x_cache"], answer["id"]) == ("MISS", "HIT", led["id"])
    assert fake_provider.count(CHAT) == 2


async def test_every_miss_waiting_on_an_overdue_leader_is_answered(fake_provider: Any) -> None:
    """Two misses whose waits for a leader never done run out together: the first leads anew, and the
    other, finding the lead taken, is answered too (it goes upstream itself: it has waited long enough)."""
    store = CountingStore()
    pod = LocalPod(store, fake_provider.openai_base_url, coalesce_timeout=0.5)
    await lead_and_never_read(pod, fake_provider.openai_base_url)
    async with asyncio.timeout(15):
        answers = await asyncio.gather(pod.ask(), pod.ask())
    await pod.close()

    assert [(answer["status"], answer["x_cache"]) for answer in answers] == [(200, "MISS")] * 2


async def test_a_pod_that_locks_the_key_just_after_another_pod_stored_it_serves_that_answer_and_frees_the_lock(
    fake_provider: Any, pair: Pair, redis_server: Any
) -> None:
    first, second, store = pair(redis_server.url)
    asking, locking = await about_to_lock(second, store)
    led = await first.ask()  # meanwhile the first pod locks it, answers, stores and unlocks
    locking.resume()
    async with asyncio.timeout(10):
        answer = await asking

    assert (led["x_cache"], answer["x_cache"], answer["id"]) == ("MISS", "HIT", led["id"])
    assert fake_provider.count(CHAT) == 1
    assert (second.stats.lock_waits, second.stats.lock_hits, coalesced_waits(second)) == (0, 0, 1)
    assert locks_left(redis_server.url, store) == []


async def test_a_miss_cancelled_while_it_holds_the_lock_releases_it(
    fake_provider: Any, pair: Pair, redis_server: Any
) -> None:
    first, second, store = pair(redis_server.url)
    asking, locking = await about_to_lock(second, store)
    looking = store.hold("get")
    locking.resume()
    await looking.wait()  # it took the lock and looks once more for an entry
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking

    assert locks_left(redis_server.url, store) == []
    led = await first.ask()
    assert (led["x_cache"], first.stats.lock_waits) == ("MISS", 0)


LOCK_WAIT = 1.5


async def test_a_waiter_polls_at_most_a_tenth_of_a_second_apart_until_lock_wait_then_goes_upstream(
    fake_provider: Any, pair: Pair, redis_server: Any
) -> None:
    first, second, store = pair(redis_server.url, lock_wait=LOCK_WAIT)
    fake_provider.hold()
    try:
        leading = asyncio.ensure_future(first.ask())
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
        waiting = asyncio.ensure_future(second.ask())
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 2, 15)  # it gave up waiting: upstream itself
    finally:
        fake_provider.release()
    async with asyncio.timeout(15):
        led, waited = await asyncio.gather(leading, waiting)

    assert (led["x_cache"], waited["x_cache"]) == ("MISS", "MISS")
    assert (second.stats.lock_waits, second.stats.lock_hits) == (1, 0)
    lookup, *polls = store.reads
    gaps = [later - earlier for earlier, later in zip(store.reads, polls, strict=False)]
    assert polls[-1] - lookup > LOCK_WAIT - 0.2  # the last poll comes within one delay of lock_wait
    assert max(gaps) < 1.0  # 0.1 s at most; the room is for a loaded machine (a stalled loop), still under 1.1 s
    assert len(polls) <= 25  # a delay doubling from 5 ms: 19 polls in 1.5 s, fewer when the machine is slow


async def test_a_store_error_while_locking_the_key_sends_the_miss_upstream_and_is_counted_as_a_lock_error(
    fake_provider: Any, pair: Pair, redis_factory: Any
) -> None:
    server = redis_factory()
    _, second, store = pair(server.url)
    asking, locking = await about_to_lock(second, store)
    await asyncio.to_thread(server.stop)
    locking.resume()
    async with asyncio.timeout(15):
        answer = await asking

    assert (answer["status"], answer["x_cache"]) == (200, "MISS")
    assert fake_provider.count(CHAT) == 1
    assert store_errors(second) == {"lock": 1, "set": 1}  # then its answer could not be stored either


async def test_redis_going_away_while_a_pod_waits_on_a_lock_is_counted_by_each_pod_under_the_failed_operation(
    fake_provider: Any, pair: Pair, redis_factory: Any
) -> None:
    server = redis_factory()
    first, second, store = pair(server.url)
    async with second_waiting_on_first(fake_provider, first, second) as calls:
        polling = store.hold("get")
        await polling.wait()  # the waiter's next poll, not sent yet
        await asyncio.to_thread(server.stop)
        polling.resume()
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 2, 15)  # the waiter went upstream itself
    async with asyncio.timeout(15):
        led, waited = await asyncio.gather(*calls)

    assert [(answer["status"], answer["x_cache"]) for answer in (led, waited)] == [(200, "MISS")] * 2
    assert store_errors(second) == {"get": 1, "set": 1}
    assert store_errors(first) == {"set": 1, "unlock": 1}  # the leader's write, then its unlock


def test_landings_on_the_loops_of_several_threads_are_each_numbered_and_none_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cache shared by blocking and async clients (or two blocking transports) lands flights on each
    transport's own loop thread at once. The landing numbers are one table for them all: a landing
    that raised (a key another thread evicted first, a table resized under an iteration) left its
    waiters unanswered until `coalesce_timeout` and its caller with an error after its answer was
    stored, and a number lost between two threads let a miss skip the store read it needed."""
    monkeypatch.setattr(singleflight, "_LANDED_KEPT", 1)  # (every landing evicts: the widest window)
    cache = Cache(CountingStore())
    flights = cache._flights
    entry = Entry("k", time.time(), 200, b"{}", False)
    threads, each = 4, 20_000

    async def land(name: str) -> None:
        loop = asyncio.get_running_loop()
        for n in range(each):
            flights.land(singleflight.Flight(f"{name}{n}", loop), entry)
            flights._landed_since(f"{name}{n}", n)

    assert raced(lambda name: asyncio.run(land(name)), "abcd"[:threads]) == []
    assert flights.landings == threads * each
    assert len(flights._landed) == 1


def test_the_misses_waiting_on_flights_on_the_loops_of_several_threads_are_counted_back_to_none() -> None:
    """`stats.coalesce_waiting` is a gauge that every transport sharing the cache moves from its own
    loop's thread. Each wait adds one and takes it back; unguarded, on an interpreter that may switch
    threads between the read and the write (CPython 3.10's eval loop, a free-threaded build), two
    threads' changes crossed and one was lost, and the gauge drifted for good (misses said to be
    waiting when none was). CPython 3.11's GIL build switches threads only at calls, function entries
    and loop back-edges: there this race cannot fail, and the test keeps the gauge exact where it can."""
    cache = Cache(CountingStore())
    flights = cache._flights
    each, waiters = 2_000, 3

    async def wait(name: str) -> None:
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": name}]})
        request = cache.prepare("POST", "/v1/chat/completions", "", {"content-type": "application/json"}, body)
        assert isinstance(request, CacheRequest)
        request.key = f"key {name}"  # (as the engine keys it: each thread's flights on a key of its own)
        for _ in range(each):
            leader = await flights.join(request, Lookup(Outcome.MISS))
            waiting = [asyncio.create_task(flights.join(request, Lookup(Outcome.MISS))) for _ in range(waiters)]
            await asyncio.sleep(0)  # (a yield, not a wait: each waiter runs to its wait on the leader's flight)
            flights.land(leader.flight, None)
            assert [lookup.outcome for lookup in await asyncio.gather(*waiting)] == [Outcome.MISS] * waiters

    assert raced(lambda name: asyncio.run(wait(name)), "ab") == []
    assert cache.stats.coalesce_waiting == 0
