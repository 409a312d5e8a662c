"""The merge rules of streamed deltas (OpenAI-style chunks and the servers that copy them)."""

from __future__ import annotations

from typing import Any

from llm_cache.middleware.providers.deltas import merge_delta, merge_list


def merged(*deltas: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for delta in deltas:
        assert merge_delta(target, delta) is target
    return target


def test_strings_concatenate() -> None:
    assert merged({"content": "Pa"}, {"content": "ris"}) == {"content": "Paris"}


def test_identity_fields_are_replaced_not_repeated() -> None:
    first = {"id": "call_1", "type": "function", "index": 0, "role": "assistant"}
    assert merged(first, first) == first
    later = {"id": "call_2", "type": "custom", "index": 1, "role": "tool"}
    assert merged(first, later) == later


def test_objects_merge_recursively() -> None:
    assert merged(
        {"audio": {"id": "a", "data": "AA", "transcript": "Hel"}}, {"audio": {"data": "BB", "transcript": "lo"}}
    ) == {"audio": {"id": "a", "data": "AABB", "transcript": "Hello"}}


def test_null_never_erases_a_value_but_is_kept_for_a_field_not_seen() -> None:
    assert merged({"content": "Hi"}, {"content": None}) == {"content": "Hi"}
    assert merged({"refusal": None}) == {"refusal": None}
    assert merged({"refusal": None}, {"refusal": "No"}) == {"refusal": "No"}


def test_numbers_booleans_and_mismatched_types_take_the_later_value() -> None:
    assert merged({"n": 1, "flag": True}, {"n": 2, "flag": False}) == {"n": 2, "flag": False}
    assert merged({"x": "text"}, {"x": {"a": 1}}) == {"x": {"a": 1}}
    assert merged({"x": [1]}, {"x": "text"}) == {"x": "text"}


def test_indexed_list_entries_merge_at_their_index_and_others_append() -> None:
    assert merged(
        {"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{"}}]},
        {"tool_calls": [{"index": 1, "id": "b"}, {"index": 0, "function": {"arguments": "}"}}]},
        {"annotations": [{"url": "x"}]},
        {"annotations": [{"url": "y"}, "z"]},
    ) == {
        "tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{}"}}, {"index": 1, "id": "b"}],
        "annotations": [{"url": "x"}, {"url": "y"}, "z"],
    }


def test_an_index_that_is_not_an_integer_does_not_merge() -> None:
    assert merge_list([{"index": True, "a": "x"}], [{"index": True, "a": "y"}, {"index": "0", "a": "z"}]) == [
        {"index": True, "a": "x"},
        {"index": True, "a": "y"},
        {"index": "0", "a": "z"},
    ]


def test_later_merges_never_change_the_delta_they_came_from() -> None:
    delta = {"audio": {"data": "AA"}, "tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}
    target = merged(delta, {"audio": {"data": "BB"}, "tool_calls": [{"index": 0, "function": {"arguments": "}"}}]})
    assert delta == {"audio": {"data": "AA"}, "tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}
    assert target["audio"]["data"] == "AABB"


def test_a_null_field_does_not_stop_the_fields_after_it() -> None:
    assert merged({"content": "Pa"}, {"refusal": None, "content": "ris"}) == {"content": "Paris", "refusal": None}
