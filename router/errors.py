"""Classify a provider's answer (or a transport exception) into what the router should do next."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass


class Kind(str, enum.Enum):
    OK = "ok"
    RATE_LIMIT = "rate_limit"  # 429 (and Anthropic's 529 overloaded is SERVER)
    SERVER = "server_error"  # 5xx and other configured retryable statuses
    TIMEOUT = "timeout"
    CONNECT = "connect_error"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    CLIENT = "client_error"  # 400/401/403/404/...: never retried by default
    STREAM = "stream_error"  # the stream broke before its first byte
    COOLING = "all_cooling"  # no deployment of the group may take a request now
    INCOMPATIBLE = "incompatible"  # no deployment of the group speaks the request's API


RETRYABLE = {Kind.RATE_LIMIT, Kind.SERVER, Kind.TIMEOUT, Kind.CONNECT, Kind.STREAM}

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTEXT_PATTERNS = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens"
    r"|input token count.*exceeds|exceeds the maximum number of tokens|max_tokens.*too large"
    r"|reduce the length of the messages|input is too long|token limit",
    re.I,
)
_POLICY_CODES = {"content_policy_violation", "content_filter", "safety", "responsible_ai_policy_violation"}
_POLICY_PATTERNS = re.compile(
    r"content[_ ]policy|content management policy|content_filter|safety system|blocked.*safety"
    r"|flagged|finish_reason.*SAFETY|violat\w* (our|the) usage polic",
    re.I,
)


def _error_fields(body: bytes) -> tuple[str, str]:
    """(code/type text, message) from OpenAI, Anthropic, Gemini and Azure error shapes."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", body[:2000].decode("utf-8", "replace")
    if isinstance(doc, list) and doc:  # Gemini sometimes wraps in a list
        doc = doc[0]
    if not isinstance(doc, Mapping):
        return "", str(doc)
    err = doc.get("error", doc)
    if not isinstance(err, Mapping):
        return "", str(err)
    codes = " ".join(str(err.get(k, "")) for k in ("code", "type", "status", "param"))
    inner = err.get("innererror")
    if isinstance(inner, Mapping):
        codes += " " + str(inner.get("code", ""))
    return codes, str(err.get("message", ""))


def classify_status(status: int, body: bytes, retry_on: Collection[int]) -> Kind:
    if status < 400:
        return Kind.OK
    if status in (400, 403, 413, 422):
        codes, message = _error_fields(body)
        tokens = set(codes.split())
        if tokens & _CONTEXT_CODES or _CONTEXT_PATTERNS.search(message):
            return Kind.CONTEXT_WINDOW
        if tokens & _POLICY_CODES or _POLICY_PATTERNS.search(message) or _POLICY_PATTERNS.search(codes):
            return Kind.CONTENT_POLICY
    if status == 429:
        return Kind.RATE_LIMIT if status in retry_on else Kind.CLIENT
    if status in retry_on:
        return Kind.SERVER
    return Kind.CLIENT


def classify_exception(exc: BaseException) -> Kind:
    """Map httpx/httpx2 exceptions (by class name, so both libraries work) to a kind."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "TimeoutException" in names or isinstance(exc, TimeoutError):
        return Kind.TIMEOUT
    if "ConnectError" in names or isinstance(exc, ConnectionError):
        return Kind.CONNECT
    if names & {"NetworkError", "RemoteProtocolError", "ProtocolError", "StreamError"}:
        return Kind.STREAM
    return Kind.CLIENT


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (preferred, OpenAI) or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        import time

        return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class Failure:
    """What an attempt ended with, when it did not succeed."""

    kind: Kind
    status: int | None = None
    retry_after: float | None = None
    message: str = ""

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


__all__ = [
    "Failure",
    "Kind",
    "RETRYABLE",
    "classify_exception",
    "classify_status",
    "parse_retry_after",
]
