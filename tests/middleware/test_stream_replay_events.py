"""A streamed hit sends the events the provider sent: as many, in the same order, each with the same
fragment and the same fields, read by the real openai and anthropic SDKs through the caching
transport and through `CacheMiddleware`, from the fake provider streaming several fragments.

The one difference a hit may show is documented (docs/providers.md): `obfuscation` padding is
replayed at its length, not with its random characters.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import anthropic
import httpx2
import msgpack
import openai
import orjson
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware
from llm_cache.middleware._entry import Entry, pack, unpack
from llm_cache.middleware.providers import cuts
from llm_cache.middleware.stores import MemoryStore
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stream_fixtures import CHAT_STREAMS, HEAD, USAGE, chunk, delta

LAYERS = pytest.mark.parametrize("layer", ["transport", "middleware"])


class Clients:
    """The openai and anthropic SDKs on one cache, through `layer`, with one call shape: `events`
    (every event the SDK yields of a raw stream, as its dict, and the `x-cache` header)."""

    def __init__(self, layer: str, fake: RunningFakeProvider) -> None:
        cache = Cache()
        if layer == "transport":
            http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
            self.openai = openai.AsyncOpenAI(
                api_key="sk-cut", base_url=fake.openai_base_url, http_client=http, max_retries=0
            )
            self.anthropic = anthropic.AsyncAnthropic(
                api_key="sk-ant-cut", base_url=fake.anthropic_base_url, http_client=http, max_retries=0
            )
        else:
            asgi = httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=CacheMiddleware(fake.provider.app, cache=cache))
            )
            self.openai = openai.AsyncOpenAI(
                api_key="sk-cut", base_url="http://provider.test/v1", http_client=asgi, max_retries=0
            )
            self.anthropic = anthropic.AsyncAnthropic(
                api_key="sk-ant-cut", base_url="http://provider.test", http_client=asgi, max_retries=0
            )

    async def chat(self, **request: Any) -> tuple[list[dict[str, Any]], str]:
        response = await self.openai.chat.completions.with_raw_response.create(stream=True, **request)
        return await _dicts(response.parse()), response.headers["x-cache"]

    async def completions(self, **request: Any) -> tuple[list[dict[str, Any]], str]:
        response = await self.openai.completions.with_raw_response.create(stream=True, **request)
        return await _dicts(response.parse()), response.headers["x-cache"]

    async def responses(self, **request: Any) -> tuple[list[dict[str, Any]], str]:
        response = await self.openai.responses.with_raw_response.create(stream=True, **request)
        return await _dicts(response.parse()), response.headers["x-cache"]

    async def messages(self, **request: Any) -> tuple[list[dict[str, Any]], str]:
        response = await self.anthropic.messages.with_raw_response.create(stream=True, **request)
        return await _dicts(await response.parse()), response.headers["x-cache"]


async def _dicts(stream: AsyncIterator[Any]) -> list[dict[str, Any]]:
    return [event.to_dict() for event in [item async for item in stream]]


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Tell me about the sea, in a few words."}]}


async def streamed_twice(
    clients: Clients, fake: RunningFakeProvider, events: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the chunks of a chat stream of `events` from the provider, those of its hit)."""
    fake.stream_next(events)
    request = {**CHAT, "logprobs": True, "stream_options": {"include_usage": True}}
    miss, first = await clients.chat(**request)
    hit, second = await clients.chat(**request)
    assert (first, second) == ("MISS", "HIT") and fake.count("/chat/completions") == 1
    return miss, hit


@LAYERS
@pytest.mark.parametrize("usage", [True, False], ids=["with usage", "without usage"])
async def test_a_chat_stream_hit_sends_the_events_of_the_miss(
    layer: str, usage: bool, fake_provider: RunningFakeProvider
) -> None:
    clients = Clients(layer, fake_provider)
    request = {**CHAT, "stream_options": {"include_usage": True}} if usage else CHAT

    miss, first = await clients.chat(**request)
    hit, second = await clients.chat(**request)

    assert (first, second) == ("MISS", "HIT") and fake_provider.count("/chat/completions") == 1
    assert len([e for e in miss if e["choices"] and e["choices"][0]["delta"].get("content")]) > 3  # several fragments
    assert hit == miss
    assert any(e.get("usage") for e in hit) is usage  # the usage chunk only when asked for


