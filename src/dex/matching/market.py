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
        "checks_notional",
        "cids",
        "cids_more",
        "counted",
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
        # bools, so that the hot paths test them without a truth-value call
        self.counted = bool(params.max_open_orders)  # open orders per account are limited
        self.checks_notional = bool(params.min_notional_units)
        self.symbol = params.symbol
        self.status = status
        self.seq = 0
        self.trade_id = 0
        self.last = 0  # last trade price in ticks, 0 before the first trade
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self.orders: dict[int, Order] = {}  # resting orders by id
        self.stops: dict[int, StopOrder] = {}  # untriggered stops, in acceptance order
        # client order ids of open orders (resting or stops): a client id maps to one holder in
        # `cids`; when another account's order holds the same client id meanwhile, that one is
        # in `cids_more` under (account, client id). Keyed by the string alone, the common case
        # builds no tuple and never hashes the account.
        self.cids: dict[str, Order | StopOrder] = {}
        self.cids_more: dict[tuple[str, str], Order | StopOrder] = {}
        self.open_count: dict[str, int] = {}  # only kept when max_open_orders is set
        self.band_last = 0  # the last price band_lo / band_hi were computed for
        self.band_lo = 0
        self.band_hi = 0

    def cid_holder(self, account: str, cid: str) -> Order | StopOrder | None:
        """The open order of `account` with client order id `cid`, if any."""
        found = self.cids.get(cid)
        if found is not None and found.account == account:
            return found
        return self.cids_more.get((account, cid)) if self.cids_more else None

    def add_cid(self, cid: str, entry: Order | StopOrder) -> None:
        """Index a new open order by its client id (which its account does not hold yet)."""
        if self.cids.setdefault(cid, entry) is not entry:
            self.cids_more[(entry.account, cid)] = entry

    def drop_cid(self, cid: str, entry: Order | StopOrder) -> None:
        """Forget the client id of an open order that has ended."""
        found = self.cids.pop(cid, None)
        if found is not entry:
            self.cids_more_drop(cid, entry, found)

    def cids_more_drop(
        self, cid: str, entry: Order | StopOrder, popped: Order | StopOrder | None
    ) -> None:
        """`drop_cid` when `entry` is in `cids_more`: put back what was popped from `cids`."""
        if popped is not None:
            self.cids[cid] = popped
        del self.cids_more[(entry.account, cid)]

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
