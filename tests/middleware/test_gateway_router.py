"""The gateway with a router section: misses go through the router's deployments, hits never reach it.

A LiteLLM proxy file (`model_list` + `router_settings` + `litellm_settings.cache`) maps the public
model name `public-model` to two deployments on the fake provider; the real openai SDK drives it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import yaml

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import ConfigError, load_config, parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider_fixtures import RunningFakeProvider

PUBLIC = "public-model"
DEPLOYMENTS = {"gpt-4o-mini", "gpt-4o-mini-2024-07-18"}
MESSAGES = [{"role": "user", "content": "What are your opening hours?"}]


def litellm_file(tmp_path: Path, fake: RunningFakeProvider) -> Path:
    config = {
        "model_list": [
            {
                "model_name": PUBLIC,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": fake.openai_base_url,
                    "api_key": "sk-deployment",
                },
            }
            for model in sorted(DEPLOYMENTS)
        ],
        # backoff_initial is ours (accepted in router_settings): retry the sibling at once.
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2, "backoff_initial": 0},
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
    }
    path = tmp_path / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def gateway(tmp_path: Path, fake_provider: RunningFakeProvider) -> Iterator[openai.OpenAI]:
    config = load_config(litellm_file(tmp_path, fake_provider), env={})
    assert config.dialect == "litellm" and config.router is not None
    app = create_gateway(config)
    assert app.state.router is not None
    with BackgroundServer(app) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)


@pytest.fixture
def open_gateway(tmp_path: Path, fake_provider: RunningFakeProvider) -> Iterator[openai.OpenAI]:
    """The same gateway with every call forwarded (`upstreams.openai.allow: ['* /**']`)."""
    config = load_config(litellm_file(tmp_path, fake_provider), env={})
    opened = config.upstreams.openai.model_copy(update={"allow": ["* /**"]})
    config = config.model_copy(update={"upstreams": config.upstreams.model_copy(update={"openai": opened})})
    with BackgroundServer(create_gateway(config)) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)


def chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(model=PUBLIC, messages=MESSAGES)


def test_miss_goes_through_the_router_and_the_hit_never_reaches_it(
    gateway: openai.OpenAI, fake_provider: RunningFakeProvider
) -> None:
    first = chat(gateway)
    assert first.headers["x-cache"] == "MISS"
    assert fake_provider.count("/chat/completions") == 1
    sent = fake_provider.last
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] in DEPLOYMENTS  # the deployment's real model, prefix stripped
    assert sent.headers["authorization"] == "Bearer sk-deployment"  # the deployment's key, not the caller's
    assert first.headers["x-router-attempts"] == "1"

    second = chat(gateway)
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["x-cache-key"] == first.headers["x-cache-key"]  # keyed on the public name
    assert second.parse().model_dump() == first.parse().model_dump()
    assert fake_provider.count("/chat/completions") == 1  # the hit never reached the router


ACCOUNT = ("openai-organization", "openai-project", "anthropic-organization-id")


def test_a_miss_a_deployment_answered_on_its_own_key_names_no_account_but_keeps_the_rate_limits(
    gateway: openai.OpenAI,
) -> None:
    """A `model_list` deployment's `api_key` is the operator's, as `upstreams.<family>.api_key` is: the
    organisation and project its answers name are the operator's, which no caller of the gateway is
    told (docs/security.md, "Gateway"). They were relayed whenever the gateway's upstream had no key
    of its own, though the router had sent the deployment's."""
    for stream in (False, True):
        messages: Any = [{"role": "user", "content": f"Whose account is this? (streamed: {stream})"}]
        raw = gateway.chat.completions.with_raw_response.create(model=PUBLIC, messages=messages, stream=stream)
        raw.parse()
        assert raw.headers["x-cache"] == "MISS"
        assert not [name for name in ACCOUNT if name in raw.headers]
        assert any(name.startswith("x-ratelimit-") for name in raw.headers)


