"""llm-cache-middleware: exact, semantic and provider-native caching for LLM traffic."""

from ._version import __version__ as __version__
from .asgi import CacheMiddleware
from .engine import Cache
from .keys import KeyRequest, ScopeRequest, default_digest
from .prompt_caching import PromptCaching
from .settings import CacheSettings, CacheStats
from .transport import AsyncCachingTransport, CachingTransport
from .types import Outcome

__all__ = [
    "AsyncCachingTransport",
    "Cache",
    "CacheMiddleware",
    "CacheSettings",
    "CacheStats",
    "CachingTransport",
    "KeyRequest",
    "Outcome",
    "PromptCaching",
    "ScopeRequest",
    "default_digest",
]
