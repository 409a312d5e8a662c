"""The gateway's settings as pydantic models: what a native config file may say.

`CacheConfig` is the engine's own `CacheSettings` plus where the cache keeps its entries, so every
engine setting can be set from a file and both refuse the same values.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .._forwarding import check_rule
from .._hooks import Hooks
from .._keys import resolve_key_builder, validate_scope
from .._settings import CacheSettings
from ..providers import DEFAULT_ENDPOINTS, Endpoint
from ..semantic._local_model import DEFAULT_MAX_IN_FLIGHT

_HOST_NAME = re.compile(r"\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?")

FAMILIES = ("openai", "anthropic", "gemini", "azure")
DEFAULT_UPSTREAMS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # (YAML's `.inf`/`.nan`: `null` says "none")


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
    max_value_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Longer answers are not stored (the server's proto-max-bulk-len, a managed Redis's limit).",
    )


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


class _ObjectStoreCommon(_Model):
    prefix: str | None = None
    max_value_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Longer objects are a miss, never read (default 64 MiB): others may write the bucket.",
    )


class S3StoreConfig(_ObjectStoreCommon):
    type: Literal["s3"]
    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    profile: str | None = None


class GCSStoreConfig(_ObjectStoreCommon):
    type: Literal["gcs"]
    bucket: str
    endpoint_url: str | None = Field(default=None, description="An emulator; default: Google's JSON API.")
    service_account_file: str | None = Field(default=None, description="Default: Application Default Credentials.")
    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)


class AzureBlobStoreConfig(_ObjectStoreCommon):
    type: Literal["azure-blob"]
    container: str
    connection_string: str | None = Field(default=None, description="Default: AZURE_STORAGE_CONNECTION_STRING.")
    account_url: str | None = Field(default=None, description="https://ACCOUNT.blob.core.windows.net")
    credential: str | None = Field(default=None, description="An account key or SAS token; default: azure-identity.")
    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)


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
        GCSStoreConfig,
        AzureBlobStoreConfig,
    ],
    Field(discriminator="type"),
]
TieredStoreConfig.model_rebuild()

STORE_TYPES = (
    "memory",
    "disk",
    "redis",
    "redis-cluster",
    "redis-sentinel",
    "tiered",
    "dual_cache",
    "s3",
    "memcached",
    "gcs",
    "azure-blob",
)


def http_base_url(value: str) -> str:
    """`value` checked as an http(s) base URL without a query or dot segments, its last `/` dropped."""
    if not re.match(r"^https?://[^/\s?#]+(/[^\s?#\\]*)?$", value):
        raise ValueError(f"base_url must be an http:// or https:// URL without a query, got {value!r}")
    if any(part in (".", "..") for part in value.split("://", 1)[1].split("/")):
        raise ValueError(f"base_url must not contain '.' or '..' segments, got {value!r}")
    return value.rstrip("/")


def _redis_url(value: str) -> str:
    if not re.match(r"^(rediss?://|unix://)", value):
        raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, got {value!r}")
    return value


HttpBase = Annotated[str, AfterValidator(http_base_url)]
"""An OpenAI-compatible service's base URL, checked when the config loads (not at the first call)."""
RedisUrl = Annotated[str, AfterValidator(_redis_url)]


# -- semantic cache ----------------------------------------------------------------------------------

_MAX_IN_FLIGHT = "Calls of the local model running or waiting at once; one more is a miss at once."


class LocalEmbedderConfig(_Model):
    type: Literal["local", "sentence-transformers"]
    model: str | None = Field(
        default=None,
        description="A model name (all-MiniLM-L6-v2, the default, shipped; all-mpnet-base-v2; all-MiniLM-L6-v2-int8; "
        "see docs/semantic.md) or a local sentence-transformers folder.",
    )
    max_in_flight: int = Field(default=DEFAULT_MAX_IN_FLIGHT, ge=1, description=_MAX_IN_FLIGHT)


class OpenAIEmbedderConfig(_Model):
    type: Literal["openai"]
    base_url: HttpBase = "https://api.openai.com/v1"
    model: str = "text-embedding-3-small"
    api_key: str | None = None
    timeout: float = Field(default=10.0, gt=0)


class MemoryIndexConfig(_Model):
    type: Literal["memory"]
    max_entries: int = Field(default=100_000, gt=0)


