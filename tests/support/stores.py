"""Store doubles for failure and counting scenarios (real stores are tested in tests/middleware/stores)."""

from __future__ import annotations

from llm_cache.middleware.stores import MemoryStore


class DeadStore:
    """A store whose every call raises, like a Redis that went away."""

    name = "dead"

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("connection refused")

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise ConnectionError("connection refused")

    async def delete(self, key: str) -> None:
        raise ConnectionError("connection refused")

    async def clear(self, prefix: str | None = None) -> None:
        raise ConnectionError("connection refused")

    async def close(self) -> None:
        return None


class CountingStore(MemoryStore):
    """A MemoryStore that counts reads and remembers TTLs.

    Once a request has read the store it either leads its flight or waits on the
    leader, so `reads` tells a test when every concurrent request is parked.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.ttls: list[float | None] = []

    def get_now(self, key: str) -> bytes | None:  # (every read: `get` reads through it)
        self.reads += 1
        return super().get_now(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.ttls.append(ttl)
        await super().set(key, value, ttl)


ABILITY_METHODS = {
    "size": ("current_size",),
    "batch": ("get_many", "set_many"),
    "ttl_reads": ("get_with_ttl",),
    "locking": ("try_lock", "unlock"),
    "pubsub": ("publish", "pubsub_client"),
    "prefix_rules": ("check_prefix",),
    "tags": ("tag", "invalidate_tags"),
    "sync_reads": ("get_now",),
}
"""Each declarable ability -> the methods a store that declares it has (`stores/base.py`)."""


def declared_abilities_match_methods(store: object) -> dict[str, tuple[bool, bool]]:
    """ability -> (declared, has the methods), for every ability where the two disagree."""
    from llm_cache.middleware.stores.base import Abilities

    declared = getattr(store, "abilities", None)
    assert isinstance(declared, Abilities), f"{type(store).__name__} declares no abilities"
    found = {
        ability: (getattr(declared, ability), all(callable(getattr(store, m, None)) for m in methods))
        for ability, methods in ABILITY_METHODS.items()
    }
    return {ability: pair for ability, pair in found.items() if pair[0] != pair[1]}
