"""Persistent single-node store on diskcache (SQLite + files), run off the event loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import diskcache


def default_cache_dir() -> Path:
    """The user's cache directory (XDG on Linux, ~/Library/Caches on macOS)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "llm-cache"
    if os.uname().sysname == "Darwin":  # pragma: no cover - not on CI
        return Path.home() / "Library" / "Caches" / "llm-cache"
    return Path.home() / ".cache" / "llm-cache"


class DiskStore:
    """Survives restarts on one node; bounded by `size_limit` bytes with LRU eviction."""

    name = "disk"

    def __init__(self, directory: str | os.PathLike[str] | None = None, size_limit: int = 1024**3) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(self.directory), size_limit=size_limit, eviction_policy="least-recently-used")

    async def get(self, key: str) -> bytes | None:
        value = await asyncio.to_thread(self._cache.get, key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await asyncio.to_thread(self._cache.set, key, value, ttl)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._cache.delete, key)

    async def clear(self, prefix: str | None = None) -> None:
        await asyncio.to_thread(self._clear_sync, prefix)

    def _clear_sync(self, prefix: str | None) -> None:
        if prefix is None:
            self._cache.clear()
            return
        for key in list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith(prefix):
                self._cache.delete(key)

    async def close(self) -> None:
        await asyncio.to_thread(self._cache.close)

    def current_size(self) -> tuple[int, int]:
        """Entries and on-disk bytes (database pages plus value files) now, from diskcache's own tallies."""
        return len(self._cache), int(self._cache.volume())
