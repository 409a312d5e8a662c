"""The foreign dialects a config file may be written in, translated to the native settings.

- guide: `cache_responses` + a `caching: {type: in-memory|disk|redis|s3|dual_cache, ...}` block;
- litellm: a LiteLLM proxy file (`litellm_settings: {cache: true, cache_params: {...}}`, `model_list`);
- router: a file in one of the router's own forms (`groups:` or `targets:`), which is the `router` section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ... import _litellm as litellm
from ..._wire import expand_optional
from .errors import ConfigError


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
    if "model_list" in data:
        return "litellm"
    return "router" if data and data.keys() <= _ROUTER_FILE else "native"


_ROUTER_FILE = {"groups", "settings", "strategy", "targets", "retry"}
"""The top-level keys of the router's own config forms (native `groups`, Portkey-like `targets`): such
a file runs as the gateway's `router` section, with the default cache."""


_GUIDE_TOP = {"cache_responses", "caching", "proxy", "model_list", "router", "cache_control_injection_points", "hooks"}
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
_QDRANT_SEMANTIC = ("qdrant_semantic", "qdrant-semantic")
_QDRANT = "this file's dialect has no Qdrant index; use cache.semantic.index.type: qdrant (or LiteLLM's cache_params)"


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


def from_guide(data: Mapping[str, Any], where: str, notes: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    unknown = set(data) - _GUIDE_TOP
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: {key}: unknown top-level key in a 'caching:' config{litellm.did_you_mean(key, _GUIDE_TOP)}; "
            f"allowed: {', '.join(sorted(_GUIDE_TOP))}"
        )
    if "hooks" in data:
        notes.append(
            "ignored: hooks (pre-call hooks are not run; cache_control_injection_points places Anthropic "
            "breakpoints, key_builder shapes keys)"
        )
    block = data.get("caching") or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: caching: expected a mapping such as {{type: redis, host: ..., port: ...}}")
    unknown = set(block) - _GUIDE_CACHING
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: caching.{key}: unknown key{litellm.did_you_mean(key, _GUIDE_CACHING)}; "
            f"allowed: {', '.join(sorted(_GUIDE_CACHING))}"
        )
    cache: dict[str, Any] = {"store": _guide_store(block, where, "caching")}
    enabled = data.get("cache_responses", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: cache_responses: expected true or false, got {enabled!r}")
    cache["enabled"] = enabled
    if block.get("type") in _REDIS_SEMANTIC:
        cache["semantic"] = _semantic_redis(cache["store"], block.get("similarity_threshold"), where, "caching")
        name = (block.get("params") or {}).get("embedding_model")
        if name is not None:
            embedder = embedder_for(str(name), data.get("model_list"), env)
            if isinstance(embedder, str):
                notes.append(f"replaced: caching.params.embedding_model ({embedder}): {_LOCAL_EMBEDS}")
            else:
                cache["semantic"]["embedder"] = embedder
    elif "similarity_threshold" in block:
        notes.append("ignored: caching.similarity_threshold (exact matching only; use type redis-semantic)")
    ttl = block.get("ttl")
    if ttl is None and isinstance(block.get("l2"), dict):
        ttl = block["l2"].get("ttl")
    if ttl is not None:
        cache["ttl"] = ttl
    for name in ("key_prefix", "key_builder", "distributed_lock", "lock_ttl", "lock_wait"):
        if block.get(name) is not None:
            cache[name] = block[name]
    points = _injection_points(data.get("cache_control_injection_points"), where, "cache_control_injection_points")
    if points is not None:
        cache["prompt_caching"] = points
    out: dict[str, Any] = {"cache": cache}
    proxy = data.get("proxy")
    if proxy is not None:
        if not isinstance(proxy, dict):
            raise ConfigError(f"{where}: proxy: expected a mapping with host and port")
        out["server"] = {k: proxy[k] for k in ("host", "port", "workers") if k in proxy}
    if "model_list" in data:
        out["model_list"] = _with_points(data["model_list"], data.get("cache_control_injection_points"))
    if "router" in data:
        out["router"] = data["router"]
    return out


_LITELLM_TYPES = {
    "local": "memory",
    "in-memory": "memory",
    "redis": "redis",
    "s3": "s3",
    "disk": "disk",
    "redis-cluster": "redis-cluster",
    "gcs": "gcs",
    "azure-blob": "azure-blob",
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


def from_litellm(data: Mapping[str, Any], where: str, notes: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    """A LiteLLM proxy file: the cache from `litellm_settings`, the router from `model_list`,
    `router_settings` and `litellm_settings` (`llm_cache._litellm.router_settings`), the master key
    from `general_settings`. Every key that is not honoured is noted (`llm_cache._litellm.review`)."""
    settings = data.get("litellm_settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: litellm_settings: expected a mapping")
    params = settings.get("cache_params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: litellm_settings.cache_params: expected a mapping")
    enabled = settings.get("cache", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: litellm_settings.cache: expected true or false, got {enabled!r}")
    notes += litellm.review(data, report_unknown_router_keys=False)
    path = "litellm_settings.cache_params"
    store = _litellm_store(params, where, path, env)
    cache: dict[str, Any] = {"enabled": enabled, "store": store}
    if params.get("type") in (*_REDIS_SEMANTIC, *_QDRANT_SEMANTIC):
        cache["semantic"] = _litellm_semantic(data, params, store, where, notes, env)
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
    call_types = params.get("supported_call_types")
    if call_types is not None:
        if not isinstance(call_types, list):
            raise ConfigError(f"{where}: {path}.supported_call_types: expected a list such as [acompletion]")
        cache["endpoints"], more = litellm.call_type_endpoints(call_types, f"{path}.supported_call_types")
        notes += more
    points = _injection_points(data.get("cache_control_injection_points"), where, "cache_control_injection_points")
    if points is not None:
        cache["prompt_caching"] = points
    out: dict[str, Any] = {"cache": cache, **_litellm_general(data.get("general_settings"), where)}
    out["litellm_cache_key_header"] = True  # its clients read the key under LiteLLM's name
    router = litellm.router_settings(data)
    if "model_list" in data:
        out["model_list"] = _with_points(data["model_list"], data.get("cache_control_injection_points"))
        out["router"] = router
    else:
        notes += [f"ignored: {_router_key_path(data, key)} (no model_list: there is no router)" for key in router]
    return out


def _with_points(model_list: Any, points: Any) -> Any:
    """The top-level `cache_control_injection_points` given to every deployment that names none of
    its own, so the router places them on what it sends to Anthropic (after translating, too)."""
    if points is None or not isinstance(model_list, list):
        return model_list
    out = []
    for entry in model_list:
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        if isinstance(params, dict) and "cache_control_injection_points" not in params:
            entry = {**entry, "litellm_params": {**params, "cache_control_injection_points": points}}
        out.append(entry)
    return out


def _router_key_path(data: Mapping[str, Any], key: str) -> str:
    """Where a router setting was written: router_settings, or litellm_settings (request_timeout too)."""
    if key in (data.get("router_settings") or {}):
        return f"router_settings.{key}"
    return "litellm_settings.request_timeout" if key == "timeout" else f"litellm_settings.{key}"


def _litellm_store(params: Mapping[str, Any], where: str, path: str, env: Mapping[str, str]) -> dict[str, Any]:
    kind = params.get("type", "redis" if params.get("host") or params.get("url") else "local")
    if kind in _REDIS_SEMANTIC:
        kind = "redis"
    elif kind in _QDRANT_SEMANTIC:
        kind = "local"  # the answers; the vectors go to Qdrant (see _litellm_semantic)
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
        for ours, theirs in (("ssl", "ssl"), ("max_connections", "max_connections"), ("timeout", "socket_timeout")):
            if params.get(theirs) is not None:
                store[ours] = params[theirs]
        if mapped == "redis-cluster":
            store["startup_nodes"] = _nodes(params.get("redis_startup_nodes") or params.get("startup_nodes"))
        if mapped == "redis-sentinel":
            store["service_name"] = params.get("service_name")
            store["sentinels"] = _nodes(params.get("sentinel_nodes"))
            if params.get("sentinel_password") is not None:
                store["sentinel_password"] = params["sentinel_password"]
    elif mapped == "gcs":
        store["bucket"] = params.get("gcs_bucket_name")
        for ours, theirs in (("service_account_file", "gcs_path_service_account"), ("prefix", "gcs_path")):
            if params.get(theirs) is not None:
                store[ours] = params[theirs]
    elif mapped == "azure-blob":
        store["container"] = params.get("azure_blob_container")
        if params.get("azure_account_url") is not None:
            store["account_url"] = params["azure_account_url"]
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
    return store


def _semantic_qdrant(params: Mapping[str, Any], where: str, path: str) -> dict[str, Any]:
    """`cache.semantic` for a `qdrant-semantic` type: the vectors in the Qdrant at `qdrant_api_base`."""
    url = params.get("qdrant_api_base")
    if not url:
        raise ConfigError(f"{where}: {path}.qdrant_api_base: required for type qdrant-semantic")
    index: dict[str, Any] = {"type": "qdrant", "url": url}
    for ours, theirs in (("api_key", "qdrant_api_key"), ("collection_name", "qdrant_collection_name")):
        if params.get(theirs) is not None:
            index[ours] = params[theirs]
    semantic: dict[str, Any] = {"index": index}
    if params.get("similarity_threshold") is not None:
        semantic["threshold"] = params["similarity_threshold"]
    return semantic


def _litellm_semantic(
    data: Mapping[str, Any],
    params: Mapping[str, Any],
    store: Mapping[str, Any],
    where: str,
    notes: list[str],
    env: Mapping[str, str],
) -> dict[str, Any]:
    path = "litellm_settings.cache_params"
    if params.get("type") in _QDRANT_SEMANTIC:
        semantic = _semantic_qdrant(params, where, path)
        notes.append(
            f"replaced: {path}.type qdrant-semantic keeps the answers in Qdrant; here the vectors go to Qdrant "
            "and the answers to this process's memory store (set cache.store to share them between pods)"
        )
        model_key = "qdrant_semantic_cache_embedding_model"
    else:
        semantic = _semantic_redis(store, params.get("similarity_threshold"), where, path)
        name = params.get("redis_semantic_cache_index_name")
        if name is not None:  # its own index over its own rows: two names never search each other's
            semantic["index"].update(index_name=name, prefix=f"{name}:")
        model_key = "redis_semantic_cache_embedding_model"
    model = params.get(model_key)
    if model is not None:
        embedder = embedder_for(str(model), data.get("model_list"), env)
        if isinstance(embedder, str):
            notes.append(f"replaced: {path}.{model_key} ({embedder}): {_LOCAL_EMBEDS}")
        else:
            semantic["embedder"] = embedder
    return semantic


_LOCAL_EMBEDS = "the local all-MiniLM-L6-v2 embeds instead"
_OPENAI_COMPATIBLE = {
    "openai",
    "hosted_vllm",
    "vllm",
    "lm_studio",
    "together_ai",
    "fireworks_ai",
    "mistral",
    "deepseek",
}
"""LiteLLM provider prefixes whose embeddings are OpenAI's `POST {api_base}/embeddings` (the others:
only `openai` has a base URL we know, so they need the entry's `api_base`)."""


def embedder_for(name: str, model_list: Any, env: Mapping[str, str]) -> dict[str, Any] | str:
    """`cache.semantic.embedder` for an embedding model a config names: the `model_list` entry of
    that name (its api_base, api_key and model), or else an OpenAI model (OPENAI_API_KEY,
    OPENAI_BASE_URL). A string says why none can be used (the caller falls back to the local model)."""
    entry = next((e for e in model_list or [] if isinstance(e, Mapping) and e.get("model_name") == name), None)
    params = entry.get("litellm_params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping):
        params = {"model": name}
    prefix, sep, model = str(params.get("model") or name).partition("/")
    if not sep:
        prefix, model = "openai", prefix
    resolved = {key: expand_optional(value, env) if isinstance(value, str) else value for key, value in params.items()}
    base = resolved.get("api_base")
    if prefix == "openai":
        base = base or env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_BASE")
    elif prefix not in _OPENAI_COMPATIBLE:
        return f"{name!r} is a {prefix} model, not an OpenAI-compatible /embeddings endpoint"
    elif not base:
        return f"{name!r} has no api_base"
    embedder: dict[str, Any] = {"type": "openai", "model": model}
    if base:
        embedder["base_url"] = str(base).rstrip("/")
    api_key = resolved.get("api_key") if "api_key" in resolved else env.get("OPENAI_API_KEY")
    if api_key:
        embedder["api_key"] = api_key
    return embedder


def _injection_points(points: Any, where: str, path: str) -> dict[str, Any] | None:
    """`cache.prompt_caching` for LiteLLM's `cache_control_injection_points` list (None: not set)."""
    if points is None:
        return None
    if not isinstance(points, list):
        raise ConfigError(f"{where}: {path}: expected a list such as [{{location: message, role: system}}]")
    return {"anthropic": {"mode": "breakpoints", "points": points}}


def _litellm_general(general: Any, where: str) -> dict[str, Any]:
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
    return out
