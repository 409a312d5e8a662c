"""Hooks: the operator's own policy at four points of a call, without forking the engine.

A hook is a plain callable, sync or async, that takes one view and changes its writable fields:

- `before_lookup(LookupView)`: the key's body, the namespace, the TTL, or a bypass (never the scope);
- `before_forward(ForwardView)`: the body sent upstream on a miss (provider-native prompt caching is
  the built-in one, run first);
- `after_answer(AnswerView)`: whether the upstream's answer is stored, its TTL, its tags;
- `on_hit(HitView)`: whether a stored answer is served, exact, semantic or coalesced (vetoed: the call
  goes upstream).

Each hook gets its own copy of the view and its changes count only if it returns within
`hook_timeout`: a hook that raises or overruns is logged and skipped, and the call goes on. Sync
hooks run on a worker thread (so an overrun never blocks the event loop).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .._log_limit import LogLimit
from ._deadline import within
from ._fork import renew_after_fork
from ._keys import NAMESPACE_PATTERN, load_callable

logger = logging.getLogger("llm_cache.middleware")

POINTS = ("before_lookup", "before_forward", "after_answer", "on_hit")
SYNC_HOOK_THREADS = 8
"""Sync hook calls running at once; one more is skipped at once (hooks that never return must not
queue up calls without bound)."""
"""The hook points, in the order a call meets them."""
Hook = Callable[[Any], Any]
"""A callable of one view; its result is ignored (awaited if it is awaitable)."""


class _View(Protocol):
    def unusable(self) -> str | None:
        """What is wrong with the writable fields a hook left, or None: the cache can use them."""


_V = TypeVar("_V", bound=_View)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The intercepted request, read only: what every view shows."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Lower-case names."""
    body: Mapping[str, Any]
    """The caller's parsed JSON body (without the `cache` control field). Do not change it: change
    `LookupView.key_body` or `ForwardView.body`."""
    family: str
    """The API family: `openai`, `anthropic`, `gemini`, `bedrock`, ..."""
    endpoint: str
    """The endpoint: `chat.completions`, `embeddings`, `messages`, ..."""
    model: str | None
    stream: bool


@dataclass(slots=True)
class LookupView:
    """Before the store is read. Writable: `key_body`, `namespace`, `ttl`, `bypass`."""

    request: RequestInfo
    key_body: dict[str, Any]
    """The body the key is computed from (a copy of `request.body`): drop or add fields to change the key."""
    namespace: str
    ttl: float | None
    """Seconds the answer will be stored for, if it is stored (set to None: the cache's `ttl`)."""
    bypass: bool = False
    """True: neither look up nor store; the call goes upstream (`x-cache: BYPASS`)."""

    def unusable(self) -> str | None:
        if not isinstance(self.key_body, dict):
            return "key_body is not a dict"
        if not isinstance(self.namespace, str) or not NAMESPACE_PATTERN.fullmatch(self.namespace):
            return "namespace is not 1-64 characters of letters, digits, '_', '.' or '-'"
        return _ttl_problem(self.ttl) or _flag_problem("bypass", self.bypass)


@dataclass(slots=True)
class ForwardView:
    """A miss, before it goes upstream. Writable: `body`, the JSON body sent (the key is already made)."""

    request: RequestInfo
    body: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    """What the hooks changed, by name (telemetry); hooks may append to it."""

    def unusable(self) -> str | None:
        if not isinstance(self.body, dict):
            return "body is not a dict"
        if not isinstance(self.changes, list) or not all(isinstance(change, str) for change in self.changes):
            return "changes is not a list of strings"
        return None


@dataclass(slots=True)
class AnswerView:
    """The upstream's complete, storable answer. Writable: `store`, `ttl`, `tags`."""

    request: RequestInfo
    status: int
    body: bytes
    """The final JSON body (a stream's, assembled)."""
    store: bool = True
    ttl: float | None = None
    """Seconds the answer is stored for (set to None: the cache's `ttl`)."""
    tags: set[str] = field(default_factory=set)
    """Custom tags stored with the entry, besides the automatic ones: `cache.invalidate(tags=...)` finds it by them."""

    def unusable(self) -> str | None:
        if not isinstance(self.tags, (set, frozenset, list, tuple)) or not all(
            isinstance(tag, str) and tag for tag in self.tags
        ):
            return "tags is not a set of non-empty strings"  # (a string alone would be read as its letters)
        return _ttl_problem(self.ttl) or _flag_problem("store", self.store)


@dataclass(slots=True)
class HitView:
    """A stored answer about to be served. Writable: `serve` (False: the call goes upstream instead)."""

    request: RequestInfo
    status: int
    body: bytes
    age: float
    """Seconds since the answer was stored."""
    serve: bool = True
    match: str = "exact"
    """How it was found: `exact` (its key), `semantic` (a stored answer to a prompt of the same
    meaning) or `coalesced` (the answer of the identical call that was in flight)."""

    def unusable(self) -> str | None:
        return _flag_problem("serve", self.serve)


