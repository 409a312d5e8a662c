"""Config forms (native, LiteLLM, Portkey-like) and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from llm_cache.router import ConfigError, RouterTransport, from_litellm, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "litellm_router.yaml"
ENV = {"AZURE_API_KEY_EU": "eu", "AZURE_API_KEY_CA": "ca", "AZURE_API_KEY_FR": "fr", "ANTHROPIC_API_KEY": "ak"}


def test_litellm_example_loads(caplog):
    cfg = load_config(EXAMPLE, environ=ENV)
    assert set(cfg.groups) == {"gpt-3.5-turbo", "vllm-models", "claude"}  # bedrock skipped
    assert "bedrock" in caplog.text
    eu, ca, fr = cfg.groups["gpt-3.5-turbo"].deployments
    assert (eu.family, eu.model, eu.api_key, eu.rpm) == ("azure", "gpt-turbo-small-eu", "eu", 6)
    assert eu.api_base == "https://my-endpoint-europe-berri-992.openai.azure.com"
    assert fr.rpm == 1440
    vllm = cfg.groups["vllm-models"].deployments[0]
    assert (vllm.family, vllm.model, vllm.api_base) == ("openai", "facebook/opt-125m", "http://0.0.0.0:4000/v1")
    claude = cfg.groups["claude"].deployments[0]
    assert (claude.family, claude.model, claude.api_base) == (
        "anthropic",
        "claude-3-5-sonnet-20241022",
        "https://api.anthropic.com",
    )
    s = cfg.settings
    assert (s.routing_strategy, s.num_retries, s.timeout, s.allowed_fails, s.cooldown_time) == (
        "weighted",
        2,
        30,
        3,
        60,
    )
    assert s.fallbacks == {"gpt-3.5-turbo": ["vllm-models"]}
    assert s.context_window_fallbacks == {"vllm-models": ["gpt-3.5-turbo"]}  # from litellm_settings
    assert cfg.group_for("gpt-4").name == "gpt-3.5-turbo"  # model_group_alias
    assert cfg.group_for("unknown") is None


def test_litellm_rpm_tpm_beside_litellm_params_and_model_info_id():
    cfg = load_config(
        {
            "model_list": [
                {
                    "model_name": "g",
                    "litellm_params": {"model": "gpt-4o", "api_key": "k"},
                    "rpm": 900,
                    "tpm": 90000,
                    "model_info": {"id": "dep-1"},
                }
            ]
        }
    )
    d = cfg.groups["g"].deployments[0]
    assert (d.id, d.rpm, d.tpm, d.family, d.api_base) == ("dep-1", 900, 90000, "openai", "https://api.openai.com/v1")


def test_an_unset_os_environ_reference_is_none_as_in_litellm():
    """`os.environ/NAME` unset reads as None: an optional field (the deployment's key) stays unset."""
    cfg = load_config(
        {
            "model_list": [
                {"model_name": "g", "litellm_params": {"model": "openai/x", "api_key": "os.environ/NOPE_KEY"}}
            ]
        },
        environ={},
    )
    assert cfg.groups["g"].deployments[0].api_key is None


def test_an_unset_os_environ_reference_where_a_value_is_required_names_the_variable():
    params = {"model": "azure/gpt-4o", "api_base": "os.environ/AZURE_BASE"}
    with pytest.raises(
        ConfigError, match=r"(?s)api_base is required.*litellm_params\.api_base \(os\.environ/AZURE_BASE\)"
    ):
        load_config({"model_list": [{"model_name": "g", "litellm_params": params}]}, environ={})


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match=r"model_list\[1\].litellm_params.rpm"):
        load_config(
            {
                "model_list": [
                    {"model_name": "g", "litellm_params": {"model": "openai/x"}},
                    {"model_name": "g", "litellm_params": {"model": "openai/y", "rpm": -5}},
                ]
            }
        )
    with pytest.raises(ConfigError, match=r"router_settings.routing_strategy.*cost-based-routing"):
        load_config(
            {
                "model_list": [{"model_name": "g", "litellm_params": {"model": "x"}}],
                "router_settings": {"routing_strategy": "cost-based-routing"},
            }
        )
    with pytest.raises(ConfigError, match=r"model_list\[0\].litellm_params.model"):
        load_config({"model_list": [{"model_name": "g", "litellm_params": {}}]})
    with pytest.raises(ConfigError, match=r"fallbacks\['g'\] names group 'nope'"):
        load_config(
            {
                "model_list": [{"model_name": "g", "litellm_params": {"model": "x"}}],
                "router_settings": {"fallbacks": [{"g": ["nope"]}]},
            }
        )
    with pytest.raises(ConfigError, match="api_base is required for azure"):
        load_config({"model_list": [{"model_name": "g", "litellm_params": {"model": "azure/x"}}]})