@LAYERS
async def test_a_chat_stream_hit_replays_each_fragment_with_its_logprobs(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    miss, hit = await streamed_twice(Clients(layer, fake_provider), fake_provider, CHAT_STREAMS["logprobs"])

    assert hit == miss
    logprobs = [e["choices"][0]["logprobs"] for e in hit if e["choices"] and e["choices"][0]["logprobs"]]
    assert [[entry["token"] for entry in each["content"]] for each in logprobs] == [["Hi"], ["!"]]


@LAYERS
async def test_a_chat_stream_hit_pads_as_the_provider_did(layer: str, fake_provider: RunningFakeProvider) -> None:
    """`obfuscation` pads each chunk to hide its fragment's length: a hit pads each chunk as much."""
    padded = [
        chunk(delta(role="assistant", content=""), obfuscation="aZ3"),
        chunk(delta(content="Calm"), obfuscation="x8Qp2LmN0"),
        chunk(delta(content=" waters"), obfuscation="Q"),
        chunk(delta(finish_reason="stop"), obfuscation="kk7Tz"),
        chunk(choices=[], usage=USAGE, obfuscation="r1"),
        "[DONE]",
    ]
    miss, hit = await streamed_twice(Clients(layer, fake_provider), fake_provider, padded)

    assert len(hit) == len(miss) == 5
    assert [len(e["obfuscation"]) for e in hit] == [len(e["obfuscation"]) for e in miss] == [3, 9, 1, 5, 2]
    assert [_unpadded(e) for e in hit] == [_unpadded(e) for e in miss]
    assert {e["id"] for e in hit} == {HEAD["id"]}


def _unpadded(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "obfuscation"}


@LAYERS
async def test_a_chat_stream_hit_of_parallel_tool_calls_sends_each_argument_fragment(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    fixture = CHAT_STREAMS["parallel tool calls"]
    miss, hit = await streamed_twice(Clients(layer, fake_provider), fake_provider, fixture)

    assert hit == miss and len(hit) == 8


QUESTION = "Tell me about the sea, in a few words."
FAMILIES: dict[str, tuple[str, dict[str, Any], str, Callable[[dict[str, Any]], bool]]] = {
    "legacy completions": (
        "completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": QUESTION},
        "/completions",
        lambda event: bool(event["choices"] and event["choices"][0]["text"]),
    ),
    "messages": (
        "messages",
        {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": [{"role": "user", "content": QUESTION}]},
        "/v1/messages",
        lambda event: event["type"] == "content_block_delta",
    ),
    "responses": (
        "responses",
        {"model": "gpt-4o", "input": QUESTION},
        "/responses",
        lambda event: event["type"] == "response.output_text.delta",
    ),
}
"""Per family: the `Clients` call, a request, the provider's path, which events carry a fragment."""


@LAYERS
@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_a_stream_hit_of_each_family_sends_the_events_of_the_miss(
    layer: str, family: str, fake_provider: RunningFakeProvider
) -> None:
    call, request, path, fragment = FAMILIES[family]
    streamed = getattr(Clients(layer, fake_provider), call)

    miss, first = await streamed(**request)
    hit, second = await streamed(**request)

    assert (first, second) == ("MISS", "HIT") and fake_provider.count(path) == 1
    assert len([event for event in miss if fragment(event)]) > 3  # several fragments
    assert hit == miss


@LAYERS
async def test_an_anthropic_stream_hit_of_every_block_kind_sends_the_events_of_the_miss(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    from tests.middleware.test_stream_fidelity import anthropic_stream

    clients = Clients(layer, fake_provider)
    fake_provider.stream_next(anthropic_stream())
    request = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "Capital?"}]}

    miss, _ = await clients.messages(**request)
    hit, second = await clients.messages(**request)

    assert second == "HIT" and hit == miss
    assert [e["type"] for e in hit].count("content_block_delta") == 10


async def test_a_stream_hit_of_an_answer_stored_from_json_is_synthesised(fake_provider: RunningFakeProvider) -> None:
    """An entry filled by a JSON answer holds no cut: its streamed hits are made from the answer (one
    fragment per content block), as before."""
    clients = Clients("transport", fake_provider)
    request = {**CHAT, "stream_options": {"include_usage": True}}
    answer = await clients.openai.chat.completions.create(**request)

    hit, second = await clients.chat(**request)

    assert second == "HIT"
    assert [e["choices"][0]["delta"].get("content") for e in hit if e["choices"]] == [
        answer.choices[0].message.content,
        None,
    ]


