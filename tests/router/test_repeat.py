"""What the router may send twice. A generation call (a chat completion, a message, an embedding)
creates nothing that outlives its answer, so a failed attempt is retried and failed over. A call that
creates something on the provider (a fine-tuning job, a background response, an assistant) is sent
again only when its failure proves the provider never acted on it (the connection was refused, a 429):
after a 5xx or a timeout it may have, and a second one would be a second job, billed twice.

Real openai SDK clients through RouterTransport to the router's fake providers."""

from __future__ import annotations

import socket
from typing import Any

import httpx
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


class FailsFirst(httpx2.BaseTransport):
    """A custom inner transport: its first attempt raises `error`, the others reach the fake providers."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.raised, self.real = error, 0, httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if not self.raised:
            self.raised += 1
            raise self.error
        return self.real.handle_request(request)

    def close(self) -> None:
        self.real.close()


def create_job(router: Any, inner: FailsFirst) -> Any:
    http = httpx2.Client(transport=RouterTransport(router, inner=inner))
    sdk = openai.OpenAI(api_key="caller-key", base_url="http://llm.invalid/v1", max_retries=0, http_client=http)
    try:
        return sdk.fine_tuning.jobs.create(model="gpt", training_file="file-abc")
    finally:
        http.close()


MAYBE_ACTED_ON = {
    "connection reset": ConnectionResetError(104, "Connection reset by peer"),
    "broken pipe": BrokenPipeError(32, "Broken pipe"),
    "connection aborted": ConnectionAbortedError(103, "Software caused connection abort"),
    "a custom transport's OSError": OSError("the custom transport lost the request"),
    "a builtin timeout": TimeoutError("timed out"),
    "httpx2 read error": httpx2.ReadError("reset while reading"),
    "httpx2 write error": httpx2.WriteError("reset while writing"),
    "httpx2 read timeout": httpx2.ReadTimeout("no answer"),
    "httpx2 protocol error": httpx2.RemoteProtocolError("peer closed connection"),
    "httpx read error": httpx.ReadError("reset while reading"),
}
"""Failures raised while the request was being sent or answered: the provider may have acted on it."""
NEVER_SENT = {
    "httpx2 connect error": httpx2.ConnectError("refused"),
    "httpx connect error": httpx.ConnectError("refused"),
    "httpx2 connect timeout": httpx2.ConnectTimeout("no connection"),
    "httpx2 pool timeout": httpx2.PoolTimeout("no free connection"),
    "connection refused": ConnectionRefusedError(111, "Connection refused"),
    "DNS failure": socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
}
"""Failures known to come before the request left: no connection, so nothing was sent."""


@pytest.mark.parametrize("error", MAYBE_ACTED_ON.values(), ids=MAYBE_ACTED_ON.keys())
def test_a_call_that_creates_something_is_not_sent_again_after_a_transport_failure_it_may_have_acted_on(
    fakes: Any, make_router: Any, error: BaseException
) -> None:
    inner = FailsFirst(error)
    with pytest.raises((openai.APIError, OSError)):  # (the SDK passes on what is no httpx error)
        create_job(make_router(config(fakes)), inner)
    assert inner.raised == 1 and sent(fakes) == 0


@pytest.mark.parametrize("error", NEVER_SENT.values(), ids=NEVER_SENT.keys())
def test_a_call_that_creates_something_is_sent_again_after_a_failure_before_it_was_sent(
    fakes: Any, make_router: Any, error: BaseException
) -> None:
    inner = FailsFirst(error)
    create_job(make_router(config(fakes)), inner)
    assert inner.raised == 1 and sent(fakes) == 1
