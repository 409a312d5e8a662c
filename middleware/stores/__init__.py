from .aiocache import AiocacheStore
from .base import BatchStore, Store, StoreError
from .breaker import CircuitBreaker, CircuitOpenError
from .disk import DiskStore
from .memory import MemoryStore
from .redis import RedisClusterStore, RedisSentinelStore, RedisStore
from .tiered import TieredStore

__all__ = [
    "AiocacheStore",
    "BatchStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "DiskStore",
    "MemoryStore",
    "RedisClusterStore",
    "RedisSentinelStore",
    "RedisStore",
    "Store",
    "StoreError",
    "TieredStore",
]
