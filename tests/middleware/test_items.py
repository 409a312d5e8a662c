"""A list embeddings request is served item by item: cached items from the store, only the missing
ones sent upstream in one request, the answer put back together in input order.

Through the real openai SDK (the caching transport, and CacheMiddleware in front of the fake
provider's app), google-genai and raw httpx for Gemini's batchEmbedContents, against the fake provider, which
records every body it receives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx2
import openai
import orjson
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._entry import pack, unpack
from llm_cache.middleware.stores import MemoryStore
from tests.middleware.test_google_genai import sync_client
from tests.middleware.test_recorder import Spans
from tests.support.fake_provider import embedding_vector
from tests.support.stores import DeadStore

EMBEDDINGS = "/embeddings"
MODEL = "text-embedding-3-small"


def client(cache: Cache, fake_provider: Any) -> openai.OpenAI:
    http = httpx2.Client(transport=CachingTransport(cache=cache))
    return openai.OpenAI(api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http, max_retries=0)


def embed(client: openai.OpenAI, inputs: Any, **params: Any) -> tuple[Any, Any]:
    """(the raw response, the parsed one); floats, so vectors compare as the provider made them."""
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=inputs, encoding_format="float", **params)
    return raw, raw.parse()


def sent_inputs(fake_provider: Any) -> list[Any]:
    return [r.json["input"] for r in fake_provider.requests if r.path.endswith(EMBEDDINGS)]


def items(raw: Any) -> tuple[str, str, str]:
    headers = raw.headers
    return headers["x-cache"], headers["x-cache-items-hit"], headers["x-cache-items-missed"]


def test_cached_items_are_never_sent_upstream_and_order_and_indices_hold(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)

    raw, first = embed(sdk, ["alpha", "beta"])
    assert items(raw) == ("MISS", "0", "2")
    raw, second = embed(sdk, ["gamma", "beta", "alpha"])  # reordered, with one new item

    assert items(raw) == ("PARTIAL", "2", "1")
    assert sent_inputs(fake_provider) == [["alpha", "beta"], ["gamma"]]
    assert [d.index for d in second.data] == [0, 1, 2]
    assert [d.embedding for d in second.data] == [embedding_vector(t) for t in ("gamma", "beta", "alpha")]
    assert second.data[1].embedding == first.data[1].embedding
    assert second.usage.prompt_tokens == 2  # the upstream's usage: "gamma" only; cached items count 0


def test_a_list_answer_that_names_a_location_stores_no_item(fake_provider: Any) -> None:
    """Items follow a single answer's rule: an answer naming a `location` is relayed and not stored."""
    cache = Cache()
    sdk = client(cache, fake_provider)
    data = [{"object": "embedding", "index": i, "embedding": embedding_vector(t)} for i, t in enumerate("ab")]
    answer = {"object": "list", "data": data, "model": MODEL, "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    fake_provider.fail_next(1, status=200, body=answer, headers={"location": "https://elsewhere.example/"})
    raw, _ = embed(sdk, ["a", "b"])
    assert items(raw) == ("MISS", "0", "2") and raw.headers["location"] == "https://elsewhere.example/"
    assert cache.stats.stored == 0
    raw, _ = embed(sdk, ["a", "b"])
    assert items(raw) == ("MISS", "0", "2") and sent_inputs(fake_provider) == [["a", "b"]] * 2


def test_with_hooks_a_list_is_one_request_and_the_hooks_decide(fake_provider: Any) -> None:
    """The operator's hooks decide on a request and its one answer: with any registered, a list is
    not served item by item (which would pass them by) but cached whole, so a bypass, a veto or a
    refusal to store holds for lists too."""

    def bypass_tenant_b(view: Any) -> None:
        view.bypass = view.request.headers.get("x-tenant") == "b"

    def veto_second_hit(view: Any) -> None:
        view.serve = vetoes.pop() if vetoes else True

    vetoes = [False]
    cache = Cache(hooks={"before_lookup": [bypass_tenant_b], "on_hit": [veto_second_hit]})
    sdk = client(cache, fake_provider)
    raw, _ = embed(sdk, ["alpha", "beta"])
    assert raw.headers["x-cache"] == "MISS" and "x-cache-items-hit" not in raw.headers
    assert embed(sdk, ["alpha", "beta"])[0].headers["x-cache"] == "MISS"  # the hook vetoed this hit
    assert embed(sdk, ["alpha", "beta"])[0].headers["x-cache"] == "HIT"
    tenant_b = sdk.with_options(default_headers={"x-tenant": "b"})
    assert embed(tenant_b, ["alpha", "beta"])[0].headers["x-cache"] == "BYPASS"
    assert embed(sdk, ["alpha"])[0].headers["x-cache"] == "MISS"  # the whole list was one entry
    assert sent_inputs(fake_provider) == [["alpha", "beta"], ["alpha", "beta"], ["alpha", "beta"], ["alpha"]]


def test_a_list_of_cached_items_is_a_hit_with_nothing_sent_upstream(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, ["alpha", "beta", "gamma"])

    raw, answer = embed(sdk, ["gamma", "alpha"])

    assert items(raw) == ("HIT", "2", "0")
    assert fake_provider.count(EMBEDDINGS) == 1
    assert [(d.index, d.embedding) for d in answer.data] == [
        (0, embedding_vector("gamma")),
        (1, embedding_vector("alpha")),
    ]
    assert (answer.model, answer.usage.prompt_tokens, answer.usage.total_tokens) == (MODEL, 0, 0)


def test_each_item_is_keyed_as_its_own_request(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, "alpha")  # a lone string

    raw, _ = embed(sdk, ["alpha", "beta"])
    assert items(raw) == ("PARTIAL", "1", "1")
    raw, alone = embed(sdk, "beta")  # stored by the list, served to the lone request

    assert raw.headers["x-cache"] == "HIT"
    assert alone.data[0].embedding == embedding_vector("beta")
    assert sent_inputs(fake_provider) == ["alpha", ["beta"]]


def test_duplicates_in_one_list_go_upstream_once(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)

    raw, answer = embed(sdk, ["twin", "solo", "twin"])

    assert items(raw) == ("MISS", "0", "3")
    assert sent_inputs(fake_provider) == [["twin", "solo"]]
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert answer.data[0].embedding == answer.data[2].embedding == embedding_vector("twin")


def test_token_arrays_are_items_and_a_flat_token_list_is_one(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, [[1, 2, 3], [4, 5]])

    raw, _ = embed(sdk, [[4, 5], [6]])
    flat, _ = embed(sdk, [4, 5])  # one token array, the item stored above

    assert items(raw) == ("PARTIAL", "1", "1")
    assert flat.headers["x-cache"] == "HIT"
    assert sent_inputs(fake_provider) == [[[1, 2, 3], [4, 5]], [[6]]]


def test_parameters_that_change_an_item_are_part_of_its_key(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, ["alpha", "beta"])

    raw, answer = embed(sdk, ["alpha", "beta"], dimensions=4)

    assert items(raw) == ("MISS", "0", "2")
    assert len(answer.data[0].embedding) == 4


def test_another_credential_never_gets_the_items(fake_provider: Any) -> None:
    cache = Cache()
    embed(client(cache, fake_provider), ["alpha"])
    http = httpx2.Client(transport=CachingTransport(cache=cache))
    bob = openai.OpenAI(api_key="sk-bob", base_url=fake_provider.openai_base_url, http_client=http, max_retries=0)

    raw, _ = embed(bob, ["alpha", "beta"])

    assert items(raw) == ("MISS", "0", "2")


async def test_base64_items_are_served_byte_for_byte(fake_provider: Any) -> None:
    url = fake_provider.openai_base_url + EMBEDDINGS
    headers = {"authorization": "Bearer sk-alice"}

    def base64(*inputs: str) -> dict[str, Any]:
        return {"model": MODEL, "input": list(inputs), "encoding_format": "base64"}

    async with httpx2.AsyncClient() as direct:
        truth = (await direct.post(url, json=base64("a", "b", "c"), headers=headers)).json()
    async with httpx2.AsyncClient(transport=AsyncCachingTransport(cache=Cache())) as http:
        await http.post(url, json=base64("c", "a"), headers=headers)
        answer = await http.post(url, json=base64("a", "b", "c"), headers=headers)

    assert answer.headers["x-cache"] == "PARTIAL"
    assert [d["embedding"] for d in answer.json()["data"]] == [d["embedding"] for d in truth["data"]]
    assert sent_inputs(fake_provider)[-1] == ["b"]


async def test_the_asgi_middleware_serves_items_too(fake_provider: Any) -> None:
    app = CacheMiddleware(fake_provider.app, cache=Cache())
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    sdk = openai.AsyncOpenAI(api_key="sk-alice", base_url="http://provider/v1", http_client=http, max_retries=0)

    await sdk.embeddings.create(model=MODEL, input=["alpha", "beta"], encoding_format="float")
    raw = await sdk.embeddings.with_raw_response.create(model=MODEL, input=["beta", "gamma"], encoding_format="float")
    answer = raw.parse()
    await http.aclose()

    assert items(raw) == ("PARTIAL", "1", "1")
    assert sent_inputs(fake_provider) == [["alpha", "beta"], ["gamma"]]
    assert [d.embedding for d in answer.data] == [embedding_vector("beta"), embedding_vector("gamma")]


def _gemini_item(text: str, model: str = "models/text-embedding-004") -> dict[str, Any]:
    return {"model": model, "content": {"parts": [{"text": text}]}}


@pytest.mark.parametrize("driver", ["transport", "asgi"])
async def test_gemini_batch_embed_contents_is_served_item_by_item(fake_provider: Any, driver: str) -> None:
    if driver == "transport":
        http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=Cache()), base_url=fake_provider.url)
    else:
        app = CacheMiddleware(fake_provider.app, cache=Cache())
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://provider")
    path = "/v1beta/models/text-embedding-004:batchEmbedContents"
    headers = {"x-goog-api-key": "g-alice"}

    await http.post(path, json={"requests": [_gemini_item("alpha"), _gemini_item("beta")]}, headers=headers)
    partial = await http.post(path, json={"requests": [_gemini_item("gamma"), _gemini_item("alpha")]}, headers=headers)
    lone = await http.post(
        "/v1beta/models/text-embedding-004:embedContent",
        json={"content": {"parts": [{"text": "gamma"}]}},
        headers=headers,
    )
    await http.aclose()

    sent = [r.json["requests"] for r in fake_provider.requests]
    assert sent == [[_gemini_item("alpha"), _gemini_item("beta")], [_gemini_item("gamma")]]
    assert partial.headers["x-cache"] == "PARTIAL"
    assert partial.json() == {
        "embeddings": [{"values": embedding_vector("gamma")}, {"values": embedding_vector("alpha")}]
    }
    assert lone.headers["x-cache"] == "HIT"
    assert lone.json() == {"embedding": {"values": embedding_vector("gamma")}}


