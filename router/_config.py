"""Router configuration: pydantic models and loaders for three config forms.

* native:   ``groups: {name: {deployments: [...]}}`` plus ``settings:``
* LiteLLM:  ``model_list:`` with ``litellm_params`` plus ``router_settings:``
* Portkey:  nested ``strategy: {mode: fallback|loadbalance}`` / ``targets: [...]``

``load_config`` detects the form. Validation errors name the field and the fix.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import _litellm as litellm
from .._breakpoints import InjectionPoint
from .._wire import UnsetVariable, expand_optional, masked_url
from .._yaml import YamlError, read_yaml
from ._errors import DEFAULT_COOLDOWN_MAX

Family = Literal["openai", "anthropic", "gemini", "azure"]

#: LiteLLM provider prefixes and the API family each speaks. Anything else that
#: is OpenAI-compatible (vllm, groq, together_ai, ...) maps to "openai".
PREFIX_FAMILIES: dict[str, Family] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",
    "azure_ai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "hosted_vllm": "openai",
    "vllm": "openai",
    "groq": "openai",
    "together_ai": "openai",
    "deepseek": "openai",
    "mistral": "openai",
    "fireworks_ai": "openai",
    "openrouter": "openai",
    "xai": "openai",
    "ollama_chat": "openai",
    "lm_studio": "openai",
}

DEFAULT_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}

#: LiteLLM routing_strategy names → ours.
STRATEGY_ALIASES: dict[str, str] = {
    "simple-shuffle": "weighted",
    "weighted": "weighted",
    "least-busy": "least-busy",
    "latency-based-routing": "latency",
    "latency": "latency",
    "usage-based-routing": "usage",
    "usage-based-routing-v2": "usage",
    "usage": "usage",
}

#: LiteLLM providers that are not plain HTTPS + API key (request signing, OAuth, other wire formats).
#: Their deployments are skipped with a warning rather than sent somewhere wrong.
UNSUPPORTED_PREFIXES = {
    "bedrock",
    "sagemaker",
    "vertex_ai",
    "vertex_ai_beta",
    "huggingface",
    "cohere",
    "replicate",
    "ollama",
    "palm",
    "ai21",
    "nlp_cloud",
    "aleph_alpha",
    "petals",
    "watsonx",
    "cloudflare",
    "predibase",
}

log = logging.getLogger("llm_cache.router")


class ConfigError(ValueError):
    """A config could not be loaded; the message names the field and the fix."""


def resolve_secret(value: Any, field: str, environ: Mapping[str, str] | None = None) -> Any:
    """Resolve environment references in a config string, as the gateway's config loader does
    (`llm_cache._wire.expand_optional`: ``os.environ/NAME``, ``${NAME}``, ``${NAME:-default}``); an
    unset ``os.environ/NAME`` is None, so the field decides whether it was required."""
    if not isinstance(value, str):
        return value
    try:
        return expand_optional(value, os.environ if environ is None else environ)
    except UnsetVariable as unset:
        raise ConfigError(
            f"{field}: environment variable {unset.name!r} is not set "
            f"(referenced as ${{{unset.name}}}; write ${{{unset.name}:-default}} for a fallback)"
        ) from None


class Deployment(BaseModel):
    """One concrete place a model group's request can be sent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = ""
    family: Family = "openai"
    model: str = Field(min_length=1, description="the real model name sent to the provider")
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    weight: float | None = Field(default=None, ge=0, description="relative share; default: rpm, tpm or 1")
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_parallel_requests: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    order: int = 0
    drop_params: bool | None = Field(
        default=None, description="translated requests: drop fields this deployment cannot honour (default: settings)"
    )
    cache_control_injection_points: tuple[InjectionPoint, ...] | None = Field(
        default=None,
        description="Anthropic deployments: prompt-caching breakpoints placed on what is sent to it, "
        "in LiteLLM's form ({location: message, role: system}), unless the request has its own",
    )

    @model_validator(mode="after")
    def _defaults(self) -> Deployment:
        if self.api_base is None:
            if self.family == "azure":
                raise ValueError("api_base is required for azure deployments (https://NAME.openai.azure.com)")
            self.api_base = DEFAULT_BASES[self.family]
        self.api_base = self.api_base.rstrip("/")
        if self.family == "azure" and not self.api_version:
            self.api_version = "2024-10-21"
        if not self.id:
            self.id = self.default_id
        return self

    @property
    def default_id(self) -> str:
        """`family:model@api_base`, the id of a deployment the config gave none: it names the deployment
        in spans, metric labels and log lines, so a password in the URL's user info (or a secret query
        value) is masked, as `check-config` masks it."""
        assert self.api_base is not None
        base = masked_url(self.api_base) if "@" in self.api_base or "?" in self.api_base else self.api_base
        return f"{self.family}:{self.model}@{base}"

    @property
    def public_id(self) -> str:
        """The id callers see (`x-router-deployment`, kept in cache entries and replayed to every caller):
        a default id names its `api_base` by a digest, so internal hosts are never shown; an id the
        config gave is shown as given."""
        assert self.id is not None and self.api_base is not None
        default = self.default_id
        if not self.id.startswith(default):
            return self.id
        named = default[len(f"{self.family}:{self.model}@") :]  # the api_base, its password masked
        digest = hashlib.sha256(named.encode()).hexdigest()[:12]
        return f"{self.family}:{self.model}@{digest}{self.id[len(default) :]}"


