"""Server-sent events, incrementally: chunks in (split anywhere), whole events out."""

from __future__ import annotations

from typing import Any

from .base import dumps


class EventReader:
    """Feeds on raw bytes; returns each complete ``(event, data)`` as soon as its blank line arrives."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        *blocks, self._buffer = buffer.split(b"\n\n")
        events = []
        for block in blocks:
            name: str | None = None
            data: list[str] = []
            for line in block.decode("utf-8", "replace").split("\n"):
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
            if data:
                events.append((name, "\n".join(data)))
        return events


def encode(data: Any, event: str | None = None) -> bytes:
    """One event; ``data`` is JSON-encoded unless it is already text (``[DONE]``)."""
    text = data.encode() if isinstance(data, str) else dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + text + b"\n\n"


__all__ = ["EventReader", "encode"]
