"""Pytest plugin: inject one known fault (named by DEX_FAULT) into the matching engine.

Each fault rewrites one method of the real engine from its own source (a textual mutation
checked to apply) and installs it on the class before any test runs, so every test that
imports the engine sees the faulty one. Used by tests/meta/test_faults.py.
"""

from __future__ import annotations

from dex.matching.book import BookSide
from dex.matching.engine import Engine
from tests.mutation import Mutation, install

FAULTS: dict[str, list[Mutation]] = {
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


def pytest_configure() -> None:
    install(FAULTS, "DEX_FAULT")
