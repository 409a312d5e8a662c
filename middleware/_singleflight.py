"""Single-flight: one upstream call per key, however many identical misses arrive at once.

In this process, concurrent misses on a key wait for the first one's answer (a `Flight`). With a
store that can lock keys across pods (Redis), this process's leader also takes the key's lock, so
one pod per key goes upstream and the others poll the store for the entry it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._deadline import within
from ._entry import Entry
from ._fork import renew_after_fork
from ._settings import CacheSettings, CacheStats
from ._types import CacheRequest, Lookup, Outcome
from .stores.base import LockingStore

_LOCK_POLL_FIRST = 0.005
_LOCK_POLL_MAX = 0.1
"""Seconds between store polls while another pod holds a key's lock: doubling from the first to the max."""
_LANDED_KEPT = 4096
"""How many keys' latest landings are remembered (`SingleFlight._landed_since`)."""


class _Left:
    """What a flight's waiters get when its leader's caller left before the answer was complete."""


LEFT = _Left()


@dataclass(slots=True)
class Flight:
    """This process's leading miss on a key; its waiters await `future` for the stored entry (None:
    the answer was not stored; `LEFT`: the leader's caller left before it was complete)."""

    key: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Entry | _Left | None] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()


class SingleFlight:
    """Coalesces the misses of one Cache. `poll` reads the usable entry another pod may have stored
    (store errors propagate); `failed` counts and logs a store error."""

    def __init__(
        self,
        settings: CacheSettings,
        stats: CacheStats,
        locker: LockingStore | None,
        poll: Callable[[CacheRequest], Awaitable[Entry | None]],
        failed: Callable[[str, Exception], None],
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._locker = locker
        self._poll = poll
        self._failed = failed
        self._flights: dict[str, Flight] = {}
        self._unlocking: set[asyncio.Task[None]] = set()
        """Releases `unlock_soon` started and that have not ended (a task nobody holds may be collected)."""
        self.landings = 0
        """How many flights have landed with a stored entry: a lookup notes it before its store read."""
        self._landed: dict[str, int] = {}
        """key -> the number of its latest landing with a stored entry, for the latest `_LANDED_KEPT` keys."""
        self._numbering = threading.Lock()
        """Held while `landings` and `_landed` change or are read together: flights land on the loop of
        each transport sharing the cache (a blocking transport's is its own thread)."""
        self._gauge = threading.Lock()
        """Held while `stats.coalesce_waiting` changes: each transport's loop thread moves it (only a miss
        that waits on a flight takes it)."""
        renew_after_fork(self)

    def _renew_after_fork(self) -> None:
        self._numbering = threading.Lock()
        self._gauge = threading.Lock()

    def _waiting(self, change: int) -> None:
        """Add `change` to the gauge of misses waiting on a flight: exact whichever threads move it."""
        with self._gauge:
            self._stats.coalesce_waiting += change

    async def join(self, request: CacheRequest, lookup: Lookup, since: int = -1) -> Lookup:
        """A miss (`lookup`) becomes a wait for the call already in flight for its key (a HIT if that call
        stores a usable answer), or leads the key upstream (`lookup.flight`, and the store's lock if any).
        When the leader's caller leaves before its answer is complete, the first of its waiters to run
        leads anew and the others wait on it: one caller giving up never sends every waiter upstream.
        A leader not done within `coalesce_timeout` is given up by the first waiter whose wait ran out,
        which leads anew (a caller may hold its answer unread for ever: its call would never end).
        `since` is `landings` as it was before the miss read the store: a flight on its key that stored
        its answer and landed after that (the read may have missed the write, and the flight is gone)
        sends the miss to the store again instead of upstream."""
        loop = asyncio.get_running_loop()
        flight = self._flights.get(request.key)
        if flight is None and since >= 0 and not lookup.store_error and self._landed_since(request.key, since):
            try:
                found = await self._poll(request)
            except Exception as error:  # fail open: lead
                self._failed("get", error)
            else:
                if found is not None:
                    self._stats.coalesced += 1
                    return Lookup(Outcome.HIT, found, coalesced=True)
            flight = self._flights.get(request.key)  # (one may have started while we read)
        while flight is not None and flight.loop is loop:
            self._waiting(1)
            try:
                entry = await within(self._settings.coalesce_timeout, asyncio.shield(flight.future))
            except asyncio.TimeoutError:
                if self._flights.get(request.key) is flight:  # overdue, maybe for ever (an answer never read):
                    del self._flights[request.key]  # this miss leads, later ones wait on it, not on that one
                    flight = None
                    break
                entry = None
            finally:
                self._waiting(-1)
            if isinstance(entry, _Left):
                flight = self._flights.get(request.key)
                continue
            if entry is not None and request.accepts(entry):
                self._stats.coalesced += 1
                return Lookup(Outcome.HIT, entry, coalesced=True)
            return lookup
        policy = request.policy
        if flight is None and not policy.no_store:
            lookup.flight = Flight(request.key, loop)
            self._flights[request.key] = lookup.flight
            if self._locker is not None and not lookup.store_error and not policy.only_if_cached:
                return await self._lead(self._locker, request, lookup)
        return lookup

    def land(self, flight: Flight | None, entry: Entry | None, left: bool = False) -> None:
        """The leader's call ended: its waiters get `entry` (None: they go upstream themselves), or
        one of them leads anew when the leader's caller `left` before the answer was complete."""
        if flight is None:
            return
        if _running_loop() is not flight.loop:  # (a blocking caller's thread, reading its stream)
            with contextlib.suppress(RuntimeError):  # a closed loop: its waiters are gone with it
                flight.loop.call_soon_threadsafe(self.land, flight, entry, left)
            return
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if isinstance(entry, Entry):
            self._note_landing(flight.key)
        if not flight.future.done():
            flight.future.set_result(LEFT if left and entry is None else entry)

    def _note_landing(self, key: str) -> None:
        landed = self._landed
        with self._numbering:
            self.landings += 1
            landed.pop(key, None)
            landed[key] = self.landings
            if len(landed) > _LANDED_KEPT:
                del landed[next(iter(landed))]

    def _landed_since(self, key: str, since: int) -> bool:
        """Whether a flight on `key` may have landed with a stored entry after landing number `since`
        (also when so many keys landed since that the key's number is no longer kept)."""
        if self.landings == since:
            return False
        with self._numbering:
            number = self._landed.get(key)
            if number is not None:
                return number > since
            return len(self._landed) >= _LANDED_KEPT and next(iter(self._landed.values())) > since + 1

    async def unlock(self, key: str, lookup: Lookup) -> None:
        """Release the call's distributed lock, if it holds one (never raises: it expires anyway)."""
        token, lookup.lock = lookup.lock, None
        if token is None or self._locker is None:
            return
        try:
            await self._locker.unlock(key, token)
        except Exception as error:
            self._failed("unlock", error)

    def unlock_soon(self, key: str, lookup: Lookup) -> None:
        """Release the call's distributed lock without waiting for the call to end: its answer will not
        be stored, so other pods' waiters, who would poll for an entry that never comes until the call
        ends (a long stream), take the lock and go upstream now. Runs on the loop that took the lock
        (the Recorder may be fed on a blocking caller's thread); `unlock` takes the token before its
        first await, so this release and the one at the call's end send one unlock between them."""
        flight = lookup.flight
        if lookup.lock is None or self._locker is None or flight is None:
            return
        if _running_loop() is not flight.loop:
            with contextlib.suppress(RuntimeError):  # a closed loop: the lock expires with its TTL
                flight.loop.call_soon_threadsafe(self.unlock_soon, key, lookup)
            return
        task = flight.loop.create_task(self.unlock(key, lookup))
        self._unlocking.add(task)
        task.add_done_callback(self._unlocking.discard)

    async def drain(self) -> None:
        """Wait for this loop's releases `unlock_soon` started, before the store closes (each is bounded
        by the store's own timeouts); tasks of other loops finish on theirs."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self._unlocking if task.get_loop() is loop]
        if mine:
            await asyncio.wait(mine)

    async def _lead(self, locker: LockingStore, request: CacheRequest, lookup: Lookup) -> Lookup:
        """Distributed single-flight for this process's leader of a miss.

        Take the key's lock in the store and go upstream (`lookup.lock` holds the token until the
        Recorder releases it). If another pod holds the lock, poll the store with a doubling delay
        for the entry it will write, at most `lock_wait` seconds; when the lock frees up without an
        entry (its holder failed, or its lock expired) take it over. Any store error: go upstream.
        """
        try:
            entry, waited = await self._wait_or_lock(locker, request, lookup)
        except BaseException:  # cancelled while waiting: one of this process's waiters leads; release the lock
            self.land(lookup.flight, None, left=True)
            await asyncio.shield(asyncio.ensure_future(self.unlock(request.key, lookup)))
            raise
        if entry is None:
            return lookup
        if waited:
            self._stats.lock_hits += 1
        self.land(lookup.flight, entry)  # this process's coalesced waiters get it too
        return Lookup(Outcome.HIT, entry, coalesced=True)

    async def _wait_or_lock(
        self, locker: LockingStore, request: CacheRequest, lookup: Lookup
    ) -> tuple[Entry | None, bool]:
        """(the entry another pod stored, whether we waited for it), or (None, _) to go upstream."""
        key = request.key
        settings = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.lock_wait
        delay = _LOCK_POLL_FIRST
        waited = False
        while True:
            try:
                lookup.lock = await locker.try_lock(key, settings.lock_ttl)
                if lookup.lock is not None:
                    # the holder may have stored and unlocked between our read and our lock: look again
                    entry = await self._poll(request)
                    if entry is not None:
                        await self.unlock(key, lookup)
                    return entry, waited
            except Exception as error:  # fail open (a lock we got is released by the Recorder)
                self._failed("lock", error)
                return None, waited
            if not waited:
                waited = True
                self._stats.lock_waits += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None, waited
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _LOCK_POLL_MAX)
            try:
                entry = await self._poll(request)
            except Exception as error:  # fail open
                self._failed("get", error)
                return None, waited
            if entry is not None:
                return entry, waited


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["LEFT", "Flight", "SingleFlight"]
