"""Real SDK clients through RouterTransport, inside httpx2 and legacy httpx clients, sync and async."""

from __future__ import annotations

import anthropic
import httpx
import httpx2
import openai
import pytest

from llm_cache.router import RouterTransport
from llm_cache.router._config import Deployment
from llm_cache.router._rewrite import rewrite_headers, target_url

from .conftest import dep

LIBS = [httpx2, httpx]


def config(fakes, **settings):
    return {
        "groups": {
            "gpt": {
                "deployments": [
                    dep(fakes["a"], model="gpt-4o-mini", order=0),
                    dep(fakes["b"], model="gpt-4o-mini", order=1),
                ]
            },
            "claude": {
                "deployments": [
                    {
                        "id": "claude",
                        "family": "anthropic",
                        "model": "claude-3-5-haiku",
                        "api_base": fakes["claude"].url,
                        "api_key": "ant-key",
                    }
                ]
            },
        },
        "settings": {"backoff_initial": 0, "num_retries": 1, **settings},
    }


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_openai_sdk_sync(fakes, make_router, lib):
    fakes["a"].fail(("status", 500, None, None))
    router = make_router(config(fakes))
    http_client = lib.Client(transport=RouterTransport(router))
    client = openai.OpenAI(api_key="caller-key", max_retries=0, http_client=http_client)
    raw = client.chat.completions.with_raw_response.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from b"
    assert raw.headers["x-router-deployment"] == "b"
    assert raw.headers["x-router-attempts"] == "2"
    assert fakes["b"].seen[0].headers["authorization"] == "Bearer key-b"
    assert fakes["b"].seen[0].headers["x-stainless-retry-count"] == "0"


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
async def test_openai_sdk_async(fakes, make_router, lib):
    fakes["a"].fail(("status", 429, {"retry-after": "1"}, None))
    router = make_router(config(fakes))
    async with lib.AsyncClient(transport=RouterTransport(router)) as http_client:
        client = openai.AsyncOpenAI(api_key="caller-key", max_retries=0, http_client=http_client)
        completion = await client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "hello from b"


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
async def test_openai_sdk_async_stream_falls_back_before_first_byte(fakes, make_router, lib):
    fakes["a"].fail("prestream")
    router = make_router(config(fakes))
    async with lib.AsyncClient(transport=RouterTransport(router)) as http_client:
        client = openai.AsyncOpenAI(api_key="k", max_retries=0, http_client=http_client)
        stream = await client.chat.completions.create(
            model="gpt", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "hello from b!"


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_openai_sdk_sync_stream_midstream_failure_surfaces(fakes, make_router, lib):
    fakes["a"].fail("midstream")
    router = make_router(config(fakes))
    client = openai.OpenAI(api_key="k", max_retries=0, http_client=lib.Client(transport=RouterTransport(router)))
    stream = client.chat.completions.create(model="gpt", stream=True, messages=[{"role": "user", "content": "hi"}])
    got = []
    with pytest.raises((httpx2.RemoteProtocolError, httpx.RemoteProtocolError, openai.APIError)):
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 1
    assert fakes["b"].count == 0


def test_anthropic_sdk(fakes, make_router):
    # anthropic 2.x accepts only httpx2 clients; legacy httpx is covered by the raw test below
    router = make_router(config(fakes))
    client = anthropic.Anthropic(
        api_key="caller", max_retries=0, http_client=httpx2.Client(transport=RouterTransport(router))
    )
    msg = client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "hello from claude"
    seen = fakes["claude"].seen[0]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == "ant-key"
    assert seen.body["model"] == "claude-3-5-haiku"
    assert "anthropic-version" in seen.headers


async def test_anthropic_api_through_legacy_httpx(fakes, make_router):
    router = make_router(config(fakes))
    async with httpx.AsyncClient(transport=RouterTransport(router), base_url="https://api.anthropic.com") as c:
        resp = await c.post(
            "/v1/messages",
            json={"model": "claude", "max_tokens": 5, "messages": []},
            headers={"x-api-key": "caller", "anthropic-version": "2023-06-01"},
        )
    assert isinstance(resp, httpx.Response)
    assert resp.json()["content"][0]["text"] == "hello from claude"
    assert fakes["claude"].seen[0].headers["x-api-key"] == "ant-key"


def test_an_openai_request_falls_back_to_an_anthropic_deployment_translated(fakes, make_router):
    cfg = config(fakes)
    cfg["settings"]["fallbacks"] = [{"gpt": ["claude"]}]
    fakes["a"].fail(*[("status", 500, None, None)] * 5)
    fakes["b"].fail(*[("status", 500, None, None)] * 5)
    router = make_router(cfg)
    client = openai.OpenAI(api_key="k", max_retries=0, http_client=httpx2.Client(transport=RouterTransport(router)))
    answer = client.chat.completions.with_raw_response.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert answer.parse().choices[0].message.content == "hello from claude"
    assert (answer.headers["x-router-family"], answer.headers["x-router-fallback-from"]) == ("anthropic", "gpt")
    assert fakes["claude"].seen[0].path == "/v1/messages"


# ----------------------------------------------------------------------------- rewriting (pure)


@pytest.mark.parametrize(
    ("deployment", "path", "query", "expected"),
    [
        (
            {"family": "openai", "model": "m", "api_base": "http://h/v1"},
            "/v1/chat/completions",
            "",
            "http://h/v1/chat/completions",
        ),
        ({"family": "openai", "model": "m", "api_base": "http://h"}, "/v1/embeddings", "", "http://h/embeddings"),
        (
            {"family": "anthropic", "model": "m", "api_base": "http://h"},
            "/v1/messages",
            "beta=true",
            "http://h/v1/messages?beta=true",
        ),
        (
            {"family": "azure", "model": "dep1", "api_base": "https://r.openai.azure.com", "api_version": "2024-06-01"},
            "/v1/chat/completions",
            "",
            "https://r.openai.azure.com/openai/deployments/dep1/chat/completions?api-version=2024-06-01",
        ),
        (
            {"family": "azure", "model": "dep2", "api_base": "https://r.openai.azure.com"},
            "/openai/deployments/other/chat/completions",
            "api-version=2023-05-15",
            "https://r.openai.azure.com/openai/deployments/dep2/chat/completions?api-version=2024-10-21",
        ),
        (
            {"family": "gemini", "model": "gemini-2.0-flash", "api_key": "g"},
            "/v1beta/models/gemini-pro:streamGenerateContent",
            "alt=sse&key=caller",
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        ),
    ],
)
def test_target_url(deployment, path, query, expected):
    assert target_url(Deployment(**deployment), path, query) == expected


@pytest.mark.parametrize(
    ("family", "header", "value"),
    [
        ("openai", "authorization", "Bearer K"),
        ("anthropic", "x-api-key", "K"),
        ("gemini", "x-goog-api-key", "K"),
        ("azure", "api-key", "K"),
    ],
)
def test_auth_header_per_family(family, header, value):
    d = Deployment(family=family, model="m", api_base="http://h", api_key="K")
    out = dict(
        rewrite_headers(
            [
                ("Authorization", "Bearer caller"),
                ("x-api-key", "c"),
                ("Host", "x"),
                ("content-length", "3"),
                ("x-keep", "1"),
            ],
            d,
        )
    )
    assert out == {"x-keep": "1", header: value}


def test_caller_auth_kept_when_deployment_has_no_key():
    d = Deployment(model="m", api_base="http://h")
    assert dict(rewrite_headers([("authorization", "Bearer caller")], d)) == {"authorization": "Bearer caller"}


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://h/v1/chat/completions", True),
        ("http://h/v1", True),
        ("http://h/v1?x=1", True),
        ("http://h/v10/chat/completions", False),
        ("http://h.other/v1/chat/completions", False),
        ("http://h:8080/v1/chat/completions", False),
        ("https://h/v1/chat/completions", False),
        ("http://other/h/v1/chat/completions", False),
    ],
)
def test_an_operators_key_goes_only_under_the_url_it_is_for(url, kept):
    d = Deployment(model="m", api_base="http://anything")
    out = rewrite_headers([("authorization", "Bearer operator"), ("x-keep", "1")], d, url, "http://h/v1/")
    assert out == ([("authorization", "Bearer operator")] if kept else []) + [("x-keep", "1")]


