"""OpenAI's audio transcriptions and translations: a `multipart/form-data` upload, a JSON answer.

The key holds the file's bytes (as a digest) and the form fields (`providers/multipart.py`). Only
JSON answers are stored (`response_format` `json`, `verbose_json`, `diarized_json`); `text`, `srt`
and `vtt` answers pass through unstored, and a `stream=true` request bypasses the cache (its events
are not replayed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ... import _operations as operations
from .base import NonStreamingEndpoint, RequestView, Route, not_a
from .multipart import form_fields
from .openai import _OpenAIEndpoint


class _AudioEndpoint(_OpenAIEndpoint, NonStreamingEndpoint):
    operation = "transcription"
    form_body: ClassVar[bool] = True

    def read_form(self, content_type: str, body: bytes) -> dict[str, Any] | None:
        return form_fields(content_type, body)

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        if str(body.get("stream", "")).lower() == "true":
            return "a streamed transcription is not cached (its events are not replayed)"
        return None

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # an audio file, not a conversation

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        return not_a(str, response.get("text"), "`text`")


class Transcriptions(_AudioEndpoint):
    name = "audio.transcriptions"
    api_operation = operations.TRANSCRIPTIONS
    suffix = "audio/transcriptions"


class Translations(_AudioEndpoint):
    name = "audio.translations"
    api_operation = operations.TRANSLATIONS
    suffix = "audio/translations"
