"""Server-sent events, incrementally: chunks in (split anywhere), whole events out."""

from __future__ import annotations

from typing import Any

from .._errors import AnswerTooLarge
from .base import dumps

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The longest event a translated stream holds (`max_read_bytes`' default): a longer one ends the stream."""


class EventReader:
    """Feeds on raw bytes; returns each complete ``(event, data)`` as soon as its blank line arrives.

    An event's pieces are kept apart until its blank line comes, and only the new piece is searched
    for it, so each byte is copied and scanned a bounded number of times; an event longer than
    `MAX_EVENT_BYTES` raises `AnswerTooLarge` (an upstream's event that never ends is not held).
    """

    __slots__ = ("_cr", "_newline", "_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        self._newline = False  # the held bytes end with a line feed
        self._cr = False  # the last piece ended with a carriage return, held back (its LF may come next)

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
        chunk = chunk.replace(b"\r\n", b"\n")
        if b"\n\n" not in chunk and not (self._newline and chunk.startswith(b"\n")):
            self._hold(chunk)
            return []
        *blocks, rest = (b"".join(self._pieces) + chunk).split(b"\n\n")
        self._pieces, self._size, self._newline = [], 0, False
        self._hold(rest)
        return [event for event in map(_event, blocks) if event is not None]

    def _hold(self, piece: bytes) -> None:
        if not piece:
            return
        self._pieces.append(piece)
        self._size += len(piece)
        self._newline = piece.endswith(b"\n")
        if self._size > MAX_EVENT_BYTES:
            raise AnswerTooLarge(f"an event of the deployment's stream is longer than {MAX_EVENT_BYTES} bytes")


def _event(block: bytes) -> tuple[str | None, str] | None:
    """One event's name and data, or None for a block without data (a comment, a keep-alive)."""
    name: str | None = None
    data: list[str] = []
    for line in block.decode("utf-8", "replace").split("\n"):
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return (name, "\n".join(data)) if data else None


def encode(data: Any, event: str | None = None) -> bytes:
    """One event; ``data`` is JSON-encoded unless it is already text (``[DONE]``)."""
    text = data.encode() if isinstance(data, str) else dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + text + b"\n\n"


__all__ = ["EventReader", "encode"]
