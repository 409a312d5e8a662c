"""LiteLLM's admin endpoints, headers and controls, called with the shapes LiteLLM documents."""

# ruff: noqa: F811 (the gateway fixtures are imported from test_gateway)
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from llm_cache.middleware.config import parse_config
from tests.middleware.test_gateway import ADMIN, Gateway, chat, gateway, gateway_factory  # noqa: F401
from tests.support.servers import free_port


def test_every_response_names_its_key_also_as_litellm_does_when_asked(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory({"litellm_cache_key_header": True})
    first = chat(gateway.openai())
    assert first.headers["x-litellm-cache-key"] == first.headers["x-cache-key"]
    hit = chat(gateway.openai())
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["x-litellm-cache-key"] == first.headers["x-cache-key"]


def test_a_native_config_names_the_key_once(gateway: Gateway) -> None:
    first = chat(gateway.openai())
    hit = chat(gateway.openai())
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["x-cache-key"] == first.headers["x-cache-key"]
    assert "x-litellm-cache-key" not in first.headers and "x-litellm-cache-key" not in hit.headers


def test_a_litellm_file_turns_the_litellm_key_header_on() -> None:
    litellm = parse_config({"litellm_settings": {"cache": True, "cache_params": {"type": "local"}}})
    assert (litellm.dialect, litellm.litellm_cache_key_header) == ("litellm", True)
    assert parse_config({"cache": {"store": {"type": "memory"}}}).litellm_cache_key_header is False


def test_the_body_s_max_age_alias_is_honoured_and_stripped(gateway: Gateway) -> None:
    client = gateway.openai()
    chat(client)
    fresh_enough = chat(client, extra_body={"cache": {"s-max-age": 3600}})
    assert fresh_enough.headers["x-cache"] == "HIT"
    too_old = chat(client, extra_body={"cache": {"s-max-age": 0}})
    assert too_old.headers["x-cache"] != "HIT"


def test_cache_delete_takes_litellm_keys_list(gateway: Gateway) -> None:
    client = gateway.openai()
    keys = [chat(client, f"question {n}").headers["x-cache-key"] for n in range(2)]
    answer = gateway.admin("POST", "/cache/delete", json={"keys": keys})
    assert answer.status_code == 200
    assert answer.json() == {"status": "success", "deleted": keys}
    assert [chat(client, f"question {n}").headers["x-cache"] for n in range(2)] == ["MISS", "MISS"]


@pytest.mark.parametrize("keys", [[], "one-key", [""], [3], ["k"] * 1001])
def test_cache_delete_refuses_a_keys_value_that_is_not_a_list_of_keys(gateway: Gateway, keys: Any) -> None:
    answer = gateway.admin("POST", "/cache/delete", json={"keys": keys})
    assert answer.status_code == 400
    assert "keys must be a list" in answer.json()["error"]["message"]


def test_cache_flushall_empties_this_gateways_entries(gateway: Gateway) -> None:
    client = gateway.openai()
    chat(client)
    answer = gateway.admin("POST", "/cache/flushall")
    assert (answer.status_code, answer.json()) == (200, {"status": "success", "flushed": "all"})
    assert chat(client).headers["x-cache"] == "MISS"


def test_cache_ping_answers_litellm_fields_and_ours(gateway: Gateway) -> None:
    body = gateway.admin("GET", "/cache/ping").json()
    assert {k: body[k] for k in ("status", "cache_type", "ping_response", "set_cache_response")} == {
        "status": "healthy",
        "cache_type": "memory",
        "ping_response": True,
        "set_cache_response": "success",
    }
    assert body["ok"] is True and body["store"] == "memory" and body["latency_ms"] >= 0


@pytest.mark.parametrize(
    "headers",
    [{"authorization": f"Bearer {ADMIN}"}, {"x-litellm-api-key": ADMIN}, {"x-admin-key": ADMIN}],
    ids=["bearer", "x-litellm-api-key", "x-admin-key"],
)
def test_the_admin_key_is_read_where_litellm_reads_its_master_key(gateway: Gateway, headers: dict[str, str]) -> None:
    assert httpx2.get(f"{gateway.url}/cache/ping", headers=headers, timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/cache/flushall"), ("POST", "/cache/delete"), ("GET", "/cache/ping"), ("GET", "/cache/redis/info")],
)
def test_litellm_admin_endpoints_are_as_guarded_as_ours(gateway: Gateway, method: str, path: str) -> None:
    assert gateway.admin(method, path, key=None, json={"keys": ["k"]}).status_code == 401
    assert gateway.admin(method, path, key="sk-wrong", json={"keys": ["k"]}).status_code == 403
    wrong_litellm = httpx2.request(method, f"{gateway.url}{path}", headers={"x-litellm-api-key": "no"}, timeout=10)
    assert wrong_litellm.status_code == 403


def test_litellm_admin_endpoints_are_absent_without_an_admin_key(gateway_factory: Callable[..., Gateway]) -> None:
    closed = gateway_factory({"admin_key": None})
    for method, path in (("POST", "/cache/flushall"), ("GET", "/cache/redis/info"), ("GET", "/cache/ping")):
        assert closed.admin(method, path).status_code == 404


def test_redis_info_without_a_redis_store_is_a_clear_400(gateway: Gateway) -> None:
    answer = gateway.admin("GET", "/cache/redis/info")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "/cache/redis/info needs a redis store; this gateway's store is memory"
    )


