"""``Router``: picks a deployment, retries, fails over, cools down.

The decision logic is one sans-I/O generator (``Router.plan``) that yields two kinds of actions,
``Send`` and ``Sleep``; ``llm_cache.router._transport`` runs it with sync or async I/O. So the sync and async
paths cannot drift apart, and tests can drive time and randomness.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .._log_limit import LogLimit
from .._refusals import READ as REFUSAL_READ
from .._refusals import REFUSAL, rule_for
from .._wire import (
    CREDENTIALS_FOR,
    OPERATORS_KEY,
    DefaultTransports,
    api_of,
    error_document,
    error_object,
    model_in_path,
)
from . import _retry as retry_mod
from . import _rewrite as rewrite
from . import translate
from ._breaker import Breaker
from ._config import Deployment, ModelGroup, RouterConfig, load_config
from ._errors import (
    Failure,
    Kind,
    classify_exception,
    classify_status,
    first_event,
    parse_retry_after,
    read_json,
)
from ._latency import plausible_tokens, used_tokens
from ._repeat import not_acted_on, repeatable
from ._retry import AttemptResult
from ._state import DeploymentState
from ._telemetry import Telemetry
from .strategies import AffinityMap, PickContext, Step, affinity_key, build

log = logging.getLogger("llm_cache.router")

#: Set on an answer from a fallback group, naming the group the request asked for.
FALLBACK_HEADER = "x-router-fallback-from"

#: Request headers that reveal an SDK retrying on top of the router.
STACKING_HEADERS = ("x-stainless-retry-count", "x-retry-count", "x-retry-attempt")


# ----------------------------------------------------------------------------- actions


@dataclass
class Send:
    """Send ``request``; reply with a ``Sent``. ``stream``: peek the first chunk, else read the body.
    ``whole``: the answer is translated, so a body over ``max_read_bytes`` fails the attempt."""

    request: Any
    stream: bool
    whole: bool = False


@dataclass
class Sleep:
    seconds: float


@dataclass
class Passthrough:
    """No group matched: send the original request unchanged and return what comes back."""

    request: Any


@dataclass
class Sent:
    response: Any = None
    exception: BaseException | None = None
    body: bytes | None = None  # the read, decoded body (non-stream or error); None for streams and long bodies
    first: bytes | None = None  # a 2xx stream's first chunk(s) (`FirstEvent`), peeked before the router commits to it


@dataclass
class Final:
    """What the router answers with: a response (maybe synthesized) or an exception to raise."""

    response: Any = None
    exception: BaseException | None = None
    release: Callable[[bool], None] | None = None  # streams: call once on close, with "failed"


@dataclass
class Prepared:
    lib: ModuleType
    request: Any
    body: bytes
    doc: dict[str, Any] | None
    model: str | None
    stream: bool
    est_tokens: int
    api: str = "openai"  # the wire format of the request: openai (also Azure), anthropic, gemini
    stacking: bool = False
    repeatable: bool = True  # may be sent again after any failure (`_repeat.py`)
    group: str | None = None  # the group the request asked for (fallbacks are others)
    callers_key_only: bool = False  # the caller's own key failed it for the caller's reasons (`Router._allowed`)
    attempts: int = 0
    counters: dict[str, int] = field(default_factory=dict)


class Router:
    """Routes LLM requests across model groups and deployments.

    ``clock``, ``rng`` and the sleep functions are injectable so tests are deterministic;
    ``strategies`` maps a group name to a custom selection step (see ``llm_cache.router.strategies``).
    """

    def __init__(
        self,
        config: RouterConfig | Mapping[str, Any] | str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Any] | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        strategies: Mapping[str, Step] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config if isinstance(config, RouterConfig) else load_config(config, environ)
        self.settings = self.config.settings
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.sleep = sleep
        if async_sleep is None:
            import asyncio

            async_sleep = asyncio.sleep
        self.async_sleep = async_sleep
        self.telemetry = Telemetry(tracer_provider, meter_provider)
        self.affinity = AffinityMap(self.settings.affinity_ttl, clock)
        self.stacking_warned = False
        self.warnings = LogLimit(log, clock=clock)
        """A deployment's refused key or failing streams meet every call: one WARNING each an interval."""
        s = self.settings
        self.states: dict[str, list[DeploymentState]] = {}
        self.steps: dict[str, Step] = {}
        by_id: dict[str, DeploymentState] = {}
        for name, group in self.config.groups.items():
            states = []
            for dep in group.deployments:
                st = by_id.get(dep.id)
                if st is None:
                    breaker = Breaker(s.allowed_fails, s.allowed_fails_window, s.cooldown_time, clock)
                    breaker.on_open = self._on_cooldown(dep.id)
                    st = by_id[dep.id] = DeploymentState(dep, breaker, clock)
                states.append(st)
            self.states[name] = states
            custom = (strategies or {}).get(name)
            self.steps[name] = custom or build(
                group.routing_strategy or s.routing_strategy,
                tolerance=s.latency_tolerance,
                affinity=s.affinity,
                max_age=s.latency_max_age,
            )
        self.entrusted = {name: rewrite.entrusted_to(g.deployments) for name, g in self.config.groups.items()}
        """Group -> the origins a caller's own credentials may go to when it asks for that group."""
        self.public_ids = {dep_id: st.deployment.public_id for dep_id, st in by_id.items()}
        """What `x-router-deployment` says for each deployment id (no internal host in it)."""
        self._default_transports: DefaultTransports = {}

    def _on_cooldown(self, dep_id: str) -> Callable[[float], None]:
        def opened(seconds: float) -> None:
            log.info("router: deployment %s cooling down for %.1fs", dep_id, seconds)
            self.telemetry.cooldown(dep_id)

        return opened

    # ------------------------------------------------------------------ public API

    async def send(self, request: Any, transport: Any = None) -> Any:
        """Route an ``httpx2.Request`` or ``httpx.Request``; returns that library's ``Response``."""
        from ._transport import run_async

        return await run_async(self, request, transport)

    def send_sync(self, request: Any, transport: Any = None) -> Any:
        from ._transport import run_sync

        return run_sync(self, request, transport)

    async def aclose(self) -> None:
        """Close the HTTP transports ``send``/``send_sync`` created (not those of RouterTransports)."""
        from ._transport import aclose_all

        await aclose_all(self._default_transports)

    def close(self) -> None:
        from ._transport import close_sync

        close_sync(self._default_transports)

    def group(self, name: str) -> ModelGroup:
        return self.config.groups[name]

    def deployment_state(self, dep_id: str) -> DeploymentState:
        for states in self.states.values():
            for st in states:
                if st.id == dep_id:
                    return st
        raise KeyError(dep_id)

    # ------------------------------------------------------------------ preparation

    def prepare(self, lib: ModuleType, request: Any, body: bytes) -> Prepared:
        """What the router needs to know about a request. Total: any body gives an answer.

        A body it cannot read (not JSON, not an object, nested deeper than the parser goes) is routed
        on its path alone and forwarded byte for byte, like any non-JSON body.
        """
        doc: dict[str, Any] | None = None
        ctype = request.headers.get("content-type", "")
        if body and ("json" in ctype or body[:1] == b"{"):
            parsed = read_json(body)
            doc = parsed if isinstance(parsed, dict) else None
        path = request.url.path
        model = doc.get("model") if doc else None
        if not isinstance(model, str):
            model = None
        if model is None:  # Gemini's models/{model}:generateContent, an Azure deployment
            model = model_in_path(path)
        if model is None and "/models/" in path:  # a model's own resource: GET /v1/models/{model}, whole
            model = path.split("/models/", 1)[1] or None
        stream = bool(doc and doc.get("stream") is True) or ":streamGenerateContent" in path
        est = len(body) // 4
        if doc:
            est += _count(doc.get("max_tokens")) or _count(doc.get("max_completion_tokens"))
        stacking = any(request.headers.get(h, "0").strip() not in ("", "0") for h in STACKING_HEADERS)
        again = repeatable(request.method, path, doc)
        return Prepared(lib, request, body, doc, model or None, stream, est, api_of(path), stacking, again)

    def _warn_stacking(self, p: Prepared) -> None:
        if p.stacking and not self.stacking_warned:
            self.stacking_warned = True
            log.warning(
                "router: the client is retrying on its own (x-stainless-retry-count > 0) on top of the "
                "router's retries; construct SDK clients with max_retries=0 when they use RouterTransport"
            )

    # ------------------------------------------------------------------ the plan

    def plan(self, p: Prepared) -> Generator[Send | Sleep | Passthrough, Any, Final]:
        self._warn_stacking(p)
        group = self.config.group_for(p.model)
        if group is None:
            if self.settings.unknown_models == "refuse":
                return Final(response=self._unknown_model(p))
            sent = yield Passthrough(p.request)
            return Final(response=sent.response, exception=sent.exception)
        s = self.settings
        deadline = self.clock() + s.deadline if s.deadline else None
        origin = p.group = group.name
        current: str | None = origin
        tried: list[str] = []
        last: AttemptResult | None = None
        cooling: list[float] = []
        while current is not None:
            tried.append(current)
            result = yield from self._run_group(current, p, deadline)
            if result.ok:
                return self._final_ok(p, result, current, origin)
            if result.failure is not None and result.failure.kind is Kind.COOLING:
                cooling.append(result.failure.retry_after or 0.0)
            # Answer with the last thing a provider said; a synthesized 503 only if none spoke.
            if last is None or result.response is not None or result.exception is not None:
                last = result
            nxt, reason = self._next_group(p, origin, current, result, tried, deadline)
            if nxt is not None:
                log.info("router: falling back from %s to %s (%s)", current, nxt, reason)
                self.telemetry.fallback(current, nxt, reason)
            current = nxt
        assert last is not None
        if last.response is not None and REFUSAL in last.response.extensions:
            return Final(response=self._gave_up_on_key(p, last))
        if last.response is not None:
            self._stamp(last.response, last.deployment, p.attempts)
            return Final(response=last.response)
        if last.exception is not None:
            return Final(exception=last.exception)
        if not cooling:
            return Final(
                response=self._error(
                    p,
                    400,
                    "router_no_compatible_deployment",
                    f"No deployment of {tried} speaks the {p.api} API of this request.",
                    None,
                )
            )
        seconds = max(1, math.ceil(min(*cooling, s.cooldown_max)))  # never beyond the cap
        return Final(
            response=self._error(
                p,
                503,
                "all_deployments_cooling",
                f"All deployments for {tried} are cooling down after failures; retry in {seconds}s.",
                seconds,
            )
        )

    def _run_group(self, name: str, p: Prepared, deadline: float | None) -> Generator[Send | Sleep, Any, AttemptResult]:
        patience = caller_timeout(p.request)
        retrying = retry_mod.policy(self.settings, rng=self.rng, clock=self.clock, deadline=deadline, patience=patience)
        decisions = retry_mod.steps(retrying)
        failed: set[str] = set()
        wait = 0.0
        try:
            do = next(decisions)
            while True:
                if isinstance(do, retry_mod.DoAttempt):
                    result = yield from self._attempt(name, p, failed, wait, deadline)
                    if result.deployment and not result.ok:
                        failed.add(result.deployment)
                    do = decisions.send(result)
                else:
                    wait = float(do)
                    if wait > 0:
                        yield Sleep(wait)
                    do = decisions.send(None)
        except StopIteration as stop:
            return stop.value

    @staticmethod
    def _native(family: str, api: str) -> bool:
        return rewrite.native(family, api)

    def _translation(self, p: Prepared, family: str) -> translate.Translation | None:
        """How a ``family`` deployment is spoken to for ``p``: ``None`` natively (or not at all)."""
        if self._native(family, p.api) or p.doc is None:
            return None
        return translate.find(p.api, p.request.url.path, family)

    def _speaks(self, family: str, p: Prepared) -> bool:
        return self._native(family, p.api) or self._translation(p, family) is not None

    def _allowed(self, name: str, p: Prepared) -> list[DeploymentState]:
        """The deployments of group ``name`` that may take ``p``: those that speak its API. Once the
        caller's own key failed it for the caller's reasons (out of quota, a prompt too long or refused),
        only those that present that key: a key of the operator's (or a deployment's own) is not
        the caller's to spend, or any exhausted key, free to get, would buy the operator's."""
        allowed = [st for st in self.states[name] if self._speaks(st.deployment.family, p)]
        if p.callers_key_only:
            return [st for st in allowed if self._takes_callers_key(p, st.deployment, name)]
        return allowed

    def _takes_callers_key(self, p: Prepared, dep: Deployment, group: str) -> bool:
        """Whether ``dep``, tried for ``group``, is sent the caller's own credential (`_outgoing`)."""
        if p.request.extensions.get(CREDENTIALS_FOR) is not None:  # an operator's key went in instead
            return False
        return rewrite.keeps_credentials(dep, p.api, self._entrusted(p, dep, group))

    def _entrusted(self, p: Prepared, dep: Deployment, group: str) -> bool:
        """Whether the caller's credentials may go to ``dep`` (`rewrite.entrusted_to`)."""
        return group == p.group or rewrite.origin(dep.api_base or "") in self.entrusted.get(p.group or "", ())

    def _candidates(self, name: str, exclude: set[str], p: Prepared) -> list[DeploymentState]:
        healthy = [st for st in self._allowed(name, p) if st.breaker.available()]
        fresh = [st for st in healthy if st.id not in exclude]
        return fresh or healthy

    def _attempt(
        self, name: str, p: Prepared, failed: set[str], wait: float, deadline: float | None
    ) -> Generator[Send, Any, AttemptResult]:
        cands = self._candidates(name, failed, p)
        if not cands:
            speaking = self._allowed(name, p)
            if not speaking:
                return AttemptResult(None, Failure(Kind.INCOMPATIBLE, 400), fail_over=True)
            retry_in = min(st.breaker.retry_in() for st in speaking)
            return AttemptResult(None, Failure(Kind.COOLING, 503, retry_in), fail_over=True)
        ctx = PickContext(
            group=name,
            rng=self.rng,
            affinity_key=self._affinity_key(name, p),
            est_tokens=p.est_tokens,
            affinity=self.affinity,
            stream=p.stream,
        )
        st = self.steps[name](cands, ctx)[0]
        dep = st.deployment
        translation = self._translation(p, dep.family)
        try:
            request, dropped = self._outgoing(p, dep, deadline, translation, name)
        except RecursionError:  # the body parsed but cannot be re-encoded with this deployment's model
            message = "The request body nests too deeply for the router to rewrite its model."
            return self._refused(p, "router_unreadable_body", message)
        except translate.Unsupported as exc:  # nothing silently lost: refused before anything is sent
            return self._refused(p, "router_unsupported_params", str(exc))
        p.attempts += 1
        attempt_no = p.attempts
        span = self.telemetry.start_attempt(name, dep.id, attempt_no, wait)
        if translation is not None:
            self.telemetry.translated(span, translation.source, translation.target, dropped)
        probe = st.breaker.acquire()
        fresh = st.picked_at is None or st.stale(self.settings.latency_max_age)  # its figures start afresh
        st.picked_at = self.clock()
        st.in_flight += 1
        reserved = st.record_usage(p.est_tokens)
        credentials_for = p.request.extensions.get(CREDENTIALS_FOR)
        own_key = rewrite.presents_callers_key(request, dep, credentials_for)
        operators_key = bool(dep.api_key) or credentials_for is not None
        started = self.clock()
        try:
            sent: Sent = yield Send(request, p.stream, whole=translation is not None)
        except BaseException:  # cancelled (close(), CancelledError, timeout ...): as if never sent
            st.in_flight -= 1
            st.breaker.abandon(probe)
            st.withdraw_usage(reserved)
            self.telemetry.end_attempt(
                span, name, dep.id, "cancelled", None, self.clock() - started, retry=attempt_no > 1
            )
            raise
        elapsed = self.clock() - started
        answer = _answer(sent)
        result = self._judge(st, sent, answer, probe, own_key, operators_key)
        if result.callers and own_key:  # from now on, only where the caller's own key goes (`_allowed`)
            p.callers_key_only = True
        if result.callers:
            st.withdraw_usage(reserved)
        if translation is not None and result.response is not None:
            assert p.doc is not None
            error_body = result.failure is not None and result.failure.kind is Kind.ERROR_BODY
            result.response = translate.http.response(
                p.lib, result.response, sent.body, translation, p.doc, p.stream, dropped, error_body
            )
        if operators_key and result.response is not None:  # (whoever relays it: not the caller's account)
            result.response.extensions[OPERATORS_KEY] = True
        others = [c for c in self._candidates(name, failed | {st.id}, p) if c.id != st.id]
        result.alternatives = bool(others)
        if result.fail_over and others and result.failure is not None:
            # Retry-After beyond the cap cools this deployment; a sibling can take the retry right away.
            result.fail_over = False
            result.failure.retry_after = 0.0
        if not p.repeatable and result.failure is not None:  # sent twice, it could be done twice
            result.final = not not_acted_on(result.failure.kind, result.exception)
        outcome = "ok" if result.ok else result.failure.kind.value  # type: ignore[union-attr]
        status = sent.response.status_code if sent.response is not None else None
        self.telemetry.end_attempt(span, name, dep.id, outcome, status, elapsed, retry=attempt_no > 1)
        if result.ok:
            tokens = None if p.stream else plausible_tokens(answer, p.doc)
            st.observe_latency(elapsed, self.settings.latency_alpha, stream=p.stream, tokens=tokens, fresh=fresh)
            used = None if p.stream else used_tokens(answer)
            if used is not None:
                st.settle_usage(reserved, used)
            if ctx.affinity_key is not None:
                self.affinity.put(ctx.affinity_key, st.id)
        if not (result.ok and p.stream):
            st.in_flight -= 1
        return result

    def _affinity_key(self, name: str, p: Prepared) -> str | None:
        if not (self.settings.affinity and p.doc):
            return None
        try:
            return affinity_key(name, p.doc)
        except RecursionError:  # affinity is an optimisation: a body too deep to hash goes without it
            return None

    def _judge(
        self, st: DeploymentState, sent: Sent, answer: Any, probe: bool, own_key: bool, operators_key: bool
    ) -> AttemptResult:
        """The attempt's outcome, and its verdict on the deployment's health (breaker).

        Only the deployment's failures count against it: a 5xx, a timeout, a broken connection, a 429
        on a key every caller shares (the deployment's or the operator's, ``operators_key``), a 401 on
        that key (misconfigured for everyone: it cools down at once; a 403 fails over with no verdict).
        A failure of the caller's own making (a 4xx on its body, its own key refused or rate-limited
        with ``own_key``) says nothing of the deployment: no verdict, and it does not count in the deployment's usage.
        Nor does a 2xx whose ``answer`` is an error object: no success (a probe answered so closes no
        breaker, its instant "answer" is no speed), no failure either (a caller's request can draw one).
        """
        s = self.settings
        if sent.exception is not None:
            kind = classify_exception(sent.exception)
            if kind is Kind.CLIENT:  # never reached the deployment (a caller could cause it): no verdict
                st.breaker.abandon(probe)
            else:
                st.breaker.record_failure()
            failure = Failure(kind, None, None, str(sent.exception))
            return AttemptResult(st.id, failure, exception=sent.exception, callers=kind is Kind.CLIENT)
        resp = sent.response
        kind = classify_status(resp.status_code, sent.body or b"", s.retry_on_status)
        if kind is Kind.SERVER and resp.status_code < 500 and self._refuses_a_key(st, resp, sent.body, own_key):
            kind = Kind.CLIENT  # judged below as whose key it was, whatever `retry_on_status` names
        if "location" in resp.headers and 300 <= resp.status_code < 400:  # relayed, never to be followed
            del resp.headers["location"]
        if kind is Kind.OK and isinstance(answer, Mapping) and error_object(answer) is not None:
            st.breaker.abandon(probe)
            return AttemptResult(st.id, Failure(Kind.ERROR_BODY, resp.status_code), response=resp, callers=True)
        if kind is Kind.OK:
            st.breaker.record_success()
            return AttemptResult(st.id, None, response=resp)
        if kind in (Kind.RATE_LIMIT, Kind.SERVER):
            retry_after = parse_retry_after(resp.headers, cap=s.cooldown_max)
            fail_over = retry_after is not None and retry_after > s.retry_after_max
            if kind is Kind.RATE_LIMIT and own_key:  # the caller's key is out of quota, not the deployment
                st.breaker.release_without_outcome(probe)
                wait = None if fail_over else retry_after
                failure = Failure(kind, resp.status_code, wait)
                return AttemptResult(st.id, failure, response=resp, fail_over=fail_over, callers=True)
            # 429 + Retry-After: cool down at once for exactly that long.
            if (resp.status_code == 429 and retry_after is not None) or fail_over:
                st.breaker.record_failure(retry_after)
            else:
                st.breaker.record_failure()
            wait = None if fail_over else retry_after
            return AttemptResult(st.id, Failure(kind, resp.status_code, wait), response=resp, fail_over=fail_over)
        if kind is Kind.CLIENT and operators_key and self._deployments_key_refused(st, resp, sent.body):
            # refused before any work: a sibling may take it. A 401 (Gemini's 400 `API_KEY_INVALID`, AWS's
            # expired token) is the key itself, refused for every caller until someone fixes it; a 403 can
            # be about what this caller asked for (a Gemini cachedContent the key cannot read, a beta
            # header): no verdict, or one caller cools it for all.
            failure = Failure(Kind.KEY_REFUSED, resp.status_code)
            if resp.status_code != 403:
                st.breaker.record_failure(s.cooldown_time)
                return AttemptResult(st.id, failure, response=resp, fail_over=True)
            st.breaker.release_without_outcome(probe)  # nor does it count in the usage window
            return AttemptResult(st.id, failure, response=resp, fail_over=True, callers=True)
        st.breaker.release_without_outcome(probe)
        return AttemptResult(st.id, Failure(kind, resp.status_code), response=resp, callers=True)

    @staticmethod
    def _refuses_a_key(st: DeploymentState, resp: Any, body: bytes | None, own_key: bool) -> bool:
        """Whether a 4xx that `retry_on_status` names (an operator may add 401 and 403) refuses a key:
        the caller's own (a 401 or 403 on it, or its family's rule), or the one the deployment was sent.
        Such an answer is never a failure of the deployment's: the caller's own key refused cools nothing
        and moves the caller to no key of the operator's (`_allowed`); the deployment's own is `KEY_REFUSED`."""
        if own_key and resp.status_code in (401, 403):
            return True
        said = (body or b"")[:REFUSAL_READ]
        return rule_for(st.deployment.family, resp.headers).refuse(resp.status_code, resp.headers, said)

    def _deployments_key_refused(self, st: DeploymentState, resp: Any, body: bytes | None) -> bool:
        """Whether the deployment's own answer (untranslated) refuses the key it was sent on, by its
        family's rule (`llm_cache._refusals`). If so, the answer is marked with the provider's words
        (`REFUSAL`): they are the operator's to read, never the caller's (`Router._gave_up_on_key`)."""
        said = (body or b"")[:REFUSAL_READ]
        if not rule_for(st.deployment.family, resp.headers).refuse(resp.status_code, resp.headers, said):
            return False
        resp.extensions[REFUSAL] = (resp.status_code, said)  # (a translation keeps the extensions)
        self.warnings.warning(
            ("key-refused", st.id),
            "router: the provider refused deployment %s's own credential (%d); it is skipped until fixed",
            st.id,
            resp.status_code,
        )
        return True

    def _next_group(
        self, p: Prepared, origin: str, current: str, result: AttemptResult, tried: list[str], deadline: float | None
    ) -> tuple[str | None, str]:
        if deadline is not None and self.clock() >= deadline:
            return None, "deadline"
        if result.final:
            return None, "not_repeatable"
        s = self.settings
        kind = result.failure.kind if result.failure else Kind.OK
        if kind is Kind.CONTEXT_WINDOW:
            tables, reason = [s.context_window_fallbacks], "context_window"
        elif kind is Kind.CONTENT_POLICY:
            tables, reason = [s.content_policy_fallbacks], "content_policy"
        elif kind in (Kind.CLIENT, Kind.ERROR_BODY):
            return None, kind.value
        else:
            tables, reason = [s.fallbacks], kind.value
        for table in tables:
            for key in (origin, current, "*"):
                for candidate in table.get(key, []):
                    if self._may_fall_back_to(p, candidate, tried):
                        return candidate, reason
        if reason not in ("context_window", "content_policy"):
            for candidate in s.default_fallbacks:
                if self._may_fall_back_to(p, candidate, tried):
                    return candidate, "default"
        return None, reason

    def _may_fall_back_to(self, p: Prepared, group: str, tried: list[str]) -> bool:
        """Whether ``group`` may be tried next: not yet tried, and (after a failure of the caller's own
        key) holding a deployment that takes that key (`_allowed`)."""
        if group in tried:
            return False
        if p.callers_key_only and not self._allowed(group, p):
            log.info("router: not falling back to %s: none of its deployments takes the caller's own key", group)
            return False
        return True

    # ------------------------------------------------------------------ building requests and responses

    def _outgoing(
        self, p: Prepared, dep: Any, deadline: float | None, translation: translate.Translation | None, group: str
    ) -> tuple[Any, list[str]]:
        """The attempt's request for ``dep`` and the fields ``drop_params`` dropped from it (translations only)."""
        req = p.request
        extensions = dict(req.extensions)
        timeout = dep.timeout or self.settings.timeout
        if deadline is not None:  # the operator's total only: the caller's read timeout is per read
            remaining = max(0.001, deadline - self.clock())
            timeout = min(timeout, remaining) if timeout else remaining
        if timeout:  # each phase: the shorter of the caller's own and the router's
            callers = req.extensions.get("timeout")
            callers = callers if isinstance(callers, Mapping) else {}
            extensions["timeout"] = {
                phase: min(timeout, callers[phase]) if isinstance(callers.get(phase), (int, float)) else timeout
                for phase in ("connect", "read", "write", "pool")
            }
        if translation is not None:
            assert p.doc is not None  # _translation() answers None without a document
            drop = dep.drop_params if dep.drop_params is not None else self.settings.drop_params
            return translate.http.request(p.lib, req, p.doc, dep, translation, p.stream, drop, extensions)
        # The path as sent, its escapes kept: a decoded `%3F` or `%23` would start a query or a fragment.
        path = req.url.raw_path.partition(b"?")[0].decode("ascii")
        entrusted = self._entrusted(p, dep, group)
        query = req.url.query.decode() if isinstance(req.url.query, bytes) else str(req.url.query)
        url = rewrite.target_url(dep, path, query, entrusted)
        headers = rewrite.rewrite_headers(
            list(req.headers.multi_items()), dep, url, req.extensions.get(CREDENTIALS_FOR), p.api, entrusted
        )
        body = rewrite.rewrite_body(p.body, p.doc, dep, req.url.path)
        return p.lib.Request(req.method, url, headers=headers, content=body, extensions=extensions), []

    def _refused(self, p: Prepared, code: str, message: str) -> AttemptResult:
        """A request the router will not send anywhere: a client error, never retried or failed over."""
        return AttemptResult(
            None, Failure(Kind.CLIENT, 400, message=message), response=self._error(p, 400, code, message, None)
        )

    def _final_ok(self, p: Prepared, result: AttemptResult, group: str, requested: str) -> Final:
        resp = result.response
        self._stamp(resp, result.deployment, p.attempts)
        dep = self.deployment_state(result.deployment or "").deployment if result.deployment else None
        resp.headers["x-router-group"] = group
        if dep is not None:
            resp.headers["x-router-model"] = dep.model
            resp.headers["x-router-family"] = dep.family
        if group != requested:  # a fallback group answered: caches keep it apart (see FALLBACK_HEADER)
            resp.headers[FALLBACK_HEADER] = requested
        release = None
        if p.stream:
            st = self.deployment_state(result.deployment or "")

            def release(failed: bool, st: DeploymentState = st) -> None:
                st.in_flight -= 1
                if failed:
                    self.warnings.warning(
                        ("stream-failed", st.id),
                        "router: stream from %s failed after its first byte; ended with the "
                        "provider's error, no fallback",
                        st.id,
                    )

        return Final(response=resp, release=release)

    def _stamp(self, resp: Any, dep_id: str | None, attempts: int) -> None:
        if dep_id:
            resp.headers["x-router-deployment"] = self.public_ids.get(dep_id, dep_id)
        resp.headers["x-router-attempts"] = str(attempts)

    def _gave_up_on_key(self, p: Prepared, last: AttemptResult) -> Any:
        """The router's own 502 when the last answer refused a key every caller shares: relayed, it told
        the caller its own key was wrong (a Gemini `API key not valid` its SDK never sent, OpenAI's 401
        naming the operator's key, masked). The provider's status and words ride in the `REFUSAL`
        extension, for a gateway's operator log; `x-should-retry: false`: a retry is refused too."""
        public = self.public_ids.get(last.deployment or "", last.deployment)
        message = (
            f"The provider refused the credential configured for deployment {public}; "
            "the router's operator must fix it."
        )
        answer = self._error(p, 502, "deployment_credential_refused", message, None)
        answer.headers["x-should-retry"] = "false"
        answer.extensions[REFUSAL] = last.response.extensions[REFUSAL]
        answer.extensions[OPERATORS_KEY] = True
        self._stamp(answer, last.deployment, p.attempts)
        return answer

    def _unknown_model(self, p: Prepared) -> Any:
        if p.model is None:
            return self._error(p, 400, "model_required", "The request names no model; the router needs one.", None)
        served = sorted(self.config.groups)
        message = f"The model {p.model!r} does not exist here; models served: {served}."
        return self._error(p, 404, "model_not_found", message, None)

    @staticmethod
    def _error(p: Prepared, status: int, code: str, message: str, retry_after: int | None) -> Any:
        """A router-made answer: complete, unread, with its length (a proxy streams it like any other)."""
        doc = error_document(p.api, status, message, code, kind="router_error")
        headers = {"content-type": "application/json", "x-router-attempts": str(p.attempts), "x-router-error": code}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
            if p.api == "openai":
                doc["error"]["retry_after_s"] = retry_after
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers["content-length"] = str(len(body))
        return p.lib.Response(status, headers=headers, stream=p.lib.ByteStream(body))


def _answer(sent: Sent) -> Any:
    """A 2xx answer's parsed body (read once, for its verdict and its output tokens), or a stream's first
    event's data (for its verdict), else ``None``."""
    if sent.response is None or not 200 <= sent.response.status_code < 300:
        return None
    if sent.first:
        return first_event(sent.first)
    return read_json(sent.body) if sent.body else None


def caller_timeout(request: Any) -> float | None:
    """How long the caller waits with no byte: its read timeout (httpx's `timeout` extension), a limit
    on each silence, not on the request. No wait between attempts is longer (`_retry.stop_past_patience`)."""
    timeout = request.extensions.get("timeout")
    read = timeout.get("read") if isinstance(timeout, Mapping) else None
    return float(read) if isinstance(read, (int, float)) and math.isfinite(read) and read > 0 else None


def _count(value: Any) -> int:
    """A token count from the request (``max_tokens``), or 0 when it is not a usable number."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    return max(0, int(value)) if isinstance(value, float) and math.isfinite(value) else 0


__all__ = ["FALLBACK_HEADER", "Final", "Passthrough", "Prepared", "Router", "STACKING_HEADERS", "Send", "Sent", "Sleep"]
