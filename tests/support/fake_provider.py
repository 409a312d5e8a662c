"""A fake LLM provider (OpenAI, Azure OpenAI, Anthropic, Gemini) for tests that drive the real SDKs.

It stands in for the outside world, so it imports nothing from `middleware` or `router`.

Answers are deterministic functions of the request: the text is
``"Answer #<h>: <echo of the last user text>"`` where ``h`` is the first 8 hex digits of the
SHA-256 of the canonical JSON body minus the transport-only fields (``stream``,
``stream_options``). Identical requests therefore get identical content, different requests
different content, and a streamed answer has exactly the same text as the non-streamed one.
Every response carries a fresh id (a per-provider counter), so a test can tell a replayed answer
(same id) from one the provider produced again.

Tests steer the provider from Python (``fail_next``, ``cut_stream_after``, ``break_body_after``,
``delay``, ``hold`` / ``release`` / ``wait_for_in_flight``) or from an SDK client with the ``x-fake-status: <code>``
request header. All state lives on the `FakeProvider` instance; the controls are thread-safe
because the server runs on its own loop in another thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import string
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["EMBEDDING_DIMS", "FakeProvider", "QuietStreamCuts", "RecordedRequest", "StreamCut", "create_fake_provider"]

EMBEDDING_DIMS = 8
ECHO_LIMIT = 80
AUDIO_LIFETIME = 3600
"""Seconds an audio answer's `audio.id` can be referred to in a later turn (`expires_at`)."""
_HOST_ROUTING = ("azureml-model-deployment", "extra-parameters", "x-portkey-provider", "x-portkey-config")
"""Headers an OpenAI-compatible host or gateway reads to choose the model that answers."""
CREATED = 1_700_000_000  # a fixed `created` timestamp keeps bodies deterministic apart from ids
TRANSPORT_FIELDS = ("stream", "stream_options")
WEATHER_ARGS = {"location": "Paris, France", "unit": "celsius"}
EVENTSTREAM = "application/vnd.amazon.eventstream"


class StreamCut(ConnectionAbortedError):
    """Raised inside a streamed body to make the server drop the connection (`cut_stream_after`)."""


class QuietStreamCuts(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record when the exception is a `StreamCut`.

    The cut is deliberate, so its traceback is noise; every other server error is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, StreamCut):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def _gemini_owner(req: RecordedRequest) -> tuple[str, str]:
    """Whose a cachedContent is, as Gemini decides it: the credential's project (here the credential itself,
    or the `x-goog-user-project` an OAuth token names)."""
    query = parse_qsl(req.query)
    keys = [v for k, v in query if k == "key"]
    tokens = [f"Bearer {v}" for k, v in query if k in ("access_token", "oauth_token")]  # Google's system parameter
    credential = req.headers.get("x-goog-api-key") or (keys or tokens or [req.headers.get("authorization", "")])[0]
    return credential, req.headers.get("x-goog-user-project", "")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the provider received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON when the body is JSON, else the raw bytes
    raw: bytes = b""
    raw_path: str = ""  # the path as sent, its escapes kept (`path` is decoded)

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]
    path_suffix: str | None = None
    """Only a request whose path ends so gets it (None: the next request, whatever its path)."""
    by_api: Callable[[str], tuple[int, Any, dict[str, str]]] | None = None
    """(status, body, headers) by API (`api_of`), in place of the three above (a key revoked)."""


@dataclass
class _Answer:
    """What the provider is going to say, independent of the wire format."""

    text: str
    digest: str
    prompt_text: str
    tool: dict[str, Any] | None = None  # {"name": ..., "arguments": {...}} when a tool is called
    thinking: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return tokens(self.prompt_text)

    @property
    def completion_tokens(self) -> int:
        out = tokens(self.text) if self.tool is None else tokens(json.dumps(self.tool["arguments"]))
        return out + (tokens(self.thinking) if self.thinking else 0)


@dataclass
class _Break:
    after: int
    stall: bool
    released: bool = False
    """Set by `release()`: a stall released before its body reached it does not wait at all."""


