"""A Gemini hit is indistinguishable from the provider's answer, with google-genai as the oracle.

Each fixture stream (tests/support/gemini_streams.py) goes through the cache once from the
provider (a miss, stored), is replayed as a stream and served as JSON (two hits), through the
caching transport and through `CacheMiddleware`. What an application reads from the SDK's chunks
(the text and thoughts in order, signatures, every other part, each candidate's and the answer's
other fields) must be the same three ways, and the replay's chunks must be the original's, one by
one. google-genai does not accumulate a stream itself, so `gemini_streams.reading` is
that accumulation, written from the SDK's documented objects rather than from the adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import msgpack
import pytest
from google import genai
from google.genai import types

from llm_cache.middleware import Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._entry import unpack
from llm_cache.middleware.stores import MemoryStore
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.gemini_streams import GEMINI_STREAMS, MODEL, Chunks, dumped, reading


def x_cache(response: types.GenerateContentResponse) -> str | None:
    http = response.sdk_http_response
    return None if http is None or http.headers is None else http.headers.get("x-cache")


@pytest.fixture(params=["transport", "middleware"])
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sync_client(fake: RunningFakeProvider) -> genai.Client:
    http = httpx.Client(transport=CachingTransport(cache=Cache()))
    options = types.HttpOptions(base_url=fake.url, api_version="v1beta", httpx_client=http)
    return genai.Client(api_key="gm-fidelity", http_options=options)


def middleware_client(fake: RunningFakeProvider) -> Any:
    """google-genai's async client on an app served behind `CacheMiddleware` (the fake provider's own)."""
    asgi = httpx2.ASGITransport(app=CacheMiddleware(fake.provider.app, cache=Cache()))
    options = types.HttpOptions(
        base_url="http://gemini.test", api_version="v1beta", httpx_async_client=httpx2.AsyncClient(transport=asgi)
    )
    return genai.Client(api_key="gm-fidelity", http_options=options).aio


async def three_ways(layer: str, fake: RunningFakeProvider, question: str) -> tuple[Chunks, Chunks, Chunks]:
    """(the original stream's chunks, the replay's, the JSON hit as one chunk)."""
    if layer == "transport":
        client = sync_client(fake)
        original = list(client.models.generate_content_stream(model=MODEL, contents=question))
        replay = list(client.models.generate_content_stream(model=MODEL, contents=question))
        return original, replay, [client.models.generate_content(model=MODEL, contents=question)]
    aio = middleware_client(fake)
    original = [c async for c in await aio.models.generate_content_stream(model=MODEL, contents=question)]
    replay = [c async for c in await aio.models.generate_content_stream(model=MODEL, contents=question)]
    return original, replay, [await aio.models.generate_content(model=MODEL, contents=question)]


@pytest.mark.parametrize("name", sorted(GEMINI_STREAMS))
async def test_a_gemini_stream_hit_reads_as_the_original(
    name: str, layer: str, fake_provider: RunningFakeProvider
) -> None:
    fake_provider.stream_next(GEMINI_STREAMS[name])

    original, replay, hit = await three_ways(layer, fake_provider, f"fixture: {name}")

    assert [x_cache(c) for c in (original[0], replay[0], hit[0])] == ["MISS", "HIT", "HIT"]
    assert fake_provider.count(":streamGenerateContent") == 1 and fake_provider.count(":generateContent") == 0
    assert reading(replay) == reading(original)
    assert reading(hit) == reading(original)
    assert dumped(replay) == dumped(original)  # every chunk as sent, fragment by fragment


def test_the_reading_of_the_fixtures_is_what_the_api_documents() -> None:
    """The oracle itself, on two fixtures read from their JSON as the SDK parses it."""

    def parsed(name: str) -> Iterator[types.GenerateContentResponse]:
        return (types.GenerateContentResponse.model_validate(c) for c in GEMINI_STREAMS[name])

    thoughts = reading(list(parsed("thoughts with signatures")))["candidates"][0]
    assert thoughts["parts"] == [{"thought": "**Planning**\nThe user asks for a capital."}, {"text": "Paris it is."}]
    assert thoughts["signatures"] == ["c2lnLXRleHQtMQ==", "c2lnLWVuZA=="]
    citations = reading(list(parsed("citations")))["candidates"][0]["citations"]
    assert [c["uri"] for c in citations] == ["https://example.com/hamlet", "https://example.com/folio"]


@pytest.mark.parametrize("name", sorted(GEMINI_STREAMS))
async def test_a_gemini_sse_hit_spells_each_chunk_as_gemini_does(
    name: str, layer: str, fake_provider: RunningFakeProvider
) -> None:
    """Gemini writes its SSE chunks with a space after each key's `:` and none after `,`
    (`{"candidates": [{"content": {"parts": [{"text": "Hi"}],"role": "model"}`), UTF-8 as it is: a
    hit's chunks are those bytes, not compact JSON."""
    spelt = [json.dumps(c, separators=(",", ": "), ensure_ascii=False) for c in GEMINI_STREAMS[name]]
    fake_provider.stream_next(spelt)
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": f"{name} \u00e9"}]}]}
    headers = {"x-goog-api-key": "gm-fidelity"}
    if layer == "transport":
        with httpx2.Client(transport=CachingTransport(cache=Cache()), base_url=fake_provider.url) as client:
            miss, hit = [client.post(path, json=body, headers=headers) for _ in range(2)]
    else:
        asgi = httpx2.ASGITransport(app=CacheMiddleware(fake_provider.provider.app, cache=Cache()))
        async with httpx2.AsyncClient(transport=asgi, base_url="http://gemini.test") as aclient:
            miss, hit = [await aclient.post(path, json=body, headers=headers) for _ in range(2)]

    assert [miss.headers["x-cache"], hit.headers["x-cache"]] == ["MISS", "HIT"]
    assert sse_data(hit.content) == sse_data(miss.content) == [s.encode() for s in spelt]


