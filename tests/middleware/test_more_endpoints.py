"""Moderations, audio transcriptions and translations (through the real openai SDK) and rerank (raw
httpx, Cohere's paths and the OpenAI-compatible `/rerank`) are cached, against the fake provider."""

from __future__ import annotations

import io
from typing import Any

import httpx2
import openai
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware, CachingTransport

AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64))


def sdk(fake_provider: Any, cache: Cache | None = None) -> openai.OpenAI:
    http = httpx2.Client(transport=CachingTransport(cache=cache or Cache()))
    return openai.OpenAI(api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http, max_retries=0)


def transcribe(client: openai.OpenAI, audio: bytes = AUDIO, name: str = "clip.wav", **params: Any) -> Any:
    return client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=(name, io.BytesIO(audio), "audio/wav"), **params
    )


def test_a_moderation_is_cached(fake_provider: Any) -> None:
    client = sdk(fake_provider)

    first = client.moderations.with_raw_response.create(input=["plan an attack", "bake bread"])
    second = client.moderations.with_raw_response.create(input=["plan an attack", "bake bread"])
    other = client.moderations.with_raw_response.create(input="bake bread")

    assert [r.headers["x-cache"] for r in (first, second, other)] == ["MISS", "HIT", "MISS"]
    assert second.parse() == first.parse()
    assert [r.flagged for r in second.parse().results] == [True, False]
    assert fake_provider.count("/moderations") == 2


def test_a_transcription_is_keyed_by_the_file_bytes_and_the_form_fields(fake_provider: Any) -> None:
    client = sdk(fake_provider)

    first = transcribe(client)
    renamed = transcribe(client, name="another-name.wav")  # the same bytes: the name does not matter
    other_audio = transcribe(client, audio=AUDIO + b"\x00")
    other_prompt = transcribe(client, prompt="names: Ada")

    assert [r.headers["x-cache"] for r in (first, renamed, other_audio, other_prompt)] == [
        "MISS",
        "HIT",
        "MISS",
        "MISS",
    ]
    assert renamed.parse().text == first.parse().text
    assert fake_provider.count("/audio/transcriptions") == 3


def test_a_form_is_keyed_whatever_its_boundary_and_part_order(fake_provider: Any) -> None:
    url = fake_provider.openai_base_url + "/audio/translations"
    headers = {"authorization": "Bearer sk-alice"}

    def form(boundary: str, parts: list[tuple[str, str, bytes]]) -> tuple[bytes, dict[str, str]]:
        body = b""
        for name, filename, value in parts:
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return body, {**headers, "content-type": f"multipart/form-data; boundary={boundary}"}

    parts = [("model", "", b"whisper-1"), ("file", "a.wav", AUDIO), ("temperature", "", b"0")]
    with httpx2.Client(transport=CachingTransport(cache=Cache())) as http:
        first = http.post(url, content=form("one", parts)[0], headers=form("one", parts)[1])
        body, reordered = form("b0undary-two", parts[::-1])
        second = http.post(url, content=body, headers=reordered)

    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()


def test_a_streamed_or_text_transcription_is_never_stored(fake_provider: Any) -> None:
    url = fake_provider.openai_base_url + "/audio/transcriptions"
    files = {"file": ("clip.wav", AUDIO, "audio/wav")}
    with httpx2.Client(transport=CachingTransport(cache=Cache())) as http:
        post = {"headers": {"authorization": "Bearer sk-alice"}, "files": files}
        streamed = [http.post(url, data={"model": "whisper-1", "stream": "true"}, **post) for _ in range(2)]
        text = [http.post(url, data={"model": "whisper-1", "response_format": "text"}, **post) for _ in range(2)]

    assert [r.headers["x-cache"] for r in streamed] == ["BYPASS", "BYPASS"]
    assert [r.headers["x-cache"] for r in text] == ["MISS", "MISS"]
    assert text[1].text == text[0].text
    assert fake_provider.count("/audio/transcriptions") == 4


async def test_the_asgi_middleware_caches_a_transcription(fake_provider: Any) -> None:
    app = CacheMiddleware(fake_provider.app, cache=Cache())
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    client = openai.AsyncOpenAI(api_key="sk-alice", base_url="http://provider/v1", http_client=http, max_retries=0)

    answers = [
        await client.audio.translations.with_raw_response.create(model="whisper-1", file=("a.wav", io.BytesIO(AUDIO)))
        for _ in range(2)
    ]
    await http.aclose()

    assert [r.headers["x-cache"] for r in answers] == ["MISS", "HIT"]
    assert fake_provider.count("/audio/translations") == 1


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
async def test_a_rerank_is_cached(fake_provider: Any, path: str) -> None:
    body = {"model": "rerank-v3.5", "query": "capital of France", "documents": ["Paris is the capital", "Bread"]}
    headers = {"authorization": "Bearer co-alice"}
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=Cache()), base_url=fake_provider.url) as http:
        first = await http.post(path, json=body, headers=headers)
        second = await http.post(path, json=body, headers=headers)
        fewer = await http.post(path, json={**body, "top_n": 1}, headers=headers)

    assert [r.headers["x-cache"] for r in (first, second, fewer)] == ["MISS", "HIT", "MISS"]
    assert second.json() == first.json()
    assert [r["index"] for r in first.json()["results"]] == [0, 1]
    assert fake_provider.count("rerank") == 2
