"""Provider-native prompt caching: requests rewritten on their way upstream so that the provider's
own prompt cache is hit.

The exact-match cache answers a request it has seen; a provider's prompt cache makes the requests
it has *not* seen cheaper when they share a long prefix with earlier ones (a system prompt, tool
definitions, a document, the conversation so far): Anthropic bills a cached prefix at 0.1x its
input price, OpenAI at a discount of up to 90%. Two families take hints:

- Anthropic Messages: `cache_control` breakpoints on tools, the system prompt and chosen messages
  ("breakpoints"), or one top-level `cache_control` that lets Anthropic place the breakpoint on the
  last cacheable block itself ("auto").
- OpenAI chat completions and Responses: a `prompt_cache_key` shared by requests with the same
  static prefix (tools and instructions), which keeps them on the same cache shard, and
  `prompt_cache_retention`.

Rules, for every family:

- Cache keys are computed from the caller's body before any rewrite, so turning this on never
  changes what the exact cache matches.
- A request that already says how it wants to be cached (any `cache_control`, its own
  `prompt_cache_key` or `prompt_cache_retention`) keeps its own choice: the caller knows its
  prompt better than a rule does.
- A rewrite only adds hints: it never changes the prompt, so the answer is the same.

- Gemini generateContent: a long static prefix (system instruction, tools, tool config) is put in
  an explicit `cachedContents` resource once per credential and model, and requests name it
  (`CachedContents` below: it needs API calls of its own, which it asks the driver to make as the
  plan's `SideCall` actions).

Bedrock is not rewritten: its requests are signed over the body (SigV4), so a changed body would be
refused, and boto3 does not send through httpx. See docs/prompt-caching.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .._breakpoints import MAX_BREAKPOINTS, InjectionPoint, mentions_cache_control, place, role_of
from .._log_limit import LogLimit
from .._wire import GEMINI, AmbiguousCredential
from ._types import Reply, Run, SideCall, Steps
from .stores.base import Store

logger = logging.getLogger("llm_cache.middleware")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AnthropicPromptCaching(_Settings):
    mode: Literal["off", "auto", "breakpoints"] = Field(
        default="off",
        description="'auto': one top-level cache_control, Anthropic places the breakpoint; "
        "'breakpoints': cache_control on the blocks `points` name.",
    )
    ttl: Literal["5m", "1h"] = Field(
        default="5m", description="How long Anthropic keeps the prefix (1h costs more to write)."
    )
    points: tuple[InjectionPoint, ...] = Field(
        default=(InjectionPoint(location="tools"), InjectionPoint(role="system")),
        description="Breakpoints for mode 'breakpoints'; at most four are placed: tools, system, the latest messages.",
    )


class OpenAIPromptCaching(_Settings):
    prompt_cache_key: Literal["off", "prefix"] = Field(
        default="off",
        description="'prefix': a key derived from the model, tools and instructions, shared by requests "
        "that start the same way.",
    )
    retention: Literal["in_memory", "24h"] | None = Field(
        default=None, description="`prompt_cache_retention` to ask for; None leaves it to OpenAI."
    )


class GeminiPromptCaching(_Settings):
    cached_contents: bool = Field(
        default=False, description="Put long system instructions and tools in explicit cachedContents."
    )
    min_chars: int = Field(
        default=4096,
        gt=0,
        description="Smallest prefix (JSON characters) worth a cache; Gemini refuses under 1,024-4,096 tokens.",
    )
    ttl: float = Field(default=3600.0, ge=300.0, description="Seconds a cachedContent lives (storage is billed).")
    max_per_credential: int = Field(
        default=16,
        gt=0,
        description="Most cachedContents this process keeps alive per credential (each is storage billed by the "
        "hour on that credential); a request with another prefix past it goes as written.",
    )


class PromptCaching(_Settings):
    """Provider-native prompt caching (`Cache(prompt_caching=...)`, `cache.prompt_caching` in a file)."""

    anthropic: AnthropicPromptCaching = AnthropicPromptCaching()
    openai: OpenAIPromptCaching = OpenAIPromptCaching()
    gemini: GeminiPromptCaching = GeminiPromptCaching()

    @property
    def enabled(self) -> bool:
        return (
            self.anthropic.mode != "off"
            or self.openai.prompt_cache_key != "off"
            or self.openai.retention is not None
            or self.gemini.cached_contents
        )

    def rewrite(self, family: str, endpoint: str, body: dict[str, Any]) -> list[str]:
        """Add the provider's caching hints to `body` in place; the names of the changes made."""
        if family == "anthropic" and endpoint == "messages":
            return _anthropic(self.anthropic, body)
        if family == "openai" and endpoint in ("chat.completions", "responses"):
            return _openai(self.openai, endpoint, body)
        return []


