"""Amazon Bedrock runtime: InvokeModel (JSON and streamed) and Converse (JSON).

Bedrock's requests are signed over their body (SigV4), so the cache keys them but never rewrites
them; the caller's credential scope is the access key id of the signature (keys.credential_of).
`invoke-with-response-stream` answers in AWS's binary event-stream framing, each `chunk` event
carrying one of the model's own stream events (Anthropic Messages events for Claude) in base64:
it shares its key with `invoke`, is assembled into the final message, and is replayed as frames.
`converse-stream` is not owned: it passes through untouched.
"""

from __future__ import annotations

import base64
import re
from typing import Any, ClassVar
from urllib.parse import unquote

import orjson

from .anthropic import Messages, MessageStreamAssembler, message_events
from .base import (
    Endpoint,
    NonStreamingEndpoint,
    RequestView,
    Route,
    Usage,
    loads_object,
    split_last_turn,
    usage_with_cache_apart,
)
from .eventstream import MEDIA_TYPE, EventStreamDecoder, EventStreamError, encode_message

_CHUNK_HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}


class _BedrockEndpoint(Endpoint):
    family = "bedrock"
    operation = "chat"
    actions: ClassVar[str]
    """The path actions this endpoint owns, as a regex alternation."""

    def __init__(self) -> None:
        self._pattern = re.compile(r"^(?:/.*)?/model/(?P<model>[^/]+)/(?P<action>" + self.actions + r")/?$")

    def match(self, path: str) -> Route | None:
        found = self._pattern.match(path)
        if found is None:
            return None
        return Route(self, model=unquote(found["model"]), stream_by_path=found["action"].endswith("-stream"))

    def is_stream(self, route: Route, query: str, body: dict[str, Any]) -> bool:
        return route.stream_by_path

    def model(self, route: Route, body: dict[str, Any]) -> str | None:
        return route.model

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        return split_last_turn(body, "messages")


class InvokeModel(_BedrockEndpoint):
    """`/model/{modelId}/invoke` and `/invoke-with-response-stream`: the model's own body (Anthropic
    Messages for Claude models). Both forms share entries, as Gemini's do."""

    name = "bedrock.invoke"
    actions = "invoke|invoke-with-response-stream"
    _anthropic = Messages()

    def usage(self, response: dict[str, Any]) -> Usage:
        return self._anthropic.usage(response)  # Claude models answer in the Messages shape

    def assembler(self, request: RequestView) -> InvokeStreamAssembler:
        return InvokeStreamAssembler()

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        return b"".join(
            encode_message(_CHUNK_HEADERS, orjson.dumps({"bytes": base64.b64encode(orjson.dumps(event)).decode()}))
            for event in message_events(orjson.loads(response))
        )

    def stream_media_type(self, request: RequestView) -> str:
        return MEDIA_TYPE


class Converse(_BedrockEndpoint, NonStreamingEndpoint):
    """`/model/{modelId}/converse`: Bedrock's own model-independent chat shape."""

    name = "bedrock.converse"
    actions = "converse"

    def usage(self, response: dict[str, Any]) -> Usage:
        return usage_with_cache_apart(
            response, "inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "outputTokens"
        )

    def response_model(self, response: dict[str, Any]) -> str | None:
        return None

    def response_id(self, response: dict[str, Any]) -> str | None:
        return None


class InvokeStreamAssembler:
    """The final message of an `invoke-with-response-stream` answer: its frames are checked and
    their `chunk` events fed to the Messages assembler. An exception event, a bad frame or a
    chunk that is not a Messages event breaks it."""

    def __init__(self) -> None:
        self._frames = EventStreamDecoder()
        self._messages = MessageStreamAssembler()
        self._broken = False

    @property
    def complete(self) -> bool:
        return self._messages.complete and not self._broken and not self._frames.pending

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        try:
            frames = self._frames.feed(chunk)
        except EventStreamError:
            self._broken = True
            return
        for headers, payload in frames:
            data = loads_object(payload) if headers.get(":event-type") == "chunk" else None
            encoded = data.get("bytes") if data is not None else None
            event = _decoded_event(encoded) if isinstance(encoded, str) else None
            if headers.get(":message-type") != "event" or event is None:
                self._broken = True
                return
            self._messages.feed(b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

    def result(self) -> bytes | None:
        return self._messages.result() if self.complete else None


def _decoded_event(encoded: str) -> dict[str, Any] | None:
    try:
        event = loads_object(base64.b64decode(encoded, validate=True))
    except ValueError:
        return None
    return event if event is not None and isinstance(event.get("type"), str) else None
