"""Point a request at a deployment: URL, auth header, body ``model``. Pure functions, no I/O."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
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


def target_url(dep: Deployment, path: str, query: str, entrusted: bool = True) -> str:
    """The URL for ``dep``; a caller's key in the query (Gemini's ``key=``) is kept only for a keyless
    deployment its credentials are ``entrusted`` to (`rewrite_headers`)."""
    version, suffix = split_endpoint(path)
    base = dep.api_base or ""
    params = parse_qsl(query, keep_blank_values=True)
    if dep.family == "azure":
        url = f"{base}/openai/deployments/{dep.model}/{suffix}"
        params = [(k, v) for k, v in params if k != "api-version"] + [("api-version", dep.api_version or "")]
    else:
        if dep.family == "gemini":
            suffix = re.sub(r"^models/[^/:]+", f"models/{dep.model}", suffix)
            if dep.api_key or not entrusted:  # the deployment's own key replaces the caller's, or none goes
                params = [(k, v) for k, v in params if k not in wire.GEMINI.query]
        if dep.family in _DEFAULT_VERSION and not _VERSION.search(urlsplit(base).path + "/"):
            base = f"{base}/{version or _DEFAULT_VERSION[dep.family]}"
        url = f"{base}/{suffix}"
    return f"{url}?{urlencode(params)}" if params else url


def auth_header(dep: Deployment) -> tuple[str, str] | None:
    """The header that presents the deployment's own key, or None when it has none (the caller's stays)."""
    return wire.auth_header(dep.family, dep.api_key) if dep.api_key else None


#: Request headers only one API family reads (its organisation, project, beta flags, client): never
#: sent to a deployment of another family.
FAMILY_HEADERS: dict[str, tuple[str, ...]] = {
    "openai": ("openai-",),
    "anthropic": ("anthropic-",),
    "gemini": ("x-goog-",),
}


def native(family: str, api: str) -> bool:
    """Whether a ``family`` deployment speaks a request in the ``api`` wire format as it is (Azure
    speaks OpenAI's); any other is spoken to through a translation."""
    return family == api or (api == "openai" and family == "azure")


def rewrite_headers(
    headers: list[tuple[str, str]],
    dep: Deployment,
    url: str = "",
    credentials_for: str | None = None,
    api: str | None = None,
    entrusted: bool = True,
) -> list[tuple[str, str]]:
    """The headers for ``dep`` at ``url``: its own key in place of the caller's credentials; without
    one, the caller's pass on, unless they are an operator's key for another URL (``credentials_for``,
    a gateway's upstream key): a deployment elsewhere (a self-hosted server, another family) gets none.

    A request in the ``api`` format sent to a deployment of another family (a translation, a fallback
    across families) carries none of the caller's credentials (an OpenAI key is no Anthropic key, and
    no business of Anthropic's) nor the headers only ``api`` reads (``openai-organization``, ...).
    Nor does a deployment the caller's credentials were not ``entrusted`` to (`entrusted_to`)."""
    auth = auth_header(dep)
    foreign = api is not None and not native(dep.family, api)
    replaced = not keeps_credentials(dep, api, entrusted) or (
        credentials_for is not None and not wire.under(url, credentials_for)
    )
    theirs = FAMILY_HEADERS.get("openai" if api == "azure" else api or "", ()) if foreign else ()
    out = [
        (k, v)
        for k, v in headers
        if k.lower() not in _DROP
        and not (replaced and k.lower() in wire.CREDENTIAL_HEADERS)
        and not k.lower().startswith(theirs)
    ]
    if auth is not None:
        out.append(auth)
    return out


def keeps_credentials(dep: Deployment, api: str | None, entrusted: bool) -> bool:
    """Whether the request's own credentials go on to ``dep`` (`rewrite_headers`): it has no key of its
    own, speaks the request's ``api`` as it is (a translation carries none), and they were ``entrusted``
    to it. With no operator's key put in the request, those are the caller's own."""
    return not dep.api_key and entrusted and (api is None or native(dep.family, api))


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower case: whom a credential sent there reaches."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def entrusted_to(requested: Iterable[Deployment]) -> frozenset[str]:
    """The origins a caller's own credentials go to when it asks for a group of these deployments:
    those of its keyless deployments (the operator passes the caller's key there). A fallback group's
    keyless deployment elsewhere (a third-party server) was never named by the caller: it gets none."""
    return frozenset(origin(dep.api_base or "") for dep in requested if not dep.api_key)


def presents_callers_key(request: Any, dep: Deployment, credentials_for: str | None) -> bool:
    """Whether an outgoing ``request`` for ``dep`` presents the caller's own credential: the deployment
    has no key of its own, no operator's key was put in (``credentials_for``), and the caller sent one.
    A refusal of that key (a 429 for its rate limit, a 401) is the caller's, not the deployment's."""
    if dep.api_key or credentials_for is not None:
        return False
    if any(k.lower() in wire.CREDENTIAL_HEADERS for k in request.headers):
        return True
    query = request.url.query
    query = query.decode("ascii", "replace") if isinstance(query, bytes) else str(query)
    return wire.without_query_credential(query) != query


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


__all__ = [
    "FAMILY_HEADERS",
    "auth_header",
    "entrusted_to",
    "keeps_credentials",
    "native",
    "origin",
    "presents_callers_key",
    "rewrite_body",
    "rewrite_headers",
    "split_endpoint",
    "target_url",
    "with_breakpoints",
]
