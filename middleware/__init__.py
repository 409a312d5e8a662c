"""llm-cache-middleware: exact, semantic and provider-native caching for LLM traffic."""

from ._asgi import CacheMiddleware
from ._engine import Cache
from ._hooks import AnswerView, ForwardView, HitView, Hooks, LookupView, RequestInfo
from ._keys import KeyRequest, ScopeRequest, default_digest
from ._prompt_caching import PromptCaching
from ._settings import CacheSettings, CacheStats
from ._transport import AsyncCachingTransport, CachingTransport
from ._types import Outcome
from ._version import __version__ as __version__

__all__ = [
    "AnswerView",
    "AsyncCachingTransport",
    "Cache",
    "CacheMiddleware",
    "CacheSettings",
    "CacheStats",
    "CachingTransport",
    "ForwardView",
    "HitView",
    "Hooks",
    "KeyRequest",
    "LookupView",
    "Outcome",
    "PromptCaching",
    "RequestInfo",
    "ScopeRequest",
    "default_digest",
]
