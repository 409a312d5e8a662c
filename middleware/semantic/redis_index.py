"""A vector index in Redis with the RediSearch module (Redis Stack, Redis 8): shared by every pod."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .._loop_clients import PerLoop
from ..stores.urls import without_password
from ._redis_fair import RedisFairRows, Script, owner_id
from .index import IndexUnavailable, Neighbour

_SCHEMA_ALGORITHM = ("HNSW", "6")

_ADD = Script(
    """
local member, owner, ttl = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
local row = prefixes[1] .. member
sweep()
local held = redis.call('HGET', row, 'owner')
if held and held ~= owner then unlist(held, member) end
redis.call('HSET', row, 'owner', owner, unpack(ARGV, at + 4))
if ttl > 0 then redis.call('PEXPIRE', row, ttl) else redis.call('PERSIST', row) end
list(owner, member, tonumber(ARGV[at + 3]))
evict()
"""
)
"""Write a row (`HSET`, its TTL) and list it as its owner's newest; past the cap, evict."""

_DELETE = Script(
    """
local member = ARGV[at]
local held = redis.call('HGET', prefixes[1] .. member, 'owner')
if held then unlist(held, member) end
redis.call('DEL', prefixes[1] .. member)
"""
)


class RedisVectorIndex:
    """Rows are Redis hashes under `prefix` (`ctx`, `key`, `text`, `v`, `owner`), indexed by RediSearch
    as a TAG (`ctx`) and an HNSW cosine vector field (`v`); a row expires with the entry it points to.

    The index is created on first use with the vectors' dimensions. A search is a KNN query filtered
    by context: `(@ctx:{<context>})=>[KNN k @v $q AS dist]`. Needs a server with RediSearch 2.4+
    (Redis Stack or Redis 8); a standalone server or a primary (not a Cluster).

    At most `max_entries` rows, counted by every pod: past it, an addition gives up the oldest row of
    the owner holding the most (`add`'s `owner`, the caller; else the context), in the same Lua
    script (`_redis_fair.py`), so that one caller's flood of prompts only pushes out its own rows
    once it holds as many as any other, rather than filling the server until `maxmemory` evicts
    whatever it picks. The bookkeeping is kept under `{prefix}fair:`.
    """

    name = "redis"
    owned = True
    """`add` takes the `owner` of a row (see `VectorIndex`)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        index_name: str = "llm-cache-semantic",
        prefix: str = "llm-cache:semantic:",
        max_entries: int = 100_000,
        socket_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.index_name = index_name
        self.prefix = prefix
        self.max_entries = max_entries
        self.socket_timeout = socket_timeout
        self._rows = RedisFairRows(f"{prefix}fair:", [prefix], max_entries)
        self._clients: PerLoop[Any] = PerLoop(self._make_client, lambda client: client.aclose())
        self._created: set[int] = set()
        """Dimensions an index was made (or found) for; emptied when a search finds no index."""

    def _make_client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(
            self.url, protocol=2, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout
        )

    def _client(self) -> Any:
        return self._clients.get()

    async def start(self) -> None:
        """Check now that the server has RediSearch (`IndexUnavailable` if not), rather than on the first
        request. Any other failure (a server that cannot be reached yet) is left to fail open later."""
        import redis.exceptions

        try:
            await self._client().execute_command("FT._LIST")
        except redis.exceptions.ResponseError as error:
            unavailable = self._unavailable(error)
            if isinstance(unavailable, IndexUnavailable):
                raise unavailable from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            pass

    def _unavailable(self, error: Exception) -> Exception:
        """`IndexUnavailable` for the reply of a server without RediSearch; any other error as it is."""
        text = str(error).lower()
        if "unknown command" not in text and "unknown subcommand" not in text:
            return error
        return IndexUnavailable(
            f"the semantic cache's Redis vector index needs the RediSearch module, and the Redis at "
            f"{without_password(self.url)} does not have it (it does not know the FT.* commands). "
            "Use Redis Stack (redis-stack-server) or Redis 8 or later, which include it, "
            "or load it with `--loadmodule /path/to/redisearch.so`; "
            "or keep the index in process (`InProcessIndex()`, or `cache.semantic.index.type: memory` in a config file)"
        )

    def _doc(self, key: str) -> str:
        return self.prefix + _member(key)

    async def _ensure(self, client: Any, dimensions: int) -> None:
        if dimensions in self._created:
            return
        import redis.exceptions

        try:
            await client.execute_command(
                "FT.CREATE", self.index_name, "ON", "HASH", "PREFIX", "1", self.prefix,
                "SCHEMA", "ctx", "TAG", "v", "VECTOR", *_SCHEMA_ALGORITHM,
                "TYPE", "FLOAT32", "DIM", str(dimensions), "DISTANCE_METRIC", "COSINE",
            )  # fmt: skip
        except redis.exceptions.ResponseError as error:
            if "already exists" not in str(error).lower():
                raise self._unavailable(error) from None
        self._created.add(dimensions)

    async def add(
        self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None, owner: str | None = None
    ) -> None:
        """Index `key` in `context` for `owner` (default: the context), whose rows a full index gives up
        first when it holds the most."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        client = self._client()
        await self._ensure(client, len(vector))
        rows = self._rows
        ms = 0 if ttl is None else max(1, int(ttl * 1000))
        fields = ("ctx", context, "key", key, "text", text, "v", vector.tobytes())
        owner = owner_id(context if owner is None else owner)
        await _ADD(client, rows.arguments(_member(key), owner, ms, rows.expires(ttl), *fields))

    async def search(self, context: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        import redis.exceptions

        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        client = self._client()
        query = f"(@ctx:{{{_escape_tag(context)}}})=>[KNN {int(k)} @v $q AS dist]"
        try:
            reply = await client.execute_command(
                "FT.SEARCH", self.index_name, query, "PARAMS", "2", "q", vector.tobytes(),
                "SORTBY", "dist", "RETURN", "3", "key", "text", "dist", "LIMIT", "0", str(int(k)), "DIALECT", "2",
            )  # fmt: skip
        except redis.exceptions.ResponseError as error:
            if "no such index" in str(error).lower() or "unknown index" in str(error).lower():
                self._created.clear()  # never made, or dropped elsewhere: the next add makes it again
                return []
            raise self._unavailable(error) from None
        out = []
        for fields in reply[2::2]:
            row = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
            if "key" in row and "dist" in row:
                out.append(Neighbour(_text(row["key"]), _text(row.get("text", b"")), 1.0 - float(_text(row["dist"]))))
        return out

    async def delete(self, key: str) -> None:
        await _DELETE(self._client(), self._rows.arguments(_member(key)))

    async def clear(self) -> None:
        """Drop the index and every row in it, whoever wrote them (other pods, other key prefixes)."""
        import redis.exceptions

        try:
            await self._client().execute_command("FT.DROPINDEX", self.index_name, "DD")
        except redis.exceptions.ResponseError as error:
            if "unknown index" not in str(error).lower() and "no such index" not in str(error).lower():
                raise
        await self._rows.clear(self._client())
        self._created.clear()

    async def close(self) -> None:
        await self._clients.close()


def _member(key: str) -> str:
    """The name of `key`'s row under the prefix (and in the bookkeeping)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _escape_tag(value: str) -> str:
    """A TAG query value with RediSearch's punctuation escaped (contexts are hex digests already)."""
    return "".join(ch if ch.isalnum() or ch == "_" else "\\" + ch for ch in value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
