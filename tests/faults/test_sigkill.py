"""The gateway killed with SIGKILL while it writes to the disk store; restarted on the same directory.

A gateway process (`llm-cache serve`, disk store) takes a write-heavy load: new chat prompts (small
entries, kept inside SQLite) and wide embeddings (entries over diskcache's 32 KiB threshold,
kept in value files). It is killed with SIGKILL while answers are being stored, three
times, and started again on the same directory each time. Then every request ever sent is asked
again: whatever is served from the cache must be, byte for byte, the answer the upstream gives to
that request (the fake provider's answers are deterministic apart from a counter in `id`).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson

from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.gateway_process import GatewayProcess

from .conftest import openai_upstream, until

KILLS = 3
WORKERS = 6
HEADERS = {"authorization": "Bearer sk-kill", "content-type": "application/json"}
DIMENSIONS = 4096  # one embedding this wide is an entry of ~40 KiB, stored in a value file
_CHAT_ID = re.compile(rb'"id":"chatcmpl-fake\d+"')


def chat(serial: int) -> tuple[str, bytes]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"kill question {serial}"}]}
    return "/v1/chat/completions", orjson.dumps(body)


def embeddings(serial: int) -> tuple[str, bytes]:
    body = {"model": "text-embedding-3-large", "input": f"kill text {serial}", "dimensions": DIMENSIONS}
    return "/v1/embeddings", orjson.dumps(body)


async def write_until_killed(gateway: GatewayProcess, sent: list[tuple[str, bytes]], serials: Any) -> None:
    """New requests from WORKERS clients until the gateway dies; transport errors then are expected."""
    dead = asyncio.Event()

    async def worker(client: httpx2.AsyncClient) -> None:
        while not dead.is_set():
            serial = next(serials)
            request = embeddings(serial) if serial % 3 == 0 else chat(serial)
            sent.append(request)
            try:
                await client.post(request[0], content=request[1], headers=HEADERS)
            except httpx2.HTTPError:
                dead.set()  # killed: stop writing

    async def kill_while_storing() -> None:
        stored = (await asyncio.to_thread(gateway.stats))["stored"]
        await until(lambda: _stored_more(gateway, stored + 20), "answers stored before the kill")
        gateway.kill(signal.SIGKILL)  # the load keeps writing: stores are in flight
        dead.set()

    async with httpx2.AsyncClient(base_url=gateway.url, timeout=30) as client:
        await asyncio.gather(kill_while_storing(), *(worker(client) for _ in range(WORKERS)))


async def _stored_more(gateway: GatewayProcess, than: int) -> bool:
    return int((await asyncio.to_thread(gateway.stats))["stored"]) >= than


async def test_sigkill_during_disk_writes_never_leaves_a_corrupt_entry_to_serve(
    tmp_path: Path, fake_provider: RunningFakeProvider, gateway_process: Callable[..., GatewayProcess]
) -> None:
    config = {
        "cache": {"store": {"type": "disk", "directory": str(tmp_path / "cache")}},
        "upstreams": openai_upstream(fake_provider),
    }
    gateway = gateway_process(config)
    sent: list[tuple[str, bytes]] = []
    serials = itertools.count()
    for _ in range(KILLS):
        await write_until_killed(gateway, sent, serials)
        gateway.start()  # same port, same directory

    hits: Counter[str] = Counter()
    async with (
        httpx2.AsyncClient(base_url=gateway.url, timeout=30) as through,
        httpx2.AsyncClient(base_url=fake_provider.url, timeout=30) as direct,
    ):
        for path, body in dict.fromkeys(sent):  # each distinct request once, in the order sent
            answer = await through.post(path, content=body, headers=HEADERS)
            assert answer.status_code == 200, answer.text
            if answer.headers["x-cache"] != "HIT":
                continue
            hits[path] += 1
            upstream = await direct.post(path, content=body, headers=HEADERS)
            assert same_answer(answer.content, upstream.content), (path, answer.content[:300])
    assert sum(hits.values()) >= 20 * KILLS, hits  # what was stored before each kill survived it
    assert hits["/v1/embeddings"] and hits["/v1/chat/completions"], hits  # value files and SQLite rows
    stats = await asyncio.to_thread(gateway.stats)
    assert stats["invalid_entries"] == 0, stats


def same_answer(cached: bytes, upstream: bytes) -> bool:
    """Byte equality, once the fake provider's per-response counter in a chat `id` is aligned."""
    served = _CHAT_ID.search(cached)
    if served is not None:
        upstream = _CHAT_ID.sub(served.group(0).replace(b"\\", b"\\\\"), upstream, count=1)
    return cached == upstream
