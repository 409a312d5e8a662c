"""LiteLLM's proxy config (examples/litellm_router.yaml) routes as LiteLLM's docs describe.

The documented Azure endpoints and the vLLM server are replaced by local fake providers; nothing else
in the config changes.
"""

from __future__ import annotations

from collections import Counter

import httpx2
import pytest

from llm_cache.router import RouterTransport

from .test_config import ENV, EXAMPLE


@pytest.fixture
def litellm_router(fakes, make_router):
    text = EXAMPLE.read_text()
    for documented, fake in (
        ("https://my-endpoint-europe-berri-992.openai.azure.com/", fakes["a"]),
        ("https://my-endpoint-canada-berri992.openai.azure.com/", fakes["b"]),
        ("https://openai-france-1234.openai.azure.com/", fakes["c"]),
        ("http://0.0.0.0:4000/v1", fakes["c"]),
    ):
        assert documented in text
        text = text.replace(documented, fake.url + ("/v1" if "4000" in documented else ""))
    return make_router(text, environ=ENV)


def post(router, model: str) -> httpx2.Response:
    with httpx2.Client(transport=RouterTransport(router), base_url="http://litellm-proxy:4000") as c:
        return c.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})


def test_gpt35_load_balances_over_the_azure_deployments_by_rpm(fakes, litellm_router):
    served = Counter(post(litellm_router, "gpt-3.5-turbo").headers["x-router-deployment"] for _ in range(60))
    ids = {d.model: d.public_id for d in litellm_router.group("gpt-3.5-turbo").deployments}
    # rpm 1440 vs 6 vs 6: France takes almost everything, as LiteLLM's simple-shuffle would do
    assert served[ids["gpt-turbo-large"]] >= 55
    seen = fakes["c"].seen[0]
    assert seen.path == "/openai/deployments/gpt-turbo-large/chat/completions"
    assert "api-version=" in seen.query
    assert seen.headers["api-key"] == "fr"
    assert "authorization" not in seen.headers


def test_alias_and_openai_compatible_prefix(fakes, litellm_router):
    resp = post(litellm_router, "gpt-4")  # model_group_alias → gpt-3.5-turbo
    assert resp.status_code == 200 and "azure" in resp.headers["x-router-deployment"]
    fakes["c"].reset()
    resp = post(litellm_router, "vllm-models")
    assert resp.status_code == 200
    seen = fakes["c"].seen[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "facebook/opt-125m"  # the `openai/` prefix is stripped
    assert seen.headers["authorization"] == "Bearer none"


def test_num_retries_then_fallback_as_configured(fakes, litellm_router):
    for f, n in (("a", 3), ("b", 3), ("c", 2)):
        fakes[f].fail(*[("status", 500, None, None)] * n)
    resp = post(litellm_router, "gpt-3.5-turbo")
    # num_retries: 2 → three attempts in the group (each on a different deployment), then the
    # fallback group vllm-models (on fake c, whose script has one 500 left: retried once there, then 200)
    assert resp.status_code == 200
    assert int(resp.headers["x-router-attempts"]) == 5
