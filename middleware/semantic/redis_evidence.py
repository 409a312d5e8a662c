"""Bounded mode's evidence in Redis, so that every pod learns from every pod's verifications."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .._loop_clients import PerLoop
from ._redis_fair import LIST, RedisFairRows, Script
from .bound import Tally
from .risk import HISTORY

_RAISE = Script(
    """
local seen = redis.call('GET', KEYS[1])
if not seen or tonumber(seen) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
""",
    fair=False,
)
"""Keep the highest similarity at which an answer was judged wrong (and refresh its lifetime)."""


def _digest(key: str) -> str:
    """The name a stored answer's record is kept under (and listed by)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _count(value: Any) -> int:
    """A tally's count as written by `RedisEvidence`; anything else (a hostile or broken write) is 0."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _similarity(text: str) -> float | None:
    """A cosine similarity, or None for anything that is not one (NaN, infinities, out of range)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if -1.0 <= value <= 1.0 else None  # a NaN compares false


class RedisEvidence:
    """The per-risk-bin tallies in one hash per partition (`{prefix}risk:<partition>`, `{prefix}risk`
    for a bound used alone: `n<bin>` verdicts, `w<bin>` wrong ones, `s<bin>` candidates decided,
    `lookups` semantic lookups), kept `keep` seconds after its last change;
    per stored answer, its last verdicts (`{prefix}history:<digest>`, a list of `similarity:0|1`) and,
    if judged wrong, the highest similarity it was wrong at (`{prefix}wrong:<digest>`), each kept
    `keep` seconds; and the newest `max_outcomes` verification outcomes (`{prefix}outcomes`).
    Any Redis 2.6+ (a standalone server or a primary); the bound re-reads the tally every `refresh`
    seconds. What it reads back that it could not have written (a negative or unreadable count, a
    verdict whose similarity is no cosine) counts as nothing.

    At most `max_records` per-answer records and `max_tallies` partitions' tallies, counted by every
    pod: past either, the owner holding the most (the payer `ErrorBound` names: the caller without its
    namespace; else the partition) gives up its least recently written (`_redis_fair.py`), so that a
    caller inventing answers or namespaces only ever pushes out its own evidence, never the verdict
    that keeps another caller from being served an answer judged wrong for it, rather than growing
    the server until `maxmemory` evicts whatever it picks. The bookkeeping is under `{prefix}fair:`."""

    owned = True
    """`record` and `count` take the `owner` of what they write (see `Evidence`)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "llm-cache:bound:",
        keep: float = 30 * 86400,
        max_outcomes: int = 10_000,
        max_records: int = 1_000_000,
        max_tallies: int = 100_000,
        socket_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.keep = keep
        self.max_outcomes = max_outcomes
        self.max_records = max_records
        self.max_tallies = max_tallies
        self._records = RedisFairRows(f"{prefix}fair:records:", [f"{prefix}history:", f"{prefix}wrong:"], max_records)
        self._tallies = RedisFairRows(f"{prefix}fair:tallies:", [f"{prefix}risk:"], max_tallies)
        self.socket_timeout = socket_timeout
        self._clients: PerLoop[Any] = PerLoop(self._make_client, lambda client: client.aclose())

    def _make_client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(
            self.url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout
        )

    def _answer_key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{_digest(key)}"

    def _tally_key(self, partition: str) -> str:
        return f"{self.prefix}risk:{partition}" if partition else f"{self.prefix}risk"

    def _list_tally(self, pipe: Any, partition: str, owner: str | None) -> None:
        """List `partition`'s tally as its owner's newest (a bound used alone has one tally: none to bound)."""
        if partition:
            LIST.queue(pipe, self._tallies.listed(partition, owner or partition, self.keep))

    async def record(
        self, key: str, bin: int, similarity: float, wrong: bool, partition: str = "", owner: str | None = None
    ) -> None:
        client = self._clients.get()
        keep = max(1, int(self.keep))
        history, tally = self._answer_key("history", key), self._tally_key(partition)
        async with client.pipeline(transaction=False) as pipe:
            pipe.hincrby(tally, f"n{bin}", 1)
            pipe.rpush(history, f"{similarity!r}:{int(wrong)}")
            pipe.ltrim(history, -HISTORY, -1)
            pipe.expire(history, keep)
            if wrong:
                pipe.hincrby(tally, f"w{bin}", 1)
                _RAISE.queue(pipe, [repr(similarity), str(keep)], keys=[self._answer_key("wrong", key)])
            pipe.expire(tally, keep)
            LIST.queue(pipe, self._records.listed(_digest(key), owner or partition, self.keep))
            self._list_tally(pipe, partition, owner)
            await pipe.execute()

    async def _per_bin(self, kinds: str, bins: int, partition: str) -> tuple[dict[str, list[int]], int]:
        """The partition's per-bin counts of each of `kinds` (`bins` long each), and its lookups."""
        fields = await self._clients.get().hgetall(self._tally_key(partition))
        counts = {kind: [0] * bins for kind in kinds}
        lookups = 0
        for raw, value in fields.items():
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name == "lookups":
                lookups = _count(value)
            elif name[:1] in counts and name[1:].isdigit() and int(name[1:]) < bins:
                counts[name[0]][int(name[1:])] = _count(value)
        return counts, lookups

    async def tally(self, bins: int, partition: str = "") -> Tally:
        counts, lookups = await self._per_bin("nws", bins, partition)
        return Tally(counts["n"], counts["w"], counts["s"], lookups)

    async def count(self, seen: Sequence[int], lookups: int, partition: str = "", owner: str | None = None) -> None:
        if not lookups and not any(seen):
            return
        tally = self._tally_key(partition)
        async with self._clients.get().pipeline(transaction=False) as pipe:
            for bin, candidates in enumerate(seen):
                if candidates:
                    pipe.hincrby(tally, f"s{bin}", candidates)
            if lookups:
                pipe.hincrby(tally, "lookups", lookups)
            pipe.expire(tally, max(1, int(self.keep)))
            self._list_tally(pipe, partition, owner)
            await pipe.execute()

    async def wrong_at(self, key: str) -> float | None:
        value = await self._clients.get().get(self._answer_key("wrong", key))
        return None if value is None else float(value)

    async def log_outcome(self, similarity: float, outcome: str) -> None:
        """Keep a verification's outcome in the list `{prefix}outcomes`, trimmed to `max_outcomes`."""
        async with self._clients.get().pipeline(transaction=False) as pipe:
            pipe.lpush(f"{self.prefix}outcomes", f"{similarity!r} {outcome}")
            pipe.ltrim(f"{self.prefix}outcomes", 0, self.max_outcomes - 1)
            await pipe.execute()

    async def outcomes(self, limit: int) -> list[tuple[float, str]]:
        """The newest `limit` outcomes every pod logged."""
        if limit <= 0:
            return []
        records = await self._clients.get().lrange(f"{self.prefix}outcomes", 0, limit - 1)
        found = []
        for record in records:
            similarity, _, outcome = (record.decode() if isinstance(record, bytes) else str(record)).partition(" ")
            found.append((float(similarity), outcome))
        return found

    async def history(self, key: str) -> list[tuple[float, bool]]:
        verdicts = await self._clients.get().lrange(self._answer_key("history", key), 0, -1)
        out = []
        for verdict in verdicts:
            similarity, _, wrong = (verdict.decode() if isinstance(verdict, bytes) else str(verdict)).partition(":")
            read = _similarity(similarity)
            if read is not None and wrong in ("0", "1"):  # anything else is no verdict
                out.append((read, wrong == "1"))
        return out

    async def aclose(self) -> None:
        await self._clients.close()
