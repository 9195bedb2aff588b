"""The entries of a market's public feed stream (`layout.md_feed`), pure like `codec`.

Market data appends, per matching log entry that carries events of a market, one `FeedUpdate`
to that market's feed: the market's event seq before (`prev_seq`) and after (`seq`) the entry,
the book levels the entry changed with their new visible size (0: the level is gone), the
trades it made and the candles those trades changed. `prev_seq` and `seq` come from the
matching log, so every market-data replica (and a restarted one) publishes the same updates;
a reader applies an update only on top of the book at `prev_seq` and drops one it has seen
(`seq` not above its own). A marker (`prev_seq == seq`, nothing else) says where a restarted
market data's book starts. A `FeedTicker` (the 24-hour figures, at most every 100 ms per
market) is not sequenced. Everything is integers: prices in ticks, sizes in lots, quote
volumes in ticks x lots, times in nanoseconds.
"""

from __future__ import annotations

import msgspec

from dex.wire.codec import BadEntry

Level = tuple[int, int]  # (price ticks, size lots); size 0 removes the level


class FeedTrade(msgspec.Struct, frozen=True, array_like=True, gc=False):
    trade_id: int
    price: int
    size: int
    taker_side: str
    ts: int


class FeedCandle(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A candle as it is after the entry: `open_time` ns, prices ticks, base lots, quote
    ticks x lots, `count` trades."""

    interval: str
    open_time: int
    open: int
    high: int
    low: int
    close: int
    base: int
    quote: int
    count: int


class FeedUpdate(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="u"):
    market: str
    prev_seq: int
    seq: int
    bids: list[Level]
    asks: list[Level]
    trades: list[FeedTrade]
    candles: list[FeedCandle]


class FeedTicker(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="t"):
    """The 24-hour ticker's figures when market data published it (at the book's `seq`)."""

    market: str
    seq: int
    status: str
    last: int | None
    open: int | None
    high: int | None
    low: int | None
    base: int
    quote: int
    count: int
    best_bid: Level | None
    best_ask: Level | None


FeedEntry = FeedUpdate | FeedTicker

_enc = msgspec.msgpack.Encoder()
encode_feed = _enc.encode
_dec = msgspec.msgpack.Decoder(FeedEntry)


def decode_feed(data: bytes) -> FeedEntry:
    try:
        entry: FeedEntry = _dec.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as e:
        raise BadEntry(f"not a feed entry: {e}") from None
    return entry


__all__ = [
    "FeedCandle",
    "FeedEntry",
    "FeedTicker",
    "FeedTrade",
    "FeedUpdate",
    "Level",
    "decode_feed",
    "encode_feed",
]
