"""Adapter that turns any `aiocache` cache object into a store."""

from __future__ import annotations

import math
import sys
from typing import Any

from .base import PLAIN


class AiocacheStore:
    """Wraps an aiocache cache (`SimpleMemoryCache`, `RedisCache`, `MemcachedCache`, ...).

    Give the aiocache object a serializer that passes bytes through unchanged
    (`aiocache.serializers.NullSerializer` for memory, `StringSerializer`-free
    byte handling for memcached); entries are already msgpack-packed bytes.
    Prefix clears are only as precise as the back-end allows: aiocache can clear a
    namespace or everything, so `clear(prefix)` clears the whole aiocache
    namespace of this cache when the back-end cannot scan keys.
    """

    abilities = PLAIN

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
        await self.cache.clear()

    async def close(self) -> None:
        await self.cache.close()
