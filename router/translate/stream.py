"""A response body translated chunk by chunk as the caller reads it (sync and async, httpx2 and httpx)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx2

from .base import StreamTranslator


class TranslatedStream(httpx2.AsyncByteStream, httpx2.SyncByteStream, httpx.AsyncByteStream, httpx.SyncByteStream):
    """Wraps ``source`` (the target's raw body); never buffers more than one event."""

    def __init__(self, source: Any, translator: StreamTranslator) -> None:
        self.source = source
        self.translator = translator

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.source:
            if out := self.translator.feed(chunk):
                yield out
        if tail := self.translator.end():
            yield tail

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            if out := self.translator.feed(chunk):
                yield out
        if tail := self.translator.end():
            yield tail

    async def aclose(self) -> None:
        await self.source.aclose()

    def close(self) -> None:
        self.source.close()


__all__ = ["TranslatedStream"]