def test_a_deployments_own_key_refused_is_a_502_naming_the_gateway_not_the_key(
    gateway: openai.OpenAI, fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Both deployments' key revoked: the router fails over and gives up with the provider's 401, which
    names the key (masked). As for the upstream's own key, the caller gets the gateway's 502 and the
    operator the provider's words in the log, the key masked there too. (Both deployments then cool
    down: the router answers the next call itself.)"""
    fake_provider.revoke_key("sk-deployment")
    with (
        caplog.at_level(logging.WARNING, logger="llm_cache.middleware.gateway"),
        pytest.raises(openai.APIStatusError) as raised,
    ):
        gateway.chat.completions.create(model=PUBLIC, messages=MESSAGES)
    assert raised.value.status_code == 502
    assert "gateway's upstream credential" in str(raised.value)
    assert "Incorrect API key" not in str(raised.value)
    assert fake_provider.count("/chat/completions") == 2  # each deployment tried once
    said = [(r.name, r.getMessage()) for r in caplog.records if "refused" in r.getMessage()]
    logged = [line for name, line in said if name == "llm_cache.middleware.gateway"]
    assert len(logged) == 1 and "Incorrect API key provided" in logged[0] and "router deployment" in logged[0]
    assert len([line for name, line in said if name == "llm_cache.router"]) == 2  # each deployment, named
    assert not [line for _, line in said if "sk-deployment" in line]


def test_a_gemini_deployments_own_key_refused_for_an_openai_caller_is_the_gateways_502(
    tmp_path: Path, fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Google refuses a wrong key with a 400 `API_KEY_INVALID`; translated for an OpenAI caller it was a
    400 "API key not valid" the caller's SDK blamed on the caller's key. The router judges the Gemini
    answer by Gemini's rule before translating it: the caller gets the gateway's 502, the operator
    Google's words in the log."""
    deployment = {"model": "gemini/gemini-2.5-flash", "api_base": fake_provider.url, "api_key": "AIza-deployment"}
    path = tmp_path / "gemini.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": PUBLIC, "litellm_params": deployment}]}))
    fake_provider.revoke_key("AIza-deployment")
    with (
        BackgroundServer(create_gateway(load_config(path, env={}))) as server,
        caplog.at_level(logging.WARNING, logger="llm_cache.middleware.gateway"),
        pytest.raises(openai.APIStatusError) as raised,
    ):
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)
        client.chat.completions.create(model=PUBLIC, messages=MESSAGES)
    assert raised.value.status_code == 502 and "gateway's upstream credential" in str(raised.value)
    assert "API key not valid" not in str(raised.value)
    logged = [r.getMessage() for r in caplog.records if r.name == "llm_cache.middleware.gateway"]
    assert len(logged) == 1 and "API key not valid" in logged[0] and "(400)" in logged[0]
    assert "AIza-deployment" not in logged[0]


def test_a_failing_deployment_is_retried_on_its_sibling(
    gateway: openai.OpenAI, fake_provider: RunningFakeProvider
) -> None:
    fake_provider.fail_next(1, status=500)
    first = chat(gateway)
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["x-router-attempts"] == "2"
    tried = [request.json["model"] for request in fake_provider.requests]
    assert len(tried) == 2 and set(tried) == DEPLOYMENTS  # the retry went to the other deployment
    assert first.parse().choices[0].message.content

    second = chat(gateway)
    assert second.headers["x-cache"] == "HIT"
    assert fake_provider.count("/chat/completions") == 2


def test_a_bad_router_section_is_a_config_error_naming_it() -> None:
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}},
            "model_list": [{"model_name": PUBLIC, "litellm_params": {"model": "openai/x", "rpm": 0}}],
        },
        where="gw.yaml",
    )
    with pytest.raises(ConfigError, match=r"(?s)^gw\.yaml: router: .*model_list\[0\]\.litellm_params\.rpm"):
        create_gateway(config)


