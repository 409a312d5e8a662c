"""Routing of LLM requests across deployments: retries, fallbacks, cooldowns.

Independent of the caching layer (this package never imports ``middleware``); it composes under it:
``AsyncCachingTransport(cache=..., inner=RouterTransport(router))``.
"""

from __future__ import annotations

from ._config import (
    ConfigError,
    Deployment,
    ModelGroup,
    RouterConfig,
    RouterSettings,
    from_litellm,
    from_portkey,
    load_config,
)
from ._core import Router
from ._errors import Kind
from ._transport import STREAM_FAILED, RouterTransport, SyncRouterTransport

__all__ = [
    "ConfigError",
    "Deployment",
    "Kind",
    "ModelGroup",
    "Router",
    "RouterConfig",
    "RouterSettings",
    "RouterTransport",
    "STREAM_FAILED",
    "SyncRouterTransport",
    "from_litellm",
    "from_portkey",
    "load_config",
]