@dataclass
class _Held:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def tokens(text: str) -> int:
    """A token count derived from text length (about four characters a token), at least 1."""
    return max(1, (len(text) + 3) // 4)


def canonical_digest(body: Any) -> str:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in TRANSPORT_FIELDS}
    if isinstance(body, bytes):
        blob = body
    else:
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def pieces(text: str) -> list[str]:
    """Split text into token-like pieces (a word with its leading space) for streaming."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return [p for p in out if p] or [text]


def embedding_vector(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """A deterministic unit vector from the text's hash."""
    digest = hashlib.sha256(text.encode()).digest() * (dims // 32 + 1)  # past 32 dimensions it repeats
    raw = [(b - 127.5) / 127.5 for b in digest[:dims]]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def _words(text: str) -> list[str]:
    """The words of `text`, lower-cased, without the punctuation around them."""
    return [word for word in (w.strip(string.punctuation).lower() for w in text.split()) if word]


def _text_of(content: Any) -> str:
    """The plain text of a message's content in any of the three families' shapes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        for key in ("text", "input_text", "content"):
            if isinstance(content.get(key), str):
                return str(content[key])
        if "parts" in content:
            return _text_of(content["parts"])
        return ""
    if isinstance(content, list):
        return " ".join(t for t in (_text_of(c) for c in content) if t)
    return str(content)


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def encoded_events(events: Iterable[Any], eventstream: bool = False) -> list[bytes]:
    """`events` as `FakeProvider.stream_next` sends them, each event's bytes (`bytes` are sent as they are)."""
    encoded = []
    for event in events:
        if isinstance(event, bytes):
            encoded.append(event)
        elif eventstream:
            encoded.append(_aws_frame(event))
        elif isinstance(event, tuple):
            encoded.append(_sse(event[1], event[0]))
        elif event == "[DONE]":
            encoded.append(b"data: [DONE]\n\n")
        else:
            encoded.append(_sse(event))
    return encoded


class FakeProvider:
    """The fake provider's ASGI app (`.app`) and the state tests inspect and steer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._refused_keys: dict[str, _Failure] = {}
        """A credential -> the failure every request presenting it gets (a key rate-limited or revoked)."""
        self._cut_after: int | None = None
        self._scripted: list[tuple[list[bytes], str, _Break | None]] = []
        """Scripted streams to answer the next requests with: their encoded events, media type and the
        byte they are split at (held there until `release()` if the split stalls)."""
        self.parked = 0
        """Scripted streams that have sent their first part and wait for `release()` to send the rest."""
        self._unknown_fields: dict[str, str] = {}
        self._gzip_streams = False
        self._rerank_worst_first = False
        self._added_headers: dict[str, str] = {}
        """Headers every answer carries besides its own, until reset (`send_headers`)."""
        self._break: _Break | None = None
        self._stalls: list[_Break] = []
        """Stalls armed and not yet released (a release may come before a body reaches its stall)."""
        self._delay = 0.0
        self._held = False
        self._waiters: list[_Held] = []
        self._in_flight = 0
        self.cut_requests = 0
        """Requests whose sender left before their body ended (never recorded as requests)."""
        self._seen_prefixes: set[str] = set()
        self.cached_contents: dict[str, dict[str, Any]] = {}
        """Gemini `cachedContents/{id}` -> what it holds (model, systemInstruction, tools, toolConfig, contents)."""
        self.files: list[dict[str, Any]] = []
        """The file objects uploaded to the one account every caller of an owner's key shares, newest last
        (`GET /v1/files` lists them all, OpenAI's or Anthropic's)."""
        self.app = Starlette(
            routes=[
                Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    # -- inspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake provider has received no request")
            return self._requests[-1]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def count(self, path_suffix: str | None = None) -> int:
        """Requests received, optionally only those whose path ends with `path_suffix`."""
        with self._lock:
            return self._count_locked(path_suffix)

    def _count_locked(self, path_suffix: str | None) -> int:
        if path_suffix is None:
            return len(self._requests)
        return sum(1 for r in self._requests if r.path.endswith(path_suffix))

    def reset(self) -> None:
        """Forget requests and pending controls; releases any held requests."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._refused_keys.clear()
            self._cut_after = None
            self._scripted.clear()
            self._unknown_fields.clear()
            self._gzip_streams = False
            self._rerank_worst_first = False
            self._added_headers.clear()
            self._break = None
            self._delay = 0.0
            self._seen_prefixes.clear()
            self.cached_contents.clear()
            self.files.clear()
        self.release()

    # -- controls ----------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        path_suffix: str | None = None,
    ) -> None:
        """The next `n` requests get `status` with `body` (default: a provider-shaped error); with
        `path_suffix`, the next `n` whose path ends so (others pass by)."""
        with self._lock:
            self._failures.extend(_Failure(status, body, dict(headers or {}), path_suffix) for _ in range(n))

    def refuse_key(self, key: str, status: int = 429, headers: dict[str, str] | None = None, body: Any = None) -> None:
        """From now on (until reset), every request presenting `key` (as a Bearer token, `x-api-key`,
        `api-key` or `x-goog-api-key`) gets `status` with `headers` (and `body`; default: a provider-shaped
        error): that key rate-limited or revoked, while other keys are served."""
        with self._lock:
            self._refused_keys[key] = _Failure(status, body, dict(headers or {}))

    def revoke_key(self, key: str) -> None:
        """From now on (until reset), every request presenting `key` gets the answer its API's real
        service refuses a wrong or revoked key with: OpenAI's 401 names the key, masked
        (`Incorrect API key provided: sk-abc***...xyz`), Anthropic's 401 says `invalid x-api-key`,
        Gemini's is a 400 `INVALID_ARGUMENT` whose `ErrorInfo` reason is `API_KEY_INVALID`, Bedrock's a
        403 `UnrecognizedClientException` (named in `x-amzn-ErrorType` too)."""
        with self._lock:
            self._refused_keys[key] = _Failure(401, None, {}, by_api=_revoked(key))

    def stream_next(
        self, events: Iterable[Any], eventstream: bool = False, split_at: int | None = None, hold: bool = False
    ) -> None:
        """The next request is answered with exactly these server-sent events: each a JSON-able object
        (sent as `data: {json}`), a `(name, object)` pair (`event: name`), the string `[DONE]`, or
        bytes sent as they are (an SSE comment).
        With `eventstream`, each is sent in an AWS event-stream frame, as Bedrock streams: an object in a
        `chunk` frame, a `(name, object)` pair as an event of that name. With `split_at`, the encoded
        stream is sent in two writes cut at that byte (wherever it falls, mid-event); with `hold`, the
        second waits for `release()` (`wait_for_parked` says when the first has gone), so the client
        reads the first part alone."""
        encoded = encoded_events(events, eventstream)
        if split_at is not None:
            whole = b"".join(encoded)
            encoded = [whole[:split_at], whole[split_at:]]
        split = None if split_at is None else _Break(1, hold)
        with self._lock:
            self._scripted.append((encoded, EVENTSTREAM if eventstream else "text/event-stream", split))
            if split is not None and hold:
                self._stalls.append(split)

    def rerank_worst_first(self) -> None:
        """From now on (until reset), rerank results come worst first: their order says nothing, only
        their `index` ties each score to its document."""
        with self._lock:
            self._rerank_worst_first = True

    def gzip_streams(self) -> None:
        """From now on (until reset), streams are gzip-encoded event by event (`content-encoding: gzip`)."""
        with self._lock:
            self._gzip_streams = True

    def send_headers(self, headers: dict[str, str]) -> None:
        """From now on (until reset), every answer carries these headers too, replacing its own of the
        same name, as a proxy or a gateway in front of a provider may add them (`cache-control`, `age`)."""
        with self._lock:
            self._added_headers.update(headers)

    def refuse_field(self, name: str, named_as: str | None = None) -> None:
        """From now on (until reset), a JSON body with `name` anywhere in it is refused with a 400 naming
        it (or `named_as`, e.g. its path), as servers that do not know a parameter answer (older Azure
        api-versions, compatible servers)."""
        with self._lock:
            self._unknown_fields[name] = named_as or name

    def cut_stream_after(self, n_events: int) -> None:
        """The next streamed response drops the connection after `n_events`, without its end."""
        with self._lock:
            self._cut_after = n_events

    def break_body_after(self, n_bytes: int, stall: bool = False) -> None:
        """The next response of any kind (JSON or stream) sends its status, its headers (a JSON answer
        keeps its full `content-length`) and `n_bytes` of its body, then drops the connection; with
        `stall`, it sends nothing more until `release()` instead."""
        with self._lock:
            self._break = _Break(n_bytes, stall)
            if stall:
                self._stalls.append(self._break)

    def delay(self, seconds: float) -> None:
        """Every response waits `seconds` before its first byte (until reset)."""
        with self._lock:
            self._delay = seconds

    def hold(self) -> None:
        """Requests that arrive from now on wait (in flight) until `release()`."""
        with self._lock:
            self._held = True

    def release(self) -> None:
        """Let every held request proceed, stop holding new ones, and let an armed stall not stall."""
        with self._lock:
            self._held = False
            waiters, self._waiters = self._waiters, []
            for stall in self._stalls:
                stall.released = True
            self._stalls.clear()
        for w in waiters:
            w.loop.call_soon_threadsafe(_resolve, w.future)

    def wait_for_in_flight(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least `n` requests are in flight (arrived, not yet answered).

        Raises `TimeoutError` after `timeout` seconds saying how many arrived.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._in_flight < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"fake provider: {self._in_flight} request(s) in flight, waited {timeout}s for {n}"
                    )
                self._changed.wait(left)

    def wait_for_count(self, n: int, path_suffix: str | None = None, timeout: float = 10.0) -> None:
        """Block until at least `n` requests (ending with `path_suffix`, if given) have arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (got := self._count_locked(path_suffix)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake provider: {got} request(s) arrived, waited {timeout}s for {n}")
                self._changed.wait(left)

    async def wait_for_in_flight_async(self, n: int, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.wait_for_in_flight, n, timeout)

    # -- the ASGI side -----------------------------------------------------------------------

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    async def _handle(self, request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # a request cut before its body ended is no request: not recorded
            with self._changed:
                self.cut_requests += 1
                self._changed.notify_all()
            return Response(status_code=499)
        body: Any = raw
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        path = request.url.path
        record = RecordedRequest(
            method=request.method,
            path=path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw=raw,
            raw_path=request.scope.get("raw_path", b"").decode("latin-1"),
        )
        with self._changed:
            self._requests.append(record)
            self._in_flight += 1
            self._changed.notify_all()
            failure = next((f for f in self._failures if f.path_suffix is None or path.endswith(f.path_suffix)), None)
            if failure is not None:
                self._failures.remove(failure)
            if failure is None:
                failure = next((f for k, f in self._refused_keys.items() if k in _presented_keys(record)), None)
            unknown = next((shown for f, shown in sorted(self._unknown_fields.items()) if _mentions(body, f)), None)
            scripted = self._scripted.pop(0) if self._scripted and failure is None and unknown is None else None
            broken, self._break = self._break, None
            held = self._held
            delay = self._delay
            waiter: _Held | None = None
            if held:
                waiter = _Held(asyncio.get_running_loop(), asyncio.get_running_loop().create_future())
                self._waiters.append(waiter)
        try:
            if waiter is not None:
                await waiter.future
            if delay:
                await asyncio.sleep(delay)
            family = family_of(path)
            forced = record.headers.get("x-fake-status")
            if failure is not None and failure.by_api is not None:
                response = self._error(family, *failure.by_api(api_of(path)))
            elif failure is not None:
                response = self._error(family, failure.status, failure.body, failure.headers)
            elif unknown is not None:
                message = f"Unrecognized request argument supplied: {unknown}"
                response = self._error(family, 400, None, {}, message=message)
            elif scripted is not None:
                response = self._stream(scripted[0], scripted[1], split=scripted[2])
            elif forced and forced.isdigit() and int(forced) >= 400:
                response = self._error(family, int(forced), None, {})
            else:
                response = self._route(record)
            self._dress(api_of(path), response)
            return response if broken is None else self._broken(response, broken)
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def _dress(self, api: str, response: Response) -> None:
        """Give `response` the headers the real `api` sends besides its body: its content-type as the
        API spells it, the id of the call, and figures measuring the call (rate limits left, time
        spent), fresh for each call as the real APIs' are."""
        with self._lock:
            n = next(self._request_ids)
            added = dict(self._added_headers)
        headers = response.headers
        content_type = headers.get("content-type", "")
        for name, value in (*_MEASURES[api](n), *_ACCOUNT.get(api, ())):
            headers[name] = value
        named = _REQUEST_IDS.get(api)
        if named is not None and named[0] not in headers:
            headers[named[0]] = named[1](n)
        if response.status_code < 300:
            if api == "gemini" and content_type.startswith("text/event-stream"):
                headers["content-type"] = "text/event-stream"
                headers["content-disposition"] = (
                    "attachment"  # as generativelanguage.googleapis.com sends its SSE answers
                )
            elif api == "gemini" and content_type.startswith("application/json"):
                headers.update(_GEMINI_JSON_HEADERS)
            elif api == "anthropic" and content_type.startswith("text/event-stream"):
                headers["cache-control"] = "no-cache"
            elif api == "cohere":
                headers.update(_COHERE_HEADERS)
        for name, value in added.items():
            headers[name] = value

    def _route(self, req: RecordedRequest) -> Response:
        path, method = req.path, req.method
        if path.startswith("/openai/v1/"):  # Azure OpenAI's v1 API is the OpenAI API under /openai
            path = path[len("/openai") :]
        if method == "POST":
            if path == "/v1/chat/completions" or (
                path.startswith("/openai/deployments/") and path.endswith("/chat/completions")
            ):
                return self._chat(req)
            if path == "/v1/completions" or (path.startswith("/openai/deployments/") and path.endswith("/completions")):
                return self._completions(req)
            if path == "/v1/embeddings" or (path.startswith("/openai/deployments/") and path.endswith("/embeddings")):
                return self._embeddings(req)
            if path == "/v1/responses":
                return self._responses(req)
            if path == "/v1/moderations":
                return self._moderations(req)
            if path == "/v1/files":
                return self._file_upload(req)
            if path == "/v1/vector_stores":
                return self._vector_store(f"vs_fake{self._next_id():06d}")
            if path in ("/rerank", "/v1/rerank", "/v2/rerank"):
                return self._rerank(req)
            if path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
                return self._audio(req)
            if path == "/v1/messages":
                return self._messages(req)
            if path.startswith("/model/"):  # Bedrock runtime; a model id may be an ARN with `/` in it
                model_id, _, action = path[len("/model/") :].rpartition("/")
                model_id = unquote(model_id)
                if not req.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 Credential="):
                    return self._error("anthropic", 403, None, {}, message="Missing Authentication Token")
                if action == "invoke":
                    return self._messages(req, model=model_id)
                if action == "invoke-with-response-stream":
                    return self._messages(req, model=model_id, eventstream=True)
                if action in ("converse", "converse-stream"):
                    return self._converse(req, model_id, stream=action == "converse-stream")
            if path == "/v1beta/cachedContents":
                return self._gemini_create_cache(req)
            if path.startswith("/v1beta/models/") and ":" in path:
                model, _, action = path[len("/v1beta/models/") :].rpartition(":")
                if action == "generateContent":
                    return self._gemini_generate(req, model, stream=False)
                if action == "streamGenerateContent":
                    return self._gemini_generate(req, model, stream=True)
                if action == "embedContent":
                    return self._gemini_embed(req, model)
                if action == "batchEmbedContents":
                    return self._gemini_batch_embed(req)
        if method in ("GET", "DELETE"):
            found = self._kept(method, path, "anthropic-version" in req.headers)
            if found is not None:
                return found
        return self._error(family_of(path), 404, None, {}, message=f"Unknown route: {method} {path}")

    def _kept(self, method: str, path: str, anthropic: bool) -> Response | None:
        """What the account holds by id, read back: its files listed, a vector store, a stored chat
        completion (and its messages) read or deleted."""
        if method == "GET" and path == "/v1/files":
            with self._lock:
                data = [f for f in self.files if ("type" in f) == anthropic]
            if anthropic:
                first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                return JSONResponse({"data": data, "has_more": False, "first_id": first, "last_id": last})
            return JSONResponse({"object": "list", "data": data, "has_more": False})
        if method == "GET" and path.startswith("/v1/vector_stores/"):
            return self._vector_store(path.split("/")[3])
        if path.startswith("/v1/chat/completions/"):
            completion_id, _, rest = path[len("/v1/chat/completions/") :].partition("/")
            if method == "DELETE":
                return JSONResponse({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})
            if rest == "messages":
                message = {"id": f"{completion_id}-0", "role": "user", "content": "stored question"}
                return JSONResponse({"object": "list", "data": [message], "has_more": False})
            message = {"role": "assistant", "content": "stored answer", "refusal": None, "annotations": []}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": "gpt-4o-mini",
                    "choices": [choice],
                }
            )
        return None

    def _vector_store(self, store_id: str) -> Response:
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
        return JSONResponse(
            {
                "id": store_id,
                "object": "vector_store",
                "created_at": CREATED,
                "name": "notes",
                "usage_bytes": 0,
                "file_counts": counts,
                "status": "completed",
                "last_active_at": CREATED,
                "metadata": {},
            }
        )

    # -- errors ------------------------------------------------------------------------------

    def _error(
        self, family: str, status: int, body: Any, headers: dict[str, str], message: str | None = None
    ) -> Response:
        if body is None:
            body = error_body(family, status, message or f"fake provider error {status}")
        if isinstance(body, (bytes, str)):
            return Response(body, status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    # -- shared --------------------------------------------------------------------------------

    def _answer(
        self, body: Any, last_user: str, prompt_text: str, tool_names: list[str], thinking: bool = False
    ) -> _Answer:
        digest = canonical_digest(body)
        echo = last_user if len(last_user) <= ECHO_LIMIT else last_user[:ECHO_LIMIT] + "..."
        answer = _Answer(text=f"Answer #{digest}: {echo}", digest=digest, prompt_text=prompt_text)
        if tool_names and "weather" in last_user.lower():
            name = next((n for n in tool_names if "weather" in n.lower()), tool_names[0])
            answer.tool = {"name": name, "arguments": dict(WEATHER_ARGS)}
        if thinking:
            answer.thinking = f"Thinking #{digest}: the user asked about {echo}"
        return answer

    def _stream(
        self,
        events: Iterable[bytes],
        media_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
        split: _Break | None = None,
    ) -> StreamingResponse:
        with self._lock:
            cut, self._cut_after = self._cut_after, None
            gzipped = self._gzip_streams
        events = list(events)
        compressor = zlib.compressobj(wbits=31) if gzipped else None

        async def body() -> AsyncIterator[bytes]:
            for i, event in enumerate(events):
                if cut is not None and i >= cut:
                    # An exception inside the body makes uvicorn drop the connection mid-response
                    # (the chunked body never terminates), as a provider crash would.
                    raise StreamCut(f"fake provider: stream cut after {cut} events")
                if split is not None and i == split.after and split.stall:
                    await self._park(split)
                if compressor is not None:
                    event = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
                yield event
                await asyncio.sleep(0)
            if compressor is not None:
                yield compressor.flush()

        hdrs = dict(headers or {})
        if gzipped:
            hdrs["content-encoding"] = "gzip"
        return StreamingResponse(body(), media_type=media_type, headers=hdrs)

    async def _park(self, stall: _Break) -> None:
        """Wait for `release()`, unless it came first; `parked` counts the wait while it lasts."""
        loop = asyncio.get_running_loop()
        waiter = _Held(loop, loop.create_future())
        with self._changed:
            parked = not stall.released
            if parked:
                self._waiters.append(waiter)
                self.parked += 1
                self._changed.notify_all()
        if parked:
            try:
                await waiter.future
            finally:
                with self._changed:
                    self.parked -= 1

    def wait_for_parked(self, n: int = 1, timeout: float = 10.0) -> None:
        """Block until at least `n` scripted streams wait for `release()` with their first part sent."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.parked < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake provider: {self.parked} stream(s) parked, waited {timeout}s for {n}")
                self._changed.wait(left)

    def _broken(self, response: Response, broken: _Break) -> StreamingResponse:
        """`response` with its body cut (or stalled) after `broken.after` bytes."""
        chunks: AsyncIterator[Any] = (
            response.body_iterator if isinstance(response, StreamingResponse) else _one(bytes(response.body))
        )

        async def body() -> AsyncIterator[bytes]:
            left = broken.after
            async for chunk in chunks:
                data = chunk if isinstance(chunk, bytes) else str(chunk).encode()
                if len(data) >= left:
                    break
                left -= len(data)
                yield data
            else:
                return  # the whole body fitted: nothing to break
            if left:
                yield data[:left]
            if broken.stall:
                loop = asyncio.get_running_loop()
                waiter = _Held(loop, loop.create_future())
                with self._lock:
                    parked = not broken.released  # released before the body got here: no wait
                    if parked:
                        self._waiters.append(waiter)
                if parked:
                    await waiter.future
            raise StreamCut(f"fake provider: body cut after {broken.after} bytes")

        return StreamingResponse(body(), status_code=response.status_code, headers=dict(response.headers))

    def _seen_before(self, key: str) -> bool:
        with self._lock:
            seen = key in self._seen_prefixes
            self._seen_prefixes.add(key)
            return seen

    # -- OpenAI chat completions ---------------------------------------------------------------

    def _chat(self, req: RecordedRequest) -> Response:
        body = req.json
        messages = body.get("messages") or []
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last_user = _text_of(users[-1].get("content")) if users else ""
        prompt_text = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        tool_names = [t.get("function", {}).get("name", "") for t in body.get("tools") or [] if isinstance(t, dict)]
        answer = self._answer(req.body, last_user, prompt_text, [n for n in tool_names if n])
        routed = [f"{name}: {req.headers[name]}" for name in _HOST_ROUTING if name in req.headers]
        if routed:  # as a host or gateway in front of models answers: from the deployment the headers name
            answer.text += f" (answered by {', '.join(routed)})"
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
        if isinstance(schema.get("properties"), dict):  # structured output: keys in the schema's order, as OpenAI's
            answer.text = json.dumps({name: f"{name} #{answer.digest}" for name in schema["properties"]})
        model = str(body.get("model") or _deployment(req.path) or "gpt-4o-mini")
        cid = f"chatcmpl-fake{self._next_id():06d}"
        usage = self._openai_usage(body, messages, answer)
        call_id = f"call_{answer.digest}{cid[-6:]}"
        finish = "tool_calls" if answer.tool else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
            if "audio" in (body.get("modalities") or []):  # OpenAI keeps a spoken answer for an hour
                audio = {"id": f"audio_{cid[-6:]}", "expires_at": int(time.time()) + AUDIO_LIFETIME}
                data = base64.b64encode(answer.text.encode()).decode()
                message.update(content=None, audio={**audio, "data": data, "transcript": answer.text})
            if answer.tool:
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": answer.tool["name"], "arguments": json.dumps(answer.tool["arguments"])},
                    }
                ]
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[Any], usage: dict[str, Any] | None) -> bytes:
            data: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                data["usage"] = usage
            return _sse(data)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], None)

        events: list[bytes] = []
        if answer.tool:
            args = json.dumps(answer.tool["arguments"])
            events.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": answer.tool["name"], "arguments": ""},
                            }
                        ],
                        "refusal": None,
                    }
                )
            )
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces(args)]
        elif "audio" in (body.get("modalities") or []):  # a spoken answer's id comes in its first chunk
            audio = {"id": f"audio_{cid[-6:]}", "data": "", "expires_at": int(time.time()) + AUDIO_LIFETIME}
            events.append(chunk({"role": "assistant", "content": None, "refusal": None, "audio": audio}))
            events += [chunk({"audio": {"transcript": p}}) for p in pieces(answer.text)]
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events += [chunk({"content": p}) for p in pieces(answer.text)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(event([], usage))
        events.append(_sse("[DONE]"))
        return self._stream(events)

    def _openai_usage(self, body: dict[str, Any], messages: list[Any], answer: _Answer) -> dict[str, Any]:
        """OpenAI usage; `cached_tokens` counts the prompt prefix (all but the last message) when
        the same model has seen that prefix before, the way automatic prompt caching reports it."""
        prefix = messages[:-1]
        cached = 0
        if prefix:
            key = "openai:" + canonical_digest(
                {"model": body.get("model"), "prefix": prefix, "k": body.get("prompt_cache_key")}
            )
            if self._seen_before(key):
                cached = tokens(" ".join(_text_of(m.get("content")) for m in prefix if isinstance(m, dict)))
        prompt = answer.prompt_tokens
        cached = min(cached, prompt)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    # -- OpenAI legacy completions ---------------------------------------------------------

    def _completions(self, req: RecordedRequest) -> Response:
        body = req.json
        prompt = body.get("prompt", "")
        prompt_text = prompt if isinstance(prompt, str) else _text_of(prompt)
        answer = self._answer(req.body, prompt_text, prompt_text, [])
        model = str(body.get("model") or _deployment(req.path) or "gpt-3.5-turbo-instruct")
        cid = f"cmpl-fake{self._next_id():06d}"
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [{"text": answer.text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(text: str, finish: str | None) -> bytes:
            data: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                data["usage"] = None
            return _sse(data)

        events = [chunk(p, None) for p in pieces(answer.text)] + [chunk("", "stop")]
        if include_usage:
            events.append(
                _sse(
                    {
                        "id": cid,
                        "object": "text_completion",
                        "created": CREATED,
                        "model": model,
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        events.append(_sse("[DONE]"))
        return self._stream(events)

    # -- OpenAI embeddings -------------------------------------------------------------------

    def _embeddings(self, req: RecordedRequest) -> Response:
        body = req.json
        inputs = body.get("input", "")
        items: list[Any] = inputs if isinstance(inputs, list) and not _is_token_list(inputs) else [inputs]
        dims = int(body.get("dimensions") or EMBEDDING_DIMS)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        total = 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else json.dumps(item)
            total += tokens(text)
            vector = embedding_vector(text, dims)
            encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        self._next_id()
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or _deployment(req.path) or "text-embedding-3-small"),
                "usage": {"prompt_tokens": total, "total_tokens": total},
            }
        )

    # -- moderations, rerank, audio --------------------------------------------------------

    def _file_upload(self, req: RecordedRequest) -> Response:
        """`POST /v1/files`: OpenAI's file object, or Anthropic's for a request naming `anthropic-version`."""
        n = self._next_id()
        if "anthropic-version" in req.headers:
            uploaded: dict[str, Any] = {
                "id": f"file_fake{n:06d}",
                "type": "file",
                "filename": "upload.txt",
                "mime_type": "text/plain",
                "size_bytes": len(req.raw),
                "created_at": "2026-01-01T00:00:00Z",
                "downloadable": False,
            }
        else:
            uploaded = {
                "id": f"file-fake{n:06d}",
                "object": "file",
                "bytes": len(req.raw),
                "created_at": CREATED,
                "filename": "upload.txt",
                "purpose": "user_data",
                "status": "processed",
                "expires_at": None,
                "status_details": None,
            }
        with self._lock:
            self.files.append(uploaded)
        return JSONResponse(uploaded)

    def _moderations(self, req: RecordedRequest) -> Response:
        """One result per input; flagged when the text says "attack"."""
        inputs = req.json.get("input", "")
        texts = inputs if isinstance(inputs, list) else [inputs]
        results = [
            {"flagged": "attack" in str(text), "categories": {"violence": "attack" in str(text)}} for text in texts
        ]
        return JSONResponse({"id": f"modr-{self._next_id()}", "model": "omni-moderation-latest", "results": results})

    def _rerank(self, req: RecordedRequest) -> Response:
        """Cohere's shape: a document's score is the share of the query's words (case and punctuation
        aside) that it contains; the best first, or the worst first after `rerank_worst_first()`."""
        body = req.json
        words = set(_words(str(body.get("query", ""))))
        documents = [d if isinstance(d, str) else json.dumps(d) for d in body.get("documents") or []]
        scores = [len(words & set(_words(doc))) / (len(words) or 1) for doc in documents]
        ranked = sorted(range(len(documents)), key=lambda i: -scores[i])[: body.get("top_n") or len(documents)]
        with self._lock:
            if self._rerank_worst_first:
                ranked.reverse()
        return JSONResponse(
            {
                "id": f"rerank-{self._next_id()}",
                "results": [{"index": i, "relevance_score": scores[i]} for i in ranked],
                "meta": {"billed_units": {"search_units": 1}},
            }
        )

    def _audio(self, req: RecordedRequest) -> Response:
        """The "transcript" of a multipart upload: the file's size and digest, and the form's prompt."""
        form = multipart_form(req.headers.get("content-type", ""), req.raw)
        audio = form.get("file", b"")
        text = f"{len(audio)} bytes {hashlib.sha256(audio).hexdigest()[:12]} {form.get('prompt', b'').decode()}"
        self._next_id()
        if form.get("response_format", b"json") == b"text":
            return Response(text, media_type="text/plain")
        return JSONResponse({"text": text.strip(), "usage": {"type": "duration", "seconds": 1}})

    # -- OpenAI Responses API ---------------------------------------------------------------

    def _responses(self, req: RecordedRequest) -> Response:
        body = req.json
        inp = body.get("input", "")
        if isinstance(inp, str):
            last_user, prompt_text = inp, inp
        else:
            users = [m for m in inp if isinstance(m, dict) and m.get("role", "user") == "user"]
            last_user = _text_of(users[-1].get("content")) if users else ""
            prompt_text = " ".join(_text_of(m.get("content")) for m in inp if isinstance(m, dict))
        if body.get("instructions"):
            prompt_text = f"{body['instructions']} {prompt_text}"
        tool_names = [
            str(t.get("name") or t.get("function", {}).get("name") or "")
            for t in body.get("tools") or []
            if isinstance(t, dict)
        ]
        answer = self._answer(req.body, last_user, prompt_text, [n for n in tool_names if n])
        n = self._next_id()
        rid, mid = f"resp_fake{n:06d}", f"msg_fake{n:06d}"
        model = str(body.get("model") or "gpt-4o-mini")
        usage = {
            "input_tokens": answer.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": answer.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }

        def response(status: str, output: list[dict[str, Any]], use: dict[str, Any] | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": CREATED,
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": body.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None},
                "store": body.get("store", True),
                "temperature": body.get("temperature", 1.0),
                "text": {"format": {"type": "text"}},
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [],
                "top_p": body.get("top_p", 1.0),
                "truncation": "disabled",
                "usage": use,
                "user": None,
                "metadata": body.get("metadata") or {},
            }

        if answer.tool:
            args = json.dumps(answer.tool["arguments"])
            item: dict[str, Any] = {
                "type": "function_call",
                "id": f"fc_fake{n:06d}",
                "call_id": f"call_fake{n:06d}",
                "name": answer.tool["name"],
                "arguments": args,
                "status": "completed",
            }
        else:
            item = {
                "type": "message",
                "id": mid,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}],
            }
        if not body.get("stream"):
            output = [item]
            if body.get("reasoning"):  # a reasoning model thinks first; its thought is kept by id, or sent encrypted
                thought: dict[str, Any] = {"type": "reasoning", "id": f"rs_fake{n:06d}", "summary": []}
                if "reasoning.encrypted_content" in (body.get("include") or []):
                    thought["encrypted_content"] = base64.b64encode(f"thought {n}".encode()).decode()
                output.insert(0, thought)
            return JSONResponse(response("completed", output, usage))
        seq = itertools.count(0)

        def ev(kind: str, **fields: Any) -> bytes:
            return _sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

        events = [
            ev("response.created", response=response("in_progress", [], None)),
            ev("response.in_progress", response=response("in_progress", [], None)),
        ]
        if answer.tool:
            args = item["arguments"]
            events.append(
                ev(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
            )
            events += [
                ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0, delta=p)
                for p in pieces(args)
            ]
            events.append(
                ev("response.function_call_arguments.done", item_id=item["id"], output_index=0, arguments=args)
            )
        else:
            events.append(
                ev("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
            )
            events.append(
                ev(
                    "response.content_part.added",
                    item_id=mid,
                    output_index=0,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
            events += [
                ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=p, logprobs=[])
                for p in pieces(answer.text)
            ]
            events.append(
                ev(
                    "response.output_text.done",
                    item_id=mid,
                    output_index=0,
                    content_index=0,
                    text=answer.text,
                    logprobs=[],
                )
            )
            events.append(
                ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=item["content"][0])
            )
        events.append(ev("response.output_item.done", output_index=0, item=item))
        events.append(ev("response.completed", response=response("completed", [item], usage)))
        return self._stream(events)

    # -- Anthropic messages ------------------------------------------------------------------

    def _messages(self, req: RecordedRequest, model: str | None = None, eventstream: bool = False) -> Response:
        body = req.json
        if _marks_an_empty_text_block(body):  # as Anthropic refuses it
            message = "cache_control cannot be set for empty text blocks"
            return self._error("anthropic", 400, None, {}, message=message)
        deferred = next(
            (
                t
                for t in body.get("tools") or []
                if isinstance(t, dict) and t.get("defer_loading") and "cache_control" in t
            ),
            None,
        )
        if deferred is not None:  # as Anthropic refuses it
            message = (
                f"Tool {deferred.get('name')!r} cannot have both defer_loading=true and cache_control set. "
                "Tools with defer_loading cannot use prompt caching."
            )
            return self._error("anthropic", 400, None, {}, message=message)
        if str(body.get("model") or "").startswith("claude-2") and _has_cache_control(body):
            message = f"{body['model']} does not support prompt caching (cache_control)"  # as older models did
            return self._error("anthropic", 400, None, {}, message=message)
        messages = body.get("messages") or []
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last_user = _text_of(users[-1].get("content")) if users else ""
        system = _text_of(body.get("system"))
        prompt_text = " ".join([system] + [_text_of(m.get("content")) for m in messages if isinstance(m, dict)])
        tool_names = [str(t.get("name", "")) for t in body.get("tools") or [] if isinstance(t, dict)]
        thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in ("enabled", "adaptive")
        answer = self._answer(req.body, last_user, prompt_text, [n for n in tool_names if n], thinking)
        beta, version = req.headers.get("anthropic-beta"), req.headers.get("anthropic-version", "")
        if beta is not None:  # as Anthropic's, the answer depends on the betas and the API version
            answer.text += f" (anthropic-beta: {beta})"
        if version and version < "2023-06-01":
            answer.text += f" (anthropic-version: {version})"
        n = self._next_id()
        mid = f"msg_fake{n:06d}"
        model = model or str(body.get("model") or "claude-sonnet-4-6")
        created, read = self._anthropic_cache(body)
        usage = {
            "input_tokens": max(1, answer.prompt_tokens - created - read),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "output_tokens": answer.completion_tokens,
            "service_tier": "standard",
        }
        blocks: list[dict[str, Any]] = []
        signature = base64.b64encode(f"sig-{answer.digest}".encode()).decode()
        if answer.thinking:
            blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": signature})
        if answer.tool:
            blocks.append({"type": "text", "text": "Let me check the weather."})
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{n:06d}",
                    "name": answer.tool["name"],
                    "input": answer.tool["arguments"],
                }
            )
        else:
            blocks.append({"type": "text", "text": answer.text})
        stop = "tool_use" if answer.tool else "end_turn"
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream") and not eventstream:
            counts: dict[str, str] = {}
            if req.path.startswith("/model/"):  # InvokeModel tells the answer's token counts in headers too
                counts = {"x-amzn-bedrock-input-token-count": str(usage["input_tokens"])}
                counts["x-amzn-bedrock-output-token-count"] = str(usage["output_tokens"])
            return JSONResponse(message, headers=counts)

        events = [
            _sse(
                {
                    "type": "message_start",
                    "message": {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}},
                },
                event="message_start",
            )
        ]
        for i, block in enumerate(blocks):

            def delta(d: dict[str, Any], i: int = i) -> bytes:
                return _sse({"type": "content_block_delta", "index": i, "delta": d}, event="content_block_delta")

            if block["type"] == "thinking":
                start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [delta({"type": "thinking_delta", "thinking": p}) for p in pieces(block["thinking"])]
                deltas.append(delta({"type": "signature_delta", "signature": block["signature"]}))
            elif block["type"] == "tool_use":
                start = {**block, "input": {}}
                deltas = [delta({"type": "input_json_delta", "partial_json": ""})]
                deltas += [
                    delta({"type": "input_json_delta", "partial_json": p}) for p in pieces(json.dumps(block["input"]))
                ]
            else:
                start = {"type": "text", "text": ""}
                deltas = [delta({"type": "text_delta", "text": p}) for p in pieces(block["text"])]
            events.append(
                _sse({"type": "content_block_start", "index": i, "content_block": start}, event="content_block_start")
            )
            if i == 0:
                events.append(_sse({"type": "ping"}, event="ping"))
            events += deltas
            events.append(_sse({"type": "content_block_stop", "index": i}, event="content_block_stop"))
        events.append(
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {
                        k: usage[k]
                        for k in (
                            "input_tokens",
                            "cache_creation_input_tokens",
                            "cache_read_input_tokens",
                            "output_tokens",
                        )
                    },
                },
                event="message_delta",
            )
        )
        events.append(_sse({"type": "message_stop"}, event="message_stop"))
        if eventstream:  # Bedrock: each event base64'd in the `bytes` of a binary `chunk` frame
            frames = [_aws_frame(json.loads(event.split(b"data: ", 1)[1])) for event in events]
            # InvokeModelWithResponseStream names its chunks' payload type too (ConverseStream does not)
            return self._stream(
                frames, media_type=EVENTSTREAM, headers={"x-amzn-bedrock-content-type": "application/json"}
            )
        return self._stream(events)

    def _anthropic_cache(self, body: dict[str, Any]) -> tuple[int, int]:
        """(cache_creation_input_tokens, cache_read_input_tokens), as Anthropic reports them.

        The prompt is the items of `tools`, `system` and `messages`, in that order. A breakpoint
        follows each item that carries `cache_control`, and with a top-level `cache_control`
        (automatic caching) the last item. A request reads the longest prefix written by an earlier
        one that ends at one of its breakpoints or up to 20 items before it (Anthropic's lookback),
        and writes the rest up to its last breakpoint.
        """
        items: list[Any] = []
        breakpoints: list[int] = []
        for section in ("tools", "system", "messages"):
            value = body.get(section)
            for item in value if isinstance(value, list) else ([value] if value else []):
                items.append(item)
                if _has_cache_control(item):
                    breakpoints.append(len(items))
        if isinstance(body.get("cache_control"), dict) and items and len(items) not in breakpoints:
            breakpoints.append(len(items))
        if not breakpoints:
            return 0, 0

        def key(n: int) -> str:
            return "anthropic:" + canonical_digest({"model": body.get("model"), "prefix": items[:n]})

        read_at = 0
        with self._lock:
            for point in breakpoints:
                hit = next((n for n in range(point, max(0, point - 20), -1) if key(n) in self._seen_prefixes), 0)
                read_at = max(read_at, hit)
            self._seen_prefixes.update(key(point) for point in breakpoints)
        read = tokens(json.dumps(items[:read_at])) if read_at else 0
        return max(0, tokens(json.dumps(items[: breakpoints[-1]])) - read), read

    # -- Gemini --------------------------------------------------------------------------------

    def _converse(self, req: RecordedRequest, model: str, stream: bool = False) -> Response:
        """Bedrock `Converse`: its own shape, usage in camelCase with cache reads and writes apart;
        `ConverseStream` the same answer as event-stream frames, one per event."""
        body = req.json
        messages = body.get("messages") or []
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last_user = _text_of(users[-1].get("content")) if users else ""
        prompt_text = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        answer = self._answer({"model": model, **body}, last_user, prompt_text, [])
        usage = {
            "inputTokens": answer.prompt_tokens,
            "outputTokens": answer.completion_tokens,
            "totalTokens": answer.prompt_tokens + answer.completion_tokens,
        }
        if stream:
            events = [
                ("messageStart", {"role": "assistant"}),
                *(("contentBlockDelta", {"delta": {"text": p}, "contentBlockIndex": 0}) for p in pieces(answer.text)),
                ("contentBlockStop", {"contentBlockIndex": 0}),
                ("messageStop", {"stopReason": "end_turn"}),
                ("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}),
            ]
            return self._stream([_aws_frame(event) for event in events], media_type=EVENTSTREAM)
        return JSONResponse(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": answer.text}]}},
                "stopReason": "end_turn",
                "usage": usage,
                "metrics": {"latencyMs": 12},
            }
        )

    def _gemini_create_cache(self, req: RecordedRequest) -> Response:
        """`cachedContents.create`: 400 under the minimum size (here 1,024 tokens), like the real API."""
        body = req.json
        fields = ("model", "systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config", "contents")
        held = {k: body[k] for k in fields if k in body}
        size = tokens(json.dumps({k: v for k, v in held.items() if k != "model"}))
        if not str(body.get("model", "")).startswith("models/"):
            return self._error("gemini", 400, None, {}, message="model must be models/{model}")
        if size < 1024:
            message = f"Cached content is too small. total_token_count={size}, min_total_token_count=1024"
            return self._error("gemini", 400, None, {}, message=message)
        name = f"cachedContents/fake{self._next_id():06d}"
        with self._lock:
            self.cached_contents[name] = {**held, "tokens": size, "owner": _gemini_owner(req)}
        return JSONResponse(
            {
                "name": name,
                "model": body["model"],
                "expireTime": "2099-01-01T00:00:00Z",
                "usageMetadata": {"totalTokenCount": size},
            }
        )

    def _gemini_generate(self, req: RecordedRequest, model: str, stream: bool) -> Response:
        body = req.json
        cached_tokens = 0
        if "cachedContent" in body:
            if any(
                k in body for k in ("systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config")
            ):
                message = (
                    "CachedContent can not be used with GenerateContent request setting system_instruction, "
                    "tools or tool_config."
                )
                return self._error("gemini", 400, None, {}, message=message)
            with self._lock:
                held = self.cached_contents.get(str(body["cachedContent"]))
            if held is not None and held["owner"] != _gemini_owner(req):  # another key's, or another project's
                return self._error("gemini", 403, None, {}, message="The caller does not have permission")
            if held is None or held["model"] != f"models/{model}":
                return self._error("gemini", 404 if held is None else 400, None, {}, message="CachedContent not found")
            cached_tokens = held["tokens"]
            # Answer as the same request without the cache would be answered.
            body = {**{k: v for k, v in held.items() if k not in ("model", "tokens", "owner")}, **body}
            body.pop("cachedContent")
            if "contents" in held:
                body["contents"] = held["contents"] + (req.json.get("contents") or [])
        contents = body.get("contents") or []
        users = [c for c in contents if isinstance(c, dict) and c.get("role", "user") == "user"]
        last_user = _text_of(users[-1].get("parts")) if users else ""
        prompt_text = " ".join(_text_of(c.get("parts")) for c in contents if isinstance(c, dict))
        tool_names = [
            str(f.get("name", ""))
            for t in body.get("tools") or []
            if isinstance(t, dict)
            for f in t.get("functionDeclarations") or t.get("function_declarations") or []
        ]
        # The digest covers the model too: for Gemini it is in the path, not the body.
        answer = self._answer({"model": model, **body}, last_user, prompt_text, [n for n in tool_names if n])
        rid = f"fake-{self._next_id():06d}"
        usage = {
            "promptTokenCount": answer.prompt_tokens + cached_tokens,
            "candidatesTokenCount": answer.completion_tokens,
            "totalTokenCount": answer.prompt_tokens + cached_tokens + answer.completion_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens + cached_tokens}],
        }
        if cached_tokens:
            usage["cachedContentTokenCount"] = cached_tokens

        def chunk(parts: list[dict[str, Any]], finish: str | None, use: dict[str, Any]) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            return {"candidates": [candidate], "usageMetadata": use, "modelVersion": model, "responseId": rid}

        all_parts: list[dict[str, Any]]
        if answer.tool:
            all_parts = [{"functionCall": {"name": answer.tool["name"], "args": answer.tool["arguments"]}}]
        else:
            all_parts = [{"text": answer.text}]
        if not stream:
            return JSONResponse(_projected(chunk(all_parts, "STOP", usage), req))
        partial_usage = {
            "promptTokenCount": answer.prompt_tokens,
            "totalTokenCount": answer.prompt_tokens,
            "promptTokensDetails": usage["promptTokensDetails"],
        }
        if answer.tool:
            chunks = [chunk(all_parts, "STOP", usage)]
        else:
            # Gemini streams a few words per chunk; the last chunk has finishReason and full usage.
            words = pieces(answer.text)
            groups = ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]
            chunks = [
                chunk(
                    [{"text": g}],
                    "STOP" if k == len(groups) - 1 else None,
                    usage if k == len(groups) - 1 else partial_usage,
                )
                for k, g in enumerate(groups)
            ]
        if req.query and "alt=sse" in req.query.split("&"):
            return self._stream([_sse(c) for c in chunks])
        # Without alt=sse the API streams one JSON array, element by element.
        encoded = [json.dumps(c, indent=2) for c in chunks]
        parts = ["[" + encoded[0]] + ["\n,\r\n" + e for e in encoded[1:]] + ["]"]
        return self._stream([p.encode() for p in parts], media_type="application/json")

    def _gemini_embed(self, req: RecordedRequest, model: str) -> Response:
        self._next_id()
        return JSONResponse({"embedding": _gemini_embedding(req.json)})

    def _gemini_batch_embed(self, req: RecordedRequest) -> Response:
        """`batchEmbedContents`: one embedding per item of `requests`, in order."""
        self._next_id()
        return JSONResponse({"embeddings": [_gemini_embedding(item) for item in req.json.get("requests") or []]})


def _projected(answer: dict[str, Any], req: RecordedRequest) -> dict[str, Any]:
    """The answer as Google's field mask leaves it (`fields`, `$fields` or `X-Goog-FieldMask`; top-level
    names only): a partial answer, which must never be served to a caller who asked for all of it."""
    masks = [v for k, v in parse_qsl(req.query) if k in ("fields", "$fields")] + [
        req.headers.get("x-goog-fieldmask", "")
    ]
    names = {path.strip().split(".")[0].split("(")[0] for mask in masks if mask for path in mask.split(",")}
    return {k: v for k, v in answer.items() if k in names} if names else answer


def _gemini_embedding(body: dict[str, Any]) -> dict[str, Any]:
    text = _text_of((body.get("content") or {}).get("parts"))
    dims = int(body.get("outputDimensionality") or body.get("output_dimensionality") or EMBEDDING_DIMS)
    return {"values": embedding_vector(text, min(dims, 32))}


def _revoked(key: str) -> Callable[[str], tuple[int, Any, dict[str, str]]]:
    """The real answer (status, body, headers) an API refuses `key` with, by API."""
    masked = f"{key[:3]}{'*' * 12}{key[-4:]}"

    def answer(api: str) -> tuple[int, Any, dict[str, str]]:
        if api == "anthropic":
            return 401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}, {}
        if api == "gemini":
            said = "API key not valid. Please pass a valid API key."
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            localized = {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": said}
            error = {"code": 400, "message": said, "status": "INVALID_ARGUMENT", "details": [info, localized]}
            return 400, {"error": error}, {}
        if api == "bedrock":
            kind = "UnrecognizedClientException"
            said = "The security token included in the request is invalid."
            return (
                403,
                {"message": said},
                {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.coral.service/"},
            )
        message = (
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
        return 401, {"error": error}, {}

    return answer


def _presented_keys(req: RecordedRequest) -> set[str]:
    """The credentials a request presents, in any family's header."""
    keys = {req.headers.get(h, "") for h in ("x-api-key", "api-key", "x-goog-api-key")}
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        keys.add(token)
    return keys - {""}


