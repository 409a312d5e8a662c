"""Semantic caching: a stored answer to a similar prompt in the same context, when the facts agree."""

from .cache import SemanticCache
from .embedders import Embedder, OpenAIEmbedder, SentenceTransformerEmbedder
from .guard import agrees
from .index import IndexUnavailable, InProcessIndex, Neighbour, VectorIndex
from .redis_index import RedisVectorIndex

__all__ = [
    "Embedder",
    "InProcessIndex",
    "IndexUnavailable",
    "Neighbour",
    "OpenAIEmbedder",
    "RedisVectorIndex",
    "SemanticCache",
    "SentenceTransformerEmbedder",
    "VectorIndex",
    "agrees",
]
