"""Candles and the 24-hour ticker equal a naive computation from the list of trades.

Random trade lists (times non-decreasing, as one shard's clock stamps them, with gaps from
a second to hours so that many intervals have no trade, around a UTC midnight) go through
`MarketData` as matching `Trade` events; each interval's candles must equal the trades grouped
by `ts // interval` (so an interval without trades has no candle and candles open at UTC
multiples of the interval), the rendered rows and the ticker must equal decimal strings
computed here with `Decimal`, and `prune`/`query`/the commit floor keep what the naive
rules say.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from dex.core import events as me
from dex.core.commands import InputRef
from dex.core.enums import Side
from dex.core.numbers import DAY_NS
from dex.marketdata.candles import INTERVALS, Candles
from dex.marketdata.market import MarketData
from tests.support.markets import BBB_USD

IN_CI = os.environ.get("CI") == "true"
SETTINGS = settings(max_examples=200 if IN_CI else 100, derandomize=IN_CI, deadline=None)
MIN = 60 * 10**9
SEC = 10**9
HOUR = 60 * MIN
TICK, LOT = Decimal(BBB_USD.tick_size), Decimal(BBB_USD.lot_size)

Raw = tuple[int, int, int]  # (price ticks, size lots, ts ns)


def text(n: int, step: Decimal) -> str:
    places = max(0, -int(step.normalize().as_tuple().exponent))
    return f"{Decimal(n) * step:.{places}f}"


@st.composite
def trade_lists(draw: st.DrawFn) -> list[Raw]:
    """Trades from a few hours before a UTC midnight on, with gaps of every size."""
    day = draw(st.integers(19_000, 21_000))
    ts = day * DAY_NS - draw(st.integers(0, 6 * HOUR))
    out: list[Raw] = []
    for _ in range(draw(st.integers(0, 60))):
        gap = draw(
            st.one_of(
                st.just(0),
                st.integers(0, 10 * SEC),
                st.integers(0, 10 * MIN),
                st.integers(0, 5 * HOUR),
            )
        )
        ts += gap
        out.append((draw(st.integers(1, 10_000)), draw(st.integers(1, 500)), ts))
    return out


def trade_event(i: int, price: int, size: int, ts: int) -> me.Trade:
    return me.Trade(
        v=1,
        market=BBB_USD.market,
        seq=i + 2,
        ts=ts,
        log_seq=i + 1,
        input=InputRef("test", i + 1),
        trade_id=i + 1,
        price=price,
        size=size,
        aggressor=Side.BUY,
        maker_order_id=1,
        maker_account="a",
        maker_client_order_id=None,
        maker_remaining=1,
        taker_order_id=2,
        taker_account="b",
        taker_client_order_id=None,
        taker_remaining=0,
        taker_remaining_quote=None,
    )


def feed(trades: list[Raw], recent: int = 1000) -> MarketData:
    data = MarketData.new(BBB_USD, "log", recent)
    for i, (price, size, ts) in enumerate(trades):
        data.trade(trade_event(i, price, size, ts), log_seq=10 + i)  # entry 10 + i
    return data


def naive(trades: list[Raw], iv: int) -> list[tuple[int, ...]]:
    """Rows `(open_ns, open, high, low, close, base, quote, count)` by grouping."""
    groups: dict[int, list[Raw]] = {}
    for t in trades:
        groups.setdefault(t[2] // iv * iv, []).append(t)
    rows = []
    for start in sorted(groups):
        g = groups[start]
        prices = [p for p, _, _ in g]
        rows.append(
            (
                start,
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                sum(s for _, s, _ in g),
                sum(p * s for p, s, _ in g),
                len(g),
            )
        )
    return rows


def rows_of(c: Candles, name: str) -> list[tuple[int, ...]]:
    return [
        (x.open_time, x.open, x.high, x.low, x.close, x.base, x.quote, x.count)
        for x in c.series[name]
    ]


def rendered(row: tuple[int, ...]) -> list[Any]:
    start, o, h, lo, c, base, quote, n = row
    prices = [text(x, TICK) for x in (o, h, lo, c)]
    return [start // 10**6, *prices, text(base, LOT), text(quote, TICK * LOT), n]


@SETTINGS
@given(trade_lists())
def test_candles_equal_the_trades_grouped_by_utc_interval(trades: list[Raw]) -> None:
    data = feed(trades)
    for name, iv in INTERVALS.items():
        expected = naive(trades, iv)
        assert rows_of(data.candles, name) == expected, name
        assert all(r[0] % iv == 0 for r in expected)
        assert data.candles_view(name, None, None, 10**6) == [rendered(r) for r in expected]


@SETTINGS
@given(trade_lists(), st.integers(0, 2 * DAY_NS), st.integers(0, 4 * DAY_NS), st.data())
def test_ticker_equals_the_last_24_hours_of_trades(
    trades: list[Raw], after: int, prune_before: int, data_: st.DataObject
) -> None:
    data = feed(trades)
    now = (trades[-1][2] if trades else 20_000 * DAY_NS) + after
    if trades and data_.draw(st.booleans(), label="at a trade's window edge"):
        # a trade in the first minute of the window, or just out of it
        ts = data_.draw(st.sampled_from(trades), label="edge trade")[2]
        now = max(now - after, ts + DAY_NS + data_.draw(st.integers(-MIN, 2 * MIN), label="off"))
        after = now - trades[-1][2]
    since = (now - DAY_NS) // MIN * MIN  # the window counts whole minutes
    if prune_before <= after:  # pruning at an earlier time changes nothing the ticker shows
        data.prune(now - prune_before)
    window = [t for t in trades if t[2] >= since]
    got = data.ticker_view(now)
    last = trades[-1][0] if trades else None
    first = window[0][0] if window else None
    assert got == {
        "market": BBB_USD.market,
        "status": "active",
        "last": None if last is None else text(last, TICK),
        "open": None if first is None else text(first, TICK),
        "high": text(max(p for p, _, _ in window), TICK) if window else None,
        "low": text(min(p for p, _, _ in window), TICK) if window else None,
        "change": None if first is None or last is None else text(last - first, TICK),
        "base_volume": text(sum(s for _, s, _ in window), LOT),
        "quote_volume": text(sum(p * s for p, s, _ in window), TICK * LOT),
        "trades": len(window),
        "best_bid": None,
        "best_bid_size": None,
        "best_ask": None,
        "best_ask_size": None,
    }


@SETTINGS
@given(trade_lists(), st.integers(0, 3 * DAY_NS), st.integers(1, 30), st.data())
def test_prune_query_and_the_oldest_entry_needed(
    trades: list[Raw], after: int, recent: int, data: st.DataObject
) -> None:
    md = feed(trades, recent)
    now = (trades[-1][2] if trades else 20_000 * DAY_NS) + after
    if trades and data.draw(st.booleans(), label="at a candle's edge"):
        # 24 hours after a trade's candle closed, give or take a little: kept or just pruned
        ts = data.draw(st.sampled_from(trades), label="edge trade")[2]
        iv = data.draw(st.sampled_from(list(INTERVALS.values())), label="edge interval")
        off = data.draw(st.integers(-2, 2), label="off")
        now = max(trades[-1][2], ts // iv * iv + iv + DAY_NS + off)
    md.prune(now)
    kept_from: dict[str, int] = {}
    for name, iv in INTERVALS.items():
        since = (now - DAY_NS) // iv * iv
        expected = [r for r in naive(trades, iv) if r[0] >= since]
        assert rows_of(md.candles, name) == expected, name
        kept_from[name] = since
        # a query: the candles opened in [start, end], the first `limit` from start, else the last
        start = data.draw(st.none() | st.integers(0, now // 10**6), label="start")
        end = data.draw(st.none() | st.integers(0, now // 10**6), label="end")
        limit = data.draw(st.integers(1, 50), label="limit")
        inside = [
            r
            for r in expected
            if (start is None or r[0] // 10**6 >= start) and (end is None or r[0] // 10**6 <= end)
        ]
        want = inside[:limit] if start is not None else inside[-limit:]
        assert md.candles_view(name, start, end, limit) == [rendered(r) for r in want]
    # the oldest log entry a restart must read: the first trade of a kept candle or of the list
    needed = [
        10 + i
        for i, (_, _, ts) in enumerate(trades)
        if any(ts // iv * iv >= kept_from[n] for n, iv in INTERVALS.items())
    ]
    needed += [10 + i for i in range(len(trades))][-recent:]
    assert md.oldest_needed() == (min(needed) if needed else None)
    # and trades from that entry on rebuild exactly the candles kept
    again = MarketData.new(BBB_USD, "log", recent)
    for i, (price, size, ts) in enumerate(trades):
        if 10 + i >= (md.oldest_needed() or 10**9):
            again.trade(trade_event(i, price, size, ts), log_seq=10 + i)
    again.prune(now)
    for name in INTERVALS:
        assert rows_of(again.candles, name) == rows_of(md.candles, name)
    assert again.ticker_view(now) == md.ticker_view(now)


def test_an_interval_without_trades_has_no_candle_and_days_split_at_utc_midnight() -> None:
    midnight = 20_000 * DAY_NS
    trades = [
        (100, 1, midnight - 30 * SEC),
        (110, 2, midnight + 90 * SEC),
        (90, 3, midnight + 100 * SEC),
    ]
    md = feed(trades)
    assert [r[0] for r in md.candles_view("1m", None, None, 10)] == [
        (midnight - MIN) // 10**6,
        (midnight + MIN) // 10**6,  # the minute from midnight had no trade: no candle
    ]
    assert md.candles_view("1d", None, None, 10) == [
        [(midnight - DAY_NS) // 10**6, "4.00", "4.00", "4.00", "4.00", "0.5", "2.00", 1],
        [midnight // 10**6, "4.40", "4.40", "3.60", "3.60", "2.5", "9.80", 2],
    ]
