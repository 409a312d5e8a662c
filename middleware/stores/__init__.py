from .aiocache import AiocacheStore
from .base import Abilities, BatchStore, NoTagIndex, Store, StoreError, TagStore
from .breaker import CircuitBreaker, CircuitOpenError
from .disk import DiskStore
from .memory import MemoryStore
from .redis import RedisClusterStore, RedisSentinelStore, RedisStore
from .tiered import TieredStore
from .urls import store_from_url

__all__ = [
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
]


def __getattr__(name: str) -> object:
    """Stores whose client is an optional extra import lazily (`[s3]`, `[memcached]`, `[gcs]`, `[azure]`)."""
    if name == "S3Store":
        from .s3 import S3Store

        return S3Store
    if name == "MemcachedStore":
        from .memcached import MemcachedStore

        return MemcachedStore
    if name == "GCSStore":
        from .gcs import GCSStore

        return GCSStore
    if name == "AzureBlobStore":
        from .azure import AzureBlobStore

        return AzureBlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