async def rewrite_entry(store: MemoryStore, key: str, change: Callable[[Entry], bytes]) -> Entry:
    stored = await store.get(key)
    assert stored is not None
    entry = unpack(stored)
    await store.set(key, change(entry), None)
    return entry


def as_version_3(entry: Entry) -> bytes:
    """The entry as a version-3 store holds it (before cuts were kept)."""
    return msgpack.packb([3, *list(msgpack.unpackb(pack(entry)))[1:10]], use_bin_type=True)


def with_cut(cut: list[Any]) -> Callable[[Entry], bytes]:
    return lambda entry: pack(replace(entry, cut=msgpack.packb(cut)))


WHOLE_ANSWER = msgpack.ExtType(2, msgpack.packb(0))
"""A slot naming source 0, which `[[0, []]]` makes the whole stored answer."""
LONG_PADDING = msgpack.ExtType(4, msgpack.packb(0))


@pytest.mark.parametrize(
    "change",
    [
        as_version_3,
        with_cut([1, [], [], [7]]),
        with_cut([1, [[0, []]], [[None, WHOLE_ANSWER]], [0] * 100_000]),
        with_cut([1, [], [[None, {"obfuscation": LONG_PADDING}]], [0, 10**9]]),
        with_cut([1, [], [[None, {"a": 1}]], [0], 3]),
        with_cut([1, [], [[None, {"a": 1}]], [0], 1, 1]),
    ],
    ids=[
        "stored before cuts were kept",
        "with a cut that does not fit its answer",
        "with a cut sending its answer 100,000 times",
        "with a cut padding an event with a billion characters",
        "with a cut of an unknown spelling",
        "with a cut of two spellings",
    ],
)
async def test_a_stream_entry_without_a_usable_cut_is_still_replayed_synthesised(
    change: Callable[[Entry], bytes], fake_provider: RunningFakeProvider
) -> None:
    store = MemoryStore()
    http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=Cache(store=store)))
    sdk = openai.AsyncOpenAI(api_key="sk-cut", base_url=fake_provider.openai_base_url, http_client=http)
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await sdk.chat.completions.with_raw_response.create(**request)
    miss = await _dicts(response.parse())
    entry = await rewrite_entry(store, response.headers["x-cache-key"], change)

    hit = await sdk.chat.completions.with_raw_response.create(**request)
    events = await _dicts(hit.parse())

    assert entry.cut is not None and hit.headers["x-cache"] == "HIT"
    assert [e["choices"][0]["delta"].get("content") for e in events if e["choices"]] == [
        "".join(e["choices"][0]["delta"].get("content") or "" for e in miss if e["choices"]),
        None,
    ]
    assert events[-1]["usage"] == miss[-1]["usage"]


def test_a_cut_writing_its_answer_many_times_into_one_event_is_refused_before_it_is_written() -> None:
    """The replay's bound (`MAX_REPLAY_FACTOR` times the entry, and `MAX_REPLAY_EXTRA` more) holds for
    one event too: a cut read from a store whose one template names the whole answer 500 times (a
    kilobyte of cut, 5 MB of event) was written out whole, each copy joined onto the last, before the
    bound was checked; a few such templates held a hit for seconds and gigabytes."""
    answer = b'{"choices": [{"message": {"content": "%s"}}]}' % (b"x" * 10_000)
    cut = msgpack.packb([1, [[0, []]], [[None, [WHOLE_ANSWER] * 500]], [0]])
    tracemalloc.start()
    try:
        with pytest.raises(cuts.CutError, match="larger than its entry allows"):
            cuts.replay(cut, answer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = cuts.MAX_REPLAY_FACTOR * (len(answer) + len(cut)) + cuts.MAX_REPLAY_EXTRA
    assert peak < 2 * bound, (peak, bound)


async def test_a_stream_hit_replays_its_entry_as_rewritten_not_the_events_made_of_it_before(
    fake_provider: RunningFakeProvider,
) -> None:
    """An entry rewritten under its key and creation time with another answer (a store someone else can
    write): its streamed hits' events are made once per entry and reused, and were found again by the
    entry's fingerprint and creation time alone, so the hit replayed the first answer's events. Keyed
    by the answer's length too, as the JSON hit's headers are: the hit replays what the store holds,
    as a cache that never saw the first answer replays it."""
    store = MemoryStore()

    def client(cache: Cache) -> openai.AsyncOpenAI:
        http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
        return openai.AsyncOpenAI(api_key="sk-cut", base_url=fake_provider.openai_base_url, http_client=http)

    async def text(sdk: openai.AsyncOpenAI) -> str:
        response = await sdk.chat.completions.with_raw_response.create(**request)
        assert response.headers["x-cache"] in ("MISS", "HIT")
        return "".join(
            e["choices"][0]["delta"].get("content") or "" for e in await _dicts(response.parse()) if e["choices"]
        )

    sdk = client(Cache(store=store))
    request = {**CHAT, "stream": True}
    response = await sdk.chat.completions.with_raw_response.create(**request)
    first = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in await _dicts(response.parse()) if e["choices"]
    )
    assert await text(sdk) == first  # a hit: its events are made and kept

    def rewritten(entry: Entry) -> bytes:
        answer = orjson.loads(entry.body)
        answer["choices"][0]["message"]["content"] = "Another answer, of another length altogether."
        return pack(replace(entry, body=orjson.dumps(answer)))

    await rewrite_entry(store, response.headers["x-cache-key"], rewritten)
    replayed = await text(sdk)
    assert replayed != first and replayed == await text(client(Cache(store=store)))


