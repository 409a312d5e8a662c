"""The engine's settings (the keyword arguments of `Cache(...)`, validated by `CacheSettings`) and its counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._entry import COMPLETE_ANSWERS
from ._hooks import Hooks
from ._keys import KeyBuilder, ScopeFunction, resolve_key_builder, validate_scope
from ._prompt_caching import PromptCaching


class CacheSettings(BaseModel):
    """Engine settings: the keyword arguments of `Cache(...)` (which repeats their defaults for IDEs) and the
    `cache:` section of a config file validate through this model."""

    # Every number finite: `ttl: .inf` made entries no hit can serve, `stale_if_error: .inf` Redis writes fail.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    ttl: float | None = Field(600.0, description="Seconds an entry lives; None keeps it until evicted.")
    key_prefix: str = Field("", description="Prepended to every key; change it to invalidate everything.")
    scope: Any = Field(
        "credential",
        description="'credential', 'shared', 'header:<name>', or a scope function (or its dotted path) that "
        "returns a request's identity.",
    )
    anonymous: Literal["bypass", "shared"] = Field(
        "bypass", description="Requests with no identity the scope can read: not cached, or sharing one scope."
    )
    ignored_fields: tuple[str, ...] = Field((), description="Extra body fields that never change the key.")
    key_builder: Any = Field(None, description="Callable or dotted path `pkg.mod:func`.")
    mode: Literal["default", "opt_in"] = "default"
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_response_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_stored_items: int | None = Field(
        256,
        gt=0,
        description="The most entries one list request (an embeddings `input` list, Gemini's batchEmbedContents) "
        "stores, one per item: the items past it are answered but not stored (`not_stored` reason `item_cap`), so "
        "no caller writes 2,048 entries with one request. None: no bound.",
    )
    capture_stream_usage: bool = Field(
        True, description="Ask OpenAI-style streams for their usage chunk (hidden from callers who did not ask)."
    )
    coalesce: bool = True
    coalesce_timeout: float = Field(120.0, gt=0)
    distributed_lock: bool = Field(
        True, description="With a store that can lock (Redis), one pod per key goes upstream; the others wait."
    )
    lock_ttl: float = Field(30.0, gt=0, description="Seconds a pod's lock on a key lives if it is never released.")
    lock_wait: float = Field(
        30.0, gt=0, description="Most seconds a miss waits for another pod's answer before going upstream itself."
    )
    cacheable_statuses: frozenset[int] = frozenset({200})
    upstream_cache_control: Literal["honour", "ignore"] = Field(
        "honour",
        description="Whether an upstream answer's Cache-Control is read: `no-store` is not stored, `private` "
        "only in an entry scoped to the caller's credential, `s-maxage`/`max-age` cut the TTL. `ignore` for an "
        "upstream that sends them with every answer (a framework's default), not about one answer.",
    )
    cache_fallbacks: bool = Field(
        False,
        description="Store answers a router's fallback group gave in place of the requested one "
        "(by default they are served but not stored, so the requested model answers again once it recovers).",
    )
    fallback_ttl: float | None = Field(None, gt=0, description="Seconds a stored fallback answer lives (default: ttl).")
    stale_if_error: float = Field(
        0.0,
        ge=0,
        description="Seconds past its TTL an entry is kept and served (`x-cache: STALE`) when the upstream "
        "fails: a 5xx, a timeout, a connection error. 0: never (a request may still ask, "
        "`Cache-Control: stale-if-error=N`).",
    )
    max_ttl: float | None = Field(
        30 * 24 * 3600.0,
        gt=0,
        description="The longest lifetime a caller may ask for (`x-cache-ttl`, the body's `cache.ttl`, "
        "`Cache-Control: stale-if-error=N`): longer asks are cut to it, so no caller can keep entries in a "
        "shared store for ever. None: no bound. Settings and hooks are the operator's and are not cut.",
    )
    prompt_caching: PromptCaching = Field(
        default_factory=PromptCaching,
        description="Provider-native prompt caching hints added to requests on their way upstream.",
    )

    hooks: Any = Field(
        None,
        description="Callables (or dotted paths) per hook point: {before_lookup: [...], before_forward: [...], "
        "after_answer: [...], on_hit: [...]}, or a `Hooks`.",
    )
    hook_timeout: float = Field(
        0.05, gt=0, description="Seconds a hook may take; one that overruns (or raises) is logged and skipped."
    )

    @field_validator("hooks")
    @classmethod
    def _hooks(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, Hooks):
            Hooks(value)  # a typo in a dotted path or a point fails here
        return value

    @field_validator("cacheable_statuses")
    @classmethod
    def _complete_answers(cls, value: frozenset[int]) -> frozenset[int]:
        """A hit replays the status with the body alone: only a status of a complete answer is one to store."""
        wrong = sorted(value - COMPLETE_ANSWERS)
        if wrong:
            raise ValueError(
                f"cacheable_statuses may name 200 and 201 only, got {wrong}: a hit replays the status with the "
                "body and none of the upstream's other headers (202 is not done, 203 a proxy's rewrite, 204 and "
                "205 hold no content, 206 a part, a 3xx is no answer without its Location)"
            )
        return value

    @field_validator("ttl")
    @classmethod
    def _positive_ttl(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("ttl must be a positive number of seconds, or null for no expiry")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: Any) -> str | ScopeFunction:
        return validate_scope(value)

    @field_validator("key_builder")
    @classmethod
    def _key_builder(cls, value: Any) -> KeyBuilder | None:
        if value is not None and not (callable(value) or isinstance(value, str)):
            raise ValueError("key_builder must be a callable or a dotted path 'package.module:function'")
        return resolve_key_builder(value)


@dataclass
class CacheStats:
    """Counters of one Cache instance (telemetry exports richer views of the same events)."""

    hits: int = 0
    misses: int = 0
    refreshes: int = 0
    bypasses: int = 0
    stored: int = 0
    not_stored: int = 0
    store_errors: int = 0
    coalesced: int = 0
    lock_waits: int = 0
    """Misses that found another pod holding the key's lock and waited for its answer."""
    lock_hits: int = 0
    """Of those, the ones answered from the entry the other pod stored."""
    invalid_entries: int = 0
    oversized: int = 0
    semantic_hits: int = 0
    """Hits served from a similar prompt's answer (counted in `hits` too)."""
    semantic_errors: int = 0
    """Embedder or vector index failures (the request went upstream)."""
    semantic_verifications: int = 0
    """Bounded mode: semantic candidates sent upstream so a judge compares their stored answer (misses too)."""
    stale: int = 0
    """Entries past their TTL served because the upstream failed (`stale_if_error`)."""
    withdrawn: int = 0
    """Entries stored at their stream's terminal event, then deleted: the stream went on with what may
    not follow that event (an error, more content)."""
    coalesce_waiting: int = 0
    """A gauge, not a counter: misses now waiting on another miss's call for the same key in this
    process (for tests and telemetry; each wait adds one when it starts and takes it back when it ends)."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


__all__ = ["CacheSettings", "CacheStats"]
