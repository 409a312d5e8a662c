"""Where a server behind may read a method (`middleware/_overrides.py`): a form body is read for its
`_method` as the most lenient server reads it, in one pass however many pairs it holds."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware._overrides import MAX_FORM_FIELDS, MAX_JSON_JUDGED, in_body
from tests.support.allocations import with_peak

NAMES = ["_method", "_METHOD", ".method", "+method", "%20method", "[method", "%5fm%45thod", "_meth%6Fd", "method", "x"]
VALUES = ["", "GET", "delete", "%44ELETE", "+put+", "a=b", "%ff", "\xe9"]


def as_parse_qsl_reads(body: bytes) -> list[str] | None:
    """The methods a form names as `parse_qsl` reads it, name by name (the reference: slow on big forms)."""
    pairs = parse_qsl(body.decode("latin-1").replace(";", "&"), keep_blank_values=True)
    named = [value.strip().upper() for name, value in pairs if name.lower().translate(_MANGLED) == "_method"]
    return named if len(named) <= MAX_FORM_FIELDS else None


_MANGLED = str.maketrans({" ": "_", ".": "_", "[": "_"})
pair = st.tuples(st.sampled_from(NAMES), st.sampled_from(["=", ""]), st.sampled_from(VALUES)).map("".join)


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.lists(pair, max_size=20), st.lists(st.sampled_from(["&", ";", "&&"]), min_size=20, max_size=20))
def test_a_form_is_read_for_its_method_as_parse_qsl_reads_it(pairs: list[str], separators: list[str]) -> None:
    body = "".join(p + s for p, s in zip(pairs, separators, strict=False)).encode("latin-1")
    assert in_body("", body) == as_parse_qsl_reads(body)
    assert in_body("application/x-www-form-urlencoded; charset=utf-8", body) == as_parse_qsl_reads(body)


def test_a_form_of_a_million_pairs_is_read_without_holding_them() -> None:
    """`parse_qsl` made a tuple of each pair: 2 MiB of `a&` held a million of them (64 MiB, the most a
    gateway reads, or 64 KiB of it gzipped, took minutes of the event loop and gigabytes)."""
    body = b"a&" * (1 << 20)
    named, peak = with_peak(lambda: in_body("", body))
    assert named == [] and peak < len(body) // 16, peak


def test_a_form_naming_its_method_past_the_limit_cannot_be_read() -> None:
    assert in_body("", b"&".join([b"_method=POST"] * MAX_FORM_FIELDS)) == ["POST"] * MAX_FORM_FIELDS
    assert in_body("", b"&".join([b"_method=POST"] * (MAX_FORM_FIELDS + 1))) is None


def test_a_json_body_is_parsed_for_its_method_only_when_its_text_holds_one() -> None:
    """Parsing a JSON body to read its `_method` built every value it holds: 4 MiB of `{},` is 144 MB of
    objects, and a gateway judging calls decodes a gzipped body first (64 MiB from 64 KiB: gigabytes).
    A body whose text holds no `"_method"` string names none; one that does is parsed up to
    `MAX_JSON_JUDGED` bytes, and past that cannot be read."""
    bomb = b'{"model": "m", "a": [' + b"{}," * ((4 << 20) // 3) + b"{}]}"
    named, peak = with_peak(lambda: in_body("application/json", bomb))
    assert named == [] and peak < len(bomb) // 16, peak
    assert in_body("application/json", b'{"_method": "delete", ' + bomb[1:]) is None
    for named in (b'"_method"', b'"\\u005fmethod"', b'"_\\u006Dethod"'):
        assert in_body("application/json", b'{"model": "m", ' + named + b': "DELETE"}') == ["DELETE"]
    assert in_body("application/json", b'{"note": "say \\"_method\\"", "_method": "POST"}') == ["POST"]
    assert in_body("application/json", b'{"note": "say \\"_method\\""}') == []
    assert in_body("application/json", b'{"_method": "GET", "a": "' + b"x" * MAX_JSON_JUDGED + b'"}') is None
