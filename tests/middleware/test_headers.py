"""`read_headers`: the request headers as the engine reads them, with the adapter's memo of names."""

from __future__ import annotations

from llm_cache.middleware._headers import NAMES_KEPT, read_headers


def test_names_are_lower_cased_and_both_sides_read_as_latin_1() -> None:
    names: dict[bytes, str] = {}
    raw = [(b"Authorization", b"Bearer k"), (b"X-Note", "caf\u00e9".encode("latin-1"))]
    for _ in range(2):  # decoded the first time, remembered the second: the same answer
        headers, repeated = read_headers(raw, names)
        assert headers == {"authorization": "Bearer k", "x-note": "caf\u00e9"}
        assert repeated == frozenset()
    assert names == {b"Authorization": "authorization", b"X-Note": "x-note"}


def test_names_sent_more_than_once_are_named_whatever_their_case() -> None:
    headers, repeated = read_headers([(b"authorization", b"a"), (b"Authorization", b"b"), (b"x-a", b"c")], {})
    assert headers == {"authorization": "b", "x-a": "c"}
    assert repeated == frozenset({"authorization"})


def test_the_memo_of_names_stays_bounded() -> None:
    names: dict[bytes, str] = {}
    for index in range(3 * NAMES_KEPT):
        headers, _ = read_headers([(b"X-Name-%d" % index, b"v")], names)
        assert headers == {f"x-name-{index}": "v"}
        assert len(names) <= NAMES_KEPT
