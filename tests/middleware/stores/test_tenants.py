"""A full in-process or disk store gives up the least recently used entry of the owner holding the most, so one
tenant's flood (unique prompts, long embeddings lists) pushes out its own entries, never another's.

Through the real openai SDK (the caching transport against the fake provider), and on the stores
directly where the rule lives: `MemoryStore`, a `TieredStore`'s L1 over a real Redis, and `DiskStore`
(diskcache's SQLite, where every process sharing the folder keeps one tally of the owners).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import diskcache
import httpx2
import openai
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware._keys import key_owner
from llm_cache.middleware.stores import DiskStore, MemoryStore
from llm_cache.middleware.stores.redis import RedisStore
from llm_cache.middleware.stores.tiered import TieredStore

from .conftest import SLACK, unique_prefix

CHAT = "/chat/completions"
EMBEDDINGS = "/embeddings"


def sdk(cache: Cache, fake_provider: Any, key: str) -> openai.OpenAI:
    http = httpx2.Client(transport=CachingTransport(cache=cache))
    return openai.OpenAI(api_key=key, base_url=fake_provider.openai_base_url, http_client=http, max_retries=0)


def ask(client: openai.OpenAI, question: str, namespace: str | None = None) -> str:
    headers = {"x-cache-namespace": namespace} if namespace else None
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}], extra_headers=headers
    )
    return raw.headers["x-cache"]


def test_one_tenant_s_flood_of_unique_prompts_never_pushes_another_tenant_s_entries_out(fake_provider: Any) -> None:
    cache = Cache(store=MemoryStore(max_entries=20))
    bob, alice = sdk(cache, fake_provider, "sk-bob"), sdk(cache, fake_provider, "sk-alice")
    questions = [f"bob's question {i}" for i in range(5)]
    assert [ask(bob, q) for q in questions] == ["MISS"] * 5

    flood = [ask(alice, f"alice's unique prompt {i}", namespace=f"n{i % 7}") for i in range(80)]

    assert flood == ["MISS"] * 80  # (spread over namespaces: still one tenant)
    assert [ask(bob, q) for q in questions] == ["HIT"] * 5
    assert fake_provider.count(CHAT) == 85
    assert [ask(alice, f"alice's unique prompt {i}", namespace=f"n{i % 7}") for i in (79, 78)] == ["HIT"] * 2


def test_a_few_long_embeddings_lists_never_push_another_tenant_s_items_out(fake_provider: Any) -> None:
    cache = Cache(store=MemoryStore(max_entries=40))
    bob, alice = sdk(cache, fake_provider, "sk-bob"), sdk(cache, fake_provider, "sk-alice")
    mine = [f"bob's text {i}" for i in range(6)]
    bob.embeddings.create(model="text-embedding-3-small", input=mine)

    for batch in range(3):
        alice.embeddings.create(model="text-embedding-3-small", input=[f"alice {batch}.{i}" for i in range(100)])

    raw = bob.embeddings.with_raw_response.create(model="text-embedding-3-small", input=mine)
    assert (raw.headers["x-cache"], raw.headers["x-cache-items-hit"]) == ("HIT", "6")
    assert fake_provider.count(EMBEDDINGS) == 4
    assert cache.store.current_size()[0] == 40  # type: ignore[attr-defined]


async def test_a_store_over_its_byte_bound_gives_up_the_entries_of_the_owner_holding_the_most_bytes() -> None:
    """Bob holds more entries, Alice more bytes: Alice's large answers push out only her own."""
    store = MemoryStore(max_entries=1000, max_bytes=10_000)
    for i in range(20):
        await store.set(f"v1:default:cbob:{i}", b"b" * 100, None)
    for i in range(20):
        await store.set(f"v1:default:calice:{i}", b"a" * 1000, None)

    assert all([await store.get(f"v1:default:cbob:{i}") for i in range(20)])
    assert [await store.get(f"v1:default:calice:{i}") is not None for i in range(20)] == [False] * 12 + [True] * 8
    assert store.current_size() == (28, 10_000)


