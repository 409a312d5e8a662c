"""Classify a provider's answer (or a transport exception) into what the router should do next."""

from __future__ import annotations

import enum
import json
import math
import re
import socket
import time
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import httpx2

from .._wire import decompressor

#: Default bound on any provider-supplied time (``RouterSettings.cooldown_max``), seconds.
DEFAULT_COOLDOWN_MAX = 300.0


class Kind(str, enum.Enum):
    OK = "ok"
    RATE_LIMIT = "rate_limit"  # 429 (and Anthropic's 529 overloaded is SERVER)
    SERVER = "server_error"  # 5xx and other configured retryable statuses
    TIMEOUT = "timeout"
    CONNECT = "connect_error"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    CLIENT = "client_error"  # 400/401/403/404/...: never retried by default
    ERROR_BODY = "error_body"  # a 2xx whose body is an error object: no verdict either way, relayed
    KEY_REFUSED = "key_refused"  # 401/403 on the deployment's own key: refused before any work
    STREAM = "stream_error"  # the connection broke once the request may have left (before an answer's first byte)
    COOLING = "all_cooling"  # no deployment of the group may take a request now
    INCOMPATIBLE = "incompatible"  # no deployment of the group speaks the request's API


RETRYABLE = {Kind.RATE_LIMIT, Kind.SERVER, Kind.TIMEOUT, Kind.CONNECT, Kind.STREAM, Kind.KEY_REFUSED}

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