class RedisIndexConfig(_Model):
    type: Literal["redis"]
    url: RedisUrl = "redis://127.0.0.1:6379/0"
    index_name: str = "llm-cache-semantic"
    prefix: str = "llm-cache:semantic:"
    max_entries: int = Field(
        default=100_000,
        gt=0,
        description="Rows every pod keeps at most; past it, the caller holding the most gives up its oldest.",
    )


class QdrantIndexConfig(_Model):
    type: Literal["qdrant"]
    url: str | None = Field(default=None, description="A Qdrant server, e.g. http://qdrant:6333.")
    api_key: str | None = None
    location: str | None = Field(default=None, description="':memory:' for qdrant-client's local mode.")
    path: str | None = Field(default=None, description="A folder for qdrant-client's local mode.")
    collection_name: str = "llm-cache-semantic"


EmbedderConfig = Annotated[LocalEmbedderConfig | OpenAIEmbedderConfig, Field(discriminator="type")]
IndexConfig = Annotated[MemoryIndexConfig | RedisIndexConfig | QdrantIndexConfig, Field(discriminator="type")]


class EmbeddingJudgeConfig(_Model):
    type: Literal["embedding"]
    threshold: float = Field(default=0.92, ge=-1.0, le=1.0, description="Cosine similarity of the two answers.")


class ExactJudgeConfig(_Model):
    type: Literal["exact"]


class LLMJudgeConfig(_Model):
    type: Literal["llm"]
    base_url: HttpBase = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    max_chars: int = Field(default=32_000, gt=0, description="A longer question or answer is not judged.")


class MemoryEvidenceConfig(_Model):
    type: Literal["memory"]


class RedisEvidenceConfig(_Model):
    type: Literal["redis"]
    url: RedisUrl = "redis://127.0.0.1:6379/0"
    prefix: str = "llm-cache:bound:"
    max_records: int = Field(
        default=1_000_000,
        gt=0,
        description="Per-answer records kept at most (every pod's); past it, the caller holding the most gives way.",
    )
    max_tallies: int = Field(
        default=100_000,
        gt=0,
        description="Partitions' tallies kept at most (every pod's); past it, the caller holding the most gives way.",
    )


EvidenceConfig = Annotated[MemoryEvidenceConfig | RedisEvidenceConfig, Field(discriminator="type")]
JudgeConfig = Annotated[EmbeddingJudgeConfig | ExactJudgeConfig | LLMJudgeConfig, Field(discriminator="type")]


class RerankConfig(_Model):
    """`cache.semantic.rerank`: a second check on the candidates that clear the threshold and the guard,
    by a rerank endpoint (`url`, `model`) or a local cross-encoder (`path`); see docs/semantic.md."""

    url: str | None = Field(default=None, description="A Cohere-shaped rerank endpoint: http://vllm:8000/v1/rerank.")
    path: str | None = Field(default=None, description="A local sentence-transformers cross-encoder folder.")
    model: str | None = Field(default=None, description="The endpoint's model name (with url).")
    api_key: str | None = Field(default=None, description="The endpoint's key, sent as a bearer token (with url).")
    label: int | None = Field(default=None, ge=0, description="With path, a model of several outputs: the one to use.")
    min_score: float = Field(description="The lowest score served, on the model's own scale.")
    timeout: float = Field(default=2.0, gt=0, description="Seconds a check may take; slower is a miss.")
    max_in_flight: int | None = Field(
        default=None, ge=1, description=f"With path: {_MAX_IN_FLIGHT} (default {DEFAULT_MAX_IN_FLIGHT})"
    )

    @model_validator(mode="after")
    def _one_model(self) -> RerankConfig:
        if (self.url is None) == (self.path is None):
            raise ValueError("set one of url (a rerank endpoint, with model) and path (a local cross-encoder)")
        if self.url is not None and (self.model is None or self.label is not None or self.max_in_flight is not None):
            raise ValueError("url needs model (the endpoint's model name) and takes no label or max_in_flight")
        if self.path is not None and (self.model is not None or self.api_key is not None):
            raise ValueError("path is the model: model and api_key go with url")
        if self.path is not None and self.max_in_flight is None:
            self.max_in_flight = DEFAULT_MAX_IN_FLIGHT  # shown by check-config as it runs
        return self


