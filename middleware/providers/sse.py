"""Incremental server-sent-event decoding and encoding, shared by every provider."""

from __future__ import annotations

from .. import _exact_json as exact_json


class SSEDecoder:
    """Feed raw bytes as they arrive; get back complete `(event, data)` pairs.

    Handles events split across chunks and `\\n`, `\\r\\n` or `\\r` line endings.
    """

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buffer += chunk
        events: list[tuple[str | None, str]] = []
        while True:
            newline = self._find_line_end()
            if newline is None:
                return events
            end, width = newline
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[end + width :]
            if not line:
                if self._data or self._event is not None:
                    events.append((self._event, "\n".join(self._data)))
                self._event = None
                self._data = []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._event = value

    def _find_line_end(self) -> tuple[int, int] | None:
        buffer = self._buffer
        lf = buffer.find(b"\n")
        cr = buffer.find(b"\r")
        if cr == -1 and lf == -1:
            return None
        if cr == -1 or (lf != -1 and lf < cr):
            return lf, 1
        if buffer[cr + 1 : cr + 2] == b"\n":
            return cr, 2
        if cr + 1 == len(buffer):
            return None  # might be the first half of \r\n
        return cr, 1


def encode_event(data: object, event: str | None = None) -> bytes:
    """One SSE event whose data is the compact JSON of `data`."""
    payload = data if isinstance(data, bytes) else exact_json.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
