"""One caller cannot hurt another through the router's shared state.

Two callers with their own provider keys (pass-through credentials) share one router: what fails
for caller A's own reasons (A's key rate-limited or revoked, A's malformed, too long or filtered
prompt) says nothing about the deployment, so it neither cools the deployment down nor moves a
strategy away from it for caller B. What fails for the deployment (a 5xx, or a 429 on a key every
caller shares) still does. The real openai SDK goes through ``RouterTransport`` to the fake provider.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from llm_cache.router import Router, RouterTransport

HI = [{"role": "user", "content": "hi"}]


def caller(router: Router, key: str) -> openai.OpenAI:
    transport = RouterTransport(router)
    return openai.OpenAI(api_key=key, max_retries=0, http_client=httpx2.Client(transport=transport))


def passthrough(fake: Any, *ids: str, key: str | None = None, **settings: Any) -> dict[str, Any]:
    """A group `gpt` of deployments on the fake provider; without `key`, each caller's own key is sent."""
    deployments = [
        {"id": i, "model": f"real-{i}", "api_base": fake.openai_base_url, **({"api_key": key} if key else {})}
        for i in ids
    ]
    return {
        "groups": {"gpt": {"deployments": deployments}},
        "settings": {"num_retries": 0, "allowed_fails": 1, **settings},
    }


def context_too_long(fake: Any) -> None:
    error = {"message": "This model's maximum context length is 8192 tokens.", "code": "context_length_exceeded"}
    fake.fail_next(3, 400, {"error": {**error, "type": "invalid_request_error"}})


def content_filtered(fake: Any) -> None:
    error = {"message": "The response was filtered.", "code": "content_filter", "type": "invalid_request_error"}
    fake.fail_next(3, 400, {"error": error})


QUOTA = {
    "error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota"}
}


CALLER_FAULTS = {
    "own_key_rate_limited_with_retry_after": lambda fake: fake.refuse_key("key-a", 429, {"retry-after": "30"}),
    "own_key_rate_limited_with_retry_after_ms": lambda fake: fake.refuse_key("key-a", 429, {"retry-after-ms": "9000"}),
    "own_key_rate_limited": lambda fake: fake.refuse_key("key-a", 429),
    "own_key_invalid": lambda fake: fake.refuse_key("key-a", 401),
    "own_key_forbidden": lambda fake: fake.refuse_key("key-a", 403),
    "malformed_body": lambda fake: fake.refuse_key("key-a", 400),
    "context_too_long": context_too_long,
    "content_filtered": content_filtered,
}


@pytest.mark.parametrize("fault", list(CALLER_FAULTS), ids=list(CALLER_FAULTS))
def test_a_callers_own_failures_never_cool_down_a_deployment_for_another_caller(
    fake_provider, make_router, fault
) -> None:
    router = make_router(passthrough(fake_provider, "only"))
    CALLER_FAULTS[fault](fake_provider)
    a, b = caller(router, "key-a"), caller(router, "key-b")
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as refused:
            a.chat.completions.create(model="gpt", messages=HI)
        assert refused.value.response.headers.get("x-router-error") is None  # the provider's own answer
    answer = b.chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "only"
    assert router.deployment_state("only").breaker.state == "closed"
    assert fake_provider.last.headers["authorization"] == "Bearer key-b"


@pytest.mark.parametrize("status", [429, 500, 401])
def test_a_failure_of_the_key_every_caller_shares_still_cools_the_deployment_down(
    fake_provider, make_router, status
) -> None:
    router = make_router(passthrough(fake_provider, "only", key="operator-key"))
    fake_provider.refuse_key("operator-key", status, {"retry-after": "30"})
    a, b = caller(router, "key-a"), caller(router, "key-b")
    with pytest.raises(openai.APIStatusError):
        a.chat.completions.create(model="gpt", messages=HI)
    count = fake_provider.count()
    with pytest.raises(openai.APIStatusError) as cooling:
        b.chat.completions.create(model="gpt", messages=HI)
    assert cooling.value.response.headers["x-router-error"] == "all_deployments_cooling"
    assert fake_provider.count() == count  # B was not sent to a deployment known to be failing


