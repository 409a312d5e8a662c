"""A disk store whose folder someone else can write (a shared volume, a folder opened to a group): what
it reads there is never more than an answer, which the entry decoder and the key check still refuse."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import diskcache
import pytest

from llm_cache.middleware.stores import DiskStore
from llm_cache.middleware.stores.base import StoreError

BIG = b"x" * 100_000
"""A value diskcache keeps in a file of its own (over its 32 KiB `disk_min_file_size`)."""


class Planted:
    """A pickle that touches `marker` when it is loaded: any code could stand in its place."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


async def test_a_pickle_planted_in_the_folder_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    store = DiskStore(tmp_path / "cache")
    try:
        await store.set("default:k", b"entry", 60)
        await store.tag("default:k", ["doc:1"], 60)
        with diskcache.Cache(str(tmp_path / "cache")) as other:  # another writer of the folder
            other.set("default:planted", Planted(marker))
            other.set(("key", Planted(marker)), b"x")  # a key diskcache pickles too
        with diskcache.Cache(str(tmp_path / "cache" / "tags")) as other:
            other.set("doc:2", Planted(marker))
        with pytest.raises(StoreError):
            await store.get("default:planted")
        with pytest.raises(StoreError):
            await store.clear("default:")  # reads every key
        with pytest.raises(StoreError):
            await store.invalidate_tags(["doc:2"])
        assert not marker.exists()
        assert await store.invalidate_tags(["doc:1"]) == ["default:k"]  # the index's own records still read
        assert await store.get("default:k") is None
    finally:
        await store.close()


def _point_row_at(folder: Path, key: str, filename: str) -> None:
    with sqlite3.connect(folder / "cache.db") as db:
        assert db.execute("UPDATE Cache SET filename = ? WHERE key = ?", (filename, key)).rowcount == 1


VICTIM = b"another tenant's or the system's file"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(VICTIM)
    return path


@contextlib.asynccontextmanager
async def a_store_holding_a_value_file(folder: Path) -> AsyncIterator[DiskStore]:
    store = DiskStore(folder)
    try:
        await store.set("default:k", BIG, 60)
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("name", ["absolute", "relative"])
async def test_a_row_naming_a_file_outside_the_folder_is_neither_read_nor_removed(
    tmp_path: Path, victim: Path, name: str
) -> None:
    folder = tmp_path / "cache"
    async with a_store_holding_a_value_file(folder) as store:
        _point_row_at(folder, "default:k", str(victim) if name == "absolute" else "../victim")
        with pytest.raises(StoreError):
            await store.get("default:k")
        await store.delete("default:k")
        assert victim.read_bytes() == VICTIM


async def test_a_value_file_replaced_by_a_symlink_is_not_followed(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "cache"
    async with a_store_holding_a_value_file(folder) as store:
        [value_file] = list(folder.rglob("*.val"))
        value_file.unlink()
        value_file.symlink_to(victim)
        assert await store.get("default:k") is None  # a miss: the request goes upstream
        await store.set("default:k", BIG, 60)  # and its answer is stored again
        assert await store.get("default:k") == BIG
        assert victim.read_bytes() == VICTIM
