"""The demo's simulated provider reports prompt-cache reads the way OpenAI's automatic caching does."""

from __future__ import annotations

from typing import Any

import httpx2

from llm_cache.middleware.simulator import SimulatedProvider

SYSTEM = {"role": "system", "content": "You are the support assistant of an online shop. Answer briefly."}


async def usage_of(client: httpx2.AsyncClient, model: str, *messages: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json={"model": model, "messages": list(messages)})
    assert response.status_code == 200
    return dict(response.json()["usage"])


async def test_a_prompt_prefix_seen_before_by_the_same_model_is_reported_as_cached_tokens() -> None:
    simulator = SimulatedProvider(min_latency=0, max_latency=0)
    transport = httpx2.ASGITransport(app=simulator.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://simulator.test") as client:
        first = await usage_of(client, "gpt-4o-mini", SYSTEM, {"role": "user", "content": "Opening hours?"})
        again = await usage_of(client, "gpt-4o-mini", SYSTEM, {"role": "user", "content": "Refunds?"})
        other_model = await usage_of(client, "gpt-4o", SYSTEM, {"role": "user", "content": "Refunds?"})
        no_prefix = await usage_of(client, "gpt-4o-mini", {"role": "user", "content": "Refunds?"})

    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    assert again["prompt_tokens_details"]["cached_tokens"] == (len(SYSTEM["content"]) + 3) // 4
    assert again["prompt_tokens_details"]["cached_tokens"] < again["prompt_tokens"]
    assert other_model["prompt_tokens_details"] == {"cached_tokens": 0}
    assert no_prefix["prompt_tokens_details"] == {"cached_tokens": 0}
