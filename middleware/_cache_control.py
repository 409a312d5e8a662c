"""One tokenizer for `Cache-Control`, whoever sent it: a request's own controls (`_policy`) and an
upstream answer's (`_freshness`) read the same directives from the same hostile value. A quoted
argument may hold commas and other directives' names (`private="x, no-store"` is `private` only);
names are case-insensitive; several field lines are one comma-joined list (RFC 9110 5.3); a name given
more than once keeps every argument, for the reader to pick the most restrictive (RFC 9111 4.2.1 lets
a cache treat such an answer as stale).
"""

from __future__ import annotations

import re

_DIRECTIVE = re.compile(r'([^=,\s]+)[ \t]*(?:=[ \t]*("(?:[^"\\]|\\.)*"|[^,]*))?')
"""One directive: its name, and its argument (quoted, holding commas, or a token) if it has one."""

Directives = dict[str, tuple[str, ...]]
"""Directive name (lower-case) -> every argument it was given ("" for none), in order."""


def directives(value: str) -> Directives:
    """The directives of a `Cache-Control` value (several fields joined by commas)."""
    found: dict[str, list[str]] = {}
    for match in _DIRECTIVE.finditer(value):
        argument = (match.group(2) or "").strip()
        if argument.startswith('"'):
            argument = argument[1:-1] if len(argument) > 1 and argument.endswith('"') else argument[1:]
        found.setdefault(match.group(1).lower(), []).append(argument)
    return {name: tuple(arguments) for name, arguments in found.items()}


__all__ = ["Directives", "directives"]
