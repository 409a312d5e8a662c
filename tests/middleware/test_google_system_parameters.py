"""Google's system parameters (`alt`, `fields`, `access_token`, `quotaUser`, ...) against the key and the
gateway: each row of the classification is in `test_request_fields.py`; these are the answers behind it
(docs/providers.md, "Google's system parameters")."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import orjson

from llm_cache.middleware import Cache
from tests.middleware.test_gateway import Gateway, gateway_factory  # noqa: F401
from tests.middleware.test_what_may_be_stored import GENERATE, client
from tests.support.fake_provider_fixtures import RunningFakeProvider


def test_a_partial_answer_a_field_mask_asked_for_is_never_served_to_a_caller_who_asked_for_all_of_it(
    fake_provider: RunningFakeProvider,
) -> None:
    """A field mask (`X-Goog-FieldMask`, `fields`, `$fields`) leaves only the fields named. Before, the
    header was not keyed: its partial answer was stored under the full answer's key and served to the
    next caller who sent none (no `usageMetadata`, no `modelVersion`)."""
    cache = Cache()
    with client(cache, fake_provider) as http:
        for mask in (
            {"x-goog-fieldmask": "candidates"},
            {"query": "fields=candidates"},
            {"query": "%24fields=candidates"},
        ):
            query = mask.pop("query", "")
            partial = http.post(
                f"{GENERATE.path}?{query}", content=orjson.dumps(GENERATE.body), headers={**GENERATE.headers, **mask}
            )
            assert set(partial.json()) == {"candidates"}, partial.text
            again = http.post(
                f"{GENERATE.path}?{query}", content=orjson.dumps(GENERATE.body), headers={**GENERATE.headers, **mask}
            )
            assert again.headers["x-cache"] == "HIT" and again.content == partial.content
        whole = GENERATE.send(http)
    assert whole.headers["x-cache"] == "MISS" and {"usageMetadata", "modelVersion"} <= set(whole.json())


def test_a_gateway_with_the_owners_key_forwards_no_oauth_token_a_caller_put_in_the_query(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
) -> None:
    """The owner's key replaces the caller's credentials: before, only `key=` left the query, and a caller's
    `access_token=` went upstream beside the owner's key."""
    gateway = gateway_factory({"upstreams": {"gemini": {"base_url": fake_provider.url, "api_key": "AIza-owner"}}})
    answer = httpx2.post(
        f"{gateway.url}{GENERATE.path}?alt=json&access_token=ya29.caller&oauth_token=ya29.old",
        content=orjson.dumps(GENERATE.body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    sent = fake_provider.requests[-1]
    assert sent.query == "alt=json" and sent.headers["x-goog-api-key"] == "AIza-owner"
