"""Judges: does a stored answer say what a fresh answer to the new prompt says?

Bounded mode (`bound.py`) asks one after each verification. A judge that raises or runs out of time
gives no verdict, and the engine records that as a wrong answer: an answer is never taken as right
without a judge saying so.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson

from ._http import OpenAICompatible
from .embedders import Embedder, unit_rows

_TEXT_FIELDS = frozenset({"content", "text", "output_text"})


@runtime_checkable
class Judge(Protocol):
    name: str

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        """True when `stored` answers `question` as well as `fresh` (both answer texts) does."""
        ...


def answer_text(body: bytes) -> str:
    """The generated text of a stored JSON answer, whatever the API family: every string under a
    `content`, `text` or `output_text` field (OpenAI, Responses, Anthropic, Gemini, Bedrock), in order."""
    found: list[str] = []

    def walk(value: Any, field: str | None) -> None:
        if isinstance(value, str):
            if field in _TEXT_FIELDS:
                found.append(value)
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, name if name != "parts" else field)
        elif isinstance(value, list):
            for item in value:
                walk(item, field)

    walk(orjson.loads(body), None)
    return "\n".join(found)


class ExactJudge:
    """The same text, whitespace aside: for deterministic upstreams (temperature 0, fixed seed)."""

    name = "exact"

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        return " ".join(stored.split()) == " ".join(fresh.split())


class EmbeddingJudge:
    """The two answers' embeddings at or above `threshold` cosine similarity (the default judge; it
    embeds with the semantic cache's embedder unless given one)."""

    name = "embedding"

    def __init__(self, embedder: Embedder | None = None, threshold: float = 0.92) -> None:
        self.embedder = embedder
        self.threshold = threshold

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        if self.embedder is None:
            raise RuntimeError("EmbeddingJudge has no embedder (SemanticCache gives it its own)")
        if " ".join(stored.split()) == " ".join(fresh.split()):
            return True
        vectors = unit_rows(await self.embedder.embed([stored, fresh]))
        return bool(float(np.dot(vectors[0], vectors[1])) >= self.threshold)


_LLM_PROMPT = (
    "A user asked: {question}\n\nAnswer A:\n{stored}\n\nAnswer B:\n{fresh}\n\n"
    "Would answer A serve this user as well as answer B (same facts, same conclusion)? Reply YES or NO only."
)


class LLMJudge:
    """An OpenAI-compatible chat model asked whether the stored answer serves the user as the fresh
    one does. Give it the cache's upstream transport to send the question the way the traffic goes."""

    name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: Any = None,
    ) -> None:
        self.name = f"llm:{model}"
        self.model = model
        self._http = OpenAICompatible(base_url, api_key, timeout, transport)

    async def same(self, question: str, stored: str, fresh: str) -> bool:
        prompt = _LLM_PROMPT.format(question=question, stored=stored, fresh=fresh)
        body = {"model": self.model, "temperature": 0, "messages": [{"role": "user", "content": prompt}]}
        answer = await self._http.post("/chat/completions", body)
        reply = answer["choices"][0]["message"]["content"].strip().upper()
        if reply.startswith("YES"):
            return True
        if reply.startswith("NO"):
            return False
        raise ValueError(f"the judge replied neither YES nor NO: {reply[:40]!r}")

    async def aclose(self) -> None:
        await self._http.aclose()
