"""Reading a YAML config file the operator names, for the gateway's and the router's loaders alike.

A config file is the operator's, but it may be broken or handed over: whatever is wrong with its YAML
is a `YamlError` naming the line, never a parser's exception or a `RecursionError`, and a key written
twice in one mapping is such an error (YAML keeps the last one silently: a line appended under
`cache:` could make a per-credential cache a shared one). Merge keys (`<<: *base`) may still be
overridden. This module is neutral: it imports neither `llm_cache.middleware` nor `llm_cache.router`.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

_MERGE = "tag:yaml.org,2002:merge"
_OTHER = object()
"""A key not judged: a merge key, or one that is not a scalar (the constructor refuses an unhashable one)."""


class YamlError(ValueError):
    """YAML text that cannot be read as a config; the message names the line, not the file."""


class _Loader(yaml.SafeLoader):
    """`SafeLoader` (no `!!python` tags) that refuses a key written twice in one mapping."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._judged: set[int] = set()

    def flatten_mapping(self, node: MappingNode) -> None:
        # Every mapping is flattened before it is built, and a mapping merged into another is flattened
        # (which moves the merged keys into it) first: its own keys are judged then, before any merge.
        if id(node) not in self._judged:
            self._judged.add(id(node))
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self._scalar_key(key_node)
                if key is _OTHER:
                    continue
                if key in seen:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"the key {_shown(key)} is written twice in one mapping (YAML would keep only the last)",
                        key_node.start_mark,
                    )
                seen.add(key)
        super().flatten_mapping(node)

    def _scalar_key(self, key_node: Node) -> Any:
        """The key a scalar node holds, as the mapping built of it holds it (`1` and `true` are one key)."""
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
            return _OTHER
        key = self.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            return _OTHER
        return key


def _shown(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


MAX_CONFIG_VALUES = 1_000_000
"""Values a config may hold once its YAML aliases are expanded (a LiteLLM model list of a thousand
deployments holds tens of thousands). YAML reads an alias as a shared reference, which reading the
config copies out or prints: aliases of aliases (a 'billion laughs') would hold the process for minutes
and gigabytes."""


def expanded_size(value: Any, sizes: dict[int, int] | None = None) -> int:
    """How many values `value` holds with every shared reference copied out, counting each shared one once."""
    if not isinstance(value, (dict, list)):
        return 1
    sizes = {} if sizes is None else sizes
    known = sizes.get(id(value))  # (the ids are stable: `value` keeps every part alive meanwhile)
    if known is None:
        parts = value.values() if isinstance(value, dict) else value
        known = sizes[id(value)] = 1 + sum(expanded_size(part, sizes) for part in parts)
    return known


TOO_MANY_VALUES = (
    f"holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are expanded; "
    "write it out without aliases of aliases"
)


def read_yaml(text: str) -> Any:
    """The value the YAML `text` holds; `YamlError` (naming the line) for anything that is not one,
    or that holds more than `MAX_CONFIG_VALUES` once its aliases are expanded."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
        too_many = expanded_size(data) > MAX_CONFIG_VALUES
    except RecursionError:  # the reader (and the count) recurse per level of nesting
        raise YamlError("nested too deeply to read (hundreds of levels)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise YamlError(f"not valid YAML{at}: {problem}") from None
    if too_many:
        raise YamlError(TOO_MANY_VALUES)
    return data


__all__ = ["MAX_CONFIG_VALUES", "TOO_MANY_VALUES", "YamlError", "expanded_size", "read_yaml"]
