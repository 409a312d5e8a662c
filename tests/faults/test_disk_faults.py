"""The disk store's filesystem full, and read-only, under a mixed load through a real gateway process.

The gateway runs in a private mount namespace (see `tests/support/gateway_process.py`) where its
cache directory is either a small tmpfs that a filler file makes full (real ENOSPC, from SQLite and
from diskcache's value files alike) or a read-only bind mount of a directory an earlier gateway
filled (real EROFS). The rule: the cache fails open (every request is answered from upstream,
none fails), each failure is counted in `store_errors`, and a full disk works again once space is
freed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.gateway_process import GatewayProcess
from tests.support.load import MixedLoad

from .conftest import RunningLoad, openai_upstream, until

TMPFS_BYTES = 8 * 1024 * 1024


async def test_a_full_disk_fails_open_is_counted_and_recovers(
    tmp_path: Path, fake_provider: RunningFakeProvider, gateway_process: Callable[..., GatewayProcess]
) -> None:
    directory = tmp_path / "cache"
    gateway = gateway_process(disk_config(directory, fake_provider), tmpfs=(directory, TMPFS_BYTES))
    running = RunningLoad(MixedLoad(gateway.url, label="full"))
    try:
        await running.advanced(hits=40, what="hits before the disk fills")
        assert await store_errors(gateway) == 0
        await asyncio.to_thread(gateway.fill)
        await running.advanced(requests=60, what="answers while the disk is full")
        await until(lambda: _more(store_errors(gateway), 0), "store errors counted")
        await asyncio.to_thread(gateway.unfill)
        await running.advanced(hits=40, what="hits once space is freed")
    finally:
        tally = await running.finish()
    assert tally.failures == [], tally.failures[:5]


async def test_a_read_only_cache_directory_fails_open_and_is_counted(
    tmp_path: Path, fake_provider: RunningFakeProvider, gateway_process: Callable[..., GatewayProcess]
) -> None:
    directory = tmp_path / "cache"
    writer = gateway_process(disk_config(directory, fake_provider), name="writer")
    running = RunningLoad(MixedLoad(writer.url, label="ro"))
    await running.advanced(hits=20, what="entries written while the directory was writable")
    assert (await running.finish()).failures == []
    writer.stop()

    gateway = gateway_process(disk_config(directory, fake_provider), name="reader", read_only=directory)
    running = RunningLoad(MixedLoad(gateway.url, label="ro"))
    try:
        await running.advanced(requests=80, what="answers from a read-only directory")
        await until(lambda: _more(store_errors(gateway), 0), "store errors counted")
    finally:
        tally = await running.finish()
    assert tally.failures == [], tally.failures[:5]


def disk_config(directory: Path, provider: RunningFakeProvider) -> dict[str, Any]:
    return {"cache": {"store": {"type": "disk", "directory": str(directory)}}, "upstreams": openai_upstream(provider)}


async def store_errors(gateway: GatewayProcess) -> int:
    return int((await asyncio.to_thread(gateway.stats))["store_errors"])


async def _more(count: object, than: int) -> bool:
    return bool(await count > than)  # type: ignore[operator]
