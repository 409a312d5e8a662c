"""The public API is what each package's `__init__` exports, and nothing else."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import llm_cache.middleware.stores
from llm_cache import middleware, router


def test_middleware_exports() -> None:
    assert sorted(middleware.__all__) == [
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
    for name in middleware.__all__:
        assert getattr(middleware, name) is not None


def test_store_exports_cover_every_back_end() -> None:
    for name in (
        "Store",
        "MemoryStore",
        "DiskStore",
        "AiocacheStore",
        "RedisStore",
        "RedisClusterStore",
        "RedisSentinelStore",
        "TieredStore",
        "S3Store",
        "MemcachedStore",
    ):
        assert name in llm_cache.middleware.stores.__all__


def test_caching_never_imports_routing_and_routing_never_imports_caching() -> None:
    import pathlib

    for package, forbidden in (("middleware", "router"), ("router", "middleware")):
        for path in pathlib.Path(package).rglob("*.py"):
            if path.name == "gateway.py":
                continue  # the gateway is the one place that composes the two
            text = path.read_text()
            assert f"from {forbidden}" not in text and f"import {forbidden}" not in text, path
    assert router.RouterTransport is not None


def test_an_apps_own_middleware_and_router_modules_do_not_shadow_ours(tmp_path):
    """FastAPI projects often keep a `middleware.py` and a `router.py` beside `main.py`."""
    (tmp_path / "middleware.py").write_text("MINE = 'middleware'\n")
    (tmp_path / "router.py").write_text("MINE = 'router'\n")
    (tmp_path / "main.py").write_text(
        "import middleware, router\n"
        "from llm_cache.middleware import CacheMiddleware, AsyncCachingTransport\n"
        "from llm_cache.router import Router, RouterTransport\n"
        "assert middleware.MINE == 'middleware' and router.MINE == 'router'\n"
        "assert CacheMiddleware.__module__.startswith('llm_cache.middleware.')\n"
        "assert Router.__module__.startswith('llm_cache.router.')\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "main.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


PINNED = {
    "llm_cache.middleware.config": [
        "AuthConfig",
        "CacheConfig",
        "ConfigError",
        "FAMILIES",
        "GatewayConfig",
        "STORE_TYPES",
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
    ],
    "llm_cache.middleware.providers": [
        "DEFAULT_ENDPOINTS",
        "Endpoint",
        "RequestView",
        "Route",
        "StreamAssembler",
        "Usage",
        "resolve",
    ],
    "llm_cache.middleware.semantic": [
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
    ],
    "llm_cache.middleware.stores": [
        "Abilities",
        "AiocacheStore",
        "AzureBlobStore",
        "BatchStore",
        "CircuitBreaker",
        "CircuitOpenError",
        "DiskStore",
        "GCSStore",
        "MemcachedStore",
        "MemoryStore",
        "NoTagIndex",
        "RedisClusterStore",
        "RedisSentinelStore",
        "RedisStore",
        "S3Store",
        "Store",
        "StoreError",
        "TagStore",
        "TieredStore",
        "store_from_url",
    ],
    "llm_cache.middleware.telemetry": [
        "Call",
        "Pricing",
        "Telemetry",
        "TelemetryCollector",
        "provider_name",
        "sdk_telemetry",
    ],
}
"""Each public subpackage's exported names: adding or removing one is a decision, made here (the
router's are pinned in tests/router/test_api.py)."""


@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_public_subpackage_pins_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == PINNED[name]
    for exported in module.__all__:
        assert getattr(module, exported) is not None
