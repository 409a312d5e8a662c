"""The semantic cache is ready when the first request arrives, or says at once why it cannot be.

Real parts: the local all-MiniLM-L6-v2 model, a plain `redis-server` (no RediSearch) and Redis
Stack, the gateway's lifespan and the `llm-cache serve` command in a subprocess.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware.config import load_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.semantic import (
    IndexUnavailable,
    RedisVectorIndex,
    SemanticCache,
    SentenceTransformerEmbedder,
)

from ..test_cli import _cli, _one_line_failure
from .test_cache import LOADED_MACHINE_TIMEOUT, ask, client_for


def plain_redis_index(redis_server: Any) -> RedisVectorIndex:
    return RedisVectorIndex(redis_server.url, index_name="start-test", prefix="start-test:")


async def test_start_names_the_missing_module_and_the_fix(redis_server: Any) -> None:
    index = plain_redis_index(redis_server)
    cache = Cache(semantic=SemanticCache(InProcessEmbedder(), index))
    with pytest.raises(IndexUnavailable) as raised:
        await cache.start()
    message = str(raised.value)
    assert "needs the RediSearch module" in message and f"127.0.0.1:{redis_server.port}" in message
    assert "Redis Stack" in message and "Redis 8" in message and "--loadmodule" in message
    assert "index.type: memory" in message
    await cache.close()


async def test_the_missing_module_is_named_without_the_urls_secret(redis_server: Any) -> None:
    """redis-py reads a password (and a user) from the URL's query too; the message masked only one
    in the user info, so `?password=` reached the start-up error as written."""
    url = f"{redis_server.url}?username=default&password=hunter2"
    cache = Cache(semantic=SemanticCache(InProcessEmbedder(), RedisVectorIndex(url, index_name="s", prefix="s:")))
    with pytest.raises(IndexUnavailable) as raised:
        await cache.start()
    assert "hunter2" not in str(raised.value) and f"127.0.0.1:{redis_server.port}" in str(raised.value)
    await cache.close()


async def test_start_passes_on_redis_stack(redis_stack_server: Any) -> None:
    index = RedisVectorIndex(redis_stack_server.url, index_name="start-ok", prefix="start-ok:")
    cache = Cache(semantic=SemanticCache(InProcessEmbedder(), index))
    await cache.start()
    await cache.close()


async def test_requests_against_redis_without_search_fail_open_with_a_warning_that_says_why(
    redis_server: Any, fake_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(semantic=SemanticCache(InProcessEmbedder(), plain_redis_index(redis_server)))
    client = client_for(cache, fake_provider)
    with caplog.at_level(logging.WARNING, logger="llm_cache.middleware"):
        first = await ask(client, "How do I reset my password?")
        again = await ask(client, "How do I reset my password?")
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")  # the exact cache still works
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("semantic cache index:redis semantic_search failed (IndexUnavailable: ")
    assert "needs the RediSearch module" in warnings[0]
    # one failed search per miss (a lookup that failed is not indexed), counted under the index, not the store
    assert cache.telemetry.snapshot()["llm_cache_store_errors"] == {("index:redis", "semantic_search"): 1}
    await cache.close()


def test_serve_refuses_a_redis_index_without_search_in_one_line(tmp_path: Path, redis_server: Any) -> None:
    config = tmp_path / "semantic.yaml"
    config.write_text(f"cache:\n  semantic:\n    index: {{type: redis, url: '{redis_server.url}'}}\n")
    line = _one_line_failure(_cli("serve", "--config", str(config)))
    assert line.startswith("llm-cache: cache.semantic.index: ") and "needs the RediSearch module" in line


@pytest.mark.slow
async def test_the_gateway_loads_the_embedding_model_before_it_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "semantic.yaml"
    config.write_text(f"cache:\n  store: {{type: memory}}\n  semantic: {{timeout: {LOADED_MACHINE_TIMEOUT}}}\n")
    app = create_gateway(load_config(str(config)))
    embedder = app.state.cache.semantic.embedder
    assert isinstance(embedder, SentenceTransformerEmbedder) and not embedder._local.loaded
    with caplog.at_level(logging.INFO, logger="llm_cache.middleware"):
        async with app.router.lifespan_context(app):
            assert embedder._local.loaded
    loading = [r.getMessage() for r in caplog.records if "loading the embedding model" in r.getMessage()]
    assert loading == ["semantic cache: loading the embedding model sentence-transformers:all-MiniLM-L6-v2 at start-up"]


class InProcessEmbedder:
    """A small deterministic embedder (the user's own `Embedder`): these tests are about start-up, not meaning."""

    name = "letters"

    async def embed(self, texts: Any) -> Any:
        import numpy as np

        from llm_cache.middleware.semantic.embedders import unit_rows

        rows = [[text.count(letter) + 1 for letter in "aeiou"] for text in texts]
        return unit_rows(np.asarray(rows, dtype=np.float32))
