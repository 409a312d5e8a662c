"""Provider-supplied times are bounded.

`Retry-After` / `retry-after-ms` (seconds or an HTTP date) come from the provider, so they are data,
not orders: any header text parses to nothing or to a finite number in `[0, cooldown_max]`; no
cooldown and no `retry-after` the router sends to a client exceeds `cooldown_max`; the router never
sleeps longer than `retry_after_max`. Property tests over arbitrary header text, then the named
hostile values through real HTTP.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llm_cache.router import Router, RouterTransport
from llm_cache.router._core import Send, Sent, Sleep
from llm_cache.router._errors import parse_retry_after

from .conftest import FakeClock, dep

NOW = 1_800_000_000.0  # a fixed wall clock for HTTP dates

#: Header text an HTTP server accepts (latin-1 without CR, LF, NUL), biased towards numbers and dates.
header_text = st.one_of(
    st.text(st.characters(min_codepoint=1, max_codepoint=0xFF, blacklist_characters="\r\n")),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers().map(str),
    st.integers(min_value=-(10**400), max_value=10**400).map(lambda n: f"{n}e{abs(n) % 999}"),
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: format_datetime(d, usegmt=True)),
    st.datetimes().map(format_datetime),
    st.sampled_from(["inf", "-inf", "nan", "NaN", "Infinity", "1e999", "-1e999", " 7 ", "1_0", "0x10", "", " "]),
)
HEADER_NAMES = st.sampled_from(["retry-after", "retry-after-ms"])
HOSTILE_HEADERS = st.dictionaries(HEADER_NAMES, header_text, min_size=1)


@settings(max_examples=2000, deadline=None)
@given(headers=st.dictionaries(HEADER_NAMES, st.text(), min_size=1) | HOSTILE_HEADERS, cap=st.floats(0, 1e6))
@example(headers={"retry-after": "inf"}, cap=300.0)
@example(headers={"retry-after-ms": "nan"}, cap=300.0)
@example(headers={"retry-after": "1 Jan 99999999999999999999 00:00:00"}, cap=300.0)
@example(headers={"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, cap=300.0)
def test_any_retry_after_text_parses_to_nothing_or_a_bounded_time(headers: dict[str, str], cap: float) -> None:
    seconds = parse_retry_after(headers, cap=cap, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and 0.0 <= seconds <= cap)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "inf"}, 300.0),
        ({"retry-after": "1e999"}, 300.0),
        ({"retry-after-ms": "1e308"}, 300.0),
        ({"retry-after": "86400"}, 300.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "NaN", "retry-after": "4"}, 4.0),  # an unusable ms value defers to the other
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW - 60, timezone.utc), usegmt=True)}, 0.0),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW + 90, timezone.utc), usegmt=True)}, 90.0),
        ({"retry-after": "Tue, 01 Jan 2030 00:00:00 -0000"}, 300.0),  # no zone: read as GMT, then capped
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Mon, 32 Jan 2020 00:00:00 GMT"}, None),
    ],
)
def test_named_hostile_values(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, cap=300.0, now=NOW) == expected


# ----------------------------------------------------------------------------- through the plan

LIMITS = {"cooldown_max": 120.0, "retry_after_max": 20.0, "cooldown_time": 30.0}


def routed(clock: FakeClock) -> Router:
    return Router(
        {
            "groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a"), dep("http://b.test/v1", id="b")]}},
            "settings": {"num_retries": 3, "allowed_fails": 1, "backoff_initial": 0.5, **LIMITS},
        },
        clock=clock,
        rng=random.Random(7),
    )


def run(router: Router, clock: FakeClock, answer: Any) -> tuple[Any, list[float]]:
    """Drive one request's plan; every Send gets `answer()`; returns the final response and the sleeps."""
    raw = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions", content=raw)
    plan = router.plan(router.prepare(httpx2, request, raw))
    sleeps: list[float] = []
    reply: Any = None
    while True:
        try:
            action = plan.send(reply)
        except StopIteration as stop:
            return stop.value.response, sleeps
        if isinstance(action, Sleep):
            sleeps.append(action.seconds)
            clock.sleep(action.seconds)
            reply = None
        else:
            assert isinstance(action, Send)
            reply = answer()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=HOSTILE_HEADERS, status=st.sampled_from([429, 503]))
def test_provider_times_never_exceed_the_caps_anywhere(headers: dict[str, str], status: int) -> None:
    clock = FakeClock()
    router = routed(clock)
    raw_headers = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    body = b'{"error": {"message": "slow down", "type": "rate_limit"}}'

    def answer() -> Sent:
        return Sent(response=httpx2.Response(status, headers=raw_headers, content=body), body=body)

    first, sleeps = run(router, clock, answer)
    assert first.status_code in (status, 503)
    assert all(0 <= s <= LIMITS["retry_after_max"] for s in sleeps)
    longest = max(LIMITS["cooldown_max"], LIMITS["cooldown_time"])
    for dep_id in ("a", "b"):
        breaker = router.deployment_state(dep_id).breaker
        assert math.isfinite(breaker.open_until) and breaker.retry_in() <= longest
    second, _ = run(router, clock, answer)  # both cooling now, or a sibling answers again
    if second.headers.get("x-router-error") == "all_deployments_cooling":
        assert 1 <= int(second.headers["retry-after"]) <= LIMITS["cooldown_max"]
        assert json.loads(second.read())["error"]["retry_after_s"] <= LIMITS["cooldown_max"]


