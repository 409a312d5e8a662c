"""`llm-cache serve --workers 2` on one port: the worker processes share one cache through Redis.

Both workers accept on the same listening socket, so which one answers a connection is the
kernel's choice. Each test first opens keep-alive connections until it holds one (or two) to each
worker, told apart by the `pid` that `/cache/stats` reports, and then speaks to a chosen worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.middleware.stores.conftest import unique_prefix
from tests.support.gateway_process import ADMIN_KEY, GatewayProcess

pytestmark = pytest.mark.timeout(180)

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CALLER = {"authorization": "Bearer sk-workers"}
FIND_DEADLINE = 30.0
"""Seconds to find connections to both workers (the second one may still be starting)."""


def chat(question: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]}


def store_config(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    prefix = unique_prefix()
    if kind == "redis":
        return {"type": "redis", "url": request.getfixturevalue("redis_server").url, "prefix": prefix}
    nodes = request.getfixturevalue("redis_cluster").startup_nodes
    return {"type": "redis-cluster", "startup_nodes": [f"{host}:{port}" for host, port in nodes], "prefix": prefix}


@pytest.fixture(params=["redis", "redis-cluster"])
def gateway(request: pytest.FixtureRequest, fake_provider: Any, tmp_path: Path) -> Iterator[GatewayProcess]:
    """`serve` with two workers on a shared Redis (or Redis Cluster), in front of the fake provider."""
    config = {
        "cache": {"store": store_config(request.param, request)},
        "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}},
        "server": {"workers": 2, "timeout_keep_alive": 120},
    }
    process = GatewayProcess(config, tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


class Connection:
    """One keep-alive connection to the gateway, so every request on it reaches the same worker."""

    def __init__(self, url: str) -> None:
        limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=120)
        self.client = httpx2.AsyncClient(base_url=url, limits=limits, timeout=30)

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/cache/stats", headers=ADMIN)
        response.raise_for_status()
        return dict(response.json())

    async def ask(self, question: str) -> tuple[str, str]:
        """x-cache and completion id of one chat completion."""
        response = await self.client.post("/v1/chat/completions", json=chat(question), headers=CALLER)
        assert response.status_code == 200, response.text
        return response.headers["x-cache"], response.json()["id"]


@pytest.fixture
async def connections(gateway: GatewayProcess) -> AsyncIterator[Callable[[int], Any]]:
    """`await find(n)`: {pid: [n connections to that worker]} for both workers."""
    opened: list[Connection] = []

    async def find(per_worker: int) -> dict[int, list[Connection]]:
        by_worker: dict[int, list[Connection]] = {}
        end = time.monotonic() + FIND_DEADLINE
        while len(by_worker) < 2 or any(len(found) < per_worker for found in by_worker.values()):
            if time.monotonic() > end:
                pytest.fail(f"connections to two workers not found in {FIND_DEADLINE} s: {list(by_worker)}")
            connection = Connection(gateway.url)
            opened.append(connection)
            found = by_worker.setdefault((await connection.stats())["pid"], [])
            if len(found) < per_worker:
                found.append(connection)
        assert len(by_worker) == 2
        return by_worker

    yield find
    for connection in opened:
        await connection.client.aclose()


async def test_a_miss_on_one_worker_is_a_hit_on_the_other(connections: Any, fake_provider: Any) -> None:
    first, second = (found[0] for found in (await connections(1)).values())

    outcome, answered = await first.ask("What is the capital of France?")
    assert outcome == "MISS"
    outcome, replayed = await second.ask("What is the capital of France?")

    assert (outcome, replayed) == ("HIT", answered)
    assert fake_provider.count("/chat/completions") == 1
    assert (await first.stats())["misses"] == 1 and (await second.stats())["hits"] == 1


async def test_identical_misses_on_both_workers_make_one_upstream_call(connections: Any, fake_provider: Any) -> None:
    leader, (waiter, watcher) = (await connections(2)).values()
    leader = leader[0]
    fake_provider.hold()
    try:
        leading = asyncio.ensure_future(leader.ask("Why is the sky blue?"))
        await fake_provider.wait_for_in_flight_async(1, timeout=10)
        waiting = asyncio.ensure_future(waiter.ask("Why is the sky blue?"))
        end = time.monotonic() + 10
        while (await watcher.stats())["lock_waits"] < 1:  # the other worker waits on the leader's lock
            assert time.monotonic() < end, "the second worker never waited on the first one's lock"
    finally:
        fake_provider.release()

    (lead_outcome, lead_id), (wait_outcome, wait_id) = await asyncio.gather(leading, waiting)

    assert lead_outcome == "MISS" and wait_outcome == "HIT" and wait_id == lead_id
    assert fake_provider.count("/chat/completions") == 1
    assert (await watcher.stats())["lock_hits"] == 1
