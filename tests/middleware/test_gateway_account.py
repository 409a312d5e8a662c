"""A gateway holding the owner's provider key tells its callers nothing of the owner's account
(docs/security.md, "Gateway"): no header naming the billed organisation or project on a miss, and no
upstream refusal of the owner's key (which names it, masked) relayed as it came.

Every test runs the gateway on a real uvicorn server in front of the fake provider, called by the real SDKs.
"""

# ruff: noqa: F811 (the gateway fixtures are imported from test_gateway)
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.middleware.test_gateway import MODEL, Gateway, gateway, gateway_factory  # noqa: F401
from tests.support.fake_provider_fixtures import RunningFakeProvider

OWNER_OPENAI_KEY = "sk-owner-openai-secret"
OWNER_ANTHROPIC_KEY = "sk-ant-owner-secret"
OWNER_GEMINI_KEY = "AIza-owner-gemini-secret"
ACCOUNT = ("openai-organization", "openai-project", "anthropic-organization-id")
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture
def owners_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:
    """A gateway that replaces every caller's credential with the owner's keys."""
    return gateway_factory(
        {
            "upstreams": {
                "openai": {"base_url": fake_provider.openai_base_url, "api_key": OWNER_OPENAI_KEY},
                "anthropic": {"base_url": fake_provider.anthropic_base_url, "api_key": OWNER_ANTHROPIC_KEY},
                "gemini": {"base_url": fake_provider.url, "api_key": OWNER_GEMINI_KEY},
            }
        }
    )


def answers(gateway: Gateway, content: str) -> list[httpx2.Headers]:
    """The headers of an OpenAI JSON and stream miss and an Anthropic JSON and stream miss."""
    openai_client = gateway.openai(api_key="sk-caller")
    claude = gateway.anthropic(api_key="sk-ant-caller")
    found = []
    for stream in (False, True):
        messages: Any = [{"role": "user", "content": f"{content} (streamed: {stream})"}]
        raw = openai_client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, stream=stream)
        raw.parse()
        found.append(raw.headers)
        with claude.messages.with_streaming_response.create(
            model=CLAUDE, max_tokens=20, messages=messages, stream=stream
        ) as response:
            response.read()
            found.append(response.headers)
    assert [headers["x-cache"] for headers in found] == ["MISS"] * 4
    return found


def test_a_miss_on_the_owners_key_names_no_account_but_keeps_the_rate_limits(owners_gateway: Gateway) -> None:
    """OpenAI and Anthropic name the organisation and project billed for a call; on the owner's key that
    is the owner's account, which a caller of the gateway has no business knowing. The rate limits stay:
    SDKs back off on them (they tell a caller how much of the owner's quota is left)."""
    for headers in answers(owners_gateway, "whose account is this?"):
        assert not [name for name in ACCOUNT if name in headers]
        assert any(name.startswith(("x-ratelimit-", "anthropic-ratelimit-")) for name in headers)


def test_a_miss_on_the_callers_own_key_names_its_account(gateway: Gateway) -> None:
    """The caller brought its own key: the account is its own, and every header is relayed."""
    openai_json, claude_json, openai_stream, claude_stream = answers(gateway, "whose account is this?")
    for headers in (openai_json, openai_stream):
        assert headers["openai-organization"] and headers["openai-project"]
    for headers in (claude_json, claude_stream):
        assert headers["anthropic-organization-id"]


def test_the_owners_key_refused_upstream_is_a_502_naming_the_gateway_not_the_key(
    owners_gateway: Gateway, fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenAI answers a wrong or revoked key with a 401 naming it, masked (`sk-own***cret`); the gateway
    relayed it, so every caller learnt a hint of the owner's key, and its SDK said the caller's own key
    was wrong. The caller's key is not at fault: the answer is a 502 of the gateway's own, in the
    family's error shape, which the SDKs do not retry (`x-should-retry: false`); the upstream's body
    goes to the operator's log, at WARNING, with the key masked."""
    fake_provider.revoke_key(OWNER_OPENAI_KEY)
    fake_provider.revoke_key(OWNER_ANTHROPIC_KEY)
    openai_client = openai.OpenAI(base_url=f"{owners_gateway.url}/v1", api_key="sk-caller", max_retries=2)
    claude = anthropic.Anthropic(base_url=owners_gateway.url, api_key="sk-ant-caller", max_retries=2)
    messages: Any = [{"role": "user", "content": "is the owner's key good?"}]
    failures: list[Exception] = []
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware.gateway"):
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as raised:
                openai_client.chat.completions.create(model=MODEL, messages=messages, stream=stream)
            failures.append(raised.value)
            with pytest.raises(anthropic.APIStatusError) as refused:
                claude.messages.create(model=CLAUDE, max_tokens=20, messages=messages, stream=stream)
            failures.append(refused.value)
    for failure in failures:
        assert getattr(failure, "status_code", None) == 502
        assert "gateway's upstream credential" in str(failure)
        assert "Incorrect API key" not in str(failure) and "x-api-key" not in str(failure)
    assert fake_provider.count() == 4  # one call each: a refused key is not retried
    logged = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    # one WARNING a family (the repeat within the interval is counted and logged at DEBUG: LogLimit)
    assert len(logged) == 2 and any("Incorrect API key provided" in line for line in logged)
    assert not [line for line in logged if OWNER_OPENAI_KEY in line or OWNER_ANTHROPIC_KEY in line]
    metrics = httpx2.get(f"{owners_gateway.url}/metrics", timeout=10).text
    assert 'llm_cache_upstream_credential_refused_total{family="openai"} 2.0' in metrics
    assert owners_gateway.cache.stats.stored == 0


def test_a_callers_own_key_refused_upstream_is_relayed_as_it_came(
    gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """The caller's own key: the refusal is about it, and it reads the provider's own words."""
    fake_provider.revoke_key("sk-caller")
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided"):
        gateway.openai(api_key="sk-caller").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "is my key good?"}]
        )


