"""diskcache's storage that trusts nothing read from the cache folder.

Whoever else can write the folder's SQLite file or value files (a shared volume, a folder opened to a
group) is not trusted with more than the cache's answers:

- diskcache keeps a value or key that is not bytes, str, int or float as a pickle and unpickles it on
  read, which could run any code. The store writes bytes (entries) and sets of str (the tag index)
  only, so a pickle here may build sets and frozensets and nothing else.
- a row names its value file, which diskcache reads, and removes (with its empty parent folders) when
  the row goes: a row naming `/etc/shadow` or `../../x` was read or deleted. Only names diskcache
  makes (`ab/cd/<28 hex>.val`, in the folder) are opened or removed, and never through a symlink.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW

from .base import StoreError

_BUILDABLE = {("builtins", "set"), ("builtins", "frozenset")}
"""What a pickle in the folder may name: the containers of the tag index (older protocols name them)."""
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
"""The names diskcache gives value files (`Disk.filename`)."""


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


class CodelessDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's `Disk` with every unpickling through `_Inert`."""

    def get(self, key: Any, raw: bool) -> Any:
        if raw:
            return super().get(key, raw)
        return _load(bytes(key))

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
        """The bytes of a value file the folder's own row names, not following a symlink."""
        if filename is None or _VALUE_FILE.fullmatch(filename) is None:
            raise StoreError(f"disk store: a record naming {filename!r}, no value file of this store")
        descriptor = os.open(os.path.join(self._directory, filename), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as reader:
            return reader.read()

    def remove(self, file_path: str) -> None:
        """Removes only a value file named as diskcache names them (a row naming another is left)."""
        if _VALUE_FILE.fullmatch(file_path) is not None:
            super().remove(file_path)
