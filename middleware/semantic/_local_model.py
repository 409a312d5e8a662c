"""A local model (an embedder, a cross-encoder) loaded once and called on threads of its own, a few
calls at a time.

A model call cannot be stopped once it runs: a lookup that times out stops waiting, but the thread
goes on computing. Run on the event loop's default executor, such calls would pile up behind a model
slower than its timeout, and starve every other `to_thread` of the process (the disk store, token
refreshes). So `LocalModel` runs them on its own daemon threads (one by default: a CPU model gains
nothing from more), and at most `max_in_flight` calls are running or waiting at once: one more is
refused at once (`ModelBusy`) and never runs. A waiting call whose caller gave up (a timeout, a
cancellation) is dropped when its turn comes, without running. A thread idle for `idle` seconds
ends, so a model dropped without `close()` is freed as it was with the default executor. When the
interpreter exits, a call that is running is let finish (at most `EXIT_WAIT` seconds) and the calls
waiting never run: a process that exits while a daemon thread is inside torch or onnxruntime aborts
(SIGABRT, "terminate called without an active exception"), whatever its own exit status was.

An embedder's calls are batched (`run_batched`): the thread that takes one also takes every other
batched call waiting, up to `batch_size` texts, and runs the model once on all their texts. Under
concurrent misses, one prompt per call, MiniLM takes ~25 ms for one text but ~10 ms a text for 32:
a line of prompts drains faster together, and fewer callers reach `max_in_flight`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, NamedTuple, TypeVar

import numpy as np

from .._fork import renew_after_fork

logger = logging.getLogger("llm_cache.middleware")

T = TypeVar("T")

FIRST_USE = "on first use (`await cache.start()` loads it at start-up)"
DEFAULT_MAX_IN_FLIGHT = 64
"""Calls running or waiting on one local model. MiniLM embeds a prompt in about 10 ms on a CPU, so a
full queue waits about 0.6 s, under the 2 s lookup timeout: a burst of concurrent misses is still
looked up, while behind a model stuck past its timeout the 65th caller is refused at once."""

DEFAULT_BATCH_SIZE = 32
"""Texts per batched model call: sentence-transformers' own batch size, so one call is one forward pass."""

EXIT_WAIT = 10.0
"""Seconds the interpreter's exit waits for a model's running calls (a batch of 32 on mpnet: ~2 s)."""

_Job = Callable[[], None]
"""What the model's thread runs next: a call, or the batch of calls waiting (each sets its callers' futures)."""