def read_json(data: bytes | str) -> Any:
    """The parsed document, or ``None`` for anything the parser refuses.

    That includes nesting deeper than the interpreter's recursion limit (``RecursionError``): a body
    the router cannot read is treated like one that is not JSON, whatever its depth.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def first_event(chunk: bytes) -> Any:
    """The parsed ``data`` of the first server-sent event in the head of a stream the driver read
    (`FirstEvent`: to the end of that event), or ``None`` (not an event stream, an event longer than
    `FIRST_EVENT_MAX` or cut by the stream's end, data that is not JSON). An Anthropic ``event:
    error`` and an OpenAI stream whose first data is ``{"error": ...}`` are 200s that are errors: with
    this, the router judges them by `_wire.error_object` as it does a whole 2xx answer."""
    event, ended, _ = chunk.replace(b"\r\n", b"\n").partition(b"\n\n")
    if not ended:
        return None
    data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return read_json(b"\n".join(data)) if data else None


FIRST_EVENT_MAX = 64 * 1024
"""Most bytes of a stream the router holds back to read its first event whole (an error event is a
few hundred; a first event longer than this is judged unread, as one that is not JSON)."""


class FirstEvent:
    """A 2xx stream's first chunks, read until its first event has ended: the router judges the stream
    on that event. The network cuts events anywhere, and judged on a part, an `event: error` split over
    two reads was a success. An event stream is read on past its first chunk, decoded when it comes
    gzip- or deflate-encoded (judged on its raw bytes, a compressed error event was a success), and at
    most `FIRST_EVENT_MAX` bytes of it, raw or decoded; a stream of another kind (or an encoding not
    read) has no such end to wait for. The chunks go on to the caller as they came."""

    __slots__ = ("_decoded", "_decoder", "_ended", "_events", "_pieces", "_read", "_size", "_tail")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._events = (headers.get("content-type") or "").lower().startswith("text/event-stream")
        self._decoder: Any = None
        if self._events:
            try:
                self._decoder = decompressor(headers.get("content-encoding"))
            except ValueError:  # an encoding the router does not read: judged on its first chunk, unread
                self._events = False
        self._pieces: list[bytes] = []
        self._decoded: list[bytes] = []
        self._size = 0
        self._read = 0
        self._tail = b""
        self._ended = False

    @property
    def wanted(self) -> bool:
        """Whether to read another chunk before judging."""
        if not self._size:
            return True
        return self._events and not self._ended and max(self._size, self._read) < FIRST_EVENT_MAX

    def add(self, chunk: bytes) -> None:
        """One more chunk; only its own (decoded) bytes and the last three before are searched for a
        blank line."""
        self._pieces.append(chunk)
        self._size += len(chunk)
        if not self._events:
            return
        if self._decoder is not None:
            try:  # (never past the bound: a few compressed bytes can decode to a thousand times more)
                chunk = self._decoder.decompress(chunk, FIRST_EVENT_MAX - self._read + 1)
            except zlib.error:  # not what it says it is: judged on its first chunk, as it came
                self._events = False
                return
        self._decoded.append(chunk)
        self._read += len(chunk)
        seam = self._tail + chunk
        self._ended = self._ended or b"\n\n" in seam.replace(b"\r\n", b"\n")
        self._tail = seam[-3:]

    @property
    def head(self) -> bytes:
        """What was read, to pass on first, as it came."""
        return b"".join(self._pieces)

    @property
    def judged(self) -> bytes:
        """What was read, decoded, to judge (`first_event`); a body not read as events, as it came."""
        return b"".join(self._decoded) if self._events else self.head


def _text(value: Any) -> str:
    """``str(value)`` for the scalars an error object holds; containers say nothing we match on."""
    return value if isinstance(value, str) else (str(value) if isinstance(value, (int, float)) else "")


def _error_fields(body: bytes) -> tuple[str, str]:
    """(code/type text, message) from OpenAI, Anthropic, Gemini and Azure error shapes."""
    doc = read_json(body)
    if isinstance(doc, list) and doc:  # Gemini sometimes wraps in a list
        doc = doc[0]
    if not isinstance(doc, Mapping):
        return "", body[:2000].decode("utf-8", "replace")
    err = doc.get("error", doc)
    if not isinstance(err, Mapping):
        return "", _text(err)
    codes = " ".join(_text(err.get(k)) for k in ("code", "type", "status", "param"))
    inner = err.get("innererror")
    if isinstance(inner, Mapping):
        codes += " " + _text(inner.get("code"))
    return codes, _text(err.get("message"))


def classify_status(status: int, body: bytes, retry_on: Collection[int]) -> Kind:
    """What a deployment's status says. A redirect (3xx but 304) is no answer to an API call: a
    deployment that sends one (moved, misconfigured, hostile) failed, and its `location` is never
    followed (`_core.Router._judge`)."""
    if 300 <= status < 400 and status != 304:
        return Kind.SERVER
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
    """Map httpx/httpx2 exceptions (by class name, so both libraries work) to a kind.

    `CONNECT` is only a failure known to come before the request left (no connection: httpx's
    `ConnectError`, a refused connection, a name that does not resolve), which `_repeat.py` counts as
    never acted on. A connection reset, a broken pipe or an abort (Python's other `ConnectionError`s,
    which a custom inner transport may raise as they come) happen on a connection the request may
    already have crossed: a `STREAM` failure, as httpx's `ReadError` and `WriteError` are."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "TimeoutException" in names or isinstance(exc, TimeoutError):
        return Kind.TIMEOUT
    if "ConnectError" in names or isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return Kind.CONNECT
    if names & {"NetworkError", "RemoteProtocolError", "ProtocolError", "StreamError"} or isinstance(
        exc, ConnectionError
    ):
        return Kind.STREAM
    return Kind.CLIENT


def parse_retry_after(
    headers: Mapping[str, str], *, cap: float = DEFAULT_COOLDOWN_MAX, now: float | None = None
) -> float | None:
    """Seconds from ``retry-after-ms`` (preferred, OpenAI) or ``retry-after`` (seconds or HTTP date).

    Provider-supplied, so never trusted: the answer is ``None`` (no usable value) or a finite number
    in ``[0, cap]``. Huge values and ``inf`` give ``cap``; negative values and dates in the past give
    0; ``nan`` and anything unparseable give ``None``. ``now`` is the wall clock (for HTTP dates).
    """
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return _bounded(ms / 1000.0, cap)
    ra = headers.get("retry-after")
    if not ra:
        return None
    seconds = _seconds(ra)
    if seconds is None:
        seconds = _until_date(ra, time.time() if now is None else now)
    return None if seconds is None else _bounded(seconds, cap)


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    return None if math.isnan(seconds) else seconds


def _until_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - now
    except Exception:  # ValueError, TypeError, OverflowError, IndexError ...: not a date we can use
        return None
    return None if math.isnan(seconds) else seconds


def _bounded(seconds: float, cap: float) -> float:
    return min(max(0.0, seconds), cap)


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


class AnswerTooLarge(httpx2.RemoteProtocolError, httpx.RemoteProtocolError):  # type: ignore[misc]  # both catch it
    """A deployment's answer, or one event of its stream, is longer than the router reads to translate
    it: the attempt (or the stream) failed, as with any answer that cannot be read."""


__all__ = [
    "AnswerTooLarge",
    "DEFAULT_COOLDOWN_MAX",
    "FIRST_EVENT_MAX",
    "Failure",
    "FirstEvent",
    "Kind",
    "RETRYABLE",
    "classify_exception",
    "classify_status",
    "first_event",
    "parse_retry_after",
    "read_json",
]
