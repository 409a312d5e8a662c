"""Amazon Bedrock runtime: InvokeModel and Converse, JSON answers only.

Bedrock's requests are signed over their body (SigV4), so the cache keys them but never rewrites
them; the caller's credential scope is the access key id of the signature (keys.credential_of).
The streaming actions (`invoke-with-response-stream`, `converse-stream`) answer in AWS's binary
event-stream framing: they are not owned here, so they pass through untouched.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import unquote

from .anthropic import Messages
from .base import NonStreamingEndpoint, Route, Usage, split_last_turn, usage_with_cache_apart


class _BedrockEndpoint(NonStreamingEndpoint):
    family = "bedrock"
    operation = "chat"
    action: ClassVar[str]

    def __init__(self) -> None:
        self._pattern = re.compile(r"^(?:/.*)?/model/(?P<model>[^/]+)/" + re.escape(self.action) + r"/?$")

    def match(self, path: str) -> Route | None:
        found = self._pattern.match(path)
        return Route(self, model=unquote(found["model"])) if found else None

    def model(self, route: Route, body: dict[str, Any]) -> str | None:
        return route.model

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        return split_last_turn(body, "messages")


class InvokeModel(_BedrockEndpoint):
    """`POST /model/{modelId}/invoke`: the model's own body (Anthropic Messages for Claude models)."""

    name = "bedrock.invoke"
    action = "invoke"
    _anthropic = Messages()

    def usage(self, response: dict[str, Any]) -> Usage:
        return self._anthropic.usage(response)  # Claude models answer in the Messages shape


class Converse(_BedrockEndpoint):
    """`POST /model/{modelId}/converse`: Bedrock's own model-independent chat shape."""

    name = "bedrock.converse"
    action = "converse"

    def usage(self, response: dict[str, Any]) -> Usage:
        return usage_with_cache_apart(
            response, "inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "outputTokens"
        )

    def response_model(self, response: dict[str, Any]) -> str | None:
        return None

    def response_id(self, response: dict[str, Any]) -> str | None:
        return None
