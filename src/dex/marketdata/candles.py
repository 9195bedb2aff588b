"""Candles (OHLCV) of one market from its trades (pure: no I/O; time is given, never read).

For each interval of `INTERVALS` (1m, 5m, 15m, 1h, 4h, 1d), aligned to UTC (a candle opens
at a multiple of its interval since the Unix epoch, which is a UTC midnight): open, high, low,
close (ticks), base volume (lots), quote volume (`price x size`, ticks x lots) and the number
of trades. An interval without a trade has no candle. Each candle remembers the log entry of
its first trade (`log_seq`), so a caller knows from where a log must be read again to rebuild
it. `prune(now)` keeps, per interval, the candles from the one holding `now - 24 h` on.
"""

from __future__ import annotations

from bisect import bisect_left

from dex.core.numbers import DAY_NS

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

    def add(self, price: int, size: int, ts: int, log_seq: int) -> None:
        """One trade at `ts` (ns) found in log entry `log_seq`."""
        for name, iv in INTERVALS.items():
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
            k = bisect_left(starts, since - since % iv)
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


__all__ = ["INTERVALS", "MINUTE_NS", "MS", "Candle", "Candles"]
