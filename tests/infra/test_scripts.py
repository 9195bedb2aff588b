"""config-loader.sh against the env files (accepted; broken ones refused naming the variable),
the deploy scripts with a stub kubectl first on PATH, and the image's entrypoint outside
Docker: the wheel installed in a fresh venv, config-loader.sh --exec until /readyz answers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.infra.tools import INFRA, ROOT
from tests.support.redis_server import RedisServer, free_port, have_redis_server

LOADER = INFRA / "config" / "config-loader.sh"
FAKE_SECRETS = {
    "DEX_REDIS_URL": "redis://127.0.0.1:6379/0",
    "DEX_DATABASE_URL": "postgresql://dex@127.0.0.1:5432/dex",
    "DEX_ADMIN_TOKEN": "t" * 40,
    "DEX_KEY_ENCRYPTION_KEY": "ab" * 32,
}
BIN = str(Path(sys.executable).parent)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEX_")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    return {**env, **extra}


def loader(env_file: Path, service: str, **extra: str) -> subprocess.CompletedProcess[str]:
    args = ["bash", str(LOADER), "--env-file", str(env_file), "--service", service]
    return subprocess.run(args, capture_output=True, text=True, env=_clean_env(**extra), timeout=60)


@pytest.mark.parametrize("name", ["staging", "testnet", "production"])
def test_loader_accepts_each_env_file(name: str) -> None:
    result = loader(INFRA / "config" / f"env.{name}.env", "persistence", **FAKE_SECRETS)
    assert result.returncode == 0, result.stderr


BROKEN = [
    ("DEX_MATCHING_SHARDS", "DEX_MATCHING_SHARDS=0"),
    ("DEX_RATE_LIMIT_ORDERS", "DEX_RATE_LIMIT_ORDERS=300"),
    ("DEX_PERSISTENCE_URL", "DEX_PERSISTENCE_URL=ftp://persistence"),
    ("DEX_LOG_LEVEL", "DEX_LOG_LEVEL=loud"),
    ("DEX_FAUCET", "DEX_FAUCET=true"),  # production refuses the faucet
    ("DEX_ALLOW_UNSAFE_REDIS", "DEX_ALLOW_UNSAFE_REDIS=true"),
]


@pytest.mark.parametrize(("var", "line"), BROKEN, ids=[b[0] for b in BROKEN])
def test_loader_refuses_a_broken_env_file_naming_the_variable(
    tmp_path: Path, var: str, line: str
) -> None:
    text = (INFRA / "config" / "env.production.env").read_text()
    lines = [x for x in text.splitlines() if not x.startswith(f"{var}=")] + [line]
    broken = tmp_path / "broken.env"
    broken.write_text("\n".join(lines) + "\n")
    result = loader(broken, "gateway", **FAKE_SECRETS)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
    assert result.stderr.startswith(f"error: {var}: ")


@pytest.mark.parametrize(
    ("missing", "extra"),
    [
        ("DEX_REDIS_URL", {}),
        ("DEX_KEY_ENCRYPTION_KEY", {}),
        ("DEX_ADMIN_TOKEN", {"DEX_ADMIN_TOKEN": "dev"}),
        ("DEX_DATABASE_URL", {"DEX_DATABASE_URL": "sqlite:///x.db"}),
    ],
)
def test_loader_refuses_missing_or_weak_secrets(missing: str, extra: dict[str, str]) -> None:
    secrets = {k: v for k, v in FAKE_SECRETS.items() if k != missing} | extra
    result = loader(INFRA / "config" / "env.production.env", "persistence", **secrets)
    assert result.returncode != 0
    assert f"error: {missing}: " in result.stderr


# ------------------------------------------------------------------------ the deploy scripts

STUB = """#!/usr/bin/env bash
echo "kubectl $*" >> "$STUB_LOG"
case "$*" in
  "config current-context") echo "${STUB_CONTEXT:-dex-staging}" ;;
  *"create configmap"*) echo "kind: ConfigMap" ;;
  "apply -f -") cat > /dev/null ;;
  *"rollout status deployment/${STUB_FAIL:-none} "*) exit 1 ;;
