"""Caller-supplied text as the cache's logs and spans record it."""

from __future__ import annotations


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, its control characters and line breaks escaped as Python
    writes them (`\\r`, `\\n`, `\\x1b`, `\\u2028`): a path, a model name or a stop sequence cannot forge
    a log line or send a terminal escape. Printable text comes back as it is."""
    text = text[:limit]
    return text if text.isprintable() else repr(text)[1:-1]
