"""The rolling 24-hour ticker of one market (pure: no I/O; time is given, never read).

Figures over the 1-minute candles opened at or after the minute holding `now - 24 h` (so
the window counts whole minutes): open (the first trade's price in the window), high, low,
base and quote volume, number of trades; with the last trade price ever (`last`),
`change = last - open`, and the best bid and ask with their sizes from the L2 book. With no
trade in the window, open, high, low and change are None and the volumes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from dex.core.numbers import DAY_NS
from dex.marketdata.candles import MINUTE_NS, Candle


@dataclass(frozen=True, slots=True)
class Figures:
    """The 24-hour figures in integers: prices ticks, base lots, quote ticks x lots."""

    open: int | None
    high: int | None
    low: int | None
    base: int
    quote: int
    count: int


def window_start(now_ns: int) -> int:
    """The open time of the first minute in the 24 hours before `now_ns`."""
    since = now_ns - DAY_NS
    return since - since % MINUTE_NS


def rolling(minutes: list[Candle]) -> Figures:
    """The figures of the 1-minute candles of the window (oldest first)."""
    if not minutes:
        return Figures(None, None, None, 0, 0, 0)
    return Figures(
        open=minutes[0].open,
        high=max(c.high for c in minutes),
        low=min(c.low for c in minutes),
        base=sum(c.base for c in minutes),
        quote=sum(c.quote for c in minutes),
        count=sum(c.count for c in minutes),
    )


__all__ = ["Figures", "rolling", "window_start"]