class ModelGroup(BaseModel):
    """A public model name (what clients send, and what cache keys use) and its deployments."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    deployments: list[Deployment] = Field(min_length=1)
    routing_strategy: str | None = None

    @field_validator("routing_strategy")
    @classmethod
    def _strategy(cls, v: str | None) -> str | None:
        return None if v is None else _check_strategy(v)


def _check_strategy(v: str) -> str:
    if v not in STRATEGY_ALIASES:
        raise ValueError(f"unknown routing strategy {v!r}; use one of {sorted(STRATEGY_ALIASES)}")
    return STRATEGY_ALIASES[v]


def _fallback_map(v: Any) -> dict[str, list[str]]:
    """Accept LiteLLM's ``[{group: [fallbacks]}]`` list form and a plain mapping."""
    if v is None:
        return {}
    if isinstance(v, Mapping):
        items = [v]
    elif isinstance(v, list):
        items = v
    else:
        raise ValueError("expected a list like [{gpt-4o: [gpt-4o-mini]}] or a mapping")
    out: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError(f"each entry must be a mapping {{group: [fallback, ...]}}, got {item!r}")
        for k, targets in item.items():
            if isinstance(targets, str):
                targets = [targets]
            out.setdefault(str(k), []).extend(str(t) for t in targets)
    return out


