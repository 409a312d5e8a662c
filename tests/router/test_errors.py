"""Router-made answers arrive whole: status, the caller's error shape, and a body as long as its length.

When the router answers by itself (no deployment speaks the request's API, every deployment cooling
down, a model no group serves, a body it cannot rewrite) the response is an unread stream with its
`content-length`, so a proxy that relays it chunk by chunk (the gateway, `send(stream=True)`) sends
all of it. Proven through `RouterTransport` in httpx2 and httpx, sync and async, and through the
gateway on a real uvicorn server read by a raw socket and by the real openai and anthropic SDKs.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from llm_cache.router import RouterTransport

from .conftest import dep
from .fakes import FakeProvider

LIBS = [httpx2, httpx]
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "gpt", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": "Bearer caller", "x-api-key": "caller"}


def routes(fakes: dict[str, FakeProvider], **settings: Any) -> dict[str, Any]:
    """`gpt` on an OpenAI deployment, `claude` on an Anthropic one only."""
    return {
        "groups": {
            "gpt": {"deployments": [dep(fakes["a"])]},
            "claude": {"deployments": [dep(fakes["claude"], family="anthropic")]},
        },
        "settings": {"num_retries": 0, "backoff_initial": 0, "timeout": 5.0, **settings},
    }


#: (name, router settings, path, body, a fault scripted for deployment a first, the router's status)
CASES = [
    ("incompatible", {}, "/v1/embeddings", {"model": "claude", "input": "hi"}, None, 400),
    ("model_not_found", {"unknown_models": "refuse"}, "/v1/chat/completions", {**CHAT, "model": "nope"}, None, 404),
    ("model_required", {"unknown_models": "refuse"}, "/v1/chat/completions", {"messages": []}, None, 400),
    ("cooling", {}, "/v1/chat/completions", CHAT, ("status", 429, {"retry-after": "45"}, None), 503),
    ("anthropic_caller", {}, "/v1/messages/count_tokens", MESSAGES, None, 400),  # messages would be translated
    ("gemini_caller", {}, "/v1beta/models/gpt:generateContent", {"contents": []}, None, 400),
]
CODES = {
    "incompatible": "router_no_compatible_deployment",
    "model_not_found": "model_not_found",
    "model_required": "model_required",
    "cooling": "all_deployments_cooling",
    "anthropic_caller": "router_no_compatible_deployment",
    "gemini_caller": "router_no_compatible_deployment",
}


def assert_whole(name: str, status: int, headers: Any, raw: bytes) -> dict[str, Any]:
    """Status, length and the family's error shape of one router-made answer."""
    assert int(headers["content-length"]) == len(raw) > 0
    assert headers["content-type"] == "application/json"
    assert headers["x-router-error"] == CODES[name]
    doc = json.loads(raw)
    if name == "anthropic_caller":
        assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
        assert "anthropic API" in doc["error"]["message"]
    elif name == "gemini_caller":
        assert doc["error"]["code"] == status and doc["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert doc["error"]["code"] == CODES[name] and doc["error"]["message"]
        assert set(doc["error"]) >= {"message", "type", "param", "code"}
    return doc


def answer_sync(lib: Any, router: Any, path: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
    with lib.Client(transport=RouterTransport(router), base_url="http://127.0.0.1:9") as client:
        response = client.send(client.build_request("POST", path, json=body, headers=AUTH), stream=True)
        try:
            return response.status_code, response.headers, b"".join(response.iter_raw())
        finally:
            response.close()


async def answer_async(lib: Any, router: Any, path: str, body: dict[str, Any]) -> tuple[int, Any, bytes]:
    async with lib.AsyncClient(transport=RouterTransport(router), base_url="http://127.0.0.1:9") as client:
        response = await client.send(client.build_request("POST", path, json=body, headers=AUTH), stream=True)
        try:
            return response.status_code, response.headers, b"".join([c async for c in response.aiter_raw()])
        finally:
            await response.aclose()


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("name", "settings", "path", "body", "fault", "status"), CASES, ids=[c[0] for c in CASES])
def test_router_made_errors_stream_whole_in_sync_clients(
    fakes, make_router, lib, name, settings, path, body, fault, status
):
    router = make_router(routes(fakes, **settings))
    if fault is not None:  # the cooling case: the only deployment's 429 with Retry-After comes first
        fakes["a"].fail(fault)
        assert answer_sync(lib, router, path, body)[0] == 429
    got, headers, raw = answer_sync(lib, router, path, body)
    assert got == status
    assert_whole(name, status, headers, raw)
    if name == "cooling":
        assert headers["retry-after"] == "45"


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("name", "settings", "path", "body", "fault", "status"), CASES, ids=[c[0] for c in CASES])
async def test_router_made_errors_stream_whole_in_async_clients(
    fakes, make_router, lib, name, settings, path, body, fault, status
):
    router = make_router(routes(fakes, **settings))
    if fault is not None:
        fakes["a"].fail(fault)
        assert (await answer_async(lib, router, path, body))[0] == 429
    got, headers, raw = await answer_async(lib, router, path, body)
    assert got == status
    assert_whole(name, status, headers, raw)


