"""A deployment that answers with a redirect never gets the caller's credentials sent elsewhere.

LLM APIs do not redirect a call: a 3xx from a deployment (a hostile or misconfigured upstream, an
`api_base` that moved) is no answer. The router never follows it, never hands its `location` to a
client that would (httpx strips `Authorization` on a redirect to another host, not `x-api-key`,
`api-key` or `x-goog-api-key`), and tries another deployment as after any failure of the deployment.
The real anthropic SDK, in a client that follows redirects, goes through ``RouterTransport``.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.router import RouterTransport

HI = [{"role": "user", "content": "hi"}]


def claude(fakes: Any, *names: str) -> dict[str, Any]:
    """A `claude` group on keyless Anthropic deployments (the caller's key is passed on)."""
    deployments = [{"id": n, "family": "anthropic", "model": f"real-{n}", "api_base": fakes[n].url} for n in names]
    return {"groups": {"claude": {"deployments": deployments}}, "settings": {"num_retries": 1}}


def sdk(router: Any) -> anthropic.Anthropic:
    client = httpx2.Client(transport=RouterTransport(router), follow_redirects=True)
    return anthropic.Anthropic(api_key="sk-ant-caller", max_retries=0, http_client=client)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_from_a_deployment_is_never_followed_with_the_callers_key(
    fakes, fake_provider, make_router, status
) -> None:
    elsewhere = f"{fake_provider.url}/v1/messages"
    fakes["a"].fail(("status", status, {"location": elsewhere}, None))
    fakes["claude"].fail(("status", status, {"location": elsewhere}, None))
    router = make_router(claude(fakes, "a", "claude"))
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk(router).messages.create(model="claude", max_tokens=8, messages=HI)
    assert fake_provider.count() == 0  # nothing, least of all the caller's key, went to the other host
    assert "location" not in failed.value.response.headers
    assert fakes["a"].count + fakes["claude"].count == 2  # the retry went to the other deployment


def test_a_redirecting_deployment_is_failed_over_to_a_healthy_one(fakes, fake_provider, make_router) -> None:
    fakes["a"].fail(("status", 302, {"location": f"{fake_provider.url}/v1/messages"}, None))
    router = make_router(claude(fakes, "a", "claude"))
    router.rng.seed(1)
    answers = [
        sdk(router).messages.with_raw_response.create(model="claude", max_tokens=8, messages=HI) for _ in range(2)
    ]
    assert all(a.status_code == 200 for a in answers)
    assert fake_provider.count() == 0


class ClosingCounted(httpx2.AsyncBaseTransport):
    """The real HTTP transport, counting the answers it opened and those closed."""

    def __init__(self) -> None:
        self.real = httpx2.AsyncHTTPTransport()
        self.opened = self.closed = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.real.handle_async_request(request)
        self.opened += 1
        original = response.stream
        counter = self

        class Counted(httpx2.AsyncByteStream):
            async def __aiter__(self) -> Any:
                async for chunk in original:  # type: ignore[union-attr]
                    yield chunk

            async def aclose(self) -> None:
                counter.closed += 1
                await original.aclose()  # type: ignore[union-attr]

        response.stream = Counted()
        return response

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_redirect_answering_a_translated_or_streamed_call_is_a_failure_read_whole(
    fakes, fake_provider, make_router, stream
) -> None:
    """An openai SDK caller served by the Anthropic deployments (translated), streamed or not."""
    elsewhere = f"{fake_provider.url}/v1/messages"
    for name in ("a", "claude"):
        fakes[name].fail(("status", 302, {"location": elsewhere}, None))
    config = claude(fakes, "a", "claude")
    config["groups"]["gpt"] = config["groups"].pop("claude")
    inner = ClosingCounted()
    transport = RouterTransport(make_router(config), inner=inner)
    client = httpx2.AsyncClient(transport=transport, follow_redirects=True)
    c = openai.AsyncOpenAI(api_key="sk-caller", max_retries=0, http_client=client)
    with pytest.raises(openai.APIStatusError) as failed:
        await c.chat.completions.create(model="gpt", messages=HI, stream=stream)
    assert failed.value.status_code == 302 and "location" not in failed.value.response.headers
    assert fake_provider.count() == 0 and fakes["a"].count + fakes["claude"].count == 2
    assert all(st.in_flight == 0 for st in transport.router.states["gpt"])
    assert inner.opened == 2 and inner.closed == 2  # the first redirect's connection was given back too
    await inner.aclose()