class _Waiting(NamedTuple):
    """A batched call waiting for its turn: `work(model, texts)` gives one row per text."""

    future: Future[Any]
    work: Callable[[Any, list[str]], np.ndarray]
    texts: list[str]


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
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = 1,
        idle: float = 60.0,
    ) -> None:
        if max_in_flight < 1 or batch_size < 1 or threads < 1 or idle <= 0:
            raise ValueError("max_in_flight, batch_size and threads must be at least 1, idle positive")
        self.kind = kind
        self.name = name
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.threads = threads
        self.idle = idle
        self._build = build
        self._model: Any = None
        self._loading = threading.Lock()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._calls: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._waiting: list[_Waiting] = []  # batched calls, in the order they came
        self._workers: list[threading.Thread] = []  # the threads taking from `_calls`
        self._live: set[threading.Thread] = set()  # every thread not yet ended (some of them after `close`)
        self._exiting = False
        self._exit_hooked = False
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """A forked child has none of the parent's model threads, nor the calls they ran: it starts
        threads of its own (before, it queued its calls for threads it did not have). The model object
        itself is kept; the locks are new (a parent thread may hold their copies)."""
        self._loading, self._lock = threading.Lock(), threading.Lock()
        self._calls, self._workers, self._live = queue.SimpleQueue(), [], set()
        self._waiting, self._in_flight = [], 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def in_flight(self) -> int:
        """Callers whose calls are running or waiting (a batch of calls counts each of its callers)."""
        return self._in_flight

    def load(self, when: str = FIRST_USE) -> Any:
        """The model, built now by the calling thread if it is not yet (once, whoever asks first)."""
        with self._loading:
            if self._model is None:
                self._model = load_offline(self.kind, self.name, when, self._build)
            return self._model

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(model, *args)` on the model's thread; `ModelBusy` at once when it is full."""
        future: Future[T] = Future()
        return await self._submit(future, lambda: self._answer(future, lambda: work(self.load(), *args)), refuse=True)

    async def run_batched(self, work: Callable[[Any, list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
        """`work(model, texts)`'s rows, from one model call that may hold other callers' texts too:
        those of every batched call waiting with the same `work`, up to `batch_size` texts. A failure
        of that call is every caller's. `ModelBusy` at once when the model is full (callers count)."""
        future: Future[np.ndarray] = Future()
        return await self._submit(future, self._run_batch, refuse=True, waiting=_Waiting(future, work, texts))

    async def start(self) -> None:
        """Load the model on its own thread, waiting behind the calls already there (never refused)."""
        future: Future[Any] = Future()
        await self._submit(future, lambda: self._answer(future, lambda: self.load("at start-up")), refuse=False)

    def close(self) -> None:
        """Let the threads end once the calls already waiting are done (at most `max_in_flight`); a
        later call starts new threads."""
        with self._lock:
            calls, workers = self._calls, self._workers
            self._calls, self._workers = queue.SimpleQueue(), []
        for _ in workers:
            calls.put(None)

    def _submit(self, future: Future[T], job: _Job, refuse: bool, waiting: _Waiting | None = None) -> asyncio.Future[T]:
        """Queue `job`, which settles `future` (a batched call's `waiting` joins the line it takes from)."""
        with self._lock:
            if refuse and self._in_flight >= self.max_in_flight:
                raise ModelBusy(f"{self.name} has {self._in_flight} calls running or waiting (max_in_flight)")
            self._in_flight += 1
            if len(self._workers) < self.threads:
                worker = threading.Thread(target=self._work, args=(self._calls,), daemon=True)
                worker.name = f"llm-cache {self.name}"
                if not self._exit_hooked:  # a weak reference: the hook keeps no model alive
                    atexit.register(_finish_at_exit, weakref.ref(self))
                    self._exit_hooked = True
                self._workers.append(worker)
                self._live.add(worker)
                worker.start()
            if waiting is not None:
                self._waiting.append(waiting)
            self._calls.put(job)
        return asyncio.wrap_future(future)  # a caller that gives up cancels `future`: its turn is skipped

    def _work(self, calls: queue.SimpleQueue[_Job | None]) -> None:
        try:
            while (job := self._next(calls)) is not None:
                job()
        finally:
            with self._lock:
                self._live.discard(threading.current_thread())

    def finish(self, wait: float) -> None:
        """At exit: no call that waits runs any more, and the running ones are waited for (at most
        `wait` seconds in all), so no thread is inside the model when the interpreter tears down."""
        with self._lock:
            self._exiting = True
            threads = list(self._live)
            for _ in self._workers:
                self._calls.put(None)  # wakes a thread waiting for a call
        deadline = time.monotonic() + wait
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _answer(self, future: Future[T], work: Callable[[], T]) -> None:
        """`work()` for one caller, unless it gave up."""
        settle: list[Callable[[], object]] = []
        try:
            if future.set_running_or_notify_cancel():
                try:
                    settle = [partial(future.set_result, work())]
                except BaseException as error:  # the caller's to see, as an executor's would be
                    settle = [partial(future.set_exception, error)]
        finally:
            self._done(1)
        for outcome in settle:
            outcome()

    def _run_batch(self) -> None:
        """One model call for the batched calls at the head of the line (none if an earlier batch
        took this call's texts: each batched call queues one job, and there are never fewer batches)."""
        batch = self._take_batch()
        if not batch:
            return
        settle: list[Callable[[], object]] = []
        try:
            rows = batch[0].work(self.load(), [text for call in batch for text in call.texts])
            at = 0
            for call in batch:
                settle.append(partial(call.future.set_result, rows[at : at + len(call.texts)]))
                at += len(call.texts)
        except BaseException as error:  # every caller's in the batch
            settle = [partial(call.future.set_exception, error) for call in batch]
        finally:
            self._done(len(batch))
        for outcome in settle:
            outcome()

    def _take_batch(self) -> list[_Waiting]:
        """The first waiting batched call whose caller still waits, and the calls after it with the
        same `work`, in order, until one does not fit in `batch_size` texts; callers that gave up are
        dropped on the way (their texts never run)."""
        batch: list[_Waiting] = []
        size = gave_up = 0
        with self._lock:
            kept: list[_Waiting] = []
            for at, call in enumerate(self._waiting):
                if batch and call.work != batch[0].work:
                    kept.append(call)
                elif batch and size + len(call.texts) > self.batch_size:
                    kept.extend(self._waiting[at:])
                    break
                elif call.future.set_running_or_notify_cancel():
                    batch.append(call)
                    size += len(call.texts)
                else:
                    gave_up += 1
            self._waiting = kept
        self._done(gave_up)
        return batch

    def _next(self, calls: queue.SimpleQueue[_Job | None]) -> _Job | None:
        """The next call, or None when this thread should end: closed, or idle (then it leaves the
        workers under the lock that `_submit` queues under, so no call is left without a thread)."""
        while not self._exiting:
            try:
                job = calls.get(timeout=self.idle)
                return None if self._exiting else job
            except queue.Empty:
                with self._lock:
                    if calls.empty():
                        me = threading.current_thread()
                        if me in self._workers:
                            self._workers.remove(me)
                        return None
        return None

    def _done(self, calls: int) -> None:
        """`calls` callers no longer count: done before their futures are set, so a caller that has
        its answer is not counted against the next call it makes."""
        with self._lock:
            self._in_flight -= calls


def _finish_at_exit(model: weakref.ref[LocalModel]) -> None:
    """The exit hook of a model that has started threads (nothing if it has been freed since)."""
    if (local := model()) is not None:
        local.finish(EXIT_WAIT)


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


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_IN_FLIGHT",
    "EXIT_WAIT",
    "FIRST_USE",
    "LocalModel",
    "ModelBusy",
    "RunsLocally",
    "load_offline",
]
