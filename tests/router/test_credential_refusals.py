"""A deployment whose own key is refused is skipped, cooled and reported, in every family's words.

The router judges a deployment's answer by its family's credential-refusal rule (`llm_cache._refusals`,
the one the gateway reads) before translating it for the caller: Gemini refuses a wrong key with a 400
`API_KEY_INVALID`, AWS (Bedrock's OpenAI-compatible endpoint) an expired token with a 400
`ExpiredTokenException`. Such a deployment is failed over from like one answering 401, and a caller is
never handed its refusal as if its own key were wrong. The real openai SDK goes through
``RouterTransport`` to the fake provider.
"""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llm_cache.router import Router, RouterTransport

HI = [{"role": "user", "content": "hi"}]
AWS_TYPE = "http://internal.amazon.com/coral/com.amazon.coral.service/"


def caller(router: Router) -> openai.OpenAI:
    """An OpenAI caller that brings no key of its own: each deployment brings its own."""
    transport = RouterTransport(router)
    return openai.OpenAI(api_key="unused-by-router", max_retries=0, http_client=httpx2.Client(transport=transport))


def gemini(fake: Any, key: str, **extra: Any) -> dict[str, Any]:
    """A Gemini deployment on the fake provider: an OpenAI caller's request is translated for it."""
    return {"id": "gem", "family": "gemini", "model": "gemini-2.5-flash", "api_base": fake.url, "api_key": key, **extra}


def bedrock_openai(fake: Any, key: str, **extra: Any) -> dict[str, Any]:
    """An OpenAI-compatible deployment as at Bedrock's OpenAI endpoint, on a Bedrock API key."""
    return {
        "id": "bedrock",
        "model": "openai.gpt-oss-20b-1:0",
        "api_base": fake.openai_base_url,
        "api_key": key,
        **extra,
    }


def revoke_gemini(fake: Any, key: str) -> None:
    fake.revoke_key(key)  # Google's 400 INVALID_ARGUMENT, ErrorInfo reason API_KEY_INVALID


def expire_bedrock(fake: Any, key: str) -> None:
    said = {"message": "The security token included in the request is expired"}
    fake.refuse_key(key, 400, {"x-amzn-ErrorType": f"ExpiredTokenException:{AWS_TYPE}"}, said)


def unknown_to_bedrock(fake: Any, key: str) -> None:
    said = {"message": "The security token included in the request is invalid."}
    fake.refuse_key(key, 403, {"x-amzn-ErrorType": f"UnrecognizedClientException:{AWS_TYPE}"}, said)


REFUSED = {
    "gemini_api_key_invalid": (gemini, revoke_gemini, "API key not valid"),
    "bedrock_expired_token": (bedrock_openai, expire_bedrock, "security token"),
    "bedrock_unrecognized_client": (bedrock_openai, unknown_to_bedrock, "security token"),
}


def group(*deployments: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"groups": {"gpt": {"deployments": list(deployments)}}, "settings": {"num_retries": 2, **settings}}


@pytest.mark.parametrize("shape", list(REFUSED), ids=list(REFUSED))
def test_a_deployment_whose_own_key_is_refused_in_its_familys_words_fails_over_to_a_sibling_at_once(
    fake_provider, make_router, clock, shape
) -> None:
    make, refuse, _ = REFUSED[shape]
    good = {"id": "good", "model": "real", "api_base": fake_provider.openai_base_url, "api_key": "sk-good", "order": 1}
    router = make_router(group(make(fake_provider, "refused-key", order=0), good))
    refuse(fake_provider, "refused-key")
    for _ in range(2):
        answer = caller(router).chat.completions.with_raw_response.create(model="gpt", messages=HI)
        assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "good"
    assert clock.sleeps == []  # refused before any work: no backoff
    refused = router.deployment_state(make(fake_provider, "refused-key")["id"])
    if shape == "bedrock_unrecognized_client":  # a 403 gives no verdict: tried again by the next request
        assert fake_provider.count() == 4 and refused.breaker.state == "closed"
    else:  # the key itself, refused for every caller: cooled at once, the next request goes to the sibling
        assert fake_provider.count() == 3 and refused.breaker.state == "open"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("shape", list(REFUSED), ids=list(REFUSED))
