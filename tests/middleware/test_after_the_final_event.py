"""What a stream sends after its final event, in a later chunk than that event.

The entry is stored as soon as the chunk holding the final event (`message_stop`, `response.completed`,
ConverseStream's `metadata`) has been read: an SDK may stop reading there and never close the stream.
The SDKs that read on see what follows, so the cache reads on too: what the provider's grammar does
not allow after the end (an `error` event, more content) withdraws the entry, and what it allows (a
`ping`, a comment, a compatible server's `[DONE]`; anything after a chat stream's `[DONE]`, where the
openai SDK stops) keeps it. The fake provider holds the tail back until the caller has read the final
event, so the tail always comes in a later chunk. Driven through the real anthropic and openai SDKs,
by the caching transport and by `CacheMiddleware`; ConverseStream's frames by an httpx client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.middleware import Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from tests.middleware.test_upstream_cache_control import QUESTION, sdk_client
from tests.middleware.test_what_may_be_stored import ANSWERED, MESSAGE
from tests.support.fake_provider import encoded_events
from tests.support.fake_provider_fixtures import RunningFakeProvider

LAYERS = pytest.mark.parametrize("layer", ["transport", "middleware"])
HAIKU = "claude-3-5-haiku-latest"

MESSAGE_EVENTS: list[Any] = [
    ("message_start", {"type": "message_start", "message": MESSAGE}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Paris"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
    ("message_stop", {"type": "message_stop"}),
]
AFTER_MESSAGE_STOP: dict[str, list[Any]] = {
    "an error event": [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})],
    "more text": [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
        )
    ],
    "another message_delta": [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}})],
    "a ping, then an error": [
        ("ping", {"type": "ping"}),
        ("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}}),
    ],
}
BENIGN_AFTER_MESSAGE_STOP: dict[str, list[Any]] = {
    "a ping": [("ping", {"type": "ping"})],
    "a comment and blank lines": [b": keep-alive\n\n\n\n"],
    "[DONE]": ["[DONE]"],
    "nothing": [],
}
RESPONSE_EVENTS: list[Any] = [("response.completed", {"type": "response.completed", "response": ANSWERED})]
AFTER_RESPONSE_COMPLETED: dict[str, list[Any]] = {
    "an error event": [("error", {"type": "error", "code": "server_error", "message": "boom", "sequence_number": 9})],
    "an error object": [{"error": {"message": "boom", "type": "server_error"}}],
    "more text": [
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "!", "sequence_number": 9})
    ],
}
BENIGN_AFTER_RESPONSE_COMPLETED: dict[str, list[Any]] = {
    "[DONE]": ["[DONE]"],
    "a comment": [b": keep-alive\n\n"],
    "nothing": [],
}


def script(fake: RunningFakeProvider, head: list[Any], tail: list[Any], eventstream: bool = False) -> None:
    """The next stream: `head` (to its final event), then `tail`, held back until `release()`."""
    cut = len(b"".join(encoded_events(head, eventstream)))
    fake.stream_next([*head, *tail], eventstream=eventstream, split_at=cut, hold=True)


FINAL_EVENT = {"anthropic": "message_stop", "openai": "response.completed"}


def read_to_end(client: Any, cache: Cache, fake: RunningFakeProvider) -> tuple[str, int, bool]:
    """One streamed Messages (anthropic) or Responses (openai) call read to its end: (`x-cache`, entries
    stored when the SDK handed over the final event, whether what followed raised), the held tail let
    go at the final event."""
    if isinstance(client, anthropic.Anthropic):
        messages = [{"role": "user", "content": QUESTION}]
        raw = client.messages.with_raw_response.create(model=HAIKU, max_tokens=64, messages=messages, stream=True)
        final = FINAL_EVENT["anthropic"]
    else:
        raw = client.responses.with_raw_response.create(model="gpt-4o", input=QUESTION, stream=True)
        final = FINAL_EVENT["openai"]
    stored_at_final = -1
    try:
        for event in raw.parse():
            if event.type == final:
                stored_at_final = cache.stats.stored
                fake.release()
    except (anthropic.APIError, openai.APIError):
        return raw.headers["x-cache"], stored_at_final, True
    return raw.headers["x-cache"], stored_at_final, False


def ask_again(client: Any) -> str:
    """The same question, streamed again: its `x-cache`."""
    if isinstance(client, anthropic.Anthropic):
        with client.messages.with_streaming_response.create(
            model=HAIKU, max_tokens=64, messages=[{"role": "user", "content": QUESTION}], stream=True
        ) as again:
            again.read()
            return again.headers["x-cache"]
    with client.responses.with_streaming_response.create(model="gpt-4o", input=QUESTION, stream=True) as again:
        again.read()
        return again.headers["x-cache"]


HEADS = {"anthropic": MESSAGE_EVENTS, "openai": RESPONSE_EVENTS}
WITHDRAWING = [
    *(pytest.param("anthropic", tail, id=f"messages-{name}") for name, tail in AFTER_MESSAGE_STOP.items()),
    *(pytest.param("openai", tail, id=f"responses-{name}") for name, tail in AFTER_RESPONSE_COMPLETED.items()),
]
BENIGN = [
    *(pytest.param("anthropic", tail, id=f"messages-{name}") for name, tail in BENIGN_AFTER_MESSAGE_STOP.items()),
    *(pytest.param("openai", tail, id=f"responses-{name}") for name, tail in BENIGN_AFTER_RESPONSE_COMPLETED.items()),
]


@LAYERS
@pytest.mark.parametrize(("sdk", "tail"), WITHDRAWING)
def test_an_event_after_the_final_event_in_a_later_chunk_withdraws_the_stored_entry(
    fake_provider: RunningFakeProvider, layer: str, sdk: str, tail: list[Any]
) -> None:
    """Stored at `message_stop` (`response.completed`), the entry is withdrawn by an `error` event or
    more content in a later chunk (the SDK reads on: an error raises, text joins its caller's answer):
    the next call is a miss, never served the answer as of the final event."""
    cache = Cache()
    script(fake_provider, HEADS[sdk], tail)
    with sdk_client(sdk, layer, cache, fake_provider) as client:
        outcome, stored_at_final, raised = read_to_end(client, cache, fake_provider)
        assert (outcome, stored_at_final) == ("MISS", 1)
        if sdk == "anthropic":
            assert raised == any(name == "error" for name, _ in tail)
        assert ask_again(client) == "MISS"
    assert cache.stats.withdrawn == 1
    assert len(fake_provider.requests) == 2


@LAYERS
@pytest.mark.parametrize(("sdk", "tail"), BENIGN)
def test_a_benign_tail_after_the_final_event_in_a_later_chunk_keeps_the_entry(
    fake_provider: RunningFakeProvider, layer: str, sdk: str, tail: list[Any]
) -> None:
    """After `message_stop`: a `ping`, comments, blank lines, `[DONE]`; after `response.completed`:
    `[DONE]`, comments. None reaches the SDK's caller."""
    cache = Cache()
    script(fake_provider, HEADS[sdk], tail)
    with sdk_client(sdk, layer, cache, fake_provider) as client:
        assert read_to_end(client, cache, fake_provider) == ("MISS", 1, False)
        assert ask_again(client) == "HIT"
    assert cache.stats.withdrawn == 0
    assert len(fake_provider.requests) == 1


@LAYERS
def test_anything_after_a_chat_streams_done_keeps_the_entry(fake_provider: RunningFakeProvider, layer: str) -> None:
    """The openai SDK stops at a chat stream's `[DONE]`: what follows is not its caller's answer."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    head = [{**chunk, "choices": [{"index": 0, "delta": {"content": "Paris"}, "finish_reason": "stop"}]}, "[DONE]"]
    tail = [{**chunk, "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": None}]}]
    cache = Cache()
    script(fake_provider, head, tail)
    with sdk_client("openai", layer, cache, fake_provider) as client:
        messages = [{"role": "user", "content": QUESTION}]
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=True)
        fake_provider.release()  # (the SDK reads on past `[DONE]` to the end of the stream, and drops it)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse())
        again = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=True)
        again.parse().close()
    assert (raw.headers["x-cache"], text, again.headers["x-cache"]) == ("MISS", "Paris", "HIT")
    assert cache.stats.withdrawn == 0


CONVERSE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
CONVERSE_EVENTS: list[Any] = [
    ("messageStart", {"role": "assistant", "p": "abc"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Paris"}, "p": "abcd"}),
    ("contentBlockStop", {"contentBlockIndex": 0, "p": "ab"}),
    ("messageStop", {"stopReason": "end_turn", "p": "abcdef"}),
    ("metadata", {"usage": {"inputTokens": 7, "outputTokens": 1, "totalTokens": 8}, "metrics": {"latencyMs": 5}}),
]
AFTER_METADATA: dict[str, list[Any]] = {
    "more text": [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "!"}, "p": "a"})],
    "another metadata": [("metadata", {"usage": {"inputTokens": 7, "outputTokens": 9, "totalTokens": 16}})],
}


@contextmanager
def converse_client(layer: str, cache: Cache, fake: RunningFakeProvider) -> Iterator[httpx2.Client]:
    server = (
        BackgroundServer(CacheMiddleware(fake.provider.app, cache=cache)).start() if layer == "middleware" else None
    )
    transport = CachingTransport(cache=cache) if server is None else None
    base = fake.url if server is None else server.url
    try:
        with httpx2.Client(transport=transport, base_url=base) as client:
            yield client
    finally:
        if server is not None:
            server.stop()


def converse_stream(client: httpx2.Client, cache: Cache, fake: RunningFakeProvider, head: int) -> tuple[str, int]:
    """One ConverseStream call read to its end: (`x-cache`, entries stored once the `head` bytes to the
    end of `metadata` were read), the tail let go then."""
    body = {"messages": [{"role": "user", "content": [{"text": QUESTION}]}], "inferenceConfig": {"maxTokens": 64}}
    authorization = "AWS4-HMAC-SHA256 Credential=AKIDALICE/20261127/us-east-1/bedrock/aws4_request"
    with client.stream(
        "POST", f"/model/{CONVERSE}/converse-stream", json=body, headers={"authorization": authorization}
    ) as response:
        read, stored_at_metadata = 0, -1
        for chunk in response.iter_bytes():
            read += len(chunk)
            if read >= head and stored_at_metadata < 0:
                stored_at_metadata = cache.stats.stored
                fake.release()
        return response.headers["x-cache"], stored_at_metadata


@LAYERS
@pytest.mark.parametrize("tail", AFTER_METADATA.values(), ids=AFTER_METADATA.keys())
def test_a_frame_after_converse_stream_metadata_in_a_later_chunk_withdraws_the_stored_entry(
    fake_provider: RunningFakeProvider, layer: str, tail: list[Any]
) -> None:
    """`metadata` is ConverseStream's last event; boto3 reads on to the stream's end and hands its
    caller any event that follows (an exception frame raises)."""
    cache = Cache()
    script(fake_provider, CONVERSE_EVENTS, tail, eventstream=True)
    head = len(b"".join(encoded_events(CONVERSE_EVENTS, eventstream=True)))
    with converse_client(layer, cache, fake_provider) as client:
        assert converse_stream(client, cache, fake_provider, head) == ("MISS", 1)
        assert converse_stream(client, cache, fake_provider, head)[0] == "MISS"
    assert cache.stats.withdrawn == 1


@LAYERS
def test_converse_stream_ending_in_a_later_chunk_than_its_metadata_keeps_the_entry(
    fake_provider: RunningFakeProvider, layer: str
) -> None:
    cache = Cache()
    script(fake_provider, CONVERSE_EVENTS, [], eventstream=True)
    head = len(b"".join(encoded_events(CONVERSE_EVENTS, eventstream=True)))
    with converse_client(layer, cache, fake_provider) as client:
        assert converse_stream(client, cache, fake_provider, head) == ("MISS", 1)
        assert converse_stream(client, cache, fake_provider, head)[0] == "HIT"
    assert cache.stats.withdrawn == 0