def test_only_if_cached_with_a_missing_item_is_a_504_and_nothing_goes_upstream(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, ["alpha"])

    with pytest.raises(openai.APIStatusError) as error:
        embed(sdk, ["alpha", "beta"], extra_headers={"cache-control": "only-if-cached"})

    assert error.value.status_code == 504
    assert fake_provider.count(EMBEDDINGS) == 1


def test_no_cache_sends_every_item_and_stores_each_again(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, ["alpha"])

    raw, _ = embed(sdk, ["alpha", "beta"], extra_headers={"cache-control": "no-cache"})
    again, _ = embed(sdk, ["beta"])

    assert items(raw) == ("REFRESH", "0", "2")
    assert items(again) == ("HIT", "1", "0")
    assert sent_inputs(fake_provider) == [["alpha"], ["alpha", "beta"]]


def test_an_upstream_error_is_relayed_and_no_item_is_stored(fake_provider: Any) -> None:
    sdk = client(Cache(), fake_provider)
    embed(sdk, ["alpha"])
    fake_provider.fail_next(status=500)

    with pytest.raises(openai.InternalServerError):
        embed(sdk, ["alpha", "beta"])
    raw, _ = embed(sdk, ["beta"])

    assert items(raw) == ("MISS", "0", "1")
    assert sent_inputs(fake_provider) == [["alpha"], ["beta"], ["beta"]]