def gemini_client(gateway: Gateway, api_key: str) -> genai.Client:
    """The google-genai SDK, pointed at the gateway."""
    return genai.Client(
        api_key=api_key, http_options=genai_types.HttpOptions(base_url=gateway.url, api_version="v1beta")
    )


def test_the_owners_gemini_key_refused_with_a_400_is_a_502_naming_the_gateway(
    owners_gateway: Gateway, fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Gemini refuses a wrong, revoked or expired key with a 400 `INVALID_ARGUMENT` (its `ErrorInfo`
    reason `API_KEY_INVALID`), not a 401: the gateway relayed it, and the google-genai SDK told the caller
    "API key not valid", about a key the caller never sent. Gemini's provider module says this answer
    refuses the key; the gateway answers it as it answers OpenAI's 401 (a 502 of its own, Gemini's error
    shape, the upstream's body in the operator's log)."""
    fake_provider.revoke_key(OWNER_GEMINI_KEY)
    client = gemini_client(owners_gateway, "gm-caller")
    failures: list[genai_errors.APIError] = []
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware.gateway"):
        with pytest.raises(genai_errors.ServerError) as raised:
            client.models.generate_content(model="gemini-2.5-flash", contents="is the owner's key good?")
        failures.append(raised.value)
        with pytest.raises(genai_errors.ServerError) as streamed:
            for _ in client.models.generate_content_stream(model="gemini-2.5-flash", contents="and streamed?"):
                pass
        failures.append(streamed.value)
    for failure in failures:
        assert failure.code == 502
        assert "gateway's upstream credential for gemini" in str(failure.message)
        assert "API key not valid" not in str(failure)
    assert fake_provider.count() == 2
    logged = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert len(logged) == 1 and all("API_KEY_INVALID" in line for line in logged)  # the repeat: DEBUG
    metrics = httpx2.get(f"{owners_gateway.url}/metrics", timeout=10).text
    assert 'llm_cache_upstream_credential_refused_total{family="gemini"} 2.0' in metrics


def test_a_callers_own_gemini_key_refused_is_relayed_as_it_came(
    gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """The caller's own key: Gemini's 400 is about it, and it reads Google's own words."""
    fake_provider.revoke_key("gm-caller")
    client = gemini_client(gateway, "gm-caller")  # (held: a Client collected closes its HTTP client)
    with pytest.raises(genai_errors.ClientError, match="API key not valid") as raised:
        client.models.generate_content(model="gemini-2.5-flash", contents="mine?")
    assert raised.value.code == 400 and raised.value.status == "INVALID_ARGUMENT"
    assert 'family="gemini"} ' not in httpx2.get(f"{gateway.url}/metrics", timeout=10).text


def test_a_400_on_the_owners_gemini_key_that_refuses_the_request_reaches_the_caller_whole(
    owners_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """The gateway reads a Gemini 400's first bytes to tell a refused key from a refused request; a
    request's 400 (here one longer than those first bytes) still reaches the caller byte for byte."""
    said = "Invalid JSON payload received. " + "Unknown name. " * 600
    error = {"code": 400, "message": said, "status": "INVALID_ARGUMENT", "details": [{"reason": "BAD_REQUEST"}]}
    fake_provider.fail_next(status=400, body={"error": error})
    client = gemini_client(owners_gateway, "gm-caller")
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(model="gemini-2.5-flash", contents="?")
    assert raised.value.code == 400 and raised.value.message == said
