"""A LiteLLM proxy config runs unchanged: configs shaped like LiteLLM's documentation (proxy caching,
Redis, Redis semantic, S3, router fallbacks) load, every key we do not honour is reported as
`ignored: <path> (<why>)`, typos get `did you mean`, and `serve` honours the router settings written
under `litellm_settings` exactly as `Router()` does. The real openai SDK drives the gateway."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

from llm_cache import _litellm
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.cli import cmd_check_config
from llm_cache.middleware.config import ConfigError, build_cache, build_semantic, load_config, parse_config
from llm_cache.middleware.config.schema import SemanticConfig
from llm_cache.middleware.gateway import create_gateway
from llm_cache.router import Router
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.servers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[3]
MESSAGES = [{"role": "user", "content": "What are your opening hours?"}]


def write(tmp_path: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_config(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    return cmd_check_config(Namespace(file=str(path)), out=out), out.getvalue()


# -- the shipped examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_every_shipped_example_passes_check_config_with_no_variables_set_but_its_gateway_key(example: str) -> None:
    # (a master key named from an unset variable is an error: the gateway would run open)
    result = subprocess.run(
        [sys.executable, "-m", "llm_cache.middleware.cli", "check-config", f"examples/{example}"],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LLM_CACHE_ADMIN_KEY": "sk-example-admin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: examples/{example}")


# -- configs from LiteLLM's documentation ------------------------------------------------------------


def proxy_caching_doc() -> dict[str, Any]:
    """LiteLLM's caching quick start, with its usual neighbours in a proxy config."""
    return {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_KEY"}},
            {"model_name": "text-embedding-3-small", "litellm_params": {"model": "text-embedding-3-small"}},
        ],
        "litellm_settings": {
            "set_verbose": True,
            "cache": True,
            "success_callback": ["langfuse"],
            "cache_params": {
                "type": "redis",
                "host": "localhost",
                "port": 6379,
                "password": "os.environ/REDIS_PASSWORD",
                "namespace": "litellm.caching",
                "ttl": 600,
                "supported_call_types": ["acompletion", "atext_completion", "aembedding", "atranscription"],
                "mode": "default_off",
            },
        },
        "general_settings": {"master_key": "sk-1234", "database_url": "postgresql://db", "alerting": ["slack"]},
    }


def test_the_proxy_caching_doc_config_maps_and_names_what_it_ignores() -> None:
    config = parse_config(proxy_caching_doc(), env={})
    store = config.cache.store
    assert (store.type, store.host, store.port, store.password) == ("redis", "localhost", 6379, None)
    assert (config.cache.key_prefix, config.cache.ttl, config.cache.mode) == ("litellm.caching:", 600, "opt_in")
    assert config.cache.endpoints == [
        "chat.completions",
        "messages",
        "generate_content",
        "bedrock.converse",
        "bedrock.invoke",
        "bedrock.invoke-stream",
        "completions",
        "embeddings",
        "embed_content",
        "audio.transcriptions",
        "audio.translations",
    ]
    assert config.admin_key == "sk-1234" and config.auth.keys == ["sk-1234"]
    assert config.notes == [
        "unset: litellm_settings.cache_params.password (os.environ/REDIS_PASSWORD) is not set; read as null",
        "unset: model_list[0].litellm_params.api_key (os.environ/OPENAI_KEY) is not set; read as null",
        "ignored: litellm_settings.set_verbose (use llm-cache serve --log-level debug)",
        "ignored: litellm_settings.success_callback (LiteLLM's logging callbacks are not run; "
        "traces and metrics are OpenTelemetry and Prometheus)",
        "ignored: general_settings.database_url (no database: the file is the whole configuration)",
        "ignored: general_settings.alerting (no alerting; watch the Prometheus metrics)",
    ]


@pytest.mark.parametrize(
    ("call_type", "names"),
    [
        ("rerank", ["rerank"]),
        ("amoderation", ["moderations"]),
        ("atranscription", ["audio.transcriptions", "audio.translations"]),
    ],
)
def test_supported_call_types_select_rerank_moderation_and_transcription(call_type: str, names: list[str]) -> None:
    settings = {"litellm_settings": {"cache": True, "cache_params": {"supported_call_types": [call_type]}}}

    config = parse_config(settings, env={})

    assert config.cache.endpoints == names
    assert [endpoint.name for endpoint in config.cache.cached_endpoints()] == names


