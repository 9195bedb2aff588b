"""Settlement: the matching engine's events applied to this shard's accounts.

For each trade the shard applies only the sides whose order ids are in its id space
(`order_id >> 40 == shard`); the other risk shard applies the other side from the same event.
A fill moves the paid asset out of the hold and credits the received asset less the fee,
`ceil(received * bps / 10,000)` (a negative rate is a rebate, paid from this shard's fee
account); a buy held at a per-lot price above the trade price gets the difference back. On an
order's terminal event whatever it still holds is released, so a finished order holds zero.
Every trade updates the market's last price, the reference for protection prices.

Cost: O(1) per event, plus the self-check of the accounts touched (O(their open orders)).
"""

from __future__ import annotations

from dex.core.commands import InputRef
from dex.core.enums import ORDER_TRANSITIONS, OrderStatus, OrderType, Side
from dex.core.errors import CommandError
from dex.core.events import (
    Accepted,
    Amended,
    AmendRejected,
    Cancelled,
    Expired,
    Filled,
    MarketStatusChanged,
    Rejected,
    Trade,
    Triggered,
)
from dex.risk.codes import ReleaseCause
from dex.risk.events import FundsReleased, RiskEvent, Settlement, TradeSettled
from dex.risk.state import SCHEMA_VERSION, MarketInfo, Order, _Core

V = SCHEMA_VERSION
BUY = Side.BUY
SELL = Side.SELL
FILLED = OrderStatus.FILLED
CANCELLED = OrderStatus.CANCELLED
EXPIRED = OrderStatus.EXPIRED
REJECTED = OrderStatus.REJECTED
OPEN = OrderStatus.OPEN
UNTRIGGERED = OrderStatus.UNTRIGGERED
_STOPS = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
_MOVES = ORDER_TRANSITIONS
_CAUSE = {s: ReleaseCause(s.value) for s in (FILLED, CANCELLED, EXPIRED, REJECTED)}


