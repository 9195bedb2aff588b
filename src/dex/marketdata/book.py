"""The L2 book of one market, rebuilt from its matching events (pure: no I/O, no clock).

Tracks each open order's visible resting size by id, by the engine's own rules
(docs/matching-rules.md), so the book equals, level by level, the visible sizes of
`Engine.view`:
- `accepted` of a GTC/GTD limit order puts it in the book with its size (an iceberg shows
  `min(display_size, size)`); it then trades as the taker and, if something is left, stays.
  IOC/FOK and market orders never rest; stops wait aside until `triggered` (a stop_limit
  GTC/GTD then enters like a new limit order).
- `trade`: the maker's remaining is `maker_remaining`; an iceberg maker's visible part shrinks
  by the size and refills `min(display, remaining)` when used up; the taker's remaining is
  `taker_remaining` and, resting, it shows `min(display, remaining)`.
- `amended`: new price and remaining; a move to the back (`kept_priority` false) refills an
  iceberg's visible part, an in-place cut only trims it to the remaining.
- `filled` / `cancelled` / `expired` take the order out.

`seq` is the market's event sequence number (`seq` of the matching events) of the last event
the book reflects. Prices are ticks and sizes lots; `Precision` renders them as the market's
decimal strings, and `checksum` is the feed's CRC32 over the top 25 levels of those strings.
"""

from __future__ import annotations

import zlib

from dex.core import events as me
from dex.core.commands import Place
from dex.core.enums import OrderType, Side, TimeInForce
from dex.core.markets import MarketSpec
from dex.core.numbers import Scale, parse_decimal
from dex.matching.market import MarketState

CHECKSUM_LEVELS = 25
_RESTING_TIF = (TimeInForce.GTC, TimeInForce.GTD)

Level = tuple[int, int]  # (price ticks, size lots)
TextLevel = list[str]  # [price, size] as decimal strings


class Precision:
    """A market's integers as decimal strings: prices (ticks), sizes (lots) and quote amounts
    counted in `price x size` (ticks x lots, so an amount is exact at the market's steps)."""

    __slots__ = ("lot", "notional", "price", "size", "tick")

    def __init__(self, spec: MarketSpec) -> None:
        self.tick = parse_decimal(spec.tick_size, "tick_size")
        self.lot = parse_decimal(spec.lot_size, "lot_size")
        self.price = Scale(self.tick)
        self.size = Scale(self.lot)
        self.notional = Scale(self.tick * self.lot)

    def level(self, level: Level) -> TextLevel:
        return [self.price.render(level[0]), self.size.render(level[1])]


def checksum(bids: list[TextLevel], asks: list[TextLevel]) -> int:
    """Unsigned CRC32 of the top 25 levels: for i = 0..24 the i-th bid then the i-th ask where
    they exist, each as `price:size` (the decimal strings as sent), all joined by `:`."""
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF


class _Order:
    """An open order's place in the L2 book."""

    __slots__ = ("display", "is_buy", "price", "remaining", "visible")

    def __init__(self, is_buy: bool, price: int, remaining: int, visible: int, display: int):
        self.is_buy = is_buy
        self.price = price
        self.remaining = remaining
        self.visible = visible
        self.display = display


