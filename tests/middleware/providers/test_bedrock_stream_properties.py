"""Random well-formed Bedrock `invoke-with-response-stream` answers of Claude (Messages events in
event-stream frames, with Bedrock's own fields on the last one): assembled, they are the message that
was streamed, Bedrock's fields and every number included; replayed and assembled again, the same;
`AnthropicBedrock` reads the replay's final message as the original's."""

from __future__ import annotations

import base64
from typing import Any

import httpx2
from anthropic import AnthropicBedrock
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers import eventstream
from llm_cache.middleware.providers.bedrock import InvokeModelStream
from llm_cache.middleware.providers.eventstream import MEDIA_TYPE, EventStreamDecoder, encode_message
from tests.support.anthropic_streams import message_stream_events, messages
from tests.support.stream_strategies import NUMBERS, assembled, byte_pieces, dumps, lossless

from .streams import replayed_by_cut, replaying, view

CHUNK = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ADDED = st.fixed_dictionaries(
    {
        "amazon-bedrock-invocationMetrics": st.fixed_dictionaries(
            {"inputTokenCount": NUMBERS, "invocationLatency": NUMBERS}
        )
    },
    optional={
        "amazon-bedrock-guardrailAction": st.sampled_from(["NONE", "INTERVENED"]),
        "amazon-bedrock-trace": st.just({"guardrail": {"input": {}}}),
    },
)
"""The fields Bedrock adds to the last event."""


def frame(event: dict[str, Any]) -> bytes:
    return encode_message(CHUNK, dumps({"bytes": base64.b64encode(dumps(event)).decode()}))


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes]]:
    """(the message with Bedrock's fields, the frames of a well-formed stream of it, cut at random)."""
    message = draw(messages())
    added = draw(ADDED)
    events = message_stream_events(draw, message)
    events[-1] |= added
    return {**message, **added}, byte_pieces(draw, b"".join(map(frame, events)))


INVOKE_STREAM = InvokeModelStream()
STREAMED = view(f"/model/{CLAUDE}/invoke-with-response-stream")


def sdk_final(body: bytes) -> dict[str, Any]:
    http: httpx2.Client = replaying(body, MEDIA_TYPE)
    client = AnthropicBedrock(aws_access_key="AKIDP", aws_secret_key="s", aws_region="us-east-1", http_client=http)
    with client.messages.stream(model=CLAUDE, max_tokens=8, messages=[]) as stream:
        return stream.get_final_message().to_dict()


@settings(max_examples=120, deadline=None)
@given(streams())
def test_a_random_stream_assembles_into_the_message_and_bedrock_s_fields(
    case: tuple[dict[str, Any], list[bytes]],
) -> None:
    expected, cut = case
    assert lossless(assembled(INVOKE_STREAM, STREAMED, cut)) == lossless(dumps(expected))


@settings(max_examples=50, deadline=None)
@given(streams())
def test_a_replay_assembles_into_the_same_message_and_the_sdk_reads_both_alike(
    case: tuple[dict[str, Any], list[bytes]],
) -> None:
    _, cut = case
    stored = assembled(INVOKE_STREAM, STREAMED, cut)
    replay = INVOKE_STREAM.render_stream(stored, STREAMED)
    assert lossless(assembled(INVOKE_STREAM, STREAMED, [replay])) == lossless(stored)
    assert sdk_final(replay) == sdk_final(b"".join(cut))


def sent_events(body: bytes) -> list[Any]:
    """The Messages events a stream's `chunk` frames carry, numbers read exactly."""
    found = eventstream.events(EventStreamDecoder(), body)
    assert found is not None
    return [lossless(base64.b64decode(lossless(payload)["bytes"])) for _, payload in found]


@settings(max_examples=80, deadline=None)
@given(streams())
def test_a_random_stream_is_replayed_from_its_cut_event_by_event(case: tuple[dict[str, Any], list[bytes]]) -> None:
    _, cut = case
    replay = replayed_by_cut(INVOKE_STREAM, STREAMED, cut)
    assert replay is not None
    assert sent_events(replay) == sent_events(b"".join(cut))
