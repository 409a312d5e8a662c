"""Semantic caching: a stored answer to a similar prompt in the same context, when the facts agree."""

from ._local_model import ModelBusy
from .bound import Decision, ErrorBound, Evidence, InProcessEvidence, Tally
from .cache import SemanticCache
from .embedders import Embedder, OnnxMiniLMEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder, local_embedder
from .guard import agrees
from .index import IndexUnavailable, InProcessIndex, Neighbour, VectorIndex
from .judges import EmbeddingJudge, ExactJudge, Judge, LLMJudge
from .models import ModelNotInstalled
from .redis_evidence import RedisEvidence
from .redis_index import RedisVectorIndex
from .rerankers import CrossEncoderReranker, EndpointReranker, Reranker

__all__ = [
    "CrossEncoderReranker",
    "Decision",
    "Embedder",
    "EmbeddingJudge",
    "EndpointReranker",
    "ErrorBound",
    "Evidence",
    "ExactJudge",
    "InProcessEvidence",
    "InProcessIndex",
    "IndexUnavailable",
    "Judge",
    "LLMJudge",
    "ModelBusy",
    "ModelNotInstalled",
    "Neighbour",
    "OnnxMiniLMEmbedder",
    "OpenAIEmbedder",
    "QdrantVectorIndex",
    "RedisEvidence",
    "RedisVectorIndex",
    "Reranker",
    "SemanticCache",
    "SentenceTransformerEmbedder",
    "Tally",
    "VectorIndex",
    "agrees",
    "local_embedder",
]


def __getattr__(name: str) -> object:
    """The Qdrant index imports lazily: its client is the optional `[qdrant]` extra."""
    if name == "QdrantVectorIndex":
        from .qdrant_index import QdrantVectorIndex

        return QdrantVectorIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