class L2Book:
    """One market's L2 book: price -> visible lots on each side, at the market's event `seq`."""

    def __init__(self, spec: MarketSpec) -> None:
        self.symbol = spec.market
        self.status = spec.status
        self.bids: dict[int, int] = {}  # price -> visible lots
        self.asks: dict[int, int] = {}
        self.orders: dict[int, _Order] = {}
        self.stops: dict[int, Place] = {}
        self.seq = 0  # the market's event seq of the last event applied
        self.last_price = 0  # ticks, 0 before the first trade
        # (is_buy, price) of every level changed since the caller set an empty set here
        self.touched: set[tuple[bool, int]] | None = None

    @classmethod
    def from_engine(cls, m: MarketState) -> L2Book:
        """The book of a market as an (e.g. restored) engine holds it."""
        book = cls(m.params.spec)
        book.status = m.status
        book.last_price = m.last
        book.seq = m.seq
        for oid, o in m.orders.items():
            visible = o.visible if o.display else o.remaining
            book._add(oid, _Order(o.is_buy, o.price, o.remaining, visible, o.display))
        for oid, stop in m.stops.items():
            book.stops[oid] = stop.cmd
        return book

    # ------------------------------------------------------------------ upkeep

    def _level(self, is_buy: bool, price: int, delta: int) -> None:
        side = self.bids if is_buy else self.asks
        if self.touched is not None:
            self.touched.add((is_buy, price))
        total = side.get(price, 0) + delta
        if total:
            side[price] = total
        else:
            del side[price]

    def _add(self, oid: int, o: _Order) -> None:
        self.orders[oid] = o
        if o.visible:
            self._level(o.is_buy, o.price, o.visible)

    def _remove(self, oid: int) -> None:
        o = self.orders.pop(oid, None)
        if o is not None and o.visible:
            self._level(o.is_buy, o.price, -o.visible)
        self.stops.pop(oid, None)

    def _set(self, o: _Order, price: int, remaining: int, visible: int) -> None:
        if o.visible:
            self._level(o.is_buy, o.price, -o.visible)
        o.price, o.remaining, o.visible = price, remaining, visible
        if visible:
            self._level(o.is_buy, price, visible)

    def _enter(self, oid: int, cmd: Place) -> None:
        """A limit order that may rest: in the book at its full size until trades say more."""
        display = cmd.display_size
        visible = min(display, cmd.size) if display else cmd.size
        self._add(oid, _Order(cmd.side is Side.BUY, cmd.price, cmd.size, visible, display))

    # ------------------------------------------------------------------ events

    def apply(self, ev: me.Event) -> None:
        """Apply one matching event of this market."""
        self.seq = ev.seq
        if isinstance(ev, me.Trade):
            self._trade(ev)
        elif isinstance(ev, me.Accepted):
            order = ev.order
            if order.type is OrderType.LIMIT:
                if order.tif in _RESTING_TIF:
                    self._enter(ev.order_id, order)
            elif order.type in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET):
                self.stops[ev.order_id] = order
        elif isinstance(ev, (me.Filled, me.Cancelled, me.Expired)):
            self._remove(ev.order_id)
        elif isinstance(ev, me.Amended):
            o = self.orders.get(ev.order_id)
            if o is not None:
                rem = ev.remaining
                if not o.display:
                    visible = rem
                elif ev.kept_priority:
                    visible = min(o.visible, rem)
                else:
                    visible = min(o.display, rem)
                self._set(o, ev.price, rem, visible)
        elif isinstance(ev, me.Triggered):
            stop = self.stops.pop(ev.order_id, None)
            if stop is not None and stop.type is OrderType.STOP_LIMIT and stop.tif in _RESTING_TIF:
                self._enter(ev.order_id, stop)
        elif isinstance(ev, me.MarketStatusChanged):
            self.status = ev.status

    def _trade(self, ev: me.Trade) -> None:
        self.last_price = ev.price
        maker = self.orders.get(ev.maker_order_id)
        if maker is not None:
            rem = ev.maker_remaining
            if not rem:
                self._remove(ev.maker_order_id)
            elif maker.display:
                visible = maker.visible - ev.size
                if visible <= 0:
                    visible = min(maker.display, rem)
                self._set(maker, maker.price, rem, visible)
            else:
                self._set(maker, maker.price, rem, rem)
        taker = self.orders.get(ev.taker_order_id)
        if taker is not None and ev.taker_remaining is not None:
            rem = ev.taker_remaining
            if not rem:
                self._remove(ev.taker_order_id)
            else:
                visible = min(taker.display, rem) if taker.display else rem
                self._set(taker, taker.price, rem, visible)

    # ------------------------------------------------------------------ views

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """The best `depth` levels of each side: bids highest first, asks lowest first."""
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        asks = sorted(self.asks.items())[:depth]
        return bids, asks

    def best_bid(self) -> Level | None:
        if not self.bids:
            return None
        p = max(self.bids)
        return p, self.bids[p]

    def best_ask(self) -> Level | None:
        if not self.asks:
            return None
        p = min(self.asks)
        return p, self.asks[p]

    def snapshot(self, depth: int, fmt: Precision) -> dict[str, object]:
        """`{"market", "seq", "bids", "asks", "checksum"}`: `depth` levels a side as decimal
        strings; the checksum covers the top 25 levels whatever `depth` is."""
        bids, asks = self.top(max(depth, CHECKSUM_LEVELS))
        tb = [fmt.level(x) for x in bids]
        ta = [fmt.level(x) for x in asks]
        return {
            "market": self.symbol,
            "seq": self.seq,
            "bids": tb[:depth],
            "asks": ta[:depth],
            "checksum": checksum(tb, ta),
        }


__all__ = ["CHECKSUM_LEVELS", "L2Book", "Level", "Precision", "TextLevel", "checksum"]
