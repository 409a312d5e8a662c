"""The largest object an object store reads (S3, GCS, Azure Blob).

A bucket is often writable by more than this cache: an object planted under the prefix, gigabytes
long, would be read whole into memory on every lookup of its key. The stores check an object's size
before reading its body and read at most `max_value_bytes`; a longer object is a miss, counted in
the store's `oversize_skipped` and logged once per store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable

logger = logging.getLogger("llm_cache.middleware.stores")

DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024
"""Past any answer the engine stores (its `max_response_bytes`), far below what hurts a pod."""


class ValueCap:
    """`admits(size)` for one store: whether an object of `size` bytes may be read."""

    def __init__(self, store: str, max_value_bytes: int) -> None:
        if max_value_bytes <= 0:
            raise ValueError(f"{store}: max_value_bytes must be positive, got {max_value_bytes}")
        self.store = store
        self.limit = max_value_bytes
        self.skipped = 0

    def admits(self, size: int | None) -> bool:
        """Whether `size` (None: not known yet, read at most `limit + 1` bytes) is within the cap."""
        if size is None or size <= self.limit:
            return True
        self.skipped += 1
        if self.skipped == 1:
            logger.warning(
                "%s store: an object of %d bytes is past max_value_bytes (%d): not read, a miss "
                "(counted in oversize_skipped; logged once)",
                self.store,
                size,
                self.limit,
            )
        return False

    async def read(self, chunks: AsyncIterable[bytes]) -> bytes | None:
        """A body of unknown size, read chunk by chunk and dropped (None) once past the cap."""
        parts: list[bytes] = []
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            if not self.admits(total):
                return None
            parts.append(chunk)
        return b"".join(parts)


class CappedReads:
    """What a store with a `ValueCap` (in `_cap`) shows: its `max_value_bytes` and `oversize_skipped`."""

    _cap: ValueCap

    @property
    def max_value_bytes(self) -> int:
        return self._cap.limit

    @property
    def oversize_skipped(self) -> int:
        """Objects past `max_value_bytes` that read as a miss, their bodies not read."""
        return self._cap.skipped