# ----------------------------------------------------------------------------- through real HTTP


@pytest.mark.parametrize(
    "value",
    ["inf", "nan", "1e999", "-5", "86400", "Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "soon"],
)
def test_hostile_retry_after_from_a_real_provider_is_bounded(fakes, make_router, clock, value):
    a = fakes["a"].fail(("status", 429, {"retry-after": value}, None), ("status", 429, {"retry-after": value}, None))
    router = make_router(
        {"groups": {"gpt": {"deployments": [dep(a)]}}, "settings": {"num_retries": 1, "backoff_initial": 0, **LIMITS}}
    )
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(transport=RouterTransport(router), base_url="https://api.openai.com/v1") as client:
        first = client.post("/chat/completions", json=body, headers={"authorization": "Bearer caller"})
        assert first.status_code in (200, 429)  # the provider's own answer, relayed
        assert all(s <= LIMITS["retry_after_max"] for s in clock.sleeps)
        assert router.deployment_state("a").breaker.retry_in() <= LIMITS["cooldown_max"]
        later = client.post("/chat/completions", json=body, headers={"authorization": "Bearer caller"})
    if later.status_code == 503:
        assert int(later.headers["retry-after"]) <= LIMITS["cooldown_max"]


def test_cooldown_max_in_every_config_form():
    from llm_cache.router import load_config

    native = {"groups": {"g": {"deployments": [{"model": "m"}]}}, "settings": {"cooldown_max": 42}}
    litellm = {
        "model_list": [{"model_name": "g", "litellm_params": {"model": "openai/m"}}],
        "router_settings": {"cooldown_max": 42},
    }
    portkey = {"targets": [{"provider": "openai", "override_params": {"model": "m"}}], "settings": {"cooldown_max": 42}}
    assert [load_config(c).settings.cooldown_max for c in (native, litellm, portkey)] == [42, 42, 42]
    assert load_config({"groups": native["groups"]}).settings.cooldown_max == 300.0  # the default


@pytest.mark.parametrize("name", ["cooldown_max", "retry_after_max", "cooldown_time", "timeout", "deadline"])
@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0])
def test_time_settings_must_be_finite_and_not_negative(name, value):
    from llm_cache.router import ConfigError, load_config

    with pytest.raises(ConfigError, match=name):
        load_config({"groups": {"g": {"deployments": [{"model": "m"}]}}, "settings": {name: value}})


def test_cooldown_clock_is_never_moved_past_the_cap_by_a_date_far_ahead():
    clock = FakeClock()
    router = routed(clock)
    far = format_datetime(datetime.now(timezone.utc) + timedelta(days=3650), usegmt=True)
    body = b'{"error": {"message": "later"}}'
    run(
        router,
        clock,
        lambda: Sent(response=httpx2.Response(429, headers={"retry-after": far}, content=body), body=body),
    )
    assert router.deployment_state("a").breaker.retry_in() <= LIMITS["cooldown_max"]


#: (the 429's headers, the attempts the request gets): a wait beyond retry_after_max ends a group's
#: retries at once (it fails over), so those get one attempt per group.
FOREVER = {
    "zero": ({"retry-after": "0"}, 8),
    "negative": ({"retry-after": "-1"}, 8),
    "nan": ({"retry-after": "nan"}, 8),
    "huge_ms": ({"retry-after-ms": "1e999"}, 2),
    "far_date": ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 2),
    "ratelimit_reset": ({"x-ratelimit-reset-requests": "99999h", "x-ratelimit-reset-tokens": "-1s"}, 8),
    "none": ({}, 8),
}


@pytest.mark.parametrize(("headers", "budget"), list(FOREVER.values()), ids=list(FOREVER))
def test_an_upstream_answering_429_forever_gets_the_attempt_budget_and_no_more(
    fake_provider, make_router, clock, headers, budget
):
    """The caller's own key is refused for ever (pass-through, so nothing cools down to stop the loop):
    each group of the fallback chain gets at most `num_retries + 1` attempts, each wait within the caps
    (`x-ratelimit-reset-*` is not read at all)."""
    deployment = {"model": "real", "api_base": fake_provider.openai_base_url}
    config = {
        "groups": {
            "gpt": {"deployments": [{**deployment, "id": "gpt"}]},
            "mini": {"deployments": [{**deployment, "id": "mini"}]},
        },
        "settings": {"num_retries": 3, "fallbacks": [{"gpt": ["mini"]}], "default_fallbacks": ["gpt"], **LIMITS},
    }
    router = make_router(config)
    fake_provider.refuse_key("caller", 429, headers)
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    base = "https://api.openai.com/v1"
    with httpx2.Client(transport=RouterTransport(router), base_url=base, timeout=600) as client:  # SDKs' default
        answer = client.post("/chat/completions", json=body, headers={"authorization": "Bearer caller"})
    assert answer.status_code == 429 and answer.headers["x-router-attempts"] == str(budget)
    assert fake_provider.count() == budget
    assert all(0 <= s <= LIMITS["retry_after_max"] for s in clock.sleeps) and len(clock.sleeps) <= 6
