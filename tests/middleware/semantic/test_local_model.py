"""A local model (the sentence-transformers embedder, a cross-encoder) runs on a thread of its own,
with at most `max_in_flight` calls running or waiting: one more is refused at once (`ModelBusy`), and
the lookup is a miss that goes upstream, counted as `semantic_busy`. A waiting call whose caller gave
up never runs, and the loop's default executor is never the model's. The prompts waiting for a local
embedder are embedded together, in one model call, each caller getting its own rows.

Real parts: the embedder and reranker classes, the openai SDK through the caching transport to the
fake provider. Only the third-party model object is a stand-in (`HeldModel`), so a test can hold a
call inside it for as long as it needs.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import orjson
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware.cli import main
from llm_cache.middleware.config import ConfigError, build_cache, parse_config
from llm_cache.middleware.semantic import (
    CrossEncoderReranker,
    Embedder,
    InProcessIndex,
    ModelBusy,
    OnnxMiniLMEmbedder,
    SemanticCache,
    SentenceTransformerEmbedder,
)
from llm_cache.middleware.semantic._local_model import DEFAULT_MAX_IN_FLIGHT, LocalModel
from tests.support.embedders import WordsEmbedder, bag_of_words
from tests.support.fake_provider_fixtures import RunningFakeProvider

CHAT = "/chat/completions"
STORED = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"  # five of STORED's six words: similarity 5/6
OTHER = "Where is the shop?"
OTHER_PARAPHRASE = "Where is the shop, please?"  # four of OTHER's words and one more: similarity 0.89
BOUND = 10.0
"""The longest any step here may take: a step that needs the model while it is held would hang."""
PATIENT = 60.0
"""A lookup timeout no test reaches: a lookup that ends did not end by timing out."""


class HeldModel:
    """Stands in for a sentence-transformers `SentenceTransformer` (`encode`) or one-output
    `CrossEncoder` (`predict`): a call waits while the test holds the model, then answers from
    `bag_of_words`. It records each call that started and the thread it ran on."""

    num_labels = 1

    def __init__(self) -> None:
        self.free = threading.Event()
        self.free.set()
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self._changed = threading.Condition()

    def hold(self) -> None:
        self.free.clear()

    def release(self) -> None:
        self.free.set()

    async def started(self, calls: int) -> None:
        """Return once `calls` calls have started (waiting on a thread: the model's runs on its own)."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: len(self.calls) >= calls, BOUND)

        assert await asyncio.to_thread(wait), f"{calls} calls did not start: {self.calls}"

    def _call(self, texts: list[str]) -> None:
        with self._changed:
            self.calls.append(texts)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()
        self.free.wait(BOUND)

    def encode(self, texts: list[str], **options: Any) -> np.ndarray:
        self._call(texts)
        return bag_of_words(texts)

    def predict(self, pairs: list[tuple[str, str]], **options: Any) -> np.ndarray:
        self._call([text for pair in pairs for text in pair])
        return np.asarray([float(np.dot(*bag_of_words(pair))) for pair in pairs])


class HeldEmbedder(SentenceTransformerEmbedder):
    """The local embedder on a `HeldModel` (named `sentence-transformers:<path>`)."""

    def __init__(self, model: HeldModel, path: str = "held", **options: Any) -> None:
        super().__init__(path, **options)
        self.model = model
        self.built_on: str | None = None

    def _build(self) -> Any:
        self.built_on = threading.current_thread().name
        return self.model


class HeldCrossEncoder(CrossEncoderReranker):
    """The local reranker on a `HeldModel` (named `cross-encoder:held`)."""

    def __init__(self, model: HeldModel, **options: Any) -> None:
        super().__init__("/models/held", timeout=PATIENT, **options)
        self.model = model

    def _build(self) -> Any:
        return self.model


@pytest.fixture
def model() -> Iterator[HeldModel]:
    held = HeldModel()
    try:
        yield held
    finally:
        held.release()  # a test that failed midway leaves no thread waiting


def client_for(cache: Cache, fake: RunningFakeProvider) -> openai.AsyncOpenAI:
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    return openai.AsyncOpenAI(api_key="sk-alice", base_url=fake.openai_base_url, http_client=http_client, max_retries=0)


async def ask(client: openai.AsyncOpenAI, question: str) -> Any:
    messages = [{"role": "user", "content": question}]
    create = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    return await asyncio.wait_for(create, BOUND)


def answer(text: str) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


def content(answer: Any) -> str:
    return str(answer.parse().choices[0].message.content)


def errors(cache: Cache) -> dict[tuple[str, str], int]:
    return dict(cache.telemetry.snapshot()["llm_cache_store_errors"])


# -- through the cache --------------------------------------------------------------------------------


async def test_a_lookup_the_embedder_is_too_busy_for_is_a_miss_at_once_and_its_answer_is_stored(
    fake_provider: RunningFakeProvider, model: HeldModel
) -> None:
    embedder = HeldEmbedder(model, max_in_flight=1)
    cache = Cache(semantic=SemanticCache(embedder, InProcessIndex(), threshold=0.75, timeout=PATIENT))
    client = client_for(cache, fake_provider)
    model.hold()
    first = asyncio.ensure_future(ask(client, STORED))
    await model.started(1)

    refused = await ask(client, OTHER)  # within BOUND, though the lookup timeout is PATIENT

    assert refused.headers["x-cache"] == "MISS" and OTHER in content(refused)  # the provider's answer
    assert model.calls == [[STORED]]  # no more calls started than the limit
    assert cache.stats.semantic_errors == 1
    assert errors(cache) == {("embedder:sentence-transformers:held", "semantic_busy"): 1}

    model.release()
    assert (await first).headers["x-cache"] == "MISS"
    again = await ask(client, PARAPHRASE)  # the model is used again
    assert (again.headers["x-cache"], again.headers["x-cache-match"]) == ("HIT", "semantic")
    # the refused lookup's answer is stored (an exact hit) but not indexed by meaning
    assert (await ask(client, OTHER)).headers["x-cache"] == "HIT"
    assert (await ask(client, OTHER_PARAPHRASE)).headers["x-cache"] == "MISS"
    assert fake_provider.count(CHAT) == 3
    await cache.close()


async def test_a_judgment_the_busy_model_refused_records_nothing(model: HeldModel) -> None:
    embedder = HeldEmbedder(model, max_in_flight=1)
    semantic = SemanticCache(embedder, InProcessIndex(), max_error_rate=0.02, timeout=PATIENT)
    model.hold()
    lookup = asyncio.ensure_future(embedder.embed([STORED]))  # another caller's lookup fills the model
    await model.started(1)

    verdict = await semantic.verified(PARAPHRASE, "stored", 0.9, answer("It is 42."), answer("It is 17."))

    assert verdict is None  # the judge never ran: no comparison, so neither right nor wrong is learned
    assert semantic.bound is not None
    assert sum((await semantic.bound.evidence.tally(100)).checked) == 0
    assert await semantic.bound.evidence.wrong_at("stored") is None
    assert await semantic.outcomes.outcomes(10) == [(0.9, "not_verified")]
    model.release()
    await lookup
    await semantic.close()  # the model's thread ends with it


async def test_a_check_the_reranker_is_too_busy_for_is_a_miss_at_once(
    fake_provider: RunningFakeProvider, model: HeldModel
) -> None:
    reranker = HeldCrossEncoder(model, max_in_flight=1)
    semantic = SemanticCache(WordsEmbedder(), InProcessIndex(), threshold=0.75, reranker=reranker, rerank_min_score=0.5)
    cache = Cache(semantic=semantic)
    client = client_for(cache, fake_provider)
    await ask(client, STORED)
    model.hold()
    checked = asyncio.ensure_future(ask(client, PARAPHRASE))
    await model.started(1)

    refused = await ask(client, "How may I reset my password?")

    assert refused.headers["x-cache"] == "MISS"
    assert errors(cache) == {("reranker:cross-encoder:held", "semantic_busy"): 1}
    model.release()
    answer = await checked
    assert (answer.headers["x-cache"], answer.headers["x-cache-match"]) == ("HIT", "semantic")
    assert len(model.calls) == 1
    await cache.close()


# -- the model's own threads ---------------------------------------------------------------------------


async def test_a_call_past_the_limit_is_refused_at_once_and_never_runs(model: HeldModel) -> None:
    embedder = HeldEmbedder(model, max_in_flight=2)
    model.hold()
    running = asyncio.ensure_future(embedder.embed(["running"]))
    await model.started(1)
    waiting = asyncio.ensure_future(embedder.embed(["waiting"]))
    await asyncio.sleep(0)  # lets `waiting` take its place in the line (it needs no thread to)

    with pytest.raises(ModelBusy, match="sentence-transformers:held has 2 calls running or waiting"):
        await embedder.embed(["refused"])
    model.release()
    await asyncio.wait_for(asyncio.gather(running, waiting), BOUND)
    await embedder.embed(["later"])
    assert model.calls == [["running"], ["waiting"], ["later"]]
    await embedder.aclose()


async def test_a_waiting_call_whose_caller_gave_up_never_runs(model: HeldModel) -> None:
    embedder = HeldEmbedder(model)
    model.hold()
    running = asyncio.ensure_future(embedder.embed(["running"]))
    await model.started(1)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(embedder.embed(["gave up"]), 0.05)  # waiting behind `running`
    model.release()
    await asyncio.wait_for(running, BOUND)
    await embedder.embed(["later"])  # after "gave up" in the line
    assert model.calls == [["running"], ["later"]]
    await embedder.aclose()


async def test_the_loops_default_executor_stays_free_while_the_model_is_held(model: HeldModel) -> None:
    embedder = HeldEmbedder(model)
    model.hold()
    running = asyncio.ensure_future(embedder.embed(["running"]))
    await model.started(1)
    callers = [asyncio.wait_for(embedder.embed([f"prompt {n}"]), 0.05) for n in range(DEFAULT_MAX_IN_FLIGHT + 24)]
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert {type(outcome) for outcome in outcomes} == {TimeoutError, ModelBusy}  # the limit less one waited, 25 refused

    other = await asyncio.wait_for(asyncio.to_thread(lambda: threading.current_thread().name), BOUND)

    assert not other.startswith("llm-cache")
    assert model.threads == {"llm-cache sentence-transformers:held"}
    assert model.calls == [["running"]]
    model.release()
    await asyncio.wait_for(running, BOUND)
    await embedder.aclose()


async def test_start_loads_the_model_on_its_thread(model: HeldModel) -> None:
    embedder = HeldEmbedder(model)
    await SemanticCache(embedder).start()
    assert embedder._local.loaded and embedder.built_on == "llm-cache sentence-transformers:held"
    await embedder.aclose()


async def test_closing_ends_the_models_thread_and_a_later_call_starts_another(model: HeldModel) -> None:
    embedder = HeldEmbedder(model, path="closing")
    await embedder.embed([STORED])
    [thread] = [t for t in threading.enumerate() if t.name == "llm-cache sentence-transformers:closing"]

    await embedder.aclose()
    thread.join(BOUND)

    assert not thread.is_alive()
    assert (await embedder.embed([STORED])).shape == (1, 1024)
    await embedder.aclose()


async def test_an_idle_thread_ends_and_frees_a_model_dropped_without_closing() -> None:
    local = LocalModel("test model", "idle", lambda: "the model", idle=0.01)
    assert await local.run(lambda model, word: f"{model} says {word}", "hi") == "the model says hi"
    thread = await local.run(lambda model: threading.current_thread())
    thread.join(BOUND)
    assert not thread.is_alive()

    later = await local.run(lambda model: threading.current_thread())  # a later call starts another
    assert later is not thread
    dropped = weakref.ref(local)
    del local
    later.join(BOUND)
    gc.collect()
    assert dropped() is None


# -- prompts waiting are embedded together ------------------------------------------------------------


async def queued(local: LocalModel, calls: int) -> None:
    """Return once `calls` callers are running or waiting on `local` (each queues without a thread)."""

    async def wait() -> None:
        while local.in_flight < calls:
            await asyncio.sleep(0)

    await asyncio.wait_for(wait(), BOUND)


def encode(model: HeldModel, texts: list[str]) -> np.ndarray:
    """A batched call's work on the stand-in model; the texts "boom" fail the call."""
    if "boom" in texts:
        raise ValueError("the model failed")
    return model.encode(texts)


async def test_the_prompts_waiting_are_embedded_in_one_call_and_each_caller_gets_its_own_rows(
    model: HeldModel,
) -> None:
    embedder = HeldEmbedder(model)
    model.hold()
    running = asyncio.ensure_future(embedder.embed(["running"]))
    await model.started(1)
    texts = [[f"caller {k} text {i}" for i in range(k + 1)] for k in range(5)]  # 1 to 5 texts a caller
    callers = [asyncio.ensure_future(embedder.embed(mine)) for mine in texts]
    await queued(embedder._local, 1 + len(callers))

    model.release()
    vectors = await asyncio.wait_for(asyncio.gather(*callers), BOUND)

    assert model.calls[1:] == [[text for mine in texts for text in mine]]  # one call, the callers in order
    for mine, rows in zip(texts, vectors, strict=True):
        assert np.allclose(rows, bag_of_words(mine), rtol=0, atol=1e-6)  # row i of caller k: its text i
    assert len({row.tobytes() for rows in vectors for row in rows}) == 15  # so a mixed-up row would show
    await asyncio.wait_for(running, BOUND)
    await embedder.aclose()


async def test_a_waiting_caller_that_gave_up_is_left_out_of_the_batch_and_no_longer_counts(
    model: HeldModel,
) -> None:
    embedder = HeldEmbedder(model, max_in_flight=4)
    model.hold()
    running = asyncio.ensure_future(embedder.embed(["running"]))
    await model.started(1)
    first, gave_up, last = (asyncio.ensure_future(embedder.embed([word])) for word in ("first", "gave up", "last"))
    await queued(embedder._local, 4)
    gave_up.cancel()
    await asyncio.wait([gave_up], timeout=BOUND)  # its call is cancelled by the time its task ends

    model.release()
    await asyncio.wait_for(asyncio.gather(running, first, last), BOUND)

    assert gave_up.cancelled()
    assert model.calls == [["running"], ["first", "last"]]
    assert embedder._local.in_flight == 0  # four callers fit again, none refused
    model.hold()
    again = [asyncio.ensure_future(embedder.embed([f"again {n}"])) for n in range(4)]
    await model.started(3)
    model.release()
    assert len(await asyncio.wait_for(asyncio.gather(*again), BOUND)) == 4
    await embedder.aclose()


async def test_a_longer_line_is_split_at_the_batch_size_in_order(model: HeldModel) -> None:
    local = LocalModel("test model", "capped", lambda: model, batch_size=3)
    model.hold()
    running = asyncio.ensure_future(local.run_batched(encode, ["running"]))
    await model.started(1)
    texts = [["a"], ["b", "c"], ["d"], ["e", "f", "g", "h"], ["i"]]
    callers = [asyncio.ensure_future(local.run_batched(encode, mine)) for mine in texts]
    await queued(local, 1 + len(callers))

    model.release()
    vectors = await asyncio.wait_for(asyncio.gather(running, *callers), BOUND)

    # a caller with more texts than the batch size runs alone, never split
    assert model.calls == [["running"], ["a", "b", "c"], ["d"], ["e", "f", "g", "h"], ["i"]]
    assert all(np.array_equal(rows, bag_of_words(mine)) for mine, rows in zip(texts, vectors[1:], strict=True))
    local.close()


async def test_a_failed_batch_fails_every_caller_in_it_and_the_next_call_works(model: HeldModel) -> None:
    local = LocalModel("test model", "failing", lambda: model)
    model.hold()
    running = asyncio.ensure_future(local.run_batched(encode, ["running"]))
    await model.started(1)
    callers = [asyncio.ensure_future(local.run_batched(encode, [word])) for word in ("before", "boom", "after")]
    await queued(local, 4)

    model.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), BOUND)

    assert [str(outcome) for outcome in outcomes] == ["the model failed"] * 3
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)
    await asyncio.wait_for(running, BOUND)
    assert np.array_equal(await local.run_batched(encode, ["later"]), bag_of_words(["later"]))
    assert local.in_flight == 0
    local.close()


