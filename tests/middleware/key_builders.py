"""Key builders importable by dotted path, used by the key tests."""

from __future__ import annotations

from middleware import KeyRequest


def model_only(request: KeyRequest, default: object) -> str:
    return f"model-{request.model}"
