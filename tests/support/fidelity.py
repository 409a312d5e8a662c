"""What the differential fidelity suite compares, shared by its families."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def field_paths(value: Any, prefix: str = "", ignored: frozenset[str] = frozenset()) -> set[str]:
    """Every field path a JSON value carries, list positions folded (`choices[].delta.audio.data`);
    null fields and fields named in `ignored` do not count."""
    if isinstance(value, dict):
        paths: set[str] = set()
        for key, item in value.items():
            if item is None or key in ignored:
                continue
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | field_paths(item, path, ignored)
        return paths
    if isinstance(value, list):
        return set().union(*(field_paths(item, prefix + "[]", ignored) for item in value))
    return set()


def missing_paths(original: Iterable[Any], replay: Iterable[Any], ignored: frozenset[str] = frozenset()) -> set[str]:
    """The field paths some event of `original` carried that no event of `replay` carries."""
    seen = set().union(*(field_paths(event, "", ignored) for event in replay))
    return set().union(*(field_paths(event, "", ignored) for event in original)) - seen