def test_a_403_on_the_operators_key_for_what_one_caller_asked_cools_no_deployment_down(
    fake_provider, make_router
) -> None:
    """A 403 can be about the request, not the key: Gemini's for a cachedContent the key cannot read, a
    beta feature the caller's header asks for. Caller A must not be able to cool the deployment for B.
    (A is told the deployment's credential was refused: the 403 is the operator's key's, not A's.)"""
    router = make_router(passthrough(fake_provider, "only", key="operator-key"))
    fake_provider.fail_next(status=403)
    with pytest.raises(openai.InternalServerError) as refused:
        caller(router, "key-a").chat.completions.create(model="gpt", messages=HI, max_tokens=10**12)
    assert refused.value.response.headers["x-router-error"] == "deployment_credential_refused"
    assert router.deployment_state("only").window_usage() == (0, 0)  # nor fills its usage window
    answer = caller(router, "key-b").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "only"
    assert router.deployment_state("only").breaker.state == "closed"


@pytest.mark.parametrize("status", [401, 403])
def test_a_deployment_whose_own_key_is_refused_fails_over_to_a_sibling_at_once(
    fake_provider, make_router, clock, status
) -> None:
    """A 401/403 on the key the operator configured: the request goes to a sibling with no wait. A 401 is
    the deployment misconfigured for everyone (revoked): it cools down, the next ones go to the sibling."""
    deployments = [
        {"id": "revoked", "model": "real", "api_base": fake_provider.openai_base_url, "api_key": "old", "order": 0},
        {"id": "good", "model": "real", "api_base": fake_provider.openai_base_url, "api_key": "new", "order": 1},
    ]
    router = make_router({"groups": {"gpt": {"deployments": deployments}}, "settings": {"num_retries": 2}})
    fake_provider.refuse_key("old", status)
    for key in ("key-a", "key-b"):
        answer = caller(router, key).chat.completions.with_raw_response.create(model="gpt", messages=HI)
        assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "good"
    # a 401 cools the refused key down (tried once); a 403 gives no verdict (tried by each request)
    assert fake_provider.count() == (3 if status == 401 else 4) and clock.sleeps == []
    assert router.deployment_state("revoked").breaker.state == ("open" if status == 401 else "closed")


def test_a_callers_own_rate_limit_still_makes_that_caller_wait_and_retry(fake_provider, make_router, clock) -> None:
    """The rule is about the shared state only: caller A's retry still honours A's Retry-After."""
    router = make_router(passthrough(fake_provider, "only", num_retries=2))
    fake_provider.refuse_key("key-a", 429, {"retry-after": "2"})
    with pytest.raises(openai.RateLimitError):
        caller(router, "key-a").chat.completions.create(model="gpt", messages=HI)
    assert fake_provider.count() == 3 and clock.sleeps == [2.0, 2.0]
    assert router.deployment_state("only").breaker.state == "closed"


def test_a_callers_own_429s_leave_the_deployment_to_the_others_with_no_fallback(fake_provider, make_router) -> None:
    """Caller A's key is out of quota (OpenAI's `insufficient_quota` is per organisation): A gets its
    provider's 429 as it came, retry-after and all, after failing over to the keyless fallback at the same
    host (its own key goes there too, and is refused there too); B still reaches
    the deployment it asked for, not the fallback, and nothing is cooled down."""
    config = passthrough(fake_provider, "only", allowed_fails=1)
    config["groups"]["cheap"] = {
        "deployments": [{"id": "cheap", "model": "m", "api_base": fake_provider.openai_base_url}]
    }
    config["settings"]["fallbacks"] = [{"gpt": ["cheap"]}]
    router = make_router(config)
    fake_provider.refuse_key("key-a", 429, {"retry-after": "30"}, QUOTA)
    a, b = caller(router, "key-a"), caller(router, "key-b")
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as limited:
            a.chat.completions.create(model="gpt", messages=HI)
        assert limited.value.code == "insufficient_quota" and limited.value.response.headers["retry-after"] == "30"
    for _ in range(3):
        answer = b.chat.completions.with_raw_response.create(model="gpt", messages=HI)
        assert answer.headers["x-router-deployment"] == "only" and "x-router-fallback-from" not in answer.headers
    assert [router.deployment_state(d).breaker.state for d in ("only", "cheap")] == ["closed", "closed"]


