"""The risk suite must fail when a known fault is injected into the ledger.

Each fault (tests/risk/meta/faults.py) is injected into a separate pytest run of the rule
scenarios and, separately, of the reference-model property test; both must fail (exit status
1: tests failed, not an error of the harness).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.risk.meta.faults import FAULTS

ROOT = Path(__file__).parents[3]
SUITES = {
    "rules": "tests/risk/test_ledger_rules.py",
    "reference": "tests/risk/test_ledger_vs_reference.py::TestLedgerVsReference",
}


def _run_with_fault(fault: str, target: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEX_RISK_FAULT=fault, CI="")  # fewer examples: a fault fails fast
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.risk.meta.faults",
            target,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_suite_fails_when_fault_injected(fault: str, suite: str) -> None:
    result = _run_with_fault(fault, SUITES[suite])
    assert result.returncode == 1, (
        f"{suite} did not catch {fault}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    )
    assert "FAILED" in result.stdout
