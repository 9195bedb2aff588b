"""One market's state inside the engine: its book, stops, indexes and counters.

The price band is evaluated in exact integers: the reference price is a fraction `(num, den)`
with `den` 1 (last trade) or 2 (mid of a two-sided book).
"""

from __future__ import annotations

from dex.core.enums import MarketStatus
from dex.core.markets import MarketParams
from dex.matching.book import BookSide, Order, StopOrder

Ref = tuple[int, int]


class MarketState:
    __slots__ = (
        "asks",
        "band_hi",
        "band_last",
        "band_lo",
        "bids",
        "cids",
        "last",
        "open_count",
        "orders",
        "params",
        "seq",
        "status",
        "stops",
        "symbol",
        "trade_id",
    )

    def __init__(self, params: MarketParams, status: MarketStatus) -> None:
        self.params = params
        self.symbol = params.symbol
        self.status = status
        self.seq = 0
        self.trade_id = 0
        self.last = 0  # last trade price in ticks, 0 before the first trade
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self.orders: dict[int, Order] = {}  # resting orders by id
        self.stops: dict[int, StopOrder] = {}  # untriggered stops, in acceptance order
        self.cids: dict[tuple[str, str], Order | StopOrder] = {}  # (account, client id)
        self.open_count: dict[str, int] = {}  # only kept when max_open_orders is set
        self.band_last = 0  # the last price band_lo / band_hi were computed for
        self.band_lo = 0
        self.band_hi = 0

    def set_band(self, last: int) -> None:
        """Cache the prices a limit order may have while the reference is `last`."""
        band = self.params.band_bps
        self.band_last = last
        self.band_lo = -(-last * (10_000 - band) // 10_000)  # |p - r| * 10^4 <= band * r
        self.band_hi = last * (10_000 + band) // 10_000

    def ref(self) -> Ref | None:
        """Reference price for the band: last trade, else the mid of a two-sided book."""
        if self.last:
            return (self.last, 1)
        bid = self.bids.best()
        ask = self.asks.best()
        if bid and ask:
            return (bid + ask, 2)
        return None

    def outside_band(self, price: int, ref: Ref) -> bool:
        num, den = ref
        return abs(price * den - num) * 10_000 > self.params.band_bps * num

    def band_cap(self, is_buy: bool, ref: Ref) -> int:
        """Worst price a market order may reach (0: no limit)."""
        num, den = ref
        band = self.params.band_bps
        if is_buy:
            return num * (10_000 + band) // (den * 10_000)
        floor = -(-num * (10_000 - band) // (den * 10_000))
        return floor if floor > 0 else 0
