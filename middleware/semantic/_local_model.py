"""A local model (an embedder, a cross-encoder) loaded once and called on threads of its own, a few
calls at a time.

A model call cannot be stopped once it runs: a lookup that times out stops waiting, but the thread
goes on computing. Run on the event loop's default executor, such calls would pile up behind a model
slower than its timeout, and starve every other `to_thread` of the process (the disk store, token
refreshes). So `LocalModel` runs them on its own daemon threads (one by default: a CPU model gains
nothing from more), and at most `max_in_flight` calls are running or waiting at once: one more is
refused at once (`ModelBusy`) and never runs. A waiting call whose caller gave up (a timeout, a
cancellation) is dropped when its turn comes, without running. A thread idle for `idle` seconds
ends, so a model dropped without `close()` is freed as it was with the default executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

logger = logging.getLogger("llm_cache.middleware")

T = TypeVar("T")

FIRST_USE = "on first use (`await cache.start()` loads it at start-up)"
DEFAULT_MAX_IN_FLIGHT = 64
"""Calls running or waiting on one local model. MiniLM embeds a prompt in about 10 ms on a CPU, so a
full queue waits about 0.6 s, under the 2 s lookup timeout: a burst of concurrent misses is still
looked up, while behind a model stuck past its timeout the 65th caller is refused at once."""

_Call = tuple["Future[Any]", Callable[[], Any]]


class ModelBusy(RuntimeError):
    """The local model already had `max_in_flight` calls running or waiting: this one was refused and
    never runs (the semantic lookup is a miss, counted as `semantic_busy`)."""


def load_offline(kind: str, name: str, when: str, build: Callable[[], Any]) -> Any:
    """`build()` a local model with the Hugging Face hub off (`HF_HUB_OFFLINE=1`), logging when it
    starts and how long it took: a model takes seconds to load, and a caller may be waiting."""
    logger.info("semantic cache: loading the %s %s %s", kind, name, when)
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = build()
    logger.info("semantic cache: %s loaded in %.1f s", kind, time.perf_counter() - started)
    return model


class LocalModel:
    """The model `build()` makes (`kind` and `name` for the log), loaded on first use or by `start`."""

    def __init__(
        self,
        kind: str,
        name: str,
        build: Callable[[], Any],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        threads: int = 1,
        idle: float = 60.0,
    ) -> None:
        if max_in_flight < 1 or threads < 1 or idle <= 0:
            raise ValueError("max_in_flight and threads must be at least 1, idle positive")
        self.kind = kind
        self.name = name
        self.max_in_flight = max_in_flight
        self.threads = threads
        self.idle = idle
        self._build = build
        self._model: Any = None
        self._loading = threading.Lock()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self, when: str = FIRST_USE) -> Any:
        """The model, built now by the calling thread if it is not yet (once, whoever asks first)."""
        with self._loading:
            if self._model is None:
                self._model = load_offline(self.kind, self.name, when, self._build)
            return self._model

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(model, *args)` on the model's thread; `ModelBusy` at once when it is full."""
        return await self._submit(lambda: work(self.load(), *args), refuse=True)

    async def start(self) -> None:
        """Load the model on its own thread, waiting behind the calls already there (never refused)."""
        await self._submit(lambda: self.load("at start-up"), refuse=False)

    def close(self) -> None:
        """Let the threads end once the calls already waiting are done (at most `max_in_flight`); a
        later call starts new threads."""
        with self._lock:
            calls, workers = self._calls, self._workers
            self._calls, self._workers = queue.SimpleQueue(), []
        for _ in workers:
            calls.put(None)

    def _submit(self, work: Callable[[], T], refuse: bool) -> asyncio.Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if refuse and self._in_flight >= self.max_in_flight:
                raise ModelBusy(f"{self.name} has {self._in_flight} calls running or waiting (max_in_flight)")
            self._in_flight += 1
            if len(self._workers) < self.threads:
                worker = threading.Thread(target=self._work, args=(self._calls,), daemon=True)
                worker.name = f"llm-cache {self.name}"
                self._workers.append(worker)
                worker.start()
            self._calls.put((future, work))
        return asyncio.wrap_future(future)  # a caller that gives up cancels `future`: its turn is skipped

    def _work(self, calls: queue.SimpleQueue[_Call | None]) -> None:
        while (call := self._next(calls)) is not None:
            future, work = call
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(work())
                    except BaseException as error:  # the caller's to see, as an executor's would be
                        future.set_exception(error)
            finally:
                self._done()

    def _next(self, calls: queue.SimpleQueue[_Call | None]) -> _Call | None:
        """The next call, or None when this thread should end: closed, or idle (then it leaves the
        workers under the lock that `_submit` queues under, so no call is left without a thread)."""
        while True:
            try:
                return calls.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:
                    if calls.empty():
                        me = threading.current_thread()
                        if me in self._workers:
                            self._workers.remove(me)
                        return None

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1


class RunsLocally:
    """What the classes around a `LocalModel` (`self._local`) share: its limit, loading it early,
    letting its threads go."""

    _local: LocalModel

    @property
    def max_in_flight(self) -> int:
        return self._local.max_in_flight

    def warm_up(self) -> None:
        """Load the model now, on the calling thread."""
        self._local.load("at start-up")

    async def start(self) -> None:
        """Load the model on its own thread (`SemanticCache.start` calls this, so the first request
        does not wait for it)."""
        await self._local.start()

    async def aclose(self) -> None:
        """Let the model's threads end once the calls waiting are done (`SemanticCache.close` calls this)."""
        self._local.close()


__all__ = ["DEFAULT_MAX_IN_FLIGHT", "FIRST_USE", "LocalModel", "ModelBusy", "RunsLocally", "load_offline"]
