"""Pytest plugin: inject one known fault, named by DEX_FAULT, into a pure core.

Two lists of faults, one per core: ENGINE (the matching engine) and LEDGER (the risk ledger).
Each fault rewrites functions of the real code from their own source (a textual mutation
checked to apply, tests/meta/mutation.py) and installs them before any test runs, so every
test sees the faulty core. Used by tests/meta/test_faults.py.
"""

from __future__ import annotations

from dex.matching.book import BookSide
from dex.matching.engine import Engine
from dex.risk import commands as rc
from dex.risk.settlement import _Settlement
from tests.meta.mutation import Mutation, install

ENGINE: dict[str, list[Mutation]] = {
    # orders in a level are taken newest first
    "lifo_within_level": [
        (BookSide, "add", r"level\.q\.append\(order\)", "level.q.appendleft(order)"),
        (Engine, "apply", r"level\.q\.append\(order\)", "level.q.appendleft(order)"),
    ],
    # a refilled iceberg keeps its place at the front of the level
    "iceberg_refill_at_front": [
        (Engine, "_match", r"q\.popleft\(\)\n\s+q\.append\(maker\)", "pass")
    ],
    # FOK no longer checks that it can fill completely
    "fok_partially_filled": [
        (
            Engine,
            "_take",
            r"if cmd\.tif is FOK and self\._fillable\(m, order, cap\) < order\.remaining:",
            "if False:",
        )
    ],
    # self-trade prevention is never applied
    "stp_ignored": [
        (Engine, "_match", r"check_stp = stp is not STP_NONE", "check_stp = False"),
        (Engine, "_fillable", r"check_stp = stp is not STP_NONE", "check_stp = False"),
    ],
    # an amend that only lowers the size sends the order to the back of its level
    "size_down_amend_loses_priority": [(Engine, "_amend_in_place", r"if grew:", "if True:")],
    # trades happen at the taker's limit price (when it has one)
    "trade_at_taker_price": [
        (Engine, "_match", r"trade_id,\n(\s+)price,", r"trade_id,\n\1taker.price or price,")
    ],
}

LEDGER: dict[str, list[Mutation]] = {
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
    install({**ENGINE, **LEDGER}, "DEX_FAULT")
