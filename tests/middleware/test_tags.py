"""Tags: every entry carries its model, namespace and scope tags and the request's `x-cache-tags`;
`Cache.invalidate(tags)` removes every entry carrying any of them, and no other."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware._entry import unpack
from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.stores.base import StoreError
from llm_cache.middleware.stores.redis import RedisStore
from llm_cache.middleware.stores.tiered import TieredStore
from tests.middleware.stores.conftest import SLACK, build_store, eventually, unique_prefix
from tests.middleware.test_engine import AUTH, BODY, URL, Upstream, client, completion
from tests.support.stores import DeadStore


async def ask(http: httpx2.AsyncClient, question: str = "What is 2+2?", **headers: str) -> httpx2.Response:
    body = {**BODY, "messages": [{"role": "user", "content": question}]}
    return await http.post(URL, json=body, headers={**AUTH, **headers})


async def test_an_entry_carries_its_automatic_tags_and_the_requests_own() -> None:
    store = MemoryStore()
    async with client(Cache(store=store), Upstream()) as http:
        key = (await ask(http, **{"x-cache-tags": "doc:42, tenant:acme", "x-cache-namespace": "faq"})).headers[
            "x-cache-key"
        ]
    tags = unpack(await store.get(key) or b"").tags
    scope = next(tag for tag in tags if tag.startswith("scope:"))
    assert tags == {"doc:42", "tenant:acme", "model:gpt-4o-mini", "namespace:faq", scope}
    assert "sk-test" not in scope and scope.startswith("scope:c")  # the credential's hash, never the credential


async def test_invalidating_a_tag_removes_exactly_the_entries_that_carry_it() -> None:
    cache, upstream = Cache(store=MemoryStore()), Upstream()
    async with client(cache, upstream) as http:
        await ask(http, "one", **{"x-cache-tags": "doc:1"})
        await ask(http, "two", **{"x-cache-tags": "doc:1,doc:2"})
        await ask(http, "three", **{"x-cache-tags": "doc:3"})
        await ask(http, "untagged")

        removed = await cache.invalidate(["doc:1"])

        after = {q: (await ask(http, q)).headers["x-cache"] for q in ("one", "two", "three", "untagged")}
    assert len(removed) == 2
    assert after == {"one": "MISS", "two": "MISS", "three": "HIT", "untagged": "HIT"}


async def test_any_of_several_tags_is_enough_and_automatic_tags_work_alike() -> None:
    cache = Cache(store=MemoryStore())
    async with client(cache, Upstream()) as http:
        await ask(http, "a", **{"x-cache-tags": "doc:a"})
        await ask(http, "b", **{"x-cache-namespace": "other"})
        await ask(http, "c")

        await cache.invalidate(["doc:a", "namespace:other"])

        assert [(await ask(http, "a")).headers["x-cache"], (await ask(http, "c")).headers["x-cache"]] == ["MISS", "HIT"]
        assert (await ask(http, "b", **{"x-cache-namespace": "other"})).headers["x-cache"] == "MISS"
        await cache.invalidate(["model:gpt-4o-mini"])
        assert (await ask(http, "c")).headers["x-cache"] == "MISS"


async def test_entries_expired_on_their_own_do_not_break_an_invalidation() -> None:
    store = MemoryStore()
    cache = Cache(store=store)
    async with client(cache, Upstream()) as http:
        gone = (await ask(http, "short", **{"x-cache-tags": "doc:1", "x-cache-ttl": "0.05"})).headers["x-cache-key"]
        await ask(http, "long", **{"x-cache-tags": "doc:1"})
        await eventually(lambda: _missing(store, gone), what="the short entry expired")

        removed = await cache.invalidate(["doc:1"])

        assert (await ask(http, "long")).headers["x-cache"] == "MISS"
    assert len(removed) == 2  # the expired key is named; deleting it was harmless


async def _missing(store: Any, key: str) -> bool:
    return await store.get(key) is None


def test_the_sync_twin_invalidates_too() -> None:
    cache = Cache(store=MemoryStore())
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=completion(1)))

    with httpx2.Client(transport=CachingTransport(cache=cache, inner=transport)) as http:
        first = http.post(URL, json=BODY, headers={**AUTH, "x-cache-tags": "doc:1"})
        assert cache.invalidate_sync(["doc:1"]) == [first.headers["x-cache-key"]]
        assert http.post(URL, json=BODY, headers=AUTH).headers["x-cache"] == "MISS"
    cache.close_sync()


@pytest.mark.parametrize(
    "tags",
    ["has space", "a," * 17, "x" * 129, "new\tline", "a;b"],
    ids=["space", "too-many", "too-long", "control", "punctuation"],
)
async def test_junk_tags_are_a_400_naming_the_header_and_the_provider_is_not_called(tags: str) -> None:
    upstream = Upstream()
    async with client(Cache(store=MemoryStore()), upstream) as http:
        response = await ask(http, **{"x-cache-tags": _distinct(tags)})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-cache-tags"
    assert upstream.calls == 0


def _distinct(tags: str) -> str:
    """`a,a,...` as that many distinct tags."""
    parts = tags.split(",")
    return ",".join(f"{part}{i}" for i, part in enumerate(parts) if part) if len(parts) > 2 else tags


async def test_a_store_without_a_tag_index_refuses_rather_than_remove_nothing() -> None:
    cache = Cache(store=DeadStore())  # a plain byte map: it declares no tag index
    with pytest.raises(StoreError, match="cannot invalidate by tag"):
        await cache.invalidate(["doc:1"])


async def test_a_tag_invalidated_on_one_pod_is_gone_from_the_other_pods_l1(redis_server: Any) -> None:
    prefix = unique_prefix()
    pods = [
        TieredStore(MemoryStore(), RedisStore(redis_server.url, prefix=prefix, **SLACK), channel=f"{prefix}inval")
        for _ in range(2)
    ]
    for store in pods:
        await store.start()
    a, b = Cache(store=pods[0]), Cache(store=pods[1])
    try:
        async with client(a, Upstream()) as on_a, client(b, Upstream()) as on_b:
            await ask(on_a, **{"x-cache-tags": "doc:1"})
            await ask(on_a, "other")
            assert [(await ask(on_b, q)).headers["x-cache"] for q in ("What is 2+2?", "other")] == ["HIT", "HIT"]
            key = (await ask(on_b)).headers["x-cache-key"]
            assert await pods[1].l1.get(key) is not None  # B serves it from its own L1 now

            await a.invalidate(["doc:1"])

            await eventually(lambda: _missing(pods[1].l1, key), what="B's L1 dropping the invalidated entry")
            assert [(await ask(on_b, q)).headers["x-cache"] for q in ("What is 2+2?", "other")] == ["MISS", "HIT"]
    finally:
        await a.close()
        await b.close()


async def test_an_invalidation_removes_only_its_own_caches_entries_from_a_shared_store(redis_server: Any) -> None:
    """Two gateways on one Redis, each under its own `key_prefix`: one's invalidation, like its flush,
    never reaches the other's entries. Before, the tag index was the store's, so invalidating
    `model:gpt-4o-mini` (or a custom tag both used) in one removed the other's entries too."""
    prefix = unique_prefix()
    stores = [RedisStore(redis_server.url, prefix=prefix, **SLACK) for _ in range(2)]
    ours, theirs = Cache(store=stores[0], key_prefix="ours:"), Cache(store=stores[1], key_prefix="theirs:")
    try:
        async with client(ours, Upstream()) as on_ours, client(theirs, Upstream()) as on_theirs:
            for http in (on_ours, on_theirs):
                await ask(http, **{"x-cache-tags": "doc:1"})

            removed = await ours.invalidate(["model:gpt-4o-mini", "doc:1"])

            assert [key.split(":", 1)[0] for key in removed] == ["ours"]
            assert (await ask(on_theirs)).headers["x-cache"] == "HIT"
            assert (await ask(on_ours)).headers["x-cache"] == "MISS"
            assert len(await theirs.invalidate(["doc:1"])) == 1  # theirs still finds its own
    finally:
        await ours.close()
        await theirs.close()


