"""Who can be served what by meaning: the semantic context and bounded mode's partitions follow every
way the exact cache keeps callers apart, hooks included.

Real parts: the openai SDK through the caching transport to the fake provider; `WordsEmbedder`
vectors (two prompts of six words sharing five are at 5/6), so matching is plain arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from llm_cache.middleware import Cache, LookupView
from llm_cache.middleware.semantic import ErrorBound, ExactJudge, InProcessIndex, SemanticCache
from llm_cache.middleware.semantic.index import Neighbour
from tests.middleware.semantic.test_cache import Agreeing, ask, client_for, exported, pair, verdicts_recorded
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


class LyingIndex(InProcessIndex):
    """An index (a custom one, or a hostile or broken vector server) that reports every row it finds at
    `similarity`, however far it is."""

    def __init__(self, similarity: float) -> None:
        super().__init__()
        self.similarity = similarity

    async def search(self, context: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        found = await super().search(context, vector, k)
        return [Neighbour(row.key, row.text, self.similarity) for row in found]


@pytest.mark.parametrize("similarity", [math.inf, 1.5, math.nan, -math.inf], ids=str)
@pytest.mark.parametrize("bounded", [False, True], ids=["static", "bounded"])
async def test_a_similarity_that_is_no_cosine_never_serves_an_answer(
    fake_provider: RunningFakeProvider, similarity: float, bounded: bool
) -> None:
    # Bounded: a bound so lenient that any candidate in the safest risk bin is served once shown.
    bound = ErrorBound(0.25, error_rate_of="hits", confidence=0.5, min_verify=0.0, seed=1) if bounded else None
    semantic = SemanticCache(WordsEmbedder(), LyingIndex(similarity), threshold=0.5, bound=bound, judge=Agreeing())
    cache = Cache(semantic=semantic)
    client = client_for(cache, fake_provider)
    for n in range(8):  # in bounded mode, verdicts that would show the bound if they counted
        await ask(client, pair(n)[0])
        await ask(client, pair(n + 20)[0])
    await cache.close()

    assert cache.stats.semantic_hits == 0
    assert cache.stats.semantic_verifications == 0


async def test_a_caller_cannot_multiply_the_verification_cap_by_naming_namespaces(
    fake_provider: RunningFakeProvider,
) -> None:
    # The judge's calls are the operator's (an LLM judge spends its key): the cap per minute is per
    # caller, however many namespaces (chosen freely by the caller, each a partition) it spreads over.
    bound = ErrorBound(0.02, verifications_per_minute=2, seed=1, clock=lambda: 0.0)
    cache = Cache(semantic=SemanticCache(WordsEmbedder(), InProcessIndex(), bound=bound, judge=Agreeing()))
    mallory, alice = client_for(cache, fake_provider, "sk-mallory"), client_for(cache, fake_provider, "sk-alice")
    for n in range(5):
        for question in pair(n):  # the paraphrase is a candidate of a new partition: verified, if the cap allows
            await ask(mallory, question, extra_headers={"x-cache-namespace": f"ns{n}"})
    spent = cache.stats.semantic_verifications
    for question in pair(9):
        await ask(alice, question)
    await cache.close()

    assert spent == 2
    assert cache.stats.semantic_verifications == 3  # Alice's own cap is untouched


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


def called(arguments: str) -> list[Any]:
    """An OpenAI chat stream whose answer is only a call of `get_weather` with `arguments` (no text)."""
    opening = {"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    call = {"index": 0, "id": "call_r", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    delta = {"role": "assistant", "content": None, "tool_calls": [call]}
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    return [
        {**opening, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**opening, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**opening, "choices": [], "usage": usage},
        "[DONE]",
    ]


async def test_two_answers_calling_a_tool_with_different_arguments_are_never_judged_the_same(
    fake_provider: RunningFakeProvider,
) -> None:
    # Both answers hold no text, only a tool call: judged on their texts ("" and ""), they agreed.
    bound = ErrorBound(0.02, seed=1)
    cache = Cache(semantic=SemanticCache(WordsEmbedder(), InProcessIndex(), bound=bound, judge=ExactJudge()))
    client = client_for(cache, fake_provider)
    first, paraphrase = pair(0)
    stored = await ask(client, f"weather {first}", tools=[WEATHER_TOOL])  # the fake calls get_weather (Paris)
    assert stored.parse().choices[0].message.tool_calls

    fake_provider.stream_next(called('{"location": "Rome, Italy", "unit": "celsius"}'))
    verifying = await ask(client, f"weather {paraphrase}", tools=[WEATHER_TOOL], stream=True)
    [_ async for _ in verifying.parse()]
    await verdicts_recorded(cache, 1)
    await cache.close()

    outcomes = {dict(labels)["outcome"]: n for labels, n in exported(cache, "llm_cache_semantic_verifications").items()}
    assert outcomes == {"disagreed": 1}