def _mentions(value: Any, field: str) -> bool:
    """Whether a JSON value has `field` as a key at any depth."""
    if isinstance(value, dict):
        return field in value or any(_mentions(v, field) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, field) for v in value)
    return False


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _is_token_list(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, int) for v in value)


BEDROCK_PADDING = string.ascii_lowercase + string.ascii_uppercase + string.digits
"""The characters of the padding `p` Bedrock adds to each event: a prefix of these, as long as it likes."""


def _compact(value: Any) -> bytes:
    """JSON as Bedrock writes it: no spaces, UTF-8 as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _aws_frame(event: dict[str, Any] | tuple[str, dict[str, Any]]) -> bytes:
    """One AWS event-stream message (the framing Bedrock streams in): a `chunk` carrying `event`
    base64'd (InvokeModelWithResponseStream) beside the padding `p` Bedrock adds to hide its length,
    or for a `(name, payload)` pair an event of that name carrying the payload as it is (ConverseStream)."""
    if isinstance(event, tuple):
        name, payload = event[0], _compact(event[1])
    else:
        encoded = base64.b64encode(_compact(event)).decode()
        name, payload = "chunk", _compact({"bytes": encoded, "p": BEDROCK_PADDING[: 1 + len(encoded) % 57]})
    fields = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    head = b"".join(
        struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in fields.items()
    )
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _marks_an_empty_text_block(item: Any) -> bool:
    if isinstance(item, dict):
        if item.get("type") == "text" and item.get("text") == "" and "cache_control" in item:
            return True
        return any(_marks_an_empty_text_block(v) for v in item.values() if isinstance(v, (list, dict)))
    return isinstance(item, list) and any(_marks_an_empty_text_block(v) for v in item)


def _has_cache_control(item: Any) -> bool:
    if isinstance(item, dict):
        if "cache_control" in item:
            return True
        return any(_has_cache_control(v) for v in item.values() if isinstance(v, (list, dict)))
    if isinstance(item, list):
        return any(_has_cache_control(v) for v in item)
    return False


def _deployment(path: str) -> str | None:
    if path.startswith("/openai/deployments/"):
        return path.split("/")[3]
    return None


def multipart_form(content_type: str, body: bytes) -> dict[str, bytes]:
    """A `multipart/form-data` body's parts by name (parsed by the standard library)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {
        str(part.get_param("name", header="content-disposition")): part.get_payload(decode=True) or b""
        for part in message.iter_parts()
    }