def test_requests_refused_for_the_callers_reasons_do_not_count_in_a_deployments_usage(
    fake_provider, make_router
) -> None:
    """A caller asking for `max_tokens` far beyond any budget, refused, does not fill the usage window
    that a usage-based strategy routes the other callers by."""
    config = passthrough(fake_provider, "one", "two", routing_strategy="usage")
    for deployment in config["groups"]["gpt"]["deployments"]:
        deployment["tpm"] = 100_000
    router = make_router(config)
    fake_provider.refuse_key("key-a", 400)
    a, b = caller(router, "key-a"), caller(router, "key-b")
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            a.chat.completions.create(model="gpt", messages=HI, max_tokens=10**12)
    assert [router.deployment_state(d).window_usage() for d in ("one", "two")] == [(0, 0), (0, 0)]
    served = [b.chat.completions.with_raw_response.create(model="gpt", messages=HI) for _ in range(4)]
    assert sorted(r.headers["x-router-deployment"] for r in served) == ["one", "one", "two", "two"]


# ----------------------------------------------------------------------------- a caller's key on fallbacks


def fallback_to(requested: str, fallback: str) -> dict[str, Any]:
    """`gpt` on a keyless deployment at `requested`, falling back to `cheap`, keyless, at `fallback`."""
    return {
        "groups": {
            "gpt": {"deployments": [{"id": "gpt", "model": "gpt-real", "api_base": requested}]},
            "cheap": {"deployments": [{"id": "cheap", "model": "cheap-real", "api_base": fallback}]},
        },
        "settings": {"num_retries": 0, "fallbacks": [{"gpt": ["cheap"]}]},
    }


def test_a_fallback_elsewhere_never_gets_the_callers_own_key(fakes, fake_provider, make_router) -> None:
    """The caller's key was entrusted to the deployments of the group it asked for; a keyless fallback
    at another host (a third-party OpenAI-compatible server) gets none of it."""
    fakes["a"].fail(("status", 500, None, None))
    router = make_router(fallback_to(f"{fakes['a'].url}/v1", fake_provider.openai_base_url))
    answer = caller(router, "sk-caller").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.headers["x-router-fallback-from"] == "gpt"
    assert fakes["a"].seen[0].headers["authorization"] == "Bearer sk-caller"
    assert "authorization" not in fake_provider.last.headers


def test_a_fallback_at_the_same_host_still_gets_the_callers_own_key(fakes, make_router) -> None:
    fakes["a"].fail(("status", 500, None, None))
    router = make_router(fallback_to(f"{fakes['a'].url}/v1", f"{fakes['a'].url}/v1"))
    caller(router, "sk-caller").chat.completions.create(model="gpt", messages=HI)
    assert [s.headers["authorization"] for s in fakes["a"].seen] == ["Bearer sk-caller"] * 2


def test_a_fallback_elsewhere_never_gets_the_callers_key_from_the_query(fakes, fake_provider, make_router) -> None:
    """Gemini's `?key=` is a credential too."""
    fakes["a"].fail(("status", 500, None, None))
    config = {
        "groups": {
            "gem": {"deployments": [{"id": "gem", "family": "gemini", "model": "g1", "api_base": fakes["a"].url}]},
            "gem2": {"deployments": [{"id": "gem2", "family": "gemini", "model": "g2", "api_base": fake_provider.url}]},
        },
        "settings": {"num_retries": 0, "fallbacks": [{"gem": ["gem2"]}]},
    }
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with httpx2.Client(transport=RouterTransport(make_router(config))) as client:
        answer = client.post(
            "http://gemini.invalid/v1beta/models/gem:generateContent?key=caller-key&alt=json", json=body
        )
    assert answer.status_code == 200 and answer.headers["x-router-fallback-from"] == "gem"
    assert "key=caller-key" in fakes["a"].seen[0].query
    assert fake_provider.last.path == "/v1beta/models/g2:generateContent"
    assert "caller-key" not in fake_provider.last.query and "alt=json" in fake_provider.last.query


