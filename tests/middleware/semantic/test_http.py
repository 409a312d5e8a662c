"""An OpenAI-compatible service's answers (embeddings, a judge's, a reranker's) as the cache reads them:
a broken or hostile service must never make two answers agree, nor fill the process's memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx2
import orjson
import pytest

from llm_cache.middleware.semantic import OpenAIEmbedder
from llm_cache.middleware.semantic._http import MAX_ANSWER_BYTES
from llm_cache.middleware.semantic.judges import EmbeddingJudge

CHUNK = 1 << 20


def service(answer: Callable[[httpx2.Request], httpx2.Response]) -> OpenAIEmbedder:
    return OpenAIEmbedder("http://embeddings.test/v1", transport=httpx2.MockTransport(answer))


async def test_an_answer_past_the_limit_is_an_error_and_is_read_no_further() -> None:
    sent = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(4 * MAX_ANSWER_BYTES // CHUNK):
            sent.append(CHUNK)
            yield b" " * CHUNK

    embedder = service(lambda request: httpx2.Response(200, content=endless()))
    with pytest.raises(ValueError, match="larger than"):
        await embedder.embed(["How do I reset my password?"])
    await embedder.aclose()

    assert sum(sent) <= MAX_ANSWER_BYTES + 2 * CHUNK  # stopped at the limit, not at the end


def rows(*indexes: int) -> Callable[[httpx2.Request], httpx2.Response]:
    """A service answering one row per index given (each the same vector), whatever it was asked."""
    data = [{"object": "embedding", "index": index, "embedding": [1.0, 0.0, 0.0]} for index in indexes]
    return lambda request: httpx2.Response(200, content=orjson.dumps({"object": "list", "data": data}))


@pytest.mark.parametrize("indexes", [(0, 0), (0,), (0, 1, 2), (1, 2)], ids=["repeated", "short", "long", "shifted"])
async def test_rows_that_are_not_one_per_text_in_order_are_an_error_never_an_agreement(
    indexes: tuple[int, ...],
) -> None:
    # The judge embeds both answers in one call: a row repeated for both made any two answers "agree".
    embedder = service(rows(*indexes))
    with pytest.raises((ValueError, KeyError)):
        await EmbeddingJudge(embedder).same("What is the answer?", "It is 42.", "It is 17.")
    await embedder.aclose()


async def test_rows_one_per_text_in_any_order_are_read_by_their_index() -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        data = [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 0.0]}]
        return httpx2.Response(200, content=orjson.dumps({"data": data}))

    embedder = service(answer)
    vectors = await embedder.embed(["first", "second"])
    await embedder.aclose()

    assert vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
