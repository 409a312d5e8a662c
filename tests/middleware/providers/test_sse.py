"""Server-sent events: decoding whatever the chunking and line endings, encoding compact JSON."""

from __future__ import annotations

import time

import pytest

from llm_cache.middleware.providers.sse import SSEDecoder, encode_event

from .streams import splits


def decode(data: bytes) -> list[tuple[str | None, str]]:
    decoder = SSEDecoder()
    return decoder.feed(data)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_events_end_at_a_blank_line_whatever_the_line_ending(newline: bytes) -> None:
    data = newline.join([b"event: a", b"data: 1", b"", b"data: 2", b"", b": a lone CR may be half a CRLF", b""])
    for pieces in splits(data):
        decoder = SSEDecoder()
        assert [event for piece in pieces for event in decoder.feed(piece)] == [("a", "1"), (None, "2")]


def test_a_lone_cr_at_the_end_of_a_chunk_waits_for_what_follows() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r") == []
    assert decoder.feed(b"\n\r\n") == [(None, "1")]


def test_data_lines_join_with_newlines_and_one_leading_space_is_dropped() -> None:
    assert decode(b"data:a\ndata:  b\ndata\n\n") == [(None, "a\n b\n")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    assert decode(b": ping\nid: 7\nretry: 10\ndata: x\n\n") == [(None, "x")]


def test_a_blank_line_without_data_or_a_name_is_no_event() -> None:
    assert decode(b"\n\n: comment\n\nevent: ping\n\n") == [("ping", "")]


def test_an_event_name_applies_to_its_own_event_only() -> None:
    assert decode(b"event: a\ndata: 1\n\ndata: 2\n\n") == [("a", "1"), (None, "2")]


def test_an_unfinished_event_is_held_back() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\n") == [(None, "1")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode(b"data: \xff\n\n") == [(None, "\ufffd")]


def test_encoded_events_are_compact_json_with_an_optional_name() -> None:
    assert encode_event({"a": [1, 2]}) == b'data: {"a":[1,2]}\n\n'
    assert encode_event({"a": 1}, "message_stop") == b'event: message_stop\ndata: {"a":1}\n\n'
    assert encode_event(b"[DONE]") == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    "piece",
    [b"\n" * 65536, b"a\n" * 32768, b"a" * 65536, b"data: x\n\n" * 6553 + b"data: "],
    ids=["blank lines", "short lines", "a line that never ends", "events"],
)
def test_decoding_costs_time_in_proportion_to_the_bytes(piece: bytes) -> None:
    """An upstream's stream is decoded as it arrives, 64 KiB at a time: no shape of line costs time that
    grows with what came before (a chunk of blank lines used to cost seconds, copying the rest of the
    chunk once per line; 4 MiB of them took over 30 s of CPU)."""
    decoder = SSEDecoder()
    started = time.process_time()
    events = sum(len(decoder.feed(piece)) for _ in range(64))  # 4 MiB
    assert time.process_time() - started < 3.0
    assert events == (6553 * 64 if piece.startswith(b"data") else 0)
