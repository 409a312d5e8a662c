"""One client per event loop: a connection pool belongs to the loop that opened it.

The async transport, the sync transport's background loop and every `asyncio.run` in a test each
get their own client. The map is weakly keyed by loop, but a client whose connections still refer
to its loop keeps that loop alive: `close()` is what releases them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ._fork import renew_after_fork

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[object]]) -> None:
        self._make = make
        self._close = close
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread making a client."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def get(self) -> T:
        """The running loop's client, made on first use in that loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            with self._lock:
                client = self._clients.get(loop)
                if client is None:
                    client = self._clients[loop] = self._make()
        return client

    def current(self) -> T | None:
        """The running loop's client if it has one."""
        return self._clients.get(asyncio.get_running_loop())

    async def close(self) -> None:
        """Close every loop's client: this loop's directly, other live loops' on their own loop."""
        with self._lock:
            clients = list(self._clients.items())
            self._clients.clear()
        current = asyncio.get_running_loop()
        for loop, client in clients:
            if loop is current:
                await self._close(client)
            elif loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(_closing(self._close, client), loop)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(future), timeout=2)
            # a client whose loop is gone holds sockets of a dead loop; dropping it is all we can do


async def _closing(close: Callable[[T], Awaitable[object]], client: T) -> None:
    await close(client)