def test_redis_cluster_sentinel_and_tls_settings_map() -> None:
    cluster = parse_config(
        {
            "litellm_settings": {
                "cache": True,
                "cache_params": {
                    "type": "redis",
                    "redis_startup_nodes": [{"host": "127.0.0.1", "port": "7001"}],
                    "password": "pw",
                    "username": "app",
                    "ssl": True,
                    "max_connections": 20,
                    "socket_timeout": 0.5,
                },
            }
        },
        env={},
    ).cache.store
    assert cluster.type == "redis-cluster" and cluster.startup_nodes == ["127.0.0.1:7001"]
    assert (cluster.password, cluster.username, cluster.ssl) == ("pw", "app", True)
    assert (cluster.max_connections, cluster.timeout) == (20, 0.5)


def test_the_s3_doc_config_maps() -> None:
    store = parse_config(
        {
            "litellm_settings": {
                "cache": True,
                "cache_params": {
                    "type": "s3",
                    "s3_bucket_name": "cache-bucket-litellm",
                    "s3_region_name": "us-west-2",
                    "s3_aws_access_key_id": "os.environ/AWS_ACCESS_KEY_ID",
                    "s3_aws_secret_access_key": "os.environ/AWS_SECRET_ACCESS_KEY",
                    "s3_endpoint_url": "https://s3.amazonaws.com",
                },
            }
        },
        env={"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret"},
    ).cache.store
    assert (store.type, store.bucket, store.region, store.aws_access_key_id) == (
        "s3",
        "cache-bucket-litellm",
        "us-west-2",
        "AKIA",
    )


def test_the_gcs_and_azure_blob_doc_configs_map() -> None:
    def store_of(params: dict[str, Any]) -> Any:
        return parse_config({"litellm_settings": {"cache": True, "cache_params": params}}, env={}).cache.store

    gcs = store_of(
        {
            "type": "gcs",
            "gcs_bucket_name": "cache-bucket",
            "gcs_path_service_account": "/secrets/sa.json",
            "gcs_path": "llm/",
        }
    )
    assert (gcs.type, gcs.bucket, gcs.service_account_file, gcs.prefix) == (
        "gcs",
        "cache-bucket",
        "/secrets/sa.json",
        "llm/",
    )
    azure = store_of(
        {
            "type": "azure-blob",
            "azure_account_url": "https://acct.blob.core.windows.net",
            "azure_blob_container": "llm-cache",
        }
    )
    assert (azure.type, azure.account_url, azure.container) == (
        "azure-blob",
        "https://acct.blob.core.windows.net",
        "llm-cache",
    )


def test_the_qdrant_semantic_doc_config_puts_the_vectors_in_qdrant() -> None:
    config = parse_config(
        {
            "model_list": [
                {"model_name": "embed", "litellm_params": {"model": "openai/text-embedding-3-small", "api_key": "sk"}}
            ],
            "litellm_settings": {
                "cache": True,
                "cache_params": {
                    "type": "qdrant-semantic",
                    "qdrant_api_base": "http://qdrant:6333",
                    "qdrant_api_key": "os.environ/QDRANT_API_KEY",
                    "qdrant_collection_name": "answers",
                    "qdrant_quantization_config": "binary",
                    "qdrant_semantic_cache_embedding_model": "embed",
                    "similarity_threshold": 0.8,
                },
            },
        },
        env={"QDRANT_API_KEY": "qk"},
    )
    cache, notes = config.cache, config.notes
    assert cache.store.type == "memory" and cache.semantic is not None and cache.semantic.threshold == 0.8
    index = cache.semantic.index
    assert (index.type, index.url, index.api_key, index.collection_name) == (
        "qdrant",
        "http://qdrant:6333",
        "qk",
        "answers",
    )
    assert cache.semantic.embedder.type == "openai" and cache.semantic.embedder.model == "text-embedding-3-small"
    assert any("qdrant_quantization_config" in note and note.startswith("ignored") for note in notes)
    assert any("qdrant-semantic" in note and "memory store" in note for note in notes)


def test_an_unset_variable_where_a_value_is_required_names_it() -> None:
    with pytest.raises(ConfigError, match=r"(?s)cache\.store\.bucket.*os\.environ/BUCKET"):
        parse_config(
            {
                "litellm_settings": {
                    "cache": True,
                    "cache_params": {"type": "s3", "s3_bucket_name": "os.environ/BUCKET"},
                }
            },
            env={},
        )