class _Settlement(_Core):
    __slots__ = ()

    def _own(self, oid: int, field: str) -> Order:
        o = self.orders.get(oid)
        if o is None:
            raise CommandError(field, f"order {oid} of risk shard {self.shard} is not open")
        return o

    def _on_trade(self, e: Trade, src: InputRef, ts: int) -> list[RiskEvent]:
        try:
            m = self.markets[e.market]
        except KeyError:
            raise CommandError("market", f"unknown market {e.market!r}") from None
        shard = self.shard
        mine_maker = e.maker_order_id >> 40 == shard
        mine_taker = e.taker_order_id >> 40 == shard
        if not (mine_maker or mine_taker):
            m.last = e.price
            return []
        orders = self.orders
        maker = orders.get(e.maker_order_id) if mine_maker else None
        taker = orders.get(e.taker_order_id) if mine_taker else None
        if (maker is None and mine_maker) or (taker is None and mine_taker):
            self._own(e.maker_order_id if maker is None else e.taker_order_id, "order_id")
        m.last = price = e.price
        n = e.size
        base = n * m.lot_units
        quote = price * n * m.tick_lot_units
        self.log_seq += 1
        return [
            TradeSettled(
                V,
                ts,
                self.log_seq,
                src,
                e.market,
                e.trade_id,
                price,
                n,
                self._fill(maker, True, m, n, base, quote) if maker is not None else None,
                self._fill(taker, False, m, n, base, quote) if taker is not None else None,
            )
        ]

    def _fill(
        self, o: Order, is_maker: bool, m: MarketInfo, n: int, base: int, quote: int
    ) -> Settlement:
        """Apply one side of a fill of `n` lots (`base` / `quote` units) to order `o`."""
        acct = o.account
        tier = acct.fees
        if tier is not None:
            bps = tier[0] if is_maker else tier[1]
        else:
            bps = m.maker_bps if is_maker else m.taker_bps
        held = o.hold_bal
        got = o.recv_bal
        fees = self.fees
        o.filled += n
        if o.is_buy:
            cap = o.cap
            used = cap * n * m.tick_lot_units if cap else quote
            released = used - quote
            o.held -= used
            held[1] -= used
            held[0] += released
            fee = -(-base * bps // 10_000)  # ceil: the exchange never rounds in its own loss
            got[0] += base - fee
            fee_balance = fees[m.base] = fees.get(m.base, 0) + fee
            if o.held < 0 or held[1] < 0 or got[0] < 0:
                self._check(acct)  # says what broke
            return Settlement(
                acct.addr,
                o.oid,
                BUY,
                quote,
                base,
                fee,
                released,
                got[0],
                got[1],
                held[0],
                held[1],
                fee_balance,
            )
        o.held -= base
        held[1] -= base
        fee = -(-quote * bps // 10_000)  # ceil: the exchange never rounds in its own loss
        got[0] += quote - fee
        fee_balance = fees[m.quote] = fees.get(m.quote, 0) + fee
        if o.held < 0 or held[1] < 0 or got[0] < 0:
            self._check(acct)  # says what broke
        return Settlement(
            acct.addr,
            o.oid,
            SELL,
            base,
            quote,
            fee,
            0,
            held[0],
            held[1],
            got[0],
            got[1],
            fee_balance,
        )

    # ------------------------------------------------------------------ order life

    def _on_accepted(self, e: Accepted, src: InputRef, ts: int) -> list[RiskEvent]:
        oid = e.order_id
        if oid >> 40 == self.shard:
            o = self.orders.get(oid)
            if o is None:
                raise CommandError(
                    "order_id", f"order {oid} of risk shard {self.shard} is not open"
                )
            self._move(o, UNTRIGGERED if e.order.type in _STOPS else OPEN)
        return []

    @staticmethod
    def _move(o: Order, status: OrderStatus) -> None:
        """Change `o`'s status along `ORDER_TRANSITIONS`; CommandError (nothing changed) for a
        move the table does not allow: the engine and risk disagree about the order."""
        if status not in _MOVES[o.status]:
            raise CommandError("order_id", f"order {o.oid} cannot go from {o.status} to {status}")
        o.status = status

    def _on_triggered(self, e: Triggered, src: InputRef, ts: int) -> list[RiskEvent]:
        if e.order_id >> 40 == self.shard:
            self._move(self._own(e.order_id, "order_id"), OPEN)
        return []

    def _on_filled(self, e: Filled, src: InputRef, ts: int) -> list[RiskEvent]:
        if e.order_id >> 40 != self.shard:
            return []
        return self._end(e.order_id, FILLED, "", ts, src)

    def _on_cancelled(self, e: Cancelled, src: InputRef, ts: int) -> list[RiskEvent]:
        if e.order_id >> 40 != self.shard:
            return []
        return self._end(e.order_id, CANCELLED, e.reason, ts, src)

    def _on_expired(self, e: Expired, src: InputRef, ts: int) -> list[RiskEvent]:
        if e.order_id >> 40 != self.shard:
            return []
        return self._end(e.order_id, EXPIRED, "", ts, src)

    def _on_rejected(self, e: Rejected, src: InputRef, ts: int) -> list[RiskEvent]:
        if e.order_id >> 40 != self.shard:
            return []
        return self._end(e.order_id, REJECTED, e.code, ts, src)

    def _end(
        self, oid: int, status: OrderStatus, detail: str, ts: int, src: InputRef
    ) -> list[RiskEvent]:
        """An order's terminal event: release exactly what it still holds."""
        o = self.orders.get(oid)
        if o is None:
            raise CommandError("order_id", f"order {oid} of risk shard {self.shard} is not open")
        if status not in _MOVES[o.status]:
            raise CommandError("order_id", f"order {oid} cannot go from {o.status} to {status}")
        del self.orders[oid]
        acct = o.account
        orders = acct.orders
        del orders[oid]
        amount = o.held + o.pending
        held = o.hold_bal
        held[1] -= amount
        held[0] += amount
        o.held = o.pending = 0
        o.status = status
        if o.key is not None:  # the order stays in the client-id memory as its closed record
            o.detail = detail
            o.ts = ts
            self.closed.append(o)
        # the self-check of this balance (`_check_asset`), inline: locked is what the
        # account's other open orders and its pending withdrawals of the asset hold
        asset = o.hold_asset
        want = 0
        for other in orders.values():
            if other.hold_asset == asset:
                want += other.held + other.pending
        if acct.withdrawals or held[1] != want or held[0] < 0 or want < 0:
            self._check_asset(acct, asset, held)
        self.log_seq += 1
        return [
            FundsReleased(
                V,
                ts,
                self.log_seq,
                src,
                acct.addr,
                o.market.symbol,
                oid,
                _CAUSE[status],
                asset,
                amount,
                held[0],
                held[1],
            )
        ]

    def _on_amended(self, e: Amended, src: InputRef, ts: int) -> list[RiskEvent]:
        """Settle an amend's hold exactly: hold what the new order needs, release the rest."""
        if e.order_id >> 40 != self.shard:
            return []
        o = self._own(e.order_id, "order_id")
        m = o.market
        if e.remaining != e.size - o.filled:
            self.broken = f"order {o.oid}: amended remaining {e.remaining} disagrees with risk"
        if o.is_buy:
            required = e.price * e.remaining * m.tick_lot_units
            o.cap = e.price
        else:
            required = e.remaining * m.lot_units
        o.price = e.price
        o.size = e.size
        amount = o.held + o.pending - required
        held = o.hold_bal
        held[1] -= amount
        held[0] += amount
        o.held = required
        o.pending = 0
        o.amending = False
        self._check_asset(o.account, o.hold_asset, held)
        self.log_seq += 1
        return [
            FundsReleased(
                V,
                ts,
                self.log_seq,
                src,
                o.account.addr,
                m.symbol,
                o.oid,
                ReleaseCause.AMENDED,
                o.hold_asset,
                amount,
                held[0],
                held[1],
            )
        ]

    def _on_amend_rejected(self, e: AmendRejected, src: InputRef, ts: int) -> list[RiskEvent]:
        """Release only the increase held for the refused amend (if the order is still open)."""
        oid = e.order_id
        if oid is None or oid >> 40 != self.shard:
            return []
        o = self.orders.get(oid)
        if o is None or not o.amending:
            return []  # the order ended first, and released everything then
        amount = o.pending
        held = o.hold_bal
        held[1] -= amount
        held[0] += amount
        o.pending = 0
        o.amending = False
        self._check_asset(o.account, o.hold_asset, held)
        self.log_seq += 1
        return [
            FundsReleased(
                V,
                ts,
                self.log_seq,
                src,
                o.account.addr,
                o.market.symbol,
                oid,
                ReleaseCause.AMEND_REJECTED,
                o.hold_asset,
                amount,
                held[0],
                held[1],
            )
        ]

    def _on_status(self, e: MarketStatusChanged, src: InputRef, ts: int) -> list[RiskEvent]:
        m = self.markets.get(e.market)
        if m is not None:
            m.set_status(e.status, m.backpressure)
        return []

    def _ignore(self, e: object, src: InputRef, ts: int) -> list[RiskEvent]:
        return []
