"""exact_json: what a provider wrote is what a replay writes, number for number."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from llm_cache.middleware import _exact_json as exact_json
from tests.support.stream_strategies import JSON_VALUES, dumps, lossless


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_a_document_read_and_written_again_keeps_every_number(value: Any) -> None:
    document = dumps({"input": value})
    assert lossless(exact_json.dumps(exact_json.loads(document))) == lossless(document)


def test_numbers_a_double_cannot_carry_are_written_back_as_they_came() -> None:
    document = b'{"id":123456789012345678901234567890,"pi":3.14159265358979323846,"tiny":1e-400,"n":1.5}'
    assert exact_json.dumps(exact_json.loads(document)) == document
