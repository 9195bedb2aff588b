"""Suite-wide rules: under CI (CI=true) a skipped test is a failure."""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} skipped test(s) count as failures: {_skipped}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
