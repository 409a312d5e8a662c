"""Gateway configuration: pydantic models, a YAML loader and three accepted dialects.

`load_config(path)` reads a YAML file, replaces `os.environ/NAME` and `${NAME}` references,
detects the dialect and returns a validated `GatewayConfig`:

- native: `cache: {store: {type: ...}, ttl, ...}`, `admin_key`, `upstreams`, `server`;
- guide: `cache_responses` + a `caching: {type: in-memory|disk|redis|s3|dual_cache, ...}` block;
- litellm: a LiteLLM proxy file (`litellm_settings: {cache: true, cache_params: {...}}`, `model_list`).

Every problem is a `ConfigError` whose message names the file, the field path and what is
allowed. `build_store()` and `build_cache()` turn the settings into live objects; store classes
are imported lazily by name so that a missing optional back-end is a config error, not an
import error at start-up.
"""

from __future__ import annotations

import importlib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .._wire import UnsetVariable, expand_env
from .keys import resolve_key_builder
from .native import PromptCaching

__all__ = [
    "AuthConfig",
    "CacheConfig",
    "ConfigError",
    "GatewayConfig",
    "ServerConfig",
    "StoreConfig",
    "UpstreamConfig",
    "UpstreamsConfig",
    "build_cache",
    "build_store",
    "default_config",
    "load_config",
    "masked",
    "parse_config",
    "with_upstreams",
]

FAMILIES = ("openai", "anthropic", "gemini", "azure")
DEFAULT_UPSTREAMS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
SECRET_FIELDS = re.compile(r"(password|secret|api_key|admin_key|master_key|token|access_key|^keys$)", re.IGNORECASE)


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says where and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- stores ---------------------------------------------------------------------------------------


class MemoryStoreConfig(_Model):
    type: Literal["memory"]
    max_entries: int = Field(default=10_000, gt=0)
    max_bytes: int | None = Field(default=256 * 1024 * 1024, gt=0)


class DiskStoreConfig(_Model):
    type: Literal["disk"]
    directory: str | None = Field(default=None, description="Default: the user's cache directory.")
    size_limit: int = Field(default=1024**3, gt=0)


class _RedisCommon(_Model):
    username: str | None = None
    password: str | None = None
    ssl: bool | None = None
    prefix: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    connect_timeout: float | None = Field(default=None, gt=0)
    max_connections: int | None = Field(default=None, gt=0)
    failure_threshold: int | None = Field(default=None, gt=0)
    cooldown: float | None = Field(default=None, gt=0)


class RedisStoreConfig(_RedisCommon):
    type: Literal["redis"]
    url: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, gt=0, lt=65536)
    db: int | None = Field(default=None, ge=0)


class RedisClusterStoreConfig(_RedisCommon):
    type: Literal["redis-cluster"]
    url: str | None = None
    startup_nodes: list[str] | None = Field(default=None, description="'host:port' strings.")


class RedisSentinelStoreConfig(_RedisCommon):
    type: Literal["redis-sentinel"]
    service_name: str
    sentinels: list[str] = Field(min_length=1, description="'host:port' strings.")
    sentinel_password: str | None = None
    db: int | None = Field(default=None, ge=0)


class S3StoreConfig(_Model):
    type: Literal["s3"]
    bucket: str
    prefix: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    profile: str | None = None


class MemcachedStoreConfig(_Model):
    type: Literal["memcached"]
    host: str | None = None
    port: int | None = Field(default=None, gt=0, lt=65536)
    prefix: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    max_item_size: int | None = Field(default=None, gt=0)


class TieredStoreConfig(_Model):
    type: Literal["tiered", "dual_cache"]
    l1: StoreConfig = Field(default_factory=lambda: MemoryStoreConfig(type="memory"))
    l2: StoreConfig
    l1_max_ttl: float | None = Field(default=None, gt=0)


StoreConfig = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads better spelled out
        MemoryStoreConfig,
        DiskStoreConfig,
        RedisStoreConfig,
        RedisClusterStoreConfig,
        RedisSentinelStoreConfig,
        TieredStoreConfig,
        S3StoreConfig,
        MemcachedStoreConfig,
    ],
    Field(discriminator="type"),
]
TieredStoreConfig.model_rebuild()

STORE_TYPES = ("memory", "disk", "redis", "redis-cluster", "redis-sentinel", "tiered", "dual_cache", "s3", "memcached")


# -- semantic cache ----------------------------------------------------------------------------------


class LocalEmbedderConfig(_Model):
    type: Literal["local", "sentence-transformers"]
    model: str | None = Field(default=None, description="A local model path; default: all-MiniLM-L6-v2, shipped.")


class OpenAIEmbedderConfig(_Model):
    type: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    model: str = "text-embedding-3-small"
    api_key: str | None = None
    timeout: float = Field(default=10.0, gt=0)


class MemoryIndexConfig(_Model):
    type: Literal["memory"]
    max_entries: int = Field(default=100_000, gt=0)


