"""The suite must fail when a known fault is injected into the engine.

Each fault (see tests/meta/faults.py) is injected into a separate pytest run of the scenario
tests and, separately, of the reference-model property test; both must fail (exit status 1:
tests failed, not an error of the harness).
"""

from __future__ import annotations

import pytest

from tests.meta.faults import FAULTS
from tests.mutation import assert_suite_catches

SUITES = {
    "scenarios": "tests/unit/test_matching_scenarios.py",
    "reference": "tests/property/test_engine_vs_reference.py",
}


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_suite_fails_when_fault_injected(fault: str, suite: str) -> None:
    assert_suite_catches("tests.meta.faults", "DEX_FAULT", fault, SUITES[suite])