def test_gemini_path_model_and_key_are_rewritten(fakes, make_router):
    c = fakes["c"]
    router = make_router(
        {
            "groups": {
                "gem": {
                    "deployments": [
                        {
                            "id": "g1",
                            "family": "gemini",
                            "model": "gemini-2.0-flash",
                            "api_base": c.url,
                            "api_key": "gk",
                        }
                    ]
                }
            }
        }
    )
    with httpx.Client(transport=RouterTransport(router)) as client:
        resp = client.post(
            "https://generativelanguage.googleapis.com/v1beta/models/gem:generateContent",
            params={"key": "caller"},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
    assert resp.status_code == 200 and resp.headers["x-router-deployment"] == "g1"
    seen = c.seen[0]
    assert seen.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert seen.query == "" and seen.headers["x-goog-api-key"] == "gk"


def test_a_tuned_gemini_model_is_routed_as_gemini_as_the_cache_reads_it(fakes, make_router):
    """`tunedModels/{m}:generateContent` is a Gemini call (the provider adapter owns it): the router
    reads the model from the path and picks the deployment that speaks Gemini."""
    router = make_router(
        {
            "groups": {
                "tuned": {
                    "deployments": [
                        {"id": "o", "family": "openai", "model": "m", "api_base": fakes["a"].url, "order": 0},
                        {"id": "g", "family": "gemini", "model": "m", "api_base": fakes["b"].url, "api_key": "gk"},
                    ]
                }
            },
            "settings": {"unknown_models": "refuse"},
        }
    )
    with httpx.Client(transport=RouterTransport(router)) as client:
        resp = client.post(
            f"{fakes['c'].url}/v1beta/tunedModels/tuned:generateContent",
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
    assert resp.status_code == 200 and resp.headers["x-router-deployment"] == "g"
    assert [f.count for f in (fakes["a"], fakes["b"], fakes["c"])] == [0, 1, 0]
    assert fakes["b"].seen[0].headers["x-goog-api-key"] == "gk"


def test_a_model_list_key_written_as_an_env_reference_reaches_the_provider(fakes, make_router, monkeypatch):
    """`${OPENAI_KEY}` in a LiteLLM `model_list` is the key sent upstream, never the literal text."""
    monkeypatch.setenv("ROUTER_TEST_OPENAI_KEY", "sk-real")
    router = make_router(
        {
            "model_list": [
                {
                    "model_name": "gpt",
                    "litellm_params": {
                        "model": "openai/gpt-4o-mini",
                        "api_base": f"{fakes['a'].url}/v1",
                        "api_key": "${ROUTER_TEST_OPENAI_KEY}",
                    },
                }
            ]
        }
    )
    client = openai.OpenAI(
        api_key="caller", max_retries=0, http_client=httpx2.Client(transport=RouterTransport(router))
    )
    answer = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello from a"
    assert fakes["a"].seen[0].headers["authorization"] == "Bearer sk-real"


# ----------------------------------------------------------------------------- what the router reads


def long_answers_config(fakes):
    """`gpt` tries a Claude deployment (translated) first, then an OpenAI one (native); both answer
    more than `max_read_bytes`."""
    claude = {"id": "claude", "family": "anthropic", "model": "claude-3-5-haiku", "api_base": fakes["claude"].url}
    deployments = [{**claude, "order": 0}, dep(fakes["a"], model="gpt-4o-mini", order=1)]
    return {"groups": {"gpt": {"deployments": deployments}}, "settings": {"max_read_bytes": 100}}


def test_an_answer_longer_than_the_router_reads_is_passed_on_whole_or_fails_its_translation(fakes, make_router):
    router = make_router(long_answers_config(fakes))
    client = openai.OpenAI(api_key="k", max_retries=0, http_client=httpx2.Client(transport=RouterTransport(router)))
    answer = client.chat.completions.with_raw_response.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert len(answer.content) > 100 and answer.parse().choices[0].message.content
    assert answer.headers["x-router-deployment"] == "a"  # Claude's answer could not be translated
    assert (len(fakes["claude"].seen), len(fakes["a"].seen)) == (1, 1)


async def test_an_answer_longer_than_the_router_reads_is_passed_on_whole_or_fails_its_translation_async(
    fakes, make_router
):
    router = make_router(long_answers_config(fakes))
    http_client = httpx2.AsyncClient(transport=RouterTransport(router))
    client = openai.AsyncOpenAI(api_key="k", max_retries=0, http_client=http_client)
    answer = await client.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "hi"}]
    )
    assert len(answer.content) > 100 and answer.parse().choices[0].message.content
    assert answer.headers["x-router-deployment"] == "a"
    assert (len(fakes["claude"].seen), len(fakes["a"].seen)) == (1, 1)
