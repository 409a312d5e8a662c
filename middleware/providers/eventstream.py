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
MAX_MESSAGE = 16 * 1024 * 1024
"""The largest message accepted (botocore's own limit)."""


class EventStreamError(ValueError):
    """A message that is cut short, fails its checksum or carries a header this decoder cannot read."""


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(_header(name.encode(), value.encode()) for name, value in headers.items())
    prelude = _PRELUDE.pack(16 + len(encoded) + len(payload), len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return head + struct.pack(">I", zlib.crc32(head))


def _header(name: bytes, value: bytes) -> bytes:
    """A string header; its lengths count bytes, not characters."""
    return bytes([len(name)]) + name + bytes([_STRING]) + struct.pack(">H", len(value)) + value


class EventStreamDecoder:
    """Feed bytes as they arrive; get back complete `(headers, payload)` messages.

    Any malformed input raises `EventStreamError`: a prelude or message checksum that does not
    match, a message over `MAX_MESSAGE` bytes, or headers this decoder cannot read.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[dict[str, str], bytes]]:
        buffer = self._buffer + chunk if self._buffer else chunk
        view = memoryview(buffer)
        messages = []
        at = 0
        while len(buffer) - at >= 12:
            total, header_length = _PRELUDE.unpack_from(buffer, at)
            if struct.unpack_from(">I", buffer, at + 8)[0] != zlib.crc32(view[at : at + 8]):
                raise EventStreamError("prelude checksum mismatch")
            if total > MAX_MESSAGE or total < 16 + header_length:
                raise EventStreamError(f"message length {total} out of bounds")
            if len(buffer) - at < total:
                break
            end = at + total
            if struct.unpack_from(">I", buffer, end - 4)[0] != zlib.crc32(view[at : end - 4]):
                raise EventStreamError("message checksum mismatch")
            headers_end = at + 12 + header_length
            messages.append((_headers(bytes(view[at + 12 : headers_end])), bytes(view[headers_end : end - 4])))
            at = end
        self._buffer = buffer[at:]
        return messages

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished message are waiting."""
        return bool(self._buffer)


def _headers(raw: bytes) -> dict[str, str]:
    headers = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode()
            at += 1 + size
            if raw[at] != _STRING:
                raise EventStreamError(f"header {name!r} is not a string")
            (length,) = struct.unpack_from(">H", raw, at + 1)
            value = raw[at + 3 : at + 3 + length]
            if len(value) != length:
                raise EventStreamError(f"header {name!r} is cut short")
            headers[name] = value.decode()
            at += 3 + length
    except (IndexError, struct.error, UnicodeDecodeError) as error:
        raise EventStreamError(f"unreadable headers: {error}") from None
    return headers


def events(decoder: EventStreamDecoder, chunk: bytes) -> list[tuple[str, bytes]] | None:
    """`(event type, payload)` of each message `chunk` completes; None when the bytes are malformed
    or a message is not an event (an exception the service streams instead)."""
    try:
        messages = decoder.feed(chunk)
    except EventStreamError:
        return None
    if any(headers.get(":message-type") != "event" for headers, _ in messages):
        return None
    return [(headers.get(":event-type", ""), payload) for headers, payload in messages]