async def test_the_rerankers_calls_are_never_merged(model: HeldModel) -> None:
    reranker = HeldCrossEncoder(model)
    model.hold()
    checks = [asyncio.ensure_future(reranker.score(f"query {n}", [f"document {n}"])) for n in range(3)]
    await model.started(1)
    await queued(reranker._local, 3)

    model.release()
    await asyncio.wait_for(asyncio.gather(*checks), BOUND)

    assert model.calls == [[f"query {n}", f"document {n}"] for n in range(3)]
    await reranker.aclose()


async def test_concurrent_lookups_share_model_calls_and_each_gets_its_own_answer(
    fake_provider: RunningFakeProvider, model: HeldModel
) -> None:
    embedder = HeldEmbedder(model)
    cache = Cache(semantic=SemanticCache(embedder, InProcessIndex(), threshold=0.75, timeout=PATIENT))
    client = client_for(cache, fake_provider)
    # four words of their own each: no two questions are near, so every lookup is a miss
    questions = [f"q{n}a q{n}b q{n}c q{n}d?" for n in range(24)]
    model.hold()
    first = asyncio.ensure_future(ask(client, questions[0]))
    await model.started(1)
    rest = [asyncio.ensure_future(ask(client, question)) for question in questions[1:]]
    await queued(embedder._local, len(questions))

    model.release()
    answers = await asyncio.gather(first, *rest)

    for question, answer in zip(questions, answers, strict=True):
        assert answer.headers["x-cache"] == "MISS" and question in content(answer)
    assert len(model.calls) == 2  # the first prompt alone, then the 23 that waited for it
    assert fake_provider.count(CHAT) == len(questions)
    await cache.close()


