"""Gateway configuration: three dialects, env interpolation, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware.config import (
    CacheConfig,
    ConfigError,
    GatewayConfig,
    build_cache,
    build_store,
    effective_settings,
    load_config,
    parse_config,
)
from llm_cache.middleware.stores import DiskStore, MemoryStore, RedisStore, TieredStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ENV = {"REDIS_PASSWORD": "hunter2", "LLM_CACHE_ADMIN_KEY": "adm-secret"}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env if env is not None else ENV)
    message = str(caught.value)
    assert str(path) in message
    return message


# -- dialects -------------------------------------------------------------------------------------


def test_three_example_files_give_the_same_cache_settings() -> None:
    loaded = {name: load_config(EXAMPLES / f"{name}.yaml", env=ENV) for name in ("native", "guide", "litellm")}
    assert {name: c.dialect for name, c in loaded.items()} == {
        "native": "native",
        "guide": "guide",
        "litellm": "litellm",
    }
    caches = {name: c.cache.model_dump() for name, c in loaded.items()}
    assert caches["native"] == caches["guide"] == caches["litellm"]
    store = loaded["native"].cache.store
    assert (store.type, store.host, store.port, store.password) == ("redis", "127.0.0.1", 6379, "hunter2")
    assert loaded["native"].cache.key_prefix == "prod:v1:"
    assert loaded["native"].admin_key == loaded["litellm"].admin_key == "adm-secret"
    assert loaded["litellm"].model_list[0]["model_name"] == "gpt-4o-mini"
    # the router resolves its own references: model_list is passed through untouched
    assert loaded["litellm"].model_list[0]["litellm_params"]["api_key"] == "os.environ/OPENAI_API_KEY"
    assert loaded["guide"].server.port == loaded["native"].server.port == 4000


def test_memory_and_disk_equivalents(tmp_path: Path) -> None:
    native = parse_config({"cache": {"store": {"type": "memory", "max_entries": 50}, "ttl": 60}})
    guide = parse_config(
        {"cache_responses": True, "caching": {"type": "in-memory", "ttl": 60, "params": {"capacity": 50}}}
    )
    litellm = parse_config(
        {"litellm_settings": {"cache": True, "cache_params": {"type": "local", "ttl": 60, "max_size_in_memory": 50}}}
    )
    assert native.cache == guide.cache == litellm.cache
    disk = {"litellm_settings": {"cache": True, "cache_params": {"type": "disk", "disk_cache_dir": str(tmp_path)}}}
    assert parse_config(disk).cache.store.directory == str(tmp_path)


def test_guide_dual_cache_becomes_a_tiered_store() -> None:
    config = parse_config(
        {
            "caching": {
                "type": "dual_cache",
                "l1": {"type": "in-memory", "capacity": 5000},
                "l2": {"type": "redis", "host": "redis.internal", "ttl": 3600},
            }
        }
    )
    store = config.cache.store
    assert store.type == "tiered"
    assert (store.l1.type, store.l1.max_entries) == ("memory", 5000)
    assert (store.l2.type, store.l2.host) == ("redis", "redis.internal")
    assert config.cache.ttl == 3600
    built = build_store(store)
    assert isinstance(built, TieredStore) and isinstance(built.l1, MemoryStore) and isinstance(built.l2, RedisStore)


def test_cache_disabled_in_each_dialect() -> None:
    assert parse_config({"cache": {"enabled": False}}).cache.enabled is False
    assert parse_config({"cache_responses": False, "caching": {"type": "in-memory"}}).cache.enabled is False
    assert parse_config({"litellm_settings": {"cache": False}}).cache.enabled is False


def test_litellm_specifics() -> None:
    config = parse_config(
        {
            "litellm_settings": {
                "cache": True,
                "cache_params": {
                    "type": "redis",
                    "mode": "default_off",
                    "supported_call_types": ["acompletion"],
                    "foo": 1,
                },
            }
        },
        env={"REDIS_HOST": "envhost", "REDIS_PORT": "6380"},
    )
    assert config.cache.mode == "opt_in"
    assert (config.cache.store.host, config.cache.store.port) == ("envhost", 6380)
    assert config.cache.endpoints is not None and "chat.completions" in config.cache.endpoints
    assert "embeddings" not in config.cache.endpoints
    assert "ignored: litellm_settings.cache_params.foo (unknown key)" in config.notes


def test_no_config_sections_is_the_default() -> None:
    config = parse_config({})
    assert config.cache.store.type == "disk" and config.cache.scope == "credential"
    assert config.upstreams.base_url("openai") == "https://api.openai.com/v1"
    assert config.upstreams.base_url("azure") is None


# -- environment ----------------------------------------------------------------------------------


def test_env_interpolation_both_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cache:\n  key_prefix: '${PREFIX}:v2:'\n  store: {type: memory}\n"
        "admin_key: os.environ/ADMIN\n"
        "upstreams:\n  openai: {base_url: '${BASE:-http://127.0.0.1:9/v1}'}\n",
    )
    config = load_config(path, env={"PREFIX": "team", "ADMIN": "k"})
    assert config.cache.key_prefix == "team:v2:"
    assert config.admin_key == "k"
    assert config.upstreams.openai.base_url == "http://127.0.0.1:9/v1"


def test_a_missing_inline_env_var_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, "admin_key: '${MISSING_VAR}'\n", env={})
    assert "MISSING_VAR" in message and "admin_key" in message and "not set" in message


def test_an_unset_os_environ_reference_is_null_in_an_optional_field_with_a_note(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "admin_key: os.environ/MISSING_VAR\n"), env={})
    assert config.admin_key is None
    assert config.notes == ["unset: admin_key (os.environ/MISSING_VAR) is not set; read as null"]


def test_an_unset_os_environ_reference_in_a_required_field_is_an_error_naming_it(tmp_path: Path) -> None:
    message = error_of(tmp_path, "cache:\n  store: {type: s3, bucket: os.environ/BUCKET}\n", env={})
    assert "cache.store.bucket" in message and "os.environ/BUCKET" in message


# -- bad files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "allowed"),
    [
        ("cache:\n  store: {type: redix}\n", "cache.store.type", "memory, disk, redis"),
        ("cache:\n  store: {type: redis, hots: x}\n", "cache.store.hots", "host"),
        ("cache:\n  ttl: -5\n", "cache.ttl", "positive"),
        ("cache:\n  ttl: soon\n", "cache.ttl", "number"),
        ("cache:\n  scope: tenant\n", "cache.scope", "'credential', 'shared' or 'header:<name>'"),
        ("cache:\n  mode: always\n", "cache.mode", "'default' or 'opt_in'"),
        ("cache:\n  lock_wait: 0\n", "cache.lock_wait", "greater than 0"),
        ("cache:\n  key_builder: nowhere_module:build\n", "cache.key_builder", "nowhere_module"),
        ("cache:\n  store: {type: s3}\n", "cache.store.bucket", "required"),
        ("cache:\n  store: {type: tiered, l2: {type: redis, prot: 1}}\n", "cache.store.l2.prot", "port"),
        ("server:\n  port: 99999\n", "server.port", "65536"),
        ("upstreams:\n  openai: {base_url: api.openai.com}\n", "upstreams.openai.base_url", "http"),
        ("upstreams:\n  mistral: {base_url: 'http://x'}\n", "upstreams.mistral", "anthropic, azure, gemini, openai"),
        ("caching:\n  type: memcache\n", "caching.type", "in-memory, memory, local, disk, redis, s3, dual_cache"),
        ("caching:\n  type: redis\n  hots: x\n", "caching.hots", "host"),
        ("caching:\n  type: dual_cache\n  l1: {type: in-memory}\n", "caching.l2", "l2"),
        (
            "litellm_settings:\n  cache: true\n  cache_params: {type: qdrant}\n",
            "litellm_settings.cache_params.type",
            "local",
        ),
        ("cache: {}\ncaching: {type: redis}\n", "mixes config dialects", "native"),
        ("- a\n- b\n", "top level", "mapping"),
        ("cache: [unclosed\n", "line 2", "YAML"),
    ],
)
def test_bad_file_names_the_field(tmp_path: Path, text: str, field: str, allowed: str) -> None:
    message = error_of(tmp_path, text)
    assert field in message
    assert allowed in message


@pytest.mark.parametrize(
    "text",
    [
        "caching:\n  type: redis_semantic\n  host: vectors.internal\n  port: 6380\n  similarity_threshold: 0.85\n",
        "litellm_settings:\n  cache: true\n  cache_params: {type: redis-semantic, host: vectors.internal, port: 6380,"
        " similarity_threshold: 0.85}\n",
    ],
)
def test_redis_semantic_types_keep_answers_and_vectors_in_that_redis(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cache = load_config(path).cache
    assert (cache.store.type, cache.store.host, cache.store.port) == ("redis", "vectors.internal", 6380)
    assert cache.semantic is not None and cache.semantic.threshold == 0.85
    assert cache.semantic.index.type == "redis" and cache.semantic.index.url == "redis://vectors.internal:6380/0"
    assert cache.semantic.embedder.type == "local"


def test_redis_semantic_vectors_use_the_stores_tls_and_user(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "caching:\n  type: redis-semantic\n  host: vectors.internal\n  port: 6380\n  password: p@ss\n"
        "  params: {username: app, ssl: true}\n"
    )
    semantic = load_config(path).cache.semantic
    assert semantic is not None and semantic.index.type == "redis"
    assert semantic.index.url == "rediss://app:p%40ss@vectors.internal:6380/0"


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("caching:\n  type: qdrant-semantic\n", "caching.type", "cache.semantic.index.type: qdrant"),
        (
            "litellm_settings:\n  cache: true\n  cache_params: {type: qdrant-semantic}\n",
            "cache_params.qdrant_api_base",
            "required for type qdrant-semantic",
        ),
        (
            "litellm_settings:\n  cache: true\n  cache_params: {type: redis-semantic, redis_startup_nodes: [a:1]}\n",
            "cache_params.type",
            "needs a standalone Redis",
        ),
        ("cache:\n  semantic: {threshold: 1.5}\n", "cache.semantic.threshold", "less than or equal to 1"),
        ("cache:\n  semantic: {index: {type: faiss}}\n", "cache.semantic.index.type", "allowed: memory, redis, qdrant"),
        ("cache:\n  semantic: {embedder: {type: openai, modle: x}}\n", "cache.semantic.embedder.modle", "allowed:"),
        ("cache:\n  semantic: {max_error_rate: 2}\n", "cache.semantic.max_error_rate", "less than 1"),
        ("cache:\n  semantic: {judge: {type: nli}}\n", "cache.semantic.judge.type", "allowed: embedding, exact, llm"),
        ("cache:\n  semantic: {error_rate_of: answers}\n", "cache.semantic.error_rate_of", "'requests' or 'hits'"),
        ("cache:\n  semantic: {threshold: 1, max_error_rate: 0.02}\n", "cache.semantic", "below 1"),
        (
            "cache:\n  semantic: {max_error_rate: 0.02, judge: {type: llm, base_url: judge.local}}\n",
            "cache.semantic.judge.llm.base_url",
            "http:// or https://",
        ),
        (
            "cache:\n  semantic: {embedder: {type: openai, base_url: ftp://x}}\n",
            "cache.semantic.embedder.base_url",
            "http://",
        ),
        (
            "cache:\n  semantic: {max_error_rate: 0.02, evidence: {type: redis, url: 'localhost:6379'}}\n",
            "cache.semantic.evidence.redis.url",
            "redis://",
        ),
        ("cache:\n  semantic: {index: {type: redis, url: 'http://x'}}\n", "cache.semantic.index.url", "redis://"),
    ],
)
def test_a_bad_semantic_config_names_the_field(tmp_path: Path, text: str, field: str, says: str) -> None:
    message = error_of(tmp_path, text)
    assert field in message and says in message


def test_max_error_rate_turns_on_bounded_mode_with_its_judge() -> None:
    from llm_cache.middleware.config import build_semantic
    from llm_cache.middleware.semantic import EmbeddingJudge, ExactJudge, RedisEvidence

    bounded = build_semantic(
        parse_config({"cache": {"semantic": {"max_error_rate": 0.01, "verifications_per_minute": 30}}}).cache.semantic
    )
    assert bounded.bound.max_error_rate == 0.01 and bounded.bound.verifications_per_minute == 30
    assert bounded.bound.error_rate_of == "requests"  # vCache's error rate: wrong answers per lookup
    per_hit = {"max_error_rate": 0.01, "error_rate_of": "hits"}
    assert build_semantic(parse_config({"cache": {"semantic": per_hit}}).cache.semantic).bound.error_rate_of == "hits"
    assert bounded.threshold == bounded.bound.floor == 0.75
    assert isinstance(bounded.judge, EmbeddingJudge) and bounded.judge.embedder is bounded.embedder
    exact = build_semantic(
        parse_config({"cache": {"semantic": {"max_error_rate": 0.02, "judge": {"type": "exact"}}}}).cache.semantic
    )
    assert isinstance(exact.judge, ExactJudge)
    shared = {"max_error_rate": 0.02, "evidence": {"type": "redis", "url": "redis://vectors:6379/1"}}
    bound = build_semantic(parse_config({"cache": {"semantic": shared}}).cache.semantic).bound
    assert isinstance(bound.evidence, RedisEvidence) and bound.evidence.url == "redis://vectors:6379/1"
    assert (bound.evidence.max_records, bound.evidence.max_tallies) == (1_000_000, 100_000)
    capped = {"max_error_rate": 0.02, "evidence": {"type": "redis", "max_records": 500, "max_tallies": 50}}
    evidence = build_semantic(parse_config({"cache": {"semantic": capped}}).cache.semantic).bound.evidence
    assert (evidence.max_records, evidence.max_tallies) == (500, 50)
    static = build_semantic(parse_config({"cache": {"semantic": {}}}).cache.semantic)
    assert static.bound is None and static.threshold == 0.9


def test_the_redis_index_takes_its_row_cap_from_the_config() -> None:
    from llm_cache.middleware.config import build_semantic

    index = {"type": "redis", "url": "redis://vectors:6379/1"}
    assert build_semantic(parse_config({"cache": {"semantic": {"index": index}}}).cache.semantic).index.max_entries == (
        100_000
    )
    capped = {"index": {**index, "max_entries": 5000}}
    assert build_semantic(parse_config({"cache": {"semantic": capped}}).cache.semantic).index.max_entries == 5000
    with pytest.raises(ConfigError, match="cache.semantic.index.max_entries"):
        parse_config({"cache": {"semantic": {"index": {**index, "max_entries": 0}}}})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")


# -- building and printing ------------------------------------------------------------------------


def test_build_cache_from_settings(tmp_path: Path) -> None:
    config = parse_config(
        {
            "cache": {
                "store": {"type": "disk", "directory": str(tmp_path)},
                "ttl": 30,
                "key_prefix": "p:",
                "scope": "shared",
                "ignored_fields": ["seed"],
            }
        }
    )
    cache = build_cache(config)
    assert isinstance(cache.store, DiskStore) and cache.store.directory == tmp_path
    assert (cache.settings.ttl, cache.settings.key_prefix, cache.settings.scope) == (30, "p:", "shared")
    assert cache.settings.ignored_fields == ("seed",)
    assert build_cache(CacheConfig(), store=MemoryStore()).store.name == "memory"


def test_distributed_single_flight_settings_in_the_native_and_guide_dialects() -> None:
    native = parse_config({"cache": {"store": {"type": "redis"}, "lock_ttl": 10, "lock_wait": 2.5}})
    guide = parse_config({"caching": {"type": "redis", "lock_ttl": 10, "lock_wait": 2.5}})
    off = parse_config({"cache": {"store": {"type": "redis"}, "distributed_lock": False}})
    for config in (native, guide):
        settings = build_cache(config, store=MemoryStore()).settings
        assert (settings.distributed_lock, settings.lock_ttl, settings.lock_wait) == (True, 10, 2.5)
    assert build_cache(off, store=MemoryStore()).settings.distributed_lock is False
    assert CacheConfig().lock_wait == build_cache(CacheConfig(), store=MemoryStore()).settings.lock_wait == 30


def test_build_store_from_mapping_and_missing_class(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(build_store({"type": "memory", "max_entries": 3}), MemoryStore)
    import llm_cache.middleware.stores.redis as redis_module

    monkeypatch.delattr(redis_module, "RedisSentinelStore")
    with pytest.raises(ConfigError, match="redis-sentinel.*not available"):
        build_store({"type": "redis-sentinel", "service_name": "m", "sentinels": ["h:26379"]})


def test_effective_settings_mask_secrets() -> None:
    config = load_config(EXAMPLES / "litellm.yaml", env=ENV)
    config.upstreams.openai.api_key = "sk-upstream-secret"
    text = repr(effective_settings(config))
    for secret in ("hunter2", "adm-secret", "sk-upstream-secret"):
        assert secret not in text
    assert "****" in text
    url = GatewayConfig.model_validate({"cache": {"store": {"type": "redis", "url": "redis://u:pw@h:6379/0"}}})
    assert "pw@" not in repr(effective_settings(url))


def test_effective_settings_mask_every_kind_of_secret_a_config_holds() -> None:
    """Secrets that are not named like one: an Azure connection string and credential, LiteLLM's
    `vertex_credentials`, a URL's password holding `@`, and keys in a URL's query (a SAS `sig=`)."""
    config = GatewayConfig.model_validate(
        {
            "cache": {
                "store": {
                    "type": "azure-blob",
                    "container": "c",
                    "connection_string": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=S1-account-key",
                    "account_url": "https://a.blob.core.windows.net/?sv=2022-11-02&sig=S2-sas-signature",
                    "credential": "S3-account-key-or-sas",
                },
            },
            "model_list": [
                {
                    "model_name": "gemini",
                    "litellm_params": {
                        "model": "vertex_ai/gemini-2.0-flash",
                        "vertex_credentials": '{"private_key": "S4-private-key"}',
                        "api_base": "https://user:S5-pass@word@proxy.example/v1?api-key=S6-in-query&x=1",
                    },
                }
            ],
        }
    )
    text = repr(effective_settings(config))
    for secret in ("S1-", "S2-", "S3-", "S4-", "S5-", "word@", "S6-"):
        assert secret not in text, secret
    assert "https://a.blob.core.windows.net/?sv=2022-11-02&sig=****" in text
    assert "https://user:****@proxy.example/v1?api-key=****&x=1" in text


def test_effective_settings_mask_a_secret_whatever_its_shape_or_a_credential_headers_name() -> None:
    """Only a secret field's text was masked, and only under names like `api_key`: a service account
    given as a mapping (`vertex_credentials: {private_key: ...}`) was printed key by key, a key of
    digits as it is, and the credential headers a LiteLLM deployment may carry (`extra_headers`:
    `Authorization`, `x-api-key`, `api-key`) in full."""
    config = GatewayConfig.model_validate(
        {
            "model_list": [
                {
                    "model_name": "gemini",
                    "litellm_params": {
                        "model": "vertex_ai/gemini-2.0-flash",
                        "vertex_credentials": {"type": "service_account", "private_key": "S7-private-key"},
                        "api_key": 31415926,
                        "extra_headers": {"Authorization": "Bearer S9-bearer", "x-api-key": "S10-", "api-key": "S11-"},
                    },
                }
            ],
        }
    )
    text = repr(effective_settings(config))
    for secret in ("S7-", "31415926", "S9-", "S10-", "S11-"):
        assert secret not in text, secret
    assert "'model': 'vertex_ai/gemini-2.0-flash'" in text  # the rest as written


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cache: {ttl: .nan}", "cache.ttl"),
        ("cache: {ttl: .inf}", "cache.ttl"),
        ("cache: {stale_if_error: .inf}", "cache.stale_if_error"),
        ("cache: {lock_ttl: .inf}", "cache.lock_ttl"),
        ("cache: {semantic: {rerank: {url: 'http://r:8000/v1/rerank', model: m, min_score: .nan}}}", "min_score"),
        ("cache: {store: {type: redis, cooldown: .inf}}", "cache.store.cooldown"),
        ("upstreams: {openai: {timeout: .inf}}", "upstreams.openai.timeout"),
        ("server: {body_read_timeout: .inf}", "server.body_read_timeout"),
    ],
)
def test_a_number_that_is_not_finite_is_an_error_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    """YAML writes NaN and infinity as `.nan` and `.inf`, and `ttl: .inf` reads as "for ever": it was
    accepted, and every entry stored with it was one a hit refuses (its expiry is not finite), so no
    request was ever a hit and each wrote a WARNING; `stale_if_error: .inf` failed every Redis write
    (an infinite expiry); a NaN `ttl` passed the check that it is positive. Every number a config
    gives is now finite (`null` is how a config says "none")."""
    message = error_of(tmp_path, text + "\n")
    assert field in message and "finite number" in message, message


def test_a_cache_built_in_python_takes_only_finite_numbers_too() -> None:
    for settings in ({"ttl": float("nan")}, {"ttl": float("inf")}, {"stale_if_error": float("inf")}):
        with pytest.raises(ValueError, match="finite number"):
            Cache(**settings)


def test_a_config_error_never_echoes_a_secret() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"cache": {"store": {"type": "redis", "password": 31415926}}}, where="gw.yaml", env={})
    assert "cache.store.password: Input should be a valid string" in str(refused.value)
    assert "31415926" not in str(refused.value)


def test_a_config_nested_too_deeply_is_an_error_naming_it(tmp_path: Path) -> None:
    """The YAML reader recurses per level: 5,000 nested lists raised a RecursionError out of `check-config`
    and `serve` (a traceback, no field named)."""
    path = write(tmp_path, "cache:\n  ttl: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: nested too deeply"):
        load_config(path)
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config({"cache": {"ttl": deep}}, where="gw.yaml", env={})


def test_a_config_whose_aliases_expand_past_a_million_values_is_an_error(tmp_path: Path) -> None:
    """YAML aliases are read as shared references; interpolating the environment copied each one out, so
    an alias of aliases nine deep (a 'billion laughs', 387 million strings) held the process for minutes
    and gigabytes. Its expanded size is now counted first, each shared node once; aliases within bounds
    (a model list sharing its `litellm_params`) still read."""
    text = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True):
        text += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    with pytest.raises(ConfigError, match=r"config\.yaml: .*more than 1,000,000 values once its YAML aliases"):
        load_config(write(tmp_path, text))
    shared = "params: &params {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}\nmodel_list:\n" + "".join(
        f"  - {{model_name: m{n}, litellm_params: *params}}\n" for n in range(50)
    )
    assert load_config(write(tmp_path, shared, "litellm.yaml"), env={"OPENAI_API_KEY": "sk-x"}).model_list


def test_a_key_written_twice_in_one_mapping_is_an_error_naming_its_line(tmp_path: Path) -> None:
    """YAML keeps the last of a key written twice, silently: a line appended under `cache:` turned a
    per-credential cache into one every caller shares, and a second `auth:` dropped the client keys,
    while `check-config` printed the result as if the file said so. A key written twice in one mapping
    is now an error naming its line; a merge key's values may still be overridden."""
    text = "cache:\n  scope: credential\n  ttl: 600\n  scope: shared\n"
    message = error_of(tmp_path, text)
    assert "line 4, column 3" in message and "'scope'" in message and "twice" in message
    text = "auth:\n  keys: [os.environ/LLM_CACHE_ADMIN_KEY]\ncache: {ttl: 60}\nauth: {}\n"
    assert "line 4, column 1" in error_of(tmp_path, text)
    litellm = (
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o-mini, api_key: a}\n"
        "    litellm_params: {model: openai/gpt-4o-mini, api_key: b}\n"
    )
    assert "line 4, column 5" in error_of(tmp_path, litellm)
    merged = (
        "base: &base {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}\n"
        "mid: &mid {<<: *base, api_base: 'http://a.example/v1'}\n"
        "model_list:\n  - model_name: m\n    litellm_params: {<<: *mid, api_base: 'http://b.example/v1'}\n"
    )
    config = load_config(write(tmp_path, merged, "litellm.yaml"), env={"OPENAI_API_KEY": "sk-x"})
    assert config.model_list is not None
    assert config.model_list[0]["litellm_params"]["api_base"] == "http://b.example/v1"


