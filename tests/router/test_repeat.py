"""What the router may send twice. A generation call (a chat completion, a message, an embedding)
creates nothing that outlives its answer, so a failed attempt is retried and failed over. A call that
creates something on the provider (a fine-tuning job, a background response, an assistant) is sent
again only when its failure proves the provider never acted on it (the connection was refused, a 429):
after a 5xx or a timeout it may have, and a second one would be a second job, billed twice.

Real openai SDK clients through RouterTransport to the router's fake providers."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from llm_cache.router import RouterTransport

from .conftest import dep


def config(fakes: Any) -> dict[str, Any]:
    deployments = [dep(fakes["a"], model="gpt-4o-mini", order=0), dep(fakes["b"], model="gpt-4o-mini", order=1)]
    return {
        "groups": {"gpt": {"deployments": deployments}, "gpt-backup": {"deployments": [dep(fakes["c"])]}},
        "settings": {"backoff_initial": 0, "num_retries": 2, "fallbacks": {"gpt": ["gpt-backup"]}},
    }


def client(router: Any) -> openai.OpenAI:
    http = httpx2.Client(transport=RouterTransport(router))
    return openai.OpenAI(api_key="caller-key", base_url="http://llm.invalid/v1", max_retries=0, http_client=http)


def sent(fakes: Any) -> int:
    return sum(fakes[name].count for name in ("a", "b", "c"))


CREATIONS = {
    "fine-tuning job": lambda c: c.fine_tuning.jobs.create(model="gpt", training_file="file-abc"),
    "background response": lambda c: c.responses.create(model="gpt", input="hi", background=True),
    "run of a new thread": lambda c: c.post(
        "/threads/runs", body={"model": "gpt", "assistant_id": "asst_1"}, cast_to=object
    ),
    "message added to a thread (its path ends as a generation's, /messages)": lambda c: c.post(
        "/threads/thread_1/messages", body={"model": "gpt", "role": "user", "content": "hi"}, cast_to=object
    ),
}


@pytest.mark.parametrize("create", CREATIONS.values(), ids=CREATIONS.keys())
def test_a_call_that_creates_something_is_not_sent_again_after_a_failure_it_may_have_acted_on(
    fakes: Any, make_router: Any, create: Any
) -> None:
    fakes["a"].fail(("status", 500, None, None))
    with pytest.raises(openai.InternalServerError):
        create(client(make_router(config(fakes))))
    assert sent(fakes) == 1


@pytest.mark.parametrize("create", CREATIONS.values(), ids=CREATIONS.keys())
def test_a_call_that_creates_something_is_sent_again_after_a_refusal_it_never_acted_on(
    fakes: Any, make_router: Any, create: Any
) -> None:
    fakes["a"].fail(("status", 429, None, None))
    create(client(make_router(config(fakes))))
    assert (fakes["a"].count, fakes["b"].count) == (1, 1)


def test_a_generation_call_is_still_retried_and_failed_over_after_a_5xx(fakes: Any, make_router: Any) -> None:
    fakes["a"].fail(*[("status", 500, None, None)] * 3)
    fakes["b"].fail(*[("status", 500, None, None)] * 3)
    raw = client(make_router(config(fakes))).chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-router-fallback-from"] == "gpt"
    assert sent(fakes) == 4
