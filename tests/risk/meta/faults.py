"""Pytest plugin: inject one known fault (named by DEX_RISK_FAULT) into the risk ledger.

Like tests/meta/faults.py for the engine: each fault rewrites one method of the real ledger
from its own source (a textual mutation checked to apply) and installs it on the class before
any test runs. Used by tests/risk/meta/test_faults.py.
"""

from __future__ import annotations
import __future__

import inspect
import os
import re
import sys
import textwrap
from collections.abc import Callable

from dex.risk.ledger import Ledger
from dex.risk.settlement import _Settlement

Mutation = tuple[type, str, str, str]  # (class, method, regex, replacement)

FAULTS: dict[str, list[Mutation]] = {
    # a cancelled order's hold is not released
    "hold_kept_on_cancel": [
        (
            _Settlement,
            "_end",
            r"amount = o\.held \+ o\.pending",
            "amount = 0 if status is CANCELLED else o.held + o.pending",
        )
    ],
    # fees are rounded down (in the payer's favour) instead of up
    "fee_rounded_down": [
        (_Settlement, "_fill", r"-\(-(\w+) \* bps // 10_000\)", r"\1 * bps // 10_000")
    ],
    # a shard that owns both sides of a trade settles only the taker's
    "one_sided_settlement": [
        (
            _Settlement,
            "_on_trade",
            r"mine_maker = e\.maker_order_id >> 40 == shard",
            "mine_maker = False",
        )
    ],
    # a maker rebate larger than the taker fee is accepted
    "rebate_above_taker_fee": [(Ledger, "_fee_rates_ok", r"\s+and maker_bps >= -taker_bps", "")],
}


def _mutate(owner: type, name: str, pattern: str, replacement: str) -> None:
    func: Callable[..., object] = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(func))
    mutated, count = re.subn(pattern, replacement, source)
    if count == 0:
        raise RuntimeError(f"fault injection: {pattern!r} not found in {owner.__name__}.{name}")
    module = sys.modules[func.__module__]
    namespace: dict[str, object] = {}
    code = compile(
        mutated,
        f"<fault in {owner.__name__}.{name}>",
        "exec",
        flags=__future__.annotations.compiler_flag,
    )
    exec(code, module.__dict__, namespace)
    setattr(owner, name, namespace[name])


def pytest_configure() -> None:
    fault = os.environ.get("DEX_RISK_FAULT")
    if fault:
        for owner, name, pattern, replacement in FAULTS[fault]:
            _mutate(owner, name, pattern, replacement)