def test_native_form():
    cfg = load_config("""
groups:
  fast:
    routing_strategy: least-busy
    deployments:
      - {family: anthropic, model: claude-haiku, api_key: k, weight: 3}
      - {family: gemini, model: gemini-2.0-flash, api_key: g, order: 1}
settings:
  num_retries: 4
  retry_after_max: 10
""")
    g = cfg.groups["fast"]
    assert g.routing_strategy == "least-busy"
    assert [d.family for d in g.deployments] == ["anthropic", "gemini"]
    assert cfg.settings.num_retries == 4 and cfg.settings.retry_after_max == 10


def test_native_unknown_field_is_named():
    with pytest.raises(ConfigError, match=r"groups.g.deployments\[0\].*wieght"):
        load_config({"groups": {"g": {"deployments": [{"model": "m", "wieght": 2}]}}})


def test_portkey_nested_strategy_targets():
    cfg = load_config(
        {
            "strategy": {"mode": "fallback", "on_status_codes": [429, 500]},
            "targets": [
                {
                    "strategy": {"mode": "loadbalance"},
                    "targets": [
                        {"provider": "openai", "api_key": "k1", "override_params": {"model": "gpt-4o"}, "weight": 0.7},
                        {
                            "provider": "azure",
                            "custom_host": "https://x.openai.azure.com",
                            "api_key": "k2",
                            "override_params": {"model": "gpt4o-deploy"},
                            "weight": 0.3,
                        },
                    ],
                },
                {"provider": "anthropic", "api_key": "k3", "override_params": {"model": "claude-3-5-haiku"}},
            ],
        }
    )
    top = cfg.groups["*"]
    assert [(d.family, d.model, d.weight) for d in top.deployments] == [
        ("openai", "gpt-4o", 0.7),
        ("azure", "gpt4o-deploy", 0.3),
    ]
    assert cfg.settings.fallbacks == {"*": ["*#1"]}
    assert cfg.groups["*#1"].deployments[0].family == "anthropic"
    assert cfg.settings.retry_on_status == [429, 500]
    assert cfg.group_for("anything").name == "*"


def test_portkey_bad_mode_names_the_field():
    with pytest.raises(ConfigError, match=r"strategy.mode.*conditional"):
        load_config({"strategy": {"mode": "conditional"}, "targets": [{"provider": "openai"}]})


def test_unrecognised_top_level():
    with pytest.raises(ConfigError, match="model_list"):
        load_config({"models": []})


