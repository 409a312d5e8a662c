"""Incremental server-sent-event decoding and encoding, shared by every provider."""

from __future__ import annotations

import re

from .. import _exact_json as exact_json

_LINE_END = re.compile(rb"[\r\n]")


class SSEDecoder:
    """Feed raw bytes as they arrive; get back complete `(event, data)` pairs.

    Handles events split across chunks and `\\n`, `\\r\\n` or `\\r` line endings. Each byte is scanned
    and copied a bounded number of times: an unfinished line is kept in pieces and only a new chunk is
    searched for its end, so neither a line that never ends nor a chunk of many lines costs time that
    grows with what came before (a chunk of blank lines used to copy the rest of it once per line).
    """

    __slots__ = ("_cr", "_data", "_event", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []  # the unfinished line
        self._cr = False  # a chunk ended with `\\r`, held back: it may be the first half of `\\r\\n`
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
        if _LINE_END.search(chunk) is None:
            if chunk:
                self._pieces.append(chunk)
            return []
        buffer = b"".join(self._pieces) + chunk if self._pieces else chunk
        lines = buffer.splitlines()  # at `\\r\\n`, `\\r` and `\\n` only (bytes)
        self._pieces = [] if buffer.endswith((b"\n", b"\r")) else [lines.pop()]
        events: list[tuple[str | None, str]] = []
        for line in lines:
            if not line:
                if self._data or self._event is not None:
                    events.append((self._event, "\n".join(self._data)))
                self._event = None
                self._data = []
                continue
            field, _, value = line.partition(b":")
            if field != b"data" and field != b"event":
                continue  # comments (`: ...`), ids, retries and unknown fields
            text = (value[1:] if value.startswith(b" ") else value).decode("utf-8", errors="replace")
            if field == b"data":
                self._data.append(text)
            else:
                self._event = text
        return events


def encode_event(data: object, event: str | None = None) -> bytes:
    """One SSE event whose data is the compact JSON of `data`."""
    payload = data if isinstance(data, bytes) else exact_json.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
