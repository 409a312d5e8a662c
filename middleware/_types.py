"""The engine's vocabulary: what an intercepted call is, how a lookup ended, what the cache answers.

Plain data, shared by the engine, its helpers (single-flight, meaning, recorder) and the drivers.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _exact_json as exact_json
from ._entry import Entry
from ._policy import Policy
from .providers import Endpoint, RequestView, Route

if TYPE_CHECKING:
    from ._prompt_caching import CachedContent
    from ._recorder import Recorder
    from ._singleflight import Flight
    from .telemetry import Call

CACHE_HEADER = "x-cache"
KEY_HEADER = "x-cache-key"
UPSTREAM_HEADER = "x-llm-cache-upstream"
"""A header the gateway drops from its callers' requests (it once named the upstream to the engine). Nothing
reads it: each driver names the upstream to `Cache.prepare_route` as an argument, from what it trusts."""
UPSTREAM_SCOPE = "llm_cache.upstream"
"""The ASGI scope key in which the gateway names a request's upstream URL for `CacheMiddleware`: a scope
key, which no caller can send, where a header could be."""
FALLBACK_FROM_HEADER = "x-router-fallback-from"
"""Set by the router on an answer from a fallback group (naming the requested group)."""
ORIGIN_HEADERS = frozenset(
    {"x-router-deployment", "x-router-model", "x-router-family", "x-router-group", FALLBACK_FROM_HEADER}
)
"""Response headers saying what produced an answer: stored with the entry and replayed on hits."""

RawHeaders = list[tuple[bytes, bytes]]
"""Header pairs as both ASGI and httpx take them."""


class Outcome(str, Enum):
    """The `x-cache` answer to a call (and the telemetry result label, lower-cased)."""

    HIT = "HIT"
    MISS = "MISS"
    REFRESH = "REFRESH"
    BYPASS = "BYPASS"


@dataclass(slots=True)
class ResponseParts:
    """A response the engine answers itself, `content-length` included."""

    status: int
    headers: RawHeaders
    body: bytes


CLOCK_SKEW = 300.0
"""Seconds an entry's `created_at` may be ahead of this pod's clock (pods' clocks differ a little)."""


@dataclass(slots=True)
class CacheRequest:
    """An intercepted LLM call, as the engine sees it."""

    route: Route
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    """The parsed body, read only: calls prepared from the same request share it (`again`)."""
    forward_body: bytes
    """The body to send upstream: the original bytes, or re-encoded without the `cache` field."""
    stream: bool
    policy: Policy
    key: str
    bypass: str | None = None
    """Why this call is not cached (opt-in mode, ...), or None."""
    captured: bool = False
    """True when `forward_body` was rewritten by the provider's `capture_body` (see Recorder.feed)."""
    caller_body: bytes = b""
    """The body as the caller meant it (without the `cache` field), before any addition of the cache's."""
    scope: str = ""
    """The key's scope segment (the semantic context is keyed under it too); empty when not cached."""
    exact: bool = False
    """The body took `parse_body`'s exact path (numbers a double cannot carry)."""
    item_keys: tuple[str, ...] = ()
    """The keys of a list request's items, in input order, when it is served item by item (`_items.py`)."""
    upstream: str | None = None
    """The URL the driver sends this call to, as it named it to `Cache.prepare_route` (never a header)."""
    worked_out: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)
    """What later steps worked out from this preparation alone (a `Telemetry`'s counts of its hits), by
    whoever worked it out, kept for every call prepared the same way: `again` hands on the same dict."""
    # What one call adds (`again` starts them over):
    call: Call | None = None
    """This call's telemetry (span, decision), set by `Cache.begin` or the first `lookup`."""
    cached_content: CachedContent | None = None
    """The Gemini cachedContent `upstream_body` named instead of the prefix, if any."""
    hinted: bool = False
    """True when `upstream_body` added prompt-caching hints."""
    refused: str | None = None
    """What the upstream's 400 named among the cache's additions, while the request is sent again without it."""
    lookup: Lookup | None = None
    """How `Cache.hit` found the cache for this call (None before it ran)."""
    key_body: dict[str, Any] | None = None
    """The body a `before_lookup` hook made the key from, when it changed it (None: `body`); the
    semantic context is made from it too, so a hook that keeps callers apart keeps them apart by meaning."""
    client: str | None = None
    """The network peer that sent this call, as its ASGI driver named it to `Cache.prepare_route`
    (never a header); None from the transports. The source of a caller without a credential."""

    @property
    def endpoint(self) -> Endpoint:
        return self.route.endpoint

    @property
    def model(self) -> str | None:
        return self.route.endpoint.model(self.route, self.body)

    def view(self) -> RequestView:
        return RequestView(self.body, self.query, self.route, self.stream)

    def again(self, headers: Mapping[str, str]) -> CacheRequest:
        """This request as `prepare` made it, for another call with these (equally read) headers."""
        return CacheRequest(  # (positionally: each keyword costs the call a search of the names)
            self.route,
            self.method,
            self.path,
            self.query,
            headers,
            self.body,
            self.forward_body,
            self.stream,
            self.policy,
            self.key,
            self.bypass,
            self.captured,
            self.caller_body,
            self.scope,
            self.exact,
            self.item_keys,
            self.upstream,
            self.worked_out,
        )

    def accepts(self, entry: Entry) -> bool:
        """Fresh, young enough for the request's max-age, and holding usage if the request would get usage.
        An entry dated more than `CLOCK_SKEW` ahead is young enough for no max-age: written by someone
        else to a shared store, or by a pod whose clock is wrong, it would be age 0 for ever."""
        max_age = self.policy.max_age
        expires_at = entry.expires_at
        if max_age is not None or expires_at is not None:
            now = time.time()
            if (max_age is not None and not -CLOCK_SKEW <= now - entry.created_at <= max_age) or (
                expires_at is not None and now >= expires_at
            ):
                return False
        return self.usable(entry)

    def usable(self, entry: Entry) -> bool:
        """Holding usage if the request would get usage from the provider."""
        return entry.usage_requested or not self.route.endpoint.asks_for_usage(self.body, self.stream)

    def unstorable(self) -> str | None:
        """Why no answer to this request may be stored, whatever it says, or None. A JSON body with a
        key twice in one object is keyed as its last value, and a provider may read the first: its
        answer would be stored under the key of another request. Store time only (the miss path):
        a hit never pays for the scan (docs/security.md says why a lookup need not)."""
        if self.route.endpoint.form_body:
            return None
        return exact_json.duplicate_key(self.caller_body)

    def serves_stale(self, entry: Entry, grace: float) -> bool:
        """Past its TTL by less than `grace` seconds (and usable): served if the upstream fails."""
        expires_at = entry.expires_at
        return (
            grace > 0 and expires_at is not None and expires_at <= time.time() < expires_at + grace
        ) and self.usable(entry)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A call the engine answers itself with a client error (a cache control it cannot honour)."""

    status: int
    body: bytes

    def response(self) -> ResponseParts:
        return ResponseParts(self.status, json_headers(self.body), self.body)


@dataclass(frozen=True, slots=True)
class ForwardAsIs:
    """An LLM path whose body the engine cannot use (malformed JSON, too large): forward it as is."""

    reason: str
    header: ClassVar[tuple[str, str]] = (CACHE_HEADER, "BYPASS")
    """Added to the forwarded response, so the caller can see the cache stood aside."""


Prepared = CacheRequest | ForwardAsIs | Rejection
"""What `Cache.prepare_route` makes of an LLM call."""


@dataclass(frozen=True, slots=True)
class Meaning:
    """A miss's semantic context digest, last user text and its vector."""

    context: str
    text: str
    vector: Any
    partition: str = ""
    """Whose lookup this is (bounded mode learns per partition): the digest of the embedder's name and
    the key's prefix, namespace and credential scope."""
    payer: str = ""
    """Whose verification cap a verification spends: the partition without its namespace, which the
    caller names freely (a namespace per lookup must not multiply the judge's calls)."""


