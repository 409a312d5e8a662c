"""Random well-formed Anthropic Messages streams: assembled, they are the message that was streamed,
numbers digit for digit; replayed and assembled again, the same message; the anthropic SDK's final
message of the replay is its final message of the original."""

from __future__ import annotations

from typing import Any

import anthropic
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware.providers.anthropic import Messages
from tests.support.anthropic_streams import message_stream_events, messages
from tests.support.stream_strategies import assembled, byte_pieces, dumps, lossless

from .streams import replayed_by_cut, replaying, sse_events, view


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes]]:
    """(a message, the bytes of a well-formed stream of it, cut at random)."""
    message = draw(messages())
    events = message_stream_events(draw, message)
    body = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + dumps(e) + b"\n\n" for e in events)
    return message, byte_pieces(draw, body)


MESSAGES = Messages()
STREAMED = view("/v1/messages", {"stream": True})


def sdk_final(body: bytes) -> dict[str, Any]:
    client = anthropic.Anthropic(api_key="sk-ant-p", http_client=replaying(body), max_retries=0)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=[]) as stream:
        return stream.get_final_message().to_dict()


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_assembles_into_the_message_it_streamed(case: tuple[dict[str, Any], list[bytes]]) -> None:
    message, cut = case
    assert lossless(assembled(MESSAGES, STREAMED, cut)) == lossless(dumps(message))


@settings(max_examples=60, deadline=None)
@given(streams())
def test_a_replay_assembles_into_the_same_message_and_the_sdk_reads_both_alike(
    case: tuple[dict[str, Any], list[bytes]],
) -> None:
    _, cut = case
    stored = assembled(MESSAGES, STREAMED, cut)
    replay = MESSAGES.render_stream(stored, STREAMED)
    assert lossless(assembled(MESSAGES, STREAMED, [replay])) == lossless(stored)
    assert sdk_final(replay) == sdk_final(b"".join(cut))


@settings(max_examples=150, deadline=None)
@given(streams())
def test_a_random_stream_is_replayed_from_its_cut_event_by_event(case: tuple[dict[str, Any], list[bytes]]) -> None:
    """Every event as sent, numbers digit for digit."""
    _, cut = case
    replay = replayed_by_cut(MESSAGES, STREAMED, cut)
    assert replay is not None
    assert sse_events(replay) == sse_events(b"".join(cut))