async def test_the_owner_giving_way_gives_up_its_own_least_recently_used_entry() -> None:
    store = MemoryStore(max_entries=6, max_bytes=None)
    for i in range(2):
        await store.set(f"v1:default:cbob:{i}", b"b", None)
    for i in range(4):
        await store.set(f"v1:default:calice:{i}", b"a", None)
    assert await store.get("v1:default:calice:0") == b"a"  # read: now Alice's most recently used

    await store.set("v1:default:calice:4", b"a", None)

    assert sorted(store._data) == [
        "v1:default:calice:0",
        "v1:default:calice:2",
        "v1:default:calice:3",
        "v1:default:calice:4",
        "v1:default:cbob:0",
        "v1:default:cbob:1",
    ]


async def test_an_owner_is_its_key_space_and_scope_never_its_namespace() -> None:
    """Two caches under other prefixes are other owners; one caller's namespaces are one."""
    store = MemoryStore(max_entries=9, max_bytes=None)
    for prefix in ("v1:", "v2:"):
        for i in range(3):
            await store.set(f"{prefix}default:cbob:{i}", b"b", None)
    for i in range(30):
        await store.set(f"v1:ns{i}:calice:{i}", b"a", None)

    assert sum(key.startswith(("v1:default:cbob:", "v2:default:cbob:")) for key in store._data) == 6
    assert sorted(key for key in store._data if "calice" in key) == [f"v1:ns{i}:calice:{i}" for i in (27, 28, 29)]


async def test_a_tiered_store_s_l1_keeps_another_tenant_s_entries_through_a_flood(redis_server: Any) -> None:
    prefix = unique_prefix()
    l1 = MemoryStore(max_entries=10)
    store = TieredStore(l1, RedisStore(redis_server.url, prefix=prefix, **SLACK), channel=f"{prefix}inval")
    await store.start()
    try:
        for i in range(3):
            await store.set(f"v1:default:cbob:{i}", b"b", 60)
        for i in range(50):
            await store.set(f"v1:default:calice:{i}", b"a", 60)

        assert [l1.get_now(f"v1:default:cbob:{i}") for i in range(3)] == [b"b"] * 3
        assert len(l1) == 10
    finally:
        await store.close()


