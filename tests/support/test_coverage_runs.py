"""`until_every_outcome`: stops after the first size when nothing is missing, else runs the
next sizes, keeping what earlier runs saw."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from tests.support.coverage_runs import until_every_outcome

SEEN: set[int] = set()
RUNS: list[int] = []


class Picks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        RUNS.append(1)

    @rule(n=st.integers(0, 30))
    def pick(self, n: int) -> None:
        SEEN.add(n)


BASE = settings(stateful_step_count=3, deadline=None)


def test_a_first_run_that_saw_everything_is_the_only_one() -> None:
    SEEN.clear()
    RUNS.clear()
    left = until_every_outcome(Picks, BASE, lambda: {"numbers": []}, (5, 50))
    assert left == {"numbers": []} and 0 < len(RUNS) <= 5  # never the size of 50


def test_what_is_missing_after_a_run_makes_the_next_size_run() -> None:
    SEEN.clear()
    RUNS.clear()

    def missing() -> dict[str, list[str]]:
        return {"numbers": [str(n) for n in range(31) if n not in SEEN]}

    left = until_every_outcome(Picks, BASE, missing, (1, 2, 400))
    assert len(RUNS) > 3  # a program per example: past the sizes 1 and 2
    assert left == missing()