_GEMINI_JSON = "application/json; charset=UTF-8"
_GEMINI_JSON_HEADERS = {"content-type": _GEMINI_JSON, "cache-control": "private"}
"""Google's front end marks every JSON answer of the Gemini API private (its SSE streams: nothing)."""
_COHERE_HEADERS = {
    "content-type": "application/json",
    "cache-control": "no-cache, no-store, no-transform, must-revalidate, private, max-age=0",
    "expires": "Thu, 01 Jan 1970 00:00:00 UTC",
    "pragma": "no-cache",
}
_REQUEST_IDS: dict[str, tuple[str, Callable[[int], str]]] = {
    "openai": ("x-request-id", lambda n: f"req_{n:024x}"),
    "anthropic": ("request-id", lambda n: f"req_{n:024x}"),
    "bedrock": ("x-amzn-requestid", lambda n: f"{n:08x}-0000-4000-8000-{n:012x}"),
    "cohere": ("x-debug-trace-id", lambda n: f"{n:032x}"),
}
"""The header each API names its call in (the SDKs read OpenAI's and Anthropic's as `_request_id`,
boto3 Bedrock's as `ResponseMetadata.RequestId`); Gemini names none a client reads."""
_MEASURES: dict[str, Callable[[int], list[tuple[str, str]]]] = {
    "openai": lambda n: [
        ("openai-processing-ms", str(200 + n % 97)),
        ("x-envoy-upstream-service-time", str(210 + n % 97)),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", str(10000 - n)),
        ("x-ratelimit-remaining-tokens", str(2_000_000 - 40 * n)),
        ("x-ratelimit-reset-requests", f"{6 + n % 50}ms"),
    ],
    "anthropic": lambda n: [
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", str(4000 - n)),
        ("anthropic-ratelimit-requests-reset", f"2026-12-07T09:{n % 60:02d}:00Z"),
        ("anthropic-ratelimit-input-tokens-remaining", str(400_000 - 40 * n)),
    ],
    "gemini": lambda n: [("server-timing", f"gfet4t7; dur={300 + n % 97}")],
    "bedrock": lambda n: [("x-amzn-bedrock-invocation-latency", str(400 + n % 97))],
    "cohere": lambda n: [("x-trial-endpoint-call-limit", "10"), ("x-trial-endpoint-call-remaining", str(10000 - n))],
}
"""Per API, the headers measuring one call (its time, the caller's rate limits left): the kinds a
hit, which is no call, must not replay."""
_ACCOUNT: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (("openai-organization", "user-fake"), ("openai-project", "proj_fake"), ("openai-version", "2020-10-01")),
    "anthropic": (("anthropic-organization-id", "0b6a3c1e-fake-4f2e-9a51-000000000001"),),
}
"""Per API, the headers naming the account billed for a call (and OpenAI's API version): the same on
every answer to one credential, which a hit does not replay either (a shared store would name
another tenant's organisation)."""


def api_of(path: str) -> str:
    """The API whose headers the fake sends with an answer to `path`: its family's, Bedrock's or Cohere's."""
    if path.startswith("/model/"):
        return "bedrock"
    if path.endswith("/rerank"):
        return "cohere"
    return family_of(path)


def family_of(path: str) -> str:
    if path.startswith("/v1/messages") or path.startswith("/v1/complete"):
        return "anthropic" if path.startswith("/v1/messages") else "openai"
    if path.startswith("/v1beta") or path.startswith("/v1/models/") and ":" in path:
        return "gemini"
    return "openai"


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(family: str, status: int, message: str) -> dict[str, Any]:
    """An error body shaped the way `family`'s API shapes it."""
    if family == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if family == "gemini":
        return {"error": {"code": status, "message": message, "status": _GEMINI_STATUS.get(status, "UNKNOWN")}}
    kind = _OPENAI_TYPES.get(status, "server_error")
    code = "unknown_url" if status == 404 else ("rate_limit_exceeded" if status == 429 else None)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def create_fake_provider() -> FakeProvider:
    """A fresh fake provider; serve `.app` with any ASGI server."""
    return FakeProvider()
