"""Memcached through aiocache's memcached back-end (aiomcache), with real prefix clears.

Memcached cannot list keys, so `clear(prefix)` uses namespace versioning: every `:`-terminated
prefix of a key (up to `generation_depth` segments, plus the empty prefix) has a generation token
stored in memcached, and the physical key folds in a digest of those tokens. Clearing a prefix
replaces its token: every key under it becomes unreachable at once, on every pod (the old items age
out by TTL or LRU). A missing token (evicted, server restarted) reads as "nothing stored", so an
eviction can only lose entries, never resurrect cleared ones. The price: a read is two round trips
(one multi-get of the tokens, one get of the value).

Keys longer than 250 bytes or with whitespace/control characters are hashed (sha256, keeping a
readable head); values over `max_item_size` are not stored and counted in `oversize_skipped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import secrets
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from .._fork import renew_after_fork
from .aiocache import AiocacheStore
from .base import Abilities, ClearRefused, StoreError
from .breaker import CircuitBreaker

try:
    import aiomcache
    from aiocache import MemcachedCache
    from aiocache.serializers import BaseSerializer

    from ._aiomcache import make_interrupt_safe
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("MemcachedStore needs aiomcache: pip install 'llm-cache-middleware[memcached]'") from error

MAX_KEY_BYTES = 250
ITEM_OVERHEAD = 64  # memcached's per-item header, roughly, counted against the item size limit
THIRTY_DAYS = 30 * 24 * 3600  # larger exptimes are read by memcached as unix timestamps
HEAD_CHARS = 80


class BytesSerializer(BaseSerializer):  # type: ignore[misc]
    """Pass bytes through untouched (aiocache's NullSerializer would still decode as UTF-8)."""

    DEFAULT_ENCODING = None

    def dumps(self, value: bytes) -> bytes:
        return value

    def loads(self, value: bytes | None) -> bytes | None:
        return value


def safe_key(key: str) -> str:
    """`key` if memcached accepts it as is, else a readable head plus its sha256."""
    encoded = key.encode("utf-8")
    if len(encoded) <= MAX_KEY_BYTES and all(0x20 < byte < 0x7F for byte in encoded):
        return key
    head = "".join(c if 0x20 < ord(c) < 0x7F else "_" for c in key[:HEAD_CHARS])
    return f"{head}#{hashlib.sha256(encoded).hexdigest()}"


def exptime(ttl: float | None) -> int:
    if ttl is None:
        return 0
    seconds = max(1, math.ceil(ttl))
    return int(time.time()) + seconds if seconds > THIRTY_DAYS else seconds


class MemcachedStore(AiocacheStore):
    """`MemcachedStore("cache", 11211, prefix="llmc:", max_item_size=1024 * 1024)`.

    TTLs are rounded up to whole seconds (memcached's resolution). `clear(prefix)` accepts None,
    "" or a `:`-terminated prefix of at most `generation_depth` segments (the engine's
    `{key_prefix}{namespace}:` prefixes); anything else raises `StoreError` rather than pretend.
    """

    name = "memcached"
    abilities = Abilities(batch=True, prefix_rules=True)

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11211,
        *,
        prefix: str = "llmc:",
        max_item_size: int = 1024 * 1024,
        pool_size: int = 4,
        timeout: float = 0.25,
        generation_depth: int = 4,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        breaker: CircuitBreaker | None = None,
        name: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.prefix = prefix
        self.max_item_size = max_item_size
        self.pool_size = pool_size
        self.timeout = timeout
        self.generation_depth = generation_depth
        self._caches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        renew_after_fork(self)
        self.oversize_skipped = 0
        super().__init__(None, name or self.name)
        self.breaker = breaker or CircuitBreaker(failure_threshold, cooldown, name=self.name)

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread making a loop's cache."""
        self._lock = threading.Lock()

    # -- the aiocache object of the running loop (aiomcache pools belong to one loop) ----------

    @property  # type: ignore[override]
    def cache(self) -> Any:
        loop = asyncio.get_running_loop()
        cache = self._caches.get(loop)
        if cache is None:
            with self._lock:
                cache = self._caches.get(loop)
                if cache is None:
                    cache = MemcachedCache(
                        serializer=BytesSerializer(),
                        endpoint=self.host,
                        port=self.port,
                        pool_size=self.pool_size,
                        timeout=self.timeout,
                    )
                    make_interrupt_safe(cache)
                    self._caches[loop] = cache
        return cache

    @cache.setter
    def cache(self, value: Any) -> None:  # the adapter's constructor assigns it; caches are per loop
        return None

    async def _call(self, what: str, operation: Any) -> Any:
        errors = (OSError, asyncio.TimeoutError, aiomcache.exceptions.ClientException, ConnectionError)
        return await self.breaker.call(operation, errors, what)

    # -- generations ------------------------------------------------------------------------------

    def _generation_prefixes(self, key: str) -> list[str]:
        prefixes = [""]
        end = 0
        for _ in range(self.generation_depth):
            end = key.find(":", end) + 1
            if end == 0:
                break
            prefixes.append(key[:end])
        return prefixes

    def _generation_key(self, prefix: str) -> str:
        return safe_key(f"{self.prefix}gen:{prefix}")

    def _physical(self, key: str, tokens: Sequence[bytes]) -> str:
        tag = hashlib.blake2b(b"\0".join(tokens), digest_size=8).hexdigest()
        return safe_key(f"{self.prefix}{tag}:{key}")

    async def _tokens(self, cache: Any, key: str, create: bool) -> list[bytes] | None:
        generation_keys = [self._generation_key(p) for p in self._generation_prefixes(key)]
        tokens = list(await cache.multi_get(generation_keys))
        missing = [i for i, token in enumerate(tokens) if token is None]
        if not missing:
            return tokens
        if not create:
            return None
        for index in missing:
            with contextlib.suppress(ValueError):  # ValueError: another writer created it first
                await cache.add(generation_keys[index], secrets.token_hex(8).encode(), ttl=0)
        tokens = list(await cache.multi_get(generation_keys))
        if any(token is None for token in tokens):  # evicted between add and get: don't write blind
            raise StoreError("memcached generation keys vanished while writing; not stored")
        return tokens

    # -- protocol -------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        cache = self.cache

        async def run() -> bytes | None:
            tokens = await self._tokens(cache, key, create=False)
            if tokens is None:
                return None
            return await cache.get(self._physical(key, tokens))  # type: ignore[no-any-return]

        return await self._call("get", run)  # type: ignore[no-any-return]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    def _fits(self, physical: str, value: bytes) -> bool:
        if len(value) + len(physical) + ITEM_OVERHEAD > self.max_item_size:
            self.oversize_skipped += 1
            return False
        return True

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        cache = self.cache
        if len(value) + ITEM_OVERHEAD > self.max_item_size:  # decided before any network call
            self.oversize_skipped += 1
            return

        async def run() -> None:
            tokens = await self._tokens(cache, key, create=True)
            assert tokens is not None
            physical = self._physical(key, tokens)
            if not self._fits(physical, value):
                return
            if ttl is not None and ttl <= 0:
                await cache.delete(physical)
                return
            try:
                await cache.set(physical, value, ttl=exptime(ttl))
            except aiomcache.exceptions.ClientException as error:
                if b"too large" in str(error).encode() or "too large" in str(error):
                    self.oversize_skipped += 1  # the server's limit is lower than configured
                    return
                raise

        await self._call("set", run)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None) -> None:
        for key, value in items.items():
            await self.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        cache = self.cache

        async def run() -> None:
            tokens = await self._tokens(cache, key, create=False)
            if tokens is not None:
                await cache.delete(self._physical(key, tokens))

        await self._call("delete", run)

    def check_prefix(self, prefix: str) -> None:
        """Raise StoreError unless `clear(prefix)` can be honoured (the engine checks its own prefixes
        with this when it is built, so a misfit `key_prefix` fails at start-up, not at the first clear)."""
        if prefix and (not prefix.endswith(":") or prefix.count(":") > self.generation_depth):
            raise ClearRefused(
                f"memcached can only clear ':'-terminated prefixes of at most {self.generation_depth} "
                f"segments (memcached cannot scan keys); got {prefix!r}"
            )

    async def clear(self, prefix: str | None = None) -> None:
        prefix = prefix or ""
        self.check_prefix(prefix)
        cache = self.cache
        token = secrets.token_hex(8).encode()
        await self._call("clear", lambda: cache.set(self._generation_key(prefix), token, ttl=0))

    async def close(self) -> None:
        with self._lock:
            cache = self._caches.pop(asyncio.get_running_loop(), None)
            others = list(self._caches.values())
            self._caches.clear()
        if cache is not None:
            await cache.close()
        del others  # caches of other loops cannot be closed from here; their sockets close with them