class Hooks:
    """The hooks of one `Cache`, per point: `cache.hooks.before_lookup(fn)` registers `fn` (and returns
    it, so it works as a decorator); `Cache(hooks={"on_hit": [fn, "pkg.mod:fn"]})` takes callables
    or dotted paths."""

    def __init__(self, hooks: Mapping[str, Iterable[Hook | str]] | None = None, timeout: float = 0.05) -> None:
        self.timeout = timeout
        self.warnings = LogLimit(logger)
        """A hook failing on a caller's input fails on every call: one WARNING per hook, point and
        failure an interval."""
        self._threads: ThreadPoolExecutor | None = None
        """Sync hooks run on threads of their own, never the loop's default executor (which stores such
        as the disk store use): a hook that never returns cannot starve them."""
        self._free = threading.Semaphore(SYNC_HOOK_THREADS)
        renew_after_fork(self)
        self.points: dict[str, list[Hook]] = {point: [] for point in POINTS}
        for point, entries in (hooks or {}).items():
            if point not in self.points:
                raise ValueError(f"unknown hook point {point!r}; allowed: {', '.join(POINTS)}")
            for entry in entries:
                self.points[point].append(load_callable(entry) if isinstance(entry, str) else entry)

    def before_lookup(self, hook: Hook) -> Hook:
        self.points["before_lookup"].append(hook)
        return hook

    def before_forward(self, hook: Hook) -> Hook:
        self.points["before_forward"].append(hook)
        return hook

    def after_answer(self, hook: Hook) -> Hook:
        self.points["after_answer"].append(hook)
        return hook

    def on_hit(self, hook: Hook) -> Hook:
        self.points["on_hit"].append(hook)
        return hook

    async def run(self, point: str, view: _V) -> _V:
        """`view` as the hooks of `point` leave it, each applied in turn; a failed hook changes nothing:
        one that raises, overruns, or leaves a writable field holding a value the cache cannot use (a
        TTL that is text, NaN or negative, tags that are not strings, ...)."""
        for hook in self.points[point]:
            trial = _copy(view)
            if await self._call(point, hook, trial):
                problem = trial.unusable()
                if problem is None:
                    view = trial
                else:
                    self.warnings.warning(
                        (point, id(hook), "unusable"),
                        "%s hook %s left a value the cache cannot use (%s); skipped",
                        point,
                        _name(hook),
                        problem,
                    )
        return view

    async def _call(self, point: str, hook: Hook, view: Any) -> bool:
        try:
            if _is_async(hook):
                await within(self.timeout, hook(view))
            else:
                threads = self._executor()
                if not self._free.acquire(blocking=False):
                    self.warnings.warning(
                        (point, id(hook), "busy"),
                        "%s hook %s skipped: every hook thread is still busy",
                        point,
                        _name(hook),
                    )
                    return False
                running = threads.submit(hook, view)
                running.add_done_callback(lambda _: self._free.release())  # when the thread is done, even late
                result = await within(self.timeout, asyncio.wrap_future(running))
                if inspect.isawaitable(result):
                    await within(self.timeout, result)
        except asyncio.TimeoutError:
            self.warnings.warning(
                (point, id(hook), "overran"),
                "%s hook %s took more than %.3f s; skipped",
                point,
                _name(hook),
                self.timeout,
            )
            return False
        except Exception:
            self.warnings.warning(
                (point, id(hook), "raised"), "%s hook %s raised; skipped", point, _name(hook), exc_info=True
            )
            return False
        return True

    def _renew_after_fork(self) -> None:
        """A forked child has none of its parent's hook threads, though it has their executor, which
        would queue its hooks for them: each would overrun and be skipped, and the policy it carries
        would not hold in the child. Its first sync hook starts threads of its own."""
        self._threads = None
        self._free = threading.Semaphore(SYNC_HOOK_THREADS)

    def _executor(self) -> ThreadPoolExecutor:
        """This process's hook threads, started on first use."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(SYNC_HOOK_THREADS, thread_name_prefix="llm-cache-hook")
        return self._threads


def _ttl_problem(ttl: object) -> str | None:
    if ttl is None or (isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and 0 <= ttl < math.inf):
        return None
    return "ttl is not None or a finite number of seconds >= 0"


def _flag_problem(name: str, value: object) -> str | None:
    return None if isinstance(value, bool) else f"{name} is not true or false"


def _is_async(hook: Hook) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


def _copy(view: _V) -> _V:
    """A view a hook may change without touching `view` (its mutable fields copied, the request shared)."""
    changes = {
        item.name: copy.deepcopy(getattr(view, item.name))
        for item in dataclasses.fields(view)  # type: ignore[arg-type]
        if isinstance(getattr(view, item.name), (dict, list, set))
    }
    return dataclasses.replace(view, **changes)  # type: ignore[type-var]


def _name(hook: Hook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


__all__ = ["POINTS", "AnswerView", "ForwardView", "Hook", "Hooks", "HitView", "LookupView", "RequestInfo"]