esac
"""


def deploy(tmp_path: Path, *args: str, **extra: str) -> tuple[int, list[str], str]:
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "kubectl").write_text(STUB)
    (stubs / "kubectl").chmod(0o755)
    (stubs / "curl").write_text('#!/usr/bin/env bash\necho "curl $*" >> "$STUB_LOG"\n')
    (stubs / "curl").chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    env = _clean_env(STUB_LOG=str(log), **extra)
    env["PATH"] = f"{stubs}:{env['PATH']}"
    script = INFRA / "scripts" / "deploy-staging.sh"
    result = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=60
    )
    return result.returncode, log.read_text().splitlines(), result.stdout + result.stderr


SERVICES = ["gateway", "matching-engine", "market-data", "risk-engine", "persistence"]


def test_deploy_issues_the_commands_in_order(tmp_path: Path) -> None:
    url = "https://api.staging.dex.example"
    code, log, out = deploy(tmp_path, "--tag", "1.2.3", "--smoke-url", url)
    assert code == 0, out
    assert log == [
        "kubectl config current-context",
        f"kubectl apply -f {INFRA}/k8s/namespace.yml",
        f"kubectl apply -f {INFRA}/k8s/secrets/sealed-secrets.yml",
        "kubectl -n dex create configmap dex-config "
        f"--from-env-file={INFRA}/config/env.staging.env --dry-run=client -o yaml",
        "kubectl apply -f -",
        *["kubectl apply -f -"] * 5,
        f"kubectl apply -f {INFRA}/k8s/network-policy.yml",
        f"kubectl apply -f {INFRA}/k8s/ingress.yml",
        *[f"kubectl -n dex rollout status deployment/{s} --timeout=600s" for s in SERVICES],
        f"curl --fail --silent --show-error --max-time 10 {url}/readyz",
    ]


def test_deploy_rolls_back_a_failed_rollout(tmp_path: Path) -> None:
    code, log, _ = deploy(tmp_path, "--tag", "1.2.3", "--smoke-url", "x", STUB_FAIL="market-data")
    assert code == 1
    assert log[-1 - len(SERVICES)] == (
        "kubectl -n dex rollout status deployment/market-data --timeout=600s"
    )
    assert log[-len(SERVICES) :] == [
        f"kubectl -n dex rollout undo deployment/{s}" for s in SERVICES
    ]
    assert not any(line.startswith("curl") for line in log)


def test_deploy_refuses_another_context_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    code, log, out = deploy(tmp_path, "--tag", "1.2.3", STUB_CONTEXT="prod")
    assert code == 1 and log == ["kubectl config current-context"], out
    code, log, out = deploy(tmp_path / "..", "--tag", "9.9.9", "--dry-run")
    assert code == 0, out
    assert not any(line.startswith(("kubectl apply", "kubectl -n dex rollout")) for line in log)
    assert "+ kubectl -n dex rollout status deployment/gateway --timeout=600s" in out
    assert "+ kubectl apply -f - (gateway with image tag 9.9.9)" in out


def test_deploy_sets_the_image_tag(tmp_path: Path) -> None:
    text = (INFRA / "k8s" / "gateway" / "deployment.yml").read_text()
    pattern = "s#(image: ghcr.io/dex-exchange/dex-gateway):[^[:space:]]+#\\1:7.7.7#"
    out = subprocess.run(["sed", "-E", pattern], input=text, capture_output=True, text=True)
    assert "image: ghcr.io/dex-exchange/dex-gateway:7.7.7\n" in out.stdout


# ------------------------------------------------------------ the entrypoint, outside Docker


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the repository, installed in a fresh venv (once per session)."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base), str(ROOT)],
        check=True,
        timeout=300,
    )
    wheel = next(base.glob("dex-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # the dependencies come from the test venv (a path after the fresh venv's own, so dex
    # itself is the wheel's; a path in a .pth does not run that folder's editable hooks):
    # this machine is offline
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        timeout=300,
    )
    return venv


@pytest.fixture
def redis_url() -> Iterator[str]:
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    server = RedisServer.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.cleanup()


def test_entrypoint_runs_a_service_from_the_wheel(
    installed: Path, redis_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEX_")}
    env.update(FAKE_SECRETS, DEX_REDIS_URL=redis_url, SERVICE="market-data", PYTHONPATH="")
    env["PATH"] = f"{installed / 'bin'}:{env['PATH']}"
    env_file = tmp_path / "staging.env"
    text = (INFRA / "config" / "env.staging.env").read_text()
    port = free_port()  # not 8082: another dex on this machine may hold it
    for old, new in (
        ("DEX_HOST=0.0.0.0", "DEX_HOST=127.0.0.1"),
        ("DEX_DATA_DIR=/var/lib/dex", f"DEX_DATA_DIR={tmp_path}"),
        ("DEX_PORT=0", f"DEX_PORT={port}"),
    ):
        assert old in text
        text = text.replace(old, new)
    env_file.write_text(text)
    proc = subprocess.Popen(
        ["bash", str(LOADER), "--env-file", str(env_file), "--exec"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no /readyz within 60 s"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)  # polls, and notices an early exit at once
        which = subprocess.run(
            ["bash", "-c", "command -v dex"], env=env, capture_output=True, text=True
        )
        assert which.stdout.strip() == str(installed / "bin" / "dex")
    finally:
        proc.terminate()  # config-loader exec'd dex serve: the service itself gets SIGTERM
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