@pytest.mark.parametrize("lib", LIBS, ids=lambda m: m.__name__)
def test_a_router_made_error_also_reads_as_a_plain_response(fakes, make_router, lib):
    router = make_router(routes(fakes))
    with lib.Client(transport=RouterTransport(router), base_url="http://127.0.0.1:9") as client:
        response = client.post("/v1/embeddings", json={"model": "claude", "input": "hi"}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "router_no_compatible_deployment"


# ----------------------------------------------------------------------------- through the gateway


@pytest.fixture
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[BackgroundServer]:
    config = parse_config(
        {
            "cache": {"store": {"type": "memory"}},
            "model_list": [
                {  # its own key: a 429 on it is the deployment's (a caller's own key would cool nothing)
                    "model_name": "gpt",
                    "litellm_params": {"model": "openai/real", "api_base": f"{fakes['a'].url}/v1", "api_key": "k"},
                },
                {
                    "model_name": "claude",
                    "litellm_params": {"model": "anthropic/claude-real", "api_base": fakes["claude"].url},
                },
            ],
            "router": {"num_retries": 0, "backoff_initial": 0, "unknown_models": "refuse"},
        },
        where="gw.yaml",
        env={},
    )
    with BackgroundServer(create_gateway(config)) as server:
        yield server


def raw_exchange(server: BackgroundServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh socket, read until the server closes it (bounded by a timeout)."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer caller\r\nx-api-key: caller\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head.encode() + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = [line.partition(":") for line in lines[1:]]
    names = [key.lower() for key, _, _ in fields]
    assert names.count("content-length") <= 1
    return int(lines[0].split()[1]), {key.lower(): value.strip() for key, _, value in fields}, rest


@pytest.mark.parametrize(("name", "settings", "path", "body", "fault", "status"), CASES, ids=[c[0] for c in CASES])
def test_router_made_errors_arrive_whole_through_the_gateway(fakes, gateway, name, settings, path, body, fault, status):
    if fault is not None:
        fakes["a"].fail(fault)
        assert raw_exchange(gateway, path, body)[0] == 429
    got, headers, raw = raw_exchange(gateway, path, body)
    assert got == status
    assert "transfer-encoding" not in headers  # a length, not a chunked stream cut short
    assert_whole(name, status, headers, raw)


def test_the_openai_sdk_reads_router_made_errors_from_the_gateway(fakes, gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="caller", max_retries=0)
    with pytest.raises(openai.BadRequestError) as incompatible:
        client.embeddings.create(model="claude", input="hi")  # chat would be translated; embeddings cannot
    assert incompatible.value.code == "router_no_compatible_deployment"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found" and "'nope'" in missing.value.message
    fakes["a"].fail(("status", 429, {"retry-after": "45"}, None))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.InternalServerError) as cooling:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert cooling.value.status_code == 503 and cooling.value.code == "all_deployments_cooling"


def test_the_anthropic_sdk_reads_router_made_errors_from_the_gateway(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="caller", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as incompatible:
        client.messages.count_tokens(model="gpt", messages=[{"role": "user", "content": "hi"}])  # never translated
    assert incompatible.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
