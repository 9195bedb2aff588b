"""The risk suite must fail when a known fault is injected into the ledger.

Each fault (tests/risk/meta/faults.py) is injected into a separate pytest run of the rule
scenarios and, separately, of the reference-model property test; both must fail (exit status
1: tests failed, not an error of the harness).
"""

from __future__ import annotations

import pytest

from tests.mutation import assert_suite_catches
from tests.risk.meta.faults import FAULTS

SUITES = {
    "rules": "tests/risk/test_ledger_rules.py",
    "reference": "tests/risk/test_ledger_vs_reference.py::TestLedgerVsReference",
}


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_suite_fails_when_fault_injected(fault: str, suite: str) -> None:
    assert_suite_catches("tests.risk.meta.faults", "DEX_RISK_FAULT", fault, SUITES[suite], CI="")