@pytest.mark.parametrize("name", ["router_portkey.yaml", "router_native.yaml"])
def test_other_examples_load(name):
    env = {k: "x" for k in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_BACKUP_KEY")}
    cfg = load_config(EXAMPLE.parent / name, environ=env)
    assert cfg.groups
    for group in cfg.groups.values():
        assert all(d.api_key == "x" or d.api_key == "none" for d in group.deployments)


# ----------------------------------------------------------------------------- environment references


def test_both_env_syntaxes_resolve_in_every_deployment_field():
    env = {"KEY": "sk-env", "HOST": "llm.internal", "VERSION": "2025-01-01"}
    native = load_config(
        {
            "groups": {
                "g": {
                    "deployments": [
                        {
                            "family": "azure",
                            "model": "m",
                            "api_key": "os.environ/KEY",
                            "api_base": "https://${HOST}/",
                            "api_version": "${VERSION}",
                        },
                        {"model": "m", "api_key": "${MISSING:-fallback}", "id": "dep-${HOST}"},
                    ]
                }
            }
        },
        environ=env,
    )
    azure, openai = native.groups["g"].deployments
    assert (azure.api_key, azure.api_base, azure.api_version) == ("sk-env", "https://llm.internal", "2025-01-01")
    assert (openai.api_key, openai.id) == ("fallback", "dep-llm.internal")
    litellm = load_config(
        {"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/m", "api_key": "${KEY}"}}]},
        environ=env,
    )
    assert litellm.groups["g"].deployments[0].api_key == "sk-env"


def test_a_missing_inline_reference_names_the_field_and_the_fallback_syntax():
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.litellm_params\.api_key: .*'NOPE'.*\$\{NOPE:-default\}"):
        load_config(
            {"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/m", "api_key": "${NOPE}"}}]},
            environ={},
        )


def test_text_read_from_the_environment_is_never_expanded_again():
    env = {"KEY": "${SECRET}", "OTHER": "os.environ/SECRET", "SECRET": "leaked"}
    cfg = load_config(
        {"groups": {"g": {"deployments": [{"model": "m", "api_key": "${KEY}", "api_base": "os.environ/OTHER"}]}}},
        environ=env,
    )
    dep = cfg.groups["g"].deployments[0]
    assert (dep.api_key, dep.api_base) == ("${SECRET}", "os.environ/SECRET")


def test_inline_references_in_a_gateway_model_list_reach_the_deployment(fakes, monkeypatch):
    """The gateway passes its router sections through untouched; the router resolves `${VAR}` itself."""
    import httpx2

    from llm_cache.middleware._background import BackgroundServer
    from llm_cache.middleware.config import parse_config
    from llm_cache.middleware.gateway import create_gateway

    monkeypatch.setenv("ROUTER_TEST_DEPLOYMENT_KEY", "sk-from-env")
    config = parse_config(
        {
            "cache": {"enabled": False},
            "model_list": [
                {
                    "model_name": "gpt",
                    "litellm_params": {
                        "model": "openai/real",
                        "api_base": f"{fakes['a'].url}/v1",
                        "api_key": "${ROUTER_TEST_DEPLOYMENT_KEY}",
                    },
                }
            ],
        },
        where="gw.yaml",
    )
    with BackgroundServer(create_gateway(config)) as server:
        body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx2.post(f"{server.url}/v1/chat/completions", json=body, headers={"authorization": "Bearer caller"})
    assert answer.status_code == 200
    assert fakes["a"].seen[-1].headers["authorization"] == "Bearer sk-from-env"


def test_litellm_drop_params_is_read_from_litellm_params_and_litellm_settings():
    cfg = from_litellm(
        {
            "model_list": [
                {
                    "model_name": "c",
                    "litellm_params": {"model": "anthropic/claude", "api_key": "k", "drop_params": False},
                },
                {"model_name": "g", "litellm_params": {"model": "gemini/gemini-flash", "api_key": "k"}},
            ],
            "litellm_settings": {"drop_params": True},
        }
    )
    assert cfg.settings.drop_params is True
    assert cfg.groups["c"].deployments[0].drop_params is False  # the deployment's own choice wins
    assert cfg.groups["g"].deployments[0].drop_params is None


