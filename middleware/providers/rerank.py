"""Rerank: Cohere's `/v1/rerank` and `/v2/rerank`, and the `/rerank` of OpenAI-compatible servers
(LiteLLM, Jina, vLLM), which answer in Cohere's shape."""

from __future__ import annotations

from typing import Any

from ... import _operations as operations
from ..._wire import suffix_pattern
from .base import (
    JSON_MEDIA_TYPE,
    AnswerHeaders,
    NonStreamingEndpoint,
    RequestView,
    Route,
    Usage,
    not_a,
    objects,
    token_count,
)

ANSWER_HEADERS = AnswerHeaders(
    {
        JSON_MEDIA_TYPE: (
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-cache, no-store, no-transform, must-revalidate, private, max-age=0"),
            (b"expires", b"Thu, 01 Jan 1970 00:00:00 UTC"),
            (b"pragma", b"no-cache"),
        )
    },
    request_id="x-debug-trace-id",
)
"""What api.cohere.com sends with an answer, and the trace id it names the call by (the id support
asks for; OpenAI-compatible rerank servers send neither, and get Cohere's headers on a hit)."""


class Rerank(NonStreamingEndpoint):
    family = "cohere"
    answer_headers = ANSWER_HEADERS
    name = "rerank"
    operation = "rerank"
    api_operation = operations.RERANK

    def __init__(self) -> None:
        self._path = suffix_pattern("/rerank")

    def match(self, path: str) -> Route | None:
        return Route(self) if self._path.match(path) else None

    def usage(self, response: dict[str, Any]) -> Usage:
        """Cohere bills search units; the input tokens are counted when `meta.billed_units` has them."""
        meta = response.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        return Usage(token_count(billed.get("input_tokens"))) if isinstance(billed, dict) else Usage()

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # a query and documents, not a conversation

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        return ()

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        results: Any = response.get("results")
        reason = objects(results, "`results`")
        for index, result in enumerate(results if reason is None else ()):
            reason = not_a(int, result.get("index"), f"`results[{index}].index`") or not_a(
                (int, float), result.get("relevance_score"), f"`results[{index}].relevance_score`"
            )
            if reason is not None:
                break
        return reason
