"""Entries: what a store's bytes decode to, and the memo that decodes a hot entry once."""

from __future__ import annotations

import dataclasses

import pytest

from llm_cache.middleware._entry import Entry, EntryError, EntryMemo, pack, unpack

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