@pytest.mark.parametrize("embedder", [SentenceTransformerEmbedder, OnnxMiniLMEmbedder])
async def test_a_real_minilm_gives_a_prompt_the_same_vector_in_a_batch_as_alone(embedder: type[Embedder]) -> None:
    real = embedder()
    short = "How do I reset my password?"
    long = " ".join(["Explain, step by step and with examples, how a cache keyed on prompts can go wrong."] * 6)

    together = await real.embed([short, long])
    alone = np.concatenate([await real.embed([short]), await real.embed([long])])

    assert np.all(np.sum(together * alone, axis=1) > 0.9999)  # unit rows: the dot product is the cosine
    await real.aclose()  # type: ignore[attr-defined]


# -- configuration -------------------------------------------------------------------------------------


def test_the_local_models_limits_are_configured_and_shown_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "limits.yaml"
    config.write_text(
        "cache:\n  store: {type: memory}\n  semantic:\n    embedder: {type: local, max_in_flight: 4}\n"
        f"    rerank: {{path: '{tmp_path}', min_score: 0.5, max_in_flight: 2}}\n"
    )
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "max_in_flight: 4" in out and "max_in_flight: 2" in out
    semantic = build_cache(parse_config({"cache": {"semantic": {"rerank": {"path": str(tmp_path), "min_score": 0}}}}))
    assert semantic.semantic is not None
    limits = (semantic.semantic.embedder.max_in_flight, semantic.semantic.reranker.max_in_flight)
    assert limits == (DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT) == (64, 64)


