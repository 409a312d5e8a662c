"""A private event loop on a daemon thread, so sync callers can drive the async engine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on one background loop; started on first use, stopped by `close()`.

    The sync transport uses it so that one async engine (and one set of async
    store clients) serves sync SDK clients too: one rule, one implementation.
    """

    def __init__(self, name: str = "llm-cache-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """`coroutine`'s result, run on the loop. A caller that stops waiting (a KeyboardInterrupt, its
        `timeout`) cancels it there: left running for nobody, a lookup would lead a miss nobody sends
        (its single-flight slot and lock held until `coalesce_timeout` and `lock_ttl`)."""
        loop = self._loop or self._start()
        running = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return running.result(timeout)
        except BaseException:
            running.cancel()
            raise

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
