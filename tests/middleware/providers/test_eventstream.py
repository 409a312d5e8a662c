"""AWS event-stream framing: messages decoded whatever the chunking, malformed input refused."""

from __future__ import annotations

import struct
import zlib

import pytest

from llm_cache.middleware.providers.eventstream import MAX_MESSAGE, EventStreamDecoder, EventStreamError, encode_message

from .streams import splits

HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}


def frame(headers: bytes, payload: bytes, total: int | None = None) -> bytes:
    """A message with raw `headers` bytes and correct checksums (its length may be overridden)."""
    prelude = struct.pack(">II", 16 + len(headers) + len(payload) if total is None else total, len(headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return head + struct.pack(">I", zlib.crc32(head))


def test_a_message_is_its_prelude_headers_payload_and_checksums() -> None:
    encoded = encode_message({"a": "bc"}, b"xyz")
    headers = b"\x01a\x07\x00\x02bc"
    assert encoded == frame(headers, b"xyz")
    assert len(encoded) == 12 + len(headers) + 3 + 4


def test_messages_decode_whatever_the_chunking() -> None:
    data = encode_message(HEADERS, b'{"bytes":"e30="}') + encode_message({}, b"") + encode_message({"é": "ü"}, b"x")
    expected = [(HEADERS, b'{"bytes":"e30="}'), ({}, b""), ({"é": "ü"}, b"x")]
    for pieces in splits(data):
        decoder = EventStreamDecoder()
        assert [message for piece in pieces for message in decoder.feed(piece)] == expected
        assert not decoder.pending


def test_an_unfinished_message_is_pending() -> None:
    data = encode_message(HEADERS, b"{}")
    decoder = EventStreamDecoder()
    assert decoder.feed(data[:11]) == [] and decoder.pending
    assert decoder.feed(data[11:-1]) == [] and decoder.pending
    assert decoder.feed(data[-1:]) == [(HEADERS, b"{}")] and not decoder.pending


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00" * 8 + b"\x00\x00\x00\x01", "prelude checksum mismatch"),
        (frame(b"", b"", total=MAX_MESSAGE + 1), "out of bounds"),
        (frame(b"\x01a\x07\x00\x01b", b"", total=16 + 3), "out of bounds"),
        (encode_message({}, b"abc")[:-1] + b"\x00", "message checksum mismatch"),
        (frame(b"\x01a\x06\x00\x01b", b""), "header 'a' is not a string"),
        (frame(b"\x01a\x07\x00\x05b", b""), "header 'a' is cut short"),
        (frame(b"\x05a", b""), "unreadable headers"),
        (frame(b"\x01\xff\x07\x00\x01b", b""), "unreadable headers"),
    ],
    ids=[
        "prelude-crc",
        "too-long",
        "shorter-than-headers",
        "message-crc",
        "not-a-string",
        "cut-value",
        "cut-name",
        "not-utf8",
    ],
)
def test_malformed_messages_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(EventStreamError, match=error):
        EventStreamDecoder().feed(data)


def test_the_largest_message_accepted_is_botocores_limit() -> None:
    assert MAX_MESSAGE == 16 * 1024 * 1024
    header = struct.pack(">II", MAX_MESSAGE, 0)
    decoder = EventStreamDecoder()
    assert decoder.feed(header + struct.pack(">I", zlib.crc32(header))) == [] and decoder.pending
