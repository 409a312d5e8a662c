"""Point a request at a deployment: URL, auth header, body ``model``. Pure functions, no I/O."""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .. import _wire as wire
from .._breakpoints import mentions_cache_control, place
from ._config import Deployment

_AZURE_PATH = re.compile(r"^.*?/openai/deployments/[^/]+/(.*)$")
_VERSION = re.compile(r"/(v\d+(?:alpha|beta)?\d*)(?:/|$)")
_DEFAULT_VERSION = {"anthropic": "v1", "gemini": "v1beta"}
_DROP = {"host", "content-length", "transfer-encoding"}


def split_endpoint(path: str) -> tuple[str | None, str]:
    """``/v1/chat/completions`` → ("v1", "chat/completions"); Azure's deployment paths too."""
    m = _AZURE_PATH.match(path)
    if m:
        return None, m.group(1)
    m = _VERSION.search(path)
    if m:
        return m.group(1), path[m.end() :]
    return None, path.lstrip("/")


def target_url(dep: Deployment, path: str, query: str) -> str:
    version, suffix = split_endpoint(path)
    base = dep.api_base or ""
    params = parse_qsl(query, keep_blank_values=True)
    if dep.family == "azure":
        url = f"{base}/openai/deployments/{dep.model}/{suffix}"
        params = [(k, v) for k, v in params if k != "api-version"] + [("api-version", dep.api_version or "")]
    else:
        if dep.family == "gemini":
            suffix = re.sub(r"^models/[^/:]+", f"models/{dep.model}", suffix)
            if dep.api_key:  # the deployment's own key replaces the caller's
                params = [(k, v) for k, v in params if k not in wire.GEMINI.query]
        if dep.family in _DEFAULT_VERSION and not _VERSION.search(urlsplit(base).path + "/"):
            base = f"{base}/{version or _DEFAULT_VERSION[dep.family]}"
        url = f"{base}/{suffix}"
    return f"{url}?{urlencode(params)}" if params else url


def auth_header(dep: Deployment) -> tuple[str, str] | None:
    """The header that presents the deployment's own key, or None when it has none (the caller's stays)."""
    return wire.auth_header(dep.family, dep.api_key) if dep.api_key else None


def rewrite_headers(
    headers: list[tuple[str, str]], dep: Deployment, url: str = "", credentials_for: str | None = None
) -> list[tuple[str, str]]:
    """The headers for ``dep`` at ``url``: its own key in place of the caller's credentials; without
    one, the caller's pass on, unless they are an operator's key for another URL (``credentials_for``,
    a gateway's upstream key): a deployment elsewhere (a self-hosted server, another family) gets none."""
    auth = auth_header(dep)
    replaced = auth is not None or (credentials_for is not None and not wire.under(url, credentials_for))
    out = [
        (k, v) for k, v in headers if k.lower() not in _DROP and not (replaced and k.lower() in wire.CREDENTIAL_HEADERS)
    ]
    if auth is not None:
        out.append(auth)
    return out


def rewrite_body(body: bytes, doc: dict[str, Any] | None, dep: Deployment, path: str = "") -> bytes:
    """The body for ``dep``: its real model name, and its breakpoints on an Anthropic Messages call."""
    marked = with_breakpoints(doc, dep) if doc is not None and path.endswith("/messages") else None
    if marked is not None:
        doc = marked
    elif doc is None or "model" not in doc or doc["model"] == dep.model:
        return body
    if "model" in doc:
        doc = {**doc, "model": dep.model}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def with_breakpoints(doc: dict[str, Any], dep: Deployment) -> dict[str, Any] | None:
    """A copy of an Anthropic Messages ``doc`` with the breakpoints ``dep``'s
    ``cache_control_injection_points`` name, or None when it has none, is not Anthropic, the caller
    placed its own, or none of the points is in this body."""
    points = dep.cache_control_injection_points
    if not points or dep.family != "anthropic" or mentions_cache_control(doc):
        return None
    marked = copy.deepcopy(doc)  # the caller's document serves every attempt: never changed
    return marked if place(points, marked, {"type": "ephemeral"}) else None


__all__ = ["auth_header", "rewrite_body", "rewrite_headers", "split_endpoint", "target_url", "with_breakpoints"]
