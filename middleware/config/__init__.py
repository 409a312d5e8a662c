"""Gateway configuration: pydantic models, a YAML loader and four accepted dialects.

`load_config(path)` reads a YAML file, detects the dialect, replaces `os.environ/NAME` and
`${NAME}` references (`llm_cache._wire.expand_optional`: an unset `os.environ/NAME` is null) and
returns a validated `GatewayConfig`:

- native: `cache: {store: {type: ...}, ttl, ...}`, `admin_key`, `upstreams`, `server`;
- guide: `cache_responses` + a `caching: {type: in-memory|disk|redis|s3|dual_cache, ...}` block;
- litellm: a LiteLLM proxy file (`litellm_settings: {cache: true, cache_params: {...}}`, `model_list`),
  whose keys are read as `llm_cache._litellm` catalogues them;
- router: a file in one of the router's own forms (`groups:`, `targets:`), the gateway's router.

Every problem is a `ConfigError` whose message names the file, the field path and what is
allowed; what a file says that is not used is in `GatewayConfig.notes` (`ignored: ...`).
`build_store()` and `build_cache()` turn the settings into live objects.

The modules: `schema` (the models), `dialects` (guide, LiteLLM and router files to native), `loading` (YAML,
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
