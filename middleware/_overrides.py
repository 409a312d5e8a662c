"""Every place a server behind us may read the method it acts on, instead of the request's own.

Headers: Google's front ends read `X-HTTP-Method-Override`, other servers its variants
(`METHOD_OVERRIDES`). The query: `_method` (Laravel and Symfony, Gorilla, Spring's form filter, which
reads query parameters too), `$httpMethod` (Google's system parameter for the header), `method`
(akka-http's `overrideMethodWithParameter`), and the header names (method-override middlewares told to
read a query key). The body: `_method` in a form (Rails and Rack, Laravel, Spring, Gorilla, Hono) or a
JSON object (Laravel reads JSON input as it reads a form).

Names are read as the most lenient of those servers reads them: whatever the case, percent-escaped,
with `;` as a separator too (Rack's query parser), and with PHP's mangling (a space, `.` or `[` in a
name read as `_`, so `.method` is `_method`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson

from ._headers import METHOD_OVERRIDES
from .providers.multipart import form_fields

QUERY_NAMES = frozenset({"_method", "$httpmethod", "method", *METHOD_OVERRIDES})
BODY_FIELD = "_method"
_MANGLED = str.maketrans({" ": "_", ".": "_", "[": "_"})

UNREADABLE = "?"
"""What a value that names no method as text (a JSON list, a number) is judged as: another method."""


def _name(name: str) -> str:
    return name.lower().translate(_MANGLED)


def _method(value: Any) -> str:
    return value.strip().upper() if isinstance(value, str) else UNREADABLE


def in_headers(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The methods lower-case `headers` name in an override header."""
    return [_method(value) for name, value in headers if name in METHOD_OVERRIDES]


def in_query(query: str) -> list[str]:
    """The methods the query string names."""
    if not query:
        return []
    pairs = parse_qsl(query.replace(";", "&"), keep_blank_values=True)
    return [_method(value) for name, value in pairs if _name(name) in QUERY_NAMES]


def in_fields(fields: Mapping[str, Any], *, form: bool) -> list[str]:
    """The methods a body's fields name: a form's (PHP-mangled names too) or a JSON object's."""
    if not form:
        return [_method(fields[BODY_FIELD])] if BODY_FIELD in fields else []
    named: list[str] = []
    for name, value in fields.items():
        if _name(name) == BODY_FIELD:
            named.extend(_method(each) for each in (value if isinstance(value, list) else [value]))
    return named


_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


_FORMS = ("", _FORM, _MULTIPART)
"""The media types a server reads a body of as a form, whatever it holds (Rack reads a POST body
without a type as one)."""


def body_may_name(content_type: str) -> bool:
    """Whether a server may read a method from a body of this type: a form, or JSON."""
    kind = _media_type(content_type)
    return kind in _FORMS or kind.endswith("json")


def read_as_form(content_type: str | None) -> bool:
    """Whether a body of this type (None: none sent) is read as a form: `in_body` reads it as one, as
    a server behind may, though the endpoint reads JSON (a JSON object's text may hold `&_method=`)."""
    return content_type is None or _media_type(content_type) in _FORMS


# A pair whose name a lenient server reads as `_method`: one of `_`, `.`, ` `, `[` (PHP's mangling) or
# `+`, then `method` in any case, each character as itself or percent-escaped; its raw value, if any.
_FORM_FIELD = re.compile(
    rb"(?:\A|[&;])(?:[_. \[+]|%(?:5f|2e|20|5b))(?:m|%[46]d)(?:e|%[46]5)(?:t|%[57]4)(?:h|%[46]8)(?:o|%[46]f)"
    rb"(?:d|%[46]4)(?:=([^&;]*))?(?=[&;]|\Z)",
    re.IGNORECASE,
)
MAX_FORM_FIELDS = 16
"""The most `_method` fields a form may hold and still be read (no client sends more than one)."""


def _in_form(body: bytes) -> list[str] | None:
    """The methods a form body names, as `parse_qsl` and `_name` read them, found by one scan of the
    bytes: a form of millions of pairs (64 MiB of `a&`, or 64 KiB of it gzipped) took `parse_qsl`
    minutes and gigabytes on the event loop. None for more than `MAX_FORM_FIELDS` of them."""
    named: list[str] = []
    for found in _FORM_FIELD.finditer(body):
        if len(named) == MAX_FORM_FIELDS:
            return None
        value = found.group(1) or b""
        named.append(_method(unquote_plus(value.decode("latin-1"), errors="replace")))
    return named


# A JSON string that reads `_method`, each character as itself or a `\u` escape, not inside another
# string (a key's opening quote never follows a backslash).
_JSON_FIELD = re.compile(
    rb'(?<!\\)"(?:_|\\u005[fF])(?:m|\\u006[dD])(?:e|\\u0065)(?:t|\\u0074)(?:h|\\u0068)(?:o|\\u006[fF])(?:d|\\u0064)"'
)
MAX_JSON_JUDGED = 1 << 20
"""The largest JSON body holding a `_method` string that is parsed to judge it: parsing builds every
value (4 MiB of `{},` is 144 MB of objects), and no client sends `_method` in a large body."""


def in_body(content_type: str, body: bytes) -> list[str] | None:
    """The methods a body names; None when it is a form that cannot be read and may name one."""
    kind = _media_type(content_type)
    if kind in ("", _FORM):
        return _in_form(body)
    if kind == _MULTIPART:
        fields = form_fields(content_type, body)
        if fields is None:
            return None if b"method" in body.lower() else []
        return in_fields(fields, form=True)
    if kind.endswith("json"):
        if _JSON_FIELD.search(body) is None:  # (nearly every body: no value built)
            return []
        if len(body) > MAX_JSON_JUDGED:
            return None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:  # not JSON: no server reads a field from it
            return []
        return in_fields(parsed, form=False) if isinstance(parsed, dict) else []
    return []


__all__ = [
    "BODY_FIELD",
    "QUERY_NAMES",
    "UNREADABLE",
    "body_may_name",
    "in_body",
    "in_fields",
    "in_headers",
    "in_query",
    "read_as_form",
]