def test_deployments_that_differ_only_in_their_key_are_two_deployments(fakes, make_router):
    """Two model_list entries for one model at one api_base, each with its own key (two teams, or keys
    that share a rate limit out), are two deployments: each group's calls carry its own key. Before,
    both had the default id `openai:gpt-4o-mini@<api_base>` and the second was the first: team-b's
    calls were sent with team-a's key."""
    base = f"{fakes['a'].url}/v1"
    model_list = [
        {
            "model_name": team,
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": base, "api_key": f"key-{team}"},
        }
        for team in ("team-a", "team-b")
    ]
    router = make_router({"model_list": model_list})
    client = httpx2.Client(transport=RouterTransport(router))
    for team in ("team-a", "team-b", "team-b"):
        body = {"model": team, "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("http://router/v1/chat/completions", json=body).status_code == 200
    keys = [request.headers["authorization"] for request in fakes["a"].seen]
    assert keys == ["Bearer key-team-a", "Bearer key-team-b", "Bearer key-team-b"]
    ids = {group: [st.id for st in router.states[group]] for group in ("team-a", "team-b")}
    assert ids["team-a"] != ids["team-b"]


def test_one_explicit_id_for_two_different_deployments_is_a_config_error():
    deployments = [
        {"id": "shared", "model": "gpt-4o-mini", "api_base": "http://h/v1", "api_key": key} for key in ("k1", "k2")
    ]
    with pytest.raises(ConfigError, match="'shared' names two different deployments"):
        load_config({"groups": {"a": {"deployments": deployments[:1]}, "b": {"deployments": deployments[1:]}}})


def test_callers_see_a_default_deployment_id_without_its_internal_host():
    """`x-router-deployment` is kept in cache entries and replayed to every caller: a default id
    (`family:model@api_base`) names the host by a digest; an id the config gave is shown as given."""
    internal = "http://10.0.0.7:8000/v1"
    params = [{"model": "openai/gpt-4o", "api_base": internal, "api_key": key} for key in ("sk-a", "sk-b")]
    cfg = load_config(
        {
            "model_list": [
                *({"model_name": "gpt", "litellm_params": p} for p in params),
                {"model_name": "gpt", "litellm_params": params[0], "model_info": {"id": "backup"}},
            ]
        },
        environ={},
    )
    first, second, named = cfg.groups["gpt"].deployments
    assert (first.id, second.id) == (f"openai:gpt-4o@{internal}", f"openai:gpt-4o@{internal}#2")
    family_model, digest = first.public_id.split("@")
    assert family_model == "openai:gpt-4o" and len(digest) == 12 and "10.0.0.7" not in first.public_id
    assert (second.public_id, named.public_id) == (first.public_id + "#2", "backup")


def test_a_router_config_that_cannot_be_read_is_a_config_error_naming_where(tmp_path):
    """`load_config` is the router's public way to read a YAML file: a key written twice was kept
    silently (the last `litellm_params` won, another `api_base` than the one read first), 5,000
    nested lists raised a RecursionError and bad YAML a parser's exception; each is a ConfigError
    naming the line, as the gateway's loader says it."""
    twice = (
        "model_list:\n  - model_name: m\n"
        "    litellm_params: {model: openai/gpt-4o-mini, api_base: 'http://a.example/v1'}\n"
        "    litellm_params: {model: openai/gpt-4o-mini, api_base: 'http://b.example/v1'}\n"
    )
    path = tmp_path / "router.yaml"
    path.write_text(twice)
    with pytest.raises(
        ConfigError, match=r"router\.yaml: not valid YAML at line 4, column 5: .*'litellm_params'.*twice"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match=r"line 4, column 5"):
        load_config(twice)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config("model_list: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3, column 4"):
        load_config("model_list:\n  - model_name: m\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the file"):
        load_config(tmp_path / "missing.yaml")


def test_a_router_config_whose_aliases_expand_past_a_million_values_is_a_config_error():
    """The router reads YAML aliases as shared references too, and printing a fallback list names each
    target: aliases of aliases nine deep under `fallbacks` (a 'billion laughs', a 700-byte file) held
    `load_config` for minutes and gigabytes. The expanded size is counted as the gateway's loader counts it."""
    text = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True):
        text += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    text += "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o-mini}\n"
    text += "router_settings:\n  fallbacks: [{m: *i}]\n"
    with pytest.raises(ConfigError, match=r"more than 1,000,000 values once its YAML aliases are expanded"):
        load_config(text)
