"""Key builders importable by dotted path, used by the key tests."""

from __future__ import annotations

from llm_cache.middleware import KeyRequest


def model_only(request: KeyRequest, default: object) -> str:
    return f"model-{request.model}"