def test_redis_info_with_a_redis_store_passes_no_paths_or_ports(
    gateway_factory: Callable[..., Gateway], redis_server: Any
) -> None:
    redis = gateway_factory({"cache": {"store": {"type": "redis", "url": redis_server.url}}})
    answer = redis.admin("GET", "/cache/redis/info")
    assert answer.status_code == 200
    body = answer.json()
    assert body["num_clients"] >= 1
    assert body["info"]["redis_version"]
    assert not {"executable", "config_file", "tcp_port", "run_id"} & body["info"].keys()


def test_liveliness_needs_no_key(gateway: Gateway) -> None:
    answer = httpx2.get(f"{gateway.url}/health/liveliness", timeout=10)
    assert (answer.status_code, answer.json()) == (200, "I'm alive!")


def test_readiness_is_healthy_when_store_and_upstreams_answer(gateway: Gateway) -> None:
    answer = httpx2.get(f"{gateway.url}/health/readiness", timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy" and body["cache"] == "memory" and body["store"] == "ok"
    assert body["upstreams"] == dict.fromkeys(("anthropic", "azure", "gemini", "openai"), "reachable")


def test_one_unreachable_upstream_leaves_the_gateway_ready_but_degraded_naming_it_without_its_url(
    gateway_factory: Callable[..., Gateway], fake_provider: Any
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    upstreams = {
        "openai": {"base_url": dead, "api_key": "sk-upstream-secret"},
        "anthropic": {"base_url": fake_provider.anthropic_base_url},
    }
    gateway = gateway_factory({"upstreams": upstreams})
    answer = httpx2.get(f"{gateway.url}/health/readiness", timeout=10)
    assert answer.status_code == 200, answer.text  # hits and the other providers are still served
    assert answer.json()["status"] == "degraded"
    assert answer.json()["upstreams"]["openai"] == "unreachable"
    assert answer.json()["upstreams"]["anthropic"] == "reachable"
    assert "127.0.0.1" not in answer.text and "sk-upstream-secret" not in answer.text


def test_readiness_is_503_when_no_upstream_is_reachable(gateway_factory: Callable[..., Gateway]) -> None:
    families = ("openai", "anthropic", "azure", "gemini")
    upstreams = {family: {"base_url": f"http://127.0.0.1:{free_port()}/v1"} for family in families}
    gateway = gateway_factory({"upstreams": upstreams})
    answer = httpx2.get(f"{gateway.url}/health/readiness", timeout=10)
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy"
    assert set(answer.json()["upstreams"].values()) == {"unreachable"}


def test_readiness_is_503_when_the_store_fails(gateway_factory: Callable[..., Gateway], redis_factory: Any) -> None:
    redis = redis_factory()
    store = {"type": "redis", "url": redis.url, "timeout": 0.5, "connect_timeout": 0.5}
    gateway = gateway_factory({"cache": {"store": store}})
    redis.stop()
    answer = httpx2.get(f"{gateway.url}/health/readiness", timeout=20)
    assert answer.status_code == 503
    assert answer.json()["store"] == "failing"
    assert str(redis.port) not in answer.text
