"""Google Gemini API (`generativelanguage` v1/v1beta) and Vertex AI's `publishers/google/models` paths.

Gemini streams have no terminal event: a stream is stored when it ended with every candidate
it carried having reported a `finishReason` (in the JSON-array form, once the array was closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ... import _operations as operations
from ..._wire import GEMINI, gemini_pattern
from .. import _exact_json as exact_json
from . import cuts, genai
from .base import (
    JSON_MEDIA_TYPE,
    AnswerHeaders,
    Endpoint,
    NonStreamingEndpoint,
    RequestView,
    Route,
    Usage,
    loads_object,
    not_a,
    numbers,
    objects,
    split_last_turn,
    token_count,
)
from .sse import SSEDecoder

ANSWER_HEADERS = AnswerHeaders(
    {
        JSON_MEDIA_TYPE: ((b"content-type", b"application/json; charset=UTF-8"), (b"cache-control", b"private")),
        "text/event-stream": ((b"content-type", b"text/event-stream"), (b"content-disposition", b"attachment")),
    }
)
"""What generativelanguage.googleapis.com sends with an answer (a JSON array stream is JSON too):
Google's front end marks every JSON answer `private`, and an SSE stream says `content-disposition:
attachment`; it names no call in a header."""

_FORMS = frozenset({"alt", "$alt"})
"""Google's system parameter naming the answer's format: `json` (the default), `sse` (a stream's events),
`proto`, `media`; `json;enum-encoding=int` (Google's generated REST clients) writes enums as numbers."""
_SHARED_FORMS = {True: frozenset({"json", "sse"}), False: frozenset({"json"})}
"""By whether the call streams: the forms whose answers share one entry, each rendered from it."""
_TAGS = frozenset({"quotaUser"})
"""System parameters that only sort the call in Google's quota accounting: never keyed."""
KEYED_HEADERS = ("x-goog-fieldmask", "x-goog-api-version")
"""System parameters sent as headers that change the answer: a field mask leaves a partial answer (as
`fields` does in the query), and the API version may change its shape."""

_ARRAY_GAP = re.compile(rb"[ \t\r\n]*[\[,\]][ \t\r\n]*")
"""What an array has between its elements: `[`, `,` or `]`, with whitespace about it."""
_MAX_GAP = 64
"""The longest gap a cut keeps (Gemini's are `[`, `\n,\r\n` and `]`)."""
_TEXT_PART_KEYS = frozenset({"text", "thought", "thoughtSignature"})
_STORE_TOOLS = ("fileSearch", "file_search", "retrieval")
"""Tools that ground the answer in a store the provider holds: the Gemini API's File Search stores,
and Vertex AI's `retrieval` (a Vertex AI Search data store or a RAG Engine corpus)."""


class _GeminiEndpoint(Endpoint):
    family = "gemini"
    answer_headers = ANSWER_HEADERS
    auth = GEMINI
    keyed_headers = True
    methods: str

    def __init__(self) -> None:
        self._pattern = gemini_pattern(self.methods)

    def match(self, path: str) -> Route | None:
        found = self._pattern.match(path)
        if found is None:
            return None
        return Route(self, model=found.group("model"), stream_by_path=found.group("method").startswith("stream"))

    def is_stream(self, route: Route, query: str, body: dict[str, Any]) -> bool:
        return route.stream_by_path

    def key_query(self, route: Route, query: str) -> tuple[tuple[str, str], ...]:
        """Google's system parameters are keyed when they change the answer's bytes (`fields`, `prettyPrint`,
        `$ct`, `callback`, `$.xgafv`, ...), as any other query parameter is; `quotaUser` never is. The
        format (`alt`) is left out only when it is one the stored answer is rendered in (a stream's
        JSON array or SSE events; `json` for a unary call); any other, or two, are keyed."""
        pairs = super().key_query(route, query)
        if not pairs:
            return pairs
        forms = {value for name, value in pairs if name in _FORMS}
        shared = len(forms) <= 1 and forms <= _SHARED_FORMS[route.stream_by_path]
        return tuple((name, value) for name, value in pairs if name not in _TAGS and not (shared and name in _FORMS))

    def header_key(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((name, value) for name in KEYED_HEADERS if (value := headers.get(name)) is not None)

    def upstream_identity(self, url: str) -> str:
        head, colon, method = url.rpartition(":")
        return f"{head}:{method.removeprefix('stream').lower()}" if colon else url

    def response_model(self, response: dict[str, Any]) -> str | None:
        model = response.get("modelVersion")
        return model if isinstance(model, str) else None

    def response_id(self, response: dict[str, Any]) -> str | None:
        rid = response.get("responseId")
        return rid if isinstance(rid, str) else None

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        # A `cachedContent` the caller names is fine: its name is in the key, and a cached content
        # cannot be changed after it is created (only its expiry can).
        tools = body.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                found = next((name for name in _STORE_TOOLS if isinstance(tool, dict) and name in tool), None)
                if found is not None:
                    return f"the {found} tool reads a store the provider holds, which changes as documents are added"
        return None

    def usage(self, response: dict[str, Any]) -> Usage:
        usage = response.get("usageMetadata")
        if not isinstance(usage, dict):
            return Usage()
        candidates = token_count(usage.get("candidatesTokenCount"))
        thoughts = token_count(usage.get("thoughtsTokenCount"))
        output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
        # promptTokenCount already includes cachedContentTokenCount.
        return Usage(
            token_count(usage.get("promptTokenCount")), output, token_count(usage.get("cachedContentTokenCount")), None
        )


def _sse_requested(query: str) -> bool:
    """Whether the answer comes as SSE events: every format the query names is `sse` (two formats are
    keyed apart, so the answer stored is rendered as it was read)."""
    forms = {value for name, value in parse_qsl(query) if name in _FORMS}
    return forms == {"sse"}


class GenerateContent(_GeminiEndpoint):
    """`:generateContent` and `:streamGenerateContent` under one name, so both forms share entries."""

    name = "generate_content"
    operation = "chat"
    api_operation = operations.GENERATE_CONTENT
    volatile_fields = frozenset({"labels"})
    """Vertex AI's `labels` only sort the call in billing reports."""
    methods = "generateContent|streamGenerateContent"
    request_params_in = "generationConfig"
    request_params = (
        ("temperature", "temperature", "number"),
        ("topP", "top_p", "number"),
        ("topK", "top_k", "number"),
        ("maxOutputTokens", "max_tokens", "int"),
        ("stopSequences", "stop_sequences", "strings"),
        ("candidateCount", "choice.count", "count"),
        ("seed", "seed", "int"),
        ("presencePenalty", "presence_penalty", "number"),
        ("frequencyPenalty", "frequency_penalty", "number"),
    )

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        return genai.choice_finish_reasons(response, "candidates", "finishReason")

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return genai.messages(body.get("contents"), content_field="parts")

    def system_instructions(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        instruction = body.get("systemInstruction")
        return genai.parts(instruction.get("parts")) if isinstance(instruction, dict) else []

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for candidate in response.get("candidates") or ():
            content = candidate.get("content") if isinstance(candidate, dict) else None
            if isinstance(content, dict):
                out.append(
                    genai.message(content.get("role", "model"), content.get("parts"), candidate.get("finishReason"))
                )
        return out

    def assembler(self, request: RequestView) -> GenerateContentStreamAssembler:
        return GenerateContentStreamAssembler(sse=_sse_requested(request.query))

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        return split_last_turn(body, "contents", content_key="parts")

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        """Candidates that each finished (as a stored stream's must have), with readable content."""
        candidates: Any = response.get("candidates")
        reason = objects(candidates, "`candidates`", empty=False) or _usage_invalid(response)
        if reason is not None:
            return reason
        for index, candidate in enumerate(candidates):
            where = f"`candidates[{index}]"
            content = candidate.get("content")
            reason = (
                not_a(str, candidate.get("finishReason"), f"{where}.finishReason`")
                or not_a(int, candidate.get("index", 0), f"{where}.index`")
                or not_a(dict, content, f"{where}.content`", optional=True)
            )
            if reason is None and content is not None:
                reason = objects(content.get("parts"), f"{where}.content.parts`", optional=True)
            if reason is not None:
                return reason
        return None

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        if _sse_requested(request.query):
            return b"data: " + _one_line(response) + b"\r\n\r\n"
        return b"[" + response + b"]"

    def replayed_events(self, events: list[cuts.Event]) -> list[cuts.Event]:
        """A framed cut (an array stream's, `cuts.FRAMED_VERSION`) is checked to be one: named `[`, then
        `,` per element, and ending in the `]` event, each with only whitespace about it."""
        if all(name is None for name, _, _ in events):
            return events
        *elements, (end, data, shape) = events
        if not elements or data or not isinstance(shape, str) or not _gap_is(end, "]"):
            raise cuts.CutError("an array's end that is not one")
        for number, (name, _, template) in enumerate(elements):
            if isinstance(template, str) or not _gap_is(name, "," if number else "["):
                raise cuts.CutError("an array's element not framed as one")
        return events

    def render_events(self, events: list[cuts.Event], request: RequestView) -> bytes:
        """The chunks as the request's form sends them: SSE events (an indented element on one line,
        as Gemini spells an event), or the elements of one JSON array, as the stream framed them."""
        if _sse_requested(request.query):
            chunks = (data for _, data, shape in events if not isinstance(shape, str))
            return b"".join(b"data: " + _one_line(chunk) + b"\r\n\r\n" for chunk in chunks)
        if events[0][0] is None:  # (an SSE stream's cut, or one kept before arrays were framed)
            return b"[" + b",\r\n".join(data for _, data, _ in events) + b"]"
        return b"".join(str(name).encode() + data for name, data, _ in events)

    def stream_media_type(self, request: RequestView) -> str:
        return "text/event-stream" if _sse_requested(request.query) else "application/json"