def test_a_master_key_read_from_an_unset_variable_is_an_error_not_an_open_gateway() -> None:
    """`master_key: os.environ/LITELLM_MASTER_KEY` with the variable missing (a deployment that lost its
    secret) read as null, as LiteLLM reads it: the gateway ran with no client key and no admin key, and
    `serve` said so only when it held upstream keys. The operator named a key: without it the config is an
    error naming the variable (as `auth.keys` is); a gateway meant to run open names no master key."""
    data = {
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
        "model_list": [{"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}}],
    }
    with pytest.raises(ConfigError, match=r"general_settings\.master_key: .*LITELLM_MASTER_KEY is not set"):
        parse_config(data, env={})
    config = parse_config(data, env={"LITELLM_MASTER_KEY": "sk-master"})
    assert config.auth.keys == ["sk-master"] and config.admin_key == "sk-master"


def redis_semantic_doc(api_base: str) -> dict[str, Any]:
    """LiteLLM's Redis semantic caching doc: the embedding model is a model_list entry."""
    return {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": api_base}},
            {
                "model_name": "openai-embedding",
                "litellm_params": {
                    "model": "openai/text-embedding-3-small",
                    "api_base": api_base,
                    "api_key": "os.environ/EMBED_KEY",
                },
            },
        ],
        "litellm_settings": {
            "cache": True,
            "cache_params": {
                "type": "redis-semantic",
                "host": "127.0.0.1",
                "similarity_threshold": 0.8,
                "redis_semantic_cache_embedding_model": "openai-embedding",
                "redis_semantic_cache_index_name": "team-a",
            },
        },
    }


def test_the_named_embedding_model_embeds_through_its_model_list_entry(fake_provider: RunningFakeProvider) -> None:
    config = parse_config(redis_semantic_doc(fake_provider.openai_base_url), env={"EMBED_KEY": "sk-embed"})
    semantic = config.cache.semantic
    assert semantic is not None and semantic.threshold == 0.8 and semantic.index.index_name == "team-a"
    assert semantic.embedder.model_dump() == {
        "type": "openai",
        "base_url": fake_provider.openai_base_url,
        "model": "text-embedding-3-small",
        "api_key": "sk-embed",
        "timeout": 10.0,
    }
    assert not [note for note in config.notes if "embedding" in note]
    embedder = build_semantic(SemanticConfig(embedder=semantic.embedder)).embedder  # vectors in memory
    vectors = asyncio.run(embedder.embed(["hello", "world"]))
    assert vectors.shape[0] == 2
    sent = fake_provider.last
    assert sent.path == "/v1/embeddings" and sent.json["model"] == "text-embedding-3-small"
    assert sent.headers["authorization"] == "Bearer sk-embed"


def test_the_guides_embedding_model_is_an_openai_model_and_never_silently_replaced() -> None:
    guide = {
        "cache_responses": True,
        "caching": {"type": "redis_semantic", "host": "h", "params": {"embedding_model": "text-embedding-3-small"}},
    }
    semantic = parse_config(guide, env={"OPENAI_API_KEY": "sk-o"}).cache.semantic
    assert semantic is not None and semantic.embedder.type == "openai"
    assert (semantic.embedder.model, semantic.embedder.api_key) == ("text-embedding-3-small", "sk-o")

    guide["caching"]["params"] = {"embedding_model": "bedrock/amazon.titan-embed-text-v1"}
    config = parse_config(guide, env={})
    assert config.cache.semantic is not None and config.cache.semantic.embedder.type == "local"
    assert config.notes == [
        "replaced: caching.params.embedding_model ('bedrock/amazon.titan-embed-text-v1' is a bedrock model, "
        "not an OpenAI-compatible /embeddings endpoint): the local all-MiniLM-L6-v2 embeds instead"
    ]


def test_typos_get_did_you_mean() -> None:
    config = parse_config(
        {
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_bse": "http://x"}}],
            "litellm_settings": {"cache": True, "num_retires": 3, "cache_params": {"type": "local", "namspace": "a"}},
            "general_settings": {"master_kye": "sk"},
        },
        env={},
    )
    assert config.notes == [
        "ignored: litellm_settings.num_retires (unknown key; did you mean num_retries?)",
        "ignored: litellm_settings.cache_params.namspace (unknown key; did you mean namespace?)",
        "ignored: general_settings.master_kye (unknown key; did you mean master_key?)",
        "ignored: model_list[0].litellm_params.api_bse (not used by the router; did you mean api_base?)",
    ]
    with pytest.raises(ConfigError, match=r"router_settings\.cooldown_tme: .*did you mean cooldown_time\?"):
        create_gateway(parse_config({"model_list": config.model_list, "router_settings": {"cooldown_tme": 1}}))


def test_a_typo_in_the_guides_caching_block_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"caching\.key_prefx: unknown key; did you mean key_prefix\?"):
        parse_config({"caching": {"type": "in-memory", "key_prefx": "v2:"}})


