"""JSON the CLI's commands read from files the operator names (`warm`, `invalidate --request`, `calibrate`).

Whoever wrote the file is not trusted to have written it well: bytes that are not UTF-8, a line that is
not JSON, or nesting deeper than the parser recurses is a `ValueError` naming the file and the line,
never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _parsed(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply to read") from None


def json_object(path: Path) -> dict[str, Any]:
    """The JSON object a whole file holds."""
    value = _parsed(_text(path), str(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each line that is not blank or a `#` comment."""
    for number, line in enumerate(_text(path).splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, _parsed(line, f"{path}:{number}")
