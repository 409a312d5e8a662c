"""`middleware/_ownership.py`: an answer's ids are recorded before the chunk that hands them out is
passed on, wherever the upstream cut its stream. The gateway's rule is specified with real SDKs in
`tests/middleware/test_gateway_ownership.py`."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio

from llm_cache.middleware._ownership import _UNSURE, Ownership, caller_of, recording
from llm_cache.middleware.providers import held
from llm_cache.middleware.stores import MemoryStore, RedisStore
from tests.middleware.stores.conftest import SLACK, unique_prefix


def event(kind: str, response: dict[str, object]) -> bytes:
    data = orjson.dumps({"type": kind, "response": response})
    return b"event: " + kind.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


STREAM = (
    event("response.created", {"id": "resp_1", "output": []})
    # (text quoting an event's name is no such event)
    + b"event: response.output_text.delta\r\n"
    + b'data: {"type": "response.output_text.delta", "delta": "response.completed"}\r\n\r\n'
    + event("response.completed", {"id": "resp_1", "output": [{"id": "msg_1"}]})
)


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
@pytest.mark.parametrize("gzipped", [False, True])
def test_a_streams_ids_are_recorded_before_the_chunk_that_ends_their_event(size: int, gzipped: bool) -> None:
    body = STREAM
    if gzipped:
        compressor = zlib.compressobj(wbits=31)
        body = compressor.compress(STREAM) + compressor.flush()
    sent = bytearray()
    recorded: list[tuple[int, list[held.Held]]] = []

    async def record(found: list[held.Held]) -> None:
        recorded.append((len(sent), found))

    async def relay() -> None:
        chunks = recording(
            pieces(body, size),
            "gzip" if gzipped else None,
            True,
            "openai",
            lambda answer: held.minted("openai", "/v1/responses", answer),
            record,
        )
        async for chunk in chunks:
            sent.extend(chunk)

    asyncio.run(relay())
    assert bytes(sent) == body
    ids = [one for _, found in recorded for one in found]
    assert ids == [("response", "resp_1"), ("item", "msg_1")]  # (the id `response.completed` names again: once)
    if not gzipped:  # nothing of the event naming an id had been passed on whole before it was recorded
        created_end = STREAM.index(b"\r\n\r\n") + 4
        assert recorded[0][0] < created_end


def test_a_chat_stream_records_its_stored_id_and_audio_once_from_its_chunks() -> None:
    """Every chunk of a chat stream names the completion's id: a stored one is recorded once, with the audio
    id its first chunk names; chunks of a stream not stored record only its audio."""
    first = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"delta": {"audio": {"id": "audio_1"}}}],
    }
    rest = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "x"}}]}
    body = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in (first, rest, rest)) + b"data: [DONE]\n\n"

    def recorded_for(request: dict[str, Any]) -> list[held.Held]:
        recorded: list[held.Held] = []

        async def record(found: list[held.Held]) -> None:
            recorded.extend(found)

        async def relay() -> None:
            minted = lambda answer: held.minted("openai", "/v1/chat/completions", answer, request)  # noqa: E731
            async for _ in recording(pieces(body, 5), None, True, "openai", minted, record):
                pass

        asyncio.run(relay())
        return recorded

    assert recorded_for({"store": True}) == [("chat_completion", "chatcmpl-1"), ("audio", "audio_1")]
    assert recorded_for({"modalities": ["text", "audio"]}) == [("audio", "audio_1")]


def test_an_id_is_its_callers_and_no_one_elses() -> None:
    a, b = caller_of([b"key-a"], ()), caller_of([b"key-b", b"not-a-client-key"], (b"key-b",))

    async def check() -> None:
        owned = Ownership(MemoryStore(), "p:")
        await owned.record(a, "openai", [("response", "resp_1")])
        assert await owned.foreign(a, "openai", [("response", "resp_1")]) is None
        assert await owned.foreign(b, "openai", [("response", "resp_1")]) == ("response", "resp_1")
        assert await owned.foreign(a, "azure", [("response", "resp_1")]) == ("response", "resp_1")
        fresh = Ownership(owned.store, "p:")  # another pod: its memo is empty, the store answers
        assert await fresh.foreign(a, "openai", [("response", "resp_1")]) is None

    asyncio.run(check())
    assert b == caller_of([b"key-b"], ())


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_record_read_from_a_store_that_does_not_say_its_time_left_is_memoised_only_a_short_while() -> None:
    """A record read back was memoised a full `TTL` from the read: the memo vouched for the id long after
    the store (and the provider) had let it go."""
    a, clock = caller_of([b"key-a"], ()), Clock()
    resp = [("response", "resp_1")]

    async def check() -> None:
        writer = Ownership(MemoryStore(), "p:")
        await writer.record(a, "openai", resp)
        reader = Ownership(writer.store, "p:", clock=clock)  # another pod
        assert await reader.foreign(a, "openai", resp) is None
        await writer.store.clear()  # the store lets the record go (its time, an eviction)
        assert await reader.foreign(a, "openai", resp) is None  # the memo answers for a short while
        clock.now += _UNSURE + 1
        assert await reader.foreign(a, "openai", resp) == ("response", "resp_1")

    asyncio.run(check())


def test_a_record_read_from_a_store_that_says_its_time_left_is_memoised_no_longer_than_that(
    redis_server: Any,
) -> None:
    """A record with 5 s left in Redis is vouched for by the memo 5 s, not a full `TTL` from the read."""
    a, clock = caller_of([b"key-a"], ()), Clock()
    resp = [("response", "resp_1")]

    async def check() -> None:
        store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
        writer = Ownership(store, "p:")
        await writer.record(a, "openai", resp)
        raw = redis.asyncio.Redis.from_url(redis_server.url)
        (key,) = [k async for k in raw.scan_iter(f"{store.prefix}p:__owner__:*")]
        await raw.expire(key, 5)  # a record written long ago, near its end
        reader = Ownership(store, "p:", clock=clock)
        assert await reader.foreign(a, "openai", resp) is None
        await raw.delete(key)  # its time is up: Redis lets it go
        clock.now += 4
        assert await reader.foreign(a, "openai", resp) is None  # the memo answers while it had time left
        clock.now += 2
        assert await reader.foreign(a, "openai", resp) == ("response", "resp_1")
        await raw.aclose()
        await store.close()

    asyncio.run(check())


def test_with_no_cache_one_callers_flood_never_pushes_another_callers_ids_out() -> None:
    """With no cache (`cache.enabled: false`) only the process held the records, in one LRU memo for
    every caller: B's flood of ids pushed A's out, and A's own id was refused as never seen."""
    a, b = caller_of([b"key-a"], ()), caller_of([b"key-b"], ())

    async def check() -> None:
        owned = Ownership(None, "", memo_entries=10)
        await owned.record(a, "openai", [("response", "resp_a")])
        for n in range(50):
            await owned.record(b, "openai", [("response", f"resp_b{n}")])
        assert await owned.foreign(a, "openai", [("response", "resp_a")]) is None
        assert await owned.foreign(b, "openai", [("response", "resp_a")]) == ("response", "resp_a")
        assert await owned.foreign(b, "openai", [("response", "resp_b49")]) is None

    asyncio.run(check())
