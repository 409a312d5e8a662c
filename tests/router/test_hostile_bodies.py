"""Any body is routed or passed on, never an exception: `Router.prepare` and the plan are total.

The rule, not a depth number: a body the router cannot read (not JSON, not an object, nested deeper
than the parser goes in the current stack) is routed on its path alone and forwarded byte for byte,
as any non-JSON body is; a body it read but cannot re-encode for a deployment (nested just under the
parser's limit) is answered with a router-made 400; affinity, an optimisation, is skipped for a body
too deep to hash. Field values of any JSON type (`model`, `max_tokens`, `stream`, `messages`) are
read for what they are or ignored.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx2
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.router import Router, RouterTransport
from llm_cache.router._core import Send, Sent, Sleep
from llm_cache.router._errors import read_json

from .conftest import FakeClock, dep

AUTH = {"authorization": "Bearer caller"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "model": json_values | st.just("gpt"),
            "max_tokens": json_values | st.sampled_from([10**400, -(10**30), 1e308]),
            "max_completion_tokens": json_values,
            "stream": json_values,
            "messages": json_values,
            "prompt_cache_key": json_values,
            "system": json_values,
            "tools": json_values,
            "contents": json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=1, max_value=20_000).map(
        lambda depth: b'{"model":"gpt","x":' + b"[" * depth + b"]" * depth + b"}"
    ),
)


def router_for_properties() -> Router:
    clock = FakeClock()
    return Router(
        {
            "groups": {"gpt": {"deployments": [dep("http://a.test/v1", id="a", model="renamed")]}},
            "settings": {"num_retries": 1, "backoff_initial": 0},
        },
        clock=clock,
        rng=random.Random(1),
        sleep=clock.sleep,
    )


@settings(max_examples=2000, deadline=None)
@given(
    body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1beta/models/gpt:generateContent"])
)
def test_any_body_is_prepared_and_planned_without_an_exception(body: bytes, path: str) -> None:
    router = router_for_properties()
    request = httpx2.Request(
        "POST", f"https://api.example{path}", content=body, headers={"content-type": "application/json"}
    )
    prepared = router.prepare(httpx2, request, body)
    assert prepared.est_tokens >= 0 and (prepared.model is None or isinstance(prepared.model, str))
    plan = router.plan(prepared)
    ok = b'{"choices": []}'
    reply: Any = None
    while True:
        try:
            action = plan.send(reply)
        except StopIteration as stop:
            final = stop.value
            break
        reply = None if isinstance(action, Sleep) else Sent(response=httpx2.Response(200, content=ok), body=ok)
        assert isinstance(action, (Send, Sleep)) or action.request is request  # a Passthrough forwards it as it came
    assert final.exception is None and final.response.status_code in (200, 400)
    if final.release is not None:  # a stream holds its slot until closed
        final.release(False)
    assert all(st.in_flight == 0 and not st.breaker.probing for st in router.states["gpt"])


# ----------------------------------------------------------------------------- depth, by the rule, through HTTP


def parse_limit() -> int:
    """The deepest `[[...]]` the JSON parser reads from this stack (depends on the interpreter, not on us)."""
    lo, hi = 1, 1 << 20
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if read_json(b"[" * mid + b"]" * mid) is not None:
            lo = mid
        else:
            hi = mid - 1
    return lo


def nested(depth: int) -> bytes:
    return b'{"model":"gpt","messages":[{"role":"user","content":' + b"[" * depth + b"]" * depth + b"}]}"


def test_bodies_around_and_far_beyond_the_parser_limit_are_routed_passed_on_or_refused(fakes, make_router):
    a, c = fakes["a"], fakes["c"]
    router = make_router(
        {"groups": {"gpt": {"deployments": [dep(a, model="renamed")]}}, "settings": {"num_retries": 0}}
    )
    limit = parse_limit()
    depths = [*range(max(1, limit - 120), limit + 6), 2_000, 100_000]
    outcomes: dict[str, list[int]] = {"routed": [], "passed_on": [], "refused": []}
    with httpx2.Client(transport=RouterTransport(router), base_url=f"{c.url}/v1", timeout=10) as client:
        for depth in depths:
            seen_before = (a.count, c.count)
            response = client.post("/chat/completions", content=nested(depth), headers=AUTH)
            if response.status_code == 400:
                assert response.json()["error"]["code"] == "router_unreadable_body"
                assert (a.count, c.count) == seen_before  # nothing was sent
                outcomes["refused"].append(depth)
            else:
                assert response.status_code == 200
                outcomes["routed" if a.count > seen_before[0] else "passed_on"].append(depth)
    assert outcomes["passed_on"] and max(outcomes["routed"] + outcomes["refused"]) < min(outcomes["passed_on"])
    assert {2_000, 100_000} <= set(outcomes["passed_on"])  # unreadable: forwarded as it came, to its own URL
    assert all(seen.body == {} or "model" in seen.body for seen in c.seen)


def test_a_refusing_router_answers_400_to_a_body_it_cannot_read(fakes, make_router):
    router = make_router(
        {"groups": {"gpt": {"deployments": [dep(fakes["a"])]}}, "settings": {"unknown_models": "refuse"}}
    )
    with httpx2.Client(transport=RouterTransport(router), base_url=f"{fakes['c'].url}/v1") as client:
        response = client.post("/chat/completions", content=nested(100_000), headers=AUTH)
    assert response.status_code == 400 and response.json()["error"]["code"] == "model_required"
    assert (fakes["a"].count, fakes["c"].count) == (0, 0)


def test_affinity_is_skipped_for_a_body_too_deep_to_hash(fakes, make_router):
    router = make_router({"groups": {"gpt": {"deployments": [dep(fakes["a"], model="gpt")]}}})  # no rewrite
    limit = parse_limit()
    with httpx2.Client(transport=RouterTransport(router), base_url=f"{fakes['c'].url}/v1") as client:
        statuses = {
            client.post("/chat/completions", content=nested(d), headers=AUTH).status_code
            for d in range(limit - 60, limit)
        }
    assert statuses == {200}
