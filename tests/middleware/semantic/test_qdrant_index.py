"""QdrantVectorIndex on a real Qdrant engine: qdrant-client's local mode (no Qdrant server can be installed
from the package registries this project's machines reach; the index code is the same for a server)."""

from __future__ import annotations

import numpy as np
import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware.config import ConfigError, build_semantic
from llm_cache.middleware.config.schema import SemanticConfig
from llm_cache.middleware.semantic import (
    IndexUnavailable,
    QdrantVectorIndex,
    SemanticCache,
    SentenceTransformerEmbedder,
)
from llm_cache.middleware.stores import MemoryStore
from tests.support.fake_provider_fixtures import RunningFakeProvider

from .test_cache import CHAT, LOADED_MACHINE_TIMEOUT, ask, client_for, embedder  # noqa: F401 - a fixture

NORTH, EAST, NORTH_EAST = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.8, 0.6])


async def test_search_is_per_context_best_first_and_leaves_expired_rows_out() -> None:
    now = [1_000.0]
    index = QdrantVectorIndex(location=":memory:", clock=lambda: now[0])
    try:
        assert await index.search("a", NORTH, 5) == []  # nothing added yet: no collection, no error
        await index.add("a", "k1", "north", NORTH, ttl=10)
        await index.add("a", "k2", "east", EAST, ttl=None)
        await index.add("b", "k3", "north", NORTH, ttl=None)

        found = await index.search("a", NORTH_EAST, 5)
        assert [(n.key, n.text, round(n.similarity, 2)) for n in found] == [("k1", "north", 0.8), ("k2", "east", 0.6)]
        assert [n.key for n in await index.search("a", NORTH_EAST, 1)] == ["k1"]
        assert [n.key for n in await index.search("c", NORTH, 5)] == []

        now[0] += 10.0  # k1's time is up
        assert [n.key for n in await index.search("a", NORTH_EAST, 5)] == ["k2"]
        assert [n.key for n in await index.search("b", NORTH, 5)] == ["k3"]
    finally:
        await index.close()


async def test_adding_a_key_again_replaces_its_row_and_delete_removes_it() -> None:
    index = QdrantVectorIndex(location=":memory:")
    try:
        await index.delete("never-added")  # no collection yet: nothing to do
        await index.add("a", "k1", "north", NORTH, ttl=None)
        await index.add("a", "k1", "east", EAST, ttl=None)
        assert [(n.key, n.text) for n in await index.search("a", NORTH_EAST, 5)] == [("k1", "east")]
        await index.delete("k1")
        assert await index.search("a", NORTH_EAST, 5) == []
    finally:
        await index.close()


async def test_expired_rows_are_swept_on_an_add_at_most_once_per_interval() -> None:
    now = [1_000.0]
    index = QdrantVectorIndex(location=":memory:", clock=lambda: now[0], sweep_interval=60)
    try:
        await index.add("a", "old", "north", NORTH, ttl=5)
        now[0] += 30.0
        await index.add("a", "new", "east", EAST, ttl=None)  # within the interval: no sweep yet
        assert (await index._client().count(index.collection_name)).count == 2
        now[0] += 31.0
        await index.add("a", "newer", "east", EAST, ttl=None)  # the interval has passed: expired rows go
        assert (await index._client().count(index.collection_name)).count == 2
        assert sorted(n.key for n in await index.search("a", EAST, 5)) == ["new", "newer"]
    finally:
        await index.close()


async def test_clear_drops_every_row_and_the_index_keeps_working() -> None:
    index = QdrantVectorIndex(location=":memory:")
    try:
        await index.add("a", "k1", "north", NORTH, ttl=None)
        await index.clear()
        assert await index.search("a", NORTH, 5) == []
        await index.add("a", "k2", "north", NORTH, ttl=None)
        assert [n.key for n in await index.search("a", NORTH, 5)] == ["k2"]
    finally:
        await index.close()


async def test_a_server_that_is_not_qdrant_is_named_without_the_urls_password(
    fake_provider: RunningFakeProvider,
) -> None:
    """A Qdrant behind a basic-auth proxy is named `https://user:password@host`: the start-up error said
    the URL as written, and the raw answer's bytes after a line break. The URL is named masked, the
    answer by its status."""
    index = QdrantVectorIndex(url=fake_provider.url.replace("http://", "http://qdrant:pw-secret@"))
    with pytest.raises(IndexUnavailable) as raised:
        await index.start()
    message = str(raised.value)
    assert "pw-secret" not in message and "qdrant:****@127.0.0.1" in message and "\n" not in message, message
    await index.close()


def test_a_config_file_puts_the_index_in_qdrant() -> None:
    semantic = build_semantic(SemanticConfig.model_validate({"index": {"type": "qdrant", "location": ":memory:"}}))
    assert isinstance(semantic.index, QdrantVectorIndex) and semantic.index.collection_name == "llm-cache-semantic"
    with pytest.raises(ConfigError, match="cache.semantic.index: .*exactly one"):
        build_semantic(SemanticConfig.model_validate({"index": {"type": "qdrant"}}))


def test_exactly_one_place_for_the_rows() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        QdrantVectorIndex()
    with pytest.raises(ValueError, match="exactly one"):
        QdrantVectorIndex("http://qdrant:6333", location=":memory:")


async def test_a_paraphrase_is_served_through_the_qdrant_index(
    fake_provider: RunningFakeProvider,
    embedder: SentenceTransformerEmbedder,  # noqa: F811 - the fixture imported above
) -> None:
    index = QdrantVectorIndex(location=":memory:")
    cache = Cache(MemoryStore(), semantic=SemanticCache(embedder, index, timeout=LOADED_MACHINE_TIMEOUT))
    await cache.start()
    first = await ask(client_for(cache, fake_provider), "How do I reset my password?")
    second = await ask(client_for(cache, fake_provider), "How can I reset my password?")
    changed = await ask(client_for(cache, fake_provider), "Convert 10 EUR to USD")
    assert (first.headers["x-cache"], second.headers["x-cache"], changed.headers["x-cache"]) == ("MISS", "HIT", "MISS")
    assert second.headers["x-cache-match"] == "semantic" and fake_provider.count(CHAT) == 2
    await cache.close()
