"""One client per event loop to an OpenAI-compatible service (the embedder and the LLM judge use it)."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from ..._wire import masked_url
from .._loop_clients import PerLoop

MAX_ANSWER_BYTES = 16 << 20
"""The largest answer read (16 MiB): 32 embeddings of 3,072 dimensions take about 2 MiB as JSON."""


class OpenAICompatible:
    """`base_url`, a bearer key when given, a timeout and an optional httpx2 transport."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, transport: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._transport = transport
        self._clients: PerLoop[Any] = PerLoop(self._make_client, lambda client: client.aclose())

    def _make_client(self) -> Any:
        return httpx2.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=self._transport
        )

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """The JSON answer to `POST {base_url}{path}`; an error status raises, and so does an answer
        larger than `MAX_ANSWER_BYTES`, read no further (a broken or hostile service must not fill the
        process's memory: the timeouts bound how long it takes, not how much it sends)."""
        client = self._clients.get()
        async with client.stream("POST", path, json=body, headers=headers) as response:
            if not response.is_success:  # (httpx's own message quotes the URL whole: a password in it too)
                message = f"{self._named(path)} answered {response.status_code} {response.reason_phrase}"
                raise httpx2.HTTPStatusError(message, request=response.request, response=response)
            read = bytearray()
            async for chunk in response.aiter_bytes():
                read += chunk
                if len(read) > MAX_ANSWER_BYTES:
                    raise ValueError(f"{self._named(path)} answered larger than {MAX_ANSWER_BYTES} bytes")
        return json.loads(bytes(read))  # (as `response.json()`: any UTF encoding, NaN read as a float)

    def _named(self, path: str) -> str:
        """`{base_url}{path}` as errors (which the cache logs) may name it: masked (`_wire.masked_url`)."""
        return masked_url(f"{self.base_url}{path}")

    async def aclose(self) -> None:
        await self._clients.close()
