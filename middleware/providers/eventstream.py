"""AWS event-stream framing (`application/vnd.amazon.eventstream`), which Bedrock streams in.

A message is: total length and headers length (big-endian uint32 each), a CRC32 of those eight
bytes, the headers (name length byte, name, type byte, then for strings a uint16 length and the
value), the payload, and a CRC32 of everything before it.
"""

from __future__ import annotations

import struct
import zlib

_PRELUDE = struct.Struct(">II")
_STRING = 7
MEDIA_TYPE = "application/vnd.amazon.eventstream"


class EventStreamError(ValueError):
    """A message that is cut short, fails its checksum or carries a header this decoder cannot read."""


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + bytes([_STRING]) + struct.pack(">H", len(value)) + value.encode()
        for name, value in headers.items()
    )
    prelude = _PRELUDE.pack(16 + len(encoded) + len(payload), len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return head + struct.pack(">I", zlib.crc32(head))


class EventStreamDecoder:
    """Feed bytes as they arrive; get back complete `(headers, payload)` messages."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[dict[str, str], bytes]]:
        self._buffer += chunk
        messages = []
        while len(self._buffer) >= 12:
            total, header_length = _PRELUDE.unpack_from(self._buffer)
            if total < 16 + header_length:
                raise EventStreamError("message shorter than its own headers")
            if len(self._buffer) < total:
                break
            message, self._buffer = self._buffer[:total], self._buffer[total:]
            if struct.unpack_from(">I", message, 8)[0] != zlib.crc32(message[:8]):
                raise EventStreamError("prelude checksum mismatch")
            if struct.unpack_from(">I", message, total - 4)[0] != zlib.crc32(message[:-4]):
                raise EventStreamError("message checksum mismatch")
            messages.append((_headers(message[12 : 12 + header_length]), message[12 + header_length : -4]))
        return messages

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished message are waiting."""
        return bool(self._buffer)


def _headers(raw: bytes) -> dict[str, str]:
    headers = {}
    at = 0
    while at < len(raw):
        size = raw[at]
        name = raw[at + 1 : at + 1 + size].decode()
        at += 1 + size
        if raw[at] != _STRING:
            raise EventStreamError(f"header {name!r} is not a string")
        (length,) = struct.unpack_from(">H", raw, at + 1)
        headers[name] = raw[at + 3 : at + 3 + length].decode()
        at += 3 + length
    return headers
