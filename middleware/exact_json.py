"""JSON that never changes a number: orjson's speed, the standard library's exactness where it matters.

orjson reads an integer beyond 64 bits as a float (silently losing its digits) and refuses to write
one. Provider answers can carry such integers (tool inputs, ids in structured output), and a stored
answer must replay them digit for digit. A document with a run of 19 or more digits (2**63 has 19)
is therefore read by the standard library, which keeps integers exact; every other document takes
orjson's fast path. A run of digits inside a string only costs the slower parser, never a change.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19,}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON exactly; raises ValueError (as orjson does) for anything that is not strict JSON."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        return orjson.loads(raw)
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Compact JSON; integers beyond 64 bits are written whole."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
