"""`loaded_response` builds the same response as `Response(content=...)`, for httpx and httpx2."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import pytest

from llm_cache.middleware._loaded_response import loaded_response

BODY = b'{"id":"chatcmpl-1","choices":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"x-cache", b"HIT"), (b"content-length", b"32")]
LIBRARIES = pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])


def state(response: Any) -> dict[str, Any]:
    """What a reader of the response can observe, without the decoder (made lazily) and the stream object."""
    seen = {k: v for k, v in vars(response).items() if k not in ("_decoder", "stream", "headers")}
    return {**seen, "headers": response.headers.raw}


@LIBRARIES
def test_it_is_in_the_state_a_read_response_is_in(lib: Any) -> None:
    assert state(loaded_response(lib, 200, HEADERS, BODY)) == state(lib.Response(200, headers=HEADERS, content=BODY))


@LIBRARIES
def test_it_reads_as_its_body_every_way(lib: Any) -> None:
    response = loaded_response(lib, 200, HEADERS, BODY)
    assert isinstance(response, lib.Response)
    assert response.content == response.read() == BODY
    assert b"".join(response.iter_bytes()) == BODY
    assert response.json() == {"id": "chatcmpl-1", "choices": []}


@LIBRARIES
async def test_it_reads_as_its_body_asynchronously(lib: Any) -> None:
    response = loaded_response(lib, 200, HEADERS, BODY)
    assert await response.aread() == BODY
    assert b"".join([chunk async for chunk in response.aiter_bytes()]) == BODY
    await response.aclose()


@LIBRARIES
async def test_a_client_hands_it_over_whole(lib: Any) -> None:
    async def handler(request: Any) -> Any:
        return loaded_response(lib, 200, HEADERS, BODY)

    async with lib.AsyncClient(transport=lib.MockTransport(handler)) as client:
        response = await client.post("http://provider.invalid/v1/chat/completions", content=b"{}")
    assert (response.status_code, response.content, response.headers["x-cache"]) == (200, BODY, "HIT")
    assert response.headers["content-length"] == str(len(BODY))
