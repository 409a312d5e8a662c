"""A vector index in Qdrant (a server, or qdrant-client's local mode); install with the `[qdrant]` extra."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ..._wire import masked_url
from .._loop_clients import PerLoop
from .index import IndexUnavailable, Neighbour

try:
    from qdrant_client import AsyncQdrantClient, models
    from qdrant_client.http.exceptions import UnexpectedResponse
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("QdrantVectorIndex needs qdrant-client: pip install 'llm-cache-middleware[qdrant]'") from error


class QdrantVectorIndex:
    """Rows are points of one collection (cosine distance): the payload holds `ctx`, `key`, `text` and
    `expires` (wall-clock seconds, absent for no expiry); the point id is derived from the key, so
    adding a key again replaces its row. A search is filtered by context and leaves expired rows out;
    Qdrant has no TTL of its own, so expired rows are deleted by one filtered delete at most every
    `sweep_interval` seconds, on an add.

    `QdrantVectorIndex("http://qdrant:6333", api_key=...)` talks to a server shared by every pod;
    `QdrantVectorIndex(location=":memory:")` (or `path="/var/lib/llm-cache/qdrant"`) runs
    qdrant-client's local mode in this process.
    """

    name = "qdrant"

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        location: str | None = None,
        path: str | None = None,
        collection_name: str = "llm-cache-semantic",
        timeout: float = 2.0,
        sweep_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sum(option is not None for option in (url, location, path)) != 1:
            raise ValueError("QdrantVectorIndex: give exactly one of url, location (':memory:') and path")
        self.url = url
        self.collection_name = collection_name
        self.sweep_interval = sweep_interval
        self._clock = clock
        self._next_sweep = 0.0
        self._created: set[int] = set()
        """Dimensions the collection was made (or found) for; emptied when it is found missing."""
        self._local: AsyncQdrantClient | None = None
        if url is None:  # local mode keeps its points in the client object: one for every loop
            self._local = AsyncQdrantClient(location=location, path=path)
        self._clients: PerLoop[AsyncQdrantClient] = PerLoop(
            lambda: AsyncQdrantClient(url=url, api_key=api_key, timeout=max(1, round(timeout))),
            lambda client: client.close(),
        )

    def _client(self) -> AsyncQdrantClient:
        return self._local if self._local is not None else self._clients.get()

    @staticmethod
    def _id(key: str) -> str:
        return str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16]))

    async def start(self) -> None:
        """Check now that the server answers as Qdrant (`IndexUnavailable` if it answers otherwise);
        a server that cannot be reached yet is left to fail open later."""
        try:
            await self._client().get_collections()
        except UnexpectedResponse as error:
            raise IndexUnavailable(  # (the URL masked; the answer by its status: its raw bytes follow a line break)
                f"the semantic cache's Qdrant index: {masked_url(str(self.url))} does not answer as a Qdrant "
                f"server (HTTP {error.status_code} {error.reason_phrase})"
            ) from None
        except Exception:  # noqa: BLE001, S110 - unreachable for now: fail open on each request instead
            pass

    async def _ensure(self, client: AsyncQdrantClient, dimensions: int) -> None:
        if dimensions in self._created:
            return
        if not await client.collection_exists(self.collection_name):
            try:
                await client.create_collection(
                    self.collection_name,
                    vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
                )
                if self._local is None:  # local mode scans; a server filters through these
                    await client.create_payload_index(self.collection_name, "ctx", models.PayloadSchemaType.KEYWORD)
                    await client.create_payload_index(self.collection_name, "expires", models.PayloadSchemaType.FLOAT)
            except Exception:
                if not await client.collection_exists(self.collection_name):  # not another pod's race
                    raise
        self._created.add(dimensions)

    async def add(self, context: str, key: str, text: str, vector: np.ndarray, ttl: float | None) -> None:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        client = self._client()
        await self._ensure(client, len(vector))
        now = self._clock()
        payload: dict[str, Any] = {"ctx": context, "key": key, "text": text}
        if ttl is not None:
            payload["expires"] = now + ttl
        point = models.PointStruct(id=self._id(key), vector=vector.tolist(), payload=payload)
        await client.upsert(self.collection_name, points=[point], wait=True)
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval
            await client.delete(self.collection_name, points_selector=models.FilterSelector(filter=self._expired(now)))

    @staticmethod
    def _expired(now: float) -> models.Filter:
        return models.Filter(must=[models.FieldCondition(key="expires", range=models.Range(lte=now))])

    async def search(self, context: str, vector: np.ndarray, k: int) -> list[Neighbour]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        query = models.Filter(
            must=[models.FieldCondition(key="ctx", match=models.MatchValue(value=context))],
            must_not=self._expired(self._clock()).must,
        )
        try:
            found = await self._client().query_points(
                self.collection_name, query=vector.tolist(), query_filter=query, limit=int(k), with_payload=True
            )
        except (UnexpectedResponse, ValueError) as error:
            if not _missing(error):
                raise
            self._created.clear()  # never made, or dropped elsewhere: the next add makes it again
            return []
        return [
            Neighbour(str(point.payload["key"]), str(point.payload.get("text", "")), float(point.score))
            for point in found.points
            if point.payload is not None and "key" in point.payload
        ]

    async def delete(self, key: str) -> None:
        selector = models.PointIdsList(points=[self._id(key)])
        try:
            await self._client().delete(self.collection_name, points_selector=selector)
        except (UnexpectedResponse, ValueError) as error:
            if not _missing(error):
                raise

    async def clear(self) -> None:
        """Drop the collection and every row in it, whoever wrote them (other pods too)."""
        await self._client().delete_collection(self.collection_name)
        self._created.clear()

    async def close(self) -> None:
        if self._local is not None:
            await self._local.close()
        await self._clients.close()


def _missing(error: Exception) -> bool:
    """The collection does not exist: a server's 404, or local mode's ValueError saying so."""
    if isinstance(error, UnexpectedResponse):
        return error.status_code == 404
    return "not found" in str(error).lower()