def test_an_answer_whose_items_cannot_be_told_apart_sends_the_callers_own_request_instead(
    fake_provider: Any,
) -> None:
    """Two embeddings both at index 0: which answers which item is not certain, so neither is merged
    with the cached item or stored; the caller's whole list goes upstream and its answer is relayed."""
    sdk = client(Cache(), fake_provider)
    embed(sdk, ["alpha"])
    twins = [{"object": "embedding", "index": 0, "embedding": embedding_vector(t)} for t in ("beta", "gamma")]
    usage = {"prompt_tokens": 2, "total_tokens": 2}
    fake_provider.fail_next(status=200, body={"object": "list", "data": twins, "model": MODEL, "usage": usage})

    raw, answer = embed(sdk, ["alpha", "beta", "gamma"])

    assert sent_inputs(fake_provider) == [["alpha"], ["beta", "gamma"], ["alpha", "beta", "gamma"]]
    assert [d.embedding for d in answer.data] == [embedding_vector(t) for t in ("alpha", "beta", "gamma")]
    assert [d.index for d in answer.data] == [0, 1, 2]
    raw, _ = embed(sdk, ["beta"])
    assert items(raw) == ("MISS", "0", "1")  # nothing of the ambiguous answer was stored


async def test_deleting_a_list_request_deletes_its_items(fake_provider: Any) -> None:
    cache = Cache()
    sdk = client(cache, fake_provider)
    embed(sdk, ["alpha", "beta"])

    body = {"model": MODEL, "input": ["alpha", "beta"], "encoding_format": "float"}
    await cache.delete_request(fake_provider.openai_base_url + EMBEDDINGS, body, {"authorization": "Bearer sk-alice"})
    raw, _ = embed(sdk, ["beta"])

    assert raw.headers["x-cache"] == "MISS"