def test_a_config_error_never_echoes_a_value_from_the_environment_or_a_urls_password() -> None:
    """An error names the field and what is wrong; serve's and check-config's output ends up in CI logs and
    pod events. A secret read into the wrong field (`ttl: os.environ/REDIS_PASSWORD`) was echoed as the
    value it got, and a URL refused by a check was echoed with its user info."""
    env = {"REDIS_PASSWORD": "hunter2-secret", "PROXY": "https://user:pw-secret@proxy.example/v1?x=1"}
    for data, field in (
        ({"cache": {"ttl": "os.environ/REDIS_PASSWORD"}}, "cache.ttl"),
        ({"server": {"port": "${REDIS_PASSWORD}"}}, "server.port"),
        ({"upstreams": {"openai": {"base_url": "os.environ/PROXY"}}}, "upstreams.openai.base_url"),
        ({"upstreams": {"openai": {"base_url": "https://user:pw-secret@proxy.example/v1?x=1"}}}, "base_url"),
        (
            {"cache": {"semantic": {"index": {"type": "redis", "url": "http://:pw-secret@redis.example:6379/0"}}}},
            "cache.semantic.index.url",
        ),
    ):
        with pytest.raises(ConfigError) as refused:
            parse_config(data, where="gw.yaml", env=env)
        message = str(refused.value)
        assert field in message, message
        assert "hunter2" not in message and "pw-secret" not in message, message
