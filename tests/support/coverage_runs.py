"""Derandomized Hypothesis state-machine runs that must reach every outcome (event kinds,
refusal codes): a run of the given size, and if it missed something, longer runs adding to
what it saw.

A derandomized run has been seen to generate slightly different programs from one process
to another (a clean checkout under heavy load missed a rare refusal code once that every
other run reached): the figure that matters is that the machine reaches every outcome within
a bounded effort, not within one exact program list."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test


def until_every_outcome(
    machine: type[RuleBasedStateMachine],
    base: settings,
    missing: Callable[[], dict[str, list[str]]],
    sizes: Sequence[int],
) -> dict[str, list[str]]:
    """Run `machine` derandomized with `sizes[0]` programs, then each larger size while
    `missing()` (what the runs so far never produced) is not empty; return it."""
    for examples in sizes:
        run_state_machine_as_test(
            machine,
            settings=settings(base, max_examples=examples, derandomize=True, database=None),
        )
        left = missing()
        if not any(left.values()):
            break
    return left
