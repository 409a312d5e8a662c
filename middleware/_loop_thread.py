"""A private event loop on a daemon thread, so sync callers can drive the async engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._fork import renew_after_fork

T = TypeVar("T")

CLOSE_DEADLINE = 5.0
"""How long `close()` waits for the calls it cancels to end, then for the thread to stop."""


class LoopClosed(RuntimeError):
    """The loop thread was closed: before this call, or while it waited on the loop."""


class LoopThread:
    """Runs coroutines on one background loop; started on first use, stopped for good by `close()`.

    The sync transport uses it so that one async engine (and one set of async
    store clients) serves sync SDK clients too: one rule, one implementation.

    A forked child inherits the loop but not its thread: its first call starts a loop of its own,
    so it opens store connections of its own too (`PerLoop`) and never reads the parent's replies.
    Its lock is renewed at the fork (`_fork.py`), so threads making the first call at once start one.
    `close()` cancels the calls still on the loop: their callers get `LoopClosed` at once, instead
    of waiting forever on a loop that no longer runs.
    """

    def __init__(self, name: str = "llm-cache-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        """The process the loop runs in."""
        self._closed = False
        self._lock = threading.Lock()
        """Held while a call is handed to the loop, so none is handed over once `close()` began."""
        self._settling: set[asyncio.Task[Any]] = set()
        """Work `settle` handed to the loop from its own thread (held here until done)."""
        renew_after_fork(self)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """`coroutine`'s result, run on the loop. A caller that stops waiting (a KeyboardInterrupt, its
        `timeout`) cancels it there: left running for nobody, a lookup would lead a miss nobody sends
        (its single-flight slot and lock held until `coalesce_timeout` and `lock_ttl`)."""
        future = self._submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            if self._closed:
                raise LoopClosed(f"{self._name} was closed while this call waited on it") from None
            raise
        except BaseException:
            future.cancel()
            raise

    def settle(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run `coroutine` to its end, as `run` does; called on the loop's own thread (a sync stream that
        the garbage collector finalises while the loop runs: any allocation there may collect), hand it to
        the loop instead, since waiting there would wait for ever on a loop that cannot run."""
        loop = self._loop
        if loop is not None and threading.current_thread() is self._thread:
            task = loop.create_task(coroutine)
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return
        self.run(coroutine)

    def _renew_after_fork(self) -> None:
        """In a forked child: the parent's copy of the lock may be held by a thread only the parent has.
        Renewed once, at the fork: renewed by each caller finding the parent's loop, it let threads
        making the first call at once each take a lock of their own and start a loop each."""
        self._lock = threading.Lock()

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coroutine.close()
                raise LoopClosed(f"{self._name} is closed")
            loop = self._loop
            if loop is None or self._pid != os.getpid():
                loop = self._start()
            return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def _start(self) -> asyncio.AbstractEventLoop:
        """A new loop and its thread (a forked child's inherited loop is left as it is: its thread
        runs in the parent only)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        thread.start()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()
        return loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            mine = self._pid == os.getpid()
            self._loop = self._thread = None
            self._closed = True
        if loop is None or thread is None or not mine:
            return
        if thread is not threading.current_thread():
            cancelling = asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError):  # a call deaf to it: stopped anyway
                cancelling.result(CLOSE_DEADLINE + 1)
        loop.call_soon_threadsafe(loop.stop)
        if thread is threading.current_thread():
            return
        thread.join(timeout=CLOSE_DEADLINE)
        if not thread.is_alive():
            loop.close()


async def _cancel_the_rest() -> None:
    """Cancel every other task on this loop and wait (bounded) for them to end."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_DEADLINE)
