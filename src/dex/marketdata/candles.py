"""Candles (OHLCV) of one market from its trades (pure: no I/O; time is given, never read).

For each interval of `INTERVALS` (1m, 5m, 15m, 1h, 4h, 1d), aligned to UTC (a candle opens
at a multiple of its interval since the Unix epoch, which is a UTC midnight): open, high, low,
close (ticks), base volume (lots), quote volume (`price x size`, ticks x lots) and the number
of trades. An interval without a trade has no candle. Each candle remembers the log entry of
its first trade (`log_seq`), so a caller knows from where a log must be read again to rebuild
it. `prune(now)` keeps, per interval, the candles from the one holding `now - 24 h` on.

Completeness: `complete_from[name]` is the open time (ns) from which every candle of `name`
holds every trade of the market: 0 for a builder that saw the market's whole history, `None`
(nothing known complete) for one that began in the middle (`began_late`) until its first
trade at `ts`, then the first interval opening after `ts` (a trade of the same ns may sit in
an entry it never read, so the interval holding `ts` is not trusted); `prune` raises it to
the oldest interval kept. A candle opened before it is partial or gone: a caller takes it
from elsewhere (market data asks persistence, `dex.marketdata.service`).

`build(trades)` is the same builder over a list of `(price, size, ts)` in trade order, and
`render` a candle's API row: persistence answers its candles with both, so its rows and
market data's agree to the character.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from dex.core.numbers import DAY_NS
from dex.marketdata.book import Precision

MINUTE_NS = 60_000_000_000
MS = 1_000_000  # nanoseconds in a millisecond
INTERVALS: dict[str, int] = {
    "1m": MINUTE_NS,
    "5m": 5 * MINUTE_NS,
    "15m": 15 * MINUTE_NS,
    "1h": 60 * MINUTE_NS,
    "4h": 240 * MINUTE_NS,
    "1d": DAY_NS,
}
MAX_CANDLES = 1500  # the most candles a query returns (a day of 1-minute candles fits)


class Candle:
    __slots__ = ("base", "close", "count", "high", "log_seq", "low", "open", "open_time", "quote")

    def __init__(self, open_time: int, price: int, log_seq: int) -> None:
        self.open_time = open_time  # ns since the epoch, a multiple of the interval
        self.open = self.high = self.low = self.close = price
        self.base = 0  # lots
        self.quote = 0  # ticks x lots
        self.count = 0
        self.log_seq = log_seq  # the log entry of its first trade

    def add(self, price: int, size: int, log_seq: int) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.base += size
        self.quote += price * size
        self.count += 1
        if log_seq < self.log_seq:
            self.log_seq = log_seq

    def row(self) -> tuple[int, int, int, int, int, int, int, int]:
        """`(open_time_ms, open, high, low, close, base, quote, trades)` in integers."""
        return (
            self.open_time // MS,
            self.open,
            self.high,
            self.low,
            self.close,
            self.base,
            self.quote,
            self.count,
        )


class Candles:
    """The candles of one market, per interval, oldest first."""

    def __init__(self) -> None:
        self.series: dict[str, list[Candle]] = {name: [] for name in INTERVALS}
        self._starts: dict[str, list[int]] = {name: [] for name in INTERVALS}
        self.complete_from: dict[str, int | None] = dict.fromkeys(INTERVALS, 0)

    def began_late(self) -> None:
        """This builder did not see the market's history from its start (a snapshot's market):
        no candle is complete until its first trade."""
        self.complete_from = dict.fromkeys(INTERVALS, None)

    def add(self, price: int, size: int, ts: int, log_seq: int) -> None:
        """One trade at `ts` (ns) found in log entry `log_seq`."""
        for name, iv in INTERVALS.items():
            if self.complete_from[name] is None:
                self.complete_from[name] = ts - ts % iv + iv
            start = ts - ts % iv
            rows = self.series[name]
            starts = self._starts[name]
            if rows and starts[-1] == start:
                rows[-1].add(price, size, log_seq)
            elif not rows or starts[-1] < start:
                c = Candle(start, price, log_seq)
                c.add(price, size, log_seq)
                rows.append(c)
                starts.append(start)
            else:  # an older time than the open candle's (not from one shard's clock)
                i = bisect_left(starts, start)
                if starts[i] == start:
                    rows[i].add(price, size, log_seq)
                else:
                    c = Candle(start, price, log_seq)
                    c.add(price, size, log_seq)
                    rows.insert(i, c)
                    starts.insert(i, start)

    def prune(self, now_ns: int) -> None:
        """Forget, per interval, the candles that closed before `now - 24 h`."""
        since = now_ns - DAY_NS
        for name, iv in INTERVALS.items():
            starts = self._starts[name]
            cut = since - since % iv
            floor = self.complete_from[name]
            if floor is not None and floor < cut:
                self.complete_from[name] = cut
            k = bisect_left(starts, cut)
            if k:
                del starts[:k]
                del self.series[name][:k]

    def oldest_log_seq(self) -> int | None:
        """The log entry of the oldest trade a kept candle holds, if any."""
        seqs = [c.log_seq for rows in self.series.values() for c in rows[:1]]
        return min(seqs) if seqs else None

    def at(self, name: str, open_time: int) -> Candle | None:
        """The candle of interval `name` opened at `open_time` (ns), if any."""
        starts = self._starts[name]
        i = bisect_left(starts, open_time)
        return self.series[name][i] if i < len(starts) and starts[i] == open_time else None

    def since(self, name: str, start_ns: int) -> list[Candle]:
        """The candles of interval `name` opened at or after `start_ns`, oldest first."""
        return self.series[name][bisect_left(self._starts[name], start_ns) :]

    def query(
        self, name: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[Candle]:
        """The candles of `name` opened in `[start_ms, end_ms]` (ms, both optional), oldest
        first: the first `limit` from `start_ms` if given, else the last `limit`."""
        starts = self._starts[name]
        lo = 0 if start_ms is None else bisect_left(starts, start_ms * MS)
        hi = len(starts) if end_ms is None else bisect_left(starts, end_ms * MS + 1)
        rows = self.series[name][lo:hi]
        return rows[:limit] if start_ms is not None else rows[max(0, len(rows) - limit) :]


def build(trades: Iterable[tuple[int, int, int]]) -> Candles:
    """The candles of `(price, size, ts)` trades given in trade order (never pruned)."""
    out = Candles()
    for price, size, ts in trades:
        out.add(price, size, ts, 0)
    return out


def render(c: Candle, fmt: Precision) -> list[Any]:
    """`[open_time_ms, open, high, low, close, base_volume, quote_volume, trades]`, prices and
    sizes as the market's decimal strings, the quote volume at `price x size` precision."""
    price = fmt.price.render
    return [
        c.open_time // MS,
        price(c.open),
        price(c.high),
        price(c.low),
        price(c.close),
        fmt.size.render(c.base),
        fmt.notional.render(c.quote),
        c.count,
    ]


__all__ = [
    "INTERVALS",
    "MAX_CANDLES",
    "MINUTE_NS",
    "MS",
    "Candle",
    "Candles",
    "build",
    "render",
]