def test_google_genai_embed_content_of_a_list_is_served_item_by_item(fake_provider: Any) -> None:
    client = sync_client(Cache(), fake_provider)
    client.models.embed_content(model="text-embedding-004", contents=["alpha", "beta"])

    answer = client.models.embed_content(model="text-embedding-004", contents=["beta", "gamma"])

    assert [e.values for e in answer.embeddings or []] == [embedding_vector("beta"), embedding_vector("gamma")]
    sent = [[item["content"]["parts"][0]["text"] for item in r.json["requests"]] for r in fake_provider.requests]
    assert sent == [["alpha", "beta"], ["gamma"]]


async def rewrite_alpha(store: MemoryStore, **changes: Any) -> None:
    """Rewrite the stored item of "alpha" with `changes` to its entry's fields, under its own key."""
    for key in list(store._data):
        entry = unpack(await store.get(key) or b"")
        if orjson.loads(entry.body)["data"][0]["embedding"] == embedding_vector("alpha"):
            await store.set(key, pack(dataclasses.replace(entry, **changes)), None)


@pytest.mark.parametrize("body", [b"\xff\x00", b"[]", b"{}", b'{"data": 5}'])
async def test_an_item_the_list_cannot_be_made_of_is_a_missing_item(fake_provider: Any, body: bytes) -> None:
    """A stored item whose body no list answer can be made of (a corrupt entry, or another schema's,
    under the item's key) is an invalid entry, as a single answer no stream can be rendered from is:
    the item goes upstream and is stored again. Before, putting the list together raised into every
    caller whose list held that item, and nothing replaced it."""
    store = MemoryStore()
    cache = Cache(store=store)
    sdk = client(cache, fake_provider)
    embed(sdk, ["alpha", "beta"])
    await rewrite_alpha(store, body=body)

    raw, answer = embed(sdk, ["alpha", "beta"])
    again, _ = embed(sdk, ["beta", "alpha"])

    assert items(raw) == ("PARTIAL", "1", "1") and sent_inputs(fake_provider) == [["alpha", "beta"], ["alpha"]]
    assert [d.embedding for d in answer.data] == [embedding_vector("alpha"), embedding_vector("beta")]
    assert cache.stats.invalid_entries == 1
    assert items(again) == ("HIT", "2", "0")  # the item was stored again


