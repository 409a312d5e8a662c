"""Per-request controls, as headers and as the body's `cache` field."""

from __future__ import annotations

import pytest

from llm_cache.middleware.policy import DEFAULT_POLICY, Policy, PolicyError, parse_policy


def test_no_controls_give_the_shared_default() -> None:
    assert parse_policy({}, None) is DEFAULT_POLICY


def test_cache_control_directives() -> None:
    policy = parse_policy({"cache-control": "no-cache, no-store, max-age=30, only-if-cached"}, None)
    assert policy == Policy(no_cache=True, no_store=True, max_age=30.0, only_if_cached=True)


def test_ttl_and_namespace_headers() -> None:
    assert parse_policy({"x-cache-ttl": "60", "x-cache-namespace": "faq"}, None) == Policy(ttl=60.0, namespace="faq")


def test_litellm_style_body_controls() -> None:
    field = {"no-cache": True, "no-store": True, "ttl": 10, "s-maxage": 5, "namespace": "n1", "use-cache": True}
    assert parse_policy({}, field) == Policy(True, True, 5.0, False, 10.0, "n1", True)


def test_the_stricter_max_age_wins() -> None:
    assert parse_policy({"cache-control": "max-age=10"}, {"s-maxage": 60}).max_age == 10.0


@pytest.mark.parametrize(
    ("headers", "field", "param"),
    [
        ({"x-cache-ttl": "soon"}, None, "x-cache-ttl"),
        ({"x-cache-ttl": "-1"}, None, "x-cache-ttl"),
        ({"x-cache-namespace": "a b"}, None, "x-cache-namespace"),
        ({}, {"ttl": "x"}, "cache.ttl"),
        ({}, {"no-cache": "yes"}, "cache.no-cache"),
        ({}, {"typo": True}, "cache"),
        ({}, ["no-cache"], "cache"),
    ],
)
def test_malformed_controls_are_rejected_naming_the_parameter(
    headers: dict[str, str], field: object, param: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(headers, field)
    assert caught.value.param == param
