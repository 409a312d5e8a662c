"""The Dockerfile and examples/kubernetes: valid, consistent with each other, and probing what the gateway serves.

`docker build` cannot run here (no daemon, no image registry), so the Dockerfile is parsed instead;
the manifests are checked against the Kubernetes API schemas that `kubernetes-validate` ships.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.cli import build_parser
from llm_cache.middleware.config import load_config, parse_config
from llm_cache.middleware.gateway import create_gateway

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "examples" / "kubernetes"
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes minor still maintained by the major clouds when these manifests were written."""
SECRETS = {name: f"test-{name.lower()}" for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GATEWAY_KEY")}
SECRETS |= {"LLM_CACHE_ADMIN_KEY": "test-admin", "REDIS_PASSWORD": "test-redis"}


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes object in examples/kubernetes, by file (the kustomization and chart values are not objects)."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def the(kind: str) -> dict[str, Any]:
    (found,) = [doc for docs in manifests().values() for doc in docs if doc["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    (gateway,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(gateway)


def final_stage() -> dict[str, str]:
    """Each instruction of the Dockerfile's final stage and its value (the values of a repeated one, a line each)."""
    structure = DockerfileParser(path=str(ROOT / "Dockerfile")).structure
    start = max(i for i, step in enumerate(structure) if step["instruction"] == "FROM")
    stage: dict[str, str] = {}
    for step in structure[start:]:
        stage[step["instruction"]] = "\n".join(filter(None, [stage.get(step["instruction"]), step["value"]]))
    return stage


def healthcheck_url() -> str:
    command = final_stage()["HEALTHCHECK"].split("CMD", 1)[1]
    (url,) = [word for word in json.loads(command)[-1].split("'") if word.startswith("http://")]
    return url


# -- the manifests --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(manifests()))
def test_every_manifest_validates_against_the_kubernetes_schemas(name: str) -> None:
    for document in manifests()[name]:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomize_applies_every_manifest_but_the_placeholder_secret() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(set(manifests()) - {"secret.yaml"})


def test_the_gateway_reads_the_configmap_where_the_image_looks_for_its_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in the("Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    (file_name,) = the("ConfigMap")["data"]
    args = build_parser().parse_args(json.loads(final_stage()["ENTRYPOINT"])[1:] + container()["args"])

    assert volume["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    assert args.config == f"{mount['mountPath']}/{file_name}"
    assert args.config == build_parser().parse_args(["serve", *json.loads(final_stage()["CMD"])]).config

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    (tmp_path / file_name).write_text(the("ConfigMap")["data"][file_name])
    config = load_config(str(tmp_path / file_name))
    assert config.cache.store.type == "redis-cluster"
    assert config.cache.store.password == "test-redis"
    assert config.auth.keys == ["test-gateway_key"] and config.admin_key == "test-admin"


def test_every_key_the_pod_reads_comes_from_a_secret() -> None:
    keys = the("Secret")
    (from_secret,) = container()["envFrom"]
    assert from_secret["secretRef"]["name"] == keys["metadata"]["name"]
    config_text = next(iter(the("ConfigMap")["data"].values()))
    read = set(re.findall(r"os\.environ/(\w+)", config_text))
    redis_password = {e["name"] for e in container()["env"] if "secretKeyRef" in e["valueFrom"]}
    assert read == set(keys["stringData"]) | redis_password


def test_the_service_and_the_probes_name_the_port_the_gateway_listens_on() -> None:
    (port,) = container()["ports"]
    (service_port,) = the("Service")["spec"]["ports"]
    args = build_parser().parse_args(json.loads(final_stage()["ENTRYPOINT"])[1:])
    assert port["containerPort"] == args.port == int(final_stage()["EXPOSE"]) == urlsplit(healthcheck_url()).port
    assert service_port["targetPort"] == port["name"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container()[probe]["httpGet"]["port"] == port["name"]
    assert the("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == the("Deployment")["metadata"]["name"]


# -- the probes against a real gateway --------------------------------------------------------------


@pytest.fixture
def gateway_as_deployed(
    redis_cluster: Any, fake_provider: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """The ConfigMap's config, served, with only where things are changed: the test Redis Cluster
    (which has no password) and the fake provider as the upstreams."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    data = yaml.safe_load(next(iter(the("ConfigMap")["data"].values())))
    data["cache"]["store"]["startup_nodes"] = [f"{host}:{port}" for host, port in redis_cluster.startup_nodes]
    del data["cache"]["store"]["password"]
    data["upstreams"]["openai"]["base_url"] = fake_provider.openai_base_url
    data["upstreams"]["anthropic"]["base_url"] = fake_provider.anthropic_base_url
    data["upstreams"]["gemini"] = {"base_url": fake_provider.gemini_base_url}  # readiness checks its default too
    server = BackgroundServer(create_gateway(parse_config(data))).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_the_probes_and_the_docker_healthcheck_answer_200_from_a_healthy_gateway(gateway_as_deployed: str) -> None:
    paths = [container()[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")]
    paths.append(urlsplit(healthcheck_url()).path)
    assert paths == ["/health/readiness", "/health/liveliness", "/health/liveliness", "/health"]
    for path in paths:
        response = httpx2.get(gateway_as_deployed + path, timeout=10)
        assert response.status_code == 200, (path, response.text)


# -- the image --------------------------------------------------------------------------------------


def test_the_image_is_slim_installs_the_package_and_serves_as_the_deployments_non_root_user() -> None:
    stage = final_stage()
    user, _, group = stage["USER"].partition(":")
    security = the("Deployment")["spec"]["template"]["spec"]["securityContext"]

    assert stage["FROM"].startswith("python:") and stage["FROM"].endswith("-slim")
    assert user.isdigit() and int(user) != 0
    assert (int(user), int(group)) == (security["runAsUser"], security["runAsGroup"])
    assert security["runAsNonRoot"] is True
    assert json.loads(stage["ENTRYPOINT"])[:2] == ["llm-cache", "serve"]
    assert 'pip install "llm-cache-middleware' in stage["RUN"]


def test_the_build_context_holds_exactly_what_the_dockerfile_copies() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    structure = DockerfileParser(path=str(ROOT / "Dockerfile")).structure
    copied = {
        source.rstrip("/")
        for step in structure
        if step["instruction"] == "COPY" and not step["value"].startswith("--from")
        for source in step["value"].split()[:-1]
    }
    assert ignore[0] == "*" and copied == allowed
