"""Shared stores on Redis through `redis.asyncio`: standalone, Cluster and Sentinel.

One GET per hit, `SET ... PX` for expiry, SCAN + UNLINK for prefix clears, one sorted set of keys per
tag (`{prefix}tags:{<tag>}`: the braces put each tag's index in one Cluster slot, so a tag invalidation
reads one index and deletes key by key, never scans; a key leaves it when its entry's time is up), a
circuit breaker in front of every call, and one client (with its connection pool) per running event
loop, created lazily and reused: the async transport and the sync transport's background loop each get
their own, never one per request.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, RedisError, ResponseError

from .._loop_clients import PerLoop
from .base import Abilities, StoreError
from .breaker import CircuitBreaker, CircuitOpenError

T = TypeVar("T")

DEFAULT_PREFIX = "llmc:"
FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_TAG = """
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', '(' .. now)
local ms = tonumber(ARGV[2])
local ends = 'inf'
if ms ~= 0 then ends = string.format('%d', now + ms) end
local known = redis.call('zscore', KEYS[1], ARGV[1])
if not known or (known ~= 'inf' and (ends == 'inf' or tonumber(known) < now + ms)) then
  redis.call('zadd', KEYS[1], ends, ARGV[1])
end
local last = redis.call('zrange', KEYS[1], -1, -1, 'WITHSCORES')[2]
if last == 'inf' then
  redis.call('persist', KEYS[1])
else
  redis.call('pexpireat', KEYS[1], tonumber(last))
end
return 1
"""
"""Add a key to a tag's index (a sorted set: each key scored by when its entry's time is up, in the
server's clock; `inf` for a key that never expires), drop the keys whose time is up, and let the index
live as long as its longest key. Without the drop, a tag written with every entry (`namespace:`,
`model:`) was written again before its set expired and kept every key ever written with it."""
_TAKE = "local keys = redis.call('smembers', KEYS[1]) redis.call('unlink', KEYS[1]) return keys"
"""A tag's set as versions before the sorted index wrote it (`tag:{<tag>}`), read and deleted at once."""
_TAKE_INDEX = "local keys = redis.call('zrange', KEYS[1], 0, -1) redis.call('unlink', KEYS[1]) return keys"
"""A tag's index, read and deleted at once: a key tagged meanwhile goes into a new index."""
_TAG_SLACK_MS = 1000
"""The set outlives its longest key by this much: the key is written just after its tag."""
_MAX_ORPHANS = 10_000
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class WriteRefused(StoreError):
    """The server answered a write with an error (out of memory under `noeviction`, a value past its
    limit): that value is not stored. The server is up and answering, so the breaker does not count it."""


async def _written(write: Awaitable[T]) -> T:
    """`write`'s result; `WriteRefused` when the server refuses it (a Cluster that is down is a failure)."""
    try:
        return await write
    except ResponseError as error:
        if isinstance(error, ClusterError):
            raise
        raise WriteRefused(f"redis refused the write: {error}") from error


def glob_escape(text: str) -> str:
    """Escape a literal for a Redis MATCH pattern."""
    return text.translate(_GLOB_SPECIAL)


def _unlocker(physical: str, token: str) -> Callable[[Any], Awaitable[Any]]:
    return lambda client: client.eval(_UNLOCK, 1, physical, token)  # type: ignore[no-any-return]


def ttl_ms(ttl: float) -> int:
    """Seconds to whole milliseconds for `PX`, never rounding a positive TTL down to zero."""
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    """Standalone Redis (also the base of the Cluster and Sentinel stores).

    >>> RedisStore("redis://cache:6379/0", prefix="llmc:", timeout=0.25)
    >>> RedisStore(host="cache", port=6380, password="...", ssl=True)

    Every physical key is `prefix + key`. `timeout` bounds each socket read, `connect_timeout` each
    connect; redis-py's own retries are off (`retries=0`) because a cache should fail fast and let
    the engine go upstream. After `failure_threshold` consecutive failures the breaker opens and
    calls raise `StoreError` immediately for `cooldown` seconds; then one probe is let through.
    """

    name = "redis"
    abilities = Abilities(batch=True, ttl_reads=True, locking=True, pubsub=True, tags=True)

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        prefix: str = DEFAULT_PREFIX,
        timeout: float | None = 0.25,
        connect_timeout: float | None = 0.25,
        max_connections: int | None = None,
        retries: int = 0,
        failure_threshold: int = 5,
        cooldown: float = 2.0,
        breaker: CircuitBreaker | None = None,
        scan_count: int = 1000,
        client_options: Mapping[str, Any] | None = None,
        max_value_bytes: int | None = None,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.max_value_bytes = max_value_bytes
        """Values longer are not sent (not stored, counted in `oversize_skipped`): the server's
        `proto-max-bulk-len` or a managed Redis's request limit, when below the engine's
        `max_response_bytes`. None: Redis's own limit (512 MB by default) is past any answer."""
        self.oversize_skipped = 0
        self.host, self.port, self.db = host, port, db
        self.username, self.password, self.ssl = username, password, ssl
        self.prefix = prefix
        self.lock_prefix = prefix + "lock:"
        self.tag_prefix = prefix + "tags:"
        self.old_tag_prefix = prefix + "tag:"
        """Where versions before the sorted index kept a tag's set (taken too by an invalidation)."""
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.retries = retries
        self.scan_count = scan_count
        self.client_options = dict(client_options or {})
        if name is not None:
            self.name = name
        self.breaker = breaker or CircuitBreaker(failure_threshold, cooldown, name=self.name)
        self._clients: PerLoop[Any] = PerLoop(self._make_client, lambda client: client.aclose())
        self._orphans: dict[str, str] = {}
        """Physical lock key -> token of locks this store may hold with nobody to release them."""
        self._releasing: set[asyncio.Task[None]] = set()
        """Releases of the locks of cancelled `try_lock` calls, running on their own."""

    # -- clients ------------------------------------------------------------------------------

    def _common_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), self.retries),
            "decode_responses": False,
        }
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        options.update(self.client_options)
        return options

    def _make_client(self) -> Any:
        options = self._common_options()
        if self.max_connections is not None:
            options["max_connections"] = self.max_connections
        if self.url is not None:
            return aioredis.Redis.from_url(self.url, **options)
        return aioredis.Redis(host=self.host, port=self.port, db=self.db, ssl=self.ssl, **options)

    def client(self) -> Any:
        """The client of the running event loop (created on first use in that loop)."""
        return self._clients.get()

    def pubsub_client(self) -> Any:
        """A new client for a long-lived subscription (no read timeout); the caller closes it."""
        options = self._common_options()
        options["socket_timeout"] = None
        if self.url is not None:
            return aioredis.Redis.from_url(self.url, **options)
        return aioredis.Redis(host=self.host, port=self.port, db=self.db, ssl=self.ssl, **options)

    async def _call(self, operation: Callable[[Any], Awaitable[T]], what: str) -> T:
        client = self.client()
        return await self.breaker.call(lambda: operation(client), FAILURES, what)

    def _key(self, key: str) -> str:
        return self.prefix + key

    # -- protocol -----------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        physical = self.prefix + key
        return await self._call(lambda client: client.get(physical), "get")  # type: ignore[no-any-return]

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, float | None]:
        """The value and its remaining TTL in seconds (None: no expiry), in one round trip."""
        physical = self.prefix + key

        async def run(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(physical)
            pipe.pttl(physical)
            return await pipe.execute()  # type: ignore[no-any-return]

        value, pttl = await self._call(run, "get")
        if value is None:
            return None, None
        return value, (None if pttl is None or pttl < 0 else pttl / 1000)

    def _fits(self, value: bytes) -> bool:
        """Whether `value` is within `max_value_bytes` (counted in `oversize_skipped` when not)."""
        if self.max_value_bytes is None or len(value) <= self.max_value_bytes:
            return True
        self.oversize_skipped += 1
        return False

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        physical = self.prefix + key
        if ttl is not None and ttl <= 0:
            await self._call(lambda client: client.unlink(physical), "set")
            return
        if not self._fits(value):
            return
        px = None if ttl is None else ttl_ms(ttl)
        await self._call(lambda client: _written(client.set(physical, value, px=px)), "set")

    async def delete(self, key: str) -> None:
        physical = self.prefix + key
        await self._call(lambda client: client.unlink(physical), "delete")

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        physical = [self.prefix + key for key in keys]
        return list(await self._call(lambda client: self._mget(client, physical), "get_many"))

    async def _mget(self, client: Any, keys: list[str]) -> list[bytes | None]:
        return await client.mget(keys)  # type: ignore[no-any-return]

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None) -> None:
        if not items:
            return
        if ttl is not None and ttl <= 0:
            physical = [self.prefix + key for key in items]
            await self._call(lambda client: self._unlink_many(client, physical), "set_many")
            return
        px = None if ttl is None else ttl_ms(ttl)
        fitting = {key: value for key, value in items.items() if self._fits(value)}
        if not fitting:
            return

        async def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for key, value in fitting.items():
                pipe.set(self.prefix + key, value, px=px)
            await _written(pipe.execute())

        await self._call(run, "set_many")

    async def clear(self, prefix: str | None = None) -> None:
        """SCAN for `self.prefix + prefix` and UNLINK in batches (every primary on a Cluster).

        A prefix's clear never removes a tag's index: its name (`{prefix}tags:{<tag>}`) starts like the
        keys of a namespace `tags` (or a key prefix `tags:`), yet it names entries of every namespace
        and key prefix. No entry key has a `{` there (a key goes on with its scope, a hash)."""
        pattern = glob_escape(self.prefix + (prefix or "")) + "*"
        indexes = () if prefix is None else (f"{self.tag_prefix}{{".encode(), f"{self.old_tag_prefix}{{".encode())
        await self._call(lambda client: self._clear(client, pattern, indexes), "clear")

    async def _clear(self, client: Any, pattern: str, indexes: tuple[bytes, ...]) -> None:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=self.scan_count):
            if indexes and key.startswith(indexes):
                continue
            batch.append(key)
            if len(batch) >= self.scan_count:
                await self._unlink_many(client, batch)
                batch = []
        if batch:
            await self._unlink_many(client, batch)

    async def _unlink_many(self, client: Any, keys: Sequence[str | bytes]) -> None:
        await client.unlink(*keys)

    # -- tags -------------------------------------------------------------------------------------

    def _tag_key(self, tag: str, prefix: str | None = None) -> str:
        return f"{self.tag_prefix if prefix is None else prefix}{{{tag}}}"

    async def tag(self, key: str, tags: Collection[str], ttl: float | None) -> None:
        """One script per tag (each set lives in its own slot), pipelined: add `key`, extend the set's TTL."""
        ms = 0 if ttl is None else ttl_ms(ttl) + _TAG_SLACK_MS
        physical = [self._tag_key(tag) for tag in tags]

        async def run(client: Any) -> None:  # one pipeline: a round trip per node, not one per tag
            pipe = client.pipeline(transaction=False)
            for tag_key in physical:
                pipe.eval(_TAG, 1, tag_key, key, ms)
            await _written(pipe.execute())

        await self._call(run, "tag")

    async def invalidate_tags(self, tags: Collection[str]) -> list[str]:
        """Take each tag's index (read and delete it), and its set as earlier versions wrote it, then
        unlink their keys (per slot on a Cluster)."""
        taken = [(_TAKE_INDEX, self._tag_key(tag)) for tag in tags]
        taken += [(_TAKE, self._tag_key(tag, self.old_tag_prefix)) for tag in tags]

        async def run(client: Any) -> list[str]:
            keys: set[str] = set()
            for script, tag_key in taken:
                members = await client.eval(script, 1, tag_key)
                keys.update(member.decode() if isinstance(member, bytes) else member for member in members)
            ordered = sorted(keys)
            for start in range(0, len(ordered), self.scan_count):
                await self._unlink_many(client, [self.prefix + key for key in ordered[start : start + self.scan_count]])
            return ordered

        return await self._call(run, "invalidate")

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call(lambda client: client.publish(channel, message), "publish")

    # -- distributed single-flight primitive (the engine decides when to use it) -----------------

    async def try_lock(self, key: str, ttl: float) -> str | None:
        """`SET lock NX PX`: a token if this caller now owns the lock on `key`, else None.

        A lock this store may hold without anyone to release it (see `_orphan`) is released first.
        """
        if self._orphans:
            await self._release_orphans()
        token = secrets.token_hex(16)
        physical = self.lock_prefix + key
        try:
            acquired = await self._call(
                lambda client: _written(client.set(physical, token, px=ttl_ms(ttl), nx=True)), "lock"
            )
        except CircuitOpenError:
            raise  # never sent: no lock was taken
        except StoreError:
            self._orphan(physical, token)  # sent, unanswered: a paused server may still run it later
            raise
        except BaseException:  # cancelled, maybe once the server had run it: its caller cannot release it
            self._orphan(physical, token)
            releasing = asyncio.ensure_future(self._release_orphans())
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)
            raise
        return token if acquired else None

    async def unlock(self, key: str, token: str) -> bool:
        """Release the lock only if `token` still owns it (compare-and-delete in one script)."""
        physical = self.lock_prefix + key
        try:
            released = await self._call(_unlocker(physical, token), "unlock")
        except StoreError:
            self._orphan(physical, token)
            raise
        return bool(released)

    def _orphan(self, physical: str, token: str) -> None:
        """Remember a lock whose taking had no answer or whose release failed, to release it later.

        Left alone it would live its whole TTL, and every miss on its key, in every pod, would wait
        for an answer that nobody is fetching. Bounded: the oldest are dropped (they expire anyway).
        """
        orphans = self._orphans
        orphans[physical] = token
        while len(orphans) > _MAX_ORPHANS:
            del orphans[next(iter(orphans))]

    async def _release_orphans(self) -> None:
        """Compare-and-delete every remembered lock; after a failure the rest are kept for next time."""
        orphans, self._orphans = self._orphans, {}
        failed = False
        for physical, token in orphans.items():
            if not failed:
                try:
                    await self._call(_unlocker(physical, token), "unlock")
                    continue
                except StoreError:
                    failed = True
            self._orphan(physical, token)

    async def ping(self) -> bool:
        return bool(await self._call(lambda client: client.ping(), "ping"))

    async def close(self) -> None:
        """Close every loop's client: this loop's directly, other live loops' on their own loop."""
        await asyncio.gather(*self._releasing, return_exceptions=True)
        await self._clients.close()


