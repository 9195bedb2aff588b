"""Scenario tests: one table row per rule of docs/matching-rules.md, expected events by hand.

Market T-USD: tick 1, lot 1, min size 1, band 1000 bps (10%), at most 5 open orders each.
Order ids are assigned 1, 2, 3... in the order places arrive (rejected places consume theirs).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.scenario import check, cmd, place, run
from tests.support.markets import T_USD, add_market_line

Row = tuple[str, list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]

ACC = ("accepted", {})


def _trade_at_100(ts: int = 1) -> list[dict[str, Any]]:
    """Two commands leaving last price 100 and an empty book (at ts, ts + 1)."""
    return [place(ts, "x", "sell", 100, 1), place(ts + 1, "y", "buy", 100, 1)]


SETUP_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ACC,
    ACC,
    ("trade", {"price": "100"}),
    ("filled", {}),
    ("filled", {}),
]

SCENARIOS: list[Row] = [
    (
        "price-time priority, trade at the maker's price",
        [
            place(1, "a", "sell", 101, 2),
            place(2, "b", "sell", 101, 3),
            place(3, "c", "sell", 100, 1),
            place(4, "d", "buy", 105, 5),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("accepted", {"order_id": 4, "price": "105", "size": "5"}),
            (
                "trade",
                {
                    "trade_id": 1,
                    "price": "100",
                    "size": "1",
                    "aggressor": "buy",
                    "maker_order_id": 3,
                    "taker_order_id": 4,
                    "maker_remaining": "0",
                    "taker_remaining": "4",
                },
            ),
            ("filled", {"order_id": 3, "size": "1"}),
            (
                "trade",
                {
                    "trade_id": 2,
                    "price": "101",
                    "size": "2",
                    "maker_order_id": 1,
                    "taker_remaining": "2",
                },
            ),
            ("filled", {"order_id": 1}),
            (
                "trade",
                {
                    "trade_id": 3,
                    "price": "101",
                    "size": "2",
                    "maker_order_id": 2,
                    "maker_remaining": "1",
                    "taker_remaining": "0",
                },
            ),
            ("filled", {"order_id": 4, "size": "5"}),
        ],
    ),
    (
        "GTC remainder rests and is taken later",
        [place(1, "a", "sell", 100, 2), place(2, "b", "buy", 100, 5), place(3, "c", "sell", 99, 1)],
        [
            ACC,
            ACC,
            ("trade", {"size": "2", "maker_order_id": 1}),
            ("filled", {"order_id": 1}),
            ACC,
            (
                "trade",
                {
                    "price": "100",
                    "size": "1",
                    "maker_order_id": 2,
                    "maker_remaining": "2",
                    "aggressor": "sell",
                },
            ),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "IOC remainder is cancelled with reason ioc",
        [place(1, "a", "sell", 100, 2), place(2, "b", "buy", 100, 5, tif="IOC")],
        [
            ACC,
            ACC,
            ("trade", {"size": "2"}),
            ("filled", {"order_id": 1}),
            ("cancelled", {"order_id": 2, "size": "3", "filled": "2", "reason": "ioc"}),
        ],
    ),
    (
        "market order by base size sweeps levels",
        [
            place(1, "a", "sell", 100, 2),
            place(2, "a", "sell", 102, 2),
            place(3, "c", "buy", None, 3),
        ],
        [
            ACC,
            ACC,
            ("accepted", {"type": "market", "price": None, "size": "3"}),
            ("trade", {"price": "100", "size": "2"}),
            ("filled", {"order_id": 1}),
            ("trade", {"price": "102", "size": "1", "maker_remaining": "1"}),
            ("filled", {"order_id": 3, "size": "3"}),
        ],
    ),
    (
        "market order stops when the book is empty: no_liquidity",
        [place(1, "a", "sell", 100, 2), place(2, "c", "buy", None, 3)],
        [
            ACC,
            ACC,
            ("trade", {"size": "2"}),
            ("filled", {"order_id": 1}),
            ("cancelled", {"order_id": 2, "size": "1", "filled": "2", "reason": "no_liquidity"}),
        ],
    ),
    (
        "market order on an empty book",
        [place(1, "c", "sell", None, 3)],
        [ACC, ("cancelled", {"order_id": 1, "size": "3", "filled": "0", "reason": "no_liquidity"})],
    ),
    (
        "protection price stops a market buy: price_protection",
        [
            place(1, "a", "sell", 100, 1),
            place(2, "a", "sell", 105, 1),
            place(3, "c", "buy", None, 2, max_price=103),
        ],
        [
            ACC,
            ACC,
            ("accepted", {"max_price": "103"}),
            ("trade", {"price": "100"}),
            ("filled", {"order_id": 1}),
            ("cancelled", {"order_id": 3, "size": "1", "reason": "price_protection"}),
        ],
    ),
    (
        "protection price stops a market sell",
        [
            place(1, "a", "buy", 100, 1),
            place(2, "a", "buy", 95, 1),
            place(3, "c", "sell", None, 2, min_price=97),
        ],
        [
            ACC,
            ACC,
            ("accepted", {"min_price": "97"}),
            ("trade", {"price": "100"}),
            ("filled", {}),
            ("cancelled", {"order_id": 3, "size": "1", "reason": "price_protection"}),
        ],
    ),
    (
        "band stops a market buy at ref + 10%: price_band",
        [
            place(1, "a", "sell", 115, 1),
            *_trade_at_100(2),
            place(4, "a", "sell", 105, 1),
            place(5, "c", "buy", None, 3),
        ],
        [
            ACC,
            *SETUP_EVENTS,
            ACC,
            ACC,
            ("trade", {"price": "105"}),
            ("filled", {"order_id": 4}),
            ("cancelled", {"order_id": 5, "size": "2", "reason": "price_band"}),
        ],
    ),
    (
        "band and protection stop at the same price: price_band wins",
        [
            place(1, "a", "sell", 115, 1),
            *_trade_at_100(2),
            place(4, "c", "buy", None, 3, max_price=107),
        ],
        [
            ACC,
            *SETUP_EVENTS,
            ACC,
            ("cancelled", {"order_id": 4, "size": "3", "reason": "price_band"}),
        ],
    ),
    (
        "protection tighter than the band at the stopping price: price_protection",
        [
            place(1, "a", "sell", 108, 1),
            *_trade_at_100(2),
            place(4, "c", "buy", None, 3, max_price=107),
        ],
        [
            ACC,
            *SETUP_EVENTS,
            ACC,
            ("cancelled", {"order_id": 4, "size": "3", "reason": "price_protection"}),
        ],
    ),
    (
        "market buy by quote: spends at most quote_size, dust is cancelled (ioc)",
        [
            place(1, "a", "sell", 100, 2),
            place(2, "a", "sell", 101, 5),
            place(3, "c", "buy", None, None, quote_size=250),
        ],
        [
            ACC,
            ACC,
            ("accepted", {"quote_size": "250", "size": None}),
            (
                "trade",
                {
                    "price": "100",
                    "size": "2",
                    "taker_remaining": None,
                    "taker_remaining_quote": "50",
                },
            ),
            ("filled", {"order_id": 1}),
            (
                "cancelled",
                {"order_id": 3, "size": None, "quote_size": "50", "filled": "2", "reason": "ioc"},
            ),
        ],
    ),
    (
        "market buy by quote spent exactly: filled",
        [
            place(1, "a", "sell", 100, 2),
            place(2, "a", "sell", 101, 5),
            place(3, "c", "buy", None, None, quote_size=301),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("trade", {"size": "2"}),
            ("filled", {"order_id": 1}),
            ("trade", {"price": "101", "size": "1", "taker_remaining_quote": "0"}),
            ("filled", {"order_id": 3, "size": "3"}),
        ],
    ),
    (
        "market sell by quote: receives at most quote_size",
        [
            place(1, "a", "buy", 100, 2),
            place(2, "a", "buy", 99, 5),
            place(3, "c", "sell", None, None, quote_size=250),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("trade", {"price": "100", "size": "2"}),
            ("filled", {}),
            ("cancelled", {"order_id": 3, "quote_size": "50", "reason": "ioc"}),
        ],
    ),
    (
        "FOK that cannot fill completely touches nothing",
        [
            place(1, "a", "sell", 100, 2),
            place(2, "b", "buy", 100, 3, tif="FOK"),
            place(3, "c", "buy", 100, 2, tif="FOK"),
        ],
        [
            ACC,
            ACC,
            ("cancelled", {"order_id": 2, "size": "3", "filled": "0", "reason": "fok"}),
            ACC,
            ("trade", {"size": "2", "maker_order_id": 1}),
            ("filled", {"order_id": 1}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "FOK decides with STP applied (expire_taker stops at the own order)",
        [
            place(1, "b", "sell", 100, 1),
            place(2, "a", "sell", 100, 2),
            place(3, "b", "buy", 100, 2, tif="FOK"),
        ],
        [ACC, ACC, ACC, ("cancelled", {"order_id": 3, "reason": "fok"})],
    ),
    (
        "FOK with expire_maker skips own orders and performs no STP action when it fails",
        [
            place(1, "b", "sell", 100, 1),
            place(2, "a", "sell", 100, 2),
            place(3, "b", "buy", 100, 3, tif="FOK", stp="expire_maker"),
            place(4, "b", "buy", 100, 2, tif="FOK", stp="expire_maker"),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("cancelled", {"order_id": 3, "reason": "fok"}),
            ACC,
            ("cancelled", {"order_id": 1, "reason": "stp", "size": "1"}),
            ("trade", {"maker_order_id": 2, "size": "2"}),
            ("filled", {"order_id": 2}),
            ("filled", {"order_id": 4}),
        ],
    ),
    (
        "FOK counts the hidden part of an iceberg",
        [place(1, "a", "sell", 100, 5, display_size=1), place(2, "c", "buy", 100, 5, tif="FOK")],
        [ACC, ACC]
        + [("trade", {"size": "1", "maker_order_id": 1})] * 5
        + [("filled", {"order_id": 1}), ("filled", {"order_id": 2})],
    ),
    (
        "iceberg refill goes to the back of its level",
        [
            place(1, "a", "sell", 100, 4, display_size=2),
            place(2, "b", "sell", 100, 2),
            place(3, "c", "buy", 100, 5),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("trade", {"maker_order_id": 1, "size": "2", "maker_remaining": "2"}),
            ("trade", {"maker_order_id": 2, "size": "2"}),
            ("filled", {"order_id": 2}),
            ("trade", {"maker_order_id": 1, "size": "1", "maker_remaining": "1"}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "an iceberg that trades as the taker rests showing only what is left",
        [
            place(1, "c", "sell", 100, 3),
            place(2, "b", "buy", 100, 5, display_size=4),
            place(3, "a", "sell", 100, 4),
        ],
        [
            ACC,
            ACC,
            ("trade", {"size": "3", "taker_remaining": "2"}),
            ("filled", {"order_id": 1}),
            ACC,
            ("trade", {"size": "2", "maker_order_id": 2, "maker_remaining": "0"}),
            ("filled", {"order_id": 2, "size": "5"}),
        ],
    ),
    (
        "STP expire_taker: the taker's rest is cancelled, the maker untouched",
        [
            place(1, "a", "sell", 100, 1),
            place(2, "b", "sell", 100, 1),
            place(3, "b", "buy", 100, 3),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("trade", {"maker_order_id": 1}),
            ("filled", {"order_id": 1}),
            ("cancelled", {"order_id": 3, "size": "2", "filled": "1", "reason": "stp"}),
        ],
    ),
    (
        "STP expire_maker: the maker is cancelled and matching goes on",
        [
            place(1, "b", "sell", 100, 1),
            place(2, "a", "sell", 100, 1),
            place(3, "b", "buy", 100, 1, stp="expire_maker"),
        ],
        [
            ACC,
            ACC,
            ACC,
            ("cancelled", {"order_id": 1, "size": "1", "reason": "stp"}),
            ("trade", {"maker_order_id": 2}),
            ("filled", {"order_id": 2}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "STP expire_both: maker then taker cancelled",
        [place(1, "b", "sell", 100, 1), place(2, "b", "buy", 100, 2, stp="expire_both")],
        [
            ACC,
            ACC,
            ("cancelled", {"order_id": 1, "reason": "stp"}),
            ("cancelled", {"order_id": 2, "size": "2", "reason": "stp"}),
        ],
    ),
    (
        "STP none: an account trades with itself",
        [place(1, "b", "sell", 100, 1), place(2, "b", "buy", 100, 1, stp="none")],
        [
            ACC,
            ACC,
            ("trade", {"maker_account": "b", "taker_account": "b"}),
            ("filled", {"order_id": 1}),
            ("filled", {"order_id": 2}),
        ],
    ),
    (
        "post-only that would take is rejected; one that rests is accepted",
        [
            place(1, "a", "sell", 100, 1),
            place(2, "b", "buy", 100, 1, post_only=True),
            place(3, "b", "buy", 99, 1, post_only=True),
        ],
        [
            ACC,
            ("rejected", {"order_id": 2, "code": "post_only_would_take"}),
            ("accepted", {"order_id": 3, "post_only": True}),
        ],
    ),
    (
        "GTD expires before the command that passes it; tick only advances time",
        [
            place(1, "a", "sell", 100, 2, tif="GTD", expires_at=10),
            place(5, "a", "sell", 101, 1, tif="GTD", expires_at=20),
            cmd("tick", 10),
            cmd("tick", 19),
            place(25, "b", "buy", 101, 1),
        ],
        [
            ACC,
            ACC,
            ("expired", {"order_id": 1, "size": "2", "filled": "0", "ts": 10}),
            ("expired", {"order_id": 2, "ts": 25}),
            ("accepted", {"order_id": 3}),
        ],
    ),
    (
        "GTD already expired at entry is rejected",
        [place(100, "a", "sell", 100, 1, tif="GTD", expires_at=100)],
        [("rejected", {"code": "already_expired"})],
    ),
    (
        "buy stop triggers when last >= trigger and then takes as a limit order",
        [
            *_trade_at_100(),
            place(3, "s", "buy", 103, 1, type="stop_limit", trigger_price=102),
            place(4, "a", "sell", 102, 1),
            place(5, "a", "sell", 103, 2),
            place(6, "e", "buy", 102, 1),
        ],
        [
            *SETUP_EVENTS,
            ("accepted", {"type": "stop_limit", "trigger_price": "102"}),
            ACC,
            ACC,
            ACC,
            ("trade", {"price": "102"}),
            ("filled", {"order_id": 4}),
            ("filled", {"order_id": 6}),
            ("triggered", {"order_id": 3, "trigger_price": "102", "last_price": "102"}),
            ("trade", {"price": "103", "taker_order_id": 3, "maker_remaining": "1"}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "a stop that would trigger at entry is rejected",
        [
            *_trade_at_100(),
            place(3, "s", "buy", None, 1, type="stop_market", trigger_price=100),
            place(4, "s", "sell", None, 1, type="stop_market", trigger_price=100),
        ],
        [
            *SETUP_EVENTS,
            ("rejected", {"code": "stop_would_trigger"}),
            ("rejected", {"code": "stop_would_trigger"}),
        ],
    ),
    (
        "cascade: a triggered stop's trades trigger the next, in acceptance order",
        [
            *_trade_at_100(),
            place(3, "s", "buy", None, 1, type="stop_market", trigger_price=103),
            place(4, "t", "buy", None, 1, type="stop_market", trigger_price=102),
            place(5, "a", "sell", 102, 1),
            place(6, "a", "sell", 103, 1),
            place(7, "a", "sell", 104, 1),
            place(8, "e", "buy", 102, 1),
        ],
        [
            *SETUP_EVENTS,
            ACC,
            ACC,
            ACC,
            ACC,
            ACC,
            ACC,
            ("trade", {"price": "102"}),
            ("filled", {}),
            ("filled", {}),
            ("triggered", {"order_id": 4}),
            ("trade", {"price": "103", "taker_order_id": 4}),
            ("filled", {"order_id": 6}),
            ("filled", {"order_id": 4}),
            ("triggered", {"order_id": 3, "last_price": "103"}),
            ("trade", {"price": "104", "taker_order_id": 3}),
            ("filled", {"order_id": 7}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "sell stop triggers when last <= trigger",
        [
            *_trade_at_100(),
            place(3, "s", "sell", None, 1, type="stop_market", trigger_price=99),
            place(4, "a", "buy", 99, 2),
            place(5, "e", "sell", 99, 1),
        ],
        [
            *SETUP_EVENTS,
            ACC,
            ACC,
            ACC,
            ("trade", {"price": "99"}),
            ("filled", {"order_id": 5}),
            ("triggered", {"order_id": 3}),
            ("trade", {"price": "99", "taker_order_id": 3}),
            ("filled", {"order_id": 4}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "triggered stop-limit outside the band is cancelled: price_band",
        [
            *_trade_at_100(),
            place(3, "s", "buy", 120, 1, type="stop_limit", trigger_price=101),
            place(4, "a", "sell", 101, 1),
            place(5, "e", "buy", 101, 1),
        ],
        [
            *SETUP_EVENTS,
            ACC,
            ACC,
            ACC,
            ("trade", {}),
            ("filled", {}),
            ("filled", {}),
            ("triggered", {"order_id": 3}),
            ("cancelled", {"order_id": 3, "size": "1", "reason": "price_band"}),
        ],
    ),
    (
        "cancel_only cancels untriggered stops (market_status) and refuses new orders",
        [
            *_trade_at_100(),
            place(3, "s", "buy", None, 1, type="stop_market", trigger_price=103),
            place(4, "a", "sell", 110, 1),
            cmd("set_market_status", 5, status="cancel_only"),
            place(6, "b", "sell", 105, 1),
            cmd("cancel", 7, account="a", order_id=4),
        ],
        [
            *SETUP_EVENTS,
            ACC,
            ACC,
            ("market_status_changed", {"status": "cancel_only", "previous": "active"}),
            ("cancelled", {"order_id": 3, "reason": "market_status", "size": "1"}),
            ("rejected", {"order_id": 5, "code": "market_status"}),
            ("cancelled", {"order_id": 4, "reason": "user"}),
        ],
    ),
    (
        "post_only market: post-only orders only; halted: nothing new, stops stay",
        [
            place(1, "a", "sell", 100, 1),
            cmd("set_market_status", 2, status="post_only"),
            place(3, "b", "buy", 99, 1),
            place(4, "b", "buy", 98, 1, post_only=True),
            cmd("set_market_status", 5, status="halted"),
            place(6, "b", "buy", 97, 1, post_only=True),
            cmd("amend", 7, account="b", order_id=3, size=2),
        ],
        [
            ACC,
            ("market_status_changed", {"status": "post_only"}),
            ("rejected", {"order_id": 2, "code": "market_status"}),
            ("accepted", {"order_id": 3}),
            ("market_status_changed", {"status": "halted", "previous": "post_only"}),
            ("rejected", {"order_id": 4, "code": "market_status"}),
            ("amend_rejected", {"order_id": 3, "code": "market_status"}),
        ],
    ),
    (
        "limit order outside the band is rejected; with no trade the mid is the reference",
        [
            place(1, "a", "sell", 100, 1),
            place(2, "b", "buy", 90, 1),
            place(3, "c", "buy", 105, 1, post_only=True),
            place(4, "c", "sell", 104, 1),
            place(5, "c", "sell", 105, 1),
        ],
        # mid 95: band is 85.5 .. 104.5
        [
            ACC,
            ACC,
            ("rejected", {"order_id": 3, "code": "outside_price_band"}),
            ACC,
            ("rejected", {"order_id": 5, "code": "outside_price_band"}),
        ],
    ),
    (
        "min size, min notional are enforced",
        [
            place(1, "a", "sell", 100, 1, order_id=7),
            place(2, "a", "sell", 100, 1, order_id=7),
            place(3, "a", "sell", 100, 1),
        ],
        [
            ("accepted", {"order_id": 7}),
            ("rejected", {"order_id": 7, "code": "duplicate_order_id"}),
            ("accepted", {"order_id": 8}),
        ],
    ),
    (
        "max open orders per account and market; IOC is not counted",
        [place(i, "a", "sell", 100 + i, 1) for i in range(1, 6)]
        + [
            place(6, "a", "sell", 120, 1),
            place(7, "a", "sell", 101, 1, type="stop_limit", trigger_price=99),
            place(8, "a", "buy", 90, 1, tif="IOC"),
        ],
        [ACC] * 5
        + [
            ("rejected", {"code": "too_many_open_orders"}),
            ("rejected", {"code": "too_many_open_orders"}),
            ACC,
            ("cancelled", {"reason": "ioc"}),
        ],
    ),
    (
        "duplicate client order id among open orders; reusable once the order ended",
        [
            place(1, "a", "sell", 100, 1, client_order_id="k"),
            place(2, "a", "sell", 101, 1, client_order_id="k"),
            place(3, "b", "sell", 101, 1, client_order_id="k"),
            cmd("cancel", 4, account="a", client_order_id="k"),
            place(5, "a", "sell", 101, 1, client_order_id="k"),
        ],
        [
            ACC,
            ("rejected", {"order_id": 2, "code": "duplicate_client_order_id"}),
            ("accepted", {"order_id": 3}),
            ("cancelled", {"order_id": 1, "client_order_id": "k"}),
            ("accepted", {"order_id": 4}),
        ],
    ),
    (
        "cancel by id, by client id, unknown, another account's",
        [
            place(1, "a", "sell", 100, 1, client_order_id="k"),
            cmd("cancel", 2, account="b", order_id=1),
            cmd("cancel", 3, account="a", order_id=99),
            cmd("cancel", 4, account="a", client_order_id="k"),
            cmd("cancel", 5, account="a", client_order_id="k"),
        ],
        [
            ACC,
            ("cancel_rejected", {"order_id": 1, "code": "unknown_order"}),
            ("cancel_rejected", {"order_id": 99, "code": "unknown_order"}),
            ("cancelled", {"order_id": 1, "reason": "user"}),
            ("cancel_rejected", {"client_order_id": "k", "code": "unknown_order"}),
        ],
    ),
    (
        "cancel_all for an account, by ascending order id, stops included, reason admin",
        [
            place(1, "a", "sell", 102, 1),
            place(2, "b", "sell", 101, 1),
            place(3, "a", "buy", 95, 1),
            place(4, "a", "buy", None, 1, type="stop_market", trigger_price=110),
            cmd("cancel_all", 5, account="a", reason="admin"),
            cmd("cancel_all", 6, account="a"),
        ],
        [
            ACC,
            ACC,
            ACC,
            ACC,
            ("cancelled", {"order_id": 1, "reason": "admin"}),
            ("cancelled", {"order_id": 3, "reason": "admin"}),
            ("cancelled", {"order_id": 4, "reason": "admin"}),
        ],
    ),
    (
        "amend size down keeps priority",
        [
            place(1, "a", "sell", 100, 3),
            place(2, "b", "sell", 100, 3),
            cmd("amend", 3, account="a", order_id=1, size=2),
            place(4, "c", "buy", 100, 1),
        ],
        [
            ACC,
            ACC,
            ("amended", {"order_id": 1, "size": "2", "remaining": "2", "kept_priority": True}),
            ACC,
            ("trade", {"maker_order_id": 1}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "amend size up loses priority",
        [
            place(1, "a", "sell", 100, 3),
            place(2, "b", "sell", 100, 3),
            cmd("amend", 3, account="a", order_id=1, size=4),
            place(4, "c", "buy", 100, 1),
        ],
        [
            ACC,
            ACC,
            ("amended", {"order_id": 1, "size": "4", "remaining": "4", "kept_priority": False}),
            ACC,
            ("trade", {"maker_order_id": 2}),
            ("filled", {"order_id": 3}),
        ],
    ),
    (
        "amend price re-enters as a taker and may match",
        [
            place(1, "a", "sell", 101, 1),
            place(2, "b", "buy", 99, 2),
            cmd("amend", 3, account="b", order_id=2, price=101),
        ],
        [
            ACC,
            ACC,
            ("amended", {"order_id": 2, "price": "101", "kept_priority": False}),
            (
                "trade",
                {"price": "101", "taker_order_id": 2, "maker_order_id": 1, "taker_remaining": "1"},
            ),
            ("filled", {"order_id": 1}),
        ],
    ),
    (
        "amend to a size at or below the filled size cancels the rest (amend)",
        [
            place(1, "a", "sell", 100, 4),
            place(2, "b", "buy", 100, 2),
            cmd("amend", 3, account="a", order_id=1, size=2),
        ],
        [
            ACC,
            ACC,
            ("trade", {}),
            ("filled", {"order_id": 2}),
            ("cancelled", {"order_id": 1, "size": "2", "filled": "2", "reason": "amend"}),
        ],
    ),
    (
        "amend rejections: unknown, stop, post-only would take, band",
        [
            *_trade_at_100(),
            place(3, "a", "buy", None, 1, type="stop_market", trigger_price=105),
            place(4, "a", "sell", 101, 1),
            place(5, "b", "buy", 99, 1, post_only=True),
            cmd("amend", 6, account="a", order_id=42, size=3),
            cmd("amend", 7, account="a", order_id=3, size=3),
            cmd("amend", 8, account="b", order_id=5, price=101),
            cmd("amend", 9, account="b", order_id=5, price=80),
        ],
        [
            *SETUP_EVENTS,
            ACC,
            ACC,
            ACC,
            ("amend_rejected", {"order_id": 42, "code": "unknown_order"}),
            ("amend_rejected", {"order_id": 3, "code": "not_amendable"}),
            ("amend_rejected", {"order_id": 5, "code": "post_only_would_take"}),
            ("amend_rejected", {"order_id": 5, "code": "outside_price_band"}),
        ],
    ),
]


@pytest.mark.parametrize(("name", "lines", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario(
    name: str, lines: list[dict[str, Any]], expected: list[tuple[str, dict[str, Any]]]
) -> None:
    check(run(lines), expected)


def test_min_size_and_notional() -> None:
    setup = add_market_line(msgspec.structs.replace(T_USD, min_size="2", min_notional="300"))
    events = run(
        [
            place(1, "a", "sell", 100, 1),
            place(2, "a", "sell", 100, 2),
            place(3, "a", "sell", 150, 2),
            place(4, "b", "buy", None, None, quote_size=299),
            place(5, "b", "buy", None, None, quote_size=300),
        ],
        setup=setup,
    )
    check(
        events,
        [
            ("rejected", {"code": "below_min_size"}),
            ("rejected", {"code": "below_min_notional"}),
            ACC,
            ("rejected", {"code": "below_min_notional"}),
            ACC,
            ("trade", {"size": "2"}),
            ("filled", {}),
            ("filled", {"order_id": 5}),
        ],
    )


def test_sequence_numbers_are_gap_free() -> None:
    events = run(
        [place(i, "a" if i % 2 else "b", "sell" if i % 2 else "buy", 100, 1) for i in range(1, 9)]
    )
    assert [e["seq"] for e in events] == list(range(2, 2 + len(events)))
    assert [e["log_seq"] for e in events] == list(range(4, 4 + len(events)))
    assert all(e["input"]["stream"] == "replay" for e in events)
