"""Who can be served what by meaning: the semantic context and bounded mode's partitions follow every
way the exact cache keeps callers apart, hooks included.

Real parts: the openai SDK through the caching transport to the fake provider; `WordsEmbedder`
vectors (two prompts of six words sharing five are at 5/6), so matching is plain arithmetic.
"""

from __future__ import annotations

from typing import Any

from llm_cache.middleware import Cache, LookupView
from llm_cache.middleware.semantic import InProcessIndex, SemanticCache
from tests.middleware.semantic.test_cache import ask, client_for, pair
from tests.support.embedders import WordsEmbedder
from tests.support.fake_provider_fixtures import RunningFakeProvider


def tenant_namespace(view: LookupView) -> None:
    """The operator's isolation: each caller's answers in a namespace of its own."""
    view.namespace = view.request.headers.get("x-tenant", "nobody")


def tenant_in_key(view: LookupView) -> None:
    """The same isolation through the key's body."""
    view.key_body = {**view.key_body, "tenant": view.request.headers.get("x-tenant", "nobody")}


def words_cache(**options: Any) -> Cache:
    return Cache(semantic=SemanticCache(WordsEmbedder(), InProcessIndex(), threshold=0.5), **options)


async def test_a_tenant_a_before_lookup_hook_keeps_apart_is_never_served_another_s_answer_by_meaning(
    fake_provider: RunningFakeProvider,
) -> None:
    for hook in (tenant_namespace, tenant_in_key):
        cache = words_cache(hooks={"before_lookup": [hook]})
        client = client_for(cache, fake_provider)
        first, paraphrase = pair(0)
        await ask(client, first, extra_headers={"x-tenant": "acme"})

        other = await ask(client, paraphrase, extra_headers={"x-tenant": "globex"})
        same = await ask(client, paraphrase, extra_headers={"x-tenant": "acme"})

        assert (other.headers["x-cache"], same.headers["x-cache"]) == ("MISS", "HIT"), hook.__name__


async def test_an_answer_a_before_lookup_hook_put_in_a_namespace_carries_that_namespace_s_tag(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = words_cache(hooks={"before_lookup": [tenant_namespace]})
    client = client_for(cache, fake_provider)
    first, _ = pair(0)
    stored = await ask(client, first, extra_headers={"x-tenant": "acme"})

    assert await cache.invalidate(["namespace:default"]) == []
    assert await cache.invalidate(["namespace:acme"]) == [stored.headers["x-cache-key"]]
