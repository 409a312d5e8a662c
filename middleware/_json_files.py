"""Files the CLI's commands read where the operator names them: JSON (`warm`, `invalidate --request`,
`calibrate`) and the admin key (`--admin-key-file`).

Whoever wrote the file is not trusted to have written it well: bytes that are not UTF-8, a line that is
not JSON, or nesting deeper than the parser recurses is a `ValueError` naming the file and the line,
never a traceback. A path that is not a regular file (`/dev/zero`, a FIFO, a folder) is refused before
anything is read, and JSON lines are read one at a time, each at most `MAX_LINE_BYTES`: no file makes
the command hold more than one line of it unparsed, or wait for ever.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

MAX_KEY_BYTES = 4096
"""The most of an admin key file read: a key is a line, not a file."""
MAX_LINE_BYTES = 64 * 1024 * 1024
"""The longest line a JSON-lines file may hold, and the largest whole-file JSON object (the gateway's
own cap on a request body with a router)."""


@contextmanager
def _regular(path: Path) -> Iterator[IO[bytes]]:
    """`path` opened for reading, if it is a regular file. Opened without blocking (a FIFO no one
    writes to would wait for ever) and judged on the opened file, not a name that may change between."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ValueError(f"{path}: not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        yield file


def _decoded(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text (byte {error.start})") from None


def _parsed(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply to read") from None


def json_object(path: Path) -> dict[str, Any]:
    """The JSON object a whole file holds."""
    with _regular(path) as file:
        raw = file.read(MAX_LINE_BYTES + 1)
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_LINE_BYTES} bytes")
    value = _parsed(_decoded(raw, str(path)), str(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each line that is not blank or a `#` comment."""
    with _regular(path) as file:
        for number, raw in enumerate(iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""), 1):
            where = f"{path}:{number}"
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise ValueError(f"{where}: a line longer than {MAX_LINE_BYTES} bytes")
            line = _decoded(raw, where)
            if line.strip() and not line.lstrip().startswith("#"):
                yield number, _parsed(line, where)


def key_file(path: Path) -> str:
    """The key a file holds: its first line, blanks stripped (what `echo KEY > FILE` wrote)."""
    with _regular(path) as file:
        raw = file.read(MAX_KEY_BYTES + 1)
    if len(raw) > MAX_KEY_BYTES:
        raise ValueError(f"{path}: larger than {MAX_KEY_BYTES} bytes, not a key")
    lines = _decoded(raw, str(path)).strip().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: no key in it")
    return lines[0].strip()