@pytest.mark.parametrize("origin", [("set-cookie", "session=stolen"), ("content-length", "0"), ("x-cache", "MISS")])
async def test_an_item_replaying_a_header_its_family_never_stores_is_a_missing_item(
    fake_provider: Any, origin: tuple[str, str]
) -> None:
    """A stored item whose origin names a header no answer of its family stores (a hostile writer of a
    shared store: a cookie, a length that reframes the list) is an invalid entry: the item goes
    upstream, and the list answer never carries the header."""
    store = MemoryStore()
    cache = Cache(store=store)
    sdk = client(cache, fake_provider)
    embed(sdk, ["alpha", "beta"])
    await rewrite_alpha(store, origin=(origin,))

    raw, answer = embed(sdk, ["alpha", "beta"])

    assert items(raw) == ("PARTIAL", "1", "1") and sent_inputs(fake_provider) == [["alpha", "beta"], ["alpha"]]
    assert [d.embedding for d in answer.data] == [embedding_vector("alpha"), embedding_vector("beta")]
    assert raw.headers.get(origin[0]) != origin[1] and cache.stats.invalid_entries == 1


async def stored_items(store: MemoryStore) -> dict[str, Any]:
    """Each stored item's entry, by the text whose embedding it holds ("alpha" or "beta")."""
    entries = [unpack(await store.get(key) or b"") for key in list(store._data)]
    text = {tuple(embedding_vector(t)): t for t in ("alpha", "beta", "gamma")}
    return {text[tuple(orjson.loads(e.body)["data"][0]["embedding"])]: e for e in entries}


async def test_an_item_stored_under_another_items_key_is_never_served(fake_provider: Any) -> None:
    """An entry is served only under the key it was written for: a store that hands back another
    item's entry (a corrupted index, a key collision) has that item go upstream, never the other
    text's vector."""
    store = MemoryStore()
    sdk = client(Cache(store=store), fake_provider)
    embed(sdk, ["alpha", "beta"])
    found = await stored_items(store)
    await store.set(found["beta"].fingerprint, pack(found["alpha"]), None)  # beta's key, alpha's entry

    raw, answer = embed(sdk, ["beta", "alpha"])

    assert items(raw) == ("PARTIAL", "1", "1") and sent_inputs(fake_provider)[-1] == ["beta"]  # alpha still served
    assert [d.embedding for d in answer.data] == [embedding_vector("beta"), embedding_vector("alpha")]


