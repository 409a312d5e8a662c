"""A deterministic stand-in for an embedding model, for tests whose behaviour does not depend on meaning."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence

import numpy as np

from llm_cache.middleware.semantic.embedders import unit_rows

DIMENSIONS = 1024


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """Each word (case and punctuation aside) counts in a dimension of its own (its hash), so the
    cosine similarity of two prompts is plain arithmetic on their words: two prompts of six words
    sharing five are at 5/6."""
    rows = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in filter(None, (w.strip(string.punctuation).lower() for w in text.split())):
            rows[row, int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % DIMENSIONS] += 1
    return unit_rows(rows)


class WordsEmbedder:
    """An `Embedder` of `bag_of_words` vectors."""

    name = "words"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return bag_of_words(texts)
