"""Many pods, one cache: shared Redis through the engine, with distributed single-flight.

A "pod" is either a separate OS process (`tests.support.pod.Pod`) or, where a test needs to steer
both sides step by step, a second `Cache` in this process: each `Cache` has its own in-process
single-flight and its own Redis client, so two of them meet only in Redis, as two pods do. Every
call goes through the openai SDK and `AsyncCachingTransport` to the fake provider, which holds
upstream answers when a test needs requests to overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest
import redis as syncredis

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from llm_cache.middleware.stores import MemoryStore, RedisClusterStore, RedisStore, TieredStore
from tests.middleware.stores.conftest import SLACK, unique_prefix
from tests.support.pod import Pod, first_to

CHAT = "/chat/completions"
QUESTION = "What is the capital of France?"


class LocalPod:
    """A second pod inside the test process: its own Cache, transport and openai client."""

    def __init__(self, store: Any, base_url: str, **settings: Any) -> None:
        self.cache = Cache(store, **settings)
        http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=self.cache))
        self.client = openai.AsyncOpenAI(
            api_key="sk-pod", base_url=base_url, http_client=http_client, max_retries=0, timeout=30
        )

    @property
    def stats(self) -> Any:
        return self.cache.stats

    async def ask(self, question: str = QUESTION, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """status, x-cache and completion id of one chat completion (an error status is an answer too)."""
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}], extra_headers=headers
            )
        except openai.APIStatusError as error:
            return {"status": error.status_code, "x_cache": error.response.headers.get("x-cache"), "id": None}
        return {"status": raw.status_code, "x_cache": raw.headers.get("x-cache"), "id": raw.parse().id}

    async def close(self) -> None:
        await self.client.close()
        await self.cache.close()


async def until(check: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll `check` until it holds; fail after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline} s")
        await asyncio.sleep(0.005)


def shared_redis(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a child pod finds the shared Redis."""
    if kind == "redis":
        return {"redis_url": request.getfixturevalue("redis_server").url}
    return {"cluster_nodes": request.getfixturevalue("redis_cluster").startup_nodes}


async def store_for(kind: str, request: pytest.FixtureRequest, prefix: str) -> Any:
    """This process's store on the same shared Redis as the child pods."""
    if kind == "redis":
        return RedisStore(request.getfixturevalue("redis_server").url, prefix=prefix, **SLACK)
    if kind == "redis-cluster":
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        return RedisClusterStore(startup_nodes=nodes, prefix=prefix, **SLACK)
    assert kind == "tiered"
    l2 = RedisStore(request.getfixturevalue("redis_server").url, prefix=prefix, **SLACK)
    store = TieredStore(MemoryStore(), l2, channel=f"{prefix}invalidate")
    await store.start()
    return store


def redis_pod(url: str, prefix: str, base_url: str, **settings: Any) -> LocalPod:
    return LocalPod(RedisStore(url, prefix=prefix, **SLACK), base_url, **settings)


def leader_and_waiter(fake_provider: Any, pods: list[Any], redis_server: Any, lock_wait: float) -> list[LocalPod]:
    """Two pods on one Redis prefix: the first to lead, the second to wait at most `lock_wait`."""
    prefix = unique_prefix()
    both = [
        redis_pod(redis_server.url, prefix, fake_provider.openai_base_url),
        redis_pod(redis_server.url, prefix, fake_provider.openai_base_url, lock_wait=lock_wait),
    ]
    pods += both
    return both


@contextlib.asynccontextmanager
async def second_waiting_on_first(
    fake_provider: Any, first: LocalPod, second: LocalPod
) -> AsyncIterator[tuple[asyncio.Future[dict[str, Any]], asyncio.Future[dict[str, Any]]]]:
    """The first pod asks, takes the lock and is held upstream; then the second asks and is seen
    waiting on that lock. Yields both calls; the provider answers once the block is left."""
    fake_provider.hold()
    try:
        leading = asyncio.ensure_future(first.ask())
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
        waiting = asyncio.ensure_future(second.ask())
        await until(lambda: second.stats.lock_waits == 1, 10, "the second pod waiting on the first pod's lock")
        yield leading, waiting
    finally:
        fake_provider.release()


