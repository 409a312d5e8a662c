"""Amazon Bedrock runtime: InvokeModel and Converse, each as JSON and streamed.

Bedrock's requests are signed over their body (SigV4), so the cache keys them but never rewrites
them; the caller's credential scope is the access key id of the signature, with the session token
of temporary credentials (keys.credential_of). Settings Bedrock takes in headers (guardrails,
trace, latency, `accept`) are part of the key. Model ids may be ARNs with `/` in them.

`invoke-with-response-stream` answers in AWS's binary event-stream framing, each `chunk` event
carrying one of the model's own stream events in base64. Only Anthropic Messages events (Claude)
are assembled; a stream of another model's events is not stored. The fields Bedrock adds to the
events (`amazon-bedrock-invocationMetrics`, a guardrail's action and trace) are kept. Its entries
are its own, apart from `invoke`'s, since a JSON answer of another model could not be replayed as
Claude's events. `converse` and `converse-stream` are one endpoint (one entry for both forms), the
stream assembled and replayed by `converse.py`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import unquote

from ... import _operations as operations
from ..._wire import BEDROCK, bedrock_pattern
from .. import _exact_json as exact_json
from . import converse, cuts, eventstream, genai
from .anthropic import (
    Messages,
    MessagesShape,
    MessageStreamAssembler,
    message_events,
    message_invalid,
    message_positions,
)
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
    objects,
    split_last_turn,
    usage_with_cache_apart,
)
from .converse import ConverseStreamAssembler
from .eventstream import MEDIA_TYPE, EventStreamDecoder, encode_message

_REQUEST_ID = "x-amzn-requestid"
"""Where Bedrock names the call (a UUID; boto3's `ResponseMetadata.RequestId`)."""
ANSWER_HEADERS = AnswerHeaders(
    {
        JSON_MEDIA_TYPE: ((b"content-type", b"application/json"),),
        MEDIA_TYPE: ((b"content-type", MEDIA_TYPE.encode("latin-1")),),
    },
    request_id=_REQUEST_ID,
    kept=(
        "x-amzn-bedrock-input-token-count",
        "x-amzn-bedrock-output-token-count",
        "x-amzn-bedrock-cache-read-input-token-count",
        "x-amzn-bedrock-cache-write-input-token-count",
        "x-amzn-bedrock-performanceconfig-latency",
        "x-amzn-bedrock-service-tier",
    ),
)
"""What bedrock-runtime sends with an answer: InvokeModel's token counts describe the answer (its
body's usage in headers) and are kept; `x-amzn-bedrock-invocation-latency` times the call, and is not."""
INVOKE_STREAM_HEADERS = AnswerHeaders(
    {MEDIA_TYPE: (*ANSWER_HEADERS.of(MEDIA_TYPE), (b"x-amzn-bedrock-content-type", b"application/json"))},
    request_id=_REQUEST_ID,
    kept=ANSWER_HEADERS.kept,
)
"""InvokeModelWithResponseStream names the media type of its chunks' payloads too (Claude's: JSON)."""

_CHUNK_HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
_PADDING = "p"
"""The field Bedrock pads each `chunk` payload with (beside `bytes`), so that sizes do not reveal tokens."""
_ADDED_PREFIX = "amazon-bedrock-"
"""Fields Bedrock adds to a model's events (`amazon-bedrock-invocationMetrics` on `message_stop`,
a guardrail's `amazon-bedrock-guardrailAction` and `-trace`): kept on the stored message, replayed
on `message_stop`."""


_MESSAGES = Messages()
_KEYED_HEADERS = ("accept",)
_KEYED_PREFIX = "x-amzn-bedrock-"
_DRAFT = "DRAFT"
_UNVERSIONED_PROMPT = re.compile(r":prompt/[^:/]+$")
"""A Prompt management ARN without `:{version}`: the prompt's draft, which its owner can edit."""


class _BedrockEndpoint(MessagesShape, Endpoint):  # InvokeModel speaks Messages for Claude; Converse its own
    family = "bedrock"
    answer_headers = ANSWER_HEADERS
    auth = BEDROCK
    operation = "chat"
    signed_body = True
    keyed_headers = True
    action: ClassVar[str]

    def __init__(self) -> None:
        # The model id may be an ARN with `/` in it (inference profiles), sent %2F-encoded and decoded here.
        self._pattern = bedrock_pattern(self.action)

    def match(self, path: str) -> Route | None:
        found = self._pattern.match(path)
        if found is None:
            return None
        return Route(self, model=unquote(found["model"]), stream_by_path=self.action.endswith("-stream"))

    def is_stream(self, route: Route, query: str, body: dict[str, Any]) -> bool:
        return route.stream_by_path

    def model(self, route: Route, body: dict[str, Any]) -> str | None:
        return route.model

    def header_key(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in headers.items() if k in _KEYED_HEADERS or k.startswith(_KEYED_PREFIX)))

    def semantic_query(self, body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        return split_last_turn(body, "messages")

    def server_state(self, route: Route, headers: Mapping[str, str], body: dict[str, Any]) -> str | None:
        """Drafts are editable: a prompt ARN without a version, or a guardrail's DRAFT version."""
        if route.model is not None and _UNVERSIONED_PROMPT.search(route.model):
            return "a Prompt management ARN without a version runs the prompt's editable draft"
        guardrail = body.get("guardrailConfig")
        version = guardrail.get("guardrailVersion") if isinstance(guardrail, dict) else None
        if version == _DRAFT or headers.get("x-amzn-bedrock-guardrailversion") == _DRAFT:
            return "a guardrail's DRAFT version is editable"
        return None

    def usage(self, response: dict[str, Any]) -> Usage:
        return _MESSAGES.usage(response)  # InvokeModel on Claude models answers in the Messages shape


class InvokeModel(_BedrockEndpoint, NonStreamingEndpoint):
    """`/model/{modelId}/invoke`: the model's own body and answer (the Messages shape for Claude)."""

    name = "bedrock.invoke"
    api_operation = operations.INVOKE
    action = "invoke"

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        """Claude's answers must be Messages `message`s; other models' bodies are their own (only
        the error forms every family shares are refused, by `unstorable`)."""
        model = request.route.model or ""
        if "anthropic." in model or response.get("type") == "message":
            return message_invalid(response)
        return None


class InvokeModelStream(_BedrockEndpoint):
    """`/model/{modelId}/invoke-with-response-stream` for Claude models: Messages events in frames."""

    name = "bedrock.invoke-stream"
    api_operation = operations.INVOKE_STREAM
    action = "invoke-with-response-stream"
    answer_headers = INVOKE_STREAM_HEADERS

    def assembler(self, request: RequestView) -> InvokeStreamAssembler:
        return InvokeStreamAssembler()

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        return message_invalid(response)

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        message = exact_json.loads(response)
        added = {key: message.pop(key) for key in list(message) if key.startswith(_ADDED_PREFIX)}
        events = list(message_events(message))
        events[-1].update(added)  # on `message_stop`, where Bedrock sends them
        return b"".join(_chunk_frame(exact_json.dumps(event)) for event in events)

    def replayed_events(self, events: list[cuts.Event]) -> list[cuts.Event]:
        """Each kept `chunk` payload with its Messages event base64'd into `bytes`, beside the padding
        `p` as Bedrock sent it (a cut kept before the payloads were: the bare event, unpadded)."""
        try:
            return [(name, _chunk_payload(data), template) for name, data, template in events]
        except (ValueError, TypeError, AttributeError, KeyError) as error:  # a cut no stream of Bedrock's has
            raise cuts.CutError(f"not a chunk payload ({type(error).__name__})") from error

    def render_events(self, events: list[cuts.Event], request: RequestView) -> bytes:
        """The kept `chunk` payloads (`replayed_events`), each in its frame."""
        return b"".join(encode_message(_CHUNK_HEADERS, data) for _, data, _ in events)

    def stream_media_type(self, request: RequestView) -> str:
        return MEDIA_TYPE


def _chunk_frame(event: bytes) -> bytes:
    """One Messages event's JSON in a `chunk` frame, as Bedrock sends it (without padding)."""
    return encode_message(_CHUNK_HEADERS, exact_json.dumps({"bytes": base64.b64encode(event).decode()}))


def _chunk_payload(data: bytes) -> bytes:
    """A replayed `chunk` payload, its event (kept decoded in the cut) base64'd again in place."""
    payload = exact_json.loads_spelt(data)
    if "type" in payload:  # a cut of the bare Messages events (kept before the payloads were)
        payload = {"bytes": payload}
    event = base64.b64encode(exact_json.dumps(payload["bytes"])).decode()
    return exact_json.dumps({**payload, "bytes": event})


def chunk_positions(payload: dict[str, Any]) -> Iterator[cuts.Position]:
    """A `chunk` payload's padding `p`, and the fragments of its Messages event (kept decoded, in
    `bytes`), as `message_positions` finds them."""
    if isinstance(payload.get(_PADDING), str):
        yield (_PADDING,), None, cuts.PAD
    event = payload.get("bytes")
    if isinstance(event, dict):
        for path, channel, kind in message_positions(event):
            yield ("bytes", *path), channel, kind


class Converse(_BedrockEndpoint):
    """`/model/{modelId}/converse` and `/converse-stream`: Bedrock's own model-independent chat shape,
    under one name, so both forms share entries (a stream replays a JSON answer, and the reverse)."""

    name = "bedrock.converse"
    api_operation = operations.CONVERSE
    action = "converse"
    volatile_fields = frozenset({"requestMetadata"})
    """Tags that filter the account's invocation logs; the model never sees them."""

    def __init__(self) -> None:
        self._pattern = re.compile(r"^(?:/.*?)?/model/(?P<model>.+?)/converse(?P<stream>-stream)?/?$")

    def match(self, path: str) -> Route | None:
        found = self._pattern.match(path)
        if found is None:
            return None
        return Route(self, model=unquote(found["model"]), stream_by_path=found["stream"] is not None)

    def upstream_identity(self, url: str) -> str:
        head, found, tail = url.rpartition("/converse-stream")
        return head + "/converse" + tail if found else url

    def assembler(self, request: RequestView) -> ConverseStreamAssembler:
        return ConverseStreamAssembler()

    request_params_in = "inferenceConfig"
    request_params = (
        ("temperature", "temperature", "number"),
        ("topP", "top_p", "number"),
        ("maxTokens", "max_tokens", "int"),
        ("stopSequences", "stop_sequences", "strings"),
    )

    def finish_reasons(self, response: dict[str, Any]) -> tuple[str, ...]:
        reason = response.get("stopReason")
        return (reason,) if isinstance(reason, str) else ()

    def system_instructions(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return genai.parts(body.get("system"))

    def output_messages(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        output = response.get("output")
        reply = output.get("message") if isinstance(output, dict) else None
        if not isinstance(reply, dict):
            return []
        return [genai.message(reply.get("role", "assistant"), reply.get("content"), response.get("stopReason"))]

    def render_stream(self, response: bytes, request: RequestView) -> bytes:
        return converse.render(exact_json.loads(response))

    def render_events(self, events: list[cuts.Event], request: RequestView) -> bytes:
        return converse.render_events(events)

    def stream_media_type(self, request: RequestView) -> str:
        return MEDIA_TYPE

    def usage(self, response: dict[str, Any]) -> Usage:
        return usage_with_cache_apart(
            response, "inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "outputTokens"
        )

    def invalid(self, response: dict[str, Any], request: RequestView) -> str | None:
        output = response.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        reason = (
            not_a(dict, output, "`output`")
            or not_a(dict, message, "`output.message`")
            or objects(message.get("content"), "`output.message.content`")  # type: ignore[union-attr]
            or not_a(str, response.get("stopReason"), "`stopReason`")
            or not_a(dict, response.get("usage"), "`usage`", optional=True)
        )
        for index, block in enumerate(message.get("content") if reason is None else ()):  # type: ignore[union-attr]
            tool = block.get("toolUse")
            if tool is not None:  # replayed as a JSON text the stream's assembler reads back
                reason = not_a(dict, tool, f"`content[{index}].toolUse`") or not_a(
                    dict, tool.get("input"), f"`content[{index}].toolUse.input`"
                )
            if reason is not None:
                break
        return reason

    def response_model(self, response: dict[str, Any]) -> str | None:
        return None

    def response_id(self, response: dict[str, Any]) -> str | None:
        return None


class InvokeStreamAssembler:
    """The final message of an `invoke-with-response-stream` answer: its frames are checked and
    their `chunk` events fed to the Messages assembler. An exception event, a bad frame or a
    chunk that is not a Messages event breaks it."""

    def __init__(self) -> None:
        self._frames = EventStreamDecoder()
        self._messages = MessageStreamAssembler(recording=False)
        self._cut = cuts.CutRecorder(chunk_positions, spelt_always=True)  # (older releases kept bare events)
        self._added: dict[str, Any] = {}
        self._broken = False

    @property
    def complete(self) -> bool:
        return self._messages.complete and not self._broken and not self._frames.pending

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        found = eventstream.events(self._frames, chunk)
        if found is None:
            self._broken = True
            return
        for kind, payload in found:
            data = loads_object(payload) if kind == "chunk" else None
            encoded = data.get("bytes") if data is not None else None
            event = _decoded_event(encoded) if isinstance(encoded, str) else None
            if event is None:
                self._broken = True
                return
            self._added.update((key, value) for key, value in event.items() if key.startswith(_ADDED_PREFIX))
            self._cut.event(kind, "", {**(data or {}), "bytes": event})  # the payload as sent, its event decoded
            self._messages.feed(
                b"event: " + str(event["type"]).encode() + b"\ndata: " + exact_json.dumps(event) + b"\n\n"
            )

    def cut(self, answer: bytes) -> bytes | None:
        return self._cut.cut(answer)

    def result(self) -> bytes | None:
        message = self._messages.result() if self.complete else None
        if message is None or not self._added:
            return message
        return exact_json.dumps({**exact_json.loads_spelt(message), **self._added})


def _decoded_event(encoded: str) -> dict[str, Any] | None:
    try:
        event = loads_object(base64.b64decode(encoded, validate=True))
    except ValueError:
        return None
    return event if event is not None and isinstance(event.get("type"), str) else None