@pytest.mark.parametrize(
    ("semantic", "message"),
    [
        ({"embedder": {"type": "local", "max_in_flight": 0}}, r"embedder.*max_in_flight"),
        ({"rerank": {"path": "/models/ce", "min_score": 0, "max_in_flight": 0}}, r"rerank.*max_in_flight"),
        ({"rerank": {"url": "http://r/rerank", "model": "m", "min_score": 0, "max_in_flight": 2}}, "no label or max"),
    ],
)
def test_a_limit_that_cannot_work_is_refused(semantic: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"cache": {"semantic": semantic}})


# -- at the interpreter's exit ----------------------------------------------------------------------


async def test_at_exit_the_running_call_finishes_and_the_waiting_ones_never_run(model: HeldModel) -> None:
    embedder = HeldEmbedder(model)
    model.hold()
    running = asyncio.ensure_future(embedder.embed([STORED]))
    await model.started(1)
    waiting = asyncio.ensure_future(embedder.embed([OTHER]))

    embedder._local.finish(0.0)  # what the exit hook does: no call starts any more (here without waiting)
    model.release()
    await asyncio.to_thread(embedder._local.finish, BOUND)  # ... and waits for the running one

    rows, expected = await asyncio.wait_for(running, BOUND), bag_of_words([STORED])
    assert float(rows[0] @ expected[0]) == pytest.approx(float(np.linalg.norm(expected[0])))  # its own answer
    assert model.calls == [[STORED]] and not waiting.done()
    assert not [thread for thread in threading.enumerate() if thread.name == f"llm-cache {embedder.name}"]
    waiting.cancel()


