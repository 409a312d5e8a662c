"""The `Cache` constructor and management helpers as a Python user calls them."""

from __future__ import annotations

import inspect
from typing import Any

import httpx2
import orjson
import pytest

from llm_cache.middleware import CachingTransport
from llm_cache.middleware._engine import Cache
from llm_cache.middleware._settings import CacheSettings
from llm_cache.middleware._types import UPSTREAM_HEADER, CacheRequest
from llm_cache.middleware.stores.redis import RedisStore

from .test_engine import AUTH, BODY, URL, Upstream, client, completion, post

NOT_SETTINGS = {"store", "endpoints", "telemetry", "semantic"}


def test_every_setting_is_a_typed_keyword_with_the_settings_default() -> None:
    parameters = inspect.signature(Cache).parameters
    keywords = {name: p for name, p in parameters.items() if name not in NOT_SETTINGS}
    assert list(keywords) == list(CacheSettings.model_fields)
    for name, parameter in keywords.items():
        field = CacheSettings.model_fields[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.annotation != "Any", name
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        assert parameter.default == default or (parameter.default is None and field.default_factory), name
    assert Cache().settings == CacheSettings()


def test_an_unknown_setting_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="no_such_setting"):
        Cache(no_such_setting=True)  # type: ignore[call-arg]


async def test_a_store_url_builds_the_store_the_cache_uses(redis_server: Any) -> None:
    cache = Cache(store=f"{redis_server.url}?prefix=url-test:&timeout=2")
    assert isinstance(cache.store, RedisStore) and cache.store.prefix == "url-test:"
    upstream = Upstream()
    async with client(cache, upstream) as http:
        key = (await post(http)).headers["x-cache-key"]
        assert (await post(http)).headers["x-cache"] == "HIT"
    assert await cache.store.get(key) is not None and upstream.calls == 1
    await cache.close()


def sync_client(cache: Cache, calls: list[int]) -> httpx2.Client:
    def upstream(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(200, json=completion(len(calls)))

    return httpx2.Client(transport=CachingTransport(cache=cache, inner=httpx2.MockTransport(upstream)))


def test_sync_helpers_delete_and_clear_from_code_without_a_loop(redis_server: Any) -> None:
    cache = Cache(store=f"{redis_server.url}?timeout=2", key_prefix="sync-helpers:")
    calls: list[int] = []
    other = {**BODY, "temperature": 0}
    with sync_client(cache, calls) as http:
        first = http.post(URL, json=BODY, headers=AUTH).headers["x-cache-key"]
        http.post(URL, json=other, headers=AUTH)
        cache.delete_sync(first)
        assert http.post(URL, json=BODY, headers=AUTH).headers["x-cache"] == "MISS"
        assert cache.delete_request_sync(URL, BODY, AUTH) == first
        assert http.post(URL, json=BODY, headers=AUTH).headers["x-cache"] == "MISS"
        cache.clear_sync()
        assert http.post(URL, json=other, headers=AUTH).headers["x-cache"] == "MISS"
        assert http.post(URL, json=other, headers=AUTH).headers["x-cache"] == "HIT"
    assert len(calls) == 5
    cache.close_sync()


CHAT_PATH = "/v1/chat/completions"
RAW_BODY = orjson.dumps(BODY)


def test_the_engine_learns_the_upstream_only_from_its_driver_never_from_the_request_headers() -> None:
    """A driver names the upstream it sends to (`upstream=`); a header of that name is the caller's,
    just another header: never keyed, never obeyed, whatever driver forgot to drop it."""
    cache = Cache()
    headers = {"authorization": AUTH["authorization"]}
    plain = cache.prepare("POST", CHAT_PATH, "", headers, RAW_BODY)
    forged = cache.prepare("POST", CHAT_PATH, "", {**headers, UPSTREAM_HEADER: URL}, RAW_BODY)
    named = cache.prepare("POST", CHAT_PATH, "", headers, RAW_BODY, upstream=URL)
    assert isinstance(plain, CacheRequest) and isinstance(forged, CacheRequest) and isinstance(named, CacheRequest)
    assert forged.key == plain.key != named.key
    assert named.key == cache.key_for(URL, BODY, headers)


def test_the_same_request_named_for_two_upstreams_is_prepared_for_each_again_and_again() -> None:
    """The prepared-request memo remembers the upstream with the request: a request prepared for one
    upstream is never handed to a call to another."""
    cache = Cache()
    headers = {"authorization": AUTH["authorization"]}
    keys = {
        upstream: {cache.prepare("POST", CHAT_PATH, "", headers, RAW_BODY, upstream=upstream).key for _ in range(4)}  # type: ignore[union-attr]
        for upstream in ("https://one.example/v1/chat/completions", "https://two.example/v1/chat/completions", None)
    }
    assert all(len(found) == 1 for found in keys.values()) and len(set.union(*keys.values())) == 3