@pytest.fixture
async def pods() -> AsyncIterator[list[Any]]:
    """Pods a test starts (child processes or LocalPods), all closed at the end."""
    started: list[Any] = []
    yield started
    for pod in started:
        await pod.close()


# -- two processes, one cache ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_an_answer_cached_by_one_process_is_a_hit_in_another(
    kind: str, fake_provider: Any, pods: list[Any], request: pytest.FixtureRequest
) -> None:
    prefix = f"two-processes-{kind}:"  # fixed: the same keys land on the same Cluster nodes every run
    store = await store_for(kind, request, prefix)
    await store.clear()
    await store.close()
    questions = [f"Question {i}: what is {i} squared?" for i in range(30)]
    where = shared_redis(kind, request)

    first = await Pod.start(fake_provider.openai_base_url, prefix, questions, **where)
    pods.append(first)
    written = await first.done()
    second = await Pod.start(fake_provider.openai_base_url, prefix, questions, **where)
    pods.append(second)
    read = await second.done()

    assert [a["x_cache"] for a in written["answers"]] == ["MISS"] * 30
    assert [a["x_cache"] for a in read["answers"]] == ["HIT"] * 30
    assert [a["id"] for a in read["answers"]] == [a["id"] for a in written["answers"]]
    assert fake_provider.count(CHAT) == 30  # the second process never reached the provider
    if kind == "redis-cluster":
        for node in request.getfixturevalue("redis_cluster").nodes:
            with syncredis.Redis(host=node.host, port=node.port) as raw:
                assert any(raw.scan_iter(match=f"{prefix}*")), f"no entry on the node at port {node.port}"


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_twenty_concurrent_identical_misses_in_two_processes_make_one_upstream_call(
    kind: str, fake_provider: Any, pods: list[Any], request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix()
    fake_provider.hold()  # the first upstream call waits until the other process is seen waiting
    try:
        for _ in range(2):
            pod = await Pod.start(
                fake_provider.openai_base_url, prefix, [QUESTION], repeat=10, **shared_redis(kind, request)
            )
            pods.append(pod)
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 60)  # one process got the lock, went upstream
        await first_to("waiting", pods)  # ... and the other one is waiting on its lock
        assert fake_provider.in_flight == 1
    finally:
        fake_provider.release()
    results = [await pod.done() for pod in pods]

    answers = [answer for result in results for answer in result["answers"]]
    assert [answer.get("status") for answer in answers] == [200] * 20
    assert len({answer["id"] for answer in answers}) == 1
    assert len({answer["content"] for answer in answers}) == 1
    assert sorted(answer["x_cache"] for answer in answers) == ["HIT"] * 19 + ["MISS"]
    assert fake_provider.count(CHAT) == 1
    locks = sorted((r["stats"]["lock_waits"], r["stats"]["lock_hits"]) for r in results)
    assert locks == [(0, 0), (1, 1)]  # one process led; the other waited once and was answered from Redis


# -- the lock protocol, step by step (two pods in this process) -----------------------------------


