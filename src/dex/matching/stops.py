"""Stop orders and expiry: the parts of the engine that run when time or the last price moves.

A stop waits, untriggered, in its market's `stops` (acceptance order) until the last trade
price reaches its trigger; then it runs as a taker in the command that moved the price (a
cascade: one stop's trades may trigger the next). An order or stop with `expires_at` is in the
engine's expiry heap; every command first expires what is due at its `ts`. Mixed into `Engine`.
"""

from __future__ import annotations

from heapq import heappop, heappush

from dex.core.commands import SCHEMA_VERSION, InputRef, Place
from dex.core.enums import CancelReason, OrderType, Side
from dex.core.events import Event, Expired, Triggered
from dex.matching.book import Order, StopOrder
from dex.matching.market import MarketState, Ref
from dex.matching.state import _Core

V = SCHEMA_VERSION
BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
STOP_LIMIT = OrderType.STOP_LIMIT


class _Stops(_Core):
    def _add_stop(self, m: MarketState, cmd: Place, oid: int) -> None:
        stop = StopOrder(oid, cmd)
        m.stops[oid] = stop
        if cmd.client_order_id is not None:
            m.add_cid(cmd.client_order_id, stop)
        if m.counted:
            m.open_count[cmd.account] = m.open_count.get(cmd.account, 0) + 1
        if cmd.expires_at is not None:
            heappush(self.expiries, (cmd.expires_at, oid, m.symbol))

    def _triggers(
        self,
        m: MarketState,
        ref: Ref | None,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> None:
        """Trigger stops in acceptance order until none holds (a cascade)."""
        while m.stops and m.last:
            last = m.last
            for stop in m.stops.values():
                cmd = stop.cmd
                if last >= cmd.trigger_price if cmd.side is BUY else last <= cmd.trigger_price:
                    break
            else:
                return
            self._fire(m, stop, ref, events, ts, src)

    def _fire(
        self,
        m: MarketState,
        stop: StopOrder,
        ref: Ref | None,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> None:
        cmd = stop.cmd
        del m.stops[stop.oid]
        self._unindex(m, stop, cmd.account, cmd.client_order_id)
        m.seq += 1
        self.log_seq += 1
        events.append(
            Triggered(
                V,
                m.symbol,
                m.seq,
                ts,
                self.log_seq,
                src,
                stop.oid,
                cmd.client_order_id,
                cmd.account,
                cmd.side,
                cmd.trigger_price,
                m.last,
            )
        )
        is_buy = cmd.side is BUY
        kind = LIMIT if cmd.type is STOP_LIMIT else OrderType.MARKET
        order = Order(
            stop.oid,
            cmd.account,
            cmd.client_order_id,
            is_buy,
            cmd.price,
            cmd.size,
            0,
            0,
            0,
            cmd.expires_at or 0,
            cmd.stp,
            False,
        )
        if kind is LIMIT and ref is not None and m.outside_band(cmd.price, ref):
            self._finish(m, order, 0, CancelReason.PRICE_BAND, events, ts, src)
        else:
            self._take(m, order, kind, cmd, ref, events, ts, src)  # its expiry is scheduled

    # ------------------------------------------------------------------ expiry

    def _expire(self, ts: int, src: InputRef, events: list[Event]) -> None:
        heap = self.expiries
        while heap and heap[0][0] <= ts:
            expires_at, oid, symbol = heappop(heap)
            m = self.markets[symbol]
            order = m.orders.get(oid)
            if order is not None and order.expires_at == expires_at:
                left, filled = order.remaining, order.filled
                (m.bids if order.is_buy else m.asks).remove_lazy(order)
                del m.orders[oid]
                self._unindex(m, order, order.account, order.cid)
                account, cid, side = order.account, order.cid, order.is_buy
            else:
                stop = m.stops.get(oid)
                if stop is None or stop.cmd.expires_at != expires_at:
                    continue  # ended before it expired
                cmd = stop.cmd
                del m.stops[oid]
                self._unindex(m, stop, cmd.account, cmd.client_order_id)
                account, cid, side = cmd.account, cmd.client_order_id, cmd.side is BUY
                left, filled = cmd.size, 0
            m.seq += 1
            events.append(
                Expired(
                    V,
                    symbol,
                    m.seq,
                    ts,
                    self._next_log_seq(),
                    src,
                    oid,
                    cid,
                    account,
                    BUY if side else SELL,
                    left,
                    filled,
                )
            )