def test_a_deployments_refused_key_is_never_relayed_as_if_the_callers_key_were_wrong(
    fake_provider, make_router, shape, stream
) -> None:
    """No sibling, no fallback: the caller gets the router's own 502 naming the deployment, which its
    SDK does not retry; the provider's words (about the operator's key) are not relayed."""
    make, refuse, words = REFUSED[shape]
    router = make_router(group(make(fake_provider, "refused-key")))
    refuse(fake_provider, "refused-key")
    with pytest.raises(openai.InternalServerError) as raised:
        caller(router).chat.completions.create(model="gpt", messages=HI, stream=stream)
    answer = raised.value.response
    assert answer.status_code == 502 and answer.headers["x-should-retry"] == "false"
    assert answer.headers["x-router-error"] == "deployment_credential_refused"
    assert answer.headers["x-router-deployment"] == make(fake_provider, "refused-key")["id"]
    assert words not in answer.text and "refused-key" not in answer.text
    assert raised.value.body["code"] == "deployment_credential_refused"  # type: ignore[index]


def test_an_anthropic_caller_gets_the_routers_502_in_its_own_error_shape(fake_provider, make_router) -> None:
    """The anthropic SDK, routed to an OpenAI-compatible deployment whose key is revoked (OpenAI's 401
    names it, masked): the router's 502 in Anthropic's error shape, which the SDK raises at once."""
    deployment = {"id": "oai", "model": "real", "api_base": fake_provider.openai_base_url, "api_key": "sk-revoked"}
    router = make_router(group(deployment))
    fake_provider.revoke_key("sk-revoked")
    http_client = httpx2.Client(transport=RouterTransport(router))
    client = anthropic.Anthropic(api_key="unused-by-router", max_retries=2, http_client=http_client)
    with pytest.raises(anthropic.InternalServerError) as raised:
        client.messages.create(model="gpt", max_tokens=16, messages=HI)  # type: ignore[arg-type]
    assert raised.value.status_code == 502 and fake_provider.count() == 1  # not retried by the SDK
    assert raised.value.body["type"] == "error"  # type: ignore[index]  # Anthropic's shape
    assert raised.value.response.headers["x-router-error"] == "deployment_credential_refused"
    assert "Incorrect API key" not in raised.value.response.text


def test_a_refused_deployment_key_falls_back_to_another_group(fake_provider, make_router) -> None:
    config = {
        "groups": {
            "gpt": {"deployments": [gemini(fake_provider, "AIza-revoked")]},
            "cheap": {"deployments": [{"id": "cheap", "model": "m", "api_base": fake_provider.openai_base_url}]},
        },
        "settings": {"num_retries": 2, "fallbacks": [{"gpt": ["cheap"]}]},
    }
    router = make_router(config)
    revoke_gemini(fake_provider, "AIza-revoked")
    answer = caller(router).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-fallback-from"] == "gpt"


def test_a_gemini_400_that_refuses_the_request_is_still_the_callers_error(fake_provider, make_router) -> None:
    """Only `API_KEY_INVALID` says the key: Gemini's other 400s are about the request, relayed (in the
    caller's shape) and neither retried nor failed over; the deployment is not cooled."""
    bad_request = {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}
    good = {"id": "good", "model": "real", "api_base": fake_provider.openai_base_url, "api_key": "sk-good", "order": 1}
    router = make_router(group(gemini(fake_provider, "AIza-good", order=0), good))
    fake_provider.refuse_key("AIza-good", 400, body=bad_request)
    with pytest.raises(openai.BadRequestError) as raised:
        caller(router).chat.completions.create(model="gpt", messages=HI)
    assert "Invalid JSON payload" in str(raised.value) and fake_provider.count() == 1
    assert router.deployment_state("gem").breaker.state == "closed"


def test_a_deployment_s_refused_key_is_one_warning_an_interval_however_many_calls_meet_it(
    fake_provider, make_router, clock, caplog
) -> None:
    """Every call that reached a deployment whose key is refused logged a WARNING: with a short
    `cooldown_time` callers drove the operator's log at request rate. One per deployment an interval
    now (`LogLimit`, on the router's clock), the next saying how many were not logged."""
    deployment = {"id": "oai", "model": "real", "api_base": fake_provider.openai_base_url, "api_key": "sk-revoked"}
    router = make_router(group(deployment, cooldown_time=0.5))
    fake_provider.revoke_key("sk-revoked")
    with caplog.at_level(logging.WARNING, "llm_cache.router"):
        for _ in range(5):
            with pytest.raises(openai.InternalServerError):
                caller(router).chat.completions.create(model="gpt", messages=HI)
            clock.advance(1)  # past the cooldown: the next call reaches the deployment again
        clock.advance(60)
        with pytest.raises(openai.InternalServerError):
            caller(router).chat.completions.create(model="gpt", messages=HI)
    assert fake_provider.count() == 6
    lines = [r.getMessage() for r in caplog.records if "refused deployment oai's own credential" in r.getMessage()]
    assert len(lines) == 2 and "(4 more like it since the last such WARNING" in lines[1], lines