class RedisIndexConfig(_Model):
    type: Literal["redis"]
    url: str = "redis://127.0.0.1:6379/0"
    index_name: str = "llm-cache-semantic"
    prefix: str = "llm-cache:semantic:"


EmbedderConfig = Annotated[LocalEmbedderConfig | OpenAIEmbedderConfig, Field(discriminator="type")]
IndexConfig = Annotated[MemoryIndexConfig | RedisIndexConfig, Field(discriminator="type")]


class SemanticConfig(_Model):
    """`cache.semantic`: look misses up by meaning (see docs/semantic.md)."""

    enabled: bool = True
    threshold: float = Field(default=0.9, ge=-1.0, le=1.0, description="Cosine similarity a match must reach.")
    guard: bool = Field(default=True, description="Veto matches whose numbers, names, quotes or code differ.")
    candidates: int = Field(default=4, gt=0)
    max_text_chars: int = Field(default=1000, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    embedder: EmbedderConfig = Field(default_factory=lambda: LocalEmbedderConfig(type="local"))
    index: IndexConfig = Field(default_factory=lambda: MemoryIndexConfig(type="memory"))


def build_semantic(settings: SemanticConfig | None) -> Any:
    """A `SemanticCache` from `cache.semantic`, or None when there is none (or it is disabled)."""
    if settings is None or not settings.enabled:
        return None
    try:
        from .semantic import (
            InProcessIndex,
            OpenAIEmbedder,
            RedisVectorIndex,
            SemanticCache,
            SentenceTransformerEmbedder,
        )
    except ImportError as error:
        raise ConfigError(
            f"cache.semantic: needs the semantic extra ({error.name} is missing): "
            "pip install 'llm-cache-middleware[semantic-local]'"
        ) from None
    embedder_settings = settings.embedder
    embedder: Any
    if isinstance(embedder_settings, OpenAIEmbedderConfig):
        embedder = OpenAIEmbedder(
            embedder_settings.base_url,
            embedder_settings.model,
            api_key=embedder_settings.api_key,
            timeout=embedder_settings.timeout,
        )
    else:
        embedder = SentenceTransformerEmbedder(embedder_settings.model)
    index_settings = settings.index
    index: Any
    if isinstance(index_settings, RedisIndexConfig):
        index = RedisVectorIndex(index_settings.url, index_name=index_settings.index_name, prefix=index_settings.prefix)
    else:
        index = InProcessIndex(index_settings.max_entries)
    return SemanticCache(
        embedder,
        index,
        threshold=settings.threshold,
        guard=settings.guard,
        candidates=settings.candidates,
        max_text_chars=settings.max_text_chars,
        timeout=settings.timeout,
    )


# -- cache, upstreams, server ---------------------------------------------------------------------


class CacheConfig(_Model):
    enabled: bool = True
    store: StoreConfig = Field(default_factory=lambda: DiskStoreConfig(type="disk"))
    ttl: float | None = 600.0
    key_prefix: str = ""
    scope: str = Field(
        default="credential",
        description="'credential', 'shared', 'header:<name>', or a scope function's dotted path 'pkg.module:function'.",
    )
    anonymous: Literal["bypass", "shared"] = Field(
        default="bypass", description="Requests with no identity the scope can read: not cached, or sharing one scope."
    )
    mode: Literal["default", "opt_in"] = "default"
    ignored_fields: list[str] = Field(default_factory=list)
    key_builder: str | None = Field(default=None, description="Dotted path 'package.module:function'.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    distributed_lock: bool = Field(default=True, description="Cross-pod single-flight on stores that can lock.")
    lock_ttl: float = 30.0
    lock_wait: float = 30.0
    prompt_caching: PromptCaching = Field(default_factory=PromptCaching)
    semantic: SemanticConfig | None = None
    cache_fallbacks: bool = Field(default=False, description="Store answers from a router's fallback group.")
    fallback_ttl: float | None = Field(default=None, description="Seconds a stored fallback answer lives.")

    @field_validator("ttl", "scope", "lock_ttl", "lock_wait", "fallback_ttl")
    @classmethod
    def _engine_rules(cls, value: Any, info: ValidationInfo) -> Any:
        """The engine's own field validators, so a file and `Cache(...)` refuse the same values."""
        from .engine import CacheSettings

        try:
            CacheSettings.__pydantic_validator__.validate_assignment(
                CacheSettings.model_construct(), str(info.field_name), value
            )
        except ValidationError as error:
            raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @field_validator("key_builder")
    @classmethod
    def _key_builder(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_key_builder(value)  # import now, so a typo fails at load time
        return value


class UpstreamConfig(_Model):
    base_url: str | None = Field(default=None, description="As the provider's SDK writes it: https://api.openai.com/v1")
    api_key: str | None = Field(default=None, description="Replaces the caller's credentials when set.")
    timeout: float = Field(default=600.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s?#\\]*)?$", value):
            raise ValueError(f"base_url must be an http:// or https:// URL without a query, got {value!r}")
        if value is not None and any(part in (".", "..") for part in value.split("://", 1)[1].split("/")):
            raise ValueError(f"base_url must not contain '.' or '..' segments, got {value!r}")
        return value.rstrip("/") if value else value


class UpstreamsConfig(_Model):
    openai: UpstreamConfig = Field(default_factory=UpstreamConfig)
    anthropic: UpstreamConfig = Field(default_factory=UpstreamConfig)
    gemini: UpstreamConfig = Field(default_factory=UpstreamConfig)
    azure: UpstreamConfig = Field(default_factory=UpstreamConfig)

    def base_url(self, family: str) -> str | None:
        upstream: UpstreamConfig = getattr(self, family)
        return upstream.base_url or DEFAULT_UPSTREAMS.get(family)


class ServerConfig(_Model):
    """`server`: where `serve` listens, uvicorn's own limits and the gateway's request limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, lt=65536)
    workers: int = Field(default=1, gt=0)
    max_request_bytes: int | None = Field(
        default=None, gt=0, description="Larger request bodies are answered 413 (default: no cap, bodies stream)."
    )
    body_read_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the next part of a request body before answering 408."
    )
    limit_concurrency: int | None = Field(default=None, gt=0, description="uvicorn: 503 beyond this many connections.")
    limit_max_requests: int | None = Field(
        default=None, gt=0, description="uvicorn: restart a worker after N requests."
    )
    timeout_keep_alive: float = Field(default=5.0, gt=0, description="uvicorn: close idle keep-alive connections.")
    backlog: int = Field(default=2048, gt=0, description="uvicorn: the listening socket's backlog.")

    def uvicorn_options(self) -> dict[str, Any]:
        """The keyword arguments `uvicorn.run` takes for these limits."""
        options: dict[str, Any] = {"timeout_keep_alive": self.timeout_keep_alive, "backlog": self.backlog}
        if self.limit_concurrency is not None:
            options["limit_concurrency"] = self.limit_concurrency
        if self.limit_max_requests is not None:
            options["limit_max_requests"] = self.limit_max_requests
        return options


class AuthConfig(_Model):
    """`auth`: the keys a client must present on the LLM routes (none: the routes are open)."""

    keys: list[str] = Field(
        default_factory=list,
        description="Accepted client keys (Authorization: Bearer, x-api-key, api-key, x-goog-api-key, "
        "x-litellm-api-key); write os.environ/NAME to read one from the environment.",
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for i, key in enumerate(value):
            if not key.strip():
                raise ValueError(f"keys[{i}] is empty (an unset environment variable?)")
        return value


class GatewayConfig(_Model):
    cache: CacheConfig = Field(default_factory=CacheConfig)
    admin_key: str | None = Field(default=None, description="Enables the /cache/* management endpoints.")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    upstreams: UpstreamsConfig = Field(default_factory=UpstreamsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    model_list: list[Any] | None = Field(default=None, description="Passed through to the router untouched.")
    router: dict[str, Any] | None = Field(default=None, description="Passed through to the router untouched.")

    # Not part of the file: where it came from and what was left out while translating it.
    dialect: str = Field(default="native", exclude=True)
    source: str | None = Field(default=None, exclude=True)
    notes: list[str] = Field(default_factory=list, exclude=True)

    def upstream_keys(self) -> list[str]:
        """Where the config holds upstream API keys (field paths), which the gateway spends for its callers."""
        found = [f"upstreams.{family}.api_key" for family in FAMILIES if getattr(self.upstreams, family).api_key]
        found += _key_fields(self.model_list, "model_list") + _key_fields(self.router, "router")
        return found


def _key_fields(value: Any, path: str) -> list[str]:
    """The paths of the `api_key` fields set anywhere in a router section."""
    if isinstance(value, dict):
        found = [f"{path}.{k}" for k, v in value.items() if k == "api_key" and v]
        for k, v in value.items():
            found += _key_fields(v, f"{path}.{k}")
        return found
    if isinstance(value, list):
        return [field for i, item in enumerate(value) for field in _key_fields(item, f"{path}[{i}]")]
    return []


def with_upstreams(config: GatewayConfig, overrides: list[str]) -> GatewayConfig:
    """A copy of `config` with `family=URL` overrides (the `--upstream` option) applied."""
    if not overrides:
        return config
    data = config.model_dump()
    for item in overrides:
        family, sep, url = item.partition("=")
        family = family.strip().lower()
        if not sep or family not in FAMILIES:
            raise ConfigError(f"--upstream {item!r}: expected FAMILY=URL with FAMILY one of {', '.join(FAMILIES)}")
        data["upstreams"][family]["base_url"] = url.strip()
    try:
        updated = GatewayConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, "--upstream", "native")) from None
    updated.dialect, updated.source, updated.notes = config.dialect, config.source, config.notes
    return updated


def default_config() -> GatewayConfig:
    """The embedded default: a disk store under the user's cache directory, exact matching."""
    return GatewayConfig(dialect="default", source="<embedded default>")


# -- loading --------------------------------------------------------------------------------------

_PASSTHROUGH = ("model_list", "router", "router_settings")


def _interpolate(value: Any, env: Mapping[str, str], where: str, path: tuple[Any, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, where, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, where, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        return expand_env(value, env)
    except UnsetVariable as unset:
        fallback = f"; write ${{{unset.name}:-default}} for a fallback" if unset.reference.startswith("$") else ""
        raise ConfigError(
            f"{where}: {_dotted(path)}: environment variable {unset.name} is not set "
            f"(referenced as {unset.reference}{fallback})"
        ) from None


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate, translate and validate a YAML config file."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the file ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None
    return parse_config(data, where=where, env=env)


def parse_config(data: Any, where: str = "<config>", env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate an already parsed mapping (the body of a YAML file)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    # The router sections are passed through untouched: the router resolves its own references.
    untouched = {k: data[k] for k in _PASSTHROUGH if k in data}
    data = _interpolate(
        {k: v for k, v in data.items() if k not in _PASSTHROUGH}, os.environ if env is None else env, where
    )
    data.update(untouched)
    dialect = detect_dialect(data, where)
    notes: list[str] = []
    if dialect == "guide":
        native = _from_guide(data, where, notes)
    elif dialect == "litellm":
        native = _from_litellm(data, where, notes, os.environ if env is None else env)
    else:
        native = data
    try:
        config = GatewayConfig.model_validate(native)
    except ValidationError as error:
        raise ConfigError(_describe(error, where, dialect)) from None
    config.dialect = dialect
    config.source = where
    config.notes = notes
    return config


def detect_dialect(data: Mapping[str, Any], where: str = "<config>") -> str:
    native = {"cache", "upstreams", "server", "admin_key", "auth"} & data.keys()
    guide = {"caching", "cache_responses"} & data.keys()
    litellm = {"litellm_settings", "general_settings", "router_settings"} & data.keys()
    found = [name for name, keys in (("native", native), ("guide", guide), ("litellm", litellm)) if keys]
    if len(found) > 1:
        raise ConfigError(
            f"{where}: mixes config dialects ({', '.join(found)}): use either the native "
            "'cache:' section, the guide's 'caching:' block or LiteLLM's 'litellm_settings:', "
            "not several"
        )
    if found:
        return found[0]
    return "litellm" if "model_list" in data else "native"


# -- the guide's `caching:` block -----------------------------------------------------------------

_GUIDE_TOP = {"cache_responses", "caching", "proxy", "model_list", "router", "cache_control_injection_points"}
_GUIDE_CACHING = {
    "type",
    "host",
    "port",
    "password",
    "url",
    "ttl",
    "key_prefix",
    "l1",
    "l2",
    "similarity_threshold",
    "params",
    "key_builder",
    "distributed_lock",
    "lock_ttl",
    "lock_wait",
}
_GUIDE_TYPES = {
    "in-memory": "memory",
    "memory": "memory",
    "local": "memory",
    "disk": "disk",
    "redis": "redis",
    "s3": "s3",
    "dual_cache": "tiered",
}
_REDIS_SEMANTIC = ("redis_semantic", "redis-semantic")
_QDRANT = "Qdrant is not supported as a vector index; use redis-semantic (Redis Stack) or cache.semantic"


def _semantic_redis(store: Mapping[str, Any], threshold: Any, where: str, path: str) -> dict[str, Any]:
    """`cache.semantic` for a `redis-semantic` type: vectors in the same Redis as the answers (it needs
    RediSearch, so a standalone server or primary: not a Cluster or a Sentinel set)."""
    if store.get("type", "redis") != "redis":
        raise ConfigError(
            f"{where}: {path}.type: redis-semantic needs a standalone Redis with RediSearch "
            f"(Redis Stack or Redis 8), not {store['type']}"
        )
    url = store.get("url")
    if not url:
        user = quote(str(store["username"]), safe="") if store.get("username") else ""
        password = f":{quote(str(store['password']), safe='')}" if store.get("password") else ""
        auth = f"{user}{password}@" if user or password else ""
        scheme = "rediss" if store.get("ssl") else "redis"
        url = f"{scheme}://{auth}{store.get('host', '127.0.0.1')}:{store.get('port', 6379)}/{store.get('db', 0)}"
    semantic: dict[str, Any] = {"index": {"type": "redis", "url": url}}
    if threshold is not None:
        semantic["threshold"] = threshold
    return semantic


def _guide_store(block: Mapping[str, Any], where: str, path: str, allow_tiered: bool = True) -> dict[str, Any]:
    kind = block.get("type", "in-memory")
    if kind in ("qdrant_semantic", "qdrant-semantic"):
        raise ConfigError(f"{where}: {path}.type: {kind!r}: {_QDRANT}")
    if kind in _REDIS_SEMANTIC and allow_tiered:
        kind = "redis"  # the answers; the vectors go to the same server (see _from_guide)
    mapped = _GUIDE_TYPES.get(kind) if isinstance(kind, str) else None
    if mapped is None or (mapped == "tiered" and not allow_tiered):
        allowed = [t for t in _GUIDE_TYPES if allow_tiered or t != "dual_cache"]
        raise ConfigError(f"{where}: {path}.type: {kind!r} is not a cache type; allowed: {', '.join(allowed)}")
    params = block.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: {path}.params: expected a mapping")
    store: dict[str, Any] = {"type": mapped}
    if mapped == "memory":
        capacity = block.get("capacity", params.get("capacity"))
        if capacity is not None:
            store["max_entries"] = capacity
    elif mapped == "disk":
        directory = params.get("directory", params.get("disk_cache_dir", block.get("directory")))
        if directory is not None:
            store["directory"] = directory
    elif mapped == "redis":
        for name in ("url", "host", "port", "password"):
            if block.get(name) is not None:
                store[name] = block[name]
        for name in ("username", "db", "ssl", "timeout"):
            if params.get(name) is not None:
                store[name] = params[name]
    elif mapped == "s3":
        bucket = params.get("bucket", params.get("s3_bucket_name"))
        if bucket is None:
            raise ConfigError(f"{where}: {path}.params.bucket: required for type s3")
        store["bucket"] = bucket
        for ours, theirs in (("region", "s3_region_name"), ("endpoint_url", "s3_endpoint_url"), ("prefix", "s3_path")):
            value = params.get(ours, params.get(theirs))
            if value is not None:
                store[ours] = value
    else:
        for level in ("l1", "l2"):
            if not isinstance(block.get(level), dict):
                raise ConfigError(f"{where}: {path}.{level}: dual_cache needs an '{level}:' block with its own type")
        store["l1"] = _guide_store(block["l1"], where, f"{path}.l1", allow_tiered=False)
        store["l2"] = _guide_store(block["l2"], where, f"{path}.l2", allow_tiered=False)
        if block["l1"].get("ttl") is not None:
            store["l1_max_ttl"] = block["l1"]["ttl"]
    return store


def _from_guide(data: Mapping[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    unknown = set(data) - _GUIDE_TOP
    if unknown:
        raise ConfigError(
            f"{where}: {sorted(unknown)[0]}: unknown top-level key in a 'caching:' config; "
            f"allowed: {', '.join(sorted(_GUIDE_TOP))}"
        )
    block = data.get("caching") or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: caching: expected a mapping such as {{type: redis, host: ..., port: ...}}")
    unknown = set(block) - _GUIDE_CACHING
    if unknown:
        raise ConfigError(
            f"{where}: caching.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(_GUIDE_CACHING))}"
        )
    cache: dict[str, Any] = {"store": _guide_store(block, where, "caching")}
    enabled = data.get("cache_responses", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: cache_responses: expected true or false, got {enabled!r}")
    cache["enabled"] = enabled
    if block.get("type") in _REDIS_SEMANTIC:
        cache["semantic"] = _semantic_redis(cache["store"], block.get("similarity_threshold"), where, "caching")
    elif "similarity_threshold" in block:
        notes.append("caching.similarity_threshold ignored: exact matching only (use type redis-semantic)")
    ttl = block.get("ttl")
    if ttl is None and isinstance(block.get("l2"), dict):
        ttl = block["l2"].get("ttl")
    if ttl is not None:
        cache["ttl"] = ttl
    for name in ("key_prefix", "key_builder", "distributed_lock", "lock_ttl", "lock_wait"):
        if block.get(name) is not None:
            cache[name] = block[name]
    points = data.get("cache_control_injection_points")
    if points is not None:
        if not isinstance(points, list):
            raise ConfigError(
                f"{where}: cache_control_injection_points: expected a list such as "
                "[{location: message, role: system}]"
            )
        cache["prompt_caching"] = {"anthropic": {"mode": "breakpoints", "points": points}}
    out: dict[str, Any] = {"cache": cache}
    proxy = data.get("proxy")
    if proxy is not None:
        if not isinstance(proxy, dict):
            raise ConfigError(f"{where}: proxy: expected a mapping with host and port")
        out["server"] = {k: proxy[k] for k in ("host", "port", "workers") if k in proxy}
    for name in ("model_list", "router"):
        if name in data:
            out[name] = data[name]
    return out


# -- LiteLLM proxy files --------------------------------------------------------------------------

_LITELLM_TYPES = {
    "local": "memory",
    "in-memory": "memory",
    "redis": "redis",
    "s3": "s3",
    "disk": "disk",
    "redis-cluster": "redis-cluster",
}
_LITELLM_USED = {
    "type",
    "host",
    "port",
    "password",
    "username",
    "url",
    "ssl",
    "ttl",
    "namespace",
    "mode",
    "default_in_memory_ttl",
    "default_in_redis_ttl",
    "redis_startup_nodes",
    "startup_nodes",
    "service_name",
    "sentinel_nodes",
    "sentinel_password",
    "s3_bucket_name",
    "s3_region_name",
    "s3_endpoint_url",
    "s3_aws_access_key_id",
    "s3_aws_secret_access_key",
    "s3_aws_session_token",
    "s3_path",
    "disk_cache_dir",
    "max_size_in_memory",
    "supported_call_types",
    "similarity_threshold",
    "redis_semantic_cache_embedding_model",
}


def _nodes(value: Any) -> list[str]:
    nodes = []
    for node in value or []:
        if isinstance(node, dict):
            nodes.append(f"{node.get('host')}:{node.get('port', 6379)}")
        elif isinstance(node, (list, tuple)) and len(node) == 2:
            nodes.append(f"{node[0]}:{node[1]}")
        else:
            nodes.append(str(node))
    return nodes


def _from_litellm(data: Mapping[str, Any], where: str, notes: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    settings = data.get("litellm_settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: litellm_settings: expected a mapping")
    params = settings.get("cache_params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: litellm_settings.cache_params: expected a mapping")
    enabled = settings.get("cache", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: litellm_settings.cache: expected true or false, got {enabled!r}")
    path = "litellm_settings.cache_params"
    kind = params.get("type", "redis" if params.get("host") or params.get("url") else "local")
    semantic = kind in _REDIS_SEMANTIC
    if semantic:
        kind = "redis"
    elif isinstance(kind, str) and "semantic" in kind:
        raise ConfigError(f"{where}: {path}.type: {kind!r}: {_QDRANT}")
    if kind == "redis" and (params.get("sentinel_nodes") or params.get("service_name")):
        kind = "redis-sentinel"
    elif kind == "redis" and (params.get("redis_startup_nodes") or params.get("startup_nodes")):
        kind = "redis-cluster"
    mapped = _LITELLM_TYPES.get(kind, "redis-sentinel" if kind == "redis-sentinel" else None)
    if mapped is None:
        raise ConfigError(
            f"{where}: {path}.type: {kind!r} is not supported; allowed: {', '.join(sorted(_LITELLM_TYPES))}"
        )
    store: dict[str, Any] = {"type": mapped}
    if mapped == "memory":
        if params.get("max_size_in_memory") is not None:
            store["max_entries"] = params["max_size_in_memory"]
    elif mapped == "disk":
        if params.get("disk_cache_dir") is not None:
            store["directory"] = params["disk_cache_dir"]
    elif mapped.startswith("redis"):
        # LiteLLM falls back to REDIS_* environment variables when cache_params leaves them out.
        fallbacks = {
            "url": "REDIS_URL",
            "host": "REDIS_HOST",
            "port": "REDIS_PORT",
            "password": "REDIS_PASSWORD",
            "username": "REDIS_USERNAME",
        }
        for name, variable in fallbacks.items():
            value = params.get(name, env.get(variable))
            if value is None or (mapped != "redis" and name in ("url", "host", "port")):
                continue
            store[name] = value
        if params.get("ssl") is not None:
            store["ssl"] = params["ssl"]
        if mapped == "redis-cluster":
            store["startup_nodes"] = _nodes(params.get("redis_startup_nodes") or params.get("startup_nodes"))
        if mapped == "redis-sentinel":
            store["service_name"] = params.get("service_name")
            store["sentinels"] = _nodes(params.get("sentinel_nodes"))
            if params.get("sentinel_password") is not None:
                store["sentinel_password"] = params["sentinel_password"]
    else:
        store["bucket"] = params.get("s3_bucket_name")
        for ours, theirs in (
            ("region", "s3_region_name"),
            ("endpoint_url", "s3_endpoint_url"),
            ("aws_access_key_id", "s3_aws_access_key_id"),
            ("aws_secret_access_key", "s3_aws_secret_access_key"),
            ("aws_session_token", "s3_aws_session_token"),
            ("prefix", "s3_path"),
        ):
            if params.get(theirs) is not None:
                store[ours] = params[theirs]
    cache: dict[str, Any] = {"enabled": enabled, "store": store}
    if semantic:
        cache["semantic"] = _semantic_redis(store, params.get("similarity_threshold"), where, path)
        if params.get("redis_semantic_cache_embedding_model") is not None:
            notes.append(
                f"{path}.redis_semantic_cache_embedding_model ignored: the local all-MiniLM-L6-v2 embeds; "
                "set cache.semantic.embedder in a native file for another"
            )
    ttl = params.get("ttl", params.get("default_in_redis_ttl", params.get("default_in_memory_ttl")))
    if ttl is not None:
        cache["ttl"] = ttl
    if params.get("namespace"):
        cache["key_prefix"] = f"{params['namespace']}:"
    mode = params.get("mode")
    if mode is not None:
        if mode not in ("default_on", "default_off"):
            raise ConfigError(f"{where}: {path}.mode: {mode!r}; allowed: default_on, default_off")
        cache["mode"] = "opt_in" if mode == "default_off" else "default"
    if params.get("supported_call_types") is not None:
        notes.append(f"{path}.supported_call_types ignored: every LLM endpoint the gateway serves is cached")
    for name in sorted(set(params) - _LITELLM_USED):
        notes.append(f"{path}.{name} ignored: not supported by llm-cache")
    out: dict[str, Any] = {"cache": cache, **_litellm_general(data.get("general_settings"), where, notes)}
    for name in ("model_list",):
        if name in data:
            out[name] = data[name]
    if isinstance(data.get("router_settings"), dict):
        out["router"] = data["router_settings"]
    return out


_LITELLM_GENERAL_USED = {"master_key", "max_request_size_mb"}


def _litellm_general(general: Any, where: str, notes: list[str]) -> dict[str, Any]:
    """`general_settings`: the master key guards the LLM routes and the management endpoints, as in
    LiteLLM; `max_request_size_mb` becomes `server.max_request_bytes`."""
    if general is None:
        return {}
    if not isinstance(general, dict):
        raise ConfigError(f"{where}: general_settings: expected a mapping")
    out: dict[str, Any] = {}
    master = general.get("master_key")
    if master is not None:
        if not isinstance(master, str) or not master.strip():
            raise ConfigError(f"{where}: general_settings.master_key: expected a non-empty string")
        out["admin_key"] = master
        out["auth"] = {"keys": [master]}
    size = general.get("max_request_size_mb")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not size > 0:
            raise ConfigError(
                f"{where}: general_settings.max_request_size_mb: expected a positive number, got {size!r}"
            )
        out["server"] = {"max_request_bytes": max(1, int(size * 1024 * 1024))}
    for name in sorted(set(general) - _LITELLM_GENERAL_USED):
        notes.append(f"general_settings.{name} ignored: not supported by llm-cache")
    return out


# -- readable validation errors -------------------------------------------------------------------


def _describe(error: ValidationError, where: str, dialect: str) -> str:
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        field = _dotted(_without_tags(loc))
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(loc[:-1])
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            message = f"unknown field {loc[-1]!r}{hint}"
        elif kind == "union_tag_invalid":
            expected = item.get("ctx", {}).get("expected_tags")
            allowed_tags = expected.replace("'", "") if expected else ", ".join(STORE_TYPES)
            message = (
                f"unknown type {item['input'] if not isinstance(item['input'], dict) else item['ctx']['tag']!r}"
                f"; allowed: {allowed_tags}"
            )
            field = _dotted((*_without_tags(loc), "type"))
        elif kind == "union_tag_not_found":
            message = f"a store needs a 'type'; allowed: {', '.join(STORE_TYPES)}"
            field = _dotted((*_without_tags(loc), "type"))
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            if kind not in ("value_error",) and "input" in item and not isinstance(item["input"], (dict, list)):
                message += f" (got {item['input']!r})"
        lines.append(f"{field}: {message}")
    translated = "" if dialect == "native" else f" (after translating the {dialect} dialect to native settings)"
    head = f"{where}: invalid configuration{translated}"
    return head + ":\n  " + "\n  ".join(lines) if len(lines) > 1 else f"{head}: {lines[0]}"


def _tags(union: Any) -> frozenset[str]:
    """The `type` values that pick the members of a tagged union of config models."""
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(tag for member in members for tag in typing.get_args(member.model_fields["type"].annotation))


_UNION_TAGS: dict[Any, frozenset[str]] = {
    "store": frozenset(STORE_TYPES),
    "l1": frozenset(STORE_TYPES),
    "l2": frozenset(STORE_TYPES),
    "embedder": _tags(EmbedderConfig),
    "index": _tags(IndexConfig),
}
"""Field name -> the union tags that pydantic puts after it in an error's location."""


def _without_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """`cache.store.redis.port` -> `cache.store.port`: the union tag is not a key in the file."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i and part in _UNION_TAGS.get(loc[i - 1], ()):
            continue
        out.append(part)
    return tuple(out)


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at `loc` in GatewayConfig (for "unknown field" hints)."""
    target: Any = GatewayConfig
    for part in loc:
        model = _as_model(target, part)
        if model is None:
            return []
        if part in model.model_fields:
            target = model.model_fields[part].annotation
        elif isinstance(part, str) and _union_member(target, part) is not None:
            target = _union_member(target, part)
        else:
            return []
    model = _as_model(target, None)
    return sorted(model.model_fields) if model is not None else []


def _as_model(target: Any, part: Any) -> type[BaseModel] | None:
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target
    member = _union_member(target, part)
    if member is not None:
        return member
    for arg in typing.get_args(target):  # Optional[Model]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _union_member(target: Any, tag: Any) -> type[BaseModel] | None:
    if typing.get_origin(target) is Annotated:
        target = typing.get_args(target)[0]
    if typing.get_origin(target) not in (Union, types.UnionType):
        return None
    for member in typing.get_args(target):
        if (
            isinstance(member, type)
            and issubclass(member, BaseModel)
            and "type" in member.model_fields
            and tag in typing.get_args(member.model_fields["type"].annotation)
        ):
            return member
    return None


# -- building -------------------------------------------------------------------------------------

_STORE_CLASSES = {
    "memory": ("llm_cache.middleware.stores.memory", "MemoryStore", None),
    "disk": ("llm_cache.middleware.stores.disk", "DiskStore", None),
    "redis": ("llm_cache.middleware.stores.redis", "RedisStore", None),
    "redis-cluster": ("llm_cache.middleware.stores.redis", "RedisClusterStore", None),
    "redis-sentinel": ("llm_cache.middleware.stores.redis", "RedisSentinelStore", None),
    "tiered": ("llm_cache.middleware.stores.tiered", "TieredStore", None),
    "dual_cache": ("llm_cache.middleware.stores.tiered", "TieredStore", None),
    "s3": ("llm_cache.middleware.stores.s3", "S3Store", "s3"),
    "memcached": ("llm_cache.middleware.stores.memcached", "MemcachedStore", "memcached"),
}


def store_class(kind: str) -> Any:
    module_name, class_name, extra = _STORE_CLASSES[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        if missing and missing.startswith("llm_cache"):
            raise ConfigError(
                f"cache.store.type: {kind!r} needs {module_name}.{class_name}, which is not available in this version"
            ) from None
        hint = f" (pip install 'llm-cache-middleware[{extra}]')" if extra else ""
        raise ConfigError(f"cache.store.type: {kind!r} needs the package {missing!r}{hint}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(
            f"cache.store.type: {kind!r} needs {module_name}.{class_name}, which is not available in this version"
        )
    return cls


def _host_port(node: str, field: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{field}: expected 'host:port', got {node!r}")
    return host, int(port)


def build_store(settings: Any) -> Any:
    """A live store from a `StoreConfig` (or the equivalent mapping)."""
    if isinstance(settings, Mapping):
        try:
            settings = CacheConfig.model_validate({"store": dict(settings)}).store
        except ValidationError as error:
            raise ConfigError(_describe(error, "<store>", "native")) from None
    kind = settings.type
    cls = store_class(kind)
    options = settings.model_dump(exclude={"type"}, exclude_none=True)
    try:
        if kind in ("tiered", "dual_cache"):
            options.pop("l1", None)
            options.pop("l2", None)
            return cls(build_store(settings.l1), build_store(settings.l2), **options)
        if kind == "redis-cluster" and "startup_nodes" in options:
            options["startup_nodes"] = [_host_port(n, "cache.store.startup_nodes") for n in options["startup_nodes"]]
        if kind == "redis-sentinel":
            sentinels = [_host_port(n, "cache.store.sentinels") for n in options.pop("sentinels")]
            return cls(options.pop("service_name"), sentinels, **options)
        if kind == "s3":
            return cls(options.pop("bucket"), **options)
        return cls(**options)
    except ConfigError:
        raise
    except (TypeError, ValueError, OSError) as error:
        raise ConfigError(f"cache.store ({kind}): {error}") from None


def build_cache(settings: CacheConfig | GatewayConfig | None = None, store: Any = None) -> Any:
    """A `Cache` from the `cache:` settings; `store` overrides the configured one."""
    from .engine import Cache

    if isinstance(settings, GatewayConfig):
        settings = settings.cache
    if settings is None:
        settings = CacheConfig()
    if store is None:
        store = build_store(settings.store)
    try:
        return Cache(
            store,
            ttl=settings.ttl,
            key_prefix=settings.key_prefix,
            scope=settings.scope,
            anonymous=settings.anonymous,
            mode=settings.mode,
            ignored_fields=tuple(settings.ignored_fields),
            key_builder=settings.key_builder,
            max_body_bytes=settings.max_body_bytes,
            distributed_lock=settings.distributed_lock,
            lock_ttl=settings.lock_ttl,
            lock_wait=settings.lock_wait,
            prompt_caching=settings.prompt_caching,
            cache_fallbacks=settings.cache_fallbacks,
            fallback_ttl=settings.fallback_ttl,
            semantic=build_semantic(settings.semantic),
        )
    except ValidationError as error:
        raise ConfigError(_describe(error, "cache", "native")) from None


# -- printing -------------------------------------------------------------------------------------


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        ordered = sorted(value.items(), key=lambda item: item[0] != "type")  # the type first
        return {k: _drop_none(v) for k, v in ordered if v is not None}
    return value


def masked(value: Any, key: str = "") -> Any:
    """A copy with every secret-looking field replaced by '****' (unset secrets stay null)."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str) and key and SECRET_FIELDS.search(key):
        return "****"
    if isinstance(value, str) and "://" in value and "@" in value:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1****@", value)  # passwords inside URLs
    return value


def effective_settings(config: GatewayConfig) -> dict[str, Any]:
    """The settings a gateway would run with, secrets masked, upstream defaults filled in."""
    data = config.model_dump(mode="json")
    data["cache"]["store"] = _drop_none(data["cache"]["store"])
    for family in FAMILIES:
        data["upstreams"][family]["base_url"] = config.upstreams.base_url(family)
    if data["cache"]["store"]["type"] == "disk" and data["cache"]["store"].get("directory") is None:
        from .stores.disk import default_cache_dir

        data["cache"]["store"]["directory"] = str(default_cache_dir())
    return masked(data)
