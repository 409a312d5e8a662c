"""One client per event loop to an OpenAI-compatible service (the embedder and the LLM judge use it)."""

from __future__ import annotations

from typing import Any

from .._loop_clients import PerLoop


class OpenAICompatible:
    """`base_url`, a bearer key when given, a timeout and an optional httpx2 transport."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, transport: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._transport = transport
        self._clients: PerLoop[Any] = PerLoop(self._make_client, lambda client: client.aclose())

    def _make_client(self) -> Any:
        import httpx2

        return httpx2.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=self._transport
        )

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """The JSON answer to `POST {base_url}{path}`; an error status raises."""
        response = await self._clients.get().post(path, json=body, headers=headers)
        response.raise_for_status()
        return response.json()

    async def aclose(self) -> None:
        await self._clients.close()