@pytest.mark.parametrize("flushed", ["tags", "_tags"])
@pytest.mark.parametrize("kind", ["memory", "disk", "redis", "redis-cluster", "tiered", "s3"])
async def test_flushing_a_namespace_named_like_the_tag_index_leaves_the_index_to_invalidations(
    request: pytest.FixtureRequest, kind: str, flushed: str
) -> None:
    """A namespace is the caller's name and may be `tags`: on Redis its flush scanned `{prefix}tags:*`,
    which is also where the store keeps every tag's index (`{prefix}tags:{<tag>}`), so it deleted the
    tag records of every namespace, and of every key prefix on the same Redis: an invalidation after
    it found nothing, and the entries it was meant to remove were served on."""
    store = await build_store(kind, request, unique_prefix())
    cache = Cache(store=store)
    try:
        async with client(cache, Upstream()) as http:
            await ask(http, "kept apart", **{"x-cache-tags": "doc:1", "x-cache-namespace": "faq"})
            flushed_key = (await ask(http, "flushed", **{"x-cache-namespace": flushed})).headers["x-cache-key"]

            await cache.clear(flushed)
            removed = await cache.invalidate(["doc:1"])

            assert await store.get(flushed_key) is None  # the namespace's own entries are gone
            assert len(removed) == 1
            assert (await ask(http, "kept apart", **{"x-cache-namespace": "faq"})).headers["x-cache"] == "MISS"
    finally:
        await cache.close()