class Reference:
    """The rule spelled out, at O(owners) a write: past a bound, the least recently used key of the
    owner holding the most (entries or bytes), the one whose size changed last among equals."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.sizes: dict[str, int] = {}
        self.order: dict[str, list[str]] = {}
        self.changed: dict[str, int] = {}
        self.clock = 0

    def set(self, key: str, size: int) -> None:
        if size > self.max_bytes:
            return
        if key in self.sizes:
            self.delete(key)
        self.sizes[key] = size
        self.order.setdefault(key_owner(key), []).append(key)
        self._changed(key_owner(key))
        while len(self.sizes) > self.max_entries or sum(self.sizes.values()) > self.max_bytes:
            by_entries = len(self.sizes) > self.max_entries

            def held(owner: str, by_entries: bool = by_entries) -> tuple[int, int]:
                keys = self.order[owner]
                return (len(keys) if by_entries else sum(self.sizes[k] for k in keys)), self.changed[owner]

            self.delete(self.order[max(self.order, key=held)][0])

    def get(self, key: str) -> None:
        if key in self.sizes:
            keys = self.order[key_owner(key)]
            keys.remove(key)
            keys.append(key)

    def delete(self, key: str) -> None:
        if self.sizes.pop(key, None) is None:
            return
        owner = key_owner(key)
        self.order[owner].remove(key)
        if self.order[owner]:
            self._changed(owner)
        else:
            del self.order[owner], self.changed[owner]

    def _changed(self, owner: str) -> None:
        self.clock += 1
        self.changed[owner] = self.clock


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "set", "get", "delete"]),
        st.integers(0, 3),  # the owner
        st.integers(0, 5),  # its key
        st.integers(1, 40),  # the value's bytes
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(max_entries=st.integers(1, 8), max_bytes=st.integers(20, 160), operations=OPERATIONS)
async def test_a_full_store_keeps_exactly_what_the_rule_says_whatever_the_writes_reads_and_deletes(
    max_entries: int, max_bytes: int, operations: list[tuple[str, int, int, int]]
) -> None:
    store, reference = MemoryStore(max_entries=max_entries, max_bytes=max_bytes), Reference(max_entries, max_bytes)
    for operation, owner, number, size in operations:
        key = f"v1:n{number % 2}:c{owner}:{number}"
        if operation == "set":
            await store.set(key, b"x" * size, None)
            reference.set(key, size)
        elif operation == "get":
            await store.get(key)
            reference.get(key)
        else:
            await store.delete(key)
            reference.delete(key)
        assert sorted(store._data) == sorted(reference.sizes)
    assert store.current_size() == (len(reference.sizes), sum(reference.sizes.values()))


def tallies(directory: Path) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(the owners' tally the triggers keep, the same counted from the rows now)."""
    with sqlite3.connect(directory / "cache.db") as connection:
        kept = connection.execute("SELECT owner, bytes, entries FROM LlmcOwners ORDER BY owner").fetchall()
        counted = connection.execute(
            "SELECT coalesce(tag, ''), sum(size + coalesce(length(value), 0)), count(*) FROM Cache"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return kept, counted


async def test_a_full_disk_store_gives_up_the_entries_of_the_owner_holding_the_most_bytes(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, size_limit=400_000)
    try:
        for i in range(10):
            await store.set(f"v1:default:cbob:{i}", b"b" * 4000, None)
        for i in range(400):
            await store.set(f"v1:n{i % 5}:calice:{i}", b"a" * 4000, None)

        assert [await store.get(f"v1:default:cbob:{i}") for i in range(10)] == [b"b" * 4000] * 10
        kept = [await store.get(f"v1:n{i % 5}:calice:{i}") is not None for i in range(400)]
        assert 0 < sum(kept) < 100 and kept[-1]
        assert store.current_size()[1] <= 400_000
    finally:
        await store.close()


_POLICY_REGISTERED = """
import asyncio, sys, tempfile
import diskcache
from llm_cache.middleware.stores import DiskStore
from llm_cache.middleware.stores._disk_owners import FAIR_LRU
before = FAIR_LRU in diskcache.EVICTION_POLICY
async def main():
    store = DiskStore(tempfile.mkdtemp(), size_limit=100_000)
    await store.set("v1:default:calice:1", b"a", None)
    await store.close()
asyncio.run(main())
print(before, FAIR_LRU in diskcache.EVICTION_POLICY)
"""


def test_importing_the_disk_store_leaves_diskcache_s_policy_table_as_it_was_until_a_store_opens() -> None:
    """diskcache's `EVICTION_POLICY` is its own global table: the fair policy joins it when a `DiskStore`
    opens a folder, never as a side effect of importing the library (a fresh process, to see the import)."""
    result = subprocess.run(
        [sys.executable, "-c", _POLICY_REGISTERED], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


async def test_a_disk_store_s_tally_of_owners_follows_every_write_overwrite_expiry_delete_and_clear(
    tmp_path: Path,
) -> None:
    store = DiskStore(tmp_path)
    try:
        for i in range(6):
            await store.set(f"v1:default:cbob:{i}", b"b" * (100 + i), None)
            await store.set(f"v1:team:calice:{i}", b"a" * 50_000, None)  # (past 32 KiB: a value file)
        await store.set("v1:default:cbob:0", b"b" * 60_000, None)  # overwritten, in a file now
        await store.set("v1:team:calice:0", b"a", None)  # and back into SQLite
        await store.set("v1:default:cbob:9", b"b", -1.0)  # expired: the next write culls it
        await store.set("__ping__", b"p", None)  # no owner's key: the empty owner's
        await store.delete("v1:team:calice:1")
        await store.clear("v1:team:")
        kept, counted = tallies(tmp_path)

        assert kept == counted == [("", 1, 1), ("v1:cbob", 60_000 + 101 + 102 + 103 + 104 + 105, 6)]
        await store.clear()
        assert tallies(tmp_path) == ([], [])
    finally:
        await store.close()


async def test_a_disk_folder_written_before_owners_were_tallied_is_tallied_once_when_opened(tmp_path: Path) -> None:
    """Its rows carry no owner: they are the empty owner's, which gives way first when it holds the most."""
    before = diskcache.Cache(str(tmp_path), eviction_policy="least-recently-used")
    for i in range(3):
        before.set(f"v1:default:cbob:{i}", b"b" * 10, None)
    before.close()

    store = DiskStore(tmp_path)
    try:
        await store.set("v1:default:cbob:3", b"b" * 10, None)
        assert tallies(tmp_path) == ([("", 30, 3), ("v1:cbob", 10, 1)],) * 2
        again = DiskStore(tmp_path)  # another process opening it: tallied already
        await again.close()
        assert tallies(tmp_path)[0] == [("", 30, 3), ("v1:cbob", 10, 1)]
    finally:
        await store.close()
