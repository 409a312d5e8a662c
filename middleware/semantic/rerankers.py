"""Rerankers: the semantic cache's second check, a model that reads the query and a stored prompt together.

A cross-encoder (or an NLI model) compares the two texts word against word, where the embedder only
compares two vectors made apart; it is slower, so `SemanticCache` asks it only about the candidates
that already cleared the threshold and the guard, all of them in one call. `EndpointReranker` calls
a Cohere-shaped rerank endpoint (Cohere, Jina, vLLM, LiteLLM and other compatible servers);
`CrossEncoderReranker` runs a sentence-transformers cross-encoder from a local folder.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ._http import OpenAICompatible
from ._local_model import DEFAULT_MAX_IN_FLIGHT, LocalModel, RunsLocally


@runtime_checkable
class Reranker(Protocol):
    """Scores stored prompts (`documents`) against a new one (`query`); higher means closer."""

    name: str
    timeout: float
    """Seconds one call may take: a slower call fails, and the lookup is a miss."""

    async def score(self, query: str, documents: list[str]) -> list[float]:
        """One score per document, in the documents' order, on the model's own scale."""
        ...


def scores_by_index(answer: Any, count: int) -> list[float]:
    """The scores of a rerank answer, `{"results": [{"index": i, "relevance_score": s}, ...]}`, in the
    order of the `count` documents sent. Results may come in any order and may be fewer than the
    documents (a server's own `top_n` cut): a document left out scores -inf, so it never passes. An
    answer of any other shape, or a score that is no finite number (`NaN`, `Infinity`: Python's JSON
    reader takes them), raises `ValueError`."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise ValueError("the rerank answer has no `results` list")
    scores = [-math.inf] * count
    seen: set[int] = set()
    for result in results:
        index = result.get("index") if isinstance(result, dict) else None
        score = result.get("relevance_score") if isinstance(result, dict) else None
        if type(index) is not int or not 0 <= index < count or index in seen:
            raise ValueError(f"a rerank result whose index is not one of the {count} documents: {str(result)[:80]}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"a rerank result without a finite relevance_score: {str(result)[:80]}")
        seen.add(index)
        scores[index] = float(score)
    return scores


class EndpointReranker:
    """`POST {url}` with `{"model", "query", "documents", "top_n"}`, the rerank shape of Cohere v2,
    Jina, vLLM (`/rerank`, `/v1/rerank`, `/v2/rerank`) and LiteLLM's proxy; `url` is the endpoint's
    full address, e.g. `http://vllm:8000/v1/rerank`. The key, when given, is sent as a bearer token."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 2.0,
        transport: Any = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"the rerank url must be absolute, e.g. http://host:8000/v1/rerank, not {url!r}")
        self.url = url
        self.model = model
        self.timeout = timeout
        self.name = f"endpoint:{model}"
        # The client's base is the server; the path goes on each request (a base URL gains a trailing `/`).
        self._path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._http = OpenAICompatible(urlunsplit((parts.scheme, parts.netloc, "", "", "")), api_key, timeout, transport)

    async def score(self, query: str, documents: list[str]) -> list[float]:
        body = {"model": self.model, "query": query, "documents": documents, "top_n": len(documents)}
        return scores_by_index(await self._http.post(self._path, body), len(documents))

    async def aclose(self) -> None:
        await self._http.aclose()


class CrossEncoderReranker(RunsLocally):
    """A sentence-transformers `CrossEncoder` from a local folder, on the CPU, on a thread of its own
    (at most `max_in_flight` calls running or waiting; one more raises `ModelBusy` at once).

    The Hugging Face hub is never asked (`HF_HUB_OFFLINE=1` while loading, local files only). A model
    with one output (a relevance or similarity score) gives that score; one with several (an NLI
    model: contradiction, entailment, neutral) needs `label`, the output to use, as a probability.
    Needs the `semantic-local` extra.
    """

    def __init__(
        self,
        path: str,
        *,
        label: int | None = None,
        timeout: float = 2.0,
        device: str = "cpu",
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.path = path
        self.label = label
        self.timeout = timeout
        self.device = device
        self.name = f"cross-encoder:{os.path.basename(os.path.normpath(path))}"
        self._local = LocalModel("reranking model", self.name, self._build, max_in_flight=max_in_flight)

    def _build(self) -> Any:
        from sentence_transformers import CrossEncoder

        return CrossEncoder(self.path, device=self.device, local_files_only=True)

    def _predict(self, model: Any, query: str, documents: list[str]) -> list[float]:
        outputs = int(model.num_labels)
        if (outputs > 1) != (self.label is not None) or not 0 <= (self.label or 0) < outputs:
            raise ValueError(f"{self.name} gives {outputs} output(s) a pair: `label` picks one of several, if any")
        pairs = [(query, document) for document in documents]
        scores = model.predict(pairs, apply_softmax=outputs > 1, show_progress_bar=False)
        if outputs > 1:
            scores = scores[:, self.label]
        return [float(score) for score in scores.reshape(len(documents))]

    async def score(self, query: str, documents: list[str]) -> list[float]:
        return await self._local.run(self._predict, query, documents)


__all__ = ["CrossEncoderReranker", "EndpointReranker", "Reranker", "scores_by_index"]