def test_check_config_prints_every_note(tmp_path: Path) -> None:
    code, out = check_config(write(tmp_path, proxy_caching_doc()))
    assert code == 0
    assert "# ignored: general_settings.alerting (no alerting; watch the Prometheus metrics)\n" in out
    assert "# unset: litellm_settings.cache_params.password (os.environ/REDIS_PASSWORD) is not set" in out


def test_every_catalogued_key_is_in_the_migration_guide() -> None:
    guide = (ROOT / "docs" / "migrating-from-litellm.md").read_text()
    assert _litellm.table() in guide  # regenerate with: python -m llm_cache._litellm


# -- hooks beside the config file ----------------------------------------------------------------------


def test_a_key_builder_beside_the_config_file_is_imported_from_there(tmp_path: Path) -> None:
    (tmp_path / "custom_key_hook_for_test.py").write_text(
        "def build_cache_key(request, default_key):\n    return 'custom:' + default_key\n"
    )
    path = write(
        tmp_path, {"caching": {"type": "in-memory", "key_builder": "custom_key_hook_for_test.build_cache_key"}}
    )
    before = list(sys.path)
    config = load_config(path, env={})
    assert sys.path == before  # the folder was on the path only while the file was read
    cache = build_cache(config)
    assert cache.settings.key_builder.__module__ == "custom_key_hook_for_test"


# -- serve: the router reads litellm_settings as Router() does -------------------------------------------


def fallback_doc(fake: RunningFakeProvider) -> dict[str, Any]:
    """LiteLLM's proxy reliability doc, with the retries and fallbacks under litellm_settings."""
    return {
        "model_list": [
            {
                "model_name": "gpt-3.5-turbo",
                "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": fake.openai_base_url, "rpm": 6},
            },
            {
                "model_name": "gpt-4",
                "litellm_params": {"model": "openai/gpt-4", "api_base": fake.openai_base_url, "rpm": 6},
            },
        ],
        "litellm_settings": {
            "cache": True,
            "cache_params": {"type": "local"},
            "num_retries": 2,
            "request_timeout": 10,
            "fallbacks": [{"gpt-3.5-turbo": ["gpt-4"]}],
            "allowed_fails": 5,
            "cooldown_time": 30,
        },
        "router_settings": {"backoff_initial": 0, "backoff_jitter": 0},  # ours: retry at once
    }


@pytest.fixture
def served(tmp_path: Path, fake_provider: RunningFakeProvider) -> Iterator[openai.OpenAI]:
    app = create_gateway(load_config(write(tmp_path, fallback_doc(fake_provider)), env={}))
    with BackgroundServer(app) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)


def test_serve_and_router_read_the_same_settings(tmp_path: Path, fake_provider: RunningFakeProvider) -> None:
    path = write(tmp_path, fallback_doc(fake_provider))
    served = create_gateway(load_config(path, env={})).state.router.settings
    direct = Router(str(path)).settings
    assert served.model_dump() == direct.model_dump() | {"unknown_models": "refuse"}
    assert (served.num_retries, served.timeout, served.allowed_fails, served.cooldown_time) == (2, 10, 5, 30)
    assert served.fallbacks == {"gpt-3.5-turbo": ["gpt-4"]}


def test_serve_retries_as_litellm_settings_say(served: openai.OpenAI, fake_provider: RunningFakeProvider) -> None:
    fake_provider.fail_next(2, status=503)
    answer = served.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=MESSAGES)
    assert answer.headers["x-router-attempts"] == "3"
    assert [request.json["model"] for request in fake_provider.requests] == ["gpt-3.5-turbo"] * 3
    assert answer.parse().choices[0].message.content


def test_serve_falls_back_as_litellm_settings_say(served: openai.OpenAI, fake_provider: RunningFakeProvider) -> None:
    fake_provider.fail_next(3, status=500)  # the first try and both retries of gpt-3.5-turbo
    answer = served.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=MESSAGES)
    assert answer.headers["x-router-group"] == "gpt-4"
    assert [request.json["model"] for request in fake_provider.requests][-1] == "gpt-4"
    assert answer.parse().model == "gpt-4"