@pytest.mark.parametrize("kind", ["redis", "redis-cluster", "tiered"])
async def test_a_pod_that_finds_the_key_locked_waits_and_is_answered_from_the_shared_store(
    kind: str, fake_provider: Any, pods: list[Any], request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix()
    first = LocalPod(await store_for(kind, request, prefix), fake_provider.openai_base_url)
    second = LocalPod(await store_for(kind, request, prefix), fake_provider.openai_base_url)
    pods += [first, second]
    async with second_waiting_on_first(fake_provider, first, second) as calls:
        pass
    led, waited = await asyncio.gather(*calls)

    assert (led["x_cache"], waited["x_cache"]) == ("MISS", "HIT")
    assert waited["id"] == led["id"]
    assert fake_provider.count(CHAT) == 1
    assert (second.stats.lock_waits, second.stats.lock_hits) == (1, 1)


async def test_a_sync_client_waits_on_another_pods_lock_and_is_answered_from_the_shared_store(
    fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    prefix = unique_prefix()
    first = redis_pod(redis_server.url, prefix, fake_provider.openai_base_url)
    pods.append(first)
    cache = Cache(RedisStore(redis_server.url, prefix=prefix, **SLACK))
    transport = CachingTransport(cache=cache)
    client = openai.OpenAI(
        api_key="sk-pod",
        base_url=fake_provider.openai_base_url,
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
        timeout=30,
    )

    def ask_sync() -> dict[str, Any]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}]
        )
        return {"status": raw.status_code, "x_cache": raw.headers.get("x-cache"), "id": raw.parse().id}

    try:
        fake_provider.hold()
        try:
            leading = asyncio.ensure_future(first.ask())
            await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 10)
            waiting = asyncio.ensure_future(asyncio.to_thread(ask_sync))
            await until(lambda: cache.stats.lock_waits == 1, 10, "the sync client waiting on the first pod's lock")
        finally:
            fake_provider.release()
        led, waited = await asyncio.gather(leading, waiting)
    finally:
        client.close()

    assert (led["x_cache"], waited["x_cache"]) == ("MISS", "HIT")
    assert waited["id"] == led["id"]
    assert fake_provider.count(CHAT) == 1
    assert cache.stats.lock_hits == 1


