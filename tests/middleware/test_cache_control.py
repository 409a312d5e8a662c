"""One reading of `Cache-Control` for both sides: a request's own controls (`parse_policy`) and an
upstream answer's (`upstream_storage`) are tokenized alike, so a hostile value means the same on each:
a directive quoted inside another's argument does not count, names are case-insensitive, repeated
field lines are one list, and a directive given twice takes its most restrictive value."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware._freshness import upstream_storage
from llm_cache.middleware._headers import read_headers
from llm_cache.middleware._policy import PolicyError, parse_policy
from llm_cache.middleware.providers import ChatCompletions
from tests.support.fake_provider_fixtures import RunningFakeProvider

HOSTILE = [
    # (field lines, the request's reading: no_store, no_cache, max_age; the answer's: why not stored, fresh for)
    (['private="x, no-store, y"'], (False, False, None), (None, None)),
    (['no-cache="no-store, max-age=1"'], (False, True, None), (None, None)),
    (["NO-STORE"], (True, False, None), ("upstream-no-store", None)),
    (["max-age=60", "no-store"], (True, False, 60.0), ("upstream-no-store", None)),
    (["max-age=5, max-age=60"], (False, False, 5.0), (None, 5.0)),
    (["max-age=60", "MAX-AGE=5"], (False, False, 5.0), (None, 5.0)),
    (['Max-Age="30"'], (False, False, 30.0), (None, 30.0)),
]
IDS = ["no-store-quoted", "directives-quoted", "upper-case", "two-lines", "twice", "twice-two-lines", "quoted-age"]


def _lines(values: list[str]) -> list[tuple[bytes, bytes]]:
    return [(b"Cache-Control", value.encode("latin-1")) for value in values]


@pytest.mark.parametrize(("values", "request_reading", "answer_reading"), HOSTILE, ids=IDS)
def test_a_hostile_cache_control_reads_alike_on_a_request_and_on_an_answer(
    values: list[str], request_reading: tuple[Any, ...], answer_reading: tuple[Any, ...]
) -> None:
    headers, _ = read_headers(_lines(values), {})  # as both adapters read a request's header lines
    policy = parse_policy(headers, None)
    assert (policy.no_store, policy.no_cache, policy.max_age) == request_reading
    raw = [("Cache-Control", value) for value in values]
    why, fresh_for = upstream_storage(ChatCompletions(), "application/json", raw, own_credential=False)
    assert ((why or "").partition(":")[0] or None, fresh_for) == answer_reading


@pytest.mark.parametrize(
    "values",
    [["max-age=5, max-age=soon"], ["max-age=5", "max-age=-1"], ['stale-if-error=5, stale-if-error="x"'], ["max-age"]],
)
def test_a_bad_value_of_a_directive_given_twice_is_still_a_400(values: list[str]) -> None:
    headers, _ = read_headers(_lines(values), {})
    with pytest.raises(PolicyError, match="Cache-Control"):
        parse_policy(headers, None)


def test_a_stale_if_error_given_twice_takes_the_shorter() -> None:
    headers, _ = read_headers(_lines(["stale-if-error=300", "stale-if-error=60, stale-if-error"]), {})
    assert parse_policy(headers, None).stale_if_error == 60.0


def test_a_no_store_on_one_of_a_requests_cache_control_lines_is_honoured(
    fake_provider_session: RunningFakeProvider,
) -> None:
    cache = Cache()
    with httpx2.Client(transport=CachingTransport(cache=cache)) as http:
        for _ in range(2):
            response = http.post(
                f"{fake_provider_session.url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                headers=[("authorization", "Bearer sk-alice"), *_lines(["no-store", "max-age=60"])],
            )
            assert (response.status_code, response.headers["x-cache"]) == (200, "MISS")
    assert cache.stats.stored == 0
    assert fake_provider_session.count() == 2
