"""What the cache adds to a request on its way upstream, and the upstreams that refused an addition.

Two additions: stream usage capture (the provider's `capture_body`, applied when the request is
prepared) and provider-native prompt caching (hints, and Gemini cachedContents, applied by
`upstream_body` on a miss). The hints are the built-in hook of the `before_forward` point, run
before the operator's own (`_hooks.py`). An upstream that answers 400 naming an addition gets the request once
more without it; once that succeeds, the addition is not made again for that upstream, caller and model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson

from .._log_limit import LogLimit
from .._wire import masked_url
from ._hooks import ForwardView, Hooks, RequestInfo
from ._keys import parse_body
from ._printable import printable
from ._prompt_caching import REFUSALS, CachedContents, PromptCaching, cached_content_gone, refused_cached_content
from ._types import CacheRequest, Run, Steps
from .providers import Endpoint
from .stores.base import Store
from .telemetry import MAX_PATH_CHARS

logger = logging.getLogger("llm_cache.middleware")

STREAM_USAGE = "stream usage capture"
PROMPT_CACHE_HINTS = "prompt-caching hints"
_USAGE_WORDS = (b"stream_options", b"include_usage")
_HINT_WORDS = (b"cache_control", b"prompt_cache_key", b"prompt_cache_retention", b"cachepoint")
"""Words of a 400's body that name what the cache added (usage capture, prompt-caching hints)."""


_MEMO_LIMIT = 1024
"""Most upstreams whose refusals are remembered."""


def _upstream_of(upstream: str | None, headers: Mapping[str, str], endpoint: Endpoint) -> str:
    """The upstream a refusal names: the URL the driver names (transports, gateway, a `CacheMiddleware`
    given `upstream`), else the request's host and endpoint."""
    return upstream or f"{headers.get('host') or ''} {endpoint.name}"


def _shown(upstream: str) -> str:
    """The upstream as a log line names it: a URL's password masked (`_wire.masked_url`), and a caller's
    `Host` (what names it without a URL) escaped and cut short (`_printable.printable`)."""
    return printable(masked_url(upstream) if "://" in upstream else upstream, MAX_PATH_CHARS)


def _learner(
    upstream: str | None, headers: Mapping[str, str], endpoint: Endpoint, scope: str, model: str | None
) -> _Learner:
    """Whom a refusal is remembered for: the upstream, the caller's scope and the model. A caller's own
    content can make an addition invalid (Anthropic refuses `cache_control` on an empty text block), and
    a model may lack a feature another has: what one caller's request taught never switches an
    addition off for another caller, nor for another model."""
    return _upstream_of(upstream, headers, endpoint), scope, (model or "")[:_MODEL_CHARS]


_Learner = tuple[str, str, str]
_MODEL_CHARS = 256
"""A model name in the refusals is cut (a caller names it): two models alike this far learn together."""


