"""aiomcache's connection pool, made safe to interrupt: the rule both memcached stores keep.

aiomcache 0.8 closes a connection after an `Exception` only. After a `CancelledError` (a caller's
cancel, or aiocache's own `timeout`, which cancels the command) it pooled the connection with the
reply still on its way, and each later command on it read the one before's: a caller served
another's reply, or every read a miss or an error (counted, tripping the breaker) until an error
closed it.
"""

from __future__ import annotations

import sys
from typing import Any

from aiomcache.pool import Connection, MemcachePool


class InterruptSafePool(MemcachePool):  # type: ignore[misc]
    """A pool that closes a connection whose command was interrupted instead of pooling it again.

    aiomcache's `acquire` releases the connection in a `finally`, while the interruption is the
    exception being handled, which is how `release` tells."""

    def release(self, conn: Connection) -> None:
        interrupted = sys.exc_info()[1]
        if interrupted is not None and not isinstance(interrupted, Exception):
            conn.reader.set_exception(ConnectionAbortedError("command interrupted"))  # release closes it
        super().release(conn)


def make_interrupt_safe(cache: Any) -> None:
    """Give the aiocache `MemcachedCache` `cache` (a user's own too) an `InterruptSafePool`, keeping
    its settings and connections. A pool of another class (a user's subclass) is left as it is."""
    pool = getattr(getattr(cache, "client", None), "_pool", None)
    if type(pool) is MemcachePool:
        pool.__class__ = InterruptSafePool
