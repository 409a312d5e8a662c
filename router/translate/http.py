"""A translation applied to httpx2/httpx messages: the outgoing request, and the answer coming back."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..._wire import CREDENTIALS_FOR
from .. import _rewrite as rewrite
from .._config import Deployment
from .base import Translation, dropped_names, dumps
from .stream import TranslatedStream

#: Set on a translated answer when ``drop_params`` dropped fields the deployment cannot honour.
DROPPED_HEADER = "x-router-dropped-params"

#: Headers describing a body the translation replaces.
_BODY_HEADERS = frozenset({"content-length", "content-encoding", "content-type", "transfer-encoding"})


def request(
    lib: ModuleType,
    caller: Any,
    doc: dict[str, Any],
    dep: Deployment,
    translation: Translation,
    stream: bool,
    drop: bool,
    extensions: dict[str, Any],
) -> tuple[Any, list[str]]:
    """``caller``'s request in ``dep``'s family (raises ``Unsupported``), and the fields it dropped."""
    out = translation.request(doc, dep.model, stream, drop)
    marked = rewrite.with_breakpoints(out.body, dep) if out.path.endswith("/messages") else None
    url = rewrite.target_url(dep, out.path, out.query)
    headers = rewrite.rewrite_headers(
        list(caller.headers.multi_items()), dep, url, caller.extensions.get(CREDENTIALS_FOR), translation.source
    )
    # The caller's family headers (anthropic-version, ...) mean nothing to the target; the body is
    # read event by event, so it must arrive uncompressed.
    replaced = {"content-type", "accept-encoding", *out.headers}
    headers = [(k, v) for k, v in headers if k.lower() not in replaced and not k.lower().startswith("anthropic-")]
    headers += [("content-type", "application/json"), ("accept-encoding", "identity"), *out.headers.items()]
    body = dumps(marked if marked is not None else out.body)
    return lib.Request("POST", url, headers=headers, content=body, extensions=extensions), out.dropped


def response(
    lib: ModuleType,
    resp: Any,
    body: bytes | None,
    translation: Translation,
    doc: dict[str, Any],
    stream: bool,
    dropped: list[str],
    error_body: bool = False,
) -> Any:
    """The target's answer in the caller's format: JSON at once, a stream event by event as it is read.

    A stream keeps its response object (the router's stream bookkeeping holds it); only its headers
    and byte stream are replaced. ``error_body``: a 2xx that is an error object, translated as the
    error it is (as a success, it became an empty answer a cache would store).
    """
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    if dropped:
        headers.append((DROPPED_HEADER, dropped_header_value(dropped)))
    if stream and resp.status_code < 300:
        resp.headers = lib.Headers([*headers, ("content-type", "text/event-stream")])
        resp.stream = TranslatedStream(resp.stream, translation.stream(doc))
        return resp
    raw = body or b""
    failed = error_body or resp.status_code >= 300
    out = translation.error(resp.status_code, raw) if failed else translation.response(raw, doc)
    headers += [("content-type", "application/json"), ("content-length", str(len(out)))]
    return lib.Response(resp.status_code, headers=headers, stream=lib.ByteStream(out), extensions=resp.extensions)


def dropped_header_value(dropped: list[str]) -> str:
    """The dropped field names as one header value (`dropped_names`, comma-separated)."""
    return ",".join(dropped_names(dropped))


__all__ = ["DROPPED_HEADER", "dropped_header_value", "dropped_names", "request", "response"]