def test_an_upstream_key_goes_only_to_the_upstream_it_was_configured_for(
    fake_provider: RunningFakeProvider, fake_provider_session: RunningFakeProvider
) -> None:
    """`upstreams.<family>.api_key` is the operator's key for that base URL. A `model_list` deployment
    without a key of its own, elsewhere (a self-hosted server), gets no key: neither the OpenAI key
    of an OpenAI request nor the Anthropic key of a Messages request translated for it. A deployment
    under the upstream's base URL still gets it."""
    owner, elsewhere = fake_provider, fake_provider_session
    keys = {"openai": "sk-owner-openai", "anthropic": "sk-ant-owner"}
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}},
            "upstreams": {
                "openai": {"base_url": owner.openai_base_url, "api_key": keys["openai"]},
                "anthropic": {"base_url": owner.anthropic_base_url, "api_key": keys["anthropic"]},
            },
            "model_list": [
                {
                    "model_name": "local",
                    "litellm_params": {"model": "openai/llama", "api_base": elsewhere.openai_base_url},
                },
                {
                    "model_name": "hosted",
                    "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": owner.openai_base_url},
                },
            ],
        },
        where="gw.yaml",
        env={},
    )
    with BackgroundServer(create_gateway(config)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)
        claude = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-caller", max_retries=0)
        assert client.chat.completions.create(model="local", messages=MESSAGES).choices[0].message.content
        assert claude.messages.create(model="local", max_tokens=50, messages=MESSAGES).content  # translated
        assert client.chat.completions.create(model="hosted", messages=MESSAGES).choices[0].message.content
    sent_elsewhere = [request.headers for request in elsewhere.requests]
    assert len(sent_elsewhere) == 2
    for headers in sent_elsewhere:
        assert not {"authorization", "x-api-key", "api-key", "x-goog-api-key"} & set(headers)
    assert owner.last.headers["authorization"] == f"Bearer {keys['openai']}"


ESCAPED = ["%3Fapi-version=caller%26key=caller", "%23", "%2Fembeddings"]


@pytest.mark.parametrize("escaped", ESCAPED)
def test_an_escaped_path_is_no_model_call_and_goes_nowhere_with_the_deployments_key(
    gateway: openai.OpenAI, fake_provider: RunningFakeProvider, escaped: str
) -> None:
    url = f"{str(gateway.base_url).rstrip('/')}/chat/completions{escaped}"
    body = {"model": PUBLIC, "messages": MESSAGES}
    refused = httpx2.post(url, json=body, headers={"authorization": "Bearer sk-caller"}, timeout=10)
    assert refused.status_code == 403 and "upstreams.openai.allow" in refused.json()["error"]["message"]
    assert fake_provider.requests == []


@pytest.mark.parametrize("escaped", ESCAPED)
def test_an_escaped_path_reaches_a_deployment_still_escaped(
    open_gateway: openai.OpenAI, fake_provider: RunningFakeProvider, escaped: str
) -> None:
    """The path a caller escaped (`%3F`, `%23`, `%2F`) is one segment to the gateway, and stays one on the
    way to a deployment, as it does to an upstream without a router: it can add no query parameter to
    a request the deployment's key authenticates, cut the path short or add a segment."""
    url = f"{str(open_gateway.base_url).rstrip('/')}/chat/completions{escaped}"
    body = {"model": PUBLIC, "messages": MESSAGES}
    httpx2.post(url, json=body, headers={"authorization": "Bearer sk-caller"}, timeout=10)
    sent = fake_provider.requests[-1]
    assert (sent.raw_path, sent.query) == (f"/v1/chat/completions{escaped}", "")


def test_model_names_the_router_refuses_never_take_a_real_models_metric_label(
    tmp_path: Path, fake_provider: RunningFakeProvider
) -> None:
    """A caller names 250 models no deployment serves (each a 404 from the router) to fill the model label
    slots of the metrics: the real model, answered afterwards, still counts under its own name, and the
    junk names hold at most `MAX_UNPROVEN_MODELS` labels, the rest counted as `other`."""
    from prometheus_client.parser import text_string_to_metric_families

    from llm_cache.middleware import _model_labels as telemetry

    config = load_config(litellm_file(tmp_path, fake_provider), env={})
    with BackgroundServer(create_gateway(config)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)
        for i in range(telemetry.MAX_MODELS + 50):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model=f"junk-{i}", messages=MESSAGES)
        assert chat(client).headers["x-cache"] == "MISS"
        assert chat(client).headers["x-cache"] == "HIT"
        other = [{"role": "user", "content": "And on Sundays?"}]
        client.chat.completions.create(model=PUBLIC, messages=other)
        text = httpx2.get(f"{server.url}/metrics", timeout=5).text
    requests = {
        (sample.labels["result"], sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "llm_cache_requests"
        for sample in family.samples
        if sample.name == "llm_cache_requests_total"
    }
    assert requests[("hit", PUBLIC)] == 1 and requests[("miss", PUBLIC)] >= 1
    junk = {model for _, model in requests if model.startswith("junk-")}
    assert len(junk) <= telemetry.MAX_UNPROVEN_MODELS