# -- serve: what is cached --------------------------------------------------------------------------------


def caching_gateway(tmp_path: Path, fake: RunningFakeProvider, **params: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake.openai_base_url}},
            {
                "model_name": "embed",
                "litellm_params": {"model": "openai/text-embedding-3-small", "api_base": fake.openai_base_url},
            },
        ],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local", **params}},
    }


def test_supported_call_types_restrict_what_is_cached(tmp_path: Path, fake_provider: RunningFakeProvider) -> None:
    config = load_config(
        write(tmp_path, caching_gateway(tmp_path, fake_provider, supported_call_types=["acompletion"])), env={}
    )
    with BackgroundServer(create_gateway(config)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)
        chats = [client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES) for _ in range(2)]
        assert [answer.headers["x-cache"] for answer in chats] == ["MISS", "HIT"]
        for _ in range(2):
            embedded = client.embeddings.with_raw_response.create(model="embed", input="hello")
            assert "x-cache" not in embedded.headers
    assert fake_provider.count("/embeddings") == 2  # never cached


def test_mode_default_off_caches_only_what_asks(tmp_path: Path, fake_provider: RunningFakeProvider) -> None:
    config = load_config(write(tmp_path, caching_gateway(tmp_path, fake_provider, mode="default_off")), env={})
    with BackgroundServer(create_gateway(config)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)

        def chat(**extra: Any) -> str:
            answer = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, **extra)
            return str(answer.headers.get("x-cache"))

        assert "HIT" not in (chat(), chat()) and fake_provider.count("/chat/completions") == 2
        asks = {"extra_body": {"cache": {"use-cache": True}}}
        assert [chat(**asks), chat(**asks)] == ["MISS", "HIT"]


# -- serve: the notes at start-up ---------------------------------------------------------------------------


def test_serve_reports_every_ignored_key_at_start_up(tmp_path: Path) -> None:
    path = write(tmp_path, proxy_caching_doc() | {"litellm_settings": {"cache": True, "set_verbos": True}})
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_cache.middleware.cli", "serve", "--config", str(path), "--port", str(port)],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.05)  # polling for start-up, bounded by the deadline
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "ignored: litellm_settings.set_verbos (unknown key; did you mean set_verbose?)\n" in stderr
    assert "ignored: general_settings.database_url (no database: the file is the whole configuration)\n" in stderr


# -- serve: Anthropic breakpoints per deployment -----------------------------------------------------------

SYSTEM_CHAT = [{"role": "system", "content": "You answer from the handbook."}, *MESSAGES]


def claude_gateway(
    fake: RunningFakeProvider, deployment_points: Any = None, top_level_points: Any = None
) -> dict[str, Any]:
    claude: dict[str, Any] = {"model": "anthropic/claude-sonnet-4-5", "api_base": fake.anthropic_base_url}
    if deployment_points is not None:
        claude["cache_control_injection_points"] = deployment_points
    config: dict[str, Any] = {
        "model_list": [
            {"model_name": "claude", "litellm_params": claude},
            {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o", "api_base": fake.openai_base_url}},
        ],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
    }
    if top_level_points is not None:
        config["cache_control_injection_points"] = top_level_points
    return config


def sent_through(tmp_path: Path, fake: RunningFakeProvider, config: dict[str, Any], model: str, **extra: Any) -> Any:
    """What the deployment received for an OpenAI-format chat to `model` through serve."""
    with BackgroundServer(create_gateway(load_config(write(tmp_path, config), env={}))) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)
        client.chat.completions.create(model=model, messages=extra.pop("messages", SYSTEM_CHAT), **extra)
    return fake.last


@pytest.mark.parametrize("form", ["deployment", "top level"])
def test_injection_points_put_breakpoints_on_what_the_anthropic_deployment_gets(
    tmp_path: Path, fake_provider: RunningFakeProvider, form: str
) -> None:
    points = [{"location": "message", "role": "system"}]
    config = claude_gateway(
        fake_provider, **{"deployment_points" if form == "deployment" else "top_level_points": points}
    )
    sent = sent_through(tmp_path, fake_provider, config, "claude")
    assert sent.path == "/v1/messages"  # translated from the OpenAI-format request
    assert sent.json["system"] == [
        {"type": "text", "text": "You answer from the handbook.", "cache_control": {"type": "ephemeral"}}
    ]
    assert "cache_control" not in json_text(sent.json["messages"])


