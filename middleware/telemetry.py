"""OpenTelemetry spans and metrics, Prometheus exposition and decision logs for one `Cache`.

Library code depends only on `opentelemetry-api`: a `Telemetry` takes an optional
`tracer_provider` / `meter_provider` and otherwise uses the global ones, so nothing
is recorded until the application installs the SDK. The Prometheus view
(`Telemetry.prometheus_text()`, `Telemetry.collector`) is fed by the same events
from plain in-process counters and works with or without the SDK.

The engine owns the only hooks: `Cache.hit(request, kind)` begins one `Call` per
intercepted call (`Cache.begin`), and the engine's lookup, `hit_response`,
`only_if_cached_response` and `Recorder.finish/abort` drive it to its end. A call that would keep
nothing but its counts (`Telemetry.quiet`) gets its `Call` after the lookup, and an exact hit of it
none: `Telemetry.hit_quietly` counts it. See docs/observability.md.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import orjson
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._log_limit import LogLimit
from .._wire import is_azure
from ._fork import renew_after_fork
from ._model_labels import MAX_MODELS, ModelLabels
from ._printable import printable
from ._span_starts import StartMemo
from .stores.base import abilities_of
from .stores.tiered import TieredStore

if TYPE_CHECKING:
    from ._entry import Entry
    from ._types import CacheRequest, Lookup
    from .providers.base import Endpoint, Usage

logger = logging.getLogger("llm_cache.middleware")

INSTRUMENTATION = "llm-cache-middleware"
RESULTS = ("hit", "miss", "refresh", "bypass", "stale", "error")
LOOKUP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
OPERATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""`gen_ai.client.operation.duration`'s bucket boundaries, as the GenAI conventions give them."""
TOKEN_BUCKETS = tuple(4**n for n in range(14))
"""`gen_ai.client.token.usage`'s bucket boundaries, as the GenAI conventions give them (1, 4, 16, ... 4**13)."""
SIMILARITY_BUCKETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0)
"""`llm_cache_semantic_similarity`'s bucket boundaries: cosine, finer where thresholds are set."""
MAX_MODEL_CHARS = 128
"""Longest model name telemetry keeps (labels, span names); a longer one, sent by the caller, is cut."""
MAX_PATH_CHARS = 256
"""Longest request path a log line quotes."""

