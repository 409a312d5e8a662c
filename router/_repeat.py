"""Which requests the router may send more than once.

A retry or a fallback sends the request again. A generation call (a chat completion, a message, an
embedding, a count of tokens) creates nothing that outlives its answer: sent twice, it costs twice at
worst. A call that creates something on the provider (a fine-tuning job, a batch, a video, a
background response, an assistant) would create it twice, and a failure after it left (a 5xx, a
timeout, a connection cut mid-answer) does not say the provider did not act on it. Such a call is sent
again only after a failure that proves the provider never acted: no attempt made, the connection
refused or never opened, a 429 (refused before any work).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._errors import Kind

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods HTTP defines as idempotent (RFC 9110, 9.2.2): sending them twice does what sending them once does."""
GENERATIONS = re.compile(
    r"(?:/completions|/embeddings|/responses|/messages|/messages/count_tokens|/moderations|/rerank"
    r"|/images/generations|/images/edits|/images/variations|/audio/speech|/audio/transcriptions"
    r"|/audio/translations|/converse|/converse-stream|/invoke|/invoke-with-response-stream"
    r"|:generateContent|:streamGenerateContent|:embedContent|:batchEmbedContents|:countTokens"
    r"|:rawPredict|:streamRawPredict)/?$"
)
"""The paths of generation calls in every family the router speaks (OpenAI and Azure, Anthropic,
Gemini and Vertex, Bedrock, rerank services): one answer to one request, nothing kept on the provider."""
CREATIONS = re.compile(r"/threads/")
"""Paths that end as a generation's yet create something: a message added to an Assistants thread
(`/threads/{id}/messages`, ending as Anthropic's `/messages`)."""
NOT_ACTED_ON = frozenset({Kind.RATE_LIMIT, Kind.CONNECT, Kind.COOLING, Kind.INCOMPATIBLE})
"""Failures that prove the provider never acted on the request (or that it was never sent)."""
_NEVER_CONNECTED = frozenset({"ConnectTimeout", "PoolTimeout"})
"""Timeouts before the request left: httpx's, by class name (httpx2 and httpx alike)."""


def repeatable(method: str, path: str, doc: Mapping[str, Any] | None) -> bool:
    """Whether a request may be sent again after any failure: an idempotent method, or a generation
    call that does not ask for background work (a Responses `background: true` is a job)."""
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    if GENERATIONS.search(path) is None or CREATIONS.search(path) is not None:
        return False
    return not (doc is not None and doc.get("background") is True)


def not_acted_on(kind: Kind, exception: BaseException | None) -> bool:
    """Whether a failure of this kind (with this exception, if any) proves the provider never acted."""
    if kind in NOT_ACTED_ON:
        return True
    return exception is not None and bool({c.__name__ for c in type(exception).__mro__} & _NEVER_CONNECTED)


__all__ = ["CREATIONS", "GENERATIONS", "IDEMPOTENT_METHODS", "not_acted_on", "repeatable"]
