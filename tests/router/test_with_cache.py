"""The router composed under the cache: a miss goes through the router, a hit never reaches it."""

from __future__ import annotations

import httpx2
import pytest

import middleware
from router import RouterTransport

from .conftest import dep


def setup(fakes, make_router):
    router = make_router(
        {
            "groups": {"gpt": {"deployments": [dep(fakes["a"], order=0), dep(fakes["b"], order=1)]}},
            "settings": {"num_retries": 1, "backoff_initial": 0},
        }
    )
    cache = middleware.Cache()
    return router, middleware.AsyncCachingTransport(cache=cache, inner=RouterTransport(router))


BODY = {"model": "gpt", "messages": [{"role": "user", "content": "same question"}]}
AUTH = {"authorization": "Bearer caller"}


async def test_miss_goes_through_router_and_hit_does_not(fakes, make_router):
    fakes["a"].fail(("status", 500, None, None))
    router, transport = setup(fakes, make_router)
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        first = await c.post("/chat/completions", json=BODY, headers=AUTH)
        second = await c.post("/chat/completions", json=BODY, headers=AUTH)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-router-deployment"] == "b"
    assert first.json()["choices"] == second.json()["choices"]
    assert (fakes["a"].count, fakes["b"].count) == (1, 1)  # the hit never reached the router


async def test_stream_broken_after_first_byte_is_not_cached(fakes, make_router):
    fakes["a"].fail("midstream")
    router, transport = setup(fakes, make_router)
    body = {**BODY, "stream": True}
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        with pytest.raises(httpx2.RemoteProtocolError):
            async with c.stream("POST", "/chat/completions", json=body, headers=AUTH) as resp:
                async for _ in resp.aiter_lines():
                    pass
        async with c.stream("POST", "/chat/completions", json=body, headers=AUTH) as resp:
            text = "".join([line async for line in resp.aiter_lines()])
    assert "[DONE]" in text
    assert fakes["a"].count == 2  # asked again: the broken stream was not served from cache


def test_sync_cache_over_sync_router(fakes, make_router):
    router, _ = setup(fakes, make_router)
    transport = middleware.CachingTransport(cache=middleware.Cache(), inner=RouterTransport(router))
    with httpx2.Client(transport=transport, base_url="https://api.openai.com/v1") as c:
        for _ in range(3):
            assert c.post("/chat/completions", json=BODY, headers=AUTH).status_code == 200
    assert fakes["a"].count + fakes["b"].count == 1
