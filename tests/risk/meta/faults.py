"""Pytest plugin: inject one known fault (named by DEX_RISK_FAULT) into the risk ledger.

Like tests/meta/faults.py for the engine: each fault rewrites one method of the real ledger
from its own source (a textual mutation checked to apply) and installs it on the class before
any test runs. Used by tests/risk/meta/test_faults.py.
"""

from __future__ import annotations

from dex.risk import commands as rc
from dex.risk.settlement import _Settlement
from tests.mutation import Mutation, install

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
    "rebate_above_taker_fee": [(rc, "fee_rates_ok", r"\s+and maker_bps >= -taker_bps", "")],
}


def pytest_configure() -> None:
    install(FAULTS, "DEX_RISK_FAULT")
