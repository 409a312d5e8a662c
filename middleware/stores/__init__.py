from .aiocache import AiocacheStore
from .base import BatchStore, Store, StoreError
from .disk import DiskStore
from .memory import MemoryStore

__all__ = ["AiocacheStore", "BatchStore", "DiskStore", "MemoryStore", "Store", "StoreError"]
