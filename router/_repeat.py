"""Which requests the router may send more than once.

A retry or a fallback sends the request again. A generation call creates nothing that outlives its
answer: sent twice, it costs twice at worst. A call that creates something on the provider (a
fine-tuning job, a batch, a video, a background response, an assistant) would create it twice, and a
failure after it left (a 5xx, a timeout, a connection cut mid-answer) does not say the provider did
not act on it. Such a call is sent again only after a failure that proves the provider never acted:
no attempt made, the connection refused or never opened, a 429 or a refused key (refused before any work). Which is
which is declared once, for the cache's provider modules too, in `llm_cache/_operations.py`; a path
it does not declare may create something.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._operations import operation_of
from ._errors import Kind

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods HTTP defines as idempotent (RFC 9110, 9.2.2): sending them twice does what sending them once does."""
NOT_ACTED_ON = frozenset({Kind.RATE_LIMIT, Kind.KEY_REFUSED, Kind.CONNECT, Kind.COOLING, Kind.INCOMPATIBLE})
"""Failures that prove the provider never acted on the request (or that it was never sent: `CONNECT` is
only a failure before the request left, `_errors.classify_exception`). Anything else raised while sending
(a reset, a broken pipe, a read error, a custom transport's `OSError`) may come after the provider acted."""
_NEVER_CONNECTED = frozenset({"ConnectTimeout", "PoolTimeout"})
"""Timeouts before the request left: httpx's, by class name (httpx2 and httpx alike)."""


def repeatable(method: str, path: str, doc: Mapping[str, Any] | None) -> bool:
    """Whether a request may be sent again after any failure: an idempotent method, or a call of an
    operation that creates nothing, with a body that asks for no job (a Responses `background: true`)."""
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    operation = operation_of(path)
    return operation is not None and not operation.creates_something(doc)


def not_acted_on(kind: Kind, exception: BaseException | None) -> bool:
    """Whether a failure of this kind (with this exception, if any) proves the provider never acted."""
    if kind in NOT_ACTED_ON:
        return True
    return exception is not None and bool({c.__name__ for c in type(exception).__mro__} & _NEVER_CONNECTED)


__all__ = ["IDEMPOTENT_METHODS", "not_acted_on", "repeatable"]