async def test_an_invalid_item_is_logged_by_the_end_of_its_key_and_why(
    fake_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    sdk = client(Cache(store=store), fake_provider)
    embed(sdk, ["alpha"])
    [key] = list(store._data)
    await store.set(key, b"not an entry", None)
    with caplog.at_level("WARNING", logger="llm_cache.middleware"):
        embed(sdk, ["alpha", "beta"])
    [warning] = [r.getMessage() for r in caplog.records if "invalid" in r.getMessage()]
    prefix = f"discarding invalid cache entry {key[-16:]}: "
    assert warning.startswith(prefix) and warning[len(prefix) :]  # then why


async def test_a_list_answer_is_as_old_as_its_oldest_item_and_never_younger_than_now(fake_provider: Any) -> None:
    """`age` of a list put together from the store is its oldest item's; an item written by a pod
    whose clock runs ahead makes no negative age."""
    store = MemoryStore()
    sdk = client(Cache(store=store), fake_provider)
    embed(sdk, ["alpha", "beta"])
    found = await stored_items(store)
    now = found["alpha"].created_at
    for text, created_at in (("alpha", now - 100), ("beta", now + 30)):
        await store.set(found[text].fingerprint, pack(dataclasses.replace(found[text], created_at=created_at)), None)

    old, _ = embed(sdk, ["alpha", "beta"])
    ahead, _ = embed(sdk, ["beta"])

    assert items(old)[0] == "HIT" and 100 <= int(old.headers["age"]) < 160
    assert (items(ahead)[0], ahead.headers["age"]) == ("HIT", "0")


async def test_an_item_of_exactly_max_response_bytes_is_stored_and_one_over_is_not(fake_provider: Any) -> None:
    store = MemoryStore()
    embed(client(Cache(store=store), fake_provider), ["alpha"])
    size = len((await stored_items(store))["alpha"].body)

    at_limit = client(Cache(max_response_bytes=size), fake_provider)
    over_limit = client(Cache(max_response_bytes=size - 1), fake_provider)
    embed(at_limit, ["alpha"])
    embed(over_limit, ["alpha"])

    assert items(embed(at_limit, ["alpha"])[0])[0] == "HIT"
    assert items(embed(over_limit, ["alpha"])[0])[0] == "MISS"


def test_a_store_that_fails_is_a_miss_of_every_item(fake_provider: Any) -> None:
    """Fail open: a list whose store cannot be read goes upstream whole, and each failure is counted."""
    cache = Cache(store=DeadStore())
    raw, answer = embed(client(cache, fake_provider), ["alpha", "beta"])

    assert items(raw) == ("MISS", "0", "2")
    assert [d.embedding for d in answer.data] == [embedding_vector("alpha"), embedding_vector("beta")]
    assert cache.stats.store_errors == 3  # the read, and each item's write


def test_a_list_answered_from_the_store_is_one_finished_span(fake_provider: Any) -> None:
    """A list put together from the store is traced as one call, a hit, like any other hit."""
    spans = Spans()
    sdk = client(Cache(telemetry=spans.telemetry), fake_provider)
    embed(sdk, ["alpha", "beta"])
    embed(sdk, ["beta", "alpha"])
    finished = spans.exporter.get_finished_spans()
    spans.provider.shutdown()

    assert [(span.attributes or {})["llm_cache.result"] for span in finished] == ["miss", "hit"]


def test_a_list_request_stores_at_most_max_stored_items_and_still_answers_every_item(fake_provider: Any) -> None:
    """One request writes at most `max_stored_items` entries (the first items), so no caller fills the
    store with 2,048 a request; the rest are answered and counted as not stored (`item_cap`)."""
    cache = Cache(max_stored_items=3)
    sdk = client(cache, fake_provider)
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]

    raw, answer = embed(sdk, texts)

    assert items(raw) == ("MISS", "0", "5")
    assert [d.embedding for d in answer.data] == [embedding_vector(t) for t in texts]
    assert (cache.stats.stored, cache.stats.not_stored) == (3, 2)
    assert cache.telemetry.snapshot()["llm_cache_not_stored"] == {("item_cap",): 2}
    raw, _ = embed(sdk, texts)
    assert items(raw) == ("PARTIAL", "3", "2") and sent_inputs(fake_provider)[-1] == ["delta", "epsilon"]


def test_by_default_a_list_request_stores_its_first_256_items(fake_provider: Any) -> None:
    cache = Cache()
    texts = [f"text {i}" for i in range(300)]
    raw, answer = embed(client(cache, fake_provider), texts)

    assert len(answer.data) == 300 and (cache.stats.stored, cache.stats.not_stored) == (256, 44)
    assert items(embed(client(cache, fake_provider), texts[:256])[0]) == ("HIT", "256", "0")