EXITS_WHILE_EMBEDDING = """
import asyncio, sys, threading
from llm_cache.middleware.semantic import local_embedder

started = threading.Event()

async def main() -> None:
    embedder = local_embedder({model!r})
    await embedder.embed(["warm up"])
    encode = embedder._encode

    def encode_signalling(model, texts):
        model.register_forward_pre_hook(lambda *_: started.set())  # once inside torch
        return encode(model, texts)

    embedder._encode = encode_signalling
    # Long enough to be running at the exit, short enough to end well inside EXIT_WAIT (10 s) on a
    # loaded machine: 32 texts of 254 pieces took longer than that under load and torch aborted.
    call = asyncio.ensure_future(embedder.embed(["a long question about many things " * 10] * 8))
    assert await asyncio.to_thread(started.wait, 60)
    print("exiting while the model runs" if not call.done() else "the call was over", flush=True)
    sys.exit(3)

asyncio.run(main())
"""


def test_a_process_that_exits_while_a_local_model_runs_exits_with_its_own_status() -> None:
    """Torch aborts a process whose interpreter tears down while a thread is inside it ("terminate
    called without an active exception", SIGABRT, every time here): the exit waits for the call."""
    exited = subprocess.run(
        [sys.executable, "-c", EXITS_WHILE_EMBEDDING.format(model="all-MiniLM-L6-v2")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )

    assert exited.stdout.strip() == "exiting while the model runs", exited
    assert (exited.returncode, "terminate called" in exited.stderr) == (3, False), exited.stderr[-2000:]
