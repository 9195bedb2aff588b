"""The tree agrees with the code and the baseline: env files vs the settings, ports, health
paths, networks and flows across Dockerfiles, compose, manifests, policies and network.yml,
the scaling table and the version lock."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from dex.runtime.settings import DEFAULT_PORTS, SERVICES, Settings, env_var
from tests.infra.tools import INFRA

NET = yaml.safe_load((INFRA / "network" / "network.yml").read_text())
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
ENV_FILES = sorted((INFRA / "config").glob("*.env"))
SECRETS = {"DEX_REDIS_URL", "DEX_DATABASE_URL", "DEX_ADMIN_TOKEN", "DEX_KEY_ENCRYPTION_KEY"}
PER_POD = {"DEX_REPLICA_ID"}  # the pod's name (fieldRef) or the container's hostname
SETTINGS_VARS = {env_var(f.name) for f in msgspec.structs.fields(Settings)}

# The baseline's scaling table (section 1.4) and version lock (section 3).
SCALING = {
    "gateway": (3, 10, "250m", "256Mi"),
    "matching-engine": (10, 20, "2000m", "2Gi"),
    "market-data": (3, 8, "250m", "512Mi"),
    "risk-engine": (2, 6, "500m", "512Mi"),
    "persistence": (3, 8, "250m", "512Mi"),
}
VERSIONS = {
    "prometheus": "prom/prometheus:v2.51.0",
    "grafana": "grafana/grafana:10.4.0",
    "loki": "grafana/loki:2.9.6",
    "promtail": "grafana/promtail:2.9.6",
    "redis": "redis:7-alpine",
}


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def manifests(service: str) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((INFRA / "k8s" / service / "deployment.yml").read_text())
    return {d["kind"]: d for d in docs if d}


def container(service: str) -> dict[str, Any]:
    spec = manifests(service)["Deployment"]["spec"]["template"]["spec"]
    result: dict[str, Any] = spec["containers"][0]
    return result


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_has_every_setting_and_only_settings(path: Path) -> None:
    names = set(env_file(path))
    assert names <= SETTINGS_VARS, f"not read by the settings: {names - SETTINGS_VARS}"
    assert not names & SECRETS, "secrets come from the sealed secrets"
    assert SETTINGS_VARS - SECRETS - PER_POD - names == set()


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_every_replica_the_hpa_can_start_holds_a_shard(path: Path) -> None:
    env = env_file(path)
    for service, var in (
        ("matching-engine", "DEX_MATCHING_SHARDS"),
        ("risk-engine", "DEX_RISK_SHARDS"),
    ):
        hpa = manifests(service)["HorizontalPodAutoscaler"]["spec"]
        assert int(env[var]) >= hpa["maxReplicas"]
        extra = {e["name"]: e.get("value") for e in container(service)["env"]}
        per_replica = int(extra.get("DEX_MAX_SHARDS_PER_REPLICA") or 0)
        if per_replica:  # the fewest replicas must still hold every shard
            assert per_replica * hpa["minReplicas"] >= int(env[var])


def test_the_sealed_secret_holds_every_secret_and_no_plaintext() -> None:
    doc = yaml.safe_load((INFRA / "k8s" / "secrets" / "sealed-secrets.yml").read_text())
    assert set(doc["spec"]["encryptedData"]) == SECRETS
    assert "data" not in doc["spec"].get("template", {})
    for path in [*ENV_FILES, INFRA / "docker-compose.yml"]:
        text = path.read_text()
        assert not re.search(r"://[^:/@\s]+:[^@\s$]+@", text), f"a password in {path}"


@pytest.mark.parametrize("service", SERVICES)
def test_ports_and_health_paths_agree(service: str) -> None:
    port = DEFAULT_PORTS[service]
    assert NET["endpoints"][service]["port"] == port
    dockerfile = (INFRA / "docker" / f"Dockerfile.{service}").read_text()
    assert f"EXPOSE {port}\n" in dockerfile
    assert f"ENV SERVICE={service}\n" in dockerfile
    assert f"127.0.0.1:{port}{NET['paths']['health']}" in dockerfile
    c = container(service)
    assert c["ports"][0]["containerPort"] == port
    assert c["livenessProbe"]["httpGet"]["path"] == NET["paths"]["health"]
    assert c["startupProbe"]["httpGet"]["path"] == NET["paths"]["health"]
    assert c["readinessProbe"]["httpGet"]["path"] == NET["paths"]["ready"]
    pod = manifests(service)["Deployment"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == NET["paths"]["metrics"]
    assert manifests(service)["Service"]["spec"]["ports"][0]["port"] == port
    compose = COMPOSE["services"][service]
    assert f"127.0.0.1:{port}{NET['paths']['health']}" in " ".join(compose["healthcheck"]["test"])


def test_compose_networks_agree_with_network_yml() -> None:
    assert set(COMPOSE["networks"]) == set(NET["networks"])
    for name, net in NET["networks"].items():
        assert bool(COMPOSE["networks"][name].get("internal")) == net["internal"]
    for name, svc in COMPOSE["services"].items():
        assert sorted(svc["networks"]) == sorted(NET["endpoints"][name]["networks"]), name
        published = bool(svc.get("ports"))
        assert published == ("dex-dmz" in svc["networks"]), f"{name}: only the DMZ publishes"


def test_compose_monitoring_mounts_exist() -> None:
    for svc in COMPOSE["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (INFRA / source).exists(), source


def _peer(peer: dict[str, Any]) -> str:
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
    labels = peer["podSelector"]["matchLabels"]
    app = labels.get("app.kubernetes.io/name") or labels.get("k8s-app")
    ns = namespace.get("kubernetes.io/metadata.name", "dex")
    matches = [n for n, e in NET["endpoints"].items() if e["k8s"] == {"namespace": ns, "app": app}]
    assert len(matches) == 1, peer
    return matches[0]


def test_network_policies_allow_exactly_network_yml_flows() -> None:
    docs = [d for d in yaml.safe_load_all((INFRA / "k8s" / "network-policy.yml").read_text()) if d]
    deny = [d for d in docs if d["spec"]["podSelector"] == {}]
    assert (
        len(deny) == 1 and not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress")
    )
    assert deny[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    allowed: set[tuple[str, str, int]] = set()
    for d in docs:
        if d in deny:
            continue
        me = d["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in d["spec"].get("ingress", []):
            for peer in rule["from"]:
                allowed |= {(_peer(peer), me, p["port"]) for p in rule["ports"]}
        for rule in d["spec"].get("egress", []):
            for peer in rule["to"]:
                allowed |= {(me, _peer(peer), p["port"]) for p in rule["ports"]}
    expected = {
        (f["from"], f["to"], NET["endpoints"][f["to"]]["port"])
        for f in NET["flows"]
        if f["from"] in SERVICES or f["to"] in SERVICES
    }
    assert allowed == expected


def test_compose_lets_every_flow_through_a_shared_network() -> None:
    for flow in NET["flows"]:
        a, b = NET["endpoints"][flow["from"]], NET["endpoints"][flow["to"]]
        if a["networks"] and b["networks"]:
            assert set(a["networks"]) & set(b["networks"]), flow


@pytest.mark.parametrize("service", SERVICES)
def test_scaling_equals_the_baseline(service: str) -> None:
    low, high, cpu, memory = SCALING[service]
    m = manifests(service)
    hpa = m["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (low, high)
    assert m["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert m["Deployment"]["spec"]["replicas"] == low
    resources = container(service)["resources"]
    assert resources["requests"] == {"cpu": cpu, "memory": memory}
    assert set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("service", SERVICES)
def test_pods_are_hardened(service: str) -> None:
    pod = manifests(service)["Deployment"]["spec"]["template"]["spec"]
    c = container(service)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    env = env_file(INFRA / "config" / "env.production.env")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {env["DEX_DATA_DIR"], "/tmp"} <= mounts
    stop_ms = int(env["DEX_STOP_TIMEOUT_MS"])
    assert pod["terminationGracePeriodSeconds"] * 1000 > stop_ms
    assert pod["topologySpreadConstraints"]


def test_image_versions_equal_the_version_lock() -> None:
    for name, image in VERSIONS.items():
        assert COMPOSE["services"][name]["image"] == image
    redis = " ".join(COMPOSE["services"]["redis"]["command"])
    assert "--appendonly yes --appendfsync always --maxmemory-policy noeviction" in redis
    for path in (INFRA / "docker").glob("Dockerfile.*"):
        for line in path.read_text().splitlines():
            if line.startswith("ARG PYTHON_IMAGE="):
                assert line == "ARG PYTHON_IMAGE=python:3.11-slim-bookworm"


def test_only_the_gateway_is_behind_the_ingress() -> None:
    doc = yaml.safe_load((INFRA / "k8s" / "ingress.yml").read_text())
    backends = {
        p["backend"]["service"]["name"]
        for rule in doc["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert backends == {"gateway"}
    assert doc["spec"]["tls"]
