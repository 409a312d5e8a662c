"""The gateway as a real uvicorn server in front of the fake provider, driven by the real SDKs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway, family_of, upstream_url
from llm_cache.middleware.stores import DiskStore
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.servers import free_port
from tests.test_log_limit import Clock

ADMIN = "adm-test-key"
MESSAGES = [{"role": "user", "content": "What are your opening hours?"}]
MODEL = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"


class Gateway:
    def __init__(self, server: BackgroundServer, app: Any) -> None:
        self.server = server
        self.url = server.url
        self.app = app
        self.cache: Cache = app.state.cache

    def openai(self, api_key: str = "sk-tenant-a", **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **options)

    def anthropic(self, api_key: str = "sk-ant-a") -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=api_key, max_retries=0)

    def admin(self, method: str, path: str, key: str | None = ADMIN, **kwargs: Any) -> httpx2.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx2.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)


@pytest.fixture
def gateway_factory(fake_provider: RunningFakeProvider) -> Iterator[Callable[..., Gateway]]:
    servers: list[BackgroundServer] = []

    def start(config: dict[str, Any] | None = None, cache: Cache | None = None, http: str = "h11") -> Gateway:
        data: dict[str, Any] = {
            "cache": {"store": {"type": "memory"}},
            "admin_key": ADMIN,
            "upstreams": {
                "openai": {"base_url": fake_provider.openai_base_url},
                "anthropic": {"base_url": fake_provider.anthropic_base_url},
                "gemini": {"base_url": fake_provider.url},
                "azure": {"base_url": fake_provider.azure_endpoint},
            },
        }
        for key, value in (config or {}).items():
            data[key] = value
        app = create_gateway(parse_config(data), cache=cache)
        server = BackgroundServer(app, http=http).start()  # type: ignore[arg-type]
        servers.append(server)
        return Gateway(server, app)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory()


def chat(client: openai.OpenAI, content: str = "What are your opening hours?", **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kwargs
    )


def streamed_text(client: openai.OpenAI, content: str = "What are your opening hours?") -> str:
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


# -- paths ----------------------------------------------------------------------------------------


def test_families_and_upstream_urls() -> None:
    assert family_of("/v1/chat/completions") == "openai"
    assert family_of("/v1/messages") == "anthropic"
    assert family_of("/v1beta/models/gemini-2.0-flash:generateContent") == "gemini"
    assert family_of("/openai/deployments/gpt4/chat/completions") == "azure"
    assert family_of("/admin") is None
    assert (
        upstream_url("https://api.openai.com/v1", "/v1/chat/completions")
        == "https://api.openai.com/v1/chat/completions"
    )
    assert upstream_url("https://api.anthropic.com", "/v1/messages") == "https://api.anthropic.com/v1/messages"
    assert (
        upstream_url("http://h/v1beta/", "/v1beta/models/m:embedContent", "key=x")
        == "http://h/v1beta/models/m:embedContent?key=x"
    )
    assert (
        upstream_url("https://api.groq.com/openai/v1", "/v1/embeddings") == "https://api.groq.com/openai/v1/embeddings"
    )


# -- caching through the gateway ------------------------------------------------------------------


def test_miss_then_hit_with_the_openai_sdk(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.openai()
    first = chat(client)
    second = chat(client)
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert first.headers["x-cache-key"] == second.headers["x-cache-key"]
    assert first.parse().model_dump() == second.parse().model_dump()
    assert fake_provider.count("/chat/completions") == 1
    forwarded = fake_provider.last.headers
    assert "x-admin-key" not in forwarded
    assert forwarded["authorization"] == "Bearer sk-tenant-a"
    assert forwarded["user-agent"].startswith("OpenAI/Python")  # the caller's, not the gateway client's
    assert forwarded["accept-encoding"] == "gzip"


def test_only_encodings_the_caller_and_the_cache_understand(
    gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    for sent, expected in (("br, zstd", "identity"), ("gzip;q=1.0, br", "gzip")):
        body = {"model": MODEL, "messages": [{"role": "user", "content": sent}]}
        httpx2.post(url, json=body, headers={"authorization": "Bearer sk-enc", "accept-encoding": sent}, timeout=5)
        assert fake_provider.last.headers["accept-encoding"] == expected


def test_streaming_both_ways(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.openai()
    miss_json = chat(client, "json first").parse().choices[0].message.content
    assert streamed_text(client, "json first") == miss_json
    miss_stream = streamed_text(client, "stream first")
    assert chat(client, "stream first").parse().choices[0].message.content == miss_stream
    assert streamed_text(client, "stream first") == miss_stream
    assert fake_provider.count("/chat/completions") == 2


def test_anthropic_sdk_hits_and_streams(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.anthropic()
    first = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    second = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    text = first.parse().content[0].text
    with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:
        assert stream.get_final_text() == text
    assert fake_provider.count("/v1/messages") == 1


def test_gemini_and_azure_paths(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    url = f"{gateway.url}/v1beta/models/gemini-2.0-flash:generateContent"
    first = httpx2.post(url, json=body, headers={"x-goog-api-key": "g-key"}, timeout=10)
    second = httpx2.post(url, json=body, headers={"x-goog-api-key": "g-key"}, timeout=10)
    assert (first.status_code, first.headers["x-cache"], second.headers["x-cache"]) == (200, "MISS", "HIT")
    assert first.json() == second.json()
    azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key="az-key", api_version="2024-10-21", max_retries=0)
    for expected in ("MISS", "HIT"):
        raw = azure.chat.completions.with_raw_response.create(model="my-deployment", messages=MESSAGES)
        assert raw.headers["x-cache"] == expected
    assert fake_provider.count("/chat/completions") == 1
    assert fake_provider.last.headers["api-key"] == "az-key"


def test_credentials_isolate_callers(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    a, b = gateway.openai("sk-tenant-a"), gateway.openai("sk-tenant-b")
    assert chat(a).headers["x-cache"] == "MISS"
    assert chat(b).headers["x-cache"] == "MISS"
    assert chat(a).headers["x-cache"] == "HIT"
    assert chat(b).headers["x-cache"] == "HIT"
    assert fake_provider.count("/chat/completions") == 2
    assert [r.headers["authorization"] for r in fake_provider.requests] == ["Bearer sk-tenant-a", "Bearer sk-tenant-b"]


def test_configured_upstream_key_replaces_the_callers(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    gateway = gateway_factory(
        {"upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": "sk-upstream"}}}
    )
    chat(gateway.openai("sk-caller"))
    assert fake_provider.last.headers["authorization"] == "Bearer sk-upstream"


def test_upstream_errors_are_forwarded_and_not_cached(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.openai()
    fake_provider.fail_next(1, status=500)
    with pytest.raises(openai.InternalServerError):
        chat(client)
    assert chat(client).headers["x-cache"] == "MISS"
    assert fake_provider.count("/chat/completions") == 2


def test_cut_stream_is_not_stored(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.openai()
    fake_provider.cut_stream_after(2)
    with pytest.raises((openai.APIError, httpx2.HTTPError)):
        streamed_text(client, "cut me")
    assert chat(client, "cut me").headers["x-cache"] == "MISS"


def test_upstream_down_is_a_provider_shaped_502(gateway_factory: Callable[..., Gateway]) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = gateway_factory(
        {"upstreams": {"openai": {"base_url": f"{dead_url}/v1"}, "anthropic": {"base_url": dead_url}}}
    )
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway.openai())
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "server_error"
    assert "unreachable" in caught.value.body["message"]
    with pytest.raises(anthropic.APIStatusError) as anthropic_error:
        gateway.anthropic().messages.create(model=CLAUDE, max_tokens=16, messages=MESSAGES)
    assert anthropic_error.value.status_code == 502
    assert dead_url.split("//")[1] not in str(anthropic_error.value.body)


def test_an_upstream_down_is_one_warning_an_interval_however_many_calls_find_it_down(
    gateway_factory: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    """One dead upstream makes every call a 502 and each logged a WARNING: a caller could fill the log
    at request rate. One a minute now, then saying how many were not logged."""
    gateway = gateway_factory({"upstreams": {"openai": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}}})
    clock = Clock()
    gateway.app.state.gateway.warnings.clock = clock
    with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
        for _ in range(5):
            with pytest.raises(openai.APIStatusError):
                chat(gateway.openai())
        clock.now += 61
        with pytest.raises(openai.APIStatusError):
            chat(gateway.openai())
    down = [r.getMessage() for r in caplog.records if "upstream openai unreachable" in r.getMessage()]
    assert down == [
        "upstream openai unreachable (ConnectError)",
        "upstream openai unreachable (ConnectError) (4 more like it since the last such WARNING were logged at DEBUG)",
    ]


def test_unknown_path_and_unconfigured_azure(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory({"upstreams": {}})
    assert httpx2.get(f"{gateway.url}/nowhere", timeout=5).status_code == 404
    answer = httpx2.post(
        f"{gateway.url}/openai/deployments/d/chat/completions?api-version=2024-10-21",
        json={"messages": MESSAGES},
        timeout=5,
    )
    assert answer.status_code == 502 and "upstreams.azure.base_url" in answer.json()["error"]["message"]


# -- management -----------------------------------------------------------------------------------


def test_management_disabled_without_an_admin_key(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory({"admin_key": None})
    for method, path in (
        ("GET", "/cache/stats"),
        ("GET", "/cache/ping"),
        ("POST", "/cache/flush"),
        ("POST", "/cache/delete"),
    ):
        for key in (None, ADMIN, ""):
            answer = gateway.admin(method, path, key=key, json={"all": True})
            assert answer.status_code == 404, (method, path, key)
            assert "disabled" in answer.json()["error"]["message"]
    assert httpx2.get(f"{gateway.url}/health", timeout=5).json() == {"status": "ok"}


def test_management_requires_the_admin_key(gateway: Gateway) -> None:
    assert gateway.admin("GET", "/cache/stats", key=None).status_code == 401
    assert gateway.admin("GET", "/cache/stats", key="wrong").status_code == 403
    assert gateway.admin("POST", "/cache/flush", key="wrong", json={"all": True}).status_code == 403
    assert gateway.admin("GET", "/cache/stats").status_code == 200
    by_header = httpx2.get(f"{gateway.url}/cache/stats", headers={"x-admin-key": ADMIN}, timeout=5)
    assert by_header.status_code == 200


def test_stats_and_ping(gateway: Gateway) -> None:
    client = gateway.openai()
    chat(client)
    chat(client)
    stats = gateway.admin("GET", "/cache/stats").json()
    assert (stats["hits"], stats["misses"], stats["stored"], stats["store"]) == (1, 1, 1, "memory")
    assert stats["hit_ratio"] == 0.5
    ping = gateway.admin("GET", "/cache/ping")
    assert ping.status_code == 200 and ping.json()["ok"] is True


def test_ping_of_a_broken_store_says_only_not_ok(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory(
        {"cache": {"store": {"type": "redis", "host": "127.0.0.1", "port": 1, "timeout": 0.2, "connect_timeout": 0.2}}}
    )
    answer = gateway.admin("GET", "/cache/ping")
    assert answer.status_code == 503
    body = answer.json()
    assert body["ok"] is False
    assert "127.0.0.1" not in answer.text and "rror" not in answer.text
    assert chat(gateway.openai()).status_code == 200  # fail open


def test_a_store_down_is_one_probe_warning_an_interval_however_often_it_is_probed(
    gateway_factory: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    """Readiness probes need no key (their answer is reused for a second) and each failed store probe
    logged a WARNING: one dead store wrote one a second for as long as anyone probed. The probe
    (readiness and /cache/ping alike) now logs one an interval, the next counting the rest."""
    store = {"type": "redis", "host": "127.0.0.1", "port": 1, "timeout": 0.2, "connect_timeout": 0.2}
    gateway = gateway_factory({"cache": {"store": store}})
    clock = Clock()
    gateway.app.state.gateway.warnings.clock = clock
    with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
        for _ in range(4):
            assert gateway.admin("GET", "/cache/ping").status_code == 503
        clock.now += 61
        assert gateway.admin("GET", "/cache/ping").status_code == 503
    lines = [r.getMessage() for r in caplog.records if "cache store probe failed" in r.getMessage()]
    assert len(lines) == 2 and "(3 more like it since the last such WARNING" in lines[1], lines


def test_flush_by_namespace(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.openai()
    for namespace in ("faq", "support"):
        chat(client, extra_headers={"x-cache-namespace": namespace})
    assert gateway.admin("POST", "/cache/flush", json={"namespace": "faq"}).json() == {"flushed": "faq"}
    assert chat(client, extra_headers={"x-cache-namespace": "faq"}).headers["x-cache"] == "MISS"
    assert chat(client, extra_headers={"x-cache-namespace": "support"}).headers["x-cache"] == "HIT"
    assert gateway.admin("POST", "/cache/flush", json={}).status_code == 400
    assert gateway.admin("POST", "/cache/flush", json={"namespace": "faq", "all": True}).status_code == 400
    assert gateway.admin("POST", "/cache/flush", json={"all": True}).json() == {"flushed": "all"}
    assert chat(client, extra_headers={"x-cache-namespace": "support"}).headers["x-cache"] == "MISS"


def test_flush_by_raw_prefix_after_a_version_bump(tmp_path: Path, gateway_factory: Callable[..., Gateway]) -> None:
    old = gateway_factory(cache=Cache(DiskStore(tmp_path / "store"), key_prefix="v1:"))
    chat(old.openai())
    new = gateway_factory(cache=Cache(DiskStore(tmp_path / "store"), key_prefix="v2:"))
    chat(new.openai())
    assert new.admin("POST", "/cache/flush", json={"prefix": "v1:"}).json() == {"flushed": {"prefix": "v1:"}}
    assert chat(old.openai()).headers["x-cache"] == "MISS"
    assert chat(new.openai()).headers["x-cache"] == "HIT"


def test_delete_by_request_and_by_key(gateway: Gateway) -> None:
    client = gateway.openai("sk-tenant-a")
    key = chat(client).headers["x-cache-key"]
    body = {"model": MODEL, "messages": MESSAGES}
    answer = gateway.admin(
        "POST",
        "/cache/delete",
        json={"path": "/v1/chat/completions", "body": body, "headers": {"Authorization": "Bearer sk-tenant-a"}},
    )
    assert answer.json() == {"deleted": key}
    assert chat(client).headers["x-cache"] == "MISS"
    assert gateway.admin("POST", "/cache/delete", json={"key": key}).json() == {"deleted": key}
    assert chat(client).headers["x-cache"] == "MISS"
    assert gateway.admin("POST", "/cache/delete", json={"path": "/health", "body": {}}).status_code == 400
    assert gateway.admin("POST", "/cache/delete", content=b"{not json").status_code == 400


def test_invalidate_by_tag_removes_every_entry_with_any_of_the_tags(gateway: Gateway) -> None:
    client = gateway.openai()
    chat(client, "one", extra_headers={"x-cache-tags": "doc:1"})
    chat(client, "two", extra_headers={"x-cache-tags": "doc:2,tenant:acme"})
    chat(client, "three", extra_headers={"x-cache-tags": "doc:3"})

    answer = gateway.admin("POST", "/cache/invalidate", json={"tags": ["doc:1", "tenant:acme"]})

    assert answer.json() == {"invalidated": ["doc:1", "tenant:acme"], "deleted": 2}
    assert [chat(client, q).headers["x-cache"] for q in ("one", "two", "three")] == ["MISS", "MISS", "HIT"]
    for junk in ({}, {"tags": []}, {"tags": "doc:1"}, {"tags": [""]}, {"tags": [1]}):
        assert gateway.admin("POST", "/cache/invalidate", json=junk).status_code == 400, junk
    assert gateway.admin("POST", "/cache/invalidate", key="wrong", json={"tags": ["doc:3"]}).status_code == 403
    assert chat(client, "three").headers["x-cache"] == "HIT"


def test_junk_cache_tags_are_a_400_before_the_provider_is_called(
    gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    before = fake_provider.count()
    answer = httpx2.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES},
        headers={"authorization": "Bearer sk-tenant-a", "x-cache-tags": "no spaces allowed"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "x-cache-tags"
    assert fake_provider.count() == before


def test_a_store_without_a_tag_index_refuses_a_tag_invalidation(
    gateway_factory: Callable[..., Gateway], memcached_server: Any
) -> None:
    store = {"type": "memcached", "host": memcached_server.host, "port": memcached_server.port}
    gateway = gateway_factory({"cache": {"store": store}})
    answer = gateway.admin("POST", "/cache/invalidate", json={"tags": ["doc:1"]})
    assert answer.status_code == 400
    assert "cannot invalidate by tag" in answer.json()["error"]["message"]


def test_metrics_match_the_workload(gateway: Gateway) -> None:
    a, b = gateway.openai("sk-a"), gateway.openai("sk-b")
    for client in (a, a, a, b, b):
        chat(client)
    chat(a, extra_headers={"cache-control": "no-cache"})
    text = httpx2.get(f"{gateway.url}/metrics", timeout=5).text
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            keep = tuple(sorted((k, v) for k, v in sample.labels.items() if k in ("result", "family", "status_class")))
            totals[(sample.name, keep)] = totals.get((sample.name, keep), 0) + sample.value
    assert totals[("llm_cache_requests_total", (("result", "hit"),))] == 3
    assert totals[("llm_cache_requests_total", (("result", "miss"),))] == 2
    assert totals[("llm_cache_requests_total", (("result", "refresh"),))] == 1
    assert totals[("llm_cache_stored_entries_total", ())] == 3
    assert totals[("llm_cache_hit_ratio", ())] == 0.6
    assert totals[("llm_cache_upstream_requests_total", (("family", "openai"), ("status_class", "2xx")))] == 3
    assert totals[("llm_cache_tokens_avoided_total", ())] > 0
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))  # no metric exported twice


def test_metrics_show_the_current_store_size(gateway: Gateway) -> None:
    def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(httpx2.get(f"{gateway.url}/metrics", timeout=5).text):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return out

    memory = (("store", "memory"),)
    assert scrape()["llm_cache_store_entries"] == {memory: 0}
    client = gateway.openai()
    for content in ("What are your opening hours?", "Do you ship abroad?", "What are your opening hours?"):
        chat(client, content)  # miss, miss, hit
    metrics = scrape()
    assert metrics["llm_cache_store_entries"] == {memory: 2}
    assert metrics["llm_cache_store_size_bytes"] == metrics["llm_cache_stored_bytes_total"]  # nothing evicted yet

    chat(client, "Do you ship abroad?", extra_headers={"cache-control": "no-cache"})  # refresh: overwrites
    metrics = scrape()
    assert metrics["llm_cache_stored_entries_total"] == {memory: 3}  # writes, the overwrite included
    assert metrics["llm_cache_store_entries"] == {memory: 2}  # held now
    assert gateway.admin("POST", "/cache/flush", json={"all": True}).status_code == 200
    metrics = scrape()
    assert metrics["llm_cache_store_entries"] == {memory: 0}
    assert metrics["llm_cache_store_size_bytes"] == {memory: 0}


# -- one store, two ways in -----------------------------------------------------------------------


async def test_cached_through_the_transport_is_a_hit_through_the_gateway(
    tmp_path: Path, gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    transport_cache = Cache(DiskStore(tmp_path / "shared"))
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(transport_cache))
    direct = openai.AsyncOpenAI(
        base_url=fake_provider.openai_base_url, api_key="sk-shared", max_retries=0, http_client=http_client
    )
    first = await direct.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert first.headers["x-cache"] == "MISS"
    await direct.close()
    await transport_cache.close()

    gateway = gateway_factory(cache=Cache(DiskStore(tmp_path / "shared")))
    through = chat(gateway.openai("sk-shared"))
    assert through.headers["x-cache"] == "HIT"
    assert through.headers["x-cache-key"] == first.headers["x-cache-key"]
    assert through.parse().id == first.parse().id
    assert fake_provider.count("/chat/completions") == 1


def test_a_store_that_suspends_still_records_misses(
    tmp_path: Path, gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    """The relay must not cancel the middleware while it stores the answer after the last chunk."""
    gateway = gateway_factory(cache=Cache(DiskStore(tmp_path / "disk")))
    client = gateway.openai()
    assert [chat(client).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert streamed_text(client, "streamed") == streamed_text(client, "streamed")
    assert fake_provider.count("/chat/completions") == 2
    assert gateway.cache.stats.stored == 2


def test_client_disconnect_mid_stream_stores_nothing_and_closes_upstream(
    gateway_factory: Callable[..., Gateway],
) -> None:
    import asyncio
    import threading
    import time

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    closed = threading.Event()

    async def slow_stream(request: Any) -> StreamingResponse:
        async def events() -> Any:
            try:
                yield (
                    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                    b'[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n'
                )
                await asyncio.sleep(30)
                yield b"data: [DONE]\n\n"
            finally:
                closed.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    with BackgroundServer(Starlette(routes=[Route("/v1/chat/completions", slow_stream, methods=["POST"])])) as slow:
        gateway = gateway_factory({"upstreams": {"openai": {"base_url": f"{slow.url}/v1"}}})
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        with (
            httpx2.Client(timeout=10) as client,
            client.stream(
                "POST", f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-x"}
            ) as response,
        ):
            assert response.headers["x-cache"] == "MISS"
            next(response.iter_raw())
        assert closed.wait(10), "the upstream stream was not closed after the client left"
        limit = time.monotonic() + 5
        while gateway.cache.stats.not_stored < 1 and time.monotonic() < limit:
            time.sleep(0.02)
        assert (gateway.cache.stats.stored, gateway.cache.stats.not_stored) == (0, 1)


# -- per-request controls and odd bodies, end to end ----------------------------------------------


def test_per_request_controls(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    client = gateway.openai()
    with pytest.raises(openai.APIStatusError) as missing:
        chat(client, "only cached", extra_headers={"cache-control": "only-if-cached"})
    assert missing.value.status_code == 504
    assert fake_provider.count() == 0
    assert chat(client, "no store", extra_headers={"cache-control": "no-store"}).headers["x-cache"] == "MISS"
    assert chat(client, "no store").headers["x-cache"] == "MISS"
    assert chat(client, "no store").headers["x-cache"] == "HIT"
    assert chat(client, "no store", extra_headers={"cache-control": "no-cache"}).headers["x-cache"] == "REFRESH"
    assert chat(client, "no store", extra_headers={"cache-control": "max-age=0"}).headers["x-cache"] == "MISS"
    field = chat(client, "body field", extra_body={"cache": {"no-store": True}})
    assert field.headers["x-cache"] == "MISS"
    assert "cache" not in fake_provider.last.json  # the control field is never forwarded
    assert chat(client, "body field", extra_body={"cache": {"use-cache": False}}).headers["x-cache"] == "BYPASS"


def test_malformed_and_oversized_bodies_pass_through(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    gateway = gateway_factory({"cache": {"store": {"type": "memory"}, "max_body_bytes": 2048}})
    url = f"{gateway.url}/v1/chat/completions"
    headers = {"authorization": "Bearer sk-x", "content-type": "application/json"}
    for _ in range(2):
        answer = httpx2.post(url, content=b'{"model": "gpt-4o-mini", "messages": [', headers=headers, timeout=10)
        assert answer.status_code < 500 and answer.headers["x-cache"] == "BYPASS"
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 4096}]}
    for _ in range(2):
        answer = httpx2.post(url, json=big, headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.headers["x-cache"] == "BYPASS"
    assert fake_provider.count("/chat/completions") == 4
    assert gateway.cache.stats.stored == 0


def test_a_flush_the_store_cannot_keep_to_its_prefix_is_a_400_that_says_why(
    memcached_server: Any, gateway_factory: Callable[..., Gateway]
) -> None:
    """An aiocache memcached cache could only `flush_all` the server: the store refuses, and the gateway
    answers 400 naming why (not a 503 as if the store were down); nothing is deleted."""
    from aiocache import MemcachedCache

    from llm_cache.middleware.stores import AiocacheStore
    from llm_cache.middleware.stores.memcached import BytesSerializer

    own = MemcachedCache(
        serializer=BytesSerializer(), endpoint=memcached_server.host, port=memcached_server.port, namespace="gw"
    )
    gateway = gateway_factory(cache=Cache(AiocacheStore(own), key_prefix="v1:"))
    chat(gateway.openai())
    for path, body in (
        ("/cache/flush", {"namespace": "default"}),
        ("/cache/flush", {"all": True}),
        ("/cache/flushall", {}),
    ):
        refused = gateway.admin("POST", path, json=body)
        assert refused.status_code == 400 and "flush_all" in refused.text, (path, refused.text)
    assert chat(gateway.openai()).headers["x-cache"] == "HIT"