# ----------------------------------------------------------------------------- the operator's key


def on(fake: Any, dep_id: str, key: str | None = None, **extra: Any) -> dict[str, Any]:
    """A deployment on the fake provider: the operator's `key`, or none (the caller's own is sent)."""
    return {"id": dep_id, "model": f"real-{dep_id}", "api_base": fake.openai_base_url, **extra} | (
        {"api_key": key} if key else {}
    )


def keys_sent(fake: Any) -> list[tuple[str, str]]:
    """(model, authorization) of each request the provider received, oldest first."""
    return [(r.json.get("model", ""), r.headers.get("authorization", "")) for r in fake.requests]


FALLBACK_TABLES = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")

CALLERS_OWN_FAILURES = {
    "own_key_out_of_quota": (
        lambda fake: fake.refuse_key("key-a", 429, {"retry-after": "30"}, QUOTA),
        openai.RateLimitError,
    ),
    "prompt_too_long_for_the_model": (context_too_long, openai.BadRequestError),
    "prompt_refused_by_the_providers_filter": (content_filtered, openai.BadRequestError),
}


@pytest.mark.parametrize("fault", list(CALLERS_OWN_FAILURES), ids=list(CALLERS_OWN_FAILURES))
def test_a_callers_own_failure_on_a_keyless_group_never_falls_back_to_the_operators_key(
    fake_provider, make_router, fault
) -> None:
    """A caller whose own key is out of quota (any real but exhausted key: free to get), or whose prompt
    its own key was refused for, would be served on the operator's key by every fallback table that
    names an operator-keyed group. It gets its provider's answer as it came; the operator's key is
    never sent."""
    config = {
        "groups": {
            "gpt": {"deployments": [on(fake_provider, "own")]},
            "paid": {"deployments": [on(fake_provider, "paid", "operator-key")]},
        },
        "settings": {
            "num_retries": 0,
            **{table: [{"gpt": ["paid"]}] for table in FALLBACK_TABLES},
            "default_fallbacks": ["paid"],
        },
    }
    router = make_router(config)
    make_fault, error = CALLERS_OWN_FAILURES[fault]
    make_fault(fake_provider)
    with pytest.raises(error) as refused:
        caller(router, "key-a").chat.completions.create(model="gpt", messages=HI)
    assert keys_sent(fake_provider) == [("real-own", "Bearer key-a")]
    answer = refused.value.response
    assert answer.headers.get("x-router-error") is None and answer.headers["x-router-deployment"] == "own"
    if fault == "own_key_out_of_quota":
        assert answer.headers["retry-after"] == "30" and refused.value.code == "insufficient_quota"
    assert [router.deployment_state(d).breaker.state for d in ("own", "paid")] == ["closed", "closed"]


def test_a_callers_own_429_moves_only_to_deployments_that_take_the_callers_own_key(
    fake_provider, make_router, clock
) -> None:
    """A sibling and a fallback on the operator's key are passed over; a keyless fallback at the same
    host (the caller's key goes there already) is still tried, and answers."""
    config = {
        "groups": {
            "gpt": {
                "deployments": [on(fake_provider, "own", order=0), on(fake_provider, "house", "operator-key", order=1)]
            },
            "spare": {
                "deployments": [
                    on(fake_provider, "paid", "operator-spare", order=0),
                    on(fake_provider, "mine", order=1),
                ]
            },
        },
        "settings": {"num_retries": 2, "fallbacks": [{"gpt": ["spare"]}]},
    }
    router = make_router(config)
    fake_provider.fail_next(1, 429, QUOTA, {"retry-after": "120"})  # past retry_after_max: fail over
    answer = caller(router, "key-a").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "mine"
    assert answer.headers["x-router-fallback-from"] == "gpt"
    assert keys_sent(fake_provider) == [("real-own", "Bearer key-a"), ("real-mine", "Bearer key-a")]
    assert clock.sleeps == []


