"""Persistent single-node store on diskcache (SQLite + files), run off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

import diskcache

from .._fork import renew_after_fork
from .._keys import key_owner
from ._codeless_disk import CodelessDisk
from ._disk_owners import fair_policy, owner_tag, tally_owners
from .base import Abilities, StoreError, trim_due

T = TypeVar("T")
logger = logging.getLogger("llm_cache.middleware.stores.disk")

TAG_SLACK = 1.0
"""Seconds a tag's record outlives its longest key (the key is written just after its tag)."""
REOPEN_INTERVAL = 5.0
"""Seconds between attempts to open a cache directory that could not be opened (read-only, missing)."""


def default_cache_dir() -> Path:
    """The user's cache directory (XDG on Linux, ~/Library/Caches on macOS)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "llm-cache"
    if os.uname().sysname == "Darwin":  # pragma: no cover - not on CI
        return Path.home() / "Library" / "Caches" / "llm-cache"
    return Path.home() / ".cache" / "llm-cache"


class DiskStore:
    """Survives restarts on one node; bounded by `size_limit` bytes. When full it gives up the least
    recently used entries of the owner holding the most bytes (`_disk_owners.py`): one caller's flood
    pushes out its own entries, never another's.

    A directory that cannot be opened (read-only, unwritable, on a full disk) does not stop the
    service: every call raises `StoreError` (the engine goes upstream and counts it) and the store
    tries to open the directory again every `REOPEN_INTERVAL` seconds. Errors of an open store
    (EROFS, ENOSPC, EACCES from SQLite or a value file) reach the engine the same way.

    Nothing read from the directory runs code: diskcache unpickles what is not bytes, and a pickle
    planted there (by whoever else can write it) may build only sets (`_codeless_disk.py`); any other
    is a `StoreError`, or, for a key a prefix clear reads, passed by and counted in
    `undecodable_skipped` (the clear goes on with every other key).

    Tags are indexed in a second diskcache under `tags/` that never evicts (an evicted record would
    hide live entries from their invalidation): one record per tag, the set of its keys, living as
    long as its longest key and trimmed of gone keys as it grows.
    """

    name = "disk"
    abilities = Abilities(size=True, tags=True)

    def __init__(self, directory: str | os.PathLike[str] | None = None, size_limit: int = 1024**3) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.size_limit = size_limit
        self._cache: diskcache.Cache | None = None
        self._tags: diskcache.Cache | None = None
        self._opening = threading.Lock()
        renew_after_fork(self)
        self._next_open = 0.0
        try:
            self._open()
        except StoreError as error:
            logger.warning("%s; requests go upstream until it can be opened", error)

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread opening the directory."""
        self._opening = threading.Lock()

    def _open(self) -> diskcache.Cache:
        """The open diskcache (opened now if needed); StoreError while the directory cannot be opened."""
        with self._opening:
            if self._cache is not None:
                return self._cache
            now = time.monotonic()
            if now < self._next_open:
                raise StoreError(f"disk store at {self.directory} is unavailable")
            self._next_open = now + REOPEN_INTERVAL
            try:
                _private_directory(self.directory)
                tags = self.directory / "tags"
                if tags.is_symlink():  # planted: the index (and what clears remove through it) would live outside
                    raise StoreError(f"disk store at {self.directory}: its tags folder is a symlink; remove it")
                _own_databases(self.directory)
                _own_databases(tags)
                self._tags = diskcache.Cache(str(tags), eviction_policy="none", disk=CodelessDisk)
                cache = diskcache.Cache(
                    str(self.directory), size_limit=self.size_limit, eviction_policy=fair_policy(), disk=CodelessDisk
                )
                try:
                    tally_owners(self.directory / "cache.db")
                except BaseException:
                    cache.close()
                    raise
                self._cache = cache
            except (OSError, sqlite3.Error) as error:
                raise StoreError(f"disk store at {self.directory} cannot be opened: {error}") from error
            return self._cache

    async def _run(self, operation: Callable[[diskcache.Cache], T]) -> T:
        cache = self._cache
        if cache is None:
            return await asyncio.to_thread(lambda: operation(self._open()))
        return await asyncio.to_thread(operation, cache)

    async def get(self, key: str) -> bytes | None:
        value = await self._run(lambda cache: cache.get(key))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        tag = owner_tag(key_owner(key))
        await self._run(lambda cache: cache.set(key, value, ttl, tag=tag))

    async def delete(self, key: str) -> None:
        await self._run(lambda cache: cache.delete(key))

    async def clear(self, prefix: str | None = None) -> None:
        await self._run(lambda cache: _clear(cache, self._tag_index() if prefix is None else None, prefix))

    async def tag(self, key: str, tags: Collection[str], ttl: float | None) -> None:
        await self._run(lambda cache: _tag(cache, self._tag_index(), key, tags, ttl))

    async def invalidate_tags(self, tags: Collection[str]) -> list[str]:
        return await self._run(lambda cache: _invalidate(cache, self._tag_index(), tags))

    def _tag_index(self) -> diskcache.Cache:
        assert self._tags is not None  # opened with the cache, before any operation runs
        return self._tags

    async def close(self) -> None:
        for cache in (self._cache, self._tags):
            if cache is not None:
                await asyncio.to_thread(cache.close)

    @property
    def undecodable_skipped(self) -> int:
        """Keys in the folder the store could not decode (planted pickles), passed by in prefix clears."""
        cache = self._cache
        return 0 if cache is None else int(cache.disk.undecodable)

    def current_size(self) -> tuple[int, int]:
        """Entries and on-disk bytes (database pages plus value files) now, from diskcache's own tallies."""
        cache = self._cache
        if cache is None:
            return 0, 0
        return len(cache), int(cache.volume())


