"""What each API operation does on the provider, declared once, by the end of its path.

The provider modules name their operation on each `Endpoint` (`Endpoint.wire`); the router asks
`operation_of` whether a request may be sent twice. A generation (a chat completion, a message, an
embedding, a count of tokens) creates nothing that outlives its answer: sent twice, it costs twice at
worst. Any other call (a fine-tuning job, a batch, a file, a thread's message, a background response)
may create something a second call would create again; so does a path no operation here declares.

Neutral, like `_wire.py`: it imports neither `llm_cache.middleware` nor `llm_cache.router`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of an API family, owning the paths `pattern` finds (any base path, any family
    that speaks it: OpenAI's suffixes also end Azure's deployment paths)."""

    name: str
    pattern: re.Pattern[str]
    creates_nothing: bool
    """One answer to one request, nothing kept on the provider (the provider's docs name no object it
    creates): sent again after a failure it may have acted on, it costs twice at worst."""
    job_field: str | None = None
    """A body field that, sent as `true`, makes the call a job the provider keeps (Responses'
    `background`): then it creates something after all."""

    def creates_something(self, doc: Mapping[str, Any] | None) -> bool:
        """Whether this call, with this body, may create something on the provider."""
        if not self.creates_nothing:
            return True
        return self.job_field is not None and doc is not None and doc.get(self.job_field) is True


def _ending(suffix: str) -> re.Pattern[str]:
    return re.compile(re.escape(suffix) + r"/?$")


def _gemini(methods: str) -> re.Pattern[str]:
    """A `models/{model}:{method}` call (Gemini, Vertex's publisher models and tuned models)."""
    return re.compile(r"/(?:tunedModels|models)/[^/:]+:(?:" + methods + r")/?$")


THREAD_MESSAGES = Operation("threads.messages", re.compile(r"/threads/"), False)
"""Anything under an Assistants thread (`/threads/{id}/messages` ends as Anthropic's messages does)."""
CHAT_COMPLETIONS = Operation("chat.completions", _ending("/chat/completions"), True)
COMPLETIONS = Operation("completions", _ending("/completions"), True)
RESPONSES = Operation("responses", _ending("/responses"), True, job_field="background")
EMBEDDINGS = Operation("embeddings", _ending("/embeddings"), True)
MODERATIONS = Operation("moderations", _ending("/moderations"), True)
RERANK = Operation("rerank", _ending("/rerank"), True)
IMAGES = Operation("images", re.compile(r"/images/(?:generations|edits|variations)/?$"), True)
SPEECH = Operation("audio.speech", _ending("/audio/speech"), True)
TRANSCRIPTIONS = Operation("audio.transcriptions", _ending("/audio/transcriptions"), True)
TRANSLATIONS = Operation("audio.translations", _ending("/audio/translations"), True)
MESSAGES = Operation("messages", _ending("/messages"), True)
COUNT_TOKENS = Operation("messages.count_tokens", _ending("/messages/count_tokens"), True)
GENERATE_CONTENT = Operation("generateContent", _gemini("generateContent|streamGenerateContent"), True)
EMBED_CONTENT = Operation("embedContent", _gemini("embedContent|batchEmbedContents"), True)
GEMINI_COUNT_TOKENS = Operation("countTokens", _gemini("countTokens"), True)
RAW_PREDICT = Operation("rawPredict", _gemini("rawPredict|streamRawPredict"), True)
"""Vertex AI's partner models (Claude, Llama) behind `publishers/{p}/models/{m}:rawPredict`."""
INVOKE = Operation("invoke", _ending("/invoke"), True)
INVOKE_STREAM = Operation("invoke-with-response-stream", _ending("/invoke-with-response-stream"), True)
CONVERSE = Operation("converse", re.compile(r"/converse(?:-stream)?/?$"), True)

OPERATIONS: tuple[Operation, ...] = (
    THREAD_MESSAGES,  # first: its paths end as a generation's may
    CHAT_COMPLETIONS,
    COMPLETIONS,
    RESPONSES,
    EMBEDDINGS,
    MODERATIONS,
    RERANK,
    IMAGES,
    SPEECH,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    COUNT_TOKENS,
    MESSAGES,
    GENERATE_CONTENT,
    EMBED_CONTENT,
    GEMINI_COUNT_TOKENS,
    RAW_PREDICT,
    INVOKE,
    INVOKE_STREAM,
    CONVERSE,
)
"""The one list: every operation whose paths the cache or the router knows, first match wins."""


def operation_of(path: str) -> Operation | None:
    """The operation that owns `path` (no query string), or None: a path no operation declares."""
    for operation in OPERATIONS:
        if operation.pattern.search(path) is not None:
            return operation
    return None


__all__ = ["OPERATIONS", "Operation", "operation_of"]