class RouterSettings(BaseModel):
    """Behaviour shared by all groups. Field names follow LiteLLM's ``router_settings`` where they overlap."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    routing_strategy: str = "weighted"
    num_retries: int = Field(default=2, ge=0)
    timeout: float | None = Field(default=None, gt=0, description="per-attempt timeout, seconds")
    deadline: float | None = Field(default=None, gt=0, description="total time budget per request, seconds")
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    context_window_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    content_policy_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    default_fallbacks: list[str] = Field(default_factory=list)
    allowed_fails: int = Field(default=3, ge=1)
    allowed_fails_window: float = Field(default=60.0, gt=0)
    cooldown_time: float = Field(default=60.0, ge=0)
    retry_on_status: list[int] = Field(default_factory=lambda: [408, 409, 429, 500, 502, 503, 504, 529])
    retry_after_max: float = Field(default=60.0, ge=0, description="longest Retry-After the router sleeps for")
    cooldown_max: float = Field(
        default=DEFAULT_COOLDOWN_MAX,
        ge=0,
        description="bound on any provider-supplied time (Retry-After): cooldowns and retry-after sent to clients",
    )
    max_read_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="the most of an answer the router reads (and decodes) to judge or translate it; "
        "a longer one is passed on as it streams, or, when it must be translated, is a failed attempt",
    )
    unknown_models: Literal["passthrough", "refuse"] = Field(
        default="passthrough",
        description="a request whose model no group serves: send it on unchanged, or answer 404 (400 without a model)",
    )
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=8.0, ge=0)
    backoff_jitter: float = Field(default=0.5, ge=0)
    affinity: bool = True
    affinity_ttl: float = Field(default=300.0, gt=0)
    latency_tolerance: float = Field(default=0.2, ge=0)
    latency_alpha: float = Field(default=0.3, gt=0, le=1)
    latency_max_age: float = Field(
        default=60.0,
        gt=0,
        description="seconds after which a deployment sent nothing has its latency figures forgotten: "
        "it is explored again, and its next answer starts them afresh",
    )
    model_group_alias: dict[str, str] = Field(default_factory=dict)
    drop_params: bool = Field(
        default=False,
        description="a translated request drops the fields its deployment cannot honour instead of a 400 naming them",
    )

    @field_validator("routing_strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return _check_strategy(v)

    @field_validator("fallbacks", "context_window_fallbacks", "content_policy_fallbacks", mode="before")
    @classmethod
    def _fallbacks(cls, v: Any) -> dict[str, list[str]]:
        return _fallback_map(v)

    @field_validator("default_fallbacks", mode="before")
    @classmethod
    def _default_fallbacks(cls, v: Any) -> list[str]:
        return [v] if isinstance(v, str) else (v or [])


def _same(a: Deployment, b: Deployment) -> bool:
    """Whether two deployments are one: every field but the id alike."""
    return a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"})


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, ModelGroup]
    settings: RouterSettings = Field(default_factory=RouterSettings)

    @model_validator(mode="after")
    def _distinct_ids(self) -> RouterConfig:
        """One id, one deployment: the router keeps one state (breaker, load, the deployment it sends
        with) per id, so a deployment listed in two groups is shared, and two that differ in anything (a
        key, above all) must not be. A default id (`family:model@api_base`) that two different
        deployments would share gets `#2`, `#3`, ... in config order; an explicit one is an error."""
        seen: dict[str, Deployment] = {}
        for group in self.groups.values():
            for dep in group.deployments:
                first = seen.setdefault(dep.id, dep)
                if first is dep or _same(first, dep):
                    continue
                if dep.id != dep.default_id:
                    raise ValueError(f"deployment id {dep.id!r} names two different deployments; give each its own")
                base, n = dep.id, 2
                while f"{base}#{n}" in seen and not _same(seen[f"{base}#{n}"], dep):
                    n += 1
                dep.id = f"{base}#{n}"
                seen.setdefault(dep.id, dep)
        return self

    @model_validator(mode="after")
    def _check_refs(self) -> RouterConfig:
        s = self.settings
        for field in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            for src, targets in getattr(s, field).items():
                for t in targets:
                    if t not in self.groups:
                        raise ValueError(
                            f"settings.{field}[{src!r}] names group {t!r}, which is not defined; "
                            f"defined groups: {sorted(self.groups)}"
                        )
        for alias, target in s.model_group_alias.items():
            if target not in self.groups:
                raise ValueError(f"settings.model_group_alias[{alias!r}] names undefined group {target!r}")
        for t in s.default_fallbacks:
            if t not in self.groups:
                raise ValueError(f"settings.default_fallbacks names undefined group {t!r}")
        return self

    def group_for(self, model: str | None) -> ModelGroup | None:
        if model is not None:
            if model in self.groups:
                return self.groups[model]
            alias = self.settings.model_group_alias.get(model)
            if alias is not None:
                return self.groups[alias]
        return self.groups.get("*")


# --------------------------------------------------------------------------- loaders


def load_config(source: str | Path | Mapping[str, Any], environ: Mapping[str, str] | None = None) -> RouterConfig:
    """Load a config from a YAML path, YAML text or a mapping, in any of the three forms."""
    data: Any
    if isinstance(source, Mapping):
        data = source
    else:
        text, where = source, "router config"
        if isinstance(source, Path) or (
            isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
        ):
            where = str(source)
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(
                    f"{where}: cannot read the file ({getattr(error, 'strerror', None) or error})"
                ) from None
        try:
            data = read_yaml(str(text))
        except YamlError as error:
            raise ConfigError(f"{where}: {error}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("router config must be a mapping at the top level")
    try:
        if "model_list" in data:
            return from_litellm(data, environ)
        if "targets" in data or "strategy" in data:
            return from_portkey(data, environ)
        if "groups" in data:
            return _native(data, environ)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    raise ConfigError("router config needs one of: model_list (LiteLLM), targets (Portkey-like), groups (native)")


def _explain(exc: ValidationError, also: Any = ()) -> str:
    """One line per error; an unknown setting gets `did you mean` (among ours and `also`'s keys)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        hint = ""
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            hint = litellm.did_you_mean(str(err["loc"][0]), [*RouterSettings.model_fields, *also])
        lines.append(f"{loc}: {err['msg']}{hint}")
    return "invalid router config:\n  " + "\n  ".join(lines)


def _deployment(raw: Mapping[str, Any], where: str, environ: Mapping[str, str] | None) -> Deployment:
    resolved = {key: resolve_secret(value, f"{where}.{key}", environ) for key, value in raw.items()}
    try:
        return Deployment(**resolved)
    except ValidationError as exc:
        unset = [f"{where}.{k} ({v.strip()})" for k, v in raw.items() if isinstance(v, str) and resolved[k] is None]
        hint = f"\n  (environment variables not set, read as null: {', '.join(unset)})" if unset else ""
        raise ConfigError(_explain(exc).replace("\n  ", f"\n  {where}.") + hint) from None


def _native(data: Mapping[str, Any], environ: Mapping[str, str] | None) -> RouterConfig:
    groups: dict[str, ModelGroup] = {}
    for name, g in (data.get("groups") or {}).items():
        if not isinstance(g, Mapping):
            raise ConfigError(f"groups.{name}: expected a mapping with 'deployments'")
        deps = [
            _deployment(d, f"groups.{name}.deployments[{i}]", environ) for i, d in enumerate(g.get("deployments") or [])
        ]
        groups[name] = ModelGroup(name=name, deployments=deps, routing_strategy=g.get("routing_strategy"))
    return RouterConfig(groups=groups, settings=RouterSettings(**(data.get("settings") or {})))


def split_litellm_model(model: str) -> tuple[Family, str]:
    """``openai/gpt-4o-mini`` → ("openai", "gpt-4o-mini"); a bare name is OpenAI's."""
    prefix, sep, rest = model.partition("/")
    if sep and prefix in PREFIX_FAMILIES:
        return PREFIX_FAMILIES[prefix], rest
    if model.startswith("claude"):
        return "anthropic", model
    if model.startswith("gemini"):
        return "gemini", model
    return "openai", model


#: litellm_params keys we use; others (temperature, ...) are accepted and ignored.
_LITELLM_KEYS = (
    "api_base",
    "api_key",
    "api_version",
    "rpm",
    "tpm",
    "weight",
    "order",
    "timeout",
    "max_parallel_requests",
    "drop_params",
    "cache_control_injection_points",
)


def from_litellm(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> RouterConfig:
    groups: dict[str, list[Deployment]] = {}
    for i, entry in enumerate(data.get("model_list") or []):
        where = f"model_list[{i}]"
        if not isinstance(entry, Mapping) or "model_name" not in entry:
            raise ConfigError(f"{where}: each entry needs model_name and litellm_params")
        params = entry.get("litellm_params")
        if not isinstance(params, Mapping) or not params.get("model"):
            raise ConfigError(f"{where}.litellm_params.model: required (e.g. openai/gpt-4o-mini)")
        prefix = str(params["model"]).partition("/")[0]
        if prefix in UNSUPPORTED_PREFIXES:
            log.warning(
                "router: %s.litellm_params.model %r: provider %r is not supported by the router "
                "(needs request signing or another wire format); deployment skipped",
                where,
                params["model"],
                prefix,
            )
            continue
        family, model = split_litellm_model(str(params["model"]))
        raw: dict[str, Any] = {"family": family, "model": model}
        for key in _LITELLM_KEYS:
            # LiteLLM accepts rpm/tpm both inside litellm_params and beside it.
            if key in params:
                raw[key] = params[key]
            elif key in entry:
                raw[key] = entry[key]
        info = entry.get("model_info") or {}
        if isinstance(info, Mapping) and info.get("id"):
            raw["id"] = str(info["id"])
        groups.setdefault(str(entry["model_name"]), []).append(_deployment(raw, f"{where}.litellm_params", environ))
    rs = litellm.router_settings(data)
    try:
        settings = RouterSettings(**rs)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, litellm.ROUTER_SETTINGS).replace("\n  ", "\n  router_settings.")) from None
    return RouterConfig(groups={n: ModelGroup(name=n, deployments=d) for n, d in groups.items()}, settings=settings)


