"""`RedisFairRows`: `FairAges`'s rule kept in Redis, so that every pod sharing a Redis bounds the same
rows fairly: once the rows pass `cap`, an addition gives up the oldest row of the owner holding the
most (of owners of equal size, the one whose size changed last: the one adding, when it is one of
them), in the same Lua script as the addition (one round trip, atomic on the server, whichever pods
add at once).

A row is a `member` (a hex digest) naming one or more Redis keys (`key_prefixes` + member); the
first is the one whose absence says the row has gone. The bookkeeping lives under `base`: `owners`
(a sorted set of owners scored by their rows times 2**32 plus the `clock` tick of their last change,
so the highest is the one to give way; past 2**21 rows an owner's score is its rows alone, as a
double holds no more, and ties among such owners go by name), `rows` (the total), `o:<owner>` (the
owner's members, scored by `clock`, a counter: oldest first) and `expiry` (`<owner>|<member>` by
the time, in milliseconds, its keys expire). A row that leaves by itself (its TTL, a server
evicting it under `maxmemory`, a `DEL`) leaves a ghost in the bookkeeping: each addition forgets
up to `SWEEP` rows whose time is up and whose keys are gone, and an eviction that meets a ghost
forgets it and goes on, at most `budget` steps an addition. A lost total is counted again from
`owners`. The scripts name keys they do not declare: a standalone Redis or a primary, not a
Cluster (as RediSearch's vector index itself needs).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

SWEEP = 4
"""Rows whose time is up forgotten per addition at most: more than the one an addition can add."""

_COMMON = """
local base, cap, budget, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nkeys = tonumber(ARGV[5])
local prefixes = {}
for i = 1, nkeys do prefixes[i] = ARGV[5 + i] end
local at = 6 + nkeys
local owners, total, expiry = base .. 'owners', base .. 'rows', base .. 'expiry'
local WORD = 4294967296

if redis.call('EXISTS', total) == 0 then
  local sum, sizes = 0, redis.call('ZRANGE', owners, 0, -1, 'WITHSCORES')
  for i = 2, #sizes, 2 do sum = sum + math.floor(tonumber(sizes[i]) / WORD) end
  redis.call('SET', total, sum)
end
local function resized(owner)
  local n = redis.call('ZCARD', base .. 'o:' .. owner)
  if n == 0 then return redis.call('ZREM', owners, owner) end
  local tick = 0
  if n < 2097152 then tick = redis.call('INCR', base .. 'clock') % WORD end
  redis.call('ZADD', owners, string.format('%.0f', n * WORD + tick), owner)
end

local function unlist(owner, member)
  redis.call('ZREM', expiry, owner .. '|' .. member)
  if redis.call('ZREM', base .. 'o:' .. owner, member) == 1 then
    redis.call('DECR', total)
    resized(owner)
  end
end

local function list(owner, member, expires)
  local added = redis.call('ZADD', base .. 'o:' .. owner, redis.call('INCR', base .. 'clock'), member)
  if expires > 0 then
    redis.call('ZADD', expiry, expires, owner .. '|' .. member)
  else
    redis.call('ZREM', expiry, owner .. '|' .. member)
  end
  if added == 1 then
    redis.call('INCR', total)
    resized(owner)
  end
end

local function sweep()
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, SWEEP)) do
    local cut = string.find(entry, '|', 1, true)
    local member = string.sub(entry, cut + 1)
    if redis.call('EXISTS', prefixes[1] .. member) == 0 then unlist(string.sub(entry, 1, cut - 1), member) end
  end
end

local function evict()
  local steps = budget
  while steps > 0 and tonumber(redis.call('GET', total)) > cap do
    steps = steps - 1
    local owner = redis.call('ZREVRANGE', owners, 0, 0)[1]
    if not owner then
      redis.call('SET', total, 0)
      break
    end
    local oldest = redis.call('ZRANGE', base .. 'o:' .. owner, 0, 0)[1]
    if oldest then
      unlist(owner, oldest)
      for i = 1, nkeys do redis.call('DEL', prefixes[i] .. oldest) end
    else
      redis.call('ZREM', owners, owner)
    end
  end