@dataclass(frozen=True, slots=True)
class Verification:
    """A semantic candidate sent upstream to be checked: its index row and its stored answer's body."""

    key: str
    text: str
    similarity: float
    stored: bytes


@dataclass(slots=True)
class Lookup:
    outcome: Outcome
    entry: Entry | None = None
    only_if_cached_miss: bool = False
    coalesced: bool = False
    store_error: bool = False
    flight: Flight | None = None
    lock: str | None = None
    """The token of this pod's distributed lock on the key, while this call leads it upstream."""
    match: str = "exact"
    """How a hit matched: `exact`, or `semantic` (a similar prompt's answer)."""
    similarity: float | None = None
    meaning: Meaning | None = None
    """The miss's context, text and vector, kept so the answer is indexed once it is stored."""
    meaning_failed: bool = False
    """The embedder or index failed on this miss: its answer is not indexed (no second attempt)."""
    verifying: Verification | None = None
    """Bounded semantic mode: the stored answer this miss checks, judged once the fresh one is stored."""
    stale: Entry | None = None
    """An entry past its TTL but within the stale-if-error grace: served if the upstream fails."""


# -- the plan's actions (what `Cache.plan` yields) and ends (what it returns) ---------------------


@dataclass(frozen=True, slots=True)
class Run:
    """Await this engine coroutine (the sync transport: on the engine's loop); reply with its result."""

    work: Coroutine[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request upstream with this body; reply with a `Reply` once the answer's head arrives
    (its body is not read yet)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Read the whole upstream answer (a small error); reply with a `Reply` that carries its body.
    The answer is then relayed from those bytes, not from the upstream stream."""


@dataclass(frozen=True, slots=True)
class SideCall:
    """POST `body` to another path of the same upstream (with `query`, and only these headers): the
    engine's own call, e.g. creating a Gemini cachedContent. Reply with a `Reply` that carries the
    whole (decoded) body; give up after `timeout` seconds, throwing the error into the plan."""

    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    timeout: float


@dataclass(frozen=True, slots=True)
class Reply:
    """The head of the upstream answer, as the driver tells it to the plan."""

    status: int
    headers: Mapping[str, str]
    """Looked up with `.get()`, whatever the case of the names."""
    raw: list[tuple[str, str]]
    """Every header pair, in order, as the upstream sent them."""
    body: bytes = b""
    """The answer's (decoded) body, in the reply to `ReadBody` and `SideCall` only."""


@dataclass(frozen=True, slots=True)
class Answer:
    """End: answer the caller with these parts; nothing goes upstream."""

    parts: ResponseParts


@dataclass(frozen=True, slots=True)
class Untouched:
    """End: send the caller's request upstream exactly as it came, and add `header` to the answer."""

    header: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Relay:
    """End: relay the upstream answer (the last `Reply`) with these headers, every body chunk through
    `recorder.feed` and then `recorder.flush`; `recorder.finish` at its end (or once `recorder.complete`),
    `recorder.abort` if it fails."""

    recorder: Recorder
    status: int
    headers: list[tuple[str, str]]


class Abandoned(Exception):
    """Thrown into a plan by a driver that has no answer to give it (an ASGI app that returned without
    a response): the plan stores nothing and ends, as for a failure, but records no error."""


Action = Run | Forward | ReadBody | SideCall
End = Answer | Untouched | Relay
_T = TypeVar("_T")
Steps = Generator[Action, Any, _T]
"""Part of a plan, run with `yield from`: yields actions, is sent their results, returns a `_T`."""


def json_headers(body: bytes) -> RawHeaders:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("latin-1"))]


__all__ = [
    "Abandoned",
    "Action",
    "Answer",
    "End",
    "Forward",
    "ReadBody",
    "Relay",
    "Reply",
    "Run",
    "SideCall",
    "Steps",
    "Untouched",
    "CACHE_HEADER",
    "FALLBACK_FROM_HEADER",
    "KEY_HEADER",
    "ORIGIN_HEADERS",
    "UPSTREAM_HEADER",
    "UPSTREAM_SCOPE",
    "CacheRequest",
    "ForwardAsIs",
    "Lookup",
    "Meaning",
    "Outcome",
    "Prepared",
    "RawHeaders",
    "Rejection",
    "ResponseParts",
    "Verification",
]