def _private_directory(directory: Path) -> None:
    """Make `directory` (parents as the umask says) readable by its owner only: the answers it holds
    are callers' (diskcache creates its files and folders as the umask says, world-readable under the
    usual 022). One that exists is left as the operator made it, with a warning when other local
    users can read into it."""
    try:
        directory.mkdir(mode=0o700)
        return
    except FileNotFoundError:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            return
    except FileExistsError:
        pass
    if directory.stat().st_mode & 0o007:
        logger.warning(
            "disk store at %s is open to other local users (mode %o): they can read the cached answers; chmod o-rwx it",
            directory,
            directory.stat().st_mode & 0o777,
        )


DATABASE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
"""The files SQLite opens by path in each diskcache folder (the database, its write-ahead log and
its shared-memory index), so the walk without symlinks that reaches value files cannot cover them."""


def _own_databases(folder: Path) -> None:
    """StoreError when a `DATABASE_FILES` entry of `folder` is a symlink, not a regular file, or
    another user's: SQLite would follow it and write the cache (or its log) wherever it points.
    Checked when the store opens (an open database holds its files)."""
    for name in DATABASE_FILES:
        try:
            found = os.lstat(folder / name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(found.st_mode):
            problem = "is a symlink"
        elif not stat.S_ISREG(found.st_mode):
            problem = "is not a regular file"
        elif found.st_uid != os.getuid():
            problem = f"is owned by another user (uid {found.st_uid})"
        else:
            continue
        raise StoreError(f"disk store at {folder}: {name} {problem}; remove it")


def _tag(cache: diskcache.Cache, index: diskcache.Cache, key: str, tags: Collection[str], ttl: float | None) -> None:
    """Add `key` to each tag's record, whose expiry becomes the later of its own and the key's."""
    with index.transact():  # a lock across processes: concurrent writers never lose a key
        for tag in tags:
            keys, expires_at = index.get(tag, default=None, expire_time=True)
            if keys is None:
                keys, expire = {key}, None if ttl is None else ttl + TAG_SLACK
            else:
                keys.add(key)
                if trim_due(len(keys)):  # `key` is not written yet: keep it
                    keys = {k for k in keys if k in cache} | {key}
                left = None if expires_at is None else expires_at - time.time()
                expire = None if left is None or ttl is None else max(left, ttl + TAG_SLACK)
            index.set(tag, keys, expire=expire)


def _invalidate(cache: diskcache.Cache, index: diskcache.Cache, tags: Collection[str]) -> list[str]:
    with index.transact():
        keys: set[str] = set().union(*(index.pop(tag, default=set()) for tag in tags))
    for key in keys:
        cache.delete(key)
    return sorted(keys)


def _clear(cache: diskcache.Cache, index: diskcache.Cache | None, prefix: str | None) -> None:
    """Every key under `prefix`; with no prefix, everything, the tag index too (a prefix's keys
    leave members in the index, harmless until their tags are invalidated or trimmed)."""
    if prefix is None:
        cache.clear()
        if index is not None:
            index.clear()
        return
    for key in list(cache.iterkeys()):
        if isinstance(key, str) and key.startswith(prefix):
            cache.delete(key)
