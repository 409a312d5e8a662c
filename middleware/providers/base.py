"""What every API family adapter provides to the engine.

An `Endpoint` is one operation of one API family (OpenAI chat completions,
Anthropic messages, Gemini generateContent, ...). It knows which paths it owns,
how a request asks for a stream, which body fields do not change the answer,
how to assemble a stream into the final response, how to replay a final
response as its own SSE stream, and how to read token usage.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ..._operations import Operation
from ..._wire import OPENAI, Auth, error_object
from .. import _exact_json as exact_json
from .._keys import key_query
from . import cuts, genai


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage normalised across providers.

    `input_tokens` always *includes* cache reads and cache writes (OpenAI's
    convention and OpenTelemetry's); Anthropic and Bedrock report them apart,
    so their adapters add them up.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """The result of matching a request path to an endpoint."""

    endpoint: Endpoint
    model: str | None = None
    """The model named by the path (Gemini `models/{m}:...`, Azure deployment), if any."""
    stream_by_path: bool = False
    """True when the path itself asks for a stream (Gemini `:streamGenerateContent`)."""
    auth: Auth | None = None
    """Where this path's credential is, when not where the endpoint's family has it (Azure paths)."""

    @property
    def credentials(self) -> Auth:
        """Where the credential the provider authenticates is: the cache's isolation scope."""
        return self.auth if self.auth is not None else self.endpoint.auth


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of a request a provider needs to render or assemble a response."""

    body: dict[str, Any]
    query: str
    route: Route
    stream: bool


HeaderPairs = tuple[tuple[bytes, bytes], ...]
"""Response header pairs, ready to send."""
JSON_MEDIA_TYPE = "application/json"
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
"""A header value worth storing: an HTTP token (RFC 9110), at most 128 characters (the providers'
request ids are 30 to 40): nothing a hostile upstream sends can add a header or bloat every hit."""


@dataclass(frozen=True, slots=True)
class AnswerHeaders:
    """What an API family sends with an answer besides its body, that a hit sends again: one table per
    family, in its provider module (a hit is the provider's answer, headers included)."""

    forms: Mapping[str, HeaderPairs]
    """By the answer's media type (`application/json`, or the stream's `Endpoint.stream_media_type`):
    the content-type (and cache-control) the provider sends with it, spelled as it spells them."""
    request_id: str | None = None
    """The response header naming the provider's call (`x-request-id`): stored with the answer and
    replayed on its hits, so a hit names the call that produced it. None: the family names none."""
    kept: tuple[str, ...] = ()
    """Other response headers that describe the answer, not the call (Bedrock's token counts, the
    same figures as the body's usage): stored and replayed as the request id is. Headers measuring
    the call (latency, rate limits) are never listed: a hit is no call."""
    account: frozenset[str] = frozenset()
    """Response headers naming the account billed for the call (OpenAI's organisation and project):
    never stored, and dropped from a miss when a gateway's own key replaced the caller's, whose
    callers have no business knowing the owner's account."""

    def of(self, media_type: str) -> HeaderPairs:
        """The headers that open a hit in `media_type` (only its content-type, for a form not listed)."""
        found = self.forms.get(media_type)
        return found if found is not None else ((b"content-type", media_type.encode("latin-1")),)

    def stores(self, name: str) -> bool:
        """Whether `name` (lower-case) is a header `stored_of` keeps: the request id or a `kept` one."""
        return name == self.request_id or name in self.kept

    def stored_of(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The upstream answer's request id and `kept` headers, as stored header pairs: each that is
        a short header token (a repeated header reads as `a, b`: not one)."""
        names = self.kept if self.request_id is None else (self.request_id, *self.kept)
        found = ((name, headers.get(name)) for name in names)
        return tuple((name, value) for name, value in found if value is not None and _HEADER_TOKEN.fullmatch(value))


class StreamAssembler(Protocol):
    """Collects a streamed response; `result()` is the final JSON only if the stream completed."""

    @property
    def complete(self) -> bool:
        """True once the provider's terminal event was seen (`[DONE]`, `message_stop`, ...); False
        again if what follows it may not follow it (the Recorder, which stored the answer at the
        event, feeds on what the stream still sends, and withdraws the entry then)."""
        ...

    def feed(self, chunk: bytes) -> None: ...

    def result(self) -> bytes | None:
        """The assembled final response as JSON bytes, or None when incomplete or broken."""
        ...

    def cut(self, answer: bytes) -> bytes | None:
        """How the provider cut the stream whose `result()` is `answer` (`cuts.py`), for its hits to
        replay; None: the family's hits synthesise their stream from the answer."""
        ...


class StreamFilter(Protocol):
    """Rewrites the stream forwarded to the caller (e.g. drops a chunk the caller did not ask for)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Endpoint(ABC):
    family: ClassVar[str]
    """API family: `openai`, `anthropic`, `gemini`."""
    name: ClassVar[str]
    """Stable endpoint name used in keys, e.g. `chat.completions`."""
    operation: ClassVar[str]
    """OpenTelemetry `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`, ..."""
    api_operation: ClassVar[Operation | None] = None
    """What a call does on the provider, as `llm_cache/_operations.py` declares it for the cache and the
    router alike (whether it creates something that a call sent twice would create twice). None: an
    operation not declared there (a custom endpoint), which may create something."""
    volatile_fields: ClassVar[frozenset[str]] = frozenset()
    """Body fields, beyond the engine's defaults, that never change the answer."""
    streams: ClassVar[bool] = True
    signed_body: ClassVar[bool] = False
    """The body is signed (SigV4): it is never rewritten, so the body `cache` field is refused."""
    keyed_headers: ClassVar[bool] = False
    """Whether request headers carry settings that change the answer (see `header_key`)."""
    form_body: ClassVar[bool] = False
    """The request body is `multipart/form-data` (audio uploads), read by `read_form`, never as JSON."""
    auth: ClassVar[Auth] = OPENAI
    """Where the family's requests carry the credential the provider authenticates (see `llm_cache/_wire.py`)."""
    answer_headers: ClassVar[AnswerHeaders] = AnswerHeaders({})
    """What the family sends with an answer besides its body, that a hit sends again (one table per family)."""

    @property
    def creates_nothing(self) -> bool:
        """Whether a call creates nothing on the provider (a generation), whatever its body asks."""
        return self.api_operation is not None and self.api_operation.creates_nothing

    @abstractmethod
    def match(self, path: str) -> Route | None:
        """The route if this endpoint owns `path` (no query string), else None."""

    def read_form(self, content_type: str, body: bytes) -> dict[str, Any] | None:
        """A `form_body` request's fields, as the key reads them; None: not a form it can read."""
        raise NotImplementedError

    def is_stream(self, route: Route, query: str, body: dict[str, Any]) -> bool:
        return self.streams and (route.stream_by_path or body.get("stream") is True)

    def model(self, route: Route, body: dict[str, Any]) -> str | None:
        model = body.get("model")
        if isinstance(model, str):
            return model
        return route.model

    @abstractmethod
    def assembler(self, request: RequestView) -> StreamAssembler: ...

    @abstractmethod
    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        """Replay a stored final response as this provider's SSE stream (or stream format)."""

    def render_events(self, events: list[cuts.Event], request: RequestView) -> bytes:
        """A streamed hit of an entry that kept its stream's cut: its events (`cuts.replay`, then
        `replayed_events`) in this provider's stream format (server-sent events). An entry without
        one is `render_stream`'s."""
        return cuts.encode_sse(events)

    def replayed_events(self, events: list[cuts.Event]) -> list[cuts.Event]:
        """A kept cut's events made ready for `render_events`, once per entry (they are memoised):
        a family whose events carry an encoded event (Bedrock's base64 `chunk`s) encodes it here."""
        return events

    @abstractmethod
    def usage(self, response: dict[str, Any]) -> Usage: ...

    def response_model(self, response: dict[str, Any]) -> str | None:
        model = response.get("model")
        return model if isinstance(model, str) else None

    # -- what the OpenTelemetry GenAI conventions read (telemetry only, for spans that record) ---------

    request_params: ClassVar[genai.RequestParams] = ()
    """The request parameters the conventions name (`gen_ai.request.temperature`, ...) as data:
    (body field, attribute, kind), read by `request_attributes`."""
    request_params_in: ClassVar[str | None] = None
    """The body object that holds them (Gemini `generationConfig`), or None for the body itself."""

    def request_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        source = body.get(self.request_params_in) if self.request_params_in else body
        return genai.request_attributes(source, self.request_params) if isinstance(source, dict) else {}

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        """`gen_ai.response.finish_reasons`: why each choice ended."""
        return genai.choice_finish_reasons(response)

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """`gen_ai.input.messages` (opt-in content capture)."""
        return genai.messages(body.get("messages"))

    def system_instructions(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """`gen_ai.system_instructions`: instructions given apart from the chat history (opt-in)."""
        return []

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        """`gen_ai.output.messages` (opt-in content capture)."""
        return genai.openai_output(response)

    def response_id(self, response: dict[str, Any]) -> str | None:
        rid = response.get("id")
        return rid if isinstance(rid, str) else None

    def stream_media_type(self, request: RequestView) -> str:
        return "text/event-stream"

    def capture_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A body to send upstream instead, so that a streamed answer carries everything an entry
        needs (OpenAI sends stream usage only when asked). None: send the caller's body."""
        return None

    def upstream_identity(self, url: str) -> str:
        """The upstream URL as the key names it: the same for every form of one request (JSON or
        stream), so both share an entry. Endpoints whose path names the stream form override it."""
        return url

    def asks_for_usage(self, body: dict[str, Any], stream: bool) -> bool:
        """Whether the provider's answer to this request carries token usage (OpenAI streams only do
        when `stream_options.include_usage` asks): an entry made without it never serves one with."""
        return True

    def stream_filter(self, request: RequestView) -> StreamFilter | None:
        """Undoes `capture_body` on the stream the caller sees; called only when it returned a body."""
        return None

    def is_final(self, response: dict[str, Any]) -> bool:
        """Whether a 2xx JSON answer is the finished result (not `queued`, `in_progress`, `incomplete`)."""
        return True

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        """Why this adapter cannot read `response` (a JSON object that is not an error object) as a
        success of its own shape, or None. It checks what `render_stream`, `usage` and the hit path
        read, so that anything stored replays in both forms. Called at store time only."""
        return None

    def unstorable(self, body: bytes, request: RequestView) -> str | None:
        """Why a 2xx answer (a JSON body, or a stream's assembled result) must not be stored, or None.
        Store time only: a hit never pays for it."""
        try:
            response = exact_json.loads(body)
        except ValueError:
            return "response is not valid JSON"
        if not isinstance(response, dict):
            return "response is not a JSON object"
        error = error_object(response)
        if error is not None:
            return f"error body: {error}"
        if not self.is_final(response):
            return "response is not final (queued, in progress or incomplete)"
        shape = self.invalid(response, request)
        return None if shape is None else f"invalid response: {shape}"

    def answer_ends(self, response: dict[str, Any]) -> float | None:
        """When something the answer names on the provider stops existing (wall-clock seconds), or
        None: its entry is neither served nor kept past it. Store time only, for answers that hold an
        `expires_at`."""
        return None

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        """Why the answer depends on state the provider holds (a conversation, a container, a
        mutable store), so the request must bypass the cache; None when the request says it all.
        Called once per request in `prepare`: keep it to a few dict lookups."""
        return None

    def key_query(self, route: Route, query: str) -> tuple[tuple[str, str], ...]:
        """The query's (name, value) pairs that belong in the key, sorted by name (`_keys.key_query`):
        every one but the credentials, which scope the entry instead (a family drops those that never
        change the answer)."""
        return key_query(query)

    def header_key(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The header settings that belong in the key, as (name, value) pairs (called only when
        `keyed_headers`). A request that sends one of these names twice is not cached."""
        return ()

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """(the context, the text to embed) for the semantic cache: the last user turn's text, and the
        body without that text (system prompt, earlier turns, tools, parameters). A semantic match is
        only ever looked for among requests with the same context. None: the request is not eligible
        (the last turn is not plain user text, e.g. a tool result or an image)."""
        return None

    # -- list requests served item by item (`_items.py`) -----------------------------------------

    def items(self, route: Route, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The single-item requests a list request is made of (an embeddings `input` list), in input
        order, each the body its own request would send, so each item is keyed as that request is.
        None: the request is served whole. An endpoint that returns items implements the three below."""
        return None

    def batch_body(self, route: Route, body: dict[str, Any], positions: list[int]) -> dict[str, Any]:
        """The list request `body` asking only for its items at `positions`, in that order."""
        raise NotImplementedError

    def item_answers(self, response: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
        """A list answer as the `count` single-item answers its items' own requests would get, in
        order; None when it does not hold `count` readable items."""
        raise NotImplementedError

    def batch_answer(self, answers: list[dict[str, Any]], upstream: dict[str, Any] | None) -> dict[str, Any]:
        """The list answer made of single-item `answers`, its usage the `upstream` answer's (None:
        nothing went upstream, no tokens were used)."""
        raise NotImplementedError


class NonStreamingEndpoint(Endpoint):
    """An endpoint that only ever answers JSON (embeddings): the engine never assembles or replays a stream."""

    streams: ClassVar[bool] = False

    def assembler(self, request: RequestView) -> StreamAssembler:
        raise TypeError(f"{self.name} never streams")

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        raise TypeError(f"{self.name} never streams")


HOST_SETTING_HEADERS = ("azureml-model-deployment", "extra-parameters", "x-policy-id")
"""Headers OpenAI-compatible hosts read to choose what answers: Azure Machine Learning's deployment of
an endpoint, Azure AI Foundry's handling of body fields its API does not define (`drop` or
`pass-through` to the model), and Azure OpenAI's content filter configuration chosen per request
(a stricter filter refuses what a laxer one answers)."""
_PORTKEY = "x-portkey-"
_PORTKEY_MARKS = ("x-portkey-api-key", "x-portkey-provider", "x-portkey-virtual-key", "x-portkey-config")
"""One of these is on every request to a Portkey gateway (hosted or self-hosted)."""
_PORTKEY_PER_CALL = frozenset(
    f"{_PORTKEY}{name}"
    for name in ("trace-id", "span-id", "parent-span-id", "span-name", "metadata", "debug", "cache-force-refresh")
)
"""Portkey headers that label or trace a call, never choose what answers it."""


def host_setting_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The headers an OpenAI-compatible host or gateway in front of the provider reads to choose the
    model, the provider or the treatment of the body (`HOST_SETTING_HEADERS`, and a Portkey gateway's
    `x-portkey-*` routing: provider, virtual key, config, custom host, ...): two requests alike but
    for them are answered by different models, so they belong in the key."""
    found = tuple((name, value) for name in HOST_SETTING_HEADERS if (value := headers.get(name)) is not None)
    if any(name in headers for name in _PORTKEY_MARKS):
        portkey = sorted(
            (name, value)
            for name, value in headers.items()
            if name.startswith(_PORTKEY) and name not in _PORTKEY_PER_CALL
        )
        found += tuple(portkey)
    return found


def loads_object(data: bytes | str) -> dict[str, Any] | None:
    """A stream event's JSON object (None: not one), every number kept as it was spelt."""
    try:
        value = exact_json.loads_spelt(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def split_last_turn(
    body: dict[str, Any], field: str, content_key: str = "content"
) -> tuple[dict[str, Any], str] | None:
    """(the body with `body[field]` less its last turn, that turn's text) when the last turn of
    `body[field]` is a user turn (`role` "user" or absent) made only of text: a string, or text parts
    (`{"type": "text", "text": ...}` / `{"text": ...}`)."""
    turns = body.get(field)
    if not isinstance(turns, list) or not turns:
        return None
    last = turns[-1]
    if not isinstance(last, dict) or last.get("role", "user") != "user":
        return None
    text = plain_text(last.get(content_key))
    if not text:
        return None
    return {**body, field: turns[:-1]}, text


def plain_text(content: Any) -> str | None:
    """The text of a string or of a list of text-only parts; None if anything else is in it."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type", "text") not in ("text", "input_text"):
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "\n".join(texts)


def usage_with_cache_apart(response: dict[str, Any], fresh: str, read: str, write: str, output: str) -> Usage:
    """`Usage` from a `usage` object that counts cache reads and writes apart from its input tokens
    (Anthropic, Bedrock); `Usage.input_tokens` counts them in."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    uncached = token_count(usage.get(fresh))
    cache_read = token_count(usage.get(read))
    cache_write = token_count(usage.get(write))
    total = None if uncached is None else uncached + (cache_read or 0) + (cache_write or 0)
    return Usage(total, token_count(usage.get(output)), cache_read, cache_write)


MAX_TOKEN_COUNT = 2**53
"""Past this a count is no double's integer (Prometheus and OpenTelemetry add up doubles)."""


def token_count(value: object) -> int | None:
    """A usage field as a token count, or None: only a whole number from 0 to `MAX_TOKEN_COUNT`.

    An upstream's usage feeds counters that must never go down (a Prometheus counter that drops
    reads as a restart to `rate()`) and the cost avoided: a negative or absurd count is not a count."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


# -- shapes: what an adapter checks before an answer is stored --------------------------------


def not_a(kind: type | tuple[type, ...], value: object, where: str, optional: bool = False) -> str | None:
    """`where` is not of `kind` (None is accepted when `optional`)."""
    if optional and value is None:
        return None
    return None if isinstance(value, kind) else f"{where} is {_type_name(value)}"


def objects(value: object, where: str, optional: bool = False, empty: bool = True) -> str | None:
    """`where` is not a list of JSON objects (or is an empty one, unless `empty`)."""
    if optional and value is None:
        return None
    if not isinstance(value, list):
        return f"{where} is {_type_name(value)}, not a list"
    if not empty and not value:
        return f"{where} is empty"
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            return f"{where}[{index}] is {_type_name(item)}, not an object"
    return None


def numbers(value: object, where: str) -> str | None:
    """`where` is not a list of numbers (an embedding)."""
    if not isinstance(value, list):
        return f"{where} is {_type_name(value)}, not a list"
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        return f"{where} holds something other than numbers"
    return None


def _type_name(value: object) -> str:
    return "null or missing" if value is None else type(value).__name__
