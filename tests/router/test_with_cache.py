"""The router composed under the cache: a miss goes through the router, a hit never reaches it."""

from __future__ import annotations

import time

import httpx2
import pytest

from llm_cache import middleware
from llm_cache.middleware.stores import MemoryStore
from llm_cache.router import RouterTransport
from tests.middleware.test_stale_if_error import age

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


def fallback_setup(fakes, make_router, **cache_settings):
    router = make_router(
        {
            "groups": {
                "gpt": {"deployments": [dep(fakes["a"], order=0)]},
                "backup": {"deployments": [dep(fakes["b"], order=0)]},
            },
            "settings": {"num_retries": 0, "backoff_initial": 0, "fallbacks": {"gpt": ["backup"]}},
        }
    )
    cache = middleware.Cache(**cache_settings)
    return cache, middleware.AsyncCachingTransport(cache=cache, inner=RouterTransport(router))


async def test_a_fallback_groups_answer_is_served_but_not_stored_by_default(fakes, make_router):
    fakes["a"].fail(("status", 500, None, None))
    cache, transport = fallback_setup(fakes, make_router)
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        fallback = await c.post("/chat/completions", json=BODY, headers=AUTH)
        recovered = await c.post("/chat/completions", json=BODY, headers=AUTH)
        hit = await c.post("/chat/completions", json=BODY, headers=AUTH)
    assert fallback.status_code == 200 and fallback.headers["x-router-fallback-from"] == "gpt"
    assert fallback.headers["x-router-group"] == "backup" and fallback.headers["x-cache"] == "MISS"
    assert recovered.headers["x-cache"] == "MISS" and recovered.headers["x-router-deployment"] == "a"
    # the requested group's answer is stored, and a hit says which deployment made it
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-router-deployment"] == "a"
    assert hit.headers["x-router-group"] == "gpt" and "x-router-fallback-from" not in hit.headers
    assert cache.stats.stored == 1


async def test_cache_fallbacks_stores_them_with_their_own_ttl_and_says_so_on_hits(fakes, make_router):
    fakes["a"].fail(("status", 500, None, None))
    store = MemoryStore()
    cache, transport = fallback_setup(fakes, make_router, store=store, cache_fallbacks=True, fallback_ttl=30)
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        await c.post("/chat/completions", json=BODY, headers=AUTH)
        hit = await c.post("/chat/completions", json=BODY, headers=AUTH)
    assert hit.headers["x-cache"] == "HIT"
    assert (hit.headers["x-router-fallback-from"], hit.headers["x-router-group"]) == ("gpt", "backup")
    assert hit.headers["x-router-deployment"] == "b"
    expires_at = store._data[hit.headers["x-cache-key"]][1]
    assert expires_at is not None and expires_at - time.monotonic() <= 30


EMBED = {"model": "gpt", "input": ["first text", "second text"]}


def embeddings_setup(fake_provider, make_router, **cache_settings):
    """Both groups on the test suite's fake provider, which serves real embedding lists (the cache
    stores them item by item); `fake_provider.fail_next()` makes the first group's call fail."""
    api_base = f"{fake_provider.url}/v1"
    router = make_router(
        {
            "groups": {
                "gpt": {"deployments": [dep(api_base, id="a", model="text-embedding-3-small")]},
                "backup": {"deployments": [dep(api_base, id="b", model="text-embedding-3-large")]},
            },
            "settings": {"num_retries": 0, "backoff_initial": 0, "fallbacks": {"gpt": ["backup"]}},
        }
    )
    cache = middleware.Cache(**cache_settings)
    return cache, middleware.AsyncCachingTransport(cache=cache, inner=RouterTransport(router))


async def test_a_fallback_groups_embeddings_are_not_stored_item_by_item_by_default(fake_provider, make_router):
    """A list of embeddings is stored item by item; from a fallback group they are another model's
    vectors, so, as for a single answer, none is stored under the requested model's keys."""
    fake_provider.fail_next(1, status=500)
    cache, transport = embeddings_setup(fake_provider, make_router)
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        fallback = await c.post("/embeddings", json=EMBED, headers=AUTH)
        recovered = await c.post("/embeddings", json=EMBED, headers=AUTH)
        hit = await c.post("/embeddings", json=EMBED, headers=AUTH)
    assert fallback.status_code == 200 and fallback.headers["x-router-fallback-from"] == "gpt"
    assert (fallback.headers["x-cache"], fallback.headers["x-cache-items-missed"]) == ("MISS", "2")
    assert recovered.headers["x-cache"] == "MISS" and recovered.headers["x-router-deployment"] == "a"
    assert recovered.headers["x-cache-items-missed"] == "2"  # nothing of the fallback's was stored
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-router-deployment"] == "a"
    assert "x-router-fallback-from" not in hit.headers
    assert (cache.stats.not_stored, cache.stats.stored) == (1, 2)


async def test_cache_fallbacks_stores_a_fallbacks_items_with_their_ttl_and_origin(fake_provider, make_router):
    fake_provider.fail_next(1, status=500)
    store = MemoryStore()
    cache, transport = embeddings_setup(fake_provider, make_router, store=store, cache_fallbacks=True, fallback_ttl=30)
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        fallback = await c.post("/embeddings", json=EMBED, headers=AUTH)
        hit = await c.post("/embeddings", json=EMBED, headers=AUTH)
    assert (hit.headers["x-cache"], hit.json()["data"]) == ("HIT", fallback.json()["data"])
    assert (hit.headers["x-router-fallback-from"], hit.headers["x-router-group"]) == ("gpt", "backup")
    expiries = [entry[1] for entry in store._data.values()]
    assert len(expiries) == 2 and all(at is not None and at - time.monotonic() <= 30 for at in expiries)


async def test_a_stale_entry_answers_only_once_the_routers_retries_and_fallbacks_failed(fakes, make_router):
    router = make_router(
        {
            "groups": {
                "gpt": {"deployments": [dep(fakes["a"], order=0)]},
                "backup": {"deployments": [dep(fakes["b"], order=0)]},
            },
            "settings": {"num_retries": 1, "backoff_initial": 0, "fallbacks": {"gpt": ["backup"]}},
        }
    )
    cache = middleware.Cache(ttl=60, stale_if_error=300)
    transport = middleware.AsyncCachingTransport(cache=cache, inner=RouterTransport(router))
    async with httpx2.AsyncClient(transport=transport, base_url="https://api.openai.com/v1") as c:
        first = await c.post("/chat/completions", json=BODY, headers=AUTH)
        await age(cache.store, first.headers["x-cache-key"], 120)
        fakes["a"].fail(*[("status", 503, None, None)] * 2)
        fakes["b"].fail(*[("status", 500, None, None)] * 2)
        stale = await c.post("/chat/completions", json=BODY, headers=AUTH)
    assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
    assert stale.json()["choices"] == first.json()["choices"]
    assert fakes["a"].count == 3 and fakes["b"].count == 2  # a retry on each group, the fallback, then the entry
