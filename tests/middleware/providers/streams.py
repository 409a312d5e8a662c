"""Helpers shared by the provider specifications: awkward chunkings and request views."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware.providers import Endpoint, RequestView, cuts, resolve
from llm_cache.middleware.providers.base import StreamAssembler
from tests.support.stream_strategies import lossless


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The same bytes cut every way that has broken parsers before: whole, byte by byte, odd sizes,
    and right inside every line ending."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for size in (2, 7, 64):
        yield [data[i : i + size] for i in range(0, len(data), size)]
    cuts = sorted({i + 1 for i in range(len(data)) if data[i : i + 1] in (b"\r", b"\n")})
    yield [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def view(path: str, body: dict[str, Any] | None = None, query: str = "") -> RequestView:
    route = resolve(path)
    assert route is not None, path
    body = body or {}
    return RequestView(body, query, route, route.endpoint.is_stream(route, query, body))


def assemble(endpoint: Endpoint, request: RequestView, pieces: list[bytes]) -> dict[str, Any] | None:
    assembler: StreamAssembler = endpoint.assembler(request)
    for piece in pieces:
        assembler.feed(piece)
    result = assembler.result()
    return None if result is None else orjson.loads(result)


def sse(*events: tuple[str | None, dict[str, Any]], crlf: bool = False) -> bytes:
    """A provider stream written out by hand: `event:` lines where given, compact JSON data."""
    newline = b"\r\n" if crlf else b"\n"
    out = b""
    for name, data in events:
        if name is not None:
            out += b"event: " + name.encode() + newline
        out += b"data: " + orjson.dumps(data) + newline + newline
    return out


def replaying(body: bytes, media_type: str = "text/event-stream") -> httpx2.Client:
    """An httpx2 client whose every call is answered with `body`, for real SDK clients."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": media_type}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def through_cache(body: bytes, media_type: str) -> tuple[httpx2.Client, list[str]]:
    """An httpx2 client caching in front of a provider that answers every call with `body`;
    the list records the paths that reached the provider."""
    calls: list[str] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        return httpx2.Response(200, headers={"content-type": media_type}, content=body)

    transport = CachingTransport(cache=Cache(), inner=httpx2.MockTransport(provider))
    return httpx2.Client(transport=transport), calls


def replayed_by_cut(endpoint: Endpoint, request: RequestView, pieces: list[bytes]) -> bytes | None:
    """A streamed hit of what `endpoint`'s assembler made of a stream delivered in `pieces`: its events
    replayed from the cut kept with the answer; None when no cut was kept."""
    assembler = endpoint.assembler(request)
    for piece in pieces:
        assembler.feed(piece)
    answer = assembler.result()
    assert answer is not None
    cut = assembler.cut(answer)
    return None if cut is None else endpoint.render_events(endpoint.replayed_events(cuts.replay(cut, answer)), request)


_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def sse_events(body: bytes) -> list[tuple[str | None, Any]]:
    """A stream's server-sent events as (name, data: its JSON read exactly, or its text)."""
    events = []
    for block in _BLANK_LINE.split(body):
        name, data = None, []
        for line in block.splitlines():
            field, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)
        if data:
            text = b"\n".join(data)
            events.append((name, text.decode() if text == b"[DONE]" else lossless(text)))
    return events
