"""Single-flight across pods and within one: how misses on one key wait for one upstream call.

Two pods share a Redis (each a `LocalPod`: its own Cache, single-flight and Redis client), and the
fake provider holds the first pod's upstream call so the others are seen waiting before it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.middleware.stores.conftest import unique_prefix
from tests.middleware.test_distributed import CHAT, LocalPod, redis_pod, second_waiting_on_first, until


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
