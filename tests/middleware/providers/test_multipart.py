"""A `multipart/form-data` body is read as the fields that change the answer: the file by its bytes."""

from __future__ import annotations

import hashlib

import pytest

from llm_cache.middleware.providers.multipart import MAX_PARTS, form_fields
from tests.support.allocations import with_peak

AUDIO = b"RIFF\r\n--not-the-boundary\x00"


def form(boundary: str, *parts: tuple[str, str | None, bytes]) -> tuple[str, bytes]:
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return f'multipart/form-data; boundary="{boundary}"', body + f"--{boundary}--\r\n".encode()


def test_a_file_is_its_digest_and_fields_are_text() -> None:
    fields = form_fields(*form("b", ("model", None, b"whisper-1"), ("file", "clip.wav", AUDIO)))

    assert fields == {"model": "whisper-1", "file": {"sha256": hashlib.sha256(AUDIO).hexdigest()}}


def test_boundary_the_order_of_different_fields_and_the_file_name_do_not_matter() -> None:
    one = form("one", ("g[]", None, b"word"), ("g[]", None, b"segment"), ("file", "a.wav", AUDIO))
    two = form("two", ("file", "b.mp3", AUDIO), ("g[]", None, b"word"), ("g[]", None, b"segment"))

    assert form_fields(*one) == form_fields(*two)


def test_a_repeated_field_keeps_the_order_its_values_were_sent_in() -> None:
    """A server may read the first or the last of a repeated field: two orders are two requests."""
    first = form("b", ("model", None, b"whisper-1"), ("model", None, b"whisper-2"), ("file", "a.wav", AUDIO))
    last = form("b", ("model", None, b"whisper-2"), ("model", None, b"whisper-1"), ("file", "a.wav", AUDIO))

    assert form_fields(*first) != form_fields(*last)
    assert (form_fields(*first) or {})["model"] == ["whisper-1", "whisper-2"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/form-data", b"--x\r\n\r\n--x--"),  # no boundary parameter
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n1\r\n--x--\r\n"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n\xff\r\n--x--'),
    ],
    ids=["not a form", "no boundary", "not closed", "a part without a name", "a field that is not UTF-8"],
)
def test_a_body_that_is_not_a_well_formed_form_is_none(content_type: str, body: bytes) -> None:
    assert form_fields(content_type, body) is None


def test_a_form_of_more_parts_than_a_server_reads_is_none_without_cutting_it_apart() -> None:
    """Parts were cut out one by one: 64 MiB of empty parts (64 KiB gzipped, as a gateway judging a
    `_method` reads it) took the event loop 40 s and held every part at once."""
    part = b"--b\r\ncontent-disposition: form-data; name=x\r\n\r\nv\r\n"
    content_type = "multipart/form-data; boundary=b"
    assert form_fields(content_type, part * MAX_PARTS + b"--b--\r\n") == {"x": ["v"] * MAX_PARTS}
    body = part * ((4 << 20) // len(part)) + b"--b--\r\n"
    fields, peak = with_peak(lambda: form_fields(content_type, body))
    assert fields is None and peak < len(body) // 16, peak
