"""Stores by name and by URL: `store_class("s3")`, `store_from_url("redis://cache:6379/0")`.

Both the Python API (`Cache(store="redis://...")`) and the config builders load store classes
here, so a missing optional client is reported the same way everywhere: an `ImportError` naming
the package and the extra that installs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..._wire import masked_url
from .base import Store

STORE_CLASSES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("llm_cache.middleware.stores.memory", "MemoryStore", None),
    "disk": ("llm_cache.middleware.stores.disk", "DiskStore", None),
    "redis": ("llm_cache.middleware.stores.redis", "RedisStore", None),
    "redis-cluster": ("llm_cache.middleware.stores.redis", "RedisClusterStore", None),
    "redis-sentinel": ("llm_cache.middleware.stores.redis", "RedisSentinelStore", None),
    "tiered": ("llm_cache.middleware.stores.tiered", "TieredStore", None),
    "dual_cache": ("llm_cache.middleware.stores.tiered", "TieredStore", None),
    "s3": ("llm_cache.middleware.stores.s3", "S3Store", "s3"),
    "memcached": ("llm_cache.middleware.stores.memcached", "MemcachedStore", "memcached"),
    "gcs": ("llm_cache.middleware.stores.gcs", "GCSStore", "gcs"),
    "azure-blob": ("llm_cache.middleware.stores.azure", "AzureBlobStore", "azure"),
}
"""Store kind (the config's `cache.store.type`) -> (module, class, the extra its client comes with)."""


class MissingStoreClass(ImportError):
    """A store kind whose class or optional client cannot be imported; the message says what to install."""


def store_class(kind: str) -> Any:
    """The class of a store kind, imported now (so an optional client is only needed when it is used)."""
    module_name, class_name, extra = STORE_CLASSES[kind]
    unavailable = f"{kind!r} needs {module_name}.{class_name}, which is not available in this version"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        if missing.startswith("llm_cache"):
            raise MissingStoreClass(unavailable) from None
        hint = f" (pip install 'llm-cache-middleware[{extra}]')" if extra else ""
        raise MissingStoreClass(f"{kind!r} needs the package {missing!r}{hint}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise MissingStoreClass(unavailable)
    return cls


# -- URLs ------------------------------------------------------------------------------------------

_Options = dict[str, Callable[[str], Any]]
_REDIS_OPTIONS: _Options = {
    "prefix": str,
    "timeout": float,
    "connect_timeout": float,
    "max_connections": int,
    "max_value_bytes": int,
}
"""Our RedisStore's own query parameters; the rest of a redis:// URL's query is redis-py's."""
_OPTIONS: dict[str, _Options] = {
    "memory": {"max_entries": int, "max_bytes": int},
    "disk": {"size_limit": int},
    "redis": _REDIS_OPTIONS,
    "redis-cluster": _REDIS_OPTIONS,
    "s3": {
        "region": str,
        "endpoint_url": str,
        "profile": str,
        "connect_timeout": float,
        "read_timeout": float,
        "max_value_bytes": int,
    },
    "memcached": {"prefix": str, "timeout": float, "max_item_size": int, "pool_size": int},
    "gcs": {
        "endpoint_url": str,
        "service_account_file": str,
        "connect_timeout": float,
        "read_timeout": float,
        "max_value_bytes": int,
    },
    "azure-blob": {"account_url": str, "connect_timeout": float, "read_timeout": float, "max_value_bytes": int},
}
_KINDS = {
    "memory": "memory",
    "disk": "disk",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+cluster": "redis-cluster",
    "rediss+cluster": "redis-cluster",
    "s3": "s3",
    "memcached": "memcached",
    "gs": "gcs",
    "az": "azure-blob",
    "azure": "azure-blob",
}
URL_FORMS = (
    "memory://",
    "disk:///path",
    "redis://host:port/db",
    "rediss://",
    "redis+cluster://host:port",
    "s3://bucket/prefix",
    "memcached://host:port",
    "gs://bucket/prefix",
    "az://container/prefix",
)


def store_from_url(url: str) -> Store:
    """A store from a URL: `memory://`, `disk:///var/cache/llm` (`disk://` for the user's cache
    directory), `redis://`, `rediss://`, `unix://` (as redis-py reads them), `redis+cluster://host:port`
    (`rediss+cluster://` with TLS), `s3://bucket/prefix`, `memcached://host:port`, `gs://bucket/prefix`
    (Google Cloud Storage) and `az://container/prefix` (Azure Blob; `azure://` too).

    The query sets the store's simple options, e.g. `memory://?max_entries=1000`,
    `s3://bucket/llmc/?region=eu-west-1`, `redis://cache:6379/0?prefix=app:`; an unknown one is a
    `ValueError` naming those the store takes. Credentials go in the URL as redis-py reads them
    (Redis) or come from the usual chain: AWS's (S3), Application Default Credentials (GCS),
    `AZURE_STORAGE_CONNECTION_STRING` or, with `?account_url=`, `DefaultAzureCredential` (Azure).
    """
    parts = urlsplit(url)
    kind = _KINDS.get(parts.scheme.lower())
    if kind is None:
        forms = ", ".join(URL_FORMS)
        raise ValueError(f"cannot build a store from {without_password(url)!r}: the URL should look like {forms}")
    allowed = _OPTIONS[kind]
    options: dict[str, Any] = {}
    passed_on: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in allowed:
            try:
                options[name] = allowed[name](value)
            except ValueError:
                raise ValueError(f"{parts.scheme}:// store URL: {name}={value!r} is not a valid value") from None
        elif kind.startswith("redis"):
            passed_on.append((name, value))  # redis-py's own (socket_keepalive=, health_check_interval=, ...)
        else:
            raise ValueError(
                f"{parts.scheme}:// store URL: unknown option {name!r} (it takes {', '.join(sorted(allowed))})"
            )
    cls = store_class(kind)
    if kind == "memory":
        return cls(**options)  # type: ignore[no-any-return]
    if kind == "disk":
        return cls(parts.netloc + parts.path or None, **options)  # type: ignore[no-any-return]
    if kind in ("s3", "gcs", "azure-blob"):
        if not parts.netloc:
            raise ValueError(f"{parts.scheme}:// store URL: name the bucket, as in {parts.scheme}://bucket/prefix")
        prefix = parts.path.lstrip("/")
        if prefix:
            options["prefix"] = prefix if prefix.endswith("/") else prefix + "/"
        return cls(parts.netloc, **options)  # type: ignore[no-any-return]
    if kind == "memcached":
        return cls(parts.hostname or "127.0.0.1", parts.port or 11211, **options)  # type: ignore[no-any-return]
    scheme = parts.scheme.lower().removesuffix("+cluster")
    redis_url = urlunsplit((scheme, parts.netloc, parts.path, urlencode(passed_on), parts.fragment))
    return cls(redis_url, **options)  # type: ignore[no-any-return]


def without_password(url: str) -> str:
    """`url` as messages and logs may show it: masked as `check-config` masks URLs (`_wire.masked_url`:
    the user info's password, a user given alone (it may be a token), secret query values such as
    redis-py's `?password=`)."""
    return masked_url(url)


__all__ = ["STORE_CLASSES", "URL_FORMS", "MissingStoreClass", "store_class", "store_from_url", "without_password"]
