"""Adapter that turns any `aiocache` cache object into a store."""

from __future__ import annotations

import math
import sys
from typing import Any

from .base import PLAIN, ClearRefused


class AiocacheStore:
    """Wraps an aiocache cache (`SimpleMemoryCache`, `RedisCache`, `MemcachedCache`, ...).

    Give the aiocache object a serializer that passes bytes through unchanged
    (`aiocache.serializers.NullSerializer` for memory, `StringSerializer`-free
    byte handling for memcached); entries are already msgpack-packed bytes.
    `clear(prefix)` clears only keys under `prefix`, or refuses (`ClearRefused`, naming why):
    aiocache's own `clear()` is a FLUSHDB on Redis and a `flush_all` on memcached, which take
    every other user's keys of the server with them (`clear_rule`).
    """

    abilities = PLAIN
    """No `prefix_rules`: which clears it can honour depends on the wrapped cache, and a cache that can
    honour none (memcached) still serves reads and writes; a clear it cannot scope is refused when made."""

    def __init__(self, cache: Any, name: str | None = None) -> None:
        if "aiomcache" in sys.modules:  # a MemcachedCache: its pool must not reuse an interrupted connection
            from ._aiomcache import make_interrupt_safe

            make_interrupt_safe(cache)
        self.cache = cache
        self.name = name or f"aiocache:{type(cache).__name__}"

    async def get(self, key: str) -> bytes | None:
        value = await self.cache.get(key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.cache.set(key, value, ttl=None if ttl is None else max(1, math.ceil(ttl)))

    async def delete(self, key: str) -> None:
        await self.cache.delete(key)

    async def clear(self, prefix: str | None = None) -> None:
        namespace = clear_rule(self.cache, prefix or "")
        if namespace:
            await self.cache.clear(namespace=namespace)
        else:
            await self.cache.clear()  # an in-process SimpleMemoryCache, with nothing else in it

    async def close(self) -> None:
        await self.cache.close()


GLOB = frozenset("*?[]\\")


def clear_rule(cache: Any, prefix: str) -> str:
    """The namespace to give aiocache's `clear(namespace=...)` so that it removes exactly the keys
    under `prefix` (empty: the whole cache, for an in-process one), or ClearRefused naming why none can.

    aiocache clears by namespace as its back-end can: SimpleMemoryCache removes the keys that start
    with it (any prefix fits), RedisCache runs `KEYS <namespace>:*` (a prefix ending at a `:`,
    without glob characters, fits), memcached cannot (`flush_all`); with no namespace, Redis would
    FLUSHDB. A custom `key_builder` may not keep a key's prefix a prefix: it is refused too."""
    name = type(cache).__name__
    built = getattr(cache, "build_key", None)
    if built is None or built != getattr(cache, "_build_key", None):
        raise ClearRefused(f"aiocache {name}: clear(prefix) needs aiocache's own key builder to know where keys are")
    physical = built(prefix)
    kind = _backend(cache)
    if kind == "memory":
        return str(physical)
    if kind == "redis":
        if not physical.rstrip(":"):
            raise ClearRefused(f"aiocache {name} without a namespace would FLUSHDB the server; give it a namespace")
        if not physical.endswith(":"):
            raise ClearRefused(f"aiocache {name} clears only prefixes that end at a ':' (KEYS ns:*); got {prefix!r}")
        if GLOB.intersection(physical):
            raise ClearRefused(f"aiocache {name}: {physical!r} holds glob characters, which KEYS would match on")
        return str(physical[:-1])
    raise ClearRefused(
        f"aiocache {name} cannot clear by prefix (memcached cannot scan keys: aiocache would flush_all "
        "the whole server, other users' entries too); use MemcachedStore, which clears by generation"
        if kind == "memcached"
        else f"aiocache {name} cannot clear by prefix"
    )


def _backend(cache: Any) -> str:
    """Which aiocache back-end `cache` is: `memory`, `redis`, `memcached` or `other`."""
    for kind, module, cls in (
        ("memory", "aiocache.backends.memory", "SimpleMemoryBackend"),
        ("redis", "aiocache.backends.redis", "RedisBackend"),
        ("memcached", "aiocache.backends.memcached", "MemcachedBackend"),
    ):
        backend = getattr(sys.modules.get(module), cls, None)
        if backend is not None and isinstance(cache, backend):
            return kind
    return "other"
