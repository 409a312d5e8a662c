"""The embedded stores: MemoryStore, DiskStore and the aiocache adapter."""

from __future__ import annotations

import pytest
from aiocache import SimpleMemoryCache
from aiocache.serializers import NullSerializer

from llm_cache.middleware.stores import AiocacheStore, DiskStore, MemoryStore, Store
from tests.support.stores import declared_abilities_match_methods


async def test_memory_store_evicts_least_recently_used_by_count() -> None:
    store = MemoryStore(max_entries=2)
    await store.set("a", b"1", None)
    await store.set("b", b"2", None)
    assert await store.get("a") == b"1"  # touch a: b is now the oldest
    await store.set("c", b"3", None)
    assert await store.get("b") is None
    assert await store.get("a") == b"1" and await store.get("c") == b"3"


async def test_memory_store_is_bounded_by_bytes() -> None:
    store = MemoryStore(max_entries=100, max_bytes=10)
    await store.set("a", b"12345", None)
    await store.set("b", b"67890", None)
    await store.set("c", b"x", None)
    assert await store.get("a") is None
    assert store.current_size()[1] <= 10 and len(store) == 2
    await store.set("huge", b"x" * 11, None)
    assert await store.get("huge") is None


async def test_memory_store_expires_lazily_without_timers() -> None:
    store = MemoryStore()
    await store.set("gone", b"v", 1e-9)
    await store.set("kept", b"v", 3600)
    assert await store.get("gone") is None
    assert await store.get("kept") == b"v"
    assert len(store) == 1


async def test_memory_store_replacing_a_key_keeps_byte_accounting_exact() -> None:
    store = MemoryStore()
    await store.set("k", b"12345", None)
    await store.set("k", b"12", None)
    assert store.current_size()[1] == 2


def test_memory_store_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        MemoryStore(max_entries=0)


@pytest.fixture(params=["memory", "disk", "aiocache"])
async def store(request: pytest.FixtureRequest, tmp_path) -> Store:  # type: ignore[no-untyped-def]
    if request.param == "memory":
        made: Store = MemoryStore()
    elif request.param == "disk":
        made = DiskStore(tmp_path / "cache")
    else:
        made = AiocacheStore(SimpleMemoryCache(serializer=NullSerializer()))
    yield made
    await made.close()


def test_every_embedded_store_declares_the_abilities_it_has(store: Store) -> None:
    assert declared_abilities_match_methods(store) == {}


async def test_every_embedded_store_keeps_bytes_and_deletes(store: Store) -> None:
    assert isinstance(store, Store)
    await store.set("ns:a", b"\x00\x01binary", 60)
    assert await store.get("ns:a") == b"\x00\x01binary"
    await store.delete("ns:a")
    assert await store.get("ns:a") is None
    await store.delete("never-there")


async def test_every_embedded_store_clears_everything(store: Store) -> None:
    await store.set("x:1", b"1", None)
    await store.set("y:1", b"1", None)
    await store.clear()
    assert await store.get("x:1") is None and await store.get("y:1") is None


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_prefix_clear_removes_only_that_prefix(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store: Store = MemoryStore() if kind == "memory" else DiskStore(tmp_path)
    await store.set("v1:faq:a", b"1", None)
    await store.set("v1:chat:a", b"2", None)
    await store.clear("v1:faq:")
    assert await store.get("v1:faq:a") is None
    assert await store.get("v1:chat:a") == b"2"
    await store.close()


async def test_disk_store_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = DiskStore(tmp_path)
    await first.set("k", b"persisted", 3600)
    await first.close()
    second = DiskStore(tmp_path)
    assert await second.get("k") == b"persisted"
    await second.close()


async def test_disk_store_expires_entries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = DiskStore(tmp_path)
    await store.set("k", b"v", 1e-6)
    assert await store.get("k") is None
    await store.close()


async def test_a_disk_store_keeps_its_answers_from_other_local_users(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The folder a disk store makes holds callers' answers: diskcache made it, its database and its
    value files as the umask said, readable by every local user under the usual 022. The store now
    makes its folder for its owner alone (0700), whatever is inside."""
    directory = tmp_path / "home" / "llm-cache"
    store = DiskStore(directory)
    await store.set("k", b"an answer" * 10_000, None)  # large: a value file of its own
    await store.close()
    again = DiskStore(directory)
    kept = await again.get("k")
    await again.close()
    assert directory.stat().st_mode & 0o077 == 0 and kept == b"an answer" * 10_000


async def test_a_disk_store_in_a_folder_open_to_other_users_says_so(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A folder the operator made is left as it is (it may be shared on purpose), with a warning."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o755)
    store = DiskStore(directory)
    await store.close()
    assert "open to other local users" in caplog.text and directory.stat().st_mode & 0o777 == 0o755
