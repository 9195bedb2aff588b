"""One market's public state, from its matching events (pure: no I/O; time is given).

`MarketData` holds the L2 book (`book.L2Book`), the last `recent_trades` trades, the candles
(`candles.Candles`) and, from the 1-minute candles, the 24-hour ticker (`ticker`). Inside,
everything is integers (ticks, lots, ticks x lots, nanoseconds); the `*_view` methods render
the answers of the API, prices and sizes as the market's decimal strings (`book.Precision`).

Each trade remembers the log entry it came in (`log_seq`): `oldest_needed` is the oldest
entry a restart must read again to rebuild the trades, candles and ticker kept.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from dex.core import events as me
from dex.core.markets import MarketSpec
from dex.marketdata.book import L2Book, Precision
from dex.marketdata.candles import INTERVALS, MS, Candles, render
from dex.marketdata.ticker import rolling, window_start
from dex.matching.market import MarketState
from dex.wire.feed import FeedCandle, FeedTicker


def render_ticker(t: FeedTicker, fmt: Precision) -> dict[str, Any]:
    """The ticker's API view (`GET /ticker`, the feed's ticker message): decimal strings."""
    price, size = fmt.price.render, fmt.size.render

    def opt(v: int | None) -> str | None:
        return None if v is None else price(v)

    bid, ask, last = t.best_bid, t.best_ask, t.last
    return {
        "market": t.market,
        "status": t.status,
        "last": opt(last),
        "open": opt(t.open),
        "high": opt(t.high),
        "low": opt(t.low),
        "change": None if t.open is None or last is None else price(last - t.open),
        "base_volume": size(t.base),
        "quote_volume": fmt.notional.render(t.quote),
        "trades": t.count,
        "best_bid": None if bid is None else price(bid[0]),
        "best_bid_size": None if bid is None else size(bid[1]),
        "best_ask": None if ask is None else price(ask[0]),
        "best_ask_size": None if ask is None else size(ask[1]),
    }


class Trade:
    __slots__ = ("log_seq", "price", "size", "taker_side", "trade_id", "ts")

    def __init__(self, ev: me.Trade, log_seq: int) -> None:
        self.trade_id = ev.trade_id
        self.price = ev.price
        self.size = ev.size
        self.taker_side = str(ev.aggressor)
        self.ts = ev.ts
        self.log_seq = log_seq


class MarketData:
    """One market: L2 book, the last `recent_trades` trades, candles and the ticker."""

    def __init__(self, book: L2Book, spec: MarketSpec, stream: str, recent_trades: int) -> None:
        self.symbol = spec.market
        self.stream = stream  # the matching log this market is on
        self.fmt = Precision(spec)
        self.book = book
        self.trades: deque[Trade] = deque(maxlen=recent_trades)
        self.candles = Candles()

    @classmethod
    def new(cls, spec: MarketSpec, stream: str, recent_trades: int) -> MarketData:
        return cls(L2Book(spec), spec, stream, recent_trades)

    @classmethod
    def from_engine(cls, m: MarketState, stream: str, recent_trades: int) -> MarketData:
        return cls(L2Book.from_engine(m), m.params.spec, stream, recent_trades)

    # ------------------------------------------------------------------ events

    def apply(self, ev: me.Event, log_seq: int) -> None:
        """One matching event of this market, from log entry `log_seq`."""
        self.book.apply(ev)
        if isinstance(ev, me.Trade):
            self.trade(ev, log_seq)

    def trade(self, ev: me.Trade, log_seq: int) -> None:
        """Record a trade for the trade list, the candles and the ticker (not the book)."""
        self.book.last_price = ev.price
        self.trades.append(Trade(ev, log_seq))
        self.candles.add(ev.price, ev.size, ev.ts, log_seq)

    def prune(self, now_ns: int) -> None:
        self.candles.prune(now_ns)

    def oldest_needed(self) -> int | None:
        """The log entry of the oldest trade still kept (list, candles or ticker), if any."""
        seqs = [self.trades[0].log_seq] if self.trades else []
        oldest = self.candles.oldest_log_seq()
        if oldest is not None:
            seqs.append(oldest)
        return min(seqs) if seqs else None

    # ------------------------------------------------------------------ views

    def book_view(self, depth: int) -> dict[str, Any]:
        return self.book.snapshot(depth, self.fmt)

    def trades_view(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` trades, newest first."""
        price, size = self.fmt.price.render, self.fmt.size.render
        out: list[dict[str, Any]] = []
        for t in reversed(self.trades):
            if len(out) >= limit:
                break
            out.append(
                {
                    "trade_id": t.trade_id,
                    "price": price(t.price),
                    "size": size(t.size),
                    "taker_side": t.taker_side,
                    "time_ms": t.ts // MS,
                }
            )
        return out

    def ticker_entry(self, now_ns: int) -> FeedTicker:
        """The 24-hour ticker in integers (what the feed carries)."""
        f = rolling(self.candles.since("1m", window_start(now_ns)))
        book = self.book
        return FeedTicker(
            market=self.symbol,
            seq=book.seq,
            status=str(book.status),
            last=book.last_price or None,
            open=f.open,
            high=f.high,
            low=f.low,
            base=f.base,
            quote=f.quote,
            count=f.count,
            best_bid=book.best_bid(),
            best_ask=book.best_ask(),
        )

    def ticker_view(self, now_ns: int) -> dict[str, Any]:
        return render_ticker(self.ticker_entry(now_ns), self.fmt)

    def changed_candles(self, trades: list[me.Trade]) -> list[FeedCandle]:
        """The candles (every interval) holding `trades`, as they are now."""
        out: list[FeedCandle] = []
        for name, iv in INTERVALS.items():
            seen: set[int] = set()
            for t in trades:
                start = t.ts - t.ts % iv
                if start in seen:
                    continue
                seen.add(start)
                c = self.candles.at(name, start)
                if c is not None:
                    out.append(
                        FeedCandle(
                            name,
                            c.open_time,
                            c.open,
                            c.high,
                            c.low,
                            c.close,
                            c.base,
                            c.quote,
                            c.count,
                        )
                    )
        return out

    def candles_view(
        self, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[Any]]:
        """Rows `[open_time_ms, open, high, low, close, base_volume, quote_volume, trades]`."""
        return [render(c, self.fmt) for c in self.candles.query(interval, start_ms, end_ms, limit)]


__all__ = ["MarketData", "Trade", "render_ticker"]
