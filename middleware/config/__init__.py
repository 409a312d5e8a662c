"""Gateway configuration: pydantic models, a YAML loader and three accepted dialects.

`load_config(path)` reads a YAML file, replaces `os.environ/NAME` and `${NAME}` references
(`llm_cache._wire.expand_env`), detects the dialect and returns a validated `GatewayConfig`:

- native: `cache: {store: {type: ...}, ttl, ...}`, `admin_key`, `upstreams`, `server`;
- guide: `cache_responses` + a `caching: {type: in-memory|disk|redis|s3|dual_cache, ...}` block;
- litellm: a LiteLLM proxy file (`litellm_settings: {cache: true, cache_params: {...}}`, `model_list`).

Every problem is a `ConfigError` whose message names the file, the field path and what is
allowed. `build_store()` and `build_cache()` turn the settings into live objects.

The modules: `schema` (the models), `dialects` (guide and LiteLLM to native), `loading` (YAML,
environment, validation), `errors` (readable messages), `builders` (live objects), `printing`
(the masked effective settings).
"""

from __future__ import annotations

from .builders import build_cache, build_semantic, build_store, store_class
from .dialects import detect_dialect
from .errors import ConfigError
from .loading import default_config, load_config, parse_config, with_upstreams
from .printing import effective_settings, masked
from .schema import (
    FAMILIES,
    STORE_TYPES,
    AuthConfig,
    CacheConfig,
    GatewayConfig,
    ServerConfig,
    StoreConfig,
    UpstreamConfig,
    UpstreamsConfig,
)

__all__ = [
    "FAMILIES",
    "STORE_TYPES",
    "AuthConfig",
    "CacheConfig",
    "ConfigError",
    "GatewayConfig",
    "ServerConfig",
    "StoreConfig",
    "UpstreamConfig",
    "UpstreamsConfig",
    "build_cache",
    "build_semantic",
    "build_store",
    "default_config",
    "detect_dialect",
    "effective_settings",
    "load_config",
    "masked",
    "parse_config",
    "store_class",
    "with_upstreams",
]
