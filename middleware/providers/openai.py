"""OpenAI and OpenAI-compatible APIs, including Azure OpenAI's deployment paths."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from itertools import count
from typing import Any, ClassVar

from ... import _operations as operations
from ..._wire import AZURE, azure_pattern, is_azure, suffix_pattern
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
    host_setting_headers,
    loads_object,
    not_a,
    numbers,
    objects,
    split_last_turn,
    token_count,
)
from .deltas import fragment_positions, merge_delta, merge_list
from .sse import SSEDecoder, encode_event

ANSWER_HEADERS = AnswerHeaders(
    {
        JSON_MEDIA_TYPE: ((b"content-type", b"application/json"),),
        "text/event-stream": ((b"content-type", b"text/event-stream; charset=utf-8"),),
    },
    request_id="x-request-id",
    account=frozenset({"openai-organization", "openai-project"}),
)
"""What api.openai.com sends with an answer (no cache-control on either form), and where it names
the call (`req_...`, the SDKs' `_request_id`)."""
_DONE = b"data: [DONE]\n\n"
_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
_FINAL_OWN = frozenset({"object", "choices", "usage"})
_CHUNK_ONLY = frozenset({"object", "obfuscation"})
"""Chunk fields that describe the stream itself, not the answer (`obfuscation` pads event sizes)."""
_CACHE_HINTS = frozenset({"prompt_cache_key", "prompt_cache_retention", "safety_identifier"})
"""Routing and abuse-tracking hints that never change the answer."""


class _OpenAIEndpoint(Endpoint):
    family = "openai"
    keyed_headers = True
    answer_headers = ANSWER_HEADERS
    suffix: ClassVar[str]

    def __init__(self) -> None:
        self._azure, self._generic = azure_pattern(self.suffix), suffix_pattern(f"/{self.suffix}")

    def match(self, path: str) -> Route | None:
        azure = self._azure.match(path)
        if azure:
            return Route(self, model=azure.group("deployment"), auth=AZURE)
        if self._generic.match(path):  # Azure's v1 API is `/openai/v1/...`
            return Route(self, auth=AZURE) if is_azure(path) else Route(self)
        return None

    def header_key(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return host_setting_headers(headers)

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        if body.get("store") is True:
            return "`store: true` asks the provider to keep this call"
        # Azure OpenAI On Your Data's indexes (AI Search, Cosmos DB, ...); `dataSources` in the retired extensions API
        if body.get("data_sources") or body.get("dataSources"):
            return "Azure On Your Data grounds the answer in a search index, which changes as documents are added"
        return None

    def usage(self, response: dict[str, Any]) -> Usage:
        usage = response.get("usage")
        if not isinstance(usage, dict):
            return Usage()
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        input_tokens = token_count(usage.get("prompt_tokens", usage.get("input_tokens")))
        output_tokens = token_count(usage.get("completion_tokens", usage.get("output_tokens")))
        if not isinstance(details, dict):
            details = {}
        cache_read = token_count(details.get("cached_tokens"))
        if cache_read is None:
            # DeepSeek-compatible servers report cache hits at the top level.
            cache_read = token_count(usage.get("prompt_cache_hit_tokens"))
        return Usage(input_tokens, output_tokens, cache_read, token_count(details.get("cache_write_tokens")))


def _include_usage(request: RequestView) -> bool:
    options = request.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _with_stream_usage(body: dict[str, Any]) -> dict[str, Any] | None:
    """Ask for the usage chunk when the caller streams without it, so stored entries carry usage."""
    if body.get("stream") is not True:
        return None
    options = body.get("stream_options")
    if options is None:
        return {**body, "stream_options": {"include_usage": True}}
    if isinstance(options, dict) and "include_usage" not in options:
        return {**body, "stream_options": {**options, "include_usage": True}}
    return None


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


_HELD_MAX = 64 * 1024
"""The longest event the usage filter holds back: a usage-only chunk is a few hundred bytes, so a longer
event cannot be one and is passed on as it arrives."""


class UsageChunkFilter:
    """Drops the usage-only chunk (`"choices": []`) that `_with_stream_usage` asked for.

    Events are forwarded whole, as soon as their blank-line terminator arrives; an event longer than
    `_HELD_MAX` is forwarded as it arrives. Each byte is scanned once: a terminator is looked for in the
    new bytes and the three before them, so an event that never ends costs neither memory nor time.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._passing = False  # inside an event too long to be usage-only: its bytes go on at once
        self._tail = b""  # the last bytes passed on in that event, where its terminator may begin

    def feed(self, chunk: bytes) -> bytes:
        passed = b""
        if self._passing:
            seen = self._tail + chunk
            end = _EVENT_END.search(seen)
            if end is None:
                self._tail = seen[-3:]
                return chunk
            cut = end.end() - len(self._tail)
            passed, chunk, self._passing, self._tail = chunk[:cut], chunk[cut:], False, b""
        data = self._pending + chunk
        cut = 0
        for match in _EVENT_END.finditer(data, max(0, len(self._pending) - 3)):
            cut = match.end()
        out = passed + _without_usage_only(data[:cut])
        self._pending = data[cut:]
        if len(self._pending) > _HELD_MAX:
            self._passing, self._tail = True, self._pending[-3:]
            out, self._pending = out + self._pending, b""
        return out

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending


def _without_usage_only(complete: bytes) -> bytes:
    """Whole events with the usage-only ones left out."""
    if b'"choices":[]' not in complete.replace(b" ", b""):
        return complete
    kept, start = [], 0
    for match in _EVENT_END.finditer(complete):
        event = complete[start : match.end()]
        start = match.end()
        if not _usage_only(event):
            kept.append(event)
    return b"".join(kept)


def _usage_only_event(event: object) -> bool:
    return isinstance(event, dict) and event.get("choices") == [] and event.get("usage") is not None


def _usage_only(event: bytes) -> bool:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return _usage_only_event(loads_object(line[5:].strip()))
    return False


class _ChunkStreamEndpoint(_OpenAIEndpoint):
    """Streams `data: {chunk}` events ending in `[DONE]`, with usage only when the request asks for it."""

    def capture_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return _with_stream_usage(body)

    def stream_filter(self, request: RequestView) -> UsageChunkFilter:
        return UsageChunkFilter()

    def render_events(self, events: list[cuts.Event], request: RequestView) -> bytes:
        """As the provider sent them, less the usage chunk when the request did not ask for it (an
        entry keeps the one `capture_body` asked for, which the caller of the miss never saw)."""
        if not _include_usage(request):
            events = [event for event in events if not _usage_only_event(event[2])]
        return cuts.encode_sse(events)

    def asks_for_usage(self, body: dict[str, Any], stream: bool) -> bool:
        if not stream:
            return True
        options = body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def is_final(self, response: dict[str, Any]) -> bool:
        """Every choice says why it stopped: a stream that ends (`[DONE]`) before a choice's
        `finish_reason`, as a proxy may end one whose upstream dropped, was cut short."""
        choices = response.get("choices")
        return not isinstance(choices, list) or all(
            not isinstance(choice, dict) or choice.get("finish_reason") is not None for choice in choices
        )


_SAMPLING: genai.RequestParams = (
    ("temperature", "temperature", "number"),
    ("top_p", "top_p", "number"),
    ("frequency_penalty", "frequency_penalty", "number"),
    ("presence_penalty", "presence_penalty", "number"),
    ("stop", "stop_sequences", "strings"),
    ("seed", "seed", "int"),
)
"""The sampling parameters chat and legacy completions share."""


class ChatCompletions(_ChunkStreamEndpoint):
    name = "chat.completions"
    operation = "chat"
    api_operation = operations.CHAT_COMPLETIONS
    suffix = "chat/completions"
    volatile_fields = _CACHE_HINTS
    request_params = _SAMPLING + (
        ("max_completion_tokens", "max_tokens", "int"),
        ("max_tokens", "max_tokens", "int"),
        ("n", "choice.count", "count"),
    )

    def request_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        found = super().request_attributes(body)
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind in ("json_object", "json_schema", "text"):
            found["gen_ai.output.type"] = "text" if kind == "text" else "json"
        return found

    def assembler(self, request: RequestView) -> ChatStreamAssembler:
        return ChatStreamAssembler()

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        split = split_last_turn(body, "messages")
        return None if split is None or "name" in body["messages"][-1] else split

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        return _choices_invalid(response, _chat_choice_invalid)

    def answer_ends(self, response: dict[str, Any]) -> float | None:
        """A spoken answer's `audio.id`, which a later turn sends back, expires (`expires_at`)."""
        ends = []
        for choice in response.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            audio = message.get("audio") if isinstance(message, dict) else None
            expires_at = audio.get("expires_at") if isinstance(audio, dict) else None
            if isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool):
                ends.append(float(expires_at))
        return min(ends, default=None)

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        final = exact_json.loads(response)
        bodies: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for choice in final.get("choices") or []:
            message = dict(choice.get("message") or {})
            delta: dict[str, Any] = {"role": message.pop("role", "assistant")}
            tool_calls = message.pop("tool_calls", None)
            # (no `annotations: []`: OpenAI's stream names annotations only when there are some)
            delta.update({k: v for k, v in message.items() if v is not None and (k != "annotations" or v)})
            if tool_calls:
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
            first = {**_choice_extras(choice, "message"), "delta": delta, "finish_reason": None}
            last = {"index": choice.get("index", 0), "delta": {}, "finish_reason": choice.get("finish_reason")}
            bodies.append((first, last))
        return _chunk_stream(final, "chat.completion.chunk", bodies, _include_usage(request))


class Completions(_ChunkStreamEndpoint):
    """The legacy `/completions` API: stream chunks carry `choices[].text`."""

    name = "completions"
    operation = "text_completion"
    api_operation = operations.COMPLETIONS
    request_params = _SAMPLING + (("max_tokens", "max_tokens", "int"), ("n", "choice.count", "count"))
    suffix = "completions"

    def match(self, path: str) -> Route | None:
        if path.rstrip("/").endswith("/chat/completions"):
            return None
        return super().match(path)

    def assembler(self, request: RequestView) -> CompletionStreamAssembler:
        return CompletionStreamAssembler()

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        prompt = body.get("prompt")
        return [genai.message("user", prompt)] if isinstance(prompt, str) else []

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        return {k: v for k, v in body.items() if k != "prompt"}, prompt

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        return _choices_invalid(response, _completion_choice_invalid)

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        final = exact_json.loads(response)
        bodies = []
        for choice in final.get("choices") or []:
            index = choice.get("index", 0)
            first = {**_choice_extras(choice, "text"), "text": choice.get("text") or "", "finish_reason": None}
            first.setdefault("logprobs", None)
            last = {"text": "", "index": index, "logprobs": None, "finish_reason": choice.get("finish_reason")}
            bodies.append((first, last))
        return _chunk_stream(final, "text_completion", bodies, _include_usage(request))


class Embeddings(_OpenAIEndpoint, NonStreamingEndpoint):
    name = "embeddings"
    operation = "embeddings"
    api_operation = operations.EMBEDDINGS
    request_params = (
        ("encoding_format", "encoding_formats", "strings"),
        ("dimensions", "gen_ai.embeddings.dimension.count", "int"),
    )
    suffix = "embeddings"

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # what is embedded is not a conversation

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        data: Any = response.get("data")
        reason = objects(data, "`data`", empty=False) or _usage_invalid(response)
        if reason is not None:
            return reason
        for index, item in enumerate(data):
            vector = item.get("embedding")
            if not isinstance(vector, str):  # `encoding_format: base64` answers a string
                reason = numbers(vector, f"`data[{index}].embedding`")
                if reason is not None:
                    return reason
        return None

    def items(self, route: Route, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        """`input` as a list of strings or of token arrays (a list of integers is one token array)."""
        inputs = body.get("input")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(x, (str, list)) for x in inputs):
            return None
        return [{**body, "input": item} for item in inputs]

    def batch_body(self, route: Route, body: dict[str, Any], positions: list[int]) -> dict[str, Any]:
        inputs = body["input"]
        return {**body, "input": [inputs[position] for position in positions]}

    def item_answers(self, response: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
        data = response.get("data")
        if not isinstance(data, list) or len(data) != count or objects(data, "`data`") is not None:
            return None
        indices = [item.get("index") for item in data]
        if any(type(index) is not int for index in indices) or sorted(indices) != list(range(count)):
            return None  # which embedding answers which item is not certain: none is taken
        by_index = sorted(data, key=lambda item: item["index"])
        usage = response.get("usage") if count == 1 else _NO_TOKENS  # a list answer counts its tokens together
        return [{**response, "data": [{**item, "index": 0}], "usage": usage} for item in by_index]

    def batch_answer(self, answers: list[dict[str, Any]], upstream: dict[str, Any] | None) -> dict[str, Any]:
        data = [{**answer["data"][0], "index": index} for index, answer in enumerate(answers)]
        usage = _NO_TOKENS if upstream is None else upstream.get("usage", _NO_TOKENS)
        return {**(upstream or answers[0]), "data": data, "usage": usage}


_NO_TOKENS = {"prompt_tokens": 0, "total_tokens": 0}


class Moderations(_OpenAIEndpoint, NonStreamingEndpoint):
    name = "moderations"
    operation = "moderation"
    api_operation = operations.MODERATIONS
    suffix = "moderations"

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # what is classified is not a conversation

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        return ()

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        return objects(response.get("results"), "`results`", empty=False)


def _usage_invalid(response: dict[str, Any]) -> str | None:
    return not_a(dict, response.get("usage"), "`usage`", optional=True)


def _choices_invalid(response: dict[str, Any], choice_invalid: Any) -> str | None:
    """`choices` is a non-empty list of objects, each readable by `choice_invalid`, and `usage` an object."""
    choices: Any = response.get("choices")
    reason = objects(choices, "`choices`", empty=False) or _usage_invalid(response)
    if reason is not None:
        return reason
    for index, choice in enumerate(choices):
        reason = (
            choice_invalid(choice, f"`choices[{index}]")
            or not_a(int, choice.get("index", 0), f"`choices[{index}].index`")
            or not_a(dict, choice.get("logprobs"), f"`choices[{index}].logprobs`", optional=True)
            or not_a(str, choice.get("finish_reason"), f"`choices[{index}].finish_reason`", optional=True)
        )
        if reason is not None:
            return reason
    return None


def _chat_choice_invalid(choice: dict[str, Any], where: str) -> str | None:
    message = choice.get("message")
    if not isinstance(message, dict):
        return not_a(dict, message, f"{where}.message`")
    calls = message.get("tool_calls")
    reason = not_a((str, list), message.get("content"), f"{where}.message.content`", optional=True) or objects(
        calls, f"{where}.message.tool_calls`", optional=True
    )
    for index, call in enumerate(calls if reason is None and calls else ()):
        reason = _tool_call_invalid(call, f"{where}.message.tool_calls[{index}]")
        if reason is not None:
            break
    return reason


def _tool_call_invalid(call: dict[str, Any], where: str) -> str | None:
    """What a stream's tool-call deltas carry (`_merge_tool_calls`): string id and type, and a
    `function` of string name and arguments."""
    function = call.get("function")
    reason = (
        not_a(str, call.get("id"), f"{where}.id`", optional=True)
        or not_a(str, call.get("type"), f"{where}.type`", optional=True)
        or not_a(dict, function, f"{where}.function`", optional=True)
    )
    if reason is None and function is not None:
        reason = not_a(str, function.get("name"), f"{where}.function.name`", optional=True) or not_a(
            str, function.get("arguments"), f"{where}.function.arguments`", optional=True
        )
    return reason


def _completion_choice_invalid(choice: dict[str, Any], where: str) -> str | None:
    return not_a(str, choice.get("text"), f"{where}.text`")


def _chunk_stream(
    final: dict[str, Any], obj: str, bodies: list[tuple[dict[str, Any], dict[str, Any]]], with_usage: bool
) -> bytes:
    """Two chunks a choice (content, then finish reason), the usage chunk if asked for, then `[DONE]`."""
    head = {key: final[key] for key in _HEAD_FIELDS if key in final}
    head["object"] = obj
    extras = {k: v for k, v in final.items() if k not in _FINAL_OWN and k not in head}
    parts: list[bytes] = []
    for pair in bodies:
        for body in pair:
            chunk: dict[str, Any] = {**head, **extras, "choices": [body]}
            extras = {}  # fields of the whole answer (Azure's prompt filter results) ride on the first chunk
            if with_usage:
                chunk["usage"] = None
            parts.append(encode_event(chunk))
    if with_usage and final.get("usage") is not None:
        parts.append(encode_event({**head, "choices": [], "usage": final["usage"]}))
    parts.append(_DONE)
    return b"".join(parts)


def chunk_positions(event: dict[str, Any]) -> Iterator[cuts.Position]:
    """The fragments of a chat or legacy completions chunk: the strings of each choice's `delta` that
    the merge joins, its `text`, its logprob lists; and the chunk's `obfuscation` padding."""
    if isinstance(event.get("obfuscation"), str):
        yield ("obfuscation",), None, cuts.PAD
    choices = event.get("choices")
    for position, choice in enumerate(choices if isinstance(choices, list) else ()):
        if not isinstance(choice, dict):
            continue
        index, at = choice.get("index", 0), ("choices", position)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            yield from fragment_positions(delta, (*at, "delta"), ("delta", index))
        if isinstance(choice.get("text"), str):
            yield (*at, "text"), ("text", index), cuts.FRAGMENT
        logprobs = choice.get("logprobs")
        for field, items in logprobs.items() if isinstance(logprobs, dict) else ():
            if isinstance(items, list):
                yield (*at, "logprobs", field), ("logprobs", index, field), cuts.FRAGMENT


class _ChunkStreamAssembler:
    """Builds a final object from OpenAI-style chunk events that end with `data: [DONE]`."""

    final_object: ClassVar[str]
    answer_order: ClassVar[tuple[str, ...]]
    """The order of the fields of the provider's JSON answer (others follow, as the stream sent them)."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None
        self._done = False
        self._broken = False
        self._cut = cuts.CutRecorder(chunk_positions)

    @property
    def complete(self) -> bool:
        return self._done and not self._broken

    def feed(self, chunk: bytes) -> None:
        for name, data in self._decoder.feed(chunk):
            if self._done or self._broken:
                continue
            if data.strip() == "[DONE]":
                self._done = True
                self._cut.event(name, data, None)
                continue
            event = loads_object(data)
            if event is None or "error" in event:
                self._broken = True
                continue
            self._cut.event(name, data, event)
            self._apply(event)

    def cut(self, answer: bytes) -> bytes | None:
        return self._cut.cut(answer)

    def _apply(self, event: dict[str, Any]) -> None:
        for key, value in event.items():
            if key in _CHUNK_ONLY or value is None:
                continue
            if key == "usage":
                self._usage = value
            elif key == "choices":
                for choice in value if isinstance(value, list) else ():
                    if isinstance(choice, dict):
                        self._apply_choice(choice)
            else:
                _keep(self._head, key, value)

    def _apply_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = self._new_choice(index)
        for key, value in choice.items():
            if value is None or key == "index":
                continue
            if key == "logprobs":
                _merge_logprobs(state, value)
            elif key == "finish_reason":
                state["finish_reason"] = value
            elif not self._merge(state, key, value):
                _keep(state, key, value)

    def _new_choice(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _merge(self, state: dict[str, Any], key: str, value: Any) -> bool:
        """Merge one field of a choice fragment that this stream's own shape defines; False: not one."""
        raise NotImplementedError

    def _finalize(self, choice: dict[str, Any]) -> None:
        """Last touches on one assembled choice."""

    def result(self) -> bytes | None:
        if not self.complete:
            return None
        choices = [self._choices[i] for i in sorted(self._choices)]
        for choice in choices:
            self._finalize(choice)
        final: dict[str, Any] = {**self._head, "object": self.final_object, "choices": choices}
        if self._usage is not None:
            final["usage"] = self._usage
        return exact_json.dumps(_ordered(final, self.answer_order))


class ChatStreamAssembler(_ChunkStreamAssembler):
    """Builds a `chat.completion` object from `chat.completion.chunk` events."""

    final_object = "chat.completion"
    answer_order = ("id", "object", "created", "model", "choices", "usage", "service_tier", "system_fingerprint")

    def _new_choice(self, index: int) -> dict[str, Any]:
        return {"index": index, "message": {}, "logprobs": None, "finish_reason": None}

    def _merge(self, state: dict[str, Any], key: str, value: Any) -> bool:
        if key != "delta":
            return False
        if isinstance(value, dict):
            merge_delta(state["message"], value)
        return True

    def _finalize(self, choice: dict[str, Any]) -> None:
        message = choice["message"]
        if message.get("role") is None:
            message["role"] = "assistant"
        message.setdefault("content", None)
        calls = message.get("tool_calls")
        if isinstance(calls, list):  # the answer in one piece numbers its calls by position, not `index`
            ordered = sorted(calls, key=lambda call: call.get("index", 0) if isinstance(call, dict) else 0)
            message["tool_calls"] = [_finished_call(call) for call in ordered]
        if "refusal" in message:  # OpenAI's own stream: its JSON answer's message has `annotations` too
            message.setdefault("annotations", [])
        choice["message"] = _ordered(message, _MESSAGE_ORDER)


class CompletionStreamAssembler(_ChunkStreamAssembler):
    """Builds a legacy `text_completion` object from its stream chunks."""

    final_object = "text_completion"
    answer_order = ("id", "object", "created", "model", "system_fingerprint", "choices", "usage")

    def _new_choice(self, index: int) -> dict[str, Any]:
        return {"text": "", "index": index, "logprobs": None, "finish_reason": None}

    def _merge(self, state: dict[str, Any], key: str, value: Any) -> bool:
        if key != "text":
            return False
        if isinstance(value, str):
            state["text"] += value
        return True


# -- Responses API ------------------------------------------------------------------------------

_RESPONSE_BROKEN = frozenset({"response.failed", "response.incomplete", "error"})
_RESPONSE_STATE_FIELDS = ("previous_response_id", "conversation")
"""Request fields that name a conversation the provider keeps (the semantic path skips them too)."""
_ITEM_LISTS = {"message": ("content",), "reasoning": ("summary", "content")}
"""The lists of parts an output item's replay walks (`_item_events`), by item type."""


class Responses(_OpenAIEndpoint):
    """The Responses API. A stream is stored only once `response.completed` arrives."""

    name = "responses"
    operation = "chat"
    api_operation = operations.RESPONSES
    suffix = "responses"
    volatile_fields = _CACHE_HINTS
    request_params = (
        ("temperature", "temperature", "number"),
        ("top_p", "top_p", "number"),
        ("max_output_tokens", "max_tokens", "int"),
    )

    def assembler(self, request: RequestView) -> ResponsesStreamAssembler:
        return ResponsesStreamAssembler()

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        if any(field in body for field in _RESPONSE_STATE_FIELDS):
            return None  # the context lives on the server: nothing here says it is the same
        given = body.get("input")
        if isinstance(given, str):
            return ({k: v for k, v in body.items() if k != "input"}, given) if given else None
        return split_last_turn(body, "input")

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else response.get("status")
        return (reason,) if isinstance(reason, str) else ()

    def input_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return genai.messages(body.get("input"))

    def system_instructions(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return genai.parts(body.get("instructions"))

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        output = response.get("output")
        items = output if isinstance(output, list) else []
        return genai.messages([item for item in items if isinstance(item, dict) and item.get("type") == "message"])

    def is_final(self, response: dict[str, Any]) -> bool:
        return response.get("status", "completed") == "completed"

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        for field in _RESPONSE_STATE_FIELDS:
            if body.get(field) is not None:
                return f"`{field}` names state the provider holds"
        if body.get("background") is True:
            return "`background: true` asks the provider to run and keep the call, polled for later"
        prompt = body.get("prompt")
        if isinstance(prompt, dict) and prompt.get("version") is None:
            return "`prompt` without a version uses the template's current version"
        tools = body.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict) and (
                    tool.get("type") == "file_search"
                    or (tool.get("type") == "code_interpreter" and isinstance(tool.get("container"), str))
                ):
                    return f"the {tool['type']} tool reads a store or container the provider holds"
                if isinstance(tool, dict) and tool.get("type") == "mcp":
                    return "the mcp tool calls a remote MCP server, which answers from its own data"
        return super().server_state(route, headers, body)

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        output: Any = response.get("output")
        reason = objects(output, "`output`") or _usage_invalid(response)
        if reason is not None:
            return reason
        for index, item in enumerate(output):
            kind = item.get("type")
            fields = _ITEM_LISTS.get(kind, ()) if isinstance(kind, str) else ()
            for field in fields:
                reason = objects(item.get(field), f"`output[{index}].{field}`", optional=True)
                if reason is not None:
                    return reason
        return None

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        return b"".join(encode_event(event, event["type"]) for event in _response_events(exact_json.loads(response)))


class ResponsesStreamAssembler:
    """Keeps the `response` object of `response.completed`; `failed`, `incomplete` or `error` break it,
    and so does any event after `response.completed` but a compatible server's `[DONE]` (the openai
    SDK reads on to the stream's end and hands it to its caller, or raises on an error object).

    Items from `response.output_item.done` fill in a completed response sent without its `output`.
    """

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._items: dict[int, Any] = {}
        self._final: dict[str, Any] | None = None
        self._broken = False
        self._cut = cuts.CutRecorder(response_positions)

    @property
    def complete(self) -> bool:
        return self._final is not None and not self._broken

    def cut(self, answer: bytes) -> bytes | None:
        return self._cut.cut(answer)

    def feed(self, chunk: bytes) -> None:
        for name, data in self._decoder.feed(chunk):
            if self._broken or data.strip() == "[DONE]":
                continue
            if self._final is not None:
                self._broken = True
                continue
            event = loads_object(data)
            kind = event.get("type", name) if event is not None else None
            if event is not None:
                self._cut.event(name, data, event)
            if event is None or kind in _RESPONSE_BROKEN:
                self._broken = True
            elif kind == "response.output_item.done" and isinstance(event.get("output_index"), int):
                self._items[event["output_index"]] = event.get("item")
            elif kind == "response.completed":
                response = event.get("response")
                if isinstance(response, dict):
                    self._final = response
                else:
                    self._broken = True

    def result(self) -> bytes | None:
        if self._final is None or self._broken:
            return None
        final = self._final
        if final.get("output") is None:
            final = {**final, "output": [self._items[i] for i in sorted(self._items)]}
        return exact_json.dumps(final)


def response_positions(event: dict[str, Any]) -> Iterator[cuts.Position]:
    """A Responses event's `sequence_number`, its `obfuscation` padding, and the fragment a `.delta`
    event carries (with its logprobs), its channel the event type and where in the output it is."""
    if type(event.get("sequence_number")) is int:
        yield ("sequence_number",), None, cuts.NUMBER
    if isinstance(event.get("obfuscation"), str):
        yield ("obfuscation",), None, cuts.PAD
    kind = event.get("type")
    if isinstance(kind, str) and kind.endswith(".delta"):
        at = (kind, event.get("output_index"), event.get("content_index"), event.get("summary_index"))
        if isinstance(event.get("delta"), str):
            yield ("delta",), at, cuts.FRAGMENT
        if isinstance(event.get("logprobs"), list):
            yield ("logprobs",), (*at, "logprobs"), cuts.FRAGMENT


def _response_events(final: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The event sequence a live stream of `final` would have sent, numbered from 0."""
    numbers = count()
    pending = {**final, "status": "in_progress", "output": [], "usage": None, "error": None, "incomplete_details": None}
    if "completed_at" in final:
        pending["completed_at"] = None
    for kind in ("response.created", "response.in_progress"):
        yield {"type": kind, "sequence_number": next(numbers), "response": pending}
    for index, item in enumerate(_listed(final.get("output"))):
        for event in _item_events(index, item):
            yield {**event, "sequence_number": next(numbers)}
    yield {"type": "response.completed", "sequence_number": next(numbers), "response": final}


def _item_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = item.get("type")
    if not isinstance(kind, str):  # an item of no known type is replayed whole, with no events of its own
        kind = ""
    at = {"item_id": item.get("id") or item.get("call_id") or "", "output_index": index}
    added = {**item, "status": "in_progress"} if "status" in item else dict(item)
    if kind == "message":
        added["content"] = []
    elif kind == "reasoning":
        added["summary"] = []
        if isinstance(item.get("content"), list):
            added["content"] = []
    elif kind in _TEXT_FIELD_OF:
        added[_TEXT_FIELD_OF[kind]] = ""
    yield {"type": "response.output_item.added", "output_index": index, "item": added}
    if kind == "message":
        for part_index, part in enumerate(_listed(item.get("content"))):
            yield from _message_part_events(at, part_index, part)
    elif kind == "reasoning":
        for summary_index, part in enumerate(_listed(item.get("summary"))):
            where = {**at, "summary_index": summary_index}
            text = part.get("text", "")
            yield {"type": "response.reasoning_summary_part.added", **where, "part": {**part, "text": ""}}
            yield {"type": "response.reasoning_summary_text.delta", **where, "delta": text}
            yield {"type": "response.reasoning_summary_text.done", **where, "text": text}
            yield {"type": "response.reasoning_summary_part.done", **where, "part": part}
        for content_index, part in enumerate(_listed(item.get("content"))):
            where = {**at, "content_index": content_index}
            text = part.get("text", "")
            yield {"type": "response.reasoning_text.delta", **where, "delta": text}
            yield {"type": "response.reasoning_text.done", **where, "text": text}
    elif kind in _TEXT_FIELD_OF:  # function, custom tool and MCP calls: their text as one delta
        field = _TEXT_FIELD_OF[kind]
        prefix = _TEXT_EVENT_PREFIX[kind]
        text = item.get(field, "")
        yield {"type": f"{prefix}.delta", **at, "delta": text}
        yield {"type": f"{prefix}.done", **at, field: text}
    if kind in _TOOL_PHASES:  # hosted tools report their progress before the item is done
        phases = _TOOL_PHASES[kind]
        for phase in phases[:-1]:
            yield {"type": f"response.{kind}.{phase}", **at}
        if kind == "code_interpreter_call" and isinstance(item.get("code"), str):
            yield {"type": "response.code_interpreter_call_code.delta", **at, "delta": item["code"]}
            yield {"type": "response.code_interpreter_call_code.done", **at, "code": item["code"]}
        yield {"type": f"response.{kind}.{phases[-1]}", **at}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


_TEXT_FIELD_OF = {"function_call": "arguments", "custom_tool_call": "input", "mcp_call": "arguments"}
_TEXT_EVENT_PREFIX = {
    "function_call": "response.function_call_arguments",
    "custom_tool_call": "response.custom_tool_call_input",
    "mcp_call": "response.mcp_call_arguments",
}
_TOOL_PHASES = {
    "web_search_call": ("in_progress", "searching", "completed"),
    "file_search_call": ("in_progress", "searching", "completed"),
    "code_interpreter_call": ("in_progress", "interpreting", "completed"),
    "image_generation_call": ("in_progress", "generating", "completed"),
    "mcp_call": ("in_progress", "completed"),
}
"""The progress events of hosted tool calls, in order (the last one follows their content)."""


def _message_part_events(at: dict[str, Any], part_index: int, part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    where = {**at, "content_index": part_index}
    kind = part.get("type")
    if kind == "output_text":
        text = part.get("text", "")
        logprobs = part.get("logprobs") or []
        empty = {**part, "text": "", "annotations": []}
        if "logprobs" in part:
            empty["logprobs"] = []
        yield {"type": "response.content_part.added", **where, "part": empty}
        yield {"type": "response.output_text.delta", **where, "delta": text, "logprobs": logprobs}
        for annotation_index, annotation in enumerate(_listed(part.get("annotations"))):
            yield {
                "type": "response.output_text.annotation.added",
                **where,
                "annotation_index": annotation_index,
                "annotation": annotation,
            }
        yield {"type": "response.output_text.done", **where, "text": text, "logprobs": logprobs}
    elif kind == "refusal":
        refusal = part.get("refusal", "")
        yield {"type": "response.content_part.added", **where, "part": {**part, "refusal": ""}}
        yield {"type": "response.refusal.delta", **where, "delta": refusal}
        yield {"type": "response.refusal.done", **where, "refusal": refusal}
    else:
        yield {"type": "response.content_part.added", **where, "part": part}
    yield {"type": "response.content_part.done", **where, "part": part}


def _listed(value: Any) -> list[Any]:
    """`value` if it is a list, else an empty one: a replay renders what it can read, never raises."""
    return value if isinstance(value, list) else []


def _choice_extras(choice: dict[str, Any], content: str) -> dict[str, Any]:
    """A final choice's fields other than its content and finish reason (`index`, `logprobs`, content
    filter results, ...), replayed on its first chunk."""
    extras = {k: v for k, v in choice.items() if k not in (content, "finish_reason")}
    extras.setdefault("index", 0)
    return extras


_MESSAGE_ORDER = ("role", "content", "refusal", "annotations")
"""The order of the fields of a chat answer's message as OpenAI writes it (others follow)."""


def _ordered(value: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """`value` with the fields `order` names first, in that order, then the others as they were."""
    first = {key: value[key] for key in order if key in value}
    return {**first, **{key: item for key, item in value.items() if key not in first}}


def _keep(target: dict[str, Any], key: str, value: Any) -> None:
    """A field outside the stream's own delta (Azure's content filter results, a compatible server's
    extensions): objects and lists accumulate, anything else is the latest value."""
    current = target.get(key)
    if isinstance(current, dict) and isinstance(value, dict):
        merge_delta(current, value)
    elif isinstance(current, list) and isinstance(value, list):
        merge_list(current, value)
    else:
        target[key] = merge_delta({}, value) if isinstance(value, dict) else value


def _merge_logprobs(state: dict[str, Any], logprobs: Any) -> None:
    if not isinstance(logprobs, dict):
        return
    merged = state["logprobs"] if isinstance(state["logprobs"], dict) else {}
    for field, items in logprobs.items():
        if isinstance(items, list):
            merged.setdefault(field, []).extend(items)
        elif items is not None:
            merged[field] = items
    state["logprobs"] = merged


def _finished_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    finished = {k: v for k, v in call.items() if k != "index"}
    finished.setdefault("type", "function")
    function = finished.get("function")
    if isinstance(function, dict):
        function.setdefault("arguments", "")
    return finished