def _gap_is(name: str | None, mark: str) -> bool:
    return name is not None and len(name) <= _MAX_GAP and name.strip(" \t\r\n") == mark


_LINE_BREAK = re.compile(rb"\n *")


def _one_line(chunk: bytes) -> bytes:
    """An indented element with its line breaks and indentation left out: Gemini's spelling of an SSE
    event (a space after each key's `:` only). A JSON string holds no line break."""
    return _LINE_BREAK.sub(b"", chunk) if b"\n" in chunk else chunk


class EmbedContent(_GeminiEndpoint, NonStreamingEndpoint):
    name = "embed_content"
    operation = "embeddings"
    api_operation = operations.EMBED_CONTENT
    methods = "embedContent|batchEmbedContents"
    request_params = (("outputDimensionality", "gen_ai.embeddings.dimension.count", "int"),)

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # what is embedded is not a conversation

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        """`embedding.values` (embedContent), or `embeddings[].values` (batchEmbedContents)."""
        if "embeddings" not in response:
            embedding = response.get("embedding")
            if not isinstance(embedding, dict):
                return not_a(dict, embedding, "`embedding`")
            return numbers(embedding.get("values"), "`embedding.values`")
        embeddings = response["embeddings"]
        reason = objects(embeddings, "`embeddings`", empty=False)
        for index, embedding in enumerate(embeddings if reason is None else ()):
            reason = numbers(embedding.get("values"), f"`embeddings[{index}].values`")
            if reason is not None:
                break
        return reason

    def upstream_identity(self, url: str) -> str:
        """A `batchEmbedContents` item is keyed as its own `embedContent` request is."""
        return super().upstream_identity(url).replace(":batchembedcontents", ":embedcontent")

    def items(self, route: Route, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        """`batchEmbedContents`'s `requests`, each without the `model` the path already names."""
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests or not all(isinstance(r, dict) for r in requests):
            return None
        if len(body) != 1 or any(r.get("model", f"models/{route.model}") != f"models/{route.model}" for r in requests):
            return None  # another field, or an item for another model: served whole
        return [{k: v for k, v in request.items() if k != "model"} for request in requests]

    def batch_body(self, route: Route, body: dict[str, Any], positions: list[int]) -> dict[str, Any]:
        requests = body["requests"]
        return {**body, "requests": [requests[position] for position in positions]}

    def item_answers(self, response: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
        embeddings = response.get("embeddings")
        if not isinstance(embeddings, list) or len(embeddings) != count:
            return None
        return [{"embedding": embedding} for embedding in embeddings]

    def batch_answer(self, answers: list[dict[str, Any]], upstream: dict[str, Any] | None) -> dict[str, Any]:
        return {**(upstream or {}), "embeddings": [answer["embedding"] for answer in answers]}


def _usage_invalid(response: dict[str, Any]) -> str | None:
    return not_a(dict, response.get("usageMetadata"), "`usageMetadata`", optional=True)


class JSONArrayDecoder:
    """Feed the bytes of a JSON array of objects as they arrive; get back each complete object's bytes."""

    _SPECIAL = re.compile(rb'[\\"{}\[\]]')

    def __init__(self) -> None:
        self._buffer = b""
        self._scan = 0
        self._depth = 0
        self._in_string = False
        self._start = 0
        self.closed = False
        """True once the outer array's `]` arrived."""
        self.malformed = False
        """True when the payload is not an array of objects."""
        self.gaps: list[bytes] = []
        """What the array had before each element (`[`, then `,`, with their whitespace) and, once
        closed, before its `]` (with it): the spelling of the array, for a replay to keep."""
        self._gap: list[bytes] = []  # the current gap's bytes from buffers already let go
        self._gap_from = 0  # where in the buffer the current gap's other bytes begin

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        buffer, found = self._buffer, []
        position = self._scan
        while not (self.closed or self.malformed):
            special = self._SPECIAL.search(buffer, position)
            if special is None:
                position = len(buffer)
                break
            char, position = special.group(), special.end()
            if self._in_string:
                if char == b"\\":
                    if position == len(buffer):
                        position -= 1  # the escaped byte has not arrived yet: look again next time
                        break
                    position += 1
                elif char == b'"':
                    self._in_string = False
            elif char == b'"':
                self._in_string = True
            elif char in b"[{":
                if self._depth == 0 and char != b"[":
                    self.malformed = True
                elif self._depth == 1:
                    self._start = special.start()
                    self._end_gap(buffer, self._start)
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    found.append(buffer[self._start : position])
                    self._gap_from = position
                elif self._depth == 0:
                    self.closed = True
                    self._end_gap(buffer, position)
        if self._depth <= 1 and not self._in_string:
            if not self.closed:
                self._gap.append(buffer[self._gap_from : position])
            self._gap_from = 0
            self._buffer, self._scan = buffer[position:], 0
        else:
            self._scan = position
        return found

    def _end_gap(self, buffer: bytes, end: int) -> None:
        self.gaps.append(b"".join([*self._gap, buffer[self._gap_from : end]]))
        self._gap = []


class GenerateContentStreamAssembler:
    """Builds a `GenerateContentResponse` from streamed ones (SSE `data:` events or a JSON array).

    Text parts of one kind (thought or answer) that arrive in consecutive chunks are joined;
    other parts (functionCall, inlineData, ...) are kept as they came. The last value of every
    other field wins (finishReason, usageMetadata, modelVersion, responseId, ...).
    """

    def __init__(self, sse: bool) -> None:
        self._sse = sse
        self._events = SSEDecoder()
        self._array = JSONArrayDecoder()
        self._candidates: dict[int, dict[str, Any]] = {}
        self._top: dict[str, Any] = {}
        self._broken = False
        self._cut = cuts.CutRecorder(_TextRuns(), framed=not sse)
        self._gaps = 0  # the array's gaps recorded as the names of the cut's events

    @property
    def complete(self) -> bool:
        """Only the array form has a terminal event (its closing `]`). An SSE stream may send more
        after every candidate seen so far finished (another candidate, the final usage), so it is
        stored when it ends, not at its first chunk that looks final."""
        return self._array.closed and self._finished

    @property
    def _finished(self) -> bool:
        if self._broken or not self._candidates:
            return False
        return all(candidate.get("finishReason") for candidate in self._candidates.values())

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        if self._sse:
            payloads: list[bytes | str] = [data for _, data in self._events.feed(chunk)]
        else:
            payloads = list(self._array.feed(chunk))
            self._broken = self._array.malformed
        for payload in payloads:
            event = loads_object(payload)
            if event is None or "error" in event:
                self._broken = True
                return
            self._cut.event(None if self._sse else self._gap(), payload, event)
            self._apply(event)
        if not self._sse and self._array.closed and self._gaps < len(self._array.gaps):
            self._cut.event(self._gap(), "", None)  # the array's end

    def cut(self, answer: bytes) -> bytes | None:
        return self._cut.cut(answer)

    def _gap(self) -> str:
        """The array's next gap (what came before an element, or its end), as an event's name; one
        no array of JSON has (or longer than `_MAX_GAP`) leaves the stream without a cut."""
        gap = self._array.gaps[self._gaps]
        self._gaps += 1
        if len(gap) > _MAX_GAP or _ARRAY_GAP.fullmatch(gap) is None:
            self._cut.fail()
        return gap.decode("ascii", errors="replace")

    def _apply(self, event: dict[str, Any]) -> None:
        for key, value in event.items():
            if key != "candidates":
                self._top[key] = value
                continue
            for candidate in value or []:
                state = self._candidates.setdefault(candidate.get("index", 0), {})
                _merge_candidate(state, candidate)

    def result(self) -> bytes | None:
        if not (self._finished and (self._sse or self._array.closed)):
            return None
        candidates = [self._candidates[i] for i in sorted(self._candidates)]
        answer = exact_json.dumps({"candidates": candidates, **self._top})
        spelling = self._cut.spelling
        if not self._sse and spelling & exact_json.INDENTED:  # as Gemini spells its JSON answer too
            return exact_json.spelt(answer, spelling)
        return answer


class _TextRuns:
    """The text fragments of each chunk's parts, one channel per part of the answer they make: a
    chunk's first part continues the last one as `_merge_parts` joins them."""

    def __init__(self) -> None:
        self._runs: dict[Any, int] = {}
        self._open: dict[Any, bool | None] = {}  # the thought flag of a text part that may continue

    def __call__(self, event: dict[str, Any]) -> Iterator[cuts.Position]:
        candidates = event.get("candidates")
        for at, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            content = candidate.get("content") if isinstance(candidate, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            index = candidate.get("index", 0) if isinstance(candidate, dict) else 0
            for position, part in enumerate(parts if isinstance(parts, list) else ()):
                text = isinstance(part, dict) and isinstance(part.get("text"), str) and part.keys() <= _TEXT_PART_KEYS
                thought = bool(part.get("thought")) if text else None
                if not (text and position == 0 and self._open.get(index) == thought):
                    self._runs[index] = self._runs.get(index, 0) + 1
                if text:
                    where = ("candidates", at, "content", "parts", position, "text")
                    yield where, (index, self._runs[index]), cuts.FRAGMENT
                self._open[index] = thought if text and "thoughtSignature" not in part else None


def _merge_candidate(state: dict[str, Any], candidate: dict[str, Any]) -> None:
    for key, value in candidate.items():
        if key == "content" and isinstance(value, dict):
            content = state.setdefault("content", {})
            for field, item in value.items():
                if field == "parts" and isinstance(item, list):
                    _merge_parts(content.setdefault("parts", []), item)
                else:
                    content[field] = item
        elif key == "citationMetadata" and isinstance(value, dict) and "citationMetadata" in state:
            sources = state["citationMetadata"].get("citationSources") or []
            state["citationMetadata"] = {**value, "citationSources": sources + (value.get("citationSources") or [])}
        else:
            state[key] = value


def _merge_parts(parts: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Appends the parts of one chunk; its first part continues the last one when both are plain text
    of the same kind and the last one is not yet sealed by a `thoughtSignature`."""
    for position, part in enumerate(new):
        last = parts[-1] if parts else None
        if (
            position == 0
            and last is not None
            and "text" in part
            and "text" in last
            and "thoughtSignature" not in last
            and part.keys() <= _TEXT_PART_KEYS
            and last.keys() <= _TEXT_PART_KEYS
            and bool(part.get("thought")) == bool(last.get("thought"))
        ):
            last["text"] += part["text"]
            if "thoughtSignature" in part:
                last["thoughtSignature"] = part["thoughtSignature"]
        else:
            parts.append(dict(part))
