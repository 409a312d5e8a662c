"""Entries: what a store's bytes decode to, and the memo that decodes a hot entry once."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware._entry import (
    COMPLETE_ANSWERS,
    Entry,
    EntryError,
    EntryMemo,
    pack,
    replayable_header,
    unpack,
)

ENTRY = Entry("default:cabc:0123", 1700000000.0, 200, b'{"id":"chatcmpl-1"}', False, True, (("x-router-model", "m"),))


def test_an_entry_reads_back_as_written() -> None:
    assert unpack(pack(ENTRY)) == ENTRY


def test_entries_cannot_change_once_made() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ENTRY.body = b"{}"  # type: ignore[misc]


def test_the_memo_decodes_equal_bytes_to_one_entry() -> None:
    memo = EntryMemo()
    first = memo.unpack(pack(ENTRY))
    again = memo.unpack(bytes(bytearray(pack(ENTRY))))  # new bytes, as a store outside the process hands them
    assert first == ENTRY and again is first


def test_the_memo_never_remembers_bytes_that_are_no_entry() -> None:
    memo = EntryMemo()
    for _ in range(2):
        with pytest.raises(EntryError):
            memo.unpack(b"\x93\x01\x02")


def test_the_memo_is_bounded() -> None:
    memo = EntryMemo(max_entries=2, max_bytes=64 * 1024)
    entries = [dataclasses.replace(ENTRY, fingerprint=f"k{i}") for i in range(3)]
    decoded = [memo.unpack(pack(entry)) for entry in entries]
    assert memo.unpack(pack(entries[2])) is decoded[2]
    assert memo.unpack(pack(entries[0])) is not decoded[0]  # forgotten when the third came in
    large = dataclasses.replace(ENTRY, body=b"x" * 2048)  # over a sixty-fourth of the bytes
    assert memo.unpack(pack(large)) is not memo.unpack(pack(large))


def test_an_entry_of_schema_version_2_reads_back_without_tags() -> None:
    """Version 3 added `tags`; a version-2 entry carries none (and no tag index names it)."""
    import msgpack

    old = msgpack.packb([2, *list(msgpack.unpackb(pack(ENTRY)))[1:8]], use_bin_type=True)
    assert unpack(old) == ENTRY and unpack(old).tags == frozenset()


def test_tags_are_part_of_the_entry() -> None:
    tagged = dataclasses.replace(ENTRY, tags=frozenset({"doc:1", "model:m"}))
    assert unpack(pack(tagged)).tags == {"doc:1", "model:m"}


def test_an_entry_keeps_the_cut_of_the_stream_that_filled_it() -> None:
    streamed = dataclasses.replace(ENTRY, from_stream=True, cut=b"\x94\x01\x90\x90\x90")
    assert unpack(pack(streamed)).cut == b"\x94\x01\x90\x90\x90"
    assert unpack(pack(ENTRY)).cut is None


def test_an_entry_of_schema_version_3_reads_back_without_a_cut() -> None:
    """Version 4 added `cut`; a version-3 entry has none (its streamed hits synthesise their stream)."""
    import msgpack

    old = msgpack.packb([3, *list(msgpack.unpackb(pack(ENTRY)))[1:10]], use_bin_type=True)
    assert unpack(old) == ENTRY and unpack(old).cut is None


def test_an_entry_whose_cut_is_not_bytes_is_invalid() -> None:
    import msgpack

    fields = list(msgpack.unpackb(pack(ENTRY)))
    with pytest.raises(EntryError):
        unpack(msgpack.packb([*fields[:10], "not bytes"], use_bin_type=True))


_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
_VALUE = st.recursive(
    _LEAF,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


def _decodes_or_refuses(data: bytes) -> None:
    """What every store's bytes must do: decode to an entry a hit can send, or raise EntryError."""
    try:
        entry = unpack(data)
    except EntryError:
        return
    assert isinstance(entry.fingerprint, str) and isinstance(entry.body, bytes)
    assert entry.status in COMPLETE_ANSWERS and math.isfinite(entry.created_at)
    assert entry.expires_at is None or math.isfinite(entry.expires_at)
    assert all(replayable_header(name, value) for name, value in entry.origin)
    assert entry.cut is None or isinstance(entry.cut, bytes)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_from_a_store_are_an_entry_or_an_entry_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5, True, "4"]), st.lists(_VALUE, max_size=12))
def test_an_entry_shaped_list_of_any_fields_is_an_entry_a_hit_can_send_or_an_entry_error(
    version: object, fields: list[object]
) -> None:
    _decodes_or_refuses(msgpack.packb([version, *fields], use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10), _VALUE)
def test_a_valid_entry_with_any_one_field_replaced_is_an_entry_a_hit_can_send_or_an_entry_error(
    index: int, value: object
) -> None:
    fields = list(msgpack.unpackb(pack(ENTRY)))
    fields[index] = value
    _decodes_or_refuses(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "bomb",
    [
        b"\x91" * 200_000 + b"\x01",  # arrays nested 200,000 deep
        b"\x81\xa1k" * 200_000 + b"\x01",  # maps nested as deep
        b"\xdd\xff\xff\xff\xff",  # an array declaring 4 billion items
        b"\xdf\xff\xff\xff\xff",  # a map declaring as many pairs
        b"\xc6\xff\xff\xff\xff",  # a 4 GiB bin
        b"\xdb\xff\xff\xff\xff",  # a 4 GiB str
        b"\x9b\x04" + b"\xdd\xff\xff\xff\xff",  # an entry-shaped list whose second field declares 4 billion items
    ],
)
def test_a_msgpack_bomb_is_an_entry_error_in_bounded_memory(bomb: bytes) -> None:
    """A shared store someone else can write: declared lengths are never trusted beyond the bytes there."""
    tracemalloc.start()
    try:
        with pytest.raises(EntryError):
            unpack(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(bomb) + 1024 * 1024