class SemanticConfig(_Model):
    """`cache.semantic`: look misses up by meaning (see docs/semantic.md)."""

    enabled: bool = True
    threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a match must reach (default: the embedder model's own, 0.9 for "
        "all-MiniLM-L6-v2); with max_error_rate, the lowest considered "
        "(default 0.75).",
    )
    max_error_rate: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Bounded mode: the share of semantic lookups (or hits, see error_rate_of) that may be answered "
        "wrongly (0.02).",
    )
    error_rate_of: Literal["requests", "hits"] = Field(
        default="requests",
        description="Bounded mode: max_error_rate is a share of semantic lookups (requests) or of semantic hits.",
    )
    max_hit_error_rate: float = Field(
        default=0.25,
        gt=0.0,
        le=0.5,
        description="Bounded mode, error_rate_of requests: the wrong share per hit never allowed past, however "
        "many lookups find nothing.",
    )
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0, description="Bounded mode: the bound's confidence.")
    verifications_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="Bounded mode: a cap on checks a minute, per caller (key prefix and credential scope).",
    )
    judge: JudgeConfig = Field(default_factory=lambda: EmbeddingJudgeConfig(type="embedding"))
    evidence: EvidenceConfig = Field(
        default_factory=lambda: MemoryEvidenceConfig(type="memory"),
        description="Bounded mode: where verdicts are kept (redis: shared by every pod).",
    )
    guard: bool = Field(default=True, description="Veto matches whose numbers, names, quotes or code differ.")
    candidates: int = Field(default=4, gt=0)
    max_text_chars: int = Field(default=1000, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    embedder: EmbedderConfig = Field(default_factory=lambda: LocalEmbedderConfig(type="local"))
    index: IndexConfig = Field(default_factory=lambda: MemoryIndexConfig(type="memory"))
    rerank: RerankConfig | None = Field(default=None, description="A second check on the candidates served.")

    @model_validator(mode="after")
    def _floor(self) -> SemanticConfig:
        if self.max_error_rate is not None and self.threshold is not None and self.threshold >= 1.0:
            raise ValueError("with max_error_rate, threshold is the lowest similarity considered: below 1")
        return self


# -- cache, upstreams, server ---------------------------------------------------------------------


class CacheConfig(CacheSettings):
    """`cache`: the engine's settings (`CacheSettings`, every one of them) plus the store, the
    semantic cache and a switch. Code values (a scope function, a key builder) are dotted paths here."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    store: StoreConfig = Field(default_factory=lambda: DiskStoreConfig(type="disk"))
    semantic: SemanticConfig | None = None
    scope: str = Field(
        default="credential",
        description="'credential', 'shared', 'header:<name>', or a scope function's dotted path 'pkg.module:function'.",
    )
    key_builder: str | None = Field(default=None, description="Dotted path 'package.module:function'.")
    hooks: dict[str, list[str]] | None = Field(
        default=None,
        description="Dotted paths per hook point: {before_lookup: [pkg.module:function], before_forward: [...], "
        "after_answer: [...], on_hit: [...]}.",
    )
    endpoints: list[str] | None = Field(
        default=None,
        description="The endpoints whose answers are cached (`chat.completions`, `embeddings`, `messages`, ...); "
        "default: all. Requests to the others are forwarded untouched.",
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str] | None) -> list[str] | None:
        known = [endpoint.name for endpoint in DEFAULT_ENDPOINTS]
        for name in value or []:
            if name not in known:
                raise ValueError(f"unknown endpoint {name!r}; allowed: {', '.join(known)}")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:  # the engine's rule; the file keeps the text it wrote
        validate_scope(value)
        return value

    @field_validator("key_builder")
    @classmethod
    def _key_builder(cls, value: str | None) -> str | None:  # type: ignore[override]
        if value is not None:
            resolve_key_builder(value)  # import now, so a typo fails at load time
        return value

    @field_validator("hooks")
    @classmethod
    def _hooks(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:  # type: ignore[override]
        if value is not None:
            Hooks(value)  # import now, so a typo fails at load time
        return value

    def engine_settings(self) -> dict[str, Any]:
        """The keyword arguments `Cache(...)` takes for these settings."""
        return {name: getattr(self, name) for name in CacheSettings.model_fields}

    def cached_endpoints(self) -> tuple[Endpoint, ...]:
        """The `Cache(endpoints=...)` these settings select."""
        if self.endpoints is None:
            return DEFAULT_ENDPOINTS
        return tuple(endpoint for endpoint in DEFAULT_ENDPOINTS if endpoint.name in self.endpoints)


class UpstreamConfig(_Model):
    base_url: str | None = Field(default=None, description="As the provider's SDK writes it: https://api.openai.com/v1")
    api_key: str | None = Field(default=None, description="Replaces the caller's credentials when set.")
    timeout: float = Field(default=600.0, gt=0)
    allow: list[str] | None = Field(
        default=None,
        description="'METHOD /path' rules of the calls forwarded with a key of the gateway's own (default: "
        "the family's model calls and model list; '* /**' forwards everything). See docs/gateway.md.",
    )

    @field_validator("allow")
    @classmethod
    def _rules(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_rule(rule) for rule in value]

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else http_base_url(value)


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
        default=None,
        gt=0,
        description="Larger request bodies are answered 413 (default: no cap, bodies stream; 64 MiB with a router, "
        "a key of the gateway's own or upstreams.<family>.allow).",
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
    allowed_hosts: list[str] | None = Field(
        default=None,
        description="Host names (no port) the gateway answers besides the loopback ones, '*' for any: checked "
        "on connections to a loopback address, on other ones for browsers' requests (IP addresses pass), and on "
        "every connection for every client once set (docs/security.md).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Web page origins (scheme://host[:port]) whose requests are answered; any other request "
        "naming an Origin is 403 (browsers send one, SDK clients none).",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str] | None) -> list[str] | None:
        for host in value or []:
            if not _HOST_NAME.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name: write it without scheme or port (`gw.example.com`)")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _allowed_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin.rstrip("/")):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port] (`https://app.example`)")
        return value

    def uvicorn_options(self) -> dict[str, Any]:
        """The keyword arguments `uvicorn.run` takes for these limits."""
        options: dict[str, Any] = {"timeout_keep_alive": self.timeout_keep_alive, "backlog": self.backlog}
        if self.limit_concurrency is not None:
            options["limit_concurrency"] = self.limit_concurrency
        if self.limit_max_requests is not None:
            options["limit_max_requests"] = self.limit_max_requests
        return options


MIN_KEY_CHARS = 16
"""An admin or client key shorter than this is warned about when `serve` starts (`weak_keys`)."""


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
    cache: CacheConfig = Field(default_factory=lambda: CacheConfig.model_validate({}))
    admin_key: str | None = Field(default=None, description="Enables the /cache/* management endpoints.")
    metrics_auth: bool = Field(
        default=False,
        description="GET /metrics needs the admin key too (it names the models called and their counts).",
    )
    auth: AuthConfig = Field(default_factory=AuthConfig)
    upstreams: UpstreamsConfig = Field(default_factory=UpstreamsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    model_list: list[Any] | None = Field(default=None, description="Passed through to the router untouched.")
    router: dict[str, Any] | None = Field(default=None, description="Passed through to the router untouched.")
    litellm_cache_key_header: bool = Field(
        default=False,
        description="Also name a response's key in x-litellm-cache-key, as LiteLLM's proxy does (on for a LiteLLM "
        "file): for clients written against LiteLLM; otherwise x-cache-key alone.",
    )

    # Not part of the file: where it came from and what was left out while translating it.
    dialect: str = Field(default="native", exclude=True)
    source: str | None = Field(default=None, exclude=True)
    notes: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="after")
    def _metrics_key(self) -> GatewayConfig:
        if self.metrics_auth and not self.admin_key:
            raise ValueError("metrics_auth needs admin_key: /metrics is then read with the admin key")
        return self

    def weak_keys(self) -> list[str]:
        """The fields holding an admin or client key shorter than `MIN_KEY_CHARS` (a guess away), as the
        operator's file names them. Such a key still works: refusing it would break configs that run."""
        if self.dialect == "litellm":  # general_settings.master_key is both the admin and the client key
            keys = [("general_settings.master_key", self.admin_key)]
        else:
            keys = [("admin_key", self.admin_key), *((f"auth.keys[{i}]", key) for i, key in enumerate(self.auth.keys))]
        return [field for field, key in keys if key is not None and len(key) < MIN_KEY_CHARS]

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
