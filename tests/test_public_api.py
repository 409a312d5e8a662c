"""The public API is what each package's `__init__` exports, and nothing else."""

from __future__ import annotations

import middleware
import middleware.stores
import router


def test_middleware_exports() -> None:
    assert sorted(middleware.__all__) == [
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
        assert name in middleware.stores.__all__


def test_caching_never_imports_routing_and_routing_never_imports_caching() -> None:
    import pathlib

    for package, forbidden in (("middleware", "router"), ("router", "middleware")):
        for path in pathlib.Path(package).rglob("*.py"):
            if path.name == "gateway.py":
                continue  # the gateway is the one place that composes the two
            text = path.read_text()
            assert f"from {forbidden}" not in text and f"import {forbidden}" not in text, path
    assert router.RouterTransport is not None