def test_a_429_on_the_operators_key_still_falls_back_to_another_operators_key(fake_provider, make_router) -> None:
    """The deployment's own key overloaded is the deployment's failure, whoever asked: the fallback the
    operator configured takes the request, on its own key."""
    config = {
        "groups": {
            "gpt": {"deployments": [on(fake_provider, "house", "operator-key")]},
            "spare": {"deployments": [on(fake_provider, "paid", "operator-spare")]},
        },
        "settings": {"num_retries": 0, "fallbacks": [{"gpt": ["spare"]}]},
    }
    router = make_router(config)
    fake_provider.refuse_key("operator-key", 429, {"retry-after": "30"})
    answer = caller(router, "key-a").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "paid"
    assert keys_sent(fake_provider) == [("real-house", "Bearer operator-key"), ("real-paid", "Bearer operator-spare")]
    assert router.deployment_state("house").breaker.state == "open"


def test_a_callers_own_429_goes_to_no_keyless_fallback_its_key_does_not_go_to(
    fakes, fake_provider, make_router
) -> None:
    """A keyless fallback at another host gets none of the caller's credentials
    (`test_a_fallback_elsewhere_never_gets_the_callers_own_key`): a request the caller's own key
    failed is not sent there with none, on the operator's account, either."""
    fakes["a"].fail(("status", 429, {"retry-after": "30"}, None))
    router = make_router(fallback_to(f"{fakes['a'].url}/v1", fake_provider.openai_base_url))
    with pytest.raises(openai.RateLimitError) as limited:
        caller(router, "sk-caller").chat.completions.create(model="gpt", messages=HI)
    assert limited.value.response.headers["retry-after"] == "30" and fake_provider.requests == []


# ----------------------------------------------------------------------- whatever retry_on_status says

RETRYING_REFUSALS = [408, 409, 429, 500, 502, 503, 504, 529, 401, 403]
"""An operator's `retry_on_status` that names 401 and 403 (a flaky proxy in front, say)."""


@pytest.mark.parametrize("status", [401, 403])
def test_a_callers_own_key_refused_stays_the_callers_whatever_retry_on_status_names(
    fake_provider, make_router, status
) -> None:
    """With 401 and 403 in `retry_on_status`, A's own revoked key was a server failure: it cooled the
    deployment for B, and moved A to the operator's key. It is A's, as without them: relayed as it came."""
    config = {
        "groups": {
            "gpt": {"deployments": [on(fake_provider, "own", order=0), on(fake_provider, "house", "operator-key")]},
            "paid": {"deployments": [on(fake_provider, "paid", "operator-spare")]},
        },
        "settings": {
            "num_retries": 2,
            "allowed_fails": 1,
            "retry_on_status": RETRYING_REFUSALS,
            "fallbacks": [{"gpt": ["paid"]}],
            "default_fallbacks": ["paid"],
        },
    }
    router = make_router(config)
    fake_provider.refuse_key("key-a", status)
    with pytest.raises(openai.APIStatusError) as refused:
        caller(router, "key-a").chat.completions.create(model="gpt", messages=HI)
    assert refused.value.status_code == status and refused.value.response.headers.get("x-router-error") is None
    assert keys_sent(fake_provider) == [("real-own", "Bearer key-a")]
    assert [router.deployment_state(d).breaker.state for d in ("own", "house", "paid")] == ["closed"] * 3
    answer = caller(router, "key-b").chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answer.status_code == 200 and answer.headers["x-router-deployment"] == "own"


def test_the_operators_key_refused_is_still_the_routers_502_whatever_retry_on_status_names(
    fake_provider, make_router
) -> None:
    """With 401 in `retry_on_status`, the operator's revoked key was a server failure, its provider's words
    (the key, masked) relayed to the caller once no deployment was left."""
    config = passthrough(fake_provider, "only", key="sk-revoked", retry_on_status=RETRYING_REFUSALS)
    router = make_router(config)
    fake_provider.revoke_key("sk-revoked")
    with pytest.raises(openai.InternalServerError) as refused:
        caller(router, "key-a").chat.completions.create(model="gpt", messages=HI)
    answer = refused.value.response
    assert answer.status_code == 502 and answer.headers["x-router-error"] == "deployment_credential_refused"
    assert "Incorrect API key" not in answer.text