_KINDS = {"client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}
_USAGE_MEMO = 4096
_SETTLE_AT = 256
_UNKNOWN = object()
"""Queued counter additions (and durations) a writer lets pile up before folding them in itself."""


# -- pricing -----------------------------------------------------------------------------------


class Pricing:
    """USD prices per 1M tokens by model name prefix (longest prefix wins), kept as data.

    `table` is the `pricing.json` shape: `{"models": {"gpt-4o": {"input": 2.5, "output": 10,
    "cached_input": 1.25, "cache_write": ...}}}`, or just the inner `models` mapping.
    """

    def __init__(self, table: Mapping[str, Any]) -> None:
        models = table.get("models", table)
        self.as_of: str | None = table.get("as_of") if isinstance(table.get("as_of"), str) else None
        self.models: dict[str, dict[str, float]] = {
            name.lower(): {k: float(v) for k, v in prices.items() if isinstance(v, (int, float))}
            for name, prices in models.items()
            if isinstance(prices, Mapping)
        }
        self._by_prefix = sorted(self.models, key=len, reverse=True)
        self._memo: dict[str, dict[str, float] | None] = {}

    @classmethod
    def default(cls) -> Pricing:
        """The table shipped in `middleware/data/pricing.json`."""
        return cls(_shipped_pricing())

    def prices(self, model: str | None) -> dict[str, float] | None:
        if not model:
            return None
        if model in self._memo:
            return self._memo[model]
        name = model.lower().rpartition("/")[2]  # "models/gemini-2.0-flash", "openai/gpt-4o"
        found = next((self.models[p] for p in self._by_prefix if name.startswith(p)), None)
        if len(self._memo) < 4 * MAX_MODELS:
            self._memo[model] = found
        return found

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """What a call with `usage` costs upstream (USD), or None for an unpriced model."""
        prices = self.prices(model)
        if prices is None:
            return None
        read = usage.cache_read_input_tokens or 0
        write = usage.cache_creation_input_tokens or 0
        fresh = max(0, (usage.input_tokens or 0) - read - write)
        per_input = prices.get("input", 0.0)
        total = (
            fresh * per_input
            + read * prices.get("cached_input", per_input)
            + write * prices.get("cache_write", per_input)
            + (usage.output_tokens or 0) * prices.get("output", 0.0)
        )
        return total / 1_000_000


@functools.cache
def _shipped_pricing() -> dict[str, Any]:
    data = resources.files("llm_cache.middleware").joinpath("data/pricing.json").read_text(encoding="utf-8")
    return dict(json.loads(data))


def brief_model(model: str | None) -> str | None:
    """A model name as telemetry keeps it. The request names the model, and a lenient upstream echoes it in
    its answer: a label, a span name, a log line and memo keys must not keep megabytes of it, nor its
    control characters."""
    if model is not None and (len(model) > MAX_MODEL_CHARS or not model.isprintable()):
        return printable(model, MAX_MODEL_CHARS)
    return model


def provider_name(family: str, path: str, route_model: str | None) -> str:
    """`gen_ai.provider.name` as the GenAI semantic conventions spell it."""
    if family == "openai":
        return "azure.ai.openai" if route_model is not None or is_azure(path) else "openai"
    if family == "gemini":
        return "gcp.vertex_ai" if "/publishers/google/" in path else "gcp.gemini"
    if family == "bedrock":
        return "aws.bedrock"
    return family


# -- Prometheus-side aggregates ------------------------------------------------------------------


_StartKey = tuple["Endpoint", str, str | None, str | None, str | None]
"""What a call's `_Start` is worked out from: endpoint, path, the path's model, the body's, the upstream URL."""
_Adds = tuple[tuple[str, tuple[str, ...], float], ...]
"""Counter additions queued together: (counter, labels, amount) each."""


class _Histogram:
    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def observe_all(self, values: list[float]) -> None:
        """`observe` each of `values` (in one call: a settle folds hundreds)."""
        counts, buckets, where, total = self.counts, self.buckets, bisect.bisect_left, self.sum
        for value in values:
            counts[where(buckets, value)] += 1
            total += value
        self.sum = total

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class TelemetryCollector:
    """A `prometheus_client` collector over one Telemetry's counters (register it in any registry)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        t = self._t
        with t._lock:
            t._settle()
            lookup = {k: (h.cumulative(), h.sum) for k, h in t._lookup_hist.items()}
            store = {k: (h.cumulative(), h.sum) for k, h in t._store_hist.items()}
            similarity = t._similarity_hist.cumulative(), t._similarity_hist.sum
            simple = {name: dict(values) for name, values in t._counters.items()}

        for name, label, help_text, hists in (
            ("llm_cache_lookup_duration_seconds", "store", "Store lookup latency.", lookup),
            ("llm_cache_store_duration_seconds", "store", "Store write latency.", store),
        ):
            hist = HistogramMetricFamily(name, help_text, labels=(label,))
            for key, (buckets, total) in hists.items():
                hist.add_metric((key,), buckets, total)
            yield hist
        hist = HistogramMetricFamily("llm_cache_semantic_similarity", _SIMILARITY_HELP)
        hist.add_metric((), *similarity)
        yield hist
        for name, (label_names, counter_help, _, _) in _COUNTERS.items():
            counter = CounterMetricFamily(name, counter_help, labels=label_names)
            values = simple.get(name) or ({(): 0} if not label_names else {})
            for label_values, value in values.items():
                counter.add_metric(label_values, value)
            yield counter
        sizes = _store_sizes(t.store)
        for column, (name, (gauge_help, _, _)) in enumerate(_GAUGES.items()):
            gauge = GaugeMetricFamily(name, gauge_help, labels=("store",))
            for label, size in sizes:
                gauge.add_metric((label,), size[column])
            yield gauge


_SIMILARITY_HELP = "Similarity of the nearest stored prompt, per semantic lookup that found one."

# Prometheus name -> (labels, help, OTel instrument name, unit)
_COUNTERS: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "llm_cache_requests": (
        ("result", "provider", "model", "match"),
        "Intercepted LLM calls by cache result.",
        "llm_cache.requests",
        "{request}",
    ),
    "llm_cache_stored_bytes": (("store",), "Bytes of entries written to the store.", "llm_cache.stored.bytes", "By"),
    "llm_cache_stored_entries": (("store",), "Entries written to the store.", "llm_cache.stored.entries", "{entry}"),
    "llm_cache_store_errors": (
        ("store", "operation"),
        "Store operations that failed (served from upstream).",
        "llm_cache.store.errors",
        "{error}",
    ),
    "llm_cache_coalesced_waits": (
        (),
        "Concurrent identical misses answered by another call's upstream answer.",
        "llm_cache.coalesced",
        "{request}",
    ),
    "llm_cache_not_stored": (
        ("reason",),
        "Upstream answers to misses (or items of a list answer) that were not stored, by reason.",
        "llm_cache.not_stored",
        "{response}",
    ),
    "llm_cache_prompt_cache_rewrites": (
        ("provider", "change"),
        "Requests given provider-native prompt-caching hints on their way upstream.",
        "llm_cache.prompt_cache.rewrites",
        "{request}",
    ),
    "llm_cache_tokens_avoided": (
        ("provider", "model", "type"),
        "Upstream tokens not spent thanks to hits.",
        "llm_cache.tokens.avoided",
        "{token}",
    ),
    "llm_cache_cost_avoided_usd": (
        ("provider", "model"),
        "Estimated upstream cost avoided by hits (USD).",
        "llm_cache.cost.avoided",
        "USD",
    ),
    "llm_cache_semantic_verifications": (
        ("outcome",),
        "Bounded mode's verifications of semantic candidates by outcome: agreed, disagreed, not_verified "
        "(the judge failed or timed out), capped (not verified: the per-minute cap was reached).",
        "llm_cache.semantic.verifications",
        "{verification}",
    ),
    "llm_cache_verification_cost_usd": (
        ("provider", "model"),
        "Estimated upstream cost of the calls that verified semantic candidates (USD).",
        "llm_cache.verification.cost",
        "USD",
    ),
    "llm_cache_provider_cached_tokens": (
        ("provider", "model", "type"),
        "Provider-native cached tokens reported on misses (cache_read|cache_creation).",
        "llm_cache.provider.cached_tokens",
        "{token}",
    ),
}


# Prometheus name -> (help, OTel instrument name, unit); values are (entries, bytes) from `_store_sizes`, in this order
_GAUGES: dict[str, tuple[str, str, str]] = {
    "llm_cache_store_entries": ("Entries the store holds now.", "llm_cache.store.entries", "{entry}"),
    "llm_cache_store_size_bytes": ("Bytes the store holds now.", "llm_cache.store.size", "By"),
}


def _store_sizes(store: Any) -> list[tuple[str, tuple[int, int]]]:
    """`(store label, (entries, bytes))` held now by the stores that know it cheaply, read at collection.

    A store that declares the `size` ability tells (MemoryStore, DiskStore). A TieredStore reports
    its L1 as `"<its name>/l1"`: the shared level's size is not cheap to know. A store that fails to
    tell is left out of that collection.
    """
    if store is None or not abilities_of(store).size:
        return []
    label = f"{store.name}/l1" if isinstance(store, TieredStore) else store.name
    try:
        entries, size = store.current_size()
    except Exception:  # a size is never worth failing a scrape over
        logger.debug("store %s could not tell its size", label, exc_info=True)
        return []
    return [(label, (int(entries), int(size)))]


# -- the per-call object -------------------------------------------------------------------------


class Call:
    """One intercepted LLM call: its span, the decision and how it ended. Made by `Telemetry.begin` (the
    engine's hit path makes it directly: one call less)."""

    __slots__ = (
        "_key",
        "_start",
        "_t",
        "attrs",
        "body",
        "ctx",
        "ended",
        "endpoint",
        "error_type",
        "lookup_seconds",
        "match",
        "model",
        "provider",
        "recording",
        "response_model",
        "result",
        "similarity",
        "span",
        "started",
    )

    def __init__(
        self, telemetry: Telemetry, request: CacheRequest, kind: Literal["client", "internal"] = "internal"
    ) -> None:
        # No reference back to the request: it holds this Call, and a cycle would outlive the call.
        self._t = telemetry
        self.endpoint, self.model, start = telemetry._labels(request)
        self._start = start
        self.provider = start.provider
        self._key = request.key
        self.result = "miss"
        self.match: str | None = None
        self.similarity: float | None = None
        self.lookup_seconds: float | None = None
        self.ended = False
        self.response_model: str | None = None
        self.error_type: str | None = None
        self.ctx: Any = None
        self.attrs: dict[str, Any] | None = None
        """Attributes gathered during the call, set on the span in one go when it ends (only when it records)."""
        # Only a recorded duration needs the start time (a call begun before an SDK's meter is set is not
        # timed). The API's proxy instrument drops measurements until an SDK's meter provider is set (its
        # `_real_instrument` is None until then); any other instrument records.
        duration = telemetry._operation_duration
        recorded = getattr(duration, "_real_instrument", duration) is not None
        self.started = time.perf_counter() if recorded else 0.0
        if telemetry._proxied and trace._TRACER_PROVIDER is None:
            # No SDK installed: the API's invalid span, and nothing more to start. The global tracer would
            # go through the no-op tracer, which looks the context up, to make a span that records nothing
            # either, at about 2 µs a call. Once an application installs a tracer provider, the global
            # tracer resolves to its tracer, from the next call on.
            self.span: Any = trace.INVALID_SPAN
            self.recording = False
            self.body = None
            return
        span = self.span = telemetry.tracer.start_span(start.name, kind=_KINDS[kind], attributes=start.attributes)
        self.recording = span.is_recording()
        self.body = request.body if telemetry.capture_content else None
        if self.recording:
            self.attrs = self.endpoint.request_attributes(request.body)
            self.attrs["llm_cache.key_digest_prefix"] = self.key_digest_prefix

    @property
    def key_digest_prefix(self) -> str:
        """The first 12 hex digits of the key's digest: enough to find an entry, too short to matter."""
        return self._key.rpartition(":")[2][:12]

    # child spans for store operations -------------------------------------------------------

    def child(self, name: str) -> Any:
        """A child span for a store operation, or None when nothing records."""
        if not self.recording or not self._t.store_spans:
            return None
        return self._t.tracer.start_span(
            name, context=self._context(), kind=SpanKind.INTERNAL, attributes={"llm_cache.store": self._t.store_name}
        )

    def _context(self) -> Any:
        """The context whose current span is this call's span (made on first use: only children need it)."""
        if self.ctx is None:
            self.ctx = trace.set_span_in_context(self.span)
        return self.ctx

    # the decision -----------------------------------------------------------------------------

    def decided(self, lookup: Lookup) -> None:
        if lookup.entry is not None:
            self.result, self.match, self.similarity = "hit", lookup.match, lookup.similarity
        elif lookup.store_error:
            self.result = "error"
        else:
            # (an enum's value is slow to read: not on hits)
            self.result = "verify" if lookup.verifying is not None else lookup.outcome.value.lower()
        t = self._t
        if self.result != "hit":  # a hit is counted with what it saved, in one go, when it is served
            t._count_request(self.result, self.provider, self.model, self.match or "none")
        if lookup.coalesced:
            t._add("llm_cache_coalesced_waits", (), 1)
        if self.attrs is not None:
            _set_present(
                self.attrs,
                (
                    ("llm_cache.result", self.result),
                    ("llm_cache.match", self.match),
                    ("llm_cache.similarity", self.similarity),
                    ("llm_cache.lookup_duration", self.lookup_seconds),
                    ("llm_cache.coalesced", True if lookup.coalesced else None),
                ),
            )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "CACHE %s key=%s model=%s provider=%s lookup_ms=%.3f",
                self.result.upper(),
                self.key_digest_prefix,
                self.model,
                self.provider,
                (self.lookup_seconds or 0.0) * 1000,
            )

    def prompt_caching(self, changes: list[str]) -> None:
        """The request went upstream with these provider-native prompt-caching hints added."""
        t = self._t
        t._bump(tuple(("llm_cache_prompt_cache_rewrites", (self.provider, change), 1) for change in changes))
        if self.attrs is not None:
            self.attrs["llm_cache.prompt_caching"] = tuple(changes)

    # endings ------------------------------------------------------------------------------------

    def hit(self, entry: Entry) -> None:
        if self.ended:
            return
        t = self._t
        if not self._start.proven:
            t._proven(self._start)
        summary = t._served(entry, self.endpoint, self.provider, self.model, self.match or "none")
        if summary is not None:
            self.response_model = summary.response_model
            if self.attrs is not None:  # what the answer saved, not tokens spent: nothing went upstream
                self.attrs.update(summary.hit_attributes)
        if self.attrs is not None:
            self.attrs["llm_cache.entry_age"] = max(0.0, time.time() - entry.created_at)
            for name, value in entry.origin:  # x-router-deployment -> llm_cache.origin.deployment
                self.attrs["llm_cache.origin." + name.removeprefix("x-router-").replace("-", "_")] = value
            if t.capture_content:
                self._content(entry.body)
        self.end()

    def finished(self, status: int, entry: Entry | None, stored: bool, reason: str | None, stream: bool) -> None:
        """A miss/refresh/bypass ended: `entry` is what was (or would have been) stored."""
        if self.ended:
            return
        t = self._t
        if reason is not None:
            t._add("llm_cache_not_stored", (_reason_code(reason),), 1)
        if status >= 400:
            self.error_type = str(status)
        if 200 <= status < 300:
            t._proven(self._start)
            t._admit(self.model)
        if entry is not None:
            summary = t._summary(entry, self.endpoint)
            if summary is not None:
                self.response_model = summary.response_model
                if 200 <= status < 300:
                    t._admit(summary.response_model)
                t._provider_cached(self.provider, self.model or summary.response_model, summary.usage)
                t._used_tokens(self._start, summary)
                if self.result == "verify":
                    t._verification_cost(self.provider, self.model or summary.response_model, summary.usage)
                if self.attrs is not None:
                    self.attrs.update(summary.miss_attributes)
        if self.attrs is not None:
            span = self.span
            if status:
                self.attrs["http.response.status_code"] = status
            if self.error_type is not None:
                self.attrs["error.type"] = self.error_type
                span.set_status(Status(StatusCode.ERROR, f"upstream status {status}"))
            if stream:
                if stored:
                    span.add_event("llm_cache.stream.stored", {"llm_cache.bytes": len(entry.body) if entry else 0})
                else:
                    span.add_event("llm_cache.stream.discarded", {"llm_cache.reason": reason or "not stored"})
            elif not stored and reason is not None:
                span.add_event("llm_cache.response.discarded", {"llm_cache.reason": reason})
            if t.capture_content and entry is not None:
                self._content(entry.body)
        self.end()

    def not_stored(self, reason: str, count: int) -> None:
        """`count` answers of this call (a list's items) were not stored, for `reason`; the call goes on."""
        self._t._add("llm_cache_not_stored", (_reason_code(reason),), count)

    def stale(self) -> None:
        """The upstream failed and an entry past its TTL answered (`stale_if_error`): result `stale`
        (the call was counted as a miss when it was decided)."""
        if self.ended:
            return
        self.result = "stale"
        self._t._count_request("stale", self.provider, self.model, "none")
        if self.attrs is not None:
            self.attrs["llm_cache.result"] = "stale"
        self.end()

    def failed(self, error: BaseException | None) -> None:
        """The upstream call or the stream to the caller failed."""
        if self.ended:
            return
        self._t._add("llm_cache_not_stored", ("upstream_failed",), 1)
        self.error_type = type(error).__name__ if error is not None else "_OTHER"
        if self.attrs is not None:
            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__ if error else "aborted"))
            self.attrs["error.type"] = self.error_type
        self.end()

    def end(self) -> None:
        """End the span (its attributes set in one go) and record the operation's duration."""
        if not self.ended:
            self.ended = True
            span = self.span
            if span is not trace.INVALID_SPAN:  # (the span of every call while no SDK is installed)
                if self.attrs:
                    span.set_attributes(self.attrs)
                span.end()
            if self.started:  # (the duration records: it did when the call began, and always will)
                response = self._t._response_label(self.response_model)
                final = self._start.final(response, self.result, self.error_type)
                self._t._operation_duration.record(time.perf_counter() - self.started, final)

    def _content(self, answer: bytes) -> None:
        """The opt-in content attributes, in the conventions' current form (JSON strings on a span)."""
        body, endpoint = self.body or {}, self.endpoint
        try:
            response = orjson.loads(answer)
        except orjson.JSONDecodeError:
            response = None
        content = {
            "gen_ai.system_instructions": endpoint.system_instructions(body),
            "gen_ai.input.messages": endpoint.input_messages(body),
            "gen_ai.output.messages": endpoint.output_messages(response) if isinstance(response, dict) else [],
        }
        assert self.attrs is not None  # only called for a span that records
        for name, value in content.items():
            if value:
                self.attrs[name] = orjson.dumps(value, default=str).decode()


