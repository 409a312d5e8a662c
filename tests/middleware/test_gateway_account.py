"""A gateway holding the owner's provider key tells its callers nothing of the owner's account
(docs/security.md, "Gateway"): no header naming the billed organisation or project on a miss, and no
upstream refusal of the owner's key (which names it, masked) relayed as it came.

Every test runs the gateway on a real uvicorn server in front of the fake provider, called by the real SDKs.
"""

# ruff: noqa: F811 (the gateway fixtures are imported from test_gateway)
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from tests.middleware.test_gateway import MODEL, Gateway, gateway, gateway_factory  # noqa: F401
from tests.support.fake_provider_fixtures import RunningFakeProvider

OWNER_OPENAI_KEY = "sk-owner-openai-secret"
OWNER_ANTHROPIC_KEY = "sk-ant-owner-secret"
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
