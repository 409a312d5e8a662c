"""Fixtures for the router tests: fake providers on free ports, a fake clock, a router factory."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from llm_cache.router import Router

from .fakes import FakeProvider, free_port


class FakeClock:
    """A monotonic clock that only moves when a (fake) sleep or the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture(scope="session")
def _servers() -> Iterator[dict[str, FakeProvider]]:
    servers = {
        "a": FakeProvider("a").start(),
        "b": FakeProvider("b").start(),
        "c": FakeProvider("c").start(),
        "claude": FakeProvider("claude", family="anthropic").start(),
    }
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture
def fakes(_servers: dict[str, FakeProvider]) -> dict[str, FakeProvider]:
    for s in _servers.values():
        s.reset()
    return _servers


@pytest.fixture
def dead_url() -> str:
    """A 127.0.0.1 URL nothing listens on: connection refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_router(clock: FakeClock) -> Any:
    def make(config: Any, **kw: Any) -> Router:
        kw.setdefault("clock", clock)
        kw.setdefault("sleep", clock.sleep)
        kw.setdefault("async_sleep", clock.async_sleep)
        kw.setdefault("rng", random.Random(7))
        return Router(config, **kw)

    return make


def dep(fake: FakeProvider | str, model: str = "real-model", **kw: Any) -> dict[str, Any]:
    base = fake if isinstance(fake, str) else f"{fake.url}/v1"
    name = kw.pop("id", None) or (fake if isinstance(fake, str) else fake.name)
    return {"id": name, "model": model, "api_base": base, "api_key": f"key-{name}", **kw}
