"""JSON that never changes a number: orjson's speed, the standard library's exactness where it matters.

`loads_every_number` goes further for request bodies, whose keys must tell apart numbers that
differ only past a double's precision: see its docstring.

orjson reads an integer beyond 64 bits as a float (silently losing its digits) and refuses to write
one, and any parser that reads numbers as doubles rounds a decimal with more digits than a double
holds. Provider answers can carry such numbers (tool inputs, ids in structured output), and a stored
answer must replay them digit for digit. A document with a number token that may not fit (16 or
more digits and dots in a row, or an exponent of three digits) is therefore read by the standard
library, keeping each such number as an `orjson.Fragment` of its own text, which `dumps` writes back
verbatim; every other document takes orjson's fast path. Digits inside a string only cost the slower
parser, never a change.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import orjson

_WIDE = (b"d" * 16, b"eddd", b"esddd")
"""A number token that a double may not carry, as `_WIDE_MARKS` writes it: 16 digits and dots in a
row (15 significant digits always fit), or an exponent of three digits (literal searches: a regular
expression would be ten times slower)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON without changing a number; raises ValueError (as orjson does) for anything that is
    not strict JSON. A number a double cannot carry comes back as an `orjson.Fragment` of its text."""
    raw = data.encode() if isinstance(data, str) else data
    marks = raw.translate(_WIDE_MARKS)
    if not any(wide in marks for wide in _WIDE):
        return orjson.loads(raw)
    return _exact_loads(raw)


def loads_spelt(data: bytes | str) -> Any:
    """`loads`, keeping the spelling of every number `dumps` would write otherwise: a number with an
    exponent (`1e-05`, written by Python's `json`, is `0.00001` to orjson) comes back as an
    `orjson.Fragment` of its text too. For stream events and the answers assembled from them, so that
    a replay writes each number as the provider did; a document without an exponent (nearly every
    one) takes `loads`' path. (Not for embeddings and other bulk answers: their exponents are many,
    and a hit of them is the provider's own bytes.)"""
    raw = data.encode() if isinstance(data, str) else data
    marks = raw.translate(_WIDE_MARKS)
    if not any(wide in marks for wide in _WIDE) and not any(spelt in marks for spelt in _SPELT):
        return orjson.loads(raw)
    try:
        return json.loads(
            raw.decode("utf-8"), parse_float=_spelt_float, parse_int=_exact_int, parse_constant=_no_constants
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_SPELT = (b"ded", b"desd")
"""A number token with an exponent, as `_WIDE_MARKS` writes it (a digit, `e` or `E`, a digit or a sign
and a digit): one `dumps` may spell otherwise."""


def _spelt_float(text: str) -> float | orjson.Fragment:
    value = float(text)
    if math.isfinite(value) and orjson.dumps(value) == text.encode():
        return value  # written back as it came
    return orjson.Fragment(text)


def dumps(value: Any) -> bytes:
    """Compact JSON; integers beyond 64 bits are written whole."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def dumps_spaced(value: Any) -> str:
    """`dumps`, spelt with a space after each `:` and `,` between tokens (`{"a": 1, "b": [2, 3]}`), as
    Anthropic streams tool input; strings and numbers are written as `dumps` writes them."""
    return _SEPARATOR.sub(_spaced, dumps(value).decode())


def _spaced(match: re.Match[str]) -> str:
    token = match.group()
    return token + " " if token in _SEPARATORS else token


COMPACT, KEY_SPACED, SPACED, ASCII, INDENTED = 0, 1, 2, 4, 8
"""How a JSON text is spelt (`spelt`): compact (orjson's, `dumps`); a space after each key's `:` only,
as Gemini streams; a space after each `:` and `,`, as Python's `json` writes by default; indented by
two spaces a level, one member a line, a space after each key's `:` (as Google writes a JSON answer and
the elements of a streamed array, as `json.dumps(indent=2)` does); and, with `ASCII` added, every
character outside ASCII escaped (`\\u00e9`), as Python's `json` does by default."""
_SPELLINGS = (KEY_SPACED, SPACED, ASCII, KEY_SPACED | ASCII, SPACED | ASCII)
LINE_SPELLINGS = frozenset((COMPACT, *_SPELLINGS))
"""The spellings of a JSON text on one line (an SSE event's `data`)."""
SPELLINGS = LINE_SPELLINGS | {INDENTED, INDENTED | ASCII}
_OUTSIDE_ASCII = re.compile("[^\x00-\x7e]")


def spelt(compact: bytes, spelling: int) -> bytes:
    """The compact JSON text `compact` (as `dumps` writes it) spelt as `spelling` says."""
    if spelling == COMPACT:
        return compact
    text = compact.decode()
    if spelling & INDENTED:
        text = _indented(text)
    elif spelling & (KEY_SPACED | SPACED):
        spaced = _SEPARATORS if spelling & SPACED else (":",)
        text = _SEPARATOR.sub(lambda match: match.group() + " " if match.group() in spaced else match.group(), text)
    if spelling & ASCII:
        text = _OUTSIDE_ASCII.sub(_escaped, text)
    return text.encode()


def _indented(compact: str) -> str:
    """`compact` as `json.dumps(indent=2)` writes it: an empty object or list stays `{}` or `[]`."""
    depth = 0

    def token(match: re.Match[str]) -> str:
        nonlocal depth
        found = match.group()
        if found in ("{", "["):
            depth += 1
            return found + "\n" + "  " * depth
        if found in ("}", "]"):
            depth -= 1
            return "\n" + "  " * depth + found
        if found == ",":
            return ",\n" + "  " * depth
        return ": " if found == ":" else found

    return _STRUCTURE.sub(token, compact)


def spellings_of(raw: bytes, compact: bytes, among: frozenset[int] = SPELLINGS) -> frozenset[int]:
    """The spellings `among` in which `raw`, a JSON text, is written: those `spelt` makes `raw` of
    `compact` (its compact text) with. Empty when none (a provider that spells otherwise)."""
    return frozenset(spelling for spelling in among if spelt(compact, spelling) == raw)


def _escaped(match: re.Match[str]) -> str:
    """A character outside ASCII as Python's `json` escapes it: its UTF-16 code units, `\\uXXXX` each."""
    units = match.group().encode("utf-16-be")
    return "".join(f"\\u{units[i] << 8 | units[i + 1]:04x}" for i in range(0, len(units), 2))


def loads_every_number(raw: bytes) -> tuple[Any, bool]:
    """(the document with every number as written; True when it took the exact path). Raises ValueError.

    orjson reads numbers as doubles (and refuses integers beyond 64 bits), so two documents that
    differ only past a double's precision would parse alike. A number token is carried exactly by a
    double when it has at most 15 significant digits and an exponent of at most two digits (then it
    is a normal double too), so a document without a longer token is parsed by orjson (the fast
    path). Any other is parsed by the standard library, keeping every number a double cannot carry
    as an `orjson.Fragment` of its own text, which `orjson.dumps` then writes verbatim. The scan
    cannot tell a number from digits inside a string: those take the exact path too, which is
    slower but never wrong."""
    if _may_lose_numbers(raw):
        return _exact_loads(raw), True
    return orjson.loads(raw), False


def duplicate_key(raw: bytes) -> str | None:
    """Why `raw`, a JSON document, may be read differently by two parsers: an object that names a key
    twice (after unescaping: `"a"` and `"\\u0061"` are one key), which orjson and Python read as the
    last value and some parsers as the first; or nesting too deep to tell. None: every object's keys
    are distinct.

    The standard library's scanner hands each object's pairs to a hook that only counts them: no
    key is ever taken from inside a string, and the cost is one linear parse (no objects are built;
    the scanner's recursion limit bounds nesting)."""
    try:
        json.loads(raw, object_pairs_hook=_distinct_keys)
    except _DuplicateKey:
        return "duplicate key in the request body: a provider may read another value than the key"
    except RecursionError:
        return "duplicate keys unknown: the request body is nested too deeply to check"
    except ValueError:
        return "duplicate keys unknown: the request body is not JSON the standard library reads"
    return None


class _DuplicateKey(Exception):
    pass


def _distinct_keys(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len(dict(pairs)) != len(pairs):
        raise _DuplicateKey
    return None


def _exact_loads(raw: bytes) -> Any:
    """Every number a double cannot carry as an `orjson.Fragment` of its own text."""
    try:
        return json.loads(
            raw.decode("utf-8"), parse_float=_exact_float, parse_int=_exact_int, parse_constant=_no_constants
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _may_lose_numbers(raw: bytes) -> bool:
    """Whether `raw` may hold a number token of 16 or more `[0-9.]` characters, or an exponent of
    three or more digits. Both hold three digits in a row, so a document without any is settled by
    one search; each run of three digits is then looked at (at most `_RUNS_LOOKED_AT`, then: maybe)."""
    marks = raw.translate(_NUMBER_MARKS)
    finds = _SPARSE_FINDS if len(marks) >= _LONG else 0
    found, finds = _three_digits(marks, 0, finds)
    looked_at = 0
    while found >= 0:
        looked_at += 1
        if looked_at > _RUNS_LOOKED_AT:
            return True
        start = found
        while start and marks[start - 1] in _RUN:
            start -= 1
        end = _RUN_PATTERN.match(marks, found).end()  # type: ignore[union-attr]
        if end - start >= 16:
            return True
        sign = start >= 2 and marks[start - 1] == _SIGN
        if start and marks[start - 1 - sign] == _EXPONENT:
            return True
        found, finds = _three_digits(marks, end, finds)
    return False


def _three_digits(marks: bytes, start: int, finds: int) -> tuple[int, int]:
    """(where the first three digits in a row at or after `start` begin, or -1; the `finds` left).

    Up to `finds` digits are reached with a one-byte find (memchr: a long document with few digits
    is crossed in a few microseconds), then the regex (a literal search, faster than `bytes.find`
    for three bytes) walks the rest: a document dense with digits costs at most `_SPARSE_FINDS` finds."""
    find = marks.find
    while finds:
        finds -= 1
        at = find(b"d", start)
        if at < 0 or marks.startswith(b"ddd", at):
            return at, finds
        start = at + 1
    match = _THREE_DIGITS.search(marks, start)
    return (-1 if match is None else match.start()), 0


def _exact_float(text: str) -> float | orjson.Fragment:
    value = float(text)
    try:
        if math.isfinite(value) and Decimal(repr(value)) == Decimal(text):
            return value  # the double's shortest form has the token's exact value: nothing is lost
    except ArithmeticError:  # an exponent beyond what Decimal holds
        pass
    return orjson.Fragment(text)


def _exact_int(text: str) -> int | orjson.Fragment:
    return int(text) if len(text) <= 18 else orjson.Fragment(text)


def _number_marks() -> bytes:
    table = bytearray(b" " * 256)
    for char in b"0123456789":
        table[char] = ord("d")
    table[ord(".")] = ord(".")
    for char in b"eE":
        table[char] = ord("e")
    for char in b"+-":
        table[char] = ord("s")
    return bytes(table)


_NUMBER_MARKS = _number_marks()
"""`bytes.translate` table: digits become `d`, exponent marks `e`, signs `s`, `.` stays, the rest a space."""
_WIDE_MARKS = _NUMBER_MARKS.replace(b".", b"d")
"""`_NUMBER_MARKS`, with `.` a digit too."""
_RUN = frozenset(b"d.")
_RUN_PATTERN = re.compile(rb"[d.]*")
_THREE_DIGITS = re.compile(rb"ddd")
_EXPONENT = ord("e")
_SIGN = ord("s")
_SEPARATOR = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[,:]')
"""A JSON string (matched whole, so separators inside it stay as they are) or a separator."""
_SEPARATORS = (",", ":")
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|\{\}|\[\]|[{}\[\],:]')
"""A JSON string (matched whole), an empty object or list, or a bracket or separator."""
_RUNS_LOOKED_AT = 32
_LONG = 8192
"""Documents from this length on look for digits with one-byte finds first (`_three_digits`)."""
_SPARSE_FINDS = 16