class RedisClusterStore(RedisStore):
    """Redis Cluster: keys spread over every slot (no hash tags), clears scan every primary.

    >>> RedisClusterStore(startup_nodes=[("10.0.0.1", 7000), ("10.0.0.2", 7000)])
    >>> RedisClusterStore(url="redis://10.0.0.1:7000")

    `get_many` splits by slot (`MGET` per slot, not atomic); `set_many` and clears use a cluster
    pipeline that groups commands by node. Retries default to 1 so that one moved/failed-over node
    refreshes the slot map instead of failing the call.
    """

    name = "redis-cluster"

    def __init__(
        self,
        url: str | None = None,
        *,
        startup_nodes: Sequence[tuple[str, int] | str] | None = None,
        retries: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(url, retries=retries, **options)
        nodes: list[tuple[str, int]] = []
        for node in startup_nodes or []:
            if isinstance(node, str):
                host, _, port = node.rpartition(":")
                nodes.append((host, int(port)))
            else:
                nodes.append((node[0], int(node[1])))
        if not nodes and url is None:
            nodes.append((self.host, self.port))
        self.startup_nodes = nodes
        self._initialized: weakref.WeakSet[Any] = weakref.WeakSet()

    def _make_client(self) -> Any:
        options = self._common_options()
        options["max_connections"] = self.max_connections or 100
        if self.ssl:
            options["ssl"] = True
        if self.url is not None and not self.startup_nodes:
            return RedisCluster.from_url(self.url, **options)
        nodes = [ClusterNode(host, port) for host, port in self.startup_nodes]
        return RedisCluster(startup_nodes=nodes, **options)

    def pubsub_client(self) -> Any:
        """A plain client to one node: classic PUBLISH is broadcast to every node of a cluster."""
        client = self._clients.current()
        host, port = self.startup_nodes[0] if self.startup_nodes else (self.host, self.port)
        if client is not None:
            try:
                node = client.get_default_node() or client.get_primaries()[0]
                host, port = node.host, node.port
            except (IndexError, AttributeError, RedisError):
                pass
        options = self._common_options()
        options["socket_timeout"] = None
        return aioredis.Redis(host=host, port=port, ssl=self.ssl, **options)

    async def _call(self, operation: Callable[[Any], Awaitable[T]], what: str) -> T:
        client = self.client()
        if client not in self._initialized:
            # redis-py resolves a command's slot before it initialises a cold client, and a burst of
            # first calls then races on half-made connections (AttributeError, "connection closed").
            # Initialising first is lock-guarded and idempotent, so a burst waits for one set-up.
            await self.breaker.call(client.initialize, FAILURES, what)
            self._initialized.add(client)
        return await self.breaker.call(lambda: operation(client), FAILURES, what)

    async def _mget(self, client: Any, keys: list[str]) -> list[bytes | None]:
        return await client.mget_nonatomic(keys)  # type: ignore[no-any-return]

    async def _unlink_many(self, client: Any, keys: Sequence[str | bytes]) -> None:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("UNLINK", key)
        await pipe.execute()

    async def _clear(self, client: Any, pattern: str, indexes: tuple[bytes, ...]) -> None:
        # scan each primary separately (redis-py's cluster scan_iter also does, but may visit
        # replicas); keys found on a node are unlinked with a node-grouped pipeline
        for node in client.get_primaries():
            batch: list[bytes] = []
            cursor = 0
            while True:
                cursor, keys = await client.scan(cursor=cursor, match=pattern, count=self.scan_count, target_nodes=node)
                if isinstance(cursor, dict):  # redis-py returns per-node dicts for targeted scans
                    cursor = next(iter(cursor.values()))
                if isinstance(keys, dict):
                    keys = next(iter(keys.values()))
                batch.extend(key for key in keys if not (indexes and key.startswith(indexes)))
                if len(batch) >= self.scan_count or (cursor == 0 and batch):
                    await self._unlink_many(client, batch)
                    batch = []
                if cursor == 0:
                    break


class RedisSentinelStore(RedisStore):
    """Redis behind Sentinel: the master for `service_name` is discovered (and re-discovered on failover).

    >>> RedisSentinelStore("mymaster", sentinels=[("10.0.0.5", 26379), ("10.0.0.6", 26379)])
    """

    name = "redis-sentinel"

    def __init__(
        self,
        service_name: str,
        sentinels: Sequence[tuple[str, int]],
        *,
        sentinel_password: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(None, **options)
        self.service_name = service_name
        self.sentinels = [(host, int(port)) for host, port in sentinels]
        self.sentinel_password = sentinel_password
        self._managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sentinel] = weakref.WeakKeyDictionary()

    def _sentinel(self) -> Sentinel:
        """One `Sentinel` manager per event loop (its sentinel connections belong to that loop)."""
        loop = asyncio.get_running_loop()
        sentinel = self._managers.get(loop)
        if sentinel is None:
            options = self._common_options()
            if self.max_connections is not None:
                options["max_connections"] = self.max_connections
            if self.ssl:
                options["ssl"] = True
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": self.timeout,
                "socket_connect_timeout": self.connect_timeout,
            }
            if self.sentinel_password is not None:
                sentinel_kwargs["password"] = self.sentinel_password
            sentinel = Sentinel(self.sentinels, sentinel_kwargs=sentinel_kwargs, db=self.db, **options)
            self._managers[loop] = sentinel
        return sentinel

    def _make_client(self) -> Any:
        return self._sentinel().master_for(self.service_name)

    def pubsub_client(self) -> Any:
        return self._sentinel().master_for(self.service_name, socket_timeout=None)

    async def close(self) -> None:
        await super().close()
        sentinel = self._managers.pop(asyncio.get_running_loop(), None)
        if sentinel is not None:
            for client in sentinel.sentinels:
                await client.aclose()
