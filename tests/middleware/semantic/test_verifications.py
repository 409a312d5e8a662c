"""What bounded mode's verifications leave behind for the operator: the similarity histogram and the
outcome counter on `/metrics`, and the recent outcomes that `llm-cache calibrate --from-gateway`
reads. A real gateway, the local model and the fake provider (its answers differ word for word, so
the exact judge finds every stored answer wrong)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.cli import main
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.semantic import RedisEvidence
from llm_cache.middleware.semantic.calibrate import outcomes_report
from llm_cache.middleware.semantic.outcomes import InProcessOutcomes
from tests.support.fake_provider_fixtures import FakeProviderServer, RunningFakeProvider

ADMIN = "admin-secret"
QUESTIONS = (
    "How do I reset my password?",  # a miss: nothing stored yet
    "How can I reset my password?",  # a candidate, verified
    "How could I reset my password?",  # verified: the second of the cap's two a minute
    "How should I reset my password?",  # a candidate the cap leaves unverified
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    """A gateway whose bounded mode has seen QUESTIONS (its URL), on a fake provider of its own."""
    provider = FakeProviderServer()
    fake_provider = provider.start()
    try:
        yield from _gateway(fake_provider)
    finally:
        provider.stop()


def _gateway(fake_provider: RunningFakeProvider) -> Iterator[str]:
    config = parse_config(
        {
            "cache": {
                "store": {"type": "memory"},
                "semantic": {
                    "max_error_rate": 0.02,
                    "judge": {"type": "exact"},
                    "verifications_per_minute": 2,
                    "timeout": 60.0,
                },
            },
            "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}},
            "admin_key": ADMIN,
        }
    )
    server = BackgroundServer(create_gateway(config), deadline=120).start()  # the lifespan loads the model
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-alice", max_retries=0)
        for question in QUESTIONS:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
        deadline = time.monotonic() + 60  # the judge runs after each caller is answered
        while len(verifications(server.url)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield server.url
    finally:
        server.stop()


def verifications(url: str) -> list[dict[str, Any]]:
    answer = httpx2.get(f"{url}/cache/semantic/verifications", headers={"x-admin-key": ADMIN})
    return answer.json()["verifications"]  # type: ignore[no-any-return]


def scraped(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """`/metrics` as `sample name -> labels -> value`."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(httpx2.get(f"{url}/metrics").text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_count_verification_outcomes_and_the_ones_the_cap_refused(gateway: str) -> None:
    outcomes = scraped(gateway)["llm_cache_semantic_verifications_total"]
    assert outcomes == {(("outcome", "disagreed"),): 2.0, (("outcome", "capped"),): 1.0}


def test_metrics_hold_the_nearest_similarity_of_each_lookup_that_found_a_stored_prompt(gateway: str) -> None:
    samples = scraped(gateway)
    assert samples["llm_cache_semantic_similarity_count"] == {(): 3.0}  # the first question found nothing
    buckets = samples["llm_cache_semantic_similarity_bucket"]
    assert buckets[(("le", "0.75"),)] == 0.0 and buckets[(("le", "1.0"),)] == 3.0  # paraphrases: above 0.75
    assert 3 * 0.75 < samples["llm_cache_semantic_similarity_sum"][()] <= 3.0


def test_the_gateway_serves_the_recent_outcomes_to_the_admin_only(gateway: str) -> None:
    records = verifications(gateway)
    assert [r["outcome"] for r in records] == ["disagreed", "disagreed"]
    assert all(0.75 <= r["similarity"] <= 1.0 for r in records)
    assert httpx2.get(f"{gateway}/cache/semantic/verifications").status_code == 401
    assert httpx2.get(f"{gateway}/cache/semantic/verifications", headers={"x-admin-key": "no"}).status_code == 403


@pytest.mark.parametrize(
    ("limit", "status", "count"), [("1", 200, 1), ("0", 200, 0), ("-1", 400, None), ("x", 400, None)]
)
def test_the_outcomes_limit_is_a_count_never_a_slice_from_the_end(
    gateway: str, limit: str, status: int, count: int | None
) -> None:
    answer = httpx2.get(
        f"{gateway}/cache/semantic/verifications", params={"limit": limit}, headers={"x-admin-key": ADMIN}
    )
    assert answer.status_code == status
    if count is not None:
        assert len(answer.json()["verifications"]) == count


def test_calibrate_from_a_gateway_prints_the_report_over_its_outcomes(
    gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", "--from-gateway", gateway, "--admin-key", ADMIN, "--target-precision", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "bound 0.02 of requests" in out
    assert "2 verifications: 0 agreed, 2 disagreed, 0 not verified (left out)" in out
    assert "No threshold reaches precision 0.900 with the guard on." in out
    assert "threshold  guard  served  precision  recall  wrong-hit rate" in out


def test_calibrate_from_a_gateway_without_the_admin_key_says_so(
    gateway: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLM_CACHE_ADMIN_KEY", raising=False)
    assert main(["calibrate", "--from-gateway", gateway]) == 1
    assert "gateway answered 401" in capsys.readouterr().err


@pytest.mark.parametrize("answer", [[1, 2], {"verifications": [{"similarity": "high"}]}, {"threshold": 0.9}])
def test_calibrate_from_something_that_is_not_a_gateway_says_so_in_one_line(
    answer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def outcomes(request: Any) -> JSONResponse:
        return JSONResponse(answer)

    app = Starlette(routes=[Route("/cache/semantic/verifications", outcomes)])
    with BackgroundServer(app) as server:
        assert main(["calibrate", "--from-gateway", server.url, "--admin-key", ADMIN]) == 1
    assert capsys.readouterr().err.strip().endswith("did not answer a list of verification outcomes")


def test_the_outcome_report_leaves_out_verifications_without_a_verdict() -> None:
    records = [(0.97, "agreed"), (0.95, "agreed"), (0.93, "not_verified"), (0.91, "disagreed"), (0.85, "agreed")]
    text = outcomes_report(records, 0.99)
    assert "5 verifications: 3 agreed, 1 disagreed, 1 not verified (left out)" in text
    assert "Precision 0.990 with the guard on: threshold 0.92 (precision 1.000, recall 0.667)." in text
    assert "guard off" not in text  # every verified candidate had passed the guard


async def test_in_process_outcomes_keep_the_newest_records_first() -> None:
    log = InProcessOutcomes(max_records=2)
    for record in ((0.9, "agreed"), (0.8, "disagreed"), (0.85, "not_verified")):
        await log.log_outcome(*record)
    assert await log.outcomes(10) == [(0.85, "not_verified"), (0.8, "disagreed")]


async def test_redis_evidence_keeps_the_newest_outcomes_for_every_pod(redis_server: Any) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    first, second = (RedisEvidence(redis_server.url, prefix=prefix, max_outcomes=2) for _ in range(2))
    try:
        await first.log_outcome(0.9, "agreed")
        await second.log_outcome(0.8125, "disagreed")
        await first.log_outcome(0.85, "not_verified")
        assert await second.outcomes(10) == [(0.85, "not_verified"), (0.8125, "disagreed")]
        assert await second.outcomes(1) == [(0.85, "not_verified")]
        assert await second.outcomes(0) == []
    finally:
        await first.aclose()
        await second.aclose()
