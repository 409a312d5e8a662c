"""Merging streamed deltas into the object the provider would have answered in one piece.

OpenAI-style streams (and the many servers that copy them) send each choice's message as a run of
`delta` fragments. The merge rules are the providers' own, applied to every field, known or not:

- strings concatenate (`content`, `arguments`, `audio.data`, `transcript`, ...), except identity
  fields (`id`, `type`, `index`, `role`), which a later fragment may repeat and which are replaced;
- objects merge recursively (`function_call`, `audio`, `content_filter_results`, ...);
- lists whose entries carry an `index` merge entry by entry at that index (`tool_calls`,
  OpenRouter's `reasoning_details`); other lists are appended to (`annotations`, logprob tokens);
- any other value (numbers, booleans) is replaced by the later one; `null` never erases a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .cuts import FRAGMENT

IDENTITY_FIELDS = frozenset({"id", "type", "index", "role"})


def merge_delta(target: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Merge `delta` into `target` in place (and return it)."""
    for key, value in delta.items():
        if value is None:
            target.setdefault(key, None)
            continue
        current = target.get(key)
        if current is None:
            target[key] = _fresh(value)
        elif key in IDENTITY_FIELDS:
            target[key] = value
        elif isinstance(current, str) and isinstance(value, str):
            target[key] = current + value
        elif isinstance(current, dict) and isinstance(value, dict):
            merge_delta(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merge_list(current, value)
        else:
            target[key] = _fresh(value)
    return target


def merge_list(target: list[Any], delta: list[Any]) -> list[Any]:
    """Entries carrying an integer `index` merge into the entry with that index; others are appended."""
    for entry in delta:
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or isinstance(index, bool):
            target.append(_fresh(entry))
            continue
        found = _indexed(target, index)
        if found is None:
            target.append(_fresh(entry))
        else:
            merge_delta(found, entry)
    return target


def _indexed(entries: list[Any], index: int) -> dict[str, Any] | None:
    for entry in entries:
        if isinstance(entry, dict) and entry.get("index") == index:
            return entry
    return None


def _fresh(value: Any) -> Any:
    """A copy that later merges may change without touching the event it came from."""
    if isinstance(value, dict):
        return merge_delta({}, value)
    if isinstance(value, list):
        return merge_list([], value)
    return value


def fragment_positions(
    delta: dict[str, Any], path: tuple[str | int, ...], channel: tuple[Any, ...]
) -> Iterator[tuple[tuple[str | int, ...], tuple[Any, ...], int]]:
    """Where `merge_delta` would join a string of `delta` (at `path` in its event) onto an earlier
    one: each string but the identity fields, in objects and in list entries that carry an `index`,
    as (path, channel, `cuts.FRAGMENT`). The channel names the joined value: two fragments of one
    channel continue one string."""
    for key, value in delta.items():
        if isinstance(value, str):
            if key not in IDENTITY_FIELDS:
                yield (*path, key), (*channel, key), FRAGMENT
        elif isinstance(value, dict):
            yield from fragment_positions(value, (*path, key), (*channel, key))
        elif isinstance(value, list):
            for position, entry in enumerate(value):
                index = entry.get("index") if isinstance(entry, dict) else None
                if type(index) is int:
                    yield from fragment_positions(entry, (*path, key, position), (*channel, key, index))
