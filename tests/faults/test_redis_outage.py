"""Redis stopped, paused and restarted under a mixed load through a real gateway process.

The gateway (`llm-cache serve`, Redis store with its default 0.25 s timeouts and circuit breaker)
sits in front of the fake provider; a private `redis-server` is stopped and started again on the
same port, then frozen with SIGSTOP and thawed with SIGCONT, while six clients keep asking hot
and new prompts, as JSON and as streams. The rule: the cache fails open, so no client request
fails, every answer is the right one, store errors are counted, and hits come back once Redis does.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from llm_cache.middleware.stores import StoreError
from llm_cache.middleware.stores.redis import RedisStore
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.gateway_process import GatewayProcess
from tests.support.load import MixedLoad
from tests.support.servers import redis_command

from .conftest import RunningLoad, openai_upstream, until


async def store_errors(gateway: GatewayProcess) -> int:
    return int((await asyncio.to_thread(gateway.stats))["store_errors"])


async def test_redis_outages_under_load_fail_no_request_and_hits_resume(
    redis_factory: Callable[..., Any],
    fake_provider: RunningFakeProvider,
    gateway_process: Callable[..., GatewayProcess],
) -> None:
    redis = redis_factory()
    gateway = gateway_process(
        {
            "cache": {"store": {"type": "redis", "url": redis.url, "prefix": "faults:"}},
            "upstreams": openai_upstream(fake_provider),
        }
    )
    running = RunningLoad(MixedLoad(gateway.url, label="redis"))
    try:
        await running.advanced(hits=60, what="hits before any fault")

        # 1. stopped: connections refused, the breaker opens, requests go upstream
        errors = await store_errors(gateway)
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(redis.wait_down)
        await running.advanced(requests=60, what="answers while Redis is stopped")
        assert await store_errors(gateway) > errors

        # 2. restarted on the same port, empty: entries are stored again and served
        await asyncio.to_thread(redis.start)
        await running.advanced(hits=60, what="hits after Redis restarted")

        # 3. paused: the socket stays open and nothing answers (each call hits its timeout)
        errors = await store_errors(gateway)
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            await running.advanced(requests=60, what="answers while Redis is paused")
            await until(lambda: _more(store_errors(gateway), errors), "store errors counted during the pause")
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        await running.advanced(hits=60, what="hits after Redis resumed")
    finally:
        tally = await running.finish()
    assert tally.failures == [], tally.failures[:5]
    outcomes = tally.summary()["outcomes"]
    assert outcomes.get("HIT/json") and outcomes.get("HIT/stream"), outcomes  # both forms served from Redis
    assert outcomes.get("MISS/json") and outcomes.get("MISS/stream"), outcomes


async def _more(count: Any, than: int) -> bool:
    return bool(await count > than)


# -- distributed locks across a pause: none is left behind for its TTL ---------------------------------
# A lock nobody releases makes every miss on its key, in every pod, wait `lock_wait` seconds.


@pytest.fixture
def paused_redis(redis_factory: Callable[..., Any]) -> Any:
    redis = redis_factory()
    yield redis
    os.kill(redis.pid, signal.SIGCONT)  # never leave a frozen server behind a failed assertion


async def test_a_lock_whose_taking_went_unanswered_is_released_when_redis_is_back(paused_redis: Any) -> None:
    store = RedisStore(paused_redis.url, prefix="orphans:", timeout=0.25)
    try:
        assert await store.ping()  # a connection is open: the SET itself is what goes unanswered
        os.kill(paused_redis.pid, signal.SIGSTOP)
        with pytest.raises(StoreError):
            await store.try_lock("k", 30)  # the SET waits in the paused server's socket buffer
        os.kill(paused_redis.pid, signal.SIGCONT)
        await until(lambda: redis_command(paused_redis.port, "EXISTS", "orphans:lock:k") == b":1\r\n", "late SET")
        assert await store.try_lock("k", 30) is not None
    finally:
        await store.close()


async def test_a_lock_whose_release_failed_is_released_when_redis_is_back(paused_redis: Any) -> None:
    store = RedisStore(paused_redis.url, prefix="orphans:", timeout=0.25, failure_threshold=1, cooldown=0.1)
    try:
        token = await store.try_lock("k", 30)
        assert token is not None
        os.kill(paused_redis.pid, signal.SIGSTOP)
        with pytest.raises(StoreError):
            await store.get("other")  # times out: the breaker opens
        with pytest.raises(StoreError):
            await store.unlock("k", token)  # failed fast, never sent
        os.kill(paused_redis.pid, signal.SIGCONT)
        await until(lambda: store.breaker.state != "open", "the breaker's cool-off")
        assert redis_command(paused_redis.port, "EXISTS", "orphans:lock:k") == b":1\r\n"
        assert await store.try_lock("k", 30) is not None
    finally:
        await store.close()