def test_injection_points_leave_other_deployments_and_the_callers_own_markers_alone(
    tmp_path: Path, fake_provider: RunningFakeProvider
) -> None:
    config = claude_gateway(fake_provider, deployment_points=[{"location": "message", "index": -1}])
    to_openai = sent_through(tmp_path, fake_provider, config, "gpt")
    assert to_openai.path == "/v1/chat/completions" and "cache_control" not in json_text(to_openai.json)

    own = [
        {"role": "system", "content": [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}]},
        *MESSAGES,
    ]
    sent = sent_through(tmp_path, fake_provider, config, "claude", messages=own)
    assert json_text(sent.json).count("cache_control") == 1  # the caller's own, and nothing added


def json_text(value: Any) -> str:
    return json.dumps(value)


# -- serve: LiteLLM's store configs against real stores ---------------------------------------------------


def chat_twice(config: dict[str, Any], tmp_path: Path, stored: Callable[[], bool]) -> list[str]:
    """x-cache of the same chat asked twice, the second time once `stored()` sees the first answer
    in the store (it is written after the answer is sent)."""
    with BackgroundServer(create_gateway(load_config(write(tmp_path, config), env={}))) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-caller", max_retries=0)
        first = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        wait_for(stored, 10, "the first answer in the store")
        second = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    return [first.headers["x-cache"], second.headers["x-cache"]]


def test_the_redis_doc_config_serves_hits_from_redis_under_its_namespace(
    tmp_path: Path, fake_provider: RunningFakeProvider, redis_server: Any
) -> None:
    import redis

    namespace = f"litellm.caching.{tmp_path.name}"
    params = {"type": "redis", "host": redis_server.host, "port": redis_server.port, "namespace": namespace}
    client = redis.Redis(host=redis_server.host, port=redis_server.port)

    def stored() -> list[Any]:  # the entries, behind the store's own prefix (not the tag indexes, named under it too)
        return [key for key in client.scan_iter(match=f"*{namespace}:*") if b":tags:{" not in key]

    config = caching_gateway(tmp_path, fake_provider, **params, ttl=600)
    assert chat_twice(config, tmp_path, lambda: bool(stored())) == ["MISS", "HIT"]
    assert all(0 < client.ttl(key) <= 600 for key in stored())


def test_the_s3_doc_config_serves_hits_from_the_bucket(
    tmp_path: Path, fake_provider: RunningFakeProvider, s3_server: Any
) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=s3_server.url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    bucket = f"litellm-{tmp_path.name.lower().replace('_', '-')}"[:63]
    s3.create_bucket(Bucket=bucket)
    params = {
        "type": "s3",
        "s3_bucket_name": bucket,
        "s3_region_name": "us-east-1",
        "s3_endpoint_url": s3_server.url,
        "s3_aws_access_key_id": "t",
        "s3_aws_secret_access_key": "t",
        "s3_path": "cache",
    }

    def stored() -> bool:  # an entry, not only its tag markers (written first, under `{prefix}_tags/`)
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="cache").get("Contents", [])
        return any("_tags/" not in found["Key"] for found in listed)

    assert chat_twice(caching_gateway(tmp_path, fake_provider, **params), tmp_path, stored) == ["MISS", "HIT"]


def test_the_redis_semantic_doc_config_embeds_with_the_named_model_into_the_named_index(
    tmp_path: Path, fake_provider: RunningFakeProvider, redis_stack_server: Any
) -> None:
    import redis

    index = f"idx-{tmp_path.name}"
    config = redis_semantic_doc(fake_provider.openai_base_url)
    config["model_list"][0]["model_name"] = "chat"
    config["litellm_settings"]["cache_params"].update(
        host=redis_stack_server.host, port=redis_stack_server.port, redis_semantic_cache_index_name=index
    )
    with BackgroundServer(create_gateway(load_config(write(tmp_path, config), env={"EMBED_KEY": "sk-embed"}))) as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="sk-caller", max_retries=0)
        assert client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES).headers["x-cache"]
        raw = redis.Redis(host=redis_stack_server.host, port=redis_stack_server.port)
        wait_for(lambda: any(raw.scan_iter(match=f"{index}:*")), 10, "the answer indexed")  # after it is sent
    embedded = [request for request in fake_provider.requests if request.path == "/v1/embeddings"]
    assert embedded and {request.headers["authorization"] for request in embedded} == {"Bearer sk-embed"}
    assert embedded[0].json["model"] == "text-embedding-3-small"
    assert index.encode() in raw.execute_command("FT._LIST")