def sse_data(body: bytes) -> list[bytes]:
    """Each event's `data`, as its bytes (the events end in `\\r\\n\\r\\n` or `\\n\\n`)."""
    return [line.removeprefix(b"data: ") for line in body.splitlines() if line.startswith(b"data: ")]


async def test_a_gemini_array_stream_hit_is_the_miss_byte_for_byte(
    layer: str, fake_provider: RunningFakeProvider
) -> None:
    """Without `alt=sse` Gemini streams one JSON array, its elements indented by two spaces a level and
    set apart by `\\n,\\r\\n` (the fake provider writes them so): a hit keeps how the array was spelt,
    elements, separators and line ends, and an SSE request for the same entry gets each element as an
    event on one line, as Gemini spells one (escaped or not as the elements were)."""
    path = f"/v1beta/models/{MODEL}:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "tell me a story about an array \u00e9"}]}]}
    headers = {"x-goog-api-key": "gm-fidelity"}
    if layer == "transport":
        with httpx2.Client(transport=CachingTransport(cache=Cache()), base_url=fake_provider.url) as client:
            miss, hit, sse = [client.post(p, json=body, headers=headers) for p in (path, path, f"{path}?alt=sse")]
    else:
        asgi = httpx2.ASGITransport(app=CacheMiddleware(fake_provider.provider.app, cache=Cache()))
        async with httpx2.AsyncClient(transport=asgi, base_url="http://gemini.test") as aclient:
            miss, hit, sse = [
                await aclient.post(p, json=body, headers=headers) for p in (path, path, f"{path}?alt=sse")
            ]

    assert [miss.headers["x-cache"], hit.headers["x-cache"], sse.headers["x-cache"]] == ["MISS", "HIT", "HIT"]
    assert b"\n,\r\n" in miss.content and b'\n  "candidates": [\n' in miss.content  # (the form this test is about)
    assert hit.content == miss.content
    chunks = json.loads(miss.content)
    assert len(chunks) > 1
    assert sse_data(sse.content) == [json.dumps(c, separators=(",", ": ")).encode() for c in chunks]


async def test_an_array_stream_entry_is_one_a_release_before_framed_arrays_refuses_to_replay(
    fake_provider: RunningFakeProvider,
) -> None:
    """An array stream's cut names each element by the bytes before it and may hold indented elements,
    where releases before kept elements compact and joined them with `,\\r\\n` themselves: a pod of such
    a release sharing the store (a rolling upgrade, a rollback) would join indented elements into a
    stream no JSON reader reads. The cut is of another version, which those releases refuse (they
    synthesise the stream from the answer, compact), while this one replays it."""
    store = MemoryStore()
    path = f"/v1beta/models/{MODEL}:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "an array for two releases"}]}]}
    with httpx2.Client(transport=CachingTransport(cache=Cache(store)), base_url=fake_provider.url) as client:
        miss, hit = [client.post(path, json=body, headers={"x-goog-api-key": "gm-fidelity"}) for _ in range(2)]
    stored = await store.get(miss.headers["x-cache-key"])
    assert stored is not None
    cut = unpack(stored).cut
    assert cut is not None and hit.headers["x-cache"] == "HIT" and hit.content == miss.content

    version = msgpack.unpackb(cut, ext_hook=msgpack.ExtType)[0]
    assert version != 1  # the releases before replay a cut of version 1 only (`cuts.replay`)


async def test_a_json_hit_of_an_array_stream_is_spelt_as_its_elements_were(fake_provider: RunningFakeProvider) -> None:
    """Gemini writes a JSON answer as it writes the elements of its array stream, indented by two
    spaces a level: a `generateContent` hit of an entry filled by an array stream is spelt so (an
    entry filled by SSE events, one a line, is compact), and an SSE stream synthesised from it puts each
    event on one line."""
    body = {"contents": [{"role": "user", "parts": [{"text": "an indented answer"}]}]}
    headers = {"x-goog-api-key": "gm-fidelity"}
    base = f"/v1beta/models/{MODEL}"
    with httpx2.Client(transport=CachingTransport(cache=Cache()), base_url=fake_provider.url) as client:
        miss = client.post(f"{base}:streamGenerateContent", json=body, headers=headers)
        hit = client.post(f"{base}:generateContent", json=body, headers=headers)

    assert [miss.headers["x-cache"], hit.headers["x-cache"]] == ["MISS", "HIT"]
    assert hit.content == json.dumps(hit.json(), indent=2).encode()
    assert hit.json()["candidates"][0]["content"]["parts"][0]["text"] == "".join(
        chunk["candidates"][0]["content"]["parts"][0]["text"] for chunk in json.loads(miss.content)
    )
