"""`multipart/form-data` bodies (audio uploads) read as the fields that change the answer.

A file part becomes the SHA-256 of its bytes, so the key holds the file's content and never its
name, the boundary or the order of the fields; a field sent more than once (`timestamp_granularities[]`)
becomes the list of its values in the order sent (a server may read the first or the last of them,
so two orders are two requests).
"""

from __future__ import annotations

import hashlib
from email.message import Message
from typing import Any

FILE_DIGEST = "sha256"
"""A file field's value: `{"sha256": "<hex digest of its bytes>"}`."""
MAX_PARTS = 1000
"""The most parts a form read here may have (Starlette's and Werkzeug's default limit too): 64 MiB of
empty parts, 64 KiB gzipped, took the event loop 40 s to read part by part."""


def form_fields(content_type: str, body: bytes) -> dict[str, Any] | None:
    """The form's fields by name, or None when `body` is not a well-formed form of this boundary or has
    more than `MAX_PARTS` parts."""
    boundary = _parameter(content_type, "boundary")
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        return None
    delimiter = b"--" + boundary.encode("latin-1")
    if body.count(delimiter) > MAX_PARTS + 1:  # (counted in one pass, before any part is cut out)
        return None
    chunks = body.split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        return None  # no closing delimiter: a truncated or foreign body
    values: dict[str, list[Any]] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            return None
        head, separator, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not separator:
            return None
        disposition = _header(head, "content-disposition")
        name = _parameter(disposition, "name")
        if name is None or not disposition.lower().startswith("form-data"):
            return None
        if _parameter(disposition, "filename") is not None:
            values.setdefault(name, []).append({FILE_DIGEST: hashlib.sha256(data).hexdigest()})
        else:
            try:
                values.setdefault(name, []).append(data.decode("utf-8"))
            except UnicodeDecodeError:
                return None
    return {name: found[0] if len(found) == 1 else found for name, found in values.items()}


def _header(head: bytes, name: str) -> str:
    for line in head.decode("latin-1").split("\r\n"):
        field, _, value = line.partition(":")
        if field.strip().lower() == name:
            return value.strip()
    return ""


def _parameter(value: str, name: str) -> str | None:
    """A parameter of a header value (`boundary`, `name`, `filename`), unquoted."""
    message = Message()
    message["content-type"] = value
    found = message.get_param(name, header="content-type")
    return found if isinstance(found, str) else None