def _histogram(meter: metrics.Meter, name: str, unit: str, description: str, buckets: tuple[float, ...]) -> Any:
    return meter.create_histogram(
        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(buckets)
    )


def _fold(counters: dict[str, dict[tuple[str, ...], float]], adds: _Adds, times: int) -> None:
    """Add `adds` to `counters`, `times` over."""
    for name, labels, value in adds:
        values = counters[name]
        values[labels] = values.get(labels, 0) + value * times


def _set_present(attributes: dict[str, Any], pairs: tuple[tuple[str, Any], ...]) -> None:
    """Add the attributes whose value is known (not None or empty)."""
    for name, value in pairs:
        if value is not None and value != "":
            attributes[name] = value


def _reason_code(reason: str) -> str:
    """A bounded label value from a free-text reason (the text itself goes to span events)."""
    return reason.split(" ", 1)[0].split(":", 1)[0].lower() if reason else "unknown"


# -- Telemetry ---------------------------------------------------------------------------------


class Telemetry:
    """Spans, metrics, Prometheus text and decision logs for one Cache.

    >>> cache = Cache(store, telemetry=Telemetry(tracer_provider=tp, meter_provider=mp))
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        pricing: Pricing | Mapping[str, Any] | None = None,
        capture_content: bool = False,
        store_spans: bool | None = None,
        warning_interval: float = 60.0,
    ) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        self._proxied = isinstance(self.tracer, trace.ProxyTracer) and hasattr(trace, "_TRACER_PROVIDER")
        """The tracer is the API's proxy for the global provider, which resolves to the no-op tracer
        while the API's `_TRACER_PROVIDER` is None (no SDK installed: `ProxyTracer._tracer`). Should a
        later API lose that name, spans simply go through the proxy."""
        meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        if pricing is None:
            pricing = Pricing.default()
        self.pricing = pricing if isinstance(pricing, Pricing) else Pricing(pricing)
        self.capture_content = capture_content
        self._store_spans_option = store_spans
        self.store_spans = store_spans is not False
        """Whether store reads and writes get child spans: `store_spans`, or when that is None, whether
        the watched store leaves the process (a MemoryStore lookup is a dict read: its span would cost
        more than the lookup, and `llm_cache.lookup_duration` on the call span already says it)."""
        self.store_name = "unknown"

        lookup, store = "Store lookup latency.", "Store write latency."
        self._lookup_duration = _histogram(meter, "llm_cache.lookup.duration", "s", lookup, LOOKUP_BUCKETS)
        self._store_duration = _histogram(meter, "llm_cache.store.duration", "s", store, LOOKUP_BUCKETS)
        # The GenAI conventions' client metrics: every call's duration (hits included: the caller's
        # operation ended), and the tokens an upstream answer used (never a hit's: nothing was spent).
        self._operation_duration = _histogram(
            meter, "gen_ai.client.operation.duration", "s", "GenAI operation duration.", OPERATION_BUCKETS
        )
        self._token_usage = _histogram(
            meter, "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", TOKEN_BUCKETS
        )
        self._similarity = _histogram(meter, "llm_cache.semantic.similarity", "1", _SIMILARITY_HELP, SIMILARITY_BUCKETS)
        # Counters are observable: the hot path only bumps in-process aggregates (which the Prometheus
        # view reads too), and the SDK reads them when it collects. Only the durations are recorded live.
        for name, (_, help_text, otel_name, unit) in _COUNTERS.items():
            meter.create_observable_counter(
                otel_name, callbacks=[self._observer(name)], unit=unit, description=help_text
            )
        self.store: Any = None
        """The store whose current size the size gauges report (set by `watch_store`)."""
        self._lookup_instrument: Any = self._lookup_duration
        """Where lookups are recorded live in OTel: the lookup histogram, or None for an in-process store."""
        for column, (help_text, otel_name, unit) in enumerate(_GAUGES.values()):
            meter.create_observable_gauge(
                otel_name, callbacks=[self._size_observer(column)], unit=unit, description=help_text
            )

        self._lock = threading.Lock()
        self._attrs: dict[tuple[str, ...], dict[str, str]] = {}
        self._starts: StartMemo[_StartKey, _Start] = StartMemo()
        """Span starts worked out before (`_span_starts.py`: junk models never push the answered ones out)."""
        self._lookup_hist: dict[str, _Histogram] = {}
        self._store_hist: dict[str, _Histogram] = {}
        self._similarity_hist = _Histogram(SIMILARITY_BUCKETS)
        self._counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _COUNTERS}
        self._pending: deque[_Adds] = deque()
        self._lookup_times: deque[float] = deque()
        self._store_times: deque[float] = deque()
        """Durations not yet folded into the histograms of the store `store_name` names."""
        self._models = ModelLabels()
        self._usage_memo: dict[tuple[str, float], _Summary | None] = {}
        self._served_memo: dict[tuple[str, float, str, str | None, str], tuple[_Summary | None, _Adds]] = {}
        self.warnings = LogLimit(logger, warning_interval)
        """Failed store operations: one WARNING per store (or semantic part) an interval."""
        self.collector = TelemetryCollector(self)
        self._registry: Any = None
        renew_after_fork(self)

    @property
    def warning_interval(self) -> float:
        """Seconds between two WARNINGs about one store's (or semantic part's) failing operation."""
        return self.warnings.interval

    def _renew_after_fork(self) -> None:
        """A forked child's lock: the parent's copy may be held by a parent thread counting a call."""
        self._lock = threading.Lock()

    # -- entry points for the engine --------------------------------------------------------

    def begin(self, request: CacheRequest, kind: Literal["client", "internal"] = "internal") -> Call:
        return Call(self, request, kind)

    def quiet(self) -> bool:
        """Whether a call begun now would keep nothing but its counts: no tracing SDK is installed (the
        API's proxy resolves to its no-op tracer), no metrics SDK takes durations, no DEBUG log. An
        exact hit of such a call needs no `Call`: `hit_quietly` counts it."""
        duration = self._operation_duration
        return (
            self._proxied
            and trace._TRACER_PROVIDER is None
            and getattr(duration, "_real_instrument", duration) is None
            and not logger.isEnabledFor(logging.DEBUG)
        )

    def hit_quietly(self, request: CacheRequest, entry: Entry) -> None:
        """Count an exact hit served to a call begun `quiet`: what `Call.hit` counts, without the `Call`."""
        # The labels are functions of the preparation, so what a hit of one entry (its key and write time)
        # adds is too (with this Telemetry's prices): worked out once, kept for every call prepared alike.
        worked_out = request.worked_out
        known = worked_out.get(self)
        if known is None or known[0] != entry.created_at or known[1] != entry.fingerprint:
            endpoint, model, start = self._labels(request)
            self._proven(start)
            adds = self._served_once(entry, endpoint, start.provider, model, "exact")[1]
            known = worked_out[self] = (entry.created_at, entry.fingerprint, adds)
        pending = self._pending  # (`_bump`, in line: every hit comes here)
        pending.append(known[2])
        if len(pending) >= _SETTLE_AT:
            with self._lock:
                self._settle()

    def _labels(self, request: CacheRequest) -> tuple[Endpoint, str | None, _Start]:
        """A call's endpoint, model (as the request names it, cut short) and span start (its provider too)."""
        route = request.route
        endpoint = route.endpoint
        model = endpoint.model(route, request.body)  # (`request.model`, without its two property reads)
        if model is not None and (len(model) > MAX_MODEL_CHARS or not model.isprintable()):
            model = printable(model, MAX_MODEL_CHARS)  # (`brief_model`, in line: a traced hit comes here)
        memo_key = (endpoint, request.path, route.model, model, request.upstream)
        return endpoint, model, self._starts.proven.get(memo_key) or self._span_start(memo_key)

    def passthrough(self, family: str, path: str, reason: str) -> None:
        """An LLM path the engine forwards untouched (body too large, not JSON): counted as a bypass."""
        self._count_request("bypass", provider_name(family, path, None), None, "none")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("CACHE BYPASS path=%s reason=%s", printable(path, MAX_PATH_CHARS), reason)

    def lookup_done(self, call: Call | None, span: Any, started: float, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        timings = self._lookup_times  # (`_timed`, in line: every hit comes here)
        timings.append(elapsed)
        if len(timings) >= _SETTLE_AT:
            with self._lock:
                self._settle()
        if self._lookup_instrument is not None or span is not None:
            self._recorded(self._lookup_instrument, span, elapsed, error)
        if call is not None:
            call.lookup_seconds = elapsed
        if span is not None:
            span.end()

    def store_done(self, span: Any, started: float, size: int, error: BaseException | None) -> None:
        self._timed(self._store_times, self._store_duration, span, started, error)
        if error is None:
            self._add("llm_cache_stored_bytes", (self.store_name,), size)
            self._add("llm_cache_stored_entries", (self.store_name,), 1)
        if span is not None:
            span.set_attribute("llm_cache.bytes", size)
            span.end()

    def _timed(
        self, timings: deque[float], instrument: Any, span: Any, started: float, error: BaseException | None
    ) -> None:
        """Record one store operation's duration (queued, as counter additions are: a hit allocates
        nothing for it); mark its child span failed if it raised."""
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        if len(timings) >= _SETTLE_AT:
            with self._lock:
                self._settle()
        self._recorded(instrument, span, elapsed, error)

    def _recorded(self, instrument: Any, span: Any, elapsed: float, error: BaseException | None) -> None:
        """A store operation's duration recorded live (`instrument`), and its child span marked failed if it raised."""
        if instrument is not None:
            instrument.record(elapsed, self._attributes(("store",), (self.store_name,)))
        if span is not None and error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.set_attribute("error.type", type(error).__name__)

    def withdrawn(self) -> None:
        """Count an entry withdrawn after it was stored (`llm_cache_not_stored{reason="withdrawn"}`): its
        stream went on past its terminal event with what may not follow it."""
        self._add("llm_cache_not_stored", ("withdrawn",), 1)

    def store_error(self, operation: str, error: BaseException, semantic_part: str | None = None) -> None:
        """Count a failed store operation; WARNING at most once per `warning_interval` seconds for each
        store or semantic part (a busy local model's refusals never hide a store that is down).
        `semantic_part` names the semantic cache's part that failed instead (`index:redis`, `embedder:...`)."""
        store = semantic_part or self.store_name
        self._add("llm_cache_store_errors", (store, operation), 1)
        self.warnings.warning(
            store,
            "%s %s %s failed (%s: %.300s); serving from upstream",
            "semantic cache" if semantic_part else "cache store",
            store,
            operation,
            type(error).__name__,
            error,
        )

    # -- Prometheus ---------------------------------------------------------------------------------

    def prometheus_text(self) -> bytes:
        """This cache's metrics in the Prometheus text exposition format (for a `/metrics` route)."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.collector)
            self._registry = registry
        return generate_latest(self._registry)

    def snapshot(self) -> dict[str, Any]:
        """Plain copies of the counters (for `llm-cache stats` and tests)."""
        with self._lock:
            self._settle()
            return {name: dict(values) for name, values in self._counters.items()}

    # -- internals ----------------------------------------------------------------------------------

    def _attributes(self, names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
        """One shared attribute dict per label combination (no per-request dict churn)."""
        key = names + values
        attributes = self._attrs.get(key)
        if attributes is None:
            attributes = self._attrs[key] = dict(zip(names, values, strict=True))
        return attributes

    def _span_start(self, memo_key: _StartKey) -> _Start:
        """What a call's span starts with and its metrics are labelled with (its provider too), worked out
        for a combination `_starts` does not hold yet: a hit reads it there (`Call`) and works none of it out.
        Changes to the memo hold the lock (calls of one Cache may run on several threads); a proven start's
        read, the hit's, takes none."""
        with self._lock:
            start = self._starts.get(memo_key)
            if start is not None:
                return start
            endpoint, path, route_model, model, upstream = memo_key
            provider = provider_name(endpoint.family, path, route_model)
            label = self._model_label(model)
            start = _Start(memo_key, endpoint.operation, provider, model, label, upstream, self.store_name)
            self._starts.add(memo_key, start)
        return start

    def _proven(self, start: _Start) -> None:
        """A call started with `start` got a 2xx answer or a hit: its start is kept for good."""
        if not start.proven:
            with self._lock:
                start.proven = start.proven or self._starts.prove(start.key, start)

    def _model_label(self, model: str | None) -> str:
        return self._models.label(model)

    def _admit(self, *models: str | None) -> None:
        """Models a request got a 2xx answer or a hit for: labelled by name from now on (`ModelLabels`).
        A span start memoised with `other` for one of them is worked out again (the others stay)."""
        for model in models:
            if model not in self._models.admitted and self._models.admit(model):
                with self._lock:
                    self._starts.discard(functools.partial(_names_model, model))

    def _response_label(self, model: str | None) -> str | None:
        """`gen_ai.response.model` as a metric attribute: capped as the request's (a lenient upstream echoes it)."""
        return self._model_label(model) if model else None

    def _count_request(self, result: str, provider: str, model: str | None, match: str) -> None:
        self._add("llm_cache_requests", (result, provider, self._model_label(model), match), 1)

    def _add(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """Add to one counter (read by both the OTel observable counter and the Prometheus collector)."""
        self._bump(((name, labels, value),))

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        names = _COUNTERS[name][0]

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                self._settle()
                values = list(self._counters[name].items())
            return [Observation(value, self._attributes(names, labels)) for labels, value in values]

        return observe

    def watch_store(self, store: Any) -> None:
        """Label durations with `store`'s name, report its current size and, unless `store_spans` was
        given, give its operations child spans when it leaves the process (the Cache calls this)."""
        with self._lock:  # queued durations are the previous store's
            self._settle()
        self.store_name = store.name
        self.store = store
        with self._lock:
            self._starts.clear()  # they name the store
        in_process = abilities_of(store).in_process
        if self._store_spans_option is None:
            self.store_spans = not in_process
        # An in-process lookup is a dict read: a live OTel record would cost more than the read, and
        # the Prometheus histogram and the span's `llm_cache.lookup_duration` still have it.
        self._lookup_instrument = None if in_process else self._lookup_duration

    def _size_observer(self, column: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(size[column], {"store": label}) for label, size in _store_sizes(self.store)]

        return observe

    def _bump(self, adds: _Adds) -> None:
        """Queue counter additions. `deque.append` is atomic, so the request path takes no lock:
        readers (and every `_SETTLE_AT` additions, the writer) fold the queue into the counters."""
        pending = self._pending
        pending.append(adds)
        if len(pending) >= _SETTLE_AT:
            with self._lock:
                self._settle()

    def _settle(self) -> None:
        """Fold queued counter additions and durations in; the caller holds the lock. A hit queues the
        same additions as every other hit of its entry: each distinct one is folded once, times its count."""
        pending, counters = self._pending, self._counters
        # Hits of one entry queue its memo's one tuple: a run of the same tuple (told by identity, which
        # costs a seventh of hashing it) is folded once, times its length.
        last: _Adds = ()
        times = 0
        for _ in range(len(pending)):  # (what is added meanwhile waits)
            adds = pending.popleft()
            if adds is last:
                times += 1
                continue
            _fold(counters, last, times)
            last, times = adds, 1
        _fold(counters, last, times)
        for timings, hists in ((self._lookup_times, self._lookup_hist), (self._store_times, self._store_hist)):
            if timings:
                hist = hists.get(self.store_name)
                if hist is None:
                    hist = hists[self.store_name] = _Histogram(LOOKUP_BUCKETS)
                hist.observe_all([timings.popleft() for _ in range(len(timings))])

    def _summary(self, entry: Entry, endpoint: Endpoint) -> _Summary | None:
        """What a stored body says (usage, response model and id), memoised per entry so hits parse once."""
        memo_key = (entry.fingerprint, entry.created_at)
        memo = self._usage_memo
        known = memo.get(memo_key, _UNKNOWN)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        summary = None
        try:
            body = orjson.loads(entry.body)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            summary = _Summary(
                endpoint.usage(body),
                brief_model(endpoint.response_model(body)),
                endpoint.response_id(body),
                endpoint.finish_reasons(body),
            )
        with self._lock:  # sync clients may hit from several threads
            if len(memo) >= _USAGE_MEMO:
                memo.pop(next(iter(memo)))
            memo[memo_key] = summary
        return summary

    def _served(
        self, entry: Entry, endpoint: Endpoint, provider: str, request_model: str | None, match: str
    ) -> _Summary | None:
        """Count a served hit with the tokens and cost it saved, and say what its entry's body says: both
        worked out once per entry and way of serving it, so a hit makes one memo read and one addition."""
        served = self._served_once(entry, endpoint, provider, request_model, match)
        pending = self._pending  # (`_bump`, in line: every hit comes here)
        pending.append(served[1])
        if len(pending) >= _SETTLE_AT:
            with self._lock:
                self._settle()
        return served[0]

    def _served_once(
        self, entry: Entry, endpoint: Endpoint, provider: str, request_model: str | None, match: str
    ) -> tuple[_Summary | None, _Adds]:
        """What a served hit's entry says and the counter additions it makes, memoised."""
        memo_key = (entry.fingerprint, entry.created_at, provider, request_model, match)
        memo = self._served_memo
        served = memo.get(memo_key)
        if served is None:
            summary = self._summary(entry, endpoint)
            served = (summary, self._hit_adds(summary, provider, request_model, match))
            with self._lock:
                if len(memo) >= _USAGE_MEMO:
                    memo.pop(next(iter(memo)))
                memo[memo_key] = served
        return served

    def _hit_adds(self, summary: _Summary | None, provider: str, request_model: str | None, match: str) -> _Adds:
        """A hit's counter additions: the request, and what the answer saved (when its body says)."""
        # a hit: an answer was stored for these
        self._admit(request_model, None if summary is None else summary.response_model)
        requests = ("llm_cache_requests", ("hit", provider, self._model_label(request_model), match), 1)
        if summary is None:
            return (requests,)
        model = request_model or summary.response_model
        usage, label = summary.usage, self._model_label(model)
        counted: list[tuple[str, tuple[str, ...], float]] = [requests]
        counted += [
            ("llm_cache_tokens_avoided", (provider, label, kind), value)
            for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens))
            if value
        ]
        cost = self.pricing.cost(model, usage)
        if cost:
            counted.append(("llm_cache_cost_avoided_usd", (provider, label), cost))
        return tuple(counted)

    def _verification_cost(self, provider: str, model: str | None, usage: Usage) -> None:
        cost = self.pricing.cost(model, usage)
        if cost:
            self._add("llm_cache_verification_cost_usd", (provider, self._model_label(model)), cost)

    def semantic_verified(self, outcome: str) -> None:
        """A bounded-mode verification's outcome: `agreed`, `disagreed`, `not_verified` or `capped`."""
        self._add("llm_cache_semantic_verifications", (outcome,), 1)

    def semantic_nearest(self, similarity: float) -> None:
        """The similarity of the nearest stored prompt a semantic lookup found (recorded live: a
        semantic lookup costs milliseconds, so one histogram record is nothing beside it)."""
        self._similarity.record(similarity)
        with self._lock:
            self._similarity_hist.observe(similarity)

    def _used_tokens(self, start: _Start, summary: _Summary) -> None:
        """`gen_ai.client.token.usage` for an upstream answer (input includes cache reads and writes)."""
        usage, record = summary.usage, self._token_usage.record
        response = self._response_label(summary.response_model)
        if usage.input_tokens is not None:
            record(usage.input_tokens, start.tokens(response, "input"))
        if usage.output_tokens is not None:
            record(usage.output_tokens, start.tokens(response, "output"))

    def _provider_cached(self, provider: str, model: str | None, usage: Usage) -> None:
        label = self._model_label(model)
        self._bump(
            tuple(
                ("llm_cache_provider_cached_tokens", (provider, label, kind), value)
                for kind, value in (
                    ("cache_read", usage.cache_read_input_tokens),
                    ("cache_creation", usage.cache_creation_input_tokens),
                )
                if value
            )
        )


def _names_model(model: str | None, key: _StartKey) -> bool:
    return key[3] == model


class _Start:
    """A call span's name and starting attributes (the ones the GenAI conventions want at creation,
    so a sampler can decide on them), and its metrics' attribute sets, made once per combination."""

    __slots__ = ("attributes", "base", "finals", "key", "name", "proven", "provider")

    def __init__(
        self,
        key: _StartKey,
        operation: str,
        provider: str,
        model: str | None,
        label: str,
        upstream: str | None,
        store: str,
    ) -> None:
        """`key`: what it was worked out from; `label`: the model as metrics name it (`ModelLabels`: itself,
        or `other`)."""
        self.key = key
        self.proven = False
        """Kept for good in the memo (`Telemetry._proven`)."""
        self.name = f"{operation} {model or 'unknown'}"
        self.provider = provider
        base: dict[str, Any] = {"gen_ai.operation.name": operation, "gen_ai.provider.name": provider}
        if model:
            base["gen_ai.request.model"] = label
        if upstream:
            url = urlsplit(upstream)
            if url.hostname:
                base["server.address"] = url.hostname
                base["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        self.base = base
        """The attributes every metric of such a call carries."""
        self.attributes = {**base, "llm_cache.store": store}
        """What its span starts with (the SDK copies them): the model as the request names it."""
        if model:
            self.attributes["gen_ai.request.model"] = model
        self.finals: dict[tuple[str | None, str, str | None], dict[str, Any]] = {}

    def final(self, response_model: str | None, result: str, error_type: str | None) -> dict[str, Any]:
        """`gen_ai.client.operation.duration`'s attributes for a call that ended so (shared: no per-call dict);
        `response_model` as metrics name it (`Telemetry._response_label`)."""
        memo_key = (response_model, result, error_type)
        found = self.finals.get(memo_key)
        if found is None:
            found = {**self.base, "llm_cache.result": result}
            if response_model:
                found["gen_ai.response.model"] = response_model
            if error_type:
                found["error.type"] = error_type
            if len(self.finals) < 64:
                self.finals[memo_key] = found
        return found

    def tokens(self, response_model: str | None, kind: str) -> dict[str, Any]:
        """`gen_ai.client.token.usage`'s attributes (shared, as `final`'s)."""
        memo_key = (response_model, "tokens", kind)
        found = self.finals.get(memo_key)
        if found is None:
            found = {**self.base, "gen_ai.token.type": kind}
            if response_model:
                found["gen_ai.response.model"] = response_model
            if len(self.finals) < 64:
                self.finals[memo_key] = found
        return found


class _Summary:
    """What a stored answer says, read once per entry: its usage and the attributes of the spans that
    serve it. A miss's span reports the tokens the answer used (`gen_ai.usage.*`); a hit's the tokens it
    saved (`llm_cache.saved.*`), so that cost backends never count a hit as spending them again."""

    __slots__ = ("hit_attributes", "miss_attributes", "response_model", "usage")

    def __init__(
        self, usage: Usage, response_model: str | None, response_id: str | None, reasons: tuple[str, ...]
    ) -> None:
        self.usage = usage
        self.response_model = response_model
        answer: dict[str, Any] = {}
        _set_present(
            answer,
            (
                ("gen_ai.response.model", response_model),
                ("gen_ai.response.id", response_id),
                ("gen_ai.response.finish_reasons", reasons or None),
            ),
        )
        counts = (
            ("input_tokens", usage.input_tokens),
            ("output_tokens", usage.output_tokens),
            ("cache_read.input_tokens", usage.cache_read_input_tokens),
            ("cache_creation.input_tokens", usage.cache_creation_input_tokens),
        )
        self.miss_attributes = dict(answer)
        _set_present(self.miss_attributes, tuple(("gen_ai.usage." + name, value) for name, value in counts))
        self.hit_attributes = dict(answer)
        _set_present(self.hit_attributes, tuple(("llm_cache.saved." + name, value) for name, value in counts))


def sdk_telemetry(
    span_exporter: Any = None,
    metric_reader: Any = None,
    sampler: Any = None,
    *,
    metrics: bool = True,
    **options: Any,
) -> Telemetry:
    """A Telemetry on fresh OpenTelemetry SDK providers, never the global ones (benchmarks, demos).

    Spans go through a `BatchSpanProcessor` to `span_exporter` (default: an exporter that drops
    everything, so what is measured is the instrumentation, not the export); metrics aggregate in
    `metric_reader` (default: an `InMemoryMetricReader`), unless `metrics` is false (the API's
    no-op meter: tracing alone). `sampler` is the tracer provider's sampler (default: the SDK's,
    every root span sampled). Needs `opentelemetry-sdk`.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class _Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter if span_exporter is not None else _Drop()))
    if not metrics:
        return Telemetry(tracer_provider=tracer_provider, **options)
    meter_provider = MeterProvider(
        metric_readers=[metric_reader if metric_reader is not None else InMemoryMetricReader()]
    )
    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider, **options)


__all__ = ["Call", "Pricing", "Telemetry", "TelemetryCollector", "provider_name", "sdk_telemetry"]