class Additions:
    """The additions of one Cache, and the refusals it remembers."""

    def __init__(self, prompt_caching: PromptCaching, store: Store, key_prefix: str, hooks: Hooks) -> None:
        self._prompt_caching = prompt_caching if prompt_caching.enabled else None
        self._hooks = hooks
        self._forwarding = hooks.points["before_forward"]
        self._cached_contents = (
            CachedContents(prompt_caching.gemini, store, key_prefix) if prompt_caching.gemini.cached_contents else None
        )
        self._refusals: dict[_Learner, frozenset[str]] = {}
        """(upstream, scope, model) -> the additions refused with a 400 (`retry_body`, `_learner`)."""
        self.warnings = LogLimit(logger)
        """A rewrite that fails on a caller's body, and refusals learned per caller and model: callers
        repeat both at request rate."""

    @property
    def rewrites(self) -> bool:
        """Whether `upstream_body` may change a body (prompt caching is on, or a `before_forward` hook)."""
        return self._prompt_caching is not None or bool(self._forwarding)

    def upstream_body(self, request: CacheRequest, info: RequestInfo) -> Steps[bytes]:
        """The body to send upstream on a miss: `forward_body` through the `before_forward` hook point,
        whose built-in hook adds the provider's prompt-caching hints when `prompt_caching` asks for
        them (the key was computed before, from the caller's body). A part of the plan, once per call
        (and `retry_body` on a refusal): a Gemini cachedContent (its store reads, its creation as a
        `SideCall`) and the operator's hooks (`Run`) yield actions."""
        body = request.forward_body
        caching = self._prompt_caching
        endpoint = request.endpoint
        if endpoint.form_body:  # a multipart upload is never rewritten
            return body
        if caching is not None and not self.accepts(
            request.upstream, request.headers, endpoint, PROMPT_CACHE_HINTS, request.scope, request.model
        ):
            caching = None
        if caching is None and not self._forwarding:
            return body
        try:
            view = ForwardView(info, parse_body(body)[0])  # parsed again (and only) on the way upstream
            if caching is not None:
                view.changes += caching.rewrite(endpoint.family, endpoint.name, view.body)
            contents = self._cached_contents
            if contents is not None and caching is not None and endpoint.family == "gemini":
                named = yield from contents.rewrite(request.path, request.query, request.headers, view.body)
                if named is not None:
                    request.cached_content = named
                    view.changes.append("gemini_cached_content")
            hinted = any(change != "gemini_cached_content" for change in view.changes)
            if self._forwarding:
                view = yield Run(self._hooks.run("before_forward", view))
            rewritten = orjson.dumps(view.body) if view.changes or self._forwarding else body
        except Exception:  # fail open: the request goes out as the caller wrote it
            self.warnings.warning(
                "rewrite", "rewriting the request on its way upstream failed; sending it as written", exc_info=True
            )
            request.cached_content = None
            return body
        if view.changes and request.call is not None:
            request.call.prompt_caching(view.changes)
        request.hinted = hinted
        return rewritten

    def may_retry(self, request: CacheRequest, status: int) -> bool:
        """Whether an answer with `status` may refuse something the cache added to the request: if so,
        the plan reads its (small, error) body and asks `retry_body`."""
        if request.cached_content is not None and status in REFUSALS:
            return True
        return status == 400 and (request.captured or request.hinted)

    async def retry_body(self, request: CacheRequest, status: int, error: bytes) -> bytes | None:
        """The body to send once more when the provider refused what the cache added: a cachedContent
        it no longer has (the handle is forgotten), or a field it does not know (`stream_options`,
        `cache_control`, ...: the refusal is remembered for this upstream, so it is not added again).
        None: relay the answer as it is (the request itself was refused, and would be again)."""
        named = request.cached_content
        if named is not None and self._cached_contents is not None and refused_cached_content(status, error):
            request.cached_content = None
            await self._cached_contents.forget(named, gone=cached_content_gone(status, error))
            return request.forward_body
        if status != 400:
            return None
        lowered = error.lower()
        for addition, words in ((STREAM_USAGE, _USAGE_WORDS), (PROMPT_CACHE_HINTS, _HINT_WORDS)):
            added = request.captured if addition is STREAM_USAGE else request.hinted
            if added and any(word in lowered for word in words):
                request.captured = request.hinted = False
                request.refused = addition  # remembered once the request succeeds without it (`refused`)
                return request.caller_body
        return None

    def refused(self, request: CacheRequest, status: int) -> bool:
        """The answer to a request sent again without what the upstream named in its 400: a success
        proves the addition was the problem, so it is not added for this upstream again. (Remembered
        only then: a caller whose own malformed field the upstream names cannot switch it off for all.)
        True when a refusal was remembered."""
        addition, request.refused = request.refused, None
        if addition is None or not 200 <= status < 300:
            return False
        learner = _learner(request.upstream, request.headers, request.endpoint, request.scope, request.model)
        if len(self._refusals) >= _MEMO_LIMIT and learner not in self._refusals:
            self._refusals.clear()
        self._refusals[learner] = self._refusals.get(learner, frozenset()) | {addition}
        self.warnings.warning(
            ("refused", addition),
            "upstream %s refused the %s the cache adds; sending without it for this caller and model from now on",
            _shown(learner[0]),
            addition,
        )
        return True

    def accepts(
        self,
        upstream: str | None,
        headers: Mapping[str, str],
        endpoint: Endpoint,
        addition: str,
        scope: str,
        model: str | None,
    ) -> bool:
        """Whether `addition` may be made to a request of this caller (`scope`) and model to this upstream."""
        refused = self._refusals.get(_learner(upstream, headers, endpoint, scope, model))
        return refused is None or addition not in refused


__all__ = ["PROMPT_CACHE_HINTS", "STREAM_USAGE", "Additions"]
