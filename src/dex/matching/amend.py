"""Amend and cancel of resting orders and stops (the fast path of a cancel by order id is in
`Engine.apply`; every other cancel comes here). Mixed into `Engine`.
"""

from __future__ import annotations

from dex.core.commands import SCHEMA_VERSION, Amend, Cancel, CancelAll, InputRef, Place
from dex.core.enums import CancelReason, MarketStatus, OrderType, Side, TimeInForce
from dex.core.errors import RejectCode
from dex.core.events import Amended, AmendRejected, Cancelled, Event
from dex.matching.book import Order, StopOrder
from dex.matching.market import MarketState
from dex.matching.state import _Core

V = SCHEMA_VERSION
BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
GTC = TimeInForce.GTC
GTD = TimeInForce.GTD
ACTIVE = MarketStatus.ACTIVE
HALTED = MarketStatus.HALTED


class _Amends(_Core):
    def _lookup(self, m: MarketState, cmd: Amend | Cancel) -> Order | StopOrder | None:
        found: Order | StopOrder | None
        if cmd.order_id is not None:
            found = m.orders.get(cmd.order_id) or m.stops.get(cmd.order_id)
        else:
            found = m.cid_holder(cmd.account, cmd.client_order_id or "")
        if found is None or found.account != cmd.account:
            return None
        return found

    def _cancel_one(
        self,
        m: MarketState,
        found: Order | StopOrder,
        reason: CancelReason,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> None:
        if isinstance(found, StopOrder):
            cmd = found.cmd
            del m.stops[found.oid]
            self._unindex(m, found, cmd.account, cmd.client_order_id)
            m.seq += 1
            events.append(
                Cancelled(
                    V,
                    m.symbol,
                    m.seq,
                    ts,
                    self._next_log_seq(),
                    src,
                    found.oid,
                    cmd.client_order_id,
                    cmd.account,
                    cmd.side,
                    cmd.size or None,
                    cmd.quote_size or None,
                    0,
                    reason,
                )
            )
            return
        left = found.remaining
        (m.bids if found.is_buy else m.asks).remove_lazy(found)
        del m.orders[found.oid]
        self._unindex(m, found, found.account, found.cid)
        m.seq += 1
        events.append(
            Cancelled(
                V,
                m.symbol,
                m.seq,
                ts,
                self._next_log_seq(),
                src,
                found.oid,
                found.cid,
                found.account,
                BUY if found.is_buy else SELL,
                left,
                None,
                found.filled,
                reason,
            )
        )

    def _cancel_all(self, cmd: CancelAll, src: InputRef) -> list[Event]:
        markets = [self._market(cmd.market)] if cmd.market is not None else self.markets.values()
        ts = self._check_ts(cmd.ts)
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        account = cmd.account
        for m in markets:
            mine: list[Order | StopOrder] = [o for o in m.orders.values() if o.account == account]
            mine.extend(s for s in m.stops.values() if s.account == account)
            mine.sort(key=lambda o: o.oid)
            for found in mine:
                self._cancel_one(m, found, cmd.reason, events, ts, src)
        return events

    def _amend_rejected(
        self,
        m: MarketState,
        cmd: Amend,
        code: RejectCode,
        message: str,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> list[Event]:
        m.seq += 1
        events.append(
            AmendRejected(
                V,
                m.symbol,
                m.seq,
                ts,
                self._next_log_seq(),
                src,
                cmd.order_id,
                cmd.client_order_id,
                cmd.account,
                code,
                message,
            )
        )
        return events

    def _amend(self, cmd: Amend, src: InputRef) -> list[Event]:
        m = self._market(cmd.market)
        ts = self._check_ts(cmd.ts)
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        found = self._lookup(m, cmd)
        if found is None:
            return self._amend_rejected(
                m,
                cmd,
                RejectCode.UNKNOWN_ORDER,
                "no open order of this account with that id",
                events,
                ts,
                src,
            )
        if isinstance(found, StopOrder):
            return self._amend_rejected(
                m,
                cmd,
                RejectCode.NOT_AMENDABLE,
                "an untriggered stop order cannot be amended",
                events,
                ts,
                src,
            )
        if m.status is MarketStatus.CANCEL_ONLY or m.status is HALTED:
            return self._amend_rejected(
                m,
                cmd,
                RejectCode.MARKET_STATUS,
                f"market is {m.status}",
                events,
                ts,
                src,
            )
        order = found
        new_size = cmd.size or order.filled + order.remaining
        new_price = cmd.price or order.price
        side = m.bids if order.is_buy else m.asks
        if new_size <= order.filled:
            left = order.remaining
            side.remove_lazy(order)
            del m.orders[order.oid]
            self._unindex(m, order, order.account, order.cid)
            m.seq += 1
            events.append(
                Cancelled(
                    V,
                    m.symbol,
                    m.seq,
                    ts,
                    self._next_log_seq(),
                    src,
                    order.oid,
                    order.cid,
                    order.account,
                    BUY if order.is_buy else SELL,
                    left,
                    None,
                    order.filled,
                    CancelReason.AMEND,
                )
            )
            return events
        if new_price == order.price:
            return self._amend_in_place(m, order, new_size, events, ts, src)
        ref = m.ref()
        if ref is not None and m.outside_band(new_price, ref):
            return self._amend_rejected(
                m,
                cmd,
                RejectCode.OUTSIDE_PRICE_BAND,
                f"price is more than {m.params.band_bps} bps from the reference price",
                events,
                ts,
                src,
            )
        best = m.asks.best() if order.is_buy else m.bids.best()
        would_take = bool(best) and (new_price >= best if order.is_buy else new_price <= best)
        if would_take and order.post_only:
            return self._amend_rejected(
                m,
                cmd,
                RejectCode.POST_ONLY_WOULD_TAKE,
                "a post-only order would take liquidity",
                events,
                ts,
                src,
            )
        if would_take and m.status is not ACTIVE:
            return self._amend_rejected(
                m,
                cmd,
                RejectCode.MARKET_STATUS,
                f"market is {m.status}",
                events,
                ts,
                src,
            )
        side.remove_now(order)
        del m.orders[order.oid]
        self._unindex(m, order, order.account, order.cid)
        order.price = new_price
        order.remaining = new_size - order.filled
        if order.display:
            order.visible = min(order.display, order.remaining)
        m.seq += 1
        events.append(
            Amended(
                V,
                m.symbol,
                m.seq,
                ts,
                self._next_log_seq(),
                src,
                order.oid,
                order.cid,
                order.account,
                BUY if order.is_buy else SELL,
                new_price,
                new_size,
                order.remaining,
                False,
            )
        )
        last_before = m.last
        reentry = Place(
            market=m.symbol,
            account=order.account,
            side=BUY if order.is_buy else SELL,
            type=LIMIT,
            price=new_price,
            size=order.remaining,
            tif=GTD if order.expires_at else GTC,
            expires_at=order.expires_at or None,
            stp=order.stp,
        )
        self._take(m, order, LIMIT, reentry, ref, events, ts, src)
        if m.stops and m.last != last_before:
            self._triggers(m, ref, events, ts, src)
        return events

    def _amend_in_place(
        self,
        m: MarketState,
        order: Order,
        new_size: int,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> list[Event]:
        side = m.bids if order.is_buy else m.asks
        level = side.levels[order.price]
        new_remaining = new_size - order.filled
        grew = new_remaining > order.remaining
        order.remaining = new_remaining
        if grew:
            level.q.remove(order)
            level.q.append(order)
            if order.display:
                order.visible = min(order.display, new_remaining)
        elif order.display and order.visible > new_remaining:
            order.visible = new_remaining
        m.seq += 1
        events.append(
            Amended(
                V,
                m.symbol,
                m.seq,
                ts,
                self._next_log_seq(),
                src,
                order.oid,
                order.cid,
                order.account,
                BUY if order.is_buy else SELL,
                order.price,
                new_size,
                new_remaining,
                not grew,
            )
        )
        return events