end
"""
"""What every script starts with: its arguments (`RedisFairRows.arguments`), then these functions."""


class Script:
    """A Lua script run by its digest (`EVALSHA`), sent whole only when the server lacks it. A fair
    script starts with `_COMMON`; `fair=False` runs `body` alone."""

    __slots__ = ("sha", "text")

    def __init__(self, body: str, *, fair: bool = True) -> None:
        self.text = f"local SWEEP = {SWEEP}\n{_COMMON}\n{body}" if fair else body
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    @property
    def script(self) -> str:
        """The text, by the name redis-py's pipeline loads a script it lacks by (`Pipeline.load_scripts`)."""
        return self.text

    def queue(self, pipe: Any, arguments: Sequence[Any], keys: Sequence[Any] = ()) -> None:
        """Queue the script on a redis-py pipeline by its digest, registered with the pipeline (as redis-py's
        own `Script` is) so that `execute` first loads it on a server that lacks it (none has it after a
        restart or a `SCRIPT FLUSH`): a pipeline's `NOSCRIPT` would come too late to send it whole."""
        pipe.scripts.add(self)
        pipe.evalsha(self.sha, len(keys), *keys, *arguments)

    async def __call__(self, client: Any, arguments: Sequence[Any]) -> Any:
        import redis.exceptions

        try:
            return await client.evalsha(self.sha, 0, *arguments)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.text, 0, *arguments)


class RedisFairRows:
    """The arguments every script of `Script` takes, for rows under `key_prefixes`, bounded to `cap`."""

    __slots__ = ("base", "budget", "cap", "clock", "key_prefixes")

    def __init__(
        self,
        base: str,
        key_prefixes: Sequence[str],
        cap: int,
        *,
        budget: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cap <= 0 or budget <= 0:
            raise ValueError("the row cap and the eviction budget must be positive")
        self.base = base
        self.key_prefixes = tuple(key_prefixes)
        self.cap = cap
        self.budget = budget
        self.clock = clock
        """Wall-clock seconds: when a row's time is up (a pod's clock ahead only sweeps a ghost early,
        and a row still there is never forgotten)."""

    def arguments(self, *rest: Any) -> list[Any]:
        """The script's arguments: the common ones, then `rest` (from `ARGV[at]` on)."""
        now = int(self.clock() * 1000)
        return [self.base, self.cap, self.budget, now, len(self.key_prefixes), *self.key_prefixes, *rest]

    def expires(self, ttl: float | None) -> int:
        """When a row kept `ttl` seconds from now expires, in milliseconds (0: never)."""
        return 0 if ttl is None else int(self.clock() * 1000) + max(1, int(ttl * 1000))

    def listed(self, member: str, owner: str, ttl: float | None) -> list[Any]:
        """`LIST`'s arguments: `member`, kept `ttl` seconds, is `owner`'s (any string) newest row."""
        return self.arguments(member, owner_id(owner), self.expires(ttl))

    async def clear(self, client: Any) -> None:
        """Forget every row (their keys are the caller's to delete)."""
        await _CLEAR(client, self.arguments())


def owner_id(owner: str) -> str:
    """The name an owner's rows are kept under: a digest, so any string is a key of fixed length."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


LIST = Script(
    """
local member, owner, expires = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
sweep()
list(owner, member, expires)
evict()
"""
)
"""List a row whose keys the caller has written as its owner's newest; past the cap, evict
(`RedisFairRows.listed`'s arguments)."""

_CLEAR = Script(
    """
for _, owner in ipairs(redis.call('ZRANGE', owners, 0, -1)) do redis.call('DEL', base .. 'o:' .. owner) end
redis.call('DEL', owners, total, expiry, base .. 'clock')
"""
)
