"""diskcache's storage that trusts nothing read from the cache folder.

Whoever else can write the folder's SQLite file or value files (a shared volume, a folder opened to a
group) is not trusted with more than the cache's answers:

- diskcache keeps a value or key that is not bytes, str, int or float as a pickle and unpickles it on
  read, which could run any code. The store writes bytes (entries) and sets of str (the tag index)
  only, so a pickle here may build sets and frozensets and nothing else.
- a row names its value file, which diskcache reads, and removes (with its empty parent folders) when
  the row goes: a row naming `/etc/shadow` or `../../x` was read or deleted. Only names diskcache
  makes (`ab/cd/<28 hex>.val`, in the folder) are opened or removed, and never through a symlink:
  each folder below the cache's own is opened relative to the one above it (`dir_fd`) with
  `O_NOFOLLOW`, for reads, writes, deletes and clears alike, so a symlink planted as `ab/` or
  `ab/cd/` leads nowhere outside.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW

from .base import StoreError

logger = logging.getLogger("llm_cache.middleware.stores")

_BUILDABLE = {("builtins", "set"), ("builtins", "frozenset")}
"""What a pickle in the folder may name: the containers of the tag index (older protocols name them)."""
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
"""The names diskcache gives value files (`Disk.filename`)."""
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


class _Inert(pickle.Unpickler):
    """An unpickler that names no callable but `set` and `frozenset`: a planted pickle runs nothing."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _BUILDABLE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the cache folder holds a pickle naming {module}.{name}")


def _load(data: bytes) -> Any:
    try:
        return _Inert(io.BytesIO(data)).load()
    except Exception as error:  # pickle raises many types on hostile or corrupt bytes
        raise StoreError(f"disk store: a record that is no value of this store ({error})") from error


class Undecodable:
    """What a key the store cannot decode reads as (a planted pickle): no key of this store, so a scan
    of keys (a prefix clear) passes it by instead of failing on it."""


UNDECODABLE = Undecodable()


class CodelessDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's `Disk` with every unpickling through `_Inert`. `undecodable`: keys read as
    `UNDECODABLE` (logged once)."""

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory, **settings)
        self.undecodable = 0

    def get(self, key: Any, raw: bool) -> Any:
        if raw:
            return super().get(key, raw)
        try:
            return _load(bytes(key))
        except StoreError as error:  # this store's keys are all str (raw): a pickled one was planted
            self.undecodable += 1
            if self.undecodable == 1:
                logger.warning("disk store cannot decode a key in its folder, skipped (%s; logged once)", error)
            return UNDECODABLE

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW:
            return super().fetch(mode, filename, value, read)
        if mode == MODE_PICKLE and value is not None:
            return _load(bytes(value))
        data = self._read(filename)
        if mode == MODE_BINARY:
            return io.BufferedReader(io.BytesIO(data)) if read else data  # type: ignore[arg-type]
        if mode == MODE_PICKLE:
            return _load(data)
        raise StoreError("disk store: a record of text, which this store never writes")

    def _read(self, filename: str | None) -> bytes:
        """The bytes of a value file the folder's own row names, not following a symlink (an
        `OSError`, which diskcache reads as a value file gone: a miss)."""
        if filename is None or _VALUE_FILE.fullmatch(filename) is None:
            raise StoreError(f"disk store: a record naming {filename!r}, no value file of this store")
        *folders, name = filename.split("/")
        with self._folders(folders) as opened:
            descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=opened[-1])
        with os.fdopen(descriptor, "rb") as reader:
            return reader.read()

    def _write(self, full_path: str, iterator: Iterable[Any], mode: str, encoding: str | None = None) -> int:
        """Write a new value file (diskcache's random name) through folders opened as `_folders` does,
        made when missing; a symlink on the way is a `StoreError` (not stored)."""
        filename = os.path.relpath(full_path, self._directory)
        if _VALUE_FILE.fullmatch(filename) is None:  # pragma: no cover - diskcache names its own files
            raise StoreError(f"disk store: a value file named {filename!r}, no name of this store")
        *folders, name = filename.split("/")
        try:
            with self._folders(folders, make=True) as opened:
                descriptor = os.open(name, _NEW_FILE, 0o666, dir_fd=opened[-1])
        except OSError as error:
            raise StoreError(f"disk store: cannot write a value file under {filename!r} ({error})") from error
        size = 0
        with os.fdopen(descriptor, "wb") as writer:
            for chunk in iterator:
                data = chunk.encode(encoding or "utf-8") if isinstance(chunk, str) else chunk
                size += len(data)
                writer.write(data)
        return size

    def remove(self, file_path: str) -> None:
        """Removes only a value file named as diskcache names them (a row naming another is left), and
        its folders once empty, never through a symlink; errors are ignored, as diskcache's are (another
        process may have removed them first)."""
        if _VALUE_FILE.fullmatch(file_path) is None:
            return
        *folders, name = file_path.split("/")
        with contextlib.suppress(OSError), self._folders(folders) as opened:
            os.unlink(name, dir_fd=opened[-1])
            for depth in range(len(folders) - 1, -1, -1):  # ab/cd, then ab
                os.rmdir(folders[depth], dir_fd=opened[depth])

    @contextlib.contextmanager
    def _folders(self, names: list[str], make: bool = False) -> Iterator[list[int]]:
        """Descriptors of the cache folder and of each folder in `names` below it, each opened in the
        one above it without following a symlink (`make`: made when missing); closed on leaving."""
        opened = [os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for name in names:
                if make:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=opened[-1])
                opened.append(os.open(name, _FOLDER, dir_fd=opened[-1]))
            yield opened
        finally:
            for descriptor in opened:
                os.close(descriptor)
