"""What each key of a LiteLLM proxy config means here, in one place.

A LiteLLM config is run unchanged: every key is either honoured (`Setting.ours` says what it
becomes) or reported as `ignored: <path> (<why>)`; a key LiteLLM does not have either gets
`did you mean <key>?` when one is close. `router_settings()` is the one translation of the
router's keys (`router_settings:` plus the retries, fallbacks and timeouts LiteLLM also accepts
under `litellm_settings:`), used by `router.Router()` and by the gateway that `serve` runs.

This module is neutral: it imports neither `llm_cache.middleware` nor `llm_cache.router`.
`docs/migrating-from-litellm.md` prints the catalogue as a table (`python -m llm_cache._litellm`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    """One LiteLLM key: what it becomes here (`ours`), or why it is ignored (`why`)."""

    ours: str | None = None
    why: str = ""

    @property
    def honoured(self) -> bool:
        return self.ours is not None


def use(ours: str) -> Setting:
    return Setting(ours=ours)


def skip(why: str) -> Setting:
    return Setting(why=why)


_TO_ROUTER = "the router, as the same key under router_settings (router_settings wins)"
_CALLBACKS = skip("LiteLLM's logging callbacks are not run; traces and metrics are OpenTelemetry and Prometheus")
_NO_DB = skip("no database: the file is the whole configuration")
_NO_KEYS = skip("virtual keys, budgets and teams are not offered: the master key is the only key")
_ONE_AUTH = skip("the master key is the only credential check")
_SHARED_STATE = skip("the router's cooldowns and usage are per process; nothing is shared through Redis")

CACHE_PARAMS: dict[str, Setting] = {
    "type": use(
        "cache.store.type: local -> memory, redis, redis-semantic -> redis + cache.semantic, s3, gcs, azure-blob, "
        "disk, qdrant-semantic -> memory + cache.semantic (index qdrant)"
    ),
    "host": use("cache.store.host (REDIS_HOST when unset)"),
    "port": use("cache.store.port (REDIS_PORT when unset)"),
    "password": use("cache.store.password (REDIS_PASSWORD when unset)"),
    "username": use("cache.store.username (REDIS_USERNAME when unset)"),
    "url": use("cache.store.url (REDIS_URL when unset)"),
    "ssl": use("cache.store.ssl"),
    "namespace": use("cache.key_prefix '<namespace>:'"),
    "ttl": use("cache.ttl"),
    "default_in_redis_ttl": use("cache.ttl when ttl is unset"),
    "default_in_memory_ttl": use("cache.ttl when ttl and default_in_redis_ttl are unset"),
    "mode": use("default_off -> cache.mode: opt_in (a request caches only when it asks)"),
    "supported_call_types": use("cache.endpoints: the endpoints whose answers are cached"),
    "max_connections": use("cache.store.max_connections (Redis)"),
    "socket_timeout": use("cache.store.timeout (Redis)"),
    "redis_startup_nodes": use("cache.store: type redis-cluster, startup_nodes"),
    "startup_nodes": use("cache.store: type redis-cluster, startup_nodes"),
    "service_name": use("cache.store: type redis-sentinel, service_name"),
    "sentinel_nodes": use("cache.store: type redis-sentinel, sentinels"),
    "sentinel_password": use("cache.store.sentinel_password"),
    "max_size_in_memory": use("cache.store.max_entries (memory)"),
    "disk_cache_dir": use("cache.store.directory (disk)"),
    "s3_bucket_name": use("cache.store.bucket"),
    "s3_region_name": use("cache.store.region"),
    "s3_endpoint_url": use("cache.store.endpoint_url"),
    "s3_aws_access_key_id": use("cache.store.aws_access_key_id"),
    "s3_aws_secret_access_key": use("cache.store.aws_secret_access_key"),
    "s3_aws_session_token": use("cache.store.aws_session_token"),
    "s3_path": use("cache.store.prefix"),
    "s3_api_version": skip("boto3's default API version is used"),
    "s3_use_ssl": skip("the scheme of s3_endpoint_url decides"),
    "s3_verify": skip("certificates are always verified"),
    "s3_config": skip("boto3's defaults apply"),
    "similarity_threshold": use("cache.semantic.threshold"),
    "redis_semantic_cache_embedding_model": use(
        "cache.semantic.embedder: the model_list entry of that name (OpenAI-compatible /embeddings)"
    ),
    "redis_semantic_cache_index_name": use("cache.semantic.index.index_name"),
    "redis_semantic_cache_use_async": skip("the semantic cache is always asynchronous"),
    "redis_flush_size": skip("writes are not batched: each answer is stored when it completes"),
    "gcs_bucket_name": use("cache.store: type gcs, bucket"),
    "gcs_path_service_account": use("cache.store.service_account_file (gcs)"),
    "gcs_path": use("cache.store.prefix (gcs)"),
    "azure_account_url": use("cache.store: type azure-blob, account_url"),
    "azure_blob_container": use("cache.store.container (azure-blob)"),
    "qdrant_api_base": use("cache.semantic.index: type qdrant, url"),
    "qdrant_api_key": use("cache.semantic.index.api_key (qdrant)"),
    "qdrant_collection_name": use("cache.semantic.index.collection_name (qdrant)"),
    "qdrant_quantization_config": skip("vectors are stored as float32, unquantized"),
    "qdrant_semantic_cache_embedding_model": use(
        "cache.semantic.embedder: the model_list entry of that name (OpenAI-compatible /embeddings)"
    ),
}
"""`litellm_settings.cache_params`."""

LITELLM_SETTINGS: dict[str, Setting] = {
    "cache": use("cache.enabled"),
    "cache_params": use("the cache's store and settings (see cache_params)"),
    "num_retries": use(_TO_ROUTER),
    "request_timeout": use("the router's per-attempt timeout (router_settings.timeout wins)"),
    "fallbacks": use(_TO_ROUTER),
    "context_window_fallbacks": use(_TO_ROUTER),
    "content_policy_fallbacks": use(_TO_ROUTER),
    "default_fallbacks": use(_TO_ROUTER),
    "allowed_fails": use(_TO_ROUTER),
    "cooldown_time": use(_TO_ROUTER),
    "drop_params": use(_TO_ROUTER),
    "callbacks": _CALLBACKS,
    "success_callback": _CALLBACKS,
    "failure_callback": _CALLBACKS,
    "service_callback": _CALLBACKS,
    "langfuse_default_tags": _CALLBACKS,
    "set_verbose": skip("use llm-cache serve --log-level debug"),
    "json_logs": skip("log lines are plain text (time, level, logger, message)"),
    "turn_off_message_logging": skip("prompts and answers are never logged"),
    "redact_user_api_key_info": skip("API keys are never logged; entries are scoped by a hash of the key"),
    "redact_messages_in_exceptions": skip("prompts and answers are never logged"),
    "modify_params": skip("bodies are forwarded as written (the router translates between API families)"),
    "max_parallel_requests": skip("set max_parallel_requests per deployment in litellm_params"),
    "force_ipv4": skip("the system resolver decides"),
    "ssl_verify": skip("certificates are always verified"),
    "enable_preview_features": skip("not applicable"),
    "return_response_headers": skip("the provider's headers are always relayed"),
    "max_budget": _NO_KEYS,
    "budget_duration": _NO_KEYS,
    "max_internal_user_budget": _NO_KEYS,
    "internal_user_budget_duration": _NO_KEYS,
    "default_team_settings": _NO_KEYS,
    "key_generation_settings": _NO_KEYS,
    "upperbound_key_generate_params": _NO_KEYS,
    "default_key_generate_params": _NO_KEYS,
    "default_internal_user_params": _NO_KEYS,
}
"""`litellm_settings`."""

ROUTER_SETTINGS: dict[str, Setting] = {
    "routing_strategy": use(
        "the router's strategy: simple-shuffle, least-busy, latency-based-routing, usage-based-routing"
    ),
    "model_group_alias": use("the router's model_group_alias"),
    "num_retries": use("the router's retries per group"),
    "timeout": use("the router's per-attempt timeout"),
    "allowed_fails": use("failures before a deployment cools down"),
    "cooldown_time": use("seconds a deployment cools down"),
    "fallbacks": use("the router's fallbacks"),
    "context_window_fallbacks": use("the router's fallbacks on a context-window error"),
    "content_policy_fallbacks": use("the router's fallbacks on a content-policy refusal"),
    "default_fallbacks": use("the router's fallbacks for every group"),
    "drop_params": use("translated requests drop the fields a deployment cannot honour"),
    "redis_host": _SHARED_STATE,
    "redis_port": _SHARED_STATE,
    "redis_password": _SHARED_STATE,
    "redis_url": _SHARED_STATE,
    "cache_responses": skip("caching is litellm_settings.cache"),
    "enable_pre_call_checks": skip("context-window checks are not made before a call; context_window_fallbacks apply"),
    "optional_pre_call_checks": skip("no pre-call checks are made"),
    "routing_strategy_args": skip("strategies take latency_tolerance / latency_alpha instead"),
    "retry_policy": skip("one rule for every error: router_settings.retry_on_status"),
    "model_group_retry_policy": skip("one rule for every error: router_settings.retry_on_status"),
    "allowed_fails_policy": skip("one rule for every error: allowed_fails"),
    "disable_cooldowns": skip("set cooldown_time: 0 instead"),
    "retry_after": skip("the provider's Retry-After decides, bounded by router_settings.retry_after_max"),
    "stream_timeout": skip("timeout covers streamed attempts too"),
    "max_fallbacks": skip("every listed fallback is tried"),
    "provider_budget_config": skip("budgets are not offered"),
    "enable_tag_filtering": skip("tag routing is not offered"),
    "tag_filtering_match_any": skip("tag routing is not offered"),
    "default_max_parallel_requests": skip("set max_parallel_requests per deployment"),
    "default_litellm_params": skip("default request parameters are not applied; bodies are sent as written"),
    "set_verbose": skip("use llm-cache serve --log-level debug"),
    "debug_level": skip("use llm-cache serve --log-level debug"),
    "client_ttl": skip("one pooled client serves every deployment"),
    "polling_interval": skip("not applicable"),
    "alerting_config": skip("no alerting; watch the Prometheus metrics"),
}
"""`router_settings` (the router's own settings are accepted there too: docs/router.md)."""

GENERAL_SETTINGS: dict[str, Setting] = {
    "master_key": use("admin_key and auth.keys: the LLM routes and /cache/* need it"),
    "max_request_size_mb": use("server.max_request_bytes"),
    "database_url": _NO_DB,
    "store_model_in_db": _NO_DB,
    "store_prompts_in_spend_logs": _NO_DB,
    "disable_spend_logs": _NO_DB,
    "database_connection_pool_limit": _NO_DB,
    "database_connection_timeout": _NO_DB,
    "allow_requests_on_db_unavailable": _NO_DB,
    "disable_prisma_schema_update": _NO_DB,
    "max_response_size_mb": skip("answers are relayed whole; cache.max_response_bytes caps what is stored"),
    "alerting": skip("no alerting; watch the Prometheus metrics"),
    "alerting_threshold": skip("no alerting; watch the Prometheus metrics"),
    "alert_types": skip("no alerting; watch the Prometheus metrics"),
    "proxy_batch_write_at": _NO_DB,
    "allowed_routes": _ONE_AUTH,
    "public_routes": _ONE_AUTH,
    "admin_only_routes": _ONE_AUTH,
    "enforce_user_param": _ONE_AUTH,
    "custom_auth": _ONE_AUTH,
    "custom_key_generate": _NO_KEYS,
    "disable_master_key_return": _ONE_AUTH,
    "enable_jwt_auth": _ONE_AUTH,
    "litellm_jwtauth": _ONE_AUTH,
    "user_header_name": _ONE_AUTH,
    "key_management_system": skip("secrets come from the environment (os.environ/NAME)"),
    "key_management_settings": skip("secrets come from the environment (os.environ/NAME)"),
    "use_google_kms": skip("secrets come from the environment (os.environ/NAME)"),
    "use_azure_key_vault": skip("secrets come from the environment (os.environ/NAME)"),
    "ui_access_mode": skip("there is no admin UI"),
    "background_health_checks": skip("/health/readiness probes when asked"),
    "health_check_interval": skip("/health/readiness probes when asked"),
    "health_check_details": skip("/health/readiness probes when asked"),
    "pass_through_endpoints": skip("every provider path is passed through already"),
}
"""`general_settings`."""

LITELLM_PARAMS: dict[str, Setting] = {
    "model": use("the deployment's family (from the provider prefix) and real model name"),
    "api_base": use("the deployment's base URL"),
    "api_key": use("the deployment's key (replaces the caller's)"),
    "api_version": use("the Azure deployment's api-version"),
    "rpm": use("the deployment's share of traffic and its rate limit"),
    "tpm": use("the deployment's share of traffic"),
    "weight": use("the deployment's share of traffic"),
    "order": use("deployments of a lower order are tried first"),
    "timeout": use("the deployment's per-attempt timeout"),
    "max_parallel_requests": use("the deployment's concurrency limit"),
    "drop_params": use("translated requests drop fields this deployment cannot honour"),
    "cache_control_injection_points": use("Anthropic breakpoints for requests this deployment answers"),
    "stream_timeout": skip("timeout covers streamed attempts too"),
    "max_retries": skip("the router retries (num_retries); the provider call itself is not retried"),
    "organization": skip("send OpenAI-Organization from the client"),
    "input_cost_per_token": skip("costs are not computed"),
    "output_cost_per_token": skip("costs are not computed"),
    "tags": skip("tag routing is not offered"),
}
"""`model_list[].litellm_params`. Other keys there are default request parameters (temperature, ...),
which are not applied: a caller's body is sent as written."""

MODEL_INFO: dict[str, Setting] = {
    "id": use(
        "the deployment's id (in x-router-deployment and the router's metrics; without one, callers see "
        "`family:model@<digest of api_base>`)"
    ),
}
"""`model_list[].model_info`. Its other keys (mode, base_model, costs, ...) describe the model and
are not used."""

MODEL_ENTRY: dict[str, Setting] = {
    "model_name": use("the model group: what callers send as `model`, and what cache keys use"),
    "litellm_params": use("see litellm_params"),
    "model_info": use("see model_info"),
    "rpm": use("as litellm_params.rpm"),
    "tpm": use("as litellm_params.tpm"),
}
"""`model_list[]`."""

TOP_LEVEL: dict[str, Setting] = {
    "model_list": use("the router's model groups and deployments"),
    "litellm_settings": use("see litellm_settings"),
    "router_settings": use("see router_settings"),
    "general_settings": use("see general_settings"),
    "cache_control_injection_points": use("Anthropic breakpoints for every deployment (cache.prompt_caching)"),
    "environment_variables": skip("set the variables in the gateway's environment"),
    "include": skip("included files are not merged; write one file"),
}
"""The top level of the file."""

SECTIONS: dict[str, dict[str, Setting]] = {
    "": TOP_LEVEL,
    "litellm_settings": LITELLM_SETTINGS,
    "litellm_settings.cache_params": CACHE_PARAMS,
    "router_settings": ROUTER_SETTINGS,
    "general_settings": GENERAL_SETTINGS,
    "model_list[]": MODEL_ENTRY,
    "model_list[].litellm_params": LITELLM_PARAMS,
    "model_list[].model_info": MODEL_INFO,
}

CALL_TYPES: dict[str, tuple[str, ...]] = {
    "completion": (
        "chat.completions",
        "messages",
        "generate_content",
        "bedrock.converse",
        "bedrock.invoke",
        "bedrock.invoke-stream",
    ),
    "text_completion": ("completions",),
    "embedding": ("embeddings", "embed_content"),
    "responses": ("responses",),
    "rerank": ("rerank",),
    "moderation": ("moderations",),
    "transcription": ("audio.transcriptions", "audio.translations"),
}
"""LiteLLM's `supported_call_types` (each also in its `a`-prefixed async form) -> the endpoints
(`Endpoint.name`) whose answers are cached. Streams of a chat endpoint are the same call type."""

UNCACHED_CALL_TYPES = frozenset(
    {
        "speech",
        "image_generation",
        "acreate_batch",
        "_arealtime",
        "pass_through_endpoint",
        "anthropic_messages",
        "ocr",
        "search",
        "video_generation",
    }
)
"""Call types LiteLLM knows whose endpoints llm-cache does not cache (nothing to restrict)."""


def call_type_endpoints(call_types: list[Any], path: str) -> tuple[list[str], list[str]]:
    """The endpoint names `supported_call_types` selects, and notes for the call types it cannot."""
    endpoints: list[str] = []
    notes: list[str] = []
    for i, raw in enumerate(call_types):
        name = str(raw)
        base = name[1:] if name.startswith("a") and name[1:] in {*CALL_TYPES, *UNCACHED_CALL_TYPES} else name
        if base == "anthropic_messages":
            endpoints += [e for e in ("messages",) if e not in endpoints]
        elif base in CALL_TYPES:
            endpoints += [e for e in CALL_TYPES[base] if e not in endpoints]
        elif base in UNCACHED_CALL_TYPES:
            notes.append(f"ignored: {path}[{i}] {name!r} (llm-cache does not cache this call type)")
        else:
            known = sorted({*CALL_TYPES, *(f"a{c}" for c in CALL_TYPES)})
            notes.append(f"ignored: {path}[{i}] {name!r} (not a call type{did_you_mean(name, known)})")
    return endpoints, notes


def did_you_mean(key: str, known: Any) -> str:
    """`; did you mean X?` when a known key is close to `key`, else ''."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def review_section(given: Any, catalogue: Mapping[str, Setting], path: str, unknown: bool = True) -> list[str]:
    """`ignored: <path> (<why>)` for every key of `given` that is not honoured; keys the catalogue
    does not know are reported too unless `unknown` is False (someone else validates them)."""
    if not isinstance(given, Mapping):
        return []
    notes = []
    prefix = f"{path}." if path else ""
    for key in given:
        setting = catalogue.get(key)
        if (setting is not None and setting.honoured) or (setting is None and not unknown):
            continue
        why = setting.why if setting is not None else f"unknown key{did_you_mean(str(key), catalogue)}"
        notes.append(f"ignored: {prefix}{key} ({why})")
    return notes


def review(data: Mapping[str, Any], report_unknown_router_keys: bool = True) -> list[str]:
    """Notes for every key of a LiteLLM file that is not honoured, in file order. The router's own
    settings are accepted in router_settings too: the router refuses the unknown ones, naming the
    closest (`report_unknown_router_keys=False` leaves them to it)."""
    settings = data.get("litellm_settings")
    notes = review_section(data, TOP_LEVEL, "")
    notes += review_section(settings, LITELLM_SETTINGS, "litellm_settings")
    if isinstance(settings, Mapping):
        notes += review_section(settings.get("cache_params"), CACHE_PARAMS, "litellm_settings.cache_params")
    notes += review_section(data.get("router_settings"), ROUTER_SETTINGS, "router_settings", report_unknown_router_keys)
    notes += review_section(data.get("general_settings"), GENERAL_SETTINGS, "general_settings")
    for i, entry in enumerate(data.get("model_list") or []):
        if not isinstance(entry, Mapping):
            continue
        notes += review_section(entry, MODEL_ENTRY, f"model_list[{i}]")
        params = entry.get("litellm_params")
        if isinstance(params, Mapping):
            notes += _review_params(params, f"model_list[{i}].litellm_params")
        info = entry.get("model_info")
        if isinstance(info, Mapping):
            notes += [
                f"ignored: model_list[{i}].model_info.{key} (model metadata is not used)" for key in info if key != "id"
            ]
    return notes


def _review_params(params: Mapping[str, Any], path: str) -> list[str]:
    notes = []
    for key in params:
        setting = LITELLM_PARAMS.get(key)
        if setting is not None and setting.honoured:
            continue
        if setting is not None:
            why = setting.why
        else:
            close = did_you_mean(str(key), LITELLM_PARAMS)
            why = f"not used by the router{close}" if close else "default request parameters are not applied"
        notes.append(f"ignored: {path}.{key} ({why})")
    return notes


ROUTER_KEYS_IN_LITELLM_SETTINGS = (
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
    "allowed_fails",
    "cooldown_time",
    "drop_params",
)


def router_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The router's settings of a LiteLLM file: `router_settings` plus the router keys LiteLLM also
    accepts under `litellm_settings` (`request_timeout` is the per-attempt `timeout`); when both
    say, `router_settings` wins. Keys reported as ignored are left out."""
    out = dict(data.get("router_settings") or {})
    litellm = data.get("litellm_settings") or {}
    if isinstance(litellm, Mapping):
        for key in ROUTER_KEYS_IN_LITELLM_SETTINGS:
            if key in litellm and key not in out:
                out[key] = litellm[key]
        if "request_timeout" in litellm and "timeout" not in out:
            out["timeout"] = litellm["request_timeout"]
    return {key: value for key, value in out.items() if not _ignored(ROUTER_SETTINGS.get(key))}


def _ignored(setting: Setting | None) -> bool:
    return setting is not None and not setting.honoured


def table() -> str:
    """The catalogue as Markdown tables, one per section (docs/migrating-from-litellm.md)."""
    parts = []
    for path, catalogue in SECTIONS.items():
        parts.append(f"### `{path or 'top level'}`\n\n| key | here |\n| --- | --- |")
        for key, setting in catalogue.items():
            what = setting.ours if setting.ours is not None else f"ignored: {setting.why}"
            parts.append(f"| `{key}` | {what} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(table())