@LAYERS
async def test_a_stream_hit_writes_each_number_as_the_provider_spelt_it(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    """A Python server writes a small logprob `-1.2e-05`; a double's shortest form is `-0.000012`. The
    hit's bytes are the miss's: every number as it was written, in the fragments' events and the others."""
    logprobs = [
        {"content": [{"token": "Hi", "logprob": -1.2e-05, "bytes": [72, 105], "top_logprobs": []}], "refusal": None},
        {"content": [{"token": "!", "logprob": -3e-07, "bytes": [33], "top_logprobs": []}], "refusal": None},
    ]
    events = [
        chunk({**delta(role="assistant", content="Hi"), "logprobs": logprobs[0]}),
        chunk({**delta(content="!"), "logprobs": logprobs[1]}),
        chunk(delta(finish_reason="stop")),
        chunk(choices=[], usage=USAGE, temperature_used=1e-05),
        "[DONE]",
    ]
    fake_provider.stream_next(events)
    body = {**CHAT, "stream": True, "logprobs": True, "stream_options": {"include_usage": True}}
    cache = Cache()
    if layer == "transport":
        client = httpx2.AsyncClient(
            transport=AsyncCachingTransport(cache=cache), base_url=fake_provider.openai_base_url
        )
    else:
        app = CacheMiddleware(fake_provider.provider.app, cache=cache)
        client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://provider.test/v1")
    async with client:
        miss, hit = [
            await client.post("/chat/completions", json=body, headers={"authorization": "Bearer sk-cut"})
            for _ in range(2)
        ]

    assert [miss.headers["x-cache"], hit.headers["x-cache"]] == ["MISS", "HIT"]
    assert b'"logprob":-1.2e-05' in miss.content and b'"temperature_used":1e-05' in miss.content
    assert hit.content == miss.content


SPELLINGS = {
    "compact, non-ASCII escaped (Python's json with separators)": {"separators": (",", ":")},
    "spaced and escaped (Python's json by default)": {},
    "spaced, UTF-8": {"ensure_ascii": False},
}


@LAYERS
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
async def test_a_stream_hit_spells_its_events_json_as_the_provider_did(
    layer: str, spelling: str, fake_provider: RunningFakeProvider
) -> None:
    """A compatible server written in Python spaces its JSON, or escapes `é` as `\\u00e9`: the hit's
    events are spelt the same way, byte for byte."""
    spelt = SPELLINGS[spelling]
    events = [
        chunk(delta(role="assistant", content="Caf\u00e9 ")),
        chunk(delta(content="cr\u00e8me \U0001f600")),
        chunk(delta(finish_reason="stop")),
        chunk(choices=[], usage=USAGE),
    ]
    fake_provider.stream_next([*(json.dumps(event, **spelt) for event in events), "[DONE]"])
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    miss, hit = await posted_twice(layer, fake_provider, body)

    assert hit.content == miss.content


async def posted_twice(layer: str, fake: RunningFakeProvider, body: dict[str, Any]) -> list[httpx2.Response]:
    """The chat request `body` sent twice as raw HTTP through `layer` (a miss, then a hit)."""
    cache = Cache()
    if layer == "transport":
        client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache), base_url=fake.openai_base_url)
    else:
        app = CacheMiddleware(fake.provider.app, cache=cache)
        client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://provider.test/v1")
    async with client:
        answers = [
            await client.post("/chat/completions", json=body, headers={"authorization": "Bearer sk-cut"})
            for _ in range(2)
        ]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    return answers