# -- Anthropic -------------------------------------------------------------------------------------


def _anthropic(settings: AnthropicPromptCaching, body: dict[str, Any]) -> list[str]:
    if settings.mode == "off" or mentions_cache_control(body):
        return []
    marker: dict[str, Any] = {"type": "ephemeral"}
    if settings.ttl != "5m":
        marker["ttl"] = settings.ttl
    if settings.mode == "auto":
        body["cache_control"] = marker
        return ["anthropic_auto"]
    return ["anthropic_breakpoints"] if place(settings.points, body, marker) else []


# -- OpenAI ----------------------------------------------------------------------------------------


def _openai(settings: OpenAIPromptCaching, endpoint: str, body: dict[str, Any]) -> list[str]:
    changes = []
    if settings.prompt_cache_key == "prefix" and "prompt_cache_key" not in body:
        prefix = _static_prefix(endpoint, body)
        if prefix is not None:
            body["prompt_cache_key"] = (
                "llmc-" + hashlib.sha256(orjson.dumps(prefix, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
            )
            changes.append("openai_prompt_cache_key")
    if settings.retention is not None and "prompt_cache_retention" not in body:
        body["prompt_cache_retention"] = settings.retention
        changes.append("openai_prompt_cache_retention")
    return changes


def _static_prefix(endpoint: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """What requests sharing a prompt prefix have in common: the model, the tools and the
    instructions (system and developer messages before the first other message), or None when
    there are no tools or instructions to share."""
    if endpoint == "responses":
        instructions: Any = body.get("instructions")
    else:
        messages = body.get("messages")
        instructions = []
        for message in messages if isinstance(messages, list) else []:
            if role_of(message) not in ("system", "developer"):
                break
            instructions.append(message)
    tools = body.get("tools")
    if not instructions and not tools:
        return None
    return {"model": body.get("model"), "tools": tools, "instructions": instructions}


# -- Gemini explicit cached contents ---------------------------------------------------------------

_GENERATE = re.compile(
    r"^(?P<base>.*?)/(?P<model>(?:(?P<parent>projects/[^/]+/locations/[^/]+)/publishers/google/)?models/[^/:]+)"
    r":(?:stream)?[Gg]enerate[Cc]ontent$"
)
_PREFIX_FIELDS = ("systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config")
"""What a cachedContent holds; the REST API takes both spellings."""
_NAMED = ("cachedContent", "cached_content")
_PASSED_HEADERS = (*GEMINI.headers, "x-goog-user-project", "x-goog-api-client", "host")
_MARGIN = 120.0
"""Seconds before a cachedContent's end at which it is no longer named (a request in flight must not outlive it)."""
_REMEMBER_REFUSAL = 600.0
"""Seconds a refused creation (too small for the model, a model without explicit caching) is remembered."""
_REMEMBER_FAILURE = 60.0
"""Seconds a creation Gemini could not serve (429, 5xx, a timeout, no answer) is remembered: while it is out of
quota or failing, a creation before every request would double the calls against that quota, and make each wait."""
_CREATE_TIMEOUT = 30.0
_KNOWN_LIMIT = 4096
REFUSALS = frozenset({400, 403, 404})
"""Statuses with which Gemini refuses a request naming a cachedContent it no longer has (or never let us use)."""


def refused_cached_content(status: int, body: bytes) -> bool:
    """Whether Gemini's answer may refuse the cachedContent a request named, rather than the request: a 404,
    a 403 (PERMISSION_DENIED need not name the resource; a request's own 403 is not billed, so sending it
    once more as written costs nothing), a 400 naming it."""
    if status in (403, 404):
        return True
    return status in REFUSALS and _names_cached_content(body)


def cached_content_gone(status: int, body: bytes) -> bool:
    """Whether a refusal says the cachedContent itself is gone or not ours (a 404, or an answer naming
    it). A bare 403 may refuse the request instead (a key that may create but not generate): the
    content then still lives, billed, until it expires."""
    return status == 404 or _names_cached_content(body)


def _names_cached_content(body: bytes) -> bool:
    lowered = body.lower()
    return b"cachedcontent" in lowered or b"cached content" in lowered


@dataclass(frozen=True, slots=True)
class CachedContent:
    """A cachedContent a rewritten request names (kept on the request, to undo the rewrite)."""

    name: str
    registry_key: str
    owner: str
    """The hash of the credential (and billed project) it was created with, whose budget it counts in."""


class _Budget:
    """The cachedContents this process keeps alive (or is creating) per credential: a caller's
    prefixes cannot make it create without bound, since each is storage billed by the hour on the
    caller's key. Bounded too: past `_KNOWN_LIMIT` credentials with live ones, no credential gets more.
    Used from `Run`s only, which run on one loop."""

    def __init__(self, per_credential: int, ttl: float) -> None:
        self.per_credential, self.ttl = per_credential, ttl
        self._live: dict[str, dict[str, float]] = {}
        """credential hash -> registry key -> until when it is billed."""

    def reserve(self, owner: str, registry_key: str) -> bool:
        """Count a creation for `owner` if its budget allows it."""
        now = time.time()
        live = self._live.get(owner)
        if live is None:
            if len(self._live) >= _KNOWN_LIMIT:
                for spent in [
                    o for o, keys in list(self._live.items()) if max(list(keys.values()), default=0.0) <= now
                ]:
                    del self._live[spent]
                if len(self._live) >= _KNOWN_LIMIT:
                    return False
            live = self._live[owner] = {}
        for ended in [key for key, until in list(live.items()) if until <= now]:
            del live[ended]
        if registry_key not in live and len(live) >= self.per_credential:  # (a prefix renewing its own is not more)
            return False
        live[registry_key] = now + self.ttl
        return True

    def retire(self, owner: str, registry_key: str, name: str) -> None:
        """A cachedContent no longer named but maybe still alive upstream: it keeps counting until it
        expires, apart from the one its prefix may be given next (a prefix renewing its own is not more)."""
        live = self._live.get(owner)
        if live is not None and registry_key in live:
            live[f"{registry_key} {name}"] = live.pop(registry_key)

    def release(self, owner: str, registry_key: str) -> None:
        """A creation that failed, or a cachedContent gone upstream: no longer billed."""
        live = self._live.get(owner)
        if live is not None:
            live.pop(registry_key, None)
            if not live:
                self._live.pop(owner, None)


class CachedContents:
    """Gemini explicit context caching, for one Cache.

    A generateContent request whose system instruction, tools and tool config together reach
    `min_chars` gets them replaced by `cachedContent: <name>`. The cachedContent is created once per
    (credential and billed project, model, prefix), with the caller's own credentials, at most
    `max_per_credential` alive at once per credential (`_Budget`), and remembered in this process
    and in the cache's store (so other pods reuse it) until `_MARGIN` seconds before it expires.
    Concurrent first requests on one event loop wait for one creation. A creation Gemini refuses (too
    small for the model, a model without explicit caching) is remembered for ten minutes, and the
    request goes out as written; a failure to reach Gemini (or a 429/5xx) for one minute. A
    rewritten request that Gemini refuses because of the cachedContent is sent again as written,
    once, by the engine's plan (`Additions.retry_body`), and the handle is forgotten.

    `rewrite` is a part of the plan: the store is read and written in `Run` actions, and the creation
    is a `SideCall` the driver makes on its own way upstream, so no driver knows about any of this.
    """

    def __init__(self, settings: GeminiPromptCaching, store: Store, key_prefix: str) -> None:
        self.settings = settings
        self.store = store
        self.key_prefix = key_prefix
        self._known: dict[str, tuple[str | None, float]] = {}
        """registry key -> (cachedContent name or None for "could not create", until when)."""
        self._creating: dict[tuple[str, asyncio.AbstractEventLoop], asyncio.Future[str | None]] = {}
        """The creations in flight, per loop (the sync transport's plans run their `Run`s on one loop)."""
        self._budget = _Budget(settings.max_per_credential, settings.ttl)
        self.warnings = LogLimit(logger)
        """Creations that fail: each caller's prefix tries once, so callers repeat it at request rate."""

    def rewrite(
        self, path: str, query: str, headers: Mapping[str, str], body: dict[str, Any]
    ) -> Steps[CachedContent | None]:
        """Swap the prefix for a cachedContent in `body` (in place); what was named, or None."""
        match = _GENERATE.match(path)
        if match is None or any(field in body for field in _NAMED):
            return None
        prefix = {name: body[name] for name in _PREFIX_FIELDS if body.get(name)}
        if not prefix or len(orjson.dumps(prefix)) < self.settings.min_chars:
            return None
        try:
            credential = GEMINI.credential(headers, query) or ""
        except AmbiguousCredential:  # which key the provider uses is unknown: name no shared content
            return None
        # A cachedContent belongs to the project it was made in: an OAuth token's request names its own
        owner = hashlib.sha256(orjson.dumps([credential, headers.get("x-goog-user-project") or ""])).hexdigest()
        digest = hashlib.sha256(
            orjson.dumps(
                {"credential": owner, "model": match["model"], **prefix},
                option=orjson.OPT_SORT_KEYS,
            )
        ).hexdigest()
        registry_key = f"{self.key_prefix}gemini-cached-content:{digest[:40]}"
        name = yield Run(self._name(registry_key))
        if name is False:
            name = yield from self._create_once(registry_key, owner, match, query, headers, prefix)
        if not name:
            return None
        for field in _PREFIX_FIELDS:
            body.pop(field, None)
        body["cachedContent"] = name
        return CachedContent(name, registry_key, owner)

    async def forget(self, content: CachedContent, gone: bool = True) -> None:
        """Name `content` no more. `gone`: it no longer exists upstream (no longer billed); otherwise it
        counts in its credential's budget until it expires (`cached_content_gone`)."""
        self._known.pop(content.registry_key, None)
        if gone:
            self._budget.release(content.owner, content.registry_key)
        else:
            self._budget.retire(content.owner, content.registry_key, content.name)
        try:
            await self.store.delete(content.registry_key)
        except Exception:
            logger.debug("could not forget %s", content.name, exc_info=True)

    async def _name(self, registry_key: str) -> str | None | Literal[False]:
        """The remembered name, None for a remembered failure, False when nothing is known."""
        known = self._remembered(registry_key)
        if known is not None:
            return known[0]
        now = time.time()
        try:
            data = await self.store.get(registry_key)
        except Exception:  # the store is down: this process's memory is all there is
            return False
        if data is None:
            return False
        try:
            record = orjson.loads(data)
            name, until = record["name"], float(record["until"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return False
        if until <= now or not (name is None or isinstance(name, str)):
            return False
        self._remember(registry_key, name, until)
        return name

    def _remembered(self, registry_key: str) -> tuple[str | None] | None:
        """(the name, or None for "could not create") this process still remembers, or None."""
        known = self._known.get(registry_key)
        return (known[0],) if known is not None and known[1] > time.time() else None

    def _remember(self, registry_key: str, name: str | None, until: float) -> None:
        known = self._known
        if len(known) >= _KNOWN_LIMIT:  # rotating credentials (Vertex tokens) make new keys: drop the oldest
            known.pop(next(iter(known)))
        known[registry_key] = (name, until)

    def _create_once(
        self,
        registry_key: str,
        owner: str,
        match: re.Match[str],
        query: str,
        headers: Mapping[str, str],
        prefix: dict[str, Any],
    ) -> Steps[str | None]:
        """`_create`, once for concurrent requests of one loop on the same prefix: the others wait for
        its name (None, for them too, if it fails: they send their prefixes as written)."""
        waited, flight = yield Run(self._join(registry_key, owner))
        if flight is None:
            return waited
        name: str | None = None
        try:
            name = yield from self._create(match, query, headers, prefix, registry_key)
        finally:  # also when the plan is closed or a cancellation is thrown into it
            self._land(registry_key, owner, flight, name)
        return name

    async def _join(self, registry_key: str, owner: str) -> tuple[str | None, asyncio.Future[str | None] | None]:
        """(the name another request's creation gave, None) or, for the first request, (None, its flight);
        (None, None) when the credential's budget is spent (the request goes as written)."""
        loop = asyncio.get_running_loop()
        pending = self._creating.get((registry_key, loop))
        if pending is not None:
            return await asyncio.shield(pending), None
        known = self._remembered(registry_key)
        if known is not None:  # a creation landed since `_name` looked
            return known[0], None
        if not self._budget.reserve(owner, registry_key):
            return None, None
        flight = self._creating[(registry_key, loop)] = loop.create_future()
        return None, flight

    def _land(self, registry_key: str, owner: str, flight: asyncio.Future[str | None], name: str | None) -> None:
        """End a creation's flight, from whichever thread the plan runs on (its loop's own, or a sync caller's)."""

        def landed() -> None:
            self._creating.pop((registry_key, loop), None)
            if not flight.done():
                flight.set_result(name)
            if name is None:  # nothing was created: nothing is billed
                self._budget.release(owner, registry_key)

        loop = flight.get_loop()
        with suppress(RuntimeError):  # a closed loop: nobody waits on it any more
            loop.call_soon_threadsafe(landed)

    def _create(
        self,
        match: re.Match[str],
        query: str,
        headers: Mapping[str, str],
        prefix: dict[str, Any],
        registry_key: str,
    ) -> Steps[str | None]:
        settings = self.settings
        parent = f"/{match['parent']}" if match["parent"] else ""
        collection = f"{match['base']}{parent}/cachedContents"
        # the credential as the caller sent it (`key`, or an OAuth token's `access_token`): every one `rewrite` read
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in parse_qsl(query) if name in GEMINI.query)
        passed = {k: v for k, v in headers.items() if k in _PASSED_HEADERS}
        passed["content-type"] = "application/json"
        payload = {"model": match["model"], **prefix, "ttl": f"{int(settings.ttl)}s"}
        name: str | None = None
        status: int | None = None
        try:
            answer: Reply = yield SideCall(collection, query, passed, orjson.dumps(payload), _CREATE_TIMEOUT)
            status = answer.status
            if status == 200:
                created = orjson.loads(answer.body).get("name")
                name = created if isinstance(created, str) and created else None
        except Exception:  # (a cancellation is not Gemini's failure: it is not remembered)
            self.warnings.warning(
                "create", "creating a Gemini cachedContent failed: sending the prefix as written", exc_info=True
            )
        if name is None:
            logger.info("Gemini did not create a cachedContent (status %s): sending prefixes as written", status)
        refused = status in (400, 403)
        until = time.time() + (settings.ttl - _MARGIN if name else _REMEMBER_REFUSAL if refused else _REMEMBER_FAILURE)
        yield Run(self._share(registry_key, name, until))
        return name

    async def _share(self, registry_key: str, name: str | None, until: float) -> None:
        """Remember a creation's outcome in this process and, for other pods, in the store."""
        self._remember(registry_key, name, until)
        try:
            await self.store.set(registry_key, orjson.dumps({"name": name, "until": until}), until - time.time())
        except Exception:
            logger.debug("could not share %s through the store", name, exc_info=True)


__all__ = [
    "AnthropicPromptCaching",
    "CachedContent",
    "CachedContents",
    "GeminiPromptCaching",
    "InjectionPoint",
    "MAX_BREAKPOINTS",
    "OpenAIPromptCaching",
    "PromptCaching",
    "cached_content_gone",
    "refused_cached_content",
]
