"""The WebSocket feed's messages and the relay's copy of a book (pure: no I/O, no clock).

`FeedBook` is a market's L2 book as the feed carries it (price ticks -> lots per side, at the
market's `seq`), started from market data's snapshot and moved by `FeedUpdate`s, each applied
only on top of the book at its `prev_seq`. The `*_message` functions build the client
messages of docs/feed.md as plain values: prices and sizes as the market's decimal strings
(`Precision`), `checksum` the unsigned CRC32 of the top 25 levels (`book.checksum`).
"""

from __future__ import annotations

import heapq
from typing import Any

from dex.marketdata.book import CHECKSUM_LEVELS, Precision, checksum
from dex.marketdata.candles import MS
from dex.marketdata.market import render_ticker
from dex.wire.feed import FeedCandle, FeedTicker, FeedUpdate, Level


class FeedBook:
    """One market's full L2 book at `seq`, from a snapshot and the updates after it."""

    __slots__ = ("asks", "bids", "market", "seq")

    def __init__(self, market: str, seq: int, bids: list[Level], asks: list[Level]) -> None:
        self.market = market
        self.seq = seq
        self.bids: dict[int, int] = {p: n for p, n in bids if n}
        self.asks: dict[int, int] = {p: n for p, n in asks if n}

    def apply(self, u: FeedUpdate) -> None:
        """Apply `u`; the caller has checked `u.prev_seq == self.seq`."""
        for side, levels in ((self.bids, u.bids), (self.asks, u.asks)):
            for p, n in levels:
                if n:
                    side[p] = n
                else:
                    side.pop(p, None)
        self.seq = u.seq

    def checksum(self, fmt: Precision) -> int:
        bids = heapq.nlargest(CHECKSUM_LEVELS, self.bids.items())
        asks = heapq.nsmallest(CHECKSUM_LEVELS, self.asks.items())
        return checksum([fmt.level(x) for x in bids], [fmt.level(x) for x in asks])

    def snapshot_message(self, fmt: Precision) -> dict[str, Any]:
        """`{"type": "snapshot", "channel": "book", ...}`: every level, best first."""
        bids = [fmt.level(x) for x in sorted(self.bids.items(), reverse=True)]
        asks = [fmt.level(x) for x in sorted(self.asks.items())]
        return {
            "type": "snapshot",
            "channel": "book",
            "market": self.market,
            "seq": self.seq,
            "bids": bids,
            "asks": asks,
            "checksum": checksum(bids, asks),
        }


def update_message(u: FeedUpdate, book: FeedBook, fmt: Precision) -> dict[str, Any]:
    """The book update for `u`, once `book` has applied it (its checksum is the new book's)."""
    return {
        "type": "update",
        "channel": "book",
        "market": u.market,
        "prev_seq": u.prev_seq,
        "seq": u.seq,
        "bids": [fmt.level(x) for x in u.bids],
        "asks": [fmt.level(x) for x in u.asks],
        "checksum": book.checksum(fmt),
    }


def trades_message(u: FeedUpdate, fmt: Precision) -> dict[str, Any]:
    price, size = fmt.price.render, fmt.size.render
    return {
        "type": "update",
        "channel": "trades",
        "market": u.market,
        "seq": u.seq,
        "trades": [
            {
                "trade_id": t.trade_id,
                "price": price(t.price),
                "size": size(t.size),
                "taker_side": t.taker_side,
                "time_ms": t.ts // MS,
            }
            for t in u.trades
        ],
    }


def candle_message(market: str, c: FeedCandle, fmt: Precision) -> dict[str, Any]:
    """A candle row as `GET /candles` gives it, under its interval."""
    price = fmt.price.render
    return {
        "type": "update",
        "channel": "candles",
        "market": market,
        "interval": c.interval,
        "candle": [
            c.open_time // MS,
            price(c.open),
            price(c.high),
            price(c.low),
            price(c.close),
            fmt.size.render(c.base),
            fmt.notional.render(c.quote),
            c.count,
        ],
    }


def ticker_message(t: FeedTicker, fmt: Precision) -> dict[str, Any]:
    return {"type": "update", "channel": "ticker", **render_ticker(t, fmt), "seq": t.seq}


__all__ = [
    "FeedBook",
    "candle_message",
    "ticker_message",
    "trades_message",
    "update_message",
]
