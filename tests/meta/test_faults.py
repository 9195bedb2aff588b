"""The suites must fail when a known fault is injected into a core.

Each fault (tests/meta/faults.py) is injected into separate pytest runs of its core's suites:
the engine's into the matching scenarios and the reference-model property test, the ledger's
into the rule scenarios and its reference-model property test. Every run must fail (exit
status 1: tests failed, not an error of the harness).
"""

from __future__ import annotations

import pytest

from tests.meta.faults import ENGINE, LEDGER
from tests.meta.mutation import assert_suite_catches

SUITES = {
    "engine": (
        ENGINE,
        {
            "scenarios": "tests/unit/test_matching_scenarios.py",
            "reference": "tests/property/test_engine_vs_reference.py",
        },
    ),
    "ledger": (
        LEDGER,
        {
            "rules": "tests/risk/test_ledger_rules.py",
            "reference": "tests/risk/test_ledger_vs_reference.py::TestLedgerVsReference",
        },
    ),
}
CASES = [
    pytest.param(fault, target, id=f"{core}-{fault}-{suite}")
    for core, (faults, targets) in SUITES.items()
    for fault in sorted(faults)
    for suite, target in sorted(targets.items())
]


def test_fault_names_are_unique() -> None:
    assert not ENGINE.keys() & LEDGER.keys()  # DEX_FAULT names one fault of either list


@pytest.mark.parametrize(("fault", "target"), CASES)
def test_suite_fails_when_fault_injected(fault: str, target: str) -> None:
    assert_suite_catches("tests.meta.faults", "DEX_FAULT", fault, target)
