"""exact_json: what a provider wrote is what a replay writes, number for number."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings

from llm_cache.middleware import _exact_json as exact_json
from tests.support.stream_strategies import JSON_VALUES, dumps, lossless


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_a_document_read_and_written_again_keeps_every_number(value: Any) -> None:
    document = dumps({"input": value})
    assert lossless(exact_json.dumps(exact_json.loads(document))) == lossless(document)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_spaced_json_is_the_same_document_with_a_space_after_each_separator(value: Any) -> None:
    compact = exact_json.dumps({"input": value}).decode()
    spaced = exact_json.dumps_spaced({"input": value})
    assert lossless(spaced) == lossless(compact)
    assert len(spaced) - len(compact) == separators(lossless(compact))  # one space each, strings as they were


def separators(value: Any) -> int:
    """How many `:` and `,` a JSON document of `value` has between its tokens."""
    if isinstance(value, dict):
        return 2 * len(value) - 1 + sum(separators(v) for v in value.values()) if value else 0
    if isinstance(value, list):
        return max(len(value) - 1, 0) + sum(separators(v) for v in value)
    return 0


def test_numbers_a_double_cannot_carry_are_written_back_as_they_came() -> None:
    document = b'{"id":123456789012345678901234567890,"pi":3.14159265358979323846,"tiny":1e-400,"n":1.5}'
    assert exact_json.dumps(exact_json.loads(document)) == document


@pytest.mark.parametrize(
    "document",
    [
        b'{"logprob":-1.2e-05,"p":1e-07,"big":1e21,"upper":1E5,"plus":2.5e+3}',
        b'{"mixed":[0.5,1.5e-05,"1e-05 in a string",12345678901234567890123]}',
        b'{"plain":0.00001,"exact":3.14159265358979323846}',
    ],
)
def test_a_stream_event_read_spelt_is_written_back_byte_for_byte(document: bytes) -> None:
    assert exact_json.dumps(exact_json.loads_spelt(document)) == document


def test_a_number_written_as_its_shortest_form_is_read_as_a_double() -> None:
    assert exact_json.loads_spelt(b'{"a":1e-7,"b":1e+21,"c":0.5}') == {"a": 1e-7, "b": 1e21, "c": 0.5}
    assert type(exact_json.loads_spelt(b'{"a":1e-05}')["a"]) is not float  # Python's spelling, kept


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_a_document_whose_objects_name_each_key_once_has_no_duplicate_key(value: Any) -> None:
    assert exact_json.duplicate_key(dumps({"input": value})) is None


@pytest.mark.parametrize(
    "document",
    [
        b'{"a":1,"a":1}',
        b'{"a":1,"b":{"c":[{"d":1,"e":2,"d":3}]}}',
        b'{"a":1,"\\u0061":2}',  # one key once unescaped, as every parser reads it
        b'[{"x":{}},{"y":1,"y":1}]',
    ],
)
def test_a_key_named_twice_in_any_object_is_found(document: bytes) -> None:
    assert (exact_json.duplicate_key(document) or "").startswith("duplicate key")


@pytest.mark.parametrize(
    "document",
    [
        b'{"a":"{\\"a\\":1,\\"a\\":2}"}',  # inside a string: not a key
        b'[{"a":1},{"a":1}]',  # one key in two objects
        b'{"a":{"a":{"a":1}}}',
    ],
)
def test_what_only_looks_like_a_key_named_twice_is_not_one(document: bytes) -> None:
    assert exact_json.duplicate_key(document) is None


def test_deep_and_huge_documents_are_answered_in_bounded_time() -> None:
    """The hostile-input tests' shapes: 2,000 levels (past the scanner's recursion limit: not known,
    so not stored) and 100,000 items, each answered in one linear pass."""
    started = time.perf_counter()
    assert (exact_json.duplicate_key(b"[" * 2000 + b"]" * 2000) or "").startswith("duplicate keys unknown")
    assert (exact_json.duplicate_key(b'{"a":' * 2000 + b"1" + b"}" * 2000) or "").startswith("duplicate keys unknown")
    assert exact_json.duplicate_key(b"[" + b",".join([b'{"a":1,"b":2}'] * 100_000) + b"]") is None
    assert exact_json.duplicate_key(b"[" + b",".join([b"1"] * 100_000) + b"]") is None
    assert time.perf_counter() - started < 5.0  # about 0.05 s; quadratic work would take minutes
