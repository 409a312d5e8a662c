"""Writing OpenAI chat answers (documents, chunk events, errors) for the translators that produce them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import dumps, now, parse_json
from .sse import EventReader, encode


def completion(id: Any, model: Any, choices: list[dict[str, Any]], usage: dict[str, Any]) -> bytes:
    doc = {"id": id, "object": "chat.completion", "created": now(), "model": model, "choices": choices}
    return dumps({**doc, "usage": usage})


def error(message: Any, kind: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_from(body: bytes, kind: str) -> bytes:
    """Another family's error (``{"error": {"message", <kind>}}``, maybe in a list) in OpenAI's shape.

    A body without that shape is passed on as it is: the caller still sees the status and the text.
    """
    doc = parse_json(body)
    if isinstance(doc, list) and doc:  # Gemini sometimes wraps it in a list
        doc = doc[0]
    err = doc.get("error") if isinstance(doc, Mapping) else None
    if not isinstance(err, Mapping):
        return body
    return dumps(error(err.get("message"), err.get(kind)))


class ChunkStream:
    """Reads the target's server-sent events; subclasses turn each JSON event into OpenAI chunk events."""

    def __init__(self, caller: dict[str, Any]) -> None:
        options = caller.get("stream_options")
        self.include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        self.reader = EventReader()
        self.created = now()
        self.id: Any = None
        self.model: Any = None

    def chunk(self, choices: list[dict[str, Any]]) -> bytes:
        doc: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:  # as OpenAI sends them: null on every chunk but the last
            doc["usage"] = None
        return encode(doc)

    def done(self, usage: dict[str, Any]) -> bytes:
        """The end of a complete stream: the usage chunk when asked for, then ``[DONE]``."""
        out = b""
        if self.include_usage:
            doc = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
            out = encode({**doc, "choices": [], "usage": usage})
        return out + encode("[DONE]")

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for _, data in self.reader.feed(chunk):
            event = parse_json(data)
            if isinstance(event, Mapping):
                out.append(self.event(event))
        return b"".join(out)

    def event(self, event: Mapping[str, Any]) -> bytes:
        raise NotImplementedError


__all__ = ["ChunkStream", "completion", "error", "error_from"]