async def test_a_leader_whose_upstream_call_fails_releases_the_lock_and_a_waiter_goes_upstream_at_once(
    fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    first, second = leader_and_waiter(fake_provider, pods, redis_server, lock_wait=60)
    fake_provider.fail_next(1, status=500)
    async with second_waiting_on_first(fake_provider, first, second) as calls:
        pass
    async with asyncio.timeout(15):  # far below lock_wait: the waiter did not sit out its wait
        failed, retried = await asyncio.gather(*calls)

    assert (failed["status"], retried["status"], retried["x_cache"]) == (500, 200, "MISS")
    assert fake_provider.count(CHAT) == 2
    assert (second.stats.lock_waits, second.stats.lock_hits) == (1, 0)


@pytest.mark.parametrize(
    ("settings", "headers"),
    [({"distributed_lock": False}, None), ({}, {"cache-control": "no-store"})],
    ids=["distributed-lock-off", "no-store-request"],
)
async def test_pods_do_not_wait_on_each_other_when_the_lock_is_off_or_the_answer_would_not_be_stored(
    settings: dict[str, Any], headers: dict[str, str] | None, fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    prefix = unique_prefix()
    both = [redis_pod(redis_server.url, prefix, fake_provider.openai_base_url, **settings) for _ in range(2)]
    pods += both
    fake_provider.hold()
    try:
        asks = [asyncio.ensure_future(pod.ask(headers=headers)) for pod in both]
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 2, 10)  # both pods went upstream
    finally:
        fake_provider.release()
    answers = await asyncio.gather(*asks)

    assert [answer["status"] for answer in answers] == [200, 200]
    assert [pod.stats.lock_waits for pod in both] == [0, 0]
    with syncredis.Redis.from_url(redis_server.url) as raw:
        assert not any(raw.scan_iter(match=f"{prefix}lock:*"))


async def test_a_leader_that_learns_its_answer_will_not_be_stored_releases_the_lock_before_its_stream_ends(
    fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    first, second = leader_and_waiter(fake_provider, pods, redis_server, lock_wait=600)
    prefix = first.cache.store.prefix
    fake_provider.send_headers({"cache-control": "no-store"})
    fake_provider.break_body_after(20, stall=True)  # the first pod's stream: headers, 20 bytes, then held open

    async def stream_from_first() -> None:
        stream = await first.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        async for _ in stream:
            pass

    streaming = asyncio.ensure_future(stream_from_first())
    try:
        async with asyncio.timeout(30):  # far below lock_wait: the waiter did not wait for the stream's end
            await asyncio.to_thread(fake_provider.wait_for_count, 1, CHAT, 10)
            fake_provider.hold()  # the second pod's call, once it reaches the provider, stays there
            waiting = asyncio.ensure_future(second.ask())
            await asyncio.to_thread(fake_provider.wait_for_count, 2, CHAT, 25)
        assert not streaming.done()  # the first pod's stream is still open
        streaming.cancel()  # its caller leaves: the call ends, and must not release the second pod's lock
        with contextlib.suppress(BaseException):
            await streaming
        with syncredis.Redis.from_url(redis_server.url) as raw:
            assert len(list(raw.scan_iter(match=f"{prefix}lock:*"))) == 1  # the second pod's, still held
    finally:
        fake_provider.release()
    async with asyncio.timeout(15):
        answer = await waiting

    assert (answer["status"], answer["x_cache"]) == (200, "MISS")
    assert second.stats.lock_hits == 0  # (whether it asked before or after the release is the loop's choice)
    with syncredis.Redis.from_url(redis_server.url) as raw:
        assert not any(raw.scan_iter(match=f"{prefix}lock:*"))


async def test_a_blocking_leader_whose_body_outgrows_max_response_bytes_releases_the_lock_before_its_stream_ends(
    fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    """The blocking caller reads its stream in its own thread, where the Recorder learns from a body
    chunk that the answer is past `max_response_bytes`: the lock is released on the loop that took it."""
    prefix = unique_prefix()
    waiter = redis_pod(redis_server.url, prefix, fake_provider.openai_base_url, lock_wait=600)
    pods.append(waiter)
    cache = Cache(RedisStore(redis_server.url, prefix=prefix, **SLACK), max_response_bytes=10)
    client = openai.OpenAI(
        api_key="sk-pod",
        base_url=fake_provider.openai_base_url,
        http_client=httpx2.Client(transport=CachingTransport(cache=cache)),
        max_retries=0,
        timeout=30,
    )
    fake_provider.break_body_after(20, stall=True)  # the blocking leader's stream: held open after 20 bytes

    def stream_blocking() -> None:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        with contextlib.suppress(openai.APIError, httpx2.HTTPError):  # cut when the provider lets go
            for _ in stream:
                pass

    streaming = asyncio.ensure_future(asyncio.to_thread(stream_blocking))
    try:
        async with asyncio.timeout(30):  # far below lock_wait
            await asyncio.to_thread(fake_provider.wait_for_count, 1, CHAT, 10)
            answer = await waiter.ask()
        assert not streaming.done()  # the blocking leader's stream is still open
    finally:
        fake_provider.release()
        await streaming
        client.close()
        await cache.close()

    assert (answer["status"], answer["x_cache"]) == (200, "MISS")
    assert fake_provider.count(CHAT) == 2


# -- a lock that is never released ----------------------------------------------------------------


async def killed_lock_holder(fake_provider: Any, redis_server: Any, prefix: str, **settings: Any) -> None:
    """A child pod that took the lock on QUESTION, went upstream and was killed there."""
    fake_provider.hold()
    try:
        holder = await Pod.start(
            fake_provider.openai_base_url, prefix, [QUESTION], redis_url=redis_server.url, settings=settings
        )
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 1, 60)
        await holder.close()  # SIGKILL: no unlock
    finally:
        fake_provider.release()
    with syncredis.Redis.from_url(redis_server.url) as raw:
        assert len(list(raw.scan_iter(match=f"{prefix}lock:*"))) == 1  # the dead pod's lock is still there


async def test_a_waiter_goes_upstream_after_lock_wait_when_the_lock_holder_died(
    fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    prefix = unique_prefix()
    await killed_lock_holder(fake_provider, redis_server, prefix)  # its lock lives lock_ttl = 30 s
    waiter = redis_pod(redis_server.url, prefix, fake_provider.openai_base_url, lock_wait=0.5)
    pods.append(waiter)

    async with asyncio.timeout(15):
        answer = await waiter.ask()

    assert (answer["status"], answer["x_cache"]) == (200, "MISS")
    assert (waiter.stats.lock_waits, waiter.stats.lock_hits) == (1, 0)
    assert fake_provider.count(CHAT) == 2


async def test_a_waiter_takes_over_when_a_dead_holders_lock_expires(
    fake_provider: Any, pods: list[Any], redis_server: Any
) -> None:
    prefix = unique_prefix()
    await killed_lock_holder(fake_provider, redis_server, prefix, lock_ttl=3)
    waiter = redis_pod(redis_server.url, prefix, fake_provider.openai_base_url, lock_wait=60)
    pods.append(waiter)

    async with asyncio.timeout(20):  # far below lock_wait: the expiry ended the wait
        answer = await waiter.ask()

    assert (answer["status"], answer["x_cache"]) == (200, "MISS")
    assert (waiter.stats.lock_waits, waiter.stats.lock_hits) == (1, 0)
    assert fake_provider.count(CHAT) == 2
    again = await waiter.ask()
    assert (again["x_cache"], again["id"]) == ("HIT", answer["id"])  # the taker stored its answer


# -- Redis failing ----------------------------------------------------------------------------------


async def test_redis_dying_while_a_pod_waits_on_a_lock_sends_the_waiter_upstream(
    fake_provider: Any, pods: list[Any], redis_factory: Any
) -> None:
    server = redis_factory()
    prefix = unique_prefix()
    first = redis_pod(server.url, prefix, fake_provider.openai_base_url)
    second = redis_pod(server.url, prefix, fake_provider.openai_base_url, lock_wait=60)
    pods += [first, second]
    async with second_waiting_on_first(fake_provider, first, second) as calls:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(fake_provider.wait_for_in_flight, 2, 15)  # the waiter gave up on the dead store
    led, waited = await asyncio.gather(*calls)

    assert (led["status"], waited["status"]) == (200, 200)
    assert waited["x_cache"] == "MISS"
    assert second.stats.store_errors >= 1
    assert first.stats.store_errors >= 1  # its write and its unlock failed, and were counted


async def test_redis_killed_during_a_load_run_fails_no_request_and_hits_resume_within_5_s(
    fake_provider: Any, pods: list[Any], redis_factory: Any
) -> None:
    server = redis_factory()
    pod = LocalPod(RedisStore(server.url, prefix=unique_prefix()), fake_provider.openai_base_url)  # default timeouts
    pods.append(pod)
    questions = [f"load question {i}" for i in range(5)]
    served: list[tuple[float, float, int, str | None]] = []  # (started, finished, status, x-cache) of every call
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = await pod.ask(questions[n % len(questions)])
                served.append((started, time.monotonic(), answer["status"], answer["x_cache"]))
            except Exception as error:
                failures.append(error)
            n += 1

    def hits_since(moment: float) -> int:
        return sum(1 for _, finished, _, x_cache in served if finished > moment and x_cache == "HIT")

    clients = [asyncio.ensure_future(client(n)) for n in range(8)]
    try:
        await until(lambda: hits_since(0) >= 50, 10, "the load being served from Redis")
        await asyncio.to_thread(server.stop)
        down = time.monotonic()
        upstream_before = fake_provider.count(CHAT)
        await until(
            lambda: pod.stats.store_errors > 0 and fake_provider.count(CHAT) >= upstream_before + 50,
            10,
            "the load going upstream while Redis is down",
        )
        await asyncio.to_thread(server.start)  # same port, empty
        back = time.monotonic()
        await until(lambda: hits_since(back) > 0, 5.0, "hits resuming after Redis came back")
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert failures == []
    assert {status for _, _, status, _ in served} == {200}
    during_outage = [x_cache for started, finished, _, x_cache in served if down < started and finished < back]
    assert during_outage and "HIT" not in during_outage
