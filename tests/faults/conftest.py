"""Shared pieces of the fault-injection suite: a gateway process factory and a load running beside the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.gateway_process import GatewayProcess
from tests.support.load import MixedLoad, Tally

PHASE_DEADLINE = 30.0


async def until(check: Callable[[], Any], what: str, deadline: float = PHASE_DEADLINE) -> None:
    """Poll `check` (sync, or async when it returns an awaitable) until true; fail after `deadline` s."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            pytest.fail(f"{what} did not happen within {deadline:.0f}s", pytrace=False)
        await asyncio.sleep(0.02)  # polling interval, not synchronisation


def openai_upstream(provider: RunningFakeProvider, **options: Any) -> dict[str, Any]:
    return {"openai": {"base_url": provider.openai_base_url, **options}}


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start `llm-cache serve` children for one test; each is killed (bounded) at the end."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any], name: str = "gateway", **options: Any) -> GatewayProcess:
        process = GatewayProcess(config, tmp_path / name, **options).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


class RunningLoad:
    """A `MixedLoad` running as a task next to the test; `finish()` stops it and returns the tally."""

    def __init__(self, load: MixedLoad) -> None:
        self.load = load
        self.tally: Tally = load.tally
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(load.run(self._stop))

    async def advanced(self, requests: int = 0, hits: int = 0, what: str = "the load to advance") -> None:
        """Wait until `requests` more answers and `hits` more hits than now have come back."""
        want_requests, want_hits = self.tally.requests + requests, self.tally.hits + hits
        await until(lambda: self.tally.requests >= want_requests and self.tally.hits >= want_hits, what)

    async def finish(self) -> Tally:
        self._stop.set()
        async with asyncio.timeout(PHASE_DEADLINE):
            return await self._task