def from_portkey(data: Mapping[str, Any], environ: Mapping[str, str] | None = None, name: str = "*") -> RouterConfig:
    """A Portkey-like config: ``strategy.mode`` is ``loadbalance`` or ``fallback``; targets nest.

    The top level becomes group ``name`` (default ``*``: every model). A ``loadbalance`` node becomes one
    group whose deployments are its leaf targets (weighted); a ``fallback`` node becomes its first
    target's group with the later targets as ordered fallbacks.
    """
    groups: dict[str, ModelGroup] = {}
    fallbacks: dict[str, list[str]] = {}
    settings_raw = dict(data.get("settings") or {})

    def leaf(t: Mapping[str, Any], where: str) -> Deployment:
        params = dict(t.get("override_params") or {})
        provider = str(t.get("provider", "openai"))
        model = str(params.get("model") or t.get("model") or "")
        family, model = split_litellm_model(f"{provider}/{model}" if provider in PREFIX_FAMILIES else model)
        raw: dict[str, Any] = {"family": family, "model": model}
        if t.get("custom_host") or t.get("api_base"):
            raw["api_base"] = t.get("custom_host") or t.get("api_base")
        for key in ("api_key", "weight", "rpm", "tpm", "timeout", "api_version", "id"):
            if key in t:
                raw[key] = t[key]
        return _deployment(raw, where, environ)

    def node(t: Mapping[str, Any], gname: str, where: str) -> str:
        """Build the group(s) for node ``t``; return the group that requests enter."""
        if "targets" not in t:
            groups[gname] = ModelGroup(name=gname, deployments=[leaf(t, where)])
            return gname
        mode = (t.get("strategy") or {}).get("mode", "loadbalance")
        targets = t.get("targets") or []
        if not targets:
            raise ConfigError(f"{where}.targets: must list at least one target")
        if mode == "loadbalance":
            deps: list[Deployment] = []
            for i, sub in enumerate(targets):
                if "targets" in sub:
                    raise ConfigError(
                        f"{where}.targets[{i}]: nesting under loadbalance is not supported; "
                        "nest loadbalance under fallback instead"
                    )
                deps.append(leaf(sub, f"{where}.targets[{i}]"))
            groups[gname] = ModelGroup(name=gname, deployments=deps)
            return gname
        if mode != "fallback":
            raise ConfigError(f"{where}.strategy.mode: {mode!r} is not supported; use loadbalance or fallback")
        entries = [node(sub, f"{gname}#{i}" if i else gname, f"{where}.targets[{i}]") for i, sub in enumerate(targets)]
        fallbacks.setdefault(entries[0], []).extend(entries[1:])
        return entries[0]

    node(data, name, "(top)")
    codes = (data.get("strategy") or {}).get("on_status_codes")
    if codes:
        settings_raw.setdefault("retry_on_status", list(codes))
    settings_raw["fallbacks"] = {**fallbacks, **_fallback_map(settings_raw.get("fallbacks"))}
    if "retry" in data and isinstance(data["retry"], Mapping):
        settings_raw.setdefault("num_retries", data["retry"].get("attempts", 2))
        if data["retry"].get("on_status_codes"):
            settings_raw["retry_on_status"] = list(data["retry"]["on_status_codes"])
    return RouterConfig(groups=groups, settings=RouterSettings(**settings_raw))


__all__ = [
    "ConfigError",
    "Deployment",
    "Family",
    "ModelGroup",
    "RouterConfig",
    "RouterSettings",
    "from_litellm",
    "from_portkey",
    "load_config",
    "resolve_secret",
    "split_litellm_model",
]
