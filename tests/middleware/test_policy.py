"""Per-request controls, as headers and as the body's `cache` field."""

from __future__ import annotations

import pytest

from llm_cache.middleware._policy import DEFAULT_POLICY, Policy, PolicyError, parse_policy


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


@pytest.mark.parametrize(
    "cache_control",
    ["NO-CACHE, Max-Age=30", " no-cache ,max-age = 30 ", 'no-cache, max-age="30"', 'no-cache,max-age= "30" '],
)
def test_cache_control_directives_ignore_case_spaces_and_quotes(cache_control: str) -> None:
    assert parse_policy({"cache-control": cache_control}, None) == Policy(no_cache=True, max_age=30.0)


def test_directives_the_cache_does_not_know_are_ignored() -> None:
    policy = parse_policy({"cache-control": "private, no-transform, max-stale=5, stale-if-error"}, None)
    assert policy == DEFAULT_POLICY


def test_stale_if_error_takes_seconds_and_refuses_anything_else() -> None:
    assert parse_policy({"cache-control": "max-age=5, stale-if-error=300"}, None).stale_if_error == 300.0
    with pytest.raises(PolicyError, match="stale-if-error"):
        parse_policy({"cache-control": "stale-if-error=soon"}, None)


def test_an_empty_cache_control_header_asks_for_nothing() -> None:
    assert parse_policy({"cache-control": ""}, None) == DEFAULT_POLICY


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("1.5", 1.5), ("1e3", 1000.0)])
def test_max_age_takes_any_finite_number_of_seconds_from_zero(value: str, seconds: float) -> None:
    assert parse_policy({"cache-control": f"max-age={value}"}, None).max_age == seconds


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf", "", "soon", "5X"])
def test_max_age_refuses_negative_infinite_and_non_numbers(value: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({"cache-control": f"max-age={value}"}, None)
    assert caught.value.param == "Cache-Control max-age"


@pytest.mark.parametrize("flag", ["no-cache", "no-store"])
def test_a_body_flag_set_to_false_asks_for_nothing(flag: str) -> None:
    assert parse_policy({}, {flag: False}) == DEFAULT_POLICY


@pytest.mark.parametrize(("directive", "field"), [("no-cache", "no_cache"), ("no-store", "no_store")])
def test_a_body_flag_set_to_false_cannot_lift_the_header_directive(directive: str, field: str) -> None:
    policy = parse_policy({"cache-control": directive}, {directive: False})
    assert getattr(policy, field) is True


@pytest.mark.parametrize(("directive", "field"), [("no-cache", "no_cache"), ("no-store", "no_store")])
def test_a_body_flag_set_to_true_applies_without_the_header(directive: str, field: str) -> None:
    policy = parse_policy({"cache-control": "max-age=5"}, {directive: True})
    assert getattr(policy, field) is True
    assert policy.max_age == 5.0


def test_the_body_ttl_and_namespace_win_over_the_headers() -> None:
    headers = {"x-cache-ttl": "60", "x-cache-namespace": "from-header"}
    assert parse_policy(headers, {"ttl": 5, "namespace": "from-body"}) == Policy(ttl=5.0, namespace="from-body")


def test_the_body_s_maxage_alone_sets_max_age() -> None:
    assert parse_policy({}, {"s-maxage": 7}).max_age == 7.0


def test_litellm_s_max_age_is_an_alias_of_s_maxage() -> None:
    assert parse_policy({}, {"s-max-age": 7}).max_age == 7.0
    assert parse_policy({"cache-control": "max-age=60"}, {"s-max-age": 10}).max_age == 10.0
    assert parse_policy({}, {"s-max-age": 30, "s-maxage": 20}).max_age == 20.0


def test_the_stricter_max_age_wins_whichever_side_sets_it() -> None:
    assert parse_policy({"cache-control": "max-age=60"}, {"s-maxage": 10}).max_age == 10.0
    assert parse_policy({"cache-control": "max-age=10"}, {"s-maxage": 60}).max_age == 10.0


def test_use_cache_false_is_kept_as_an_explicit_refusal() -> None:
    assert parse_policy({}, {"use-cache": False}).use_cache is False
    assert parse_policy({}, {}).use_cache is None


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ({"no-store": 1}, "cache.no-store"),
        ({"use-cache": "true"}, "cache.use-cache"),
        ({"ttl": True}, "cache.ttl"),
        ({"s-maxage": -1}, "cache.s-maxage"),
        ({"s-max-age": "soon"}, "cache.s-max-age"),
        ({"namespace": 5}, "cache.namespace"),
    ],
)
def test_each_body_control_is_validated_under_its_own_name(field: dict[str, object], param: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({}, field)
    assert caught.value.param == param


@pytest.mark.parametrize(("namespace", "valid"), [("a" * 64, True), ("a" * 65, False), ("ns\n", False), ("", False)])
def test_a_namespace_is_1_to_64_safe_characters(namespace: str, valid: bool) -> None:
    if valid:
        assert parse_policy({"x-cache-namespace": namespace}, None).namespace == namespace
    else:
        with pytest.raises(PolicyError):
            parse_policy({"x-cache-namespace": namespace}, None)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"a": 1}, "got an object"),
        ([1], "got an array"),
        (2**64, "got an integer past 64 bits"),
        (2**64 - 1, f"got {2**64 - 1}"),
        ("x" * 58, f"got '{'x' * 58}'"),
        ("x" * 59, f"got '{'x' * 56}..."),
    ],
)
def test_an_error_quotes_the_clients_value_short(value: object, shown: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({}, {"no-cache": value})
    assert caught.value.message.endswith(shown)
    assert str(caught.value) == f"cache.no-cache: {caught.value.message}"


def test_a_number_too_large_for_a_float_is_refused_as_seconds() -> None:
    with pytest.raises(PolicyError, match="integer past 64 bits"):
        parse_policy({}, {"ttl": 10**400})


def test_unknown_body_controls_are_named_three_at_most() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({}, {"d": 1, "c": 1, "b": 1, "a": 1})
    assert "'a', 'b', 'c';" in caught.value.message
    assert "'d'" not in caught.value.message


def test_lifetimes_asked_for_are_cut_to_max_ttl() -> None:
    policy = parse_policy({"x-cache-ttl": "90000", "cache-control": "stale-if-error=5000"}, None, max_ttl=3600)
    assert (policy.ttl, policy.stale_if_error) == (3600.0, 3600.0)
    assert parse_policy({}, {"ttl": 60}, max_ttl=3600).ttl == 60.0
    assert parse_policy({"x-cache-ttl": "90000"}, None).ttl == 90000.0  # no bound given: none applied