async def test_through_the_asgi_middleware_tags_are_stored_and_junk_never_reaches_the_app() -> None:
    from tests.middleware.test_asgi import KEY, post, wrapped

    cache = Cache(store=MemoryStore())
    app, calls = wrapped("starlette", cache)
    tagged = await post(app, headers={**KEY, "x-cache-tags": "doc:asgi"})
    junk = await post(app, headers={**KEY, "x-cache-tags": "two words"})

    assert (tagged.status_code, junk.status_code) == (200, 400)
    assert calls.count["chat"] == 1  # the junk never reached the app
    assert await cache.invalidate(["doc:asgi"]) == [tagged.headers["x-cache-key"]]
    assert (await post(app)).headers["x-cache"] == "MISS"


@pytest.mark.parametrize(("outer", "inner"), [("v1", "v10"), ("app:", "app:x:"), ("v1:", "v1:x")])
async def test_a_key_prefix_that_begins_another_never_reaches_its_entries(
    redis_server: Any, outer: str, inner: str
) -> None:
    """Two caches on one Redis whose key prefixes nest (`v1` beside `v10`, `app:` beside `app:x:`). The
    outer one's keys, flushes and tag names were its prefix and the rest joined as they came, so its
    namespace `0default` was the inner one's `default` (the same keys: its hits), and its flush of
    everything or of namespace `x`, or its invalidation of a crafted tag (`x:doc:1`), removed the inner
    one's entries. None of it reaches them now."""
    store = RedisStore(redis_server.url, prefix=unique_prefix(), **SLACK)
    outside, inside = Cache(store=store, key_prefix=outer), Cache(store=store, key_prefix=inner)
    rest = inner[len(outer) :]
    try:
        async with client(outside, Upstream()) as on_outside, client(inside, Upstream()) as on_inside:
            assert (await ask(on_inside, **{"x-cache-tags": "doc:1"})).headers["x-cache"] == "MISS"
            if ":" not in rest:  # the outer cache's namespace `0default` made the inner one's keys
                stolen = await ask(on_outside, **{"x-cache-namespace": rest + "default"})
                assert stolen.headers["x-cache"] == "MISS"

            assert await outside.invalidate([rest + "doc:1"]) == []
            await outside.clear((rest + "default").split(":")[0])
            await outside.clear()

            assert (await ask(on_inside)).headers["x-cache"] == "HIT"
            assert len(await inside.invalidate(["doc:1"])) == 1
    finally:
        await outside.close()
        await inside.close()
