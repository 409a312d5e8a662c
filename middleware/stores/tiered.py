"""Two-level store: a per-pod L1 (memory) in front of a shared L2 (Redis), with pub/sub invalidation.

Reads try L1, then L2; an L2 hit back-fills L1 for at most `min(l1_max_ttl, remaining L2 TTL)`
(the remaining TTL comes from PTTL in the same round trip as the GET when the L2 is Redis). Writes
go to both. Deletes, clears, tag invalidations (the keys L2's tag index named) and by default
overwrites are published on a Redis channel that every TieredStore instance subscribes to, so every
pod drops the entry from its L1. Tags are indexed in L2 only (when L2 can: `abilities.tags`).

A pod never serves an entry after its own `set`, `delete` or `clear` returned: each writes L2 first,
then marks every L2 read in flight as too old to back-fill L1, then updates L1. A change runs to its
end in its own task even when its caller is cancelled (a client gone, a timeout): L2 may already have
it, and the other pods' L1 must hear of it.

Staleness bound across pods: normally the pub/sub delivery latency. If a message is lost (subscriber
disconnected), an L1 entry can outlive its invalidation by at most `l1_max_ttl` seconds; on every
(re)subscription the L1 is emptied, because messages sent while disconnected are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, TypeVar, cast

import msgpack

from ..._log_limit import LogLimit
from .._fork import renew_after_fork
from .base import Abilities, LockingStore, PrefixRulesStore, SizedStore, Store, TagStore, TTLStore, abilities_of

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CHANNEL = "llmc:invalidate"
_KEYS_PER_MESSAGE = 1000
"""Keys of a tag invalidation per message on the channel (a message stays small)."""
CLOSE_WAIT = 5.0
"""Seconds `close` waits for changes still running after their callers were cancelled."""


class TieredStore:
    """`TieredStore(MemoryStore(), RedisStore(url))`; call `await start()` to subscribe eagerly.

    `bus` is the Redis store used for invalidation messages; it defaults to `l2` when `l2` is a
    Redis store. With no bus (e.g. an S3 L2), invalidations only reach this process's L1 and other
    pods may serve a deleted entry for up to `l1_max_ttl` seconds.
    """

    try_lock: Callable[[str, float], Awaitable[str | None]]
    """L2's `try_lock`, set only when L2 can lock (`abilities.locking` says so)."""
    unlock: Callable[[str, str], Awaitable[bool]]
    tag: Callable[[str, Collection[str], float | None], Awaitable[None]]
    """L2's `tag`, set only when L2 keeps a tag index (`abilities.tags` says so)."""
    invalidate_tags: Callable[[Collection[str]], Awaitable[list[str]]]

    def __init__(
        self,
        l1: Store,
        l2: Store,
        *,
        l1_max_ttl: float = 5.0,
        channel: str = DEFAULT_CHANNEL,
        bus: Any | None = None,
        invalidate_on_set: bool = True,
        name: str | None = None,
    ) -> None:
        if l1_max_ttl <= 0:
            raise ValueError("l1_max_ttl must be positive: it bounds staleness when an invalidation is lost")
        self.l1 = l1
        self.l2 = l2
        self.l1_max_ttl = l1_max_ttl
        self.channel = channel
        self.bus: Any = bus if bus is not None else (l2 if abilities_of(l2).pubsub else None)
        self.invalidate_on_set = invalidate_on_set
        locking = abilities_of(l2).locking
        self._l2_ttl_reads = abilities_of(l2).ttl_reads
        if locking:
            # distributed single-flight locks live in the shared level (absent when L2 cannot lock)
            self.try_lock = cast(LockingStore, l2).try_lock
            self.unlock = cast(LockingStore, l2).unlock
        tags = abilities_of(l2).tags
        if tags:
            self.tag = cast(TagStore, l2).tag
            self.invalidate_tags = self._invalidate_tags
        # The sizes it reports are its L1's: the shared level's size is not cheap to know.
        self.abilities = Abilities(size=abilities_of(l1).size, locking=locking, prefix_rules=True, tags=tags)
        self.name = name or f"tiered:{l1.name}+{l2.name}"
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # bumped on every change, this pod's own (once L2 has it) or another's: a back-fill is skipped
        # if one happened during its L2 read, so a read in flight never writes an old value back to L1
        self._epoch = 0
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closed = False
        self._changes: set[asyncio.Task[Any]] = set()  # changes whose caller was cancelled, still running
        self.received = 0  # invalidation messages applied from other instances
        self.resubscribed = 0
        self.lost = 0  # times the invalidation channel was lost (or never reached)
        self.warnings = LogLimit(logger)
        """A Redis that stays down loses the channel every 2 s: one WARNING an interval."""
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        """In a forked child the listener is the parent's task, on a loop whose copy looks running but
        runs nowhere: the child listens on its own first use (before, it never did, and served from its
        L1 entries other pods had deleted). Its lock too may be held by a parent thread."""
        self._lock = threading.Lock()
        self._task = None
        self._subscribed = asyncio.Event()
        self._changes = set()  # the parent's, on a loop that runs nowhere here

    # -- subscription -------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self.bus is None or self._closed:
            return
        task = self._task
        if task is not None and not task.done():
            try:
                if task.get_loop().is_running():
                    return
            except RuntimeError:  # pragma: no cover
                pass
        with self._lock:
            if self._task is task:
                self._subscribed = asyncio.Event()
                self._task = asyncio.get_running_loop().create_task(self._listen(), name=f"{self.name}-invalidations")

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe now and wait until the subscription is confirmed (else it happens on first use)."""
        if self.bus is None:
            return
        self._ensure_listener()
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def _listen(self) -> None:
        delay = 0.05
        while not self._closed:
            client = None
            pubsub = None
            try:
                client = self.bus.pubsub_client()
                pubsub = client.pubsub()
                await pubsub.subscribe(self.channel)
                while True:  # wait for the subscribe confirmation
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "subscribe":
                        break
                # anything published while we were not subscribed is lost: start from an empty L1
                self._invalidate_all()
                await self.l1.clear(None)
                self.resubscribed += 1
                self._subscribed.set()
                delay = 0.05
                idle = 0.0
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        idle += 1.0
                        if idle >= 5.0:  # detect a dead connection on a quiet channel
                            await pubsub.ping()
                            idle = 0.0
                        continue
                    idle = 0.0
                    if message.get("type") == "message":
                        await self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:  # reconnect with backoff; L1 is bounded by l1_max_ttl meanwhile
                self._subscribed.clear()
                self.lost += 1
                self.warnings.warning(
                    "lost", "tiered store %s: invalidation channel lost (%r); reconnecting", self.name, error
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self._subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    async def _apply(self, data: bytes) -> None:
        try:
            origin, op, arg = msgpack.unpackb(data)
        except Exception:  # not ours
            return
        if origin == self.origin:
            return  # already applied locally before publishing
        self._invalidate_all()
        self.received += 1
        if op == "d":
            await self.l1.delete(arg)
        elif op == "c":
            await self.l1.clear(arg)
        elif op == "k":
            for key in arg:
                await self.l1.delete(key)

    def _invalidate_all(self) -> None:
        with self._lock:
            self._epoch += 1

    async def _publish(self, op: str, arg: str | list[str] | None) -> None:
        if self.bus is not None:
            await self.bus.publish(self.channel, msgpack.packb((self.origin, op, arg)))

    def check_prefix(self, prefix: str) -> None:
        """Both levels' rules for the prefixes `clear` may be given."""
        for level in (self.l1, self.l2):
            if abilities_of(level).prefix_rules:
                cast(PrefixRulesStore, level).check_prefix(prefix)

    def current_size(self) -> tuple[int, int]:
        """Its L1's entries and bytes (it declares `size` only when L1 knows them)."""
        return cast(SizedStore, self.l1).current_size()

    # -- protocol -----------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        self._ensure_listener()
        value = await self.l1.get(key)
        if value is not None:
            return value
        epoch = self._epoch
        remaining: float | None
        if self._l2_ttl_reads:
            value, remaining = await cast(TTLStore, self.l2).get_with_ttl(key)
        else:
            value, remaining = await self.l2.get(key), None
        if value is None:
            return None
        ttl = self.l1_max_ttl if remaining is None else min(self.l1_max_ttl, remaining)
        # an invalidation that arrived while L2 was read may concern this key: don't back-fill then
        if ttl > 0 and epoch == self._epoch and (self.bus is None or self.subscribed):
            await self.l1.set(key, value, ttl)
        return value

    async def _settled(self, change: Coroutine[Any, Any, T]) -> T:
        """Run `change` (an L2 write, then the invalidations) to its end even if the caller is cancelled
        between them: once L2 has it, a change cut short left the other pods' L1 serving the old entry
        for up to `l1_max_ttl`. A cancelled caller gets CancelledError at once; the change finishes."""
        task = asyncio.ensure_future(change)
        self._changes.add(task)
        task.add_done_callback(self._settle)
        return await asyncio.shield(task)

    def _settle(self, task: asyncio.Task[Any]) -> None:
        self._changes.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: its caller may be gone
            logger.debug("tiered store %s: a change failed: %r", self.name, task.exception())

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._ensure_listener()
        await self._settled(self._set(key, value, ttl))

    async def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.l2.set(key, value, ttl)
        self._invalidate_all()
        l1_ttl = self.l1_max_ttl if ttl is None else min(ttl, self.l1_max_ttl)
        if l1_ttl > 0:
            await self.l1.set(key, value, l1_ttl)
        else:
            await self.l1.delete(key)
        if self.invalidate_on_set:
            await self._publish("d", key)

    async def delete(self, key: str) -> None:
        self._ensure_listener()
        await self._settled(self._delete(key))

    async def _delete(self, key: str) -> None:
        await self.l2.delete(key)
        self._invalidate_all()
        await self.l1.delete(key)
        await self._publish("d", key)

    async def clear(self, prefix: str | None = None) -> None:
        self._ensure_listener()
        await self._settled(self._clear(prefix))

    async def _clear(self, prefix: str | None) -> None:
        await self.l2.clear(prefix)
        self._invalidate_all()
        await self.l1.clear(prefix)
        await self._publish("c", prefix)

    async def _invalidate_tags(self, tags: Collection[str]) -> list[str]:
        """L2 deletes what its tag index names; then every pod's L1 drops those keys."""
        self._ensure_listener()
        return await self._settled(self._invalidate_tagged(tags))

    async def _invalidate_tagged(self, tags: Collection[str]) -> list[str]:
        keys = await cast(TagStore, self.l2).invalidate_tags(tags)
        self._invalidate_all()
        for key in keys:
            await self.l1.delete(key)
        for start in range(0, len(keys), _KEYS_PER_MESSAGE):
            await self._publish("k", keys[start : start + _KEYS_PER_MESSAGE])
        return keys

    async def close(self) -> None:
        self._closed = True
        changes = [change for change in self._changes if change.get_loop() is asyncio.get_running_loop()]
        if changes:  # changes whose callers were cancelled: they finish before the levels close
            await asyncio.wait(changes, timeout=CLOSE_WAIT)
        task, self._task = self._task, None
        if task is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            else:
                task.get_loop().call_soon_threadsafe(task.cancel)
        await self.l1.close()
        await self.l2.close()
