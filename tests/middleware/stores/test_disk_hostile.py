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
        await store.clear("other:")  # reads every key: the planted one is skipped, not run
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


def _value_file(folder: Path) -> Path:
    [value_file] = [path for path in folder.rglob("*.val") if "tags" not in path.parts]
    return value_file


@pytest.mark.parametrize("level", ["first", "second"])
async def test_a_value_folder_replaced_by_a_symlink_is_not_followed(tmp_path: Path, level: str) -> None:
    folder, outside = tmp_path / "cache", tmp_path / "outside"
    async with a_store_holding_a_value_file(folder) as store:
        value_file = _value_file(folder)
        planted = value_file.parent if level == "second" else value_file.parent.parent
        mirror = outside / value_file.relative_to(planted)  # what the symlink leads to: a file of the same name
        mirror.parent.mkdir(parents=True)
        mirror.write_bytes(VICTIM)
        for path in sorted(planted.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        planted.rmdir()
        planted.symlink_to(outside)

        assert await store.get("default:k") is None  # a miss, not the file outside
        await store.delete("default:k")
        await store.set("default:k", BIG, 60)
        await store.clear("default:")
        await store.set("default:k", BIG, 60)
        await store.clear()
        assert mirror.read_bytes() == VICTIM
        assert sorted(path.relative_to(outside) for path in outside.rglob("*")) == sorted(
            path.relative_to(outside) for path in [mirror, *mirror.parents] if outside in path.parents
        )


async def test_no_value_is_written_through_a_folder_symlink(tmp_path: Path) -> None:
    folder, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    store = DiskStore(folder)
    try:
        for first in range(256):  # wherever diskcache's random name puts the value file
            (folder / f"{first:02x}").symlink_to(outside, target_is_directory=True)
        with contextlib.suppress(StoreError):  # not stored: the request is answered from upstream
            await store.set("default:k", BIG, 60)
        assert list(outside.iterdir()) == []
        assert await store.get("default:k") is None
    finally:
        await store.close()


async def test_a_planted_key_that_cannot_be_decoded_is_skipped_by_a_prefix_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran"
    store = DiskStore(tmp_path / "cache")
    try:
        for key in ("default:a", "default:b", "other:c"):
            await store.set(key, b"entry", 60)
        await store.set("default:big", BIG, 60)
        with diskcache.Cache(str(tmp_path / "cache")) as other:  # another writer of the folder
            other.set(("default:", Planted(marker)), b"x")  # a key diskcache pickles, naming a callable
            other.set(("default:", 1), b"x")  # a pickled key naming nothing, but no key of this store
        with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:  # and one that is no pickle at all
            db.execute("UPDATE Cache SET key = ? WHERE key = ?", (b"\x80\x05garbage", "other:c"))
            db.execute("UPDATE Cache SET raw = 0 WHERE key = ?", (b"\x80\x05garbage",))
        await store.set("other:c", b"entry", 60)

        with caplog.at_level("WARNING", logger="llm_cache.middleware.stores"):
            await store.clear("default:")
            await store.clear("default:")

        assert [await store.get(key) for key in ("default:a", "default:b", "default:big")] == [None, None, None]
        assert await store.get("other:c") == b"entry"
        assert store.undecodable_skipped == 4  # two keys (the tuple decodes: no str, passed by), by each clear
        assert len([r for r in caplog.records if "cannot decode" in r.getMessage()]) == 1  # logged once
        assert not marker.exists()
    finally:
        await store.close()


async def test_a_tag_index_folder_replaced_by_a_symlink_is_not_opened(tmp_path: Path) -> None:
    folder, outside = tmp_path / "cache", tmp_path / "outside"
    folder.mkdir(mode=0o700)
    outside.mkdir()
    (folder / "tags").symlink_to(outside, target_is_directory=True)
    store = DiskStore(folder)  # fails open: every call a StoreError, the request answered from upstream
    try:
        with pytest.raises(StoreError):
            await store.set("default:k", b"entry", 60)
        assert list(outside.iterdir()) == []
    finally:
        await store.close()


@pytest.mark.parametrize("planted", ["symlink", "folder"])
@pytest.mark.parametrize("where", ["", "tags"])
@pytest.mark.parametrize("name", ["cache.db", "cache.db-wal", "cache.db-shm"])
async def test_a_database_file_that_is_a_symlink_or_not_a_regular_file_is_not_opened(
    tmp_path: Path, where: str, name: str, planted: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder, outside = tmp_path / "cache", tmp_path / "outside.db"
    (folder / where).mkdir(mode=0o700, parents=True)
    outside.touch()  # empty: SQLite would make it its database (or log) and write there
    if planted == "symlink":
        (folder / where / name).symlink_to(outside)
    else:
        (folder / where / name).mkdir()  # a folder where SQLite expects a file
    store = DiskStore(folder)  # fails open: every call a StoreError, the request answered from upstream
    try:
        with pytest.raises(StoreError):
            await store.set("default:k", b"entry", 60)
        assert f"{name} {'is a symlink' if planted == 'symlink' else 'is not a regular file'}" in caplog.text
        assert outside.read_bytes() == b""
        assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "outside.db"]
    finally:
        await store.close()
