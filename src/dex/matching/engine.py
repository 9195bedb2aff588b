"""The matching engine: many markets, `apply(command, input) -> list[Event]`, pure.

Owns every market's book, its untriggered stops and the GTD expiry schedule. No I/O, no clock:
time is the command's `ts`. The rules are pinned in docs/matching-rules.md; this package is the
fast implementation, checked against the naive reference in tests/property.

This module is the hot path: `apply` (a place or a cancel in its own frame), taking, matching,
finishing and resting an order. The rest of the engine is mixed in from beside it: amend and
cancel (amend.py), stops and expiry (stops.py), the admin commands (admin.py), over the state
and shared helpers of state.py; snapshots are snapshot.py's.

Invariants: a command that raises CommandError changed nothing; every event gets the market's
next `seq` and the engine's next `log_seq`; every order ends with exactly one terminal event.
"""

from __future__ import annotations

import hashlib
from heapq import heappush

from dex.core.commands import (
    SCHEMA_VERSION,
    AddAsset,
    AddMarket,
    Amend,
    Cancel,
    CancelAll,
    Command,
    InputRef,
    Place,
    SetMarketStatus,
    Tick,
)
from dex.core.enums import STP, CancelReason, MarketStatus, OrderType, Side, TimeInForce
from dex.core.errors import CommandError, RejectCode
from dex.core.events import Accepted, Cancelled, CancelRejected, Event, Filled, Rejected, Trade
from dex.matching import snapshot
from dex.matching.admin import _Admin
from dex.matching.amend import _Amends
from dex.matching.book import Order
from dex.matching.market import MarketState, Ref
from dex.matching.stops import _Stops
from dex.matching.views import MarketView

V = SCHEMA_VERSION
BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
STOP_LIMIT = OrderType.STOP_LIMIT
STOP_MARKET = OrderType.STOP_MARKET
GTC = TimeInForce.GTC
GTD = TimeInForce.GTD
FOK = TimeInForce.FOK
ACTIVE = MarketStatus.ACTIVE
STP_NONE = STP.NONE
EXPIRE_TAKER = STP.EXPIRE_TAKER
EXPIRE_BOTH = STP.EXPIRE_BOTH

SMALL_ID = (1 << 30) - 1  # ids up to this compare fast (one digit); all are in space 0

# why a taker stopped matching
DONE, EMPTY, CAP, SELF_TRADE, DUST = range(5)


class Engine(_Admin, _Amends, _Stops):
    """All markets of one matching shard."""

    # ------------------------------------------------------------------ apply

    def apply(self, cmd: Command, src: InputRef) -> list[Event]:
        """Apply one command; returns its events (CommandError if it is malformed: then
        nothing changed).

        A Place or a Cancel, the common commands, runs here, in this frame; the others are
        dispatched (`_dispatch`) to the parts of the engine that handle them.
        """
        if type(cmd) is not Place:
            if type(cmd) is not Cancel:
                return self._dispatch(cmd, src)
            # a Cancel (the next most common command), also in this frame
            try:
                m = self.markets[cmd.market]
            except KeyError:
                raise CommandError("market", f"unknown market {cmd.market!r}") from None
            oid = cmd.order_id
            ts = cmd.ts
            if ts <= self.ts:
                raise CommandError("ts", f"must be above the previous ts {self.ts}, got {ts}")
            events: list[Event] = []
            if self.expiries and self.expiries[0][0] <= ts:
                self._expire(ts, src, events)
            self.ts = ts
            order = m.orders.get(oid) if oid is not None else None
            if oid is None or order is None or order.account != cmd.account:
                found = self._lookup(m, cmd)
                if found is None:
                    m.seq += 1
                    events.append(
                        CancelRejected(
                            V,
                            m.symbol,
                            m.seq,
                            ts,
                            self._next_log_seq(),
                            src,
                            oid,
                            cmd.client_order_id,
                            cmd.account,
                            RejectCode.UNKNOWN_ORDER,
                            "no open order of this account with that id",
                        )
                    )
                else:
                    self._cancel_one(m, found, cmd.reason, events, ts, src)
                return events
            # a resting order by id: what _cancel_one does, inlined for the common case
            left = order.remaining
            is_buy = order.is_buy
            side = m.bids if is_buy else m.asks
            price = order.price
            at = side.levels[price]
            live = at.live = at.live - 1
            order.remaining = 0
            if not live:
                side.drop_level(price)
            elif live < len(at.q) >> 2:  # mostly dead entries: compact
                at.compact()
            del m.orders[oid]
            cid = order.cid
            if cid is not None:
                holder = m.cids.pop(cid, None)
                if holder is not order:
                    m.cids_more_drop(cid, order, holder)
            if m.counted:
                self._uncount(m, order.account)
            seq = m.seq = m.seq + 1
            log_seq = self.log_seq = self.log_seq + 1
            events.append(
                Cancelled(
                    V,
                    m.symbol,
                    seq,
                    ts,
                    log_seq,
                    src,
                    oid,
                    cid,
                    order.account,
                    BUY if is_buy else SELL,
                    left,
                    None,
                    order.filled,
                    cmd.reason,
                )
            )
            return events
        try:
            m = self.markets[cmd.market]
        except KeyError:
            raise CommandError("market", f"unknown market {cmd.market!r}") from None
        ts = cmd.ts
        if ts <= self.ts:
            raise CommandError("ts", f"must be above the previous ts {self.ts}, got {ts}")
        events = []
        if self.expiries and self.expiries[0][0] <= ts:
            self._expire(ts, src, events)
        self.ts = ts

        # the order id: consumed whenever it is new in its space
        oid = cmd.order_id
        top = self.max_id
        if oid is None:
            oid = top + 1
        kind = cmd.type
        if top < oid and (oid <= SMALL_ID or oid < self.id_end):
            # the common case: above every id seen, in the same space as the top
            self.max_id = oid  # id_spaces catches up in _fresh_id (lazily)
        elif not self._fresh_id(oid):
            if self._status_refuses(m, cmd, kind):
                return self._reject_status(m, cmd, oid, events, ts, src)
            return self._reject(
                m,
                cmd,
                oid,
                RejectCode.DUPLICATE_ORDER_ID,
                f"order_id {oid} was already used (ids must increase in their space)",
                events,
                ts,
                src,
            )
        if m.status is not ACTIVE and self._status_refuses(m, cmd, kind):
            return self._reject_status(m, cmd, oid, events, ts, src)
        price = cmd.price
        size = cmd.size
        cid = cmd.client_order_id
        expires_at = cmd.expires_at
        params = m.params
        account = cmd.account
        if cid is not None and (cid in m.cids or m.cids_more) and m.cid_holder(account, cid):
            return self._reject(
                m,
                cmd,
                oid,
                RejectCode.DUPLICATE_CLIENT_ORDER_ID,
                f"client_order_id {cid!r} is already used by an open order",
                events,
                ts,
                src,
            )
        if expires_at is not None and expires_at <= ts:
            return self._reject(
                m,
                cmd,
                oid,
                RejectCode.ALREADY_EXPIRED,
                f"expires_at {expires_at} is not after the command time {ts}",
                events,
                ts,
                src,
            )
        if size < params.min_size_lots and size:
            return self._reject(
                m,
                cmd,
                oid,
                RejectCode.BELOW_MIN_SIZE,
                "size is below the minimum",
                events,
                ts,
                src,
            )
        if m.checks_notional:
            notional = price * size * params.tick_lot_units if price else cmd.quote_size
            if (price or cmd.quote_size) and notional < params.min_notional_units:
                return self._reject(
                    m,
                    cmd,
                    oid,
                    RejectCode.BELOW_MIN_NOTIONAL,
                    "notional (price x size, or quote_size) is below the minimum",
                    events,
                    ts,
                    src,
                )
        may_rest = kind is LIMIT and (cmd.tif is GTC or cmd.tif is GTD)
        is_stop = not may_rest and (kind is STOP_LIMIT or kind is STOP_MARKET)
        if (
            m.counted
            and (may_rest or is_stop)
            and m.open_count.get(account, 0) >= params.max_open_orders
        ):
            return self._reject(
                m,
                cmd,
                oid,
                RejectCode.TOO_MANY_OPEN_ORDERS,
                f"the account already has {params.max_open_orders} open orders in this market",
                events,
                ts,
                src,
            )
        last = m.last
        # the band's reference is fixed for the whole command; with a last price the limits
        # are cached in the market, else (rare) they come from the mid of the book
        if kind is LIMIT:
            if last:
                if m.band_last != last:
                    m.set_band(last)
                if price < m.band_lo or price > m.band_hi:
                    return self._reject_band(m, cmd, oid, events, ts, src)
            else:
                ref = m.ref()
                if ref is not None and m.outside_band(price, ref):
                    return self._reject_band(m, cmd, oid, events, ts, src)
        is_buy = cmd.side is BUY
        if is_stop:
            best = 0
            trig = cmd.trigger_price
            if last and (last >= trig if is_buy else last <= trig):
                return self._reject(
                    m,
                    cmd,
                    oid,
                    RejectCode.STOP_WOULD_TRIGGER,
                    "trigger_price is already reached by the last trade price",
                    events,
                    ts,
                    src,
                )
        else:
            if is_buy:
                side, best = (
                    m.bids,
                    m.asks.top,
                )  # its own side and the best price it may take
            else:
                side, best = m.asks, m.bids.top
            if cmd.post_only and best and (price >= best if is_buy else price <= best):
                return self._reject(
                    m,
                    cmd,
                    oid,
                    RejectCode.POST_ONLY_WOULD_TAKE,
                    "a post-only order would take liquidity",
                    events,
                    ts,
                    src,
                )

        seq = m.seq = m.seq + 1
        log_seq = self.log_seq = self.log_seq + 1
        events.append(Accepted(V, m.symbol, seq, ts, log_seq, src, oid, cmd))
        if is_stop:
            self._add_stop(m, cmd, oid)
            return events

        display = cmd.display_size
        order = Order(
            oid,
            account,
            cid,
            is_buy,
            price,
            size,
            0,
            display if display < size else size,
            display,
            expires_at or 0,
            cmd.stp,
            cmd.post_only,
        )
        if may_rest and (not best or (price < best if is_buy else price > best)):
            # does not cross: it rests at once (what _rest does, inlined for the common case)
            level = side.levels.get(price)
            if level is None:
                level = side.new_level(price)
            level.q.append(order)
            level.live += 1
            m.orders[oid] = order
            if cid is not None and m.cids.setdefault(cid, order) is not order:
                m.cids_more[(account, cid)] = order  # another account holds this client id
            if m.counted:
                m.open_count[account] = m.open_count.get(account, 0) + 1
        elif kind is LIMIT and cmd.tif is not FOK:
            # a limit order that may trade: what _take does for it, inlined for the common case;
            # the band's reference only matters to stops it triggers (nothing has traded yet)
            ref = ((last, 1) if last else m.ref()) if m.stops else None
            why = self._match(m, order, price, 0, events, ts, src)[0]
            if why == DONE:
                seq = m.seq = m.seq + 1
                log_seq = self.log_seq = self.log_seq + 1
                events.append(
                    Filled(
                        V,
                        m.symbol,
                        seq,
                        ts,
                        log_seq,
                        src,
                        oid,
                        cid,
                        account,
                        BUY if is_buy else SELL,
                        size,  # filled in full (_match leaves the order as it was)
                    )
                )
            elif why != SELF_TRADE and may_rest:
                if display:  # it may have traded as the taker: show what is left
                    order.visible = min(display, order.remaining)
                self._rest(m, order)
            else:
                reason = CancelReason.STP if why == SELF_TRADE else CancelReason.IOC
                self._finish(m, order, 0, reason, events, ts, src)
            if m.stops and m.last != last:
                self._triggers(m, ref, events, ts, src)
        else:
            ref = (last, 1) if last else m.ref()  # nothing has traded yet in this command
            self._take(m, order, kind, cmd, ref, events, ts, src)
            if m.stops and m.last != last:
                self._triggers(m, ref, events, ts, src)
        if expires_at is not None and order.remaining and oid in m.orders:
            heappush(self.expiries, (expires_at, oid, m.symbol))
        return events

    def _dispatch(self, cmd: Command, src: InputRef) -> list[Event]:
        """Every command but Place and Cancel (which `apply` takes itself)."""
        if type(cmd) is Amend:
            return self._amend(cmd, src)
        if type(cmd) is CancelAll:
            return self._cancel_all(cmd, src)
        if type(cmd) is Tick:
            ts = self._check_ts(cmd.ts)
            events: list[Event] = []
            self._expire(ts, src, events)
            self.ts = ts
            return events
        if type(cmd) is SetMarketStatus:
            return self._set_status(cmd, src)
        if type(cmd) is AddMarket:
            return self._add_market(cmd, src)
        if type(cmd) is AddAsset:
            return self._add_asset(cmd, src)
        raise CommandError("cmd", f"unknown command {type(cmd).__name__}")

    # ------------------------------------------------------------------ place

    def _fresh_id(self, oid: int) -> bool:
        """Record `oid` if it is above every id seen in its space (`oid >> 40`)."""
        spaces = self.id_spaces
        top = self.max_id
        if top > spaces.get(top >> 40, 0):
            spaces[top >> 40] = top  # catch up with the fast path in _place
        space = oid >> 40
        if oid <= spaces.get(space, 0):
            return False
        spaces[space] = oid
        if oid > top:
            self.max_id = top = oid
        self.id_end = ((top >> 40) + 1) << 40
        return True

    def _reject(
        self,
        m: MarketState,
        cmd: Place,
        oid: int,
        code: RejectCode,
        message: str,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> list[Event]:
        m.seq += 1
        self.log_seq += 1
        events.append(
            Rejected(
                V,
                m.symbol,
                m.seq,
                ts,
                self.log_seq,
                src,
                oid,
                cmd.client_order_id,
                cmd.account,
                cmd.side,
                code,
                message,
            )
        )
        return events

    @staticmethod
    def _status_refuses(m: MarketState, cmd: Place, kind: OrderType) -> bool:
        """Whether the market's status refuses this new order."""
        status = m.status
        return status is not ACTIVE and not (
            status is MarketStatus.POST_ONLY and cmd.post_only and kind is LIMIT
        )

    def _reject_status(
        self,
        m: MarketState,
        cmd: Place,
        oid: int,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> list[Event]:
        return self._reject(
            m,
            cmd,
            oid,
            RejectCode.MARKET_STATUS,
            f"market is {m.status}",
            events,
            ts,
            src,
        )

    def _reject_band(
        self,
        m: MarketState,
        cmd: Place,
        oid: int,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> list[Event]:
        return self._reject(
            m,
            cmd,
            oid,
            RejectCode.OUTSIDE_PRICE_BAND,
            f"price is more than {m.params.band_bps} bps from the reference price",
            events,
            ts,
            src,
        )

    # ------------------------------------------------------------------ taking

    def _take(
        self,
        m: MarketState,
        order: Order,
        kind: OrderType,
        cmd: Place,
        ref: Ref | None,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> None:
        """Run an incoming (or triggered) order as the taker, then rest or finish it."""
        is_buy = order.is_buy
        band_cap = 0
        if kind is LIMIT or kind is STOP_LIMIT:
            cap = order.price
            quote_left = 0
        else:
            quote_left = cmd.quote_size
            if ref is not None:
                band_cap = m.band_cap(is_buy, ref)
            protection = cmd.max_price if is_buy else cmd.min_price
            if band_cap and protection:
                cap = min(band_cap, protection) if is_buy else max(band_cap, protection)
            else:
                cap = band_cap or protection
        if cmd.tif is FOK and self._fillable(m, order, cap) < order.remaining:
            self._finish(m, order, 0, CancelReason.FOK, events, ts, src)
            return
        by_quote = quote_left > 0
        why, quote_left = self._match(m, order, cap, quote_left, events, ts, src)
        if why == DONE:
            m.seq += 1
            self.log_seq += 1
            events.append(
                Filled(
                    V,
                    m.symbol,
                    m.seq,
                    ts,
                    self.log_seq,
                    src,
                    order.oid,
                    order.cid,
                    order.account,
                    BUY if is_buy else SELL,
                    # filled in full: by size, _match leaves the order as it was
                    order.filled if by_quote else order.filled + order.remaining,
                )
            )
            return
        if kind is LIMIT or kind is STOP_LIMIT:
            if why == SELF_TRADE:
                reason = CancelReason.STP
            elif cmd.tif is GTC or cmd.tif is GTD:
                if order.display:  # it may have traded as the taker: show what is left
                    order.visible = min(order.display, order.remaining)
                self._rest(m, order)
                return
            else:
                reason = CancelReason.IOC
        elif why == EMPTY:
            reason = CancelReason.NO_LIQUIDITY
        elif why == CAP:
            best = m.asks.best() if is_buy else m.bids.best()
            if band_cap and (best > band_cap if is_buy else best < band_cap):
                reason = CancelReason.PRICE_BAND
            else:
                reason = CancelReason.PRICE_PROTECTION
        elif why == SELF_TRADE:
            reason = CancelReason.STP
        else:
            reason = CancelReason.IOC
        self._finish(m, order, quote_left, reason, events, ts, src)

    def _finish(
        self,
        m: MarketState,
        order: Order,
        quote_left: int,
        reason: CancelReason,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> None:
        """Cancel what is left of a taker that is not in the book."""
        m.seq += 1
        self.log_seq += 1
        events.append(
            Cancelled(
                V,
                m.symbol,
                m.seq,
                ts,
                self.log_seq,
                src,
                order.oid,
                order.cid,
                order.account,
                BUY if order.is_buy else SELL,
                None if quote_left else order.remaining,
                quote_left if quote_left else None,
                order.filled,
                reason,
            )
        )

    def _rest(self, m: MarketState, order: Order) -> None:
        (m.bids if order.is_buy else m.asks).add(order)
        m.orders[order.oid] = order
        if order.cid is not None:
            m.add_cid(order.cid, order)
        if m.params.max_open_orders:
            m.open_count[order.account] = m.open_count.get(order.account, 0) + 1

    def _match(
        self,
        m: MarketState,
        taker: Order,
        cap: int,
        quote_left: int,
        events: list[Event],
        ts: int,
        src: InputRef,
    ) -> tuple[int, int]:
        """Match `taker` against the opposite side; returns (why it stopped, quote left).

        `cap` is the worst price the taker may trade at (0: none). With `quote_left` > 0 the
        taker is sized in quote units instead of `taker.remaining`. The market's counters are
        kept in locals for the loop and written back once, at the single exit; the taker's
        only when it is not filled in full by size (DONE with nothing left): then it is dropped
        and left as it was, and its fill is its `remaining` (plus its `filled`) on entry.
        """
        is_buy = taker.is_buy
        if is_buy:
            opp, aggressor, maker_side = m.asks, BUY, SELL
        else:
            opp, aggressor, maker_side = m.bids, SELL, BUY
        levels = opp.levels
        orders = m.orders
        cids = m.cids
        counted = m.counted
        tlu = m.params.tick_lot_units
        stp = taker.stp
        check_stp = stp is not STP_NONE
        account = taker.account
        taker_oid = taker.oid
        taker_cid = taker.cid
        symbol = m.symbol
        by_quote = quote_left > 0
        seq = m.seq
        log_seq = self.log_seq
        trade_id = m.trade_id
        last = m.last
        left = taker.remaining  # the taker's remaining and filled live in locals in the loop
        filled = taker.filled
        why = DONE
        while why == DONE:
            price = opp.top
            if not price:
                why = EMPTY
                break
            if cap and (price > cap if is_buy else price < cap):
                why = CAP
                break
            level = levels[price]
            q = level.q
            lot_cost = price * tlu if by_quote else 0
            while q:
                maker = q[0]
                mrem = maker.remaining
                if not mrem:
                    q.popleft()
                    continue
                if check_stp and maker.account == account:
                    why = SELF_TRADE
                    if stp is EXPIRE_TAKER:
                        break
                    q.popleft()
                    level.live -= 1
                    maker.remaining = 0
                    del orders[maker.oid]
                    if maker.cid is not None:
                        holder = cids.pop(maker.cid, None)
                        if holder is not maker:
                            m.cids_more_drop(maker.cid, maker, holder)
                    if counted:
                        self._uncount(m, maker.account)
                    seq += 1
                    log_seq += 1
                    events.append(
                        Cancelled(
                            V,
                            symbol,
                            seq,
                            ts,
                            log_seq,
                            src,
                            maker.oid,
                            maker.cid,
                            maker.account,
                            maker_side,
                            mrem,
                            None,
                            maker.filled,
                            CancelReason.STP,
                        )
                    )
                    if stp is EXPIRE_BOTH:
                        break
                    why = DONE
                    continue
                avail = maker.visible if maker.display else mrem
                if by_quote:
                    n = quote_left // lot_cost
                    if not n:
                        why = DUST
                        break
                    if n > avail:
                        n = avail
                    quote_left -= n * lot_cost
                    taker_left = None
                else:
                    n = left if left < avail else avail
                    taker_left = left = left - n
                filled += n
                mrem -= n
                trade_id += 1
                seq += 1
                log_seq += 1
                last = price
                events.append(
                    Trade(
                        V,
                        symbol,
                        seq,
                        ts,
                        log_seq,
                        src,
                        trade_id,
                        price,
                        n,
                        aggressor,
                        maker.oid,
                        maker.account,
                        maker.cid,
                        mrem,
                        taker_oid,
                        account,
                        taker_cid,
                        taker_left,
                        quote_left if by_quote else None,
                    )
                )
                if not mrem:
                    # the maker leaves the book: its object is dropped, so its counters are
                    # not written back (a struct's attribute store is slow)
                    q.popleft()
                    level.live -= 1
                    del orders[maker.oid]
                    if maker.cid is not None:
                        holder = cids.pop(maker.cid, None)
                        if holder is not maker:
                            m.cids_more_drop(maker.cid, maker, holder)
                    if counted:
                        self._uncount(m, maker.account)
                    seq += 1
                    log_seq += 1
                    events.append(
                        Filled(
                            V,
                            symbol,
                            seq,
                            ts,
                            log_seq,
                            src,
                            maker.oid,
                            maker.cid,
                            maker.account,
                            maker_side,
                            maker.filled + n,
                        )
                    )
                    if (quote_left == 0) if by_quote else (taker_left == 0):
                        break
                    continue
                maker.remaining = mrem
                maker.filled += n
                if maker.display:
                    maker.visible -= n
                    if not maker.visible:
                        maker.visible = maker.display if maker.display < mrem else mrem
                        q.popleft()
                        q.append(maker)
                if (quote_left == 0) if by_quote else (taker_left == 0):
                    break
            if not level.live:
                del levels[price]
                opp.retop()  # the level was the top
            if (quote_left == 0) if by_quote else (left == 0):
                break
        if left or by_quote:  # else it filled in full: dropped, its counters are not written
            taker.remaining = left
            taker.filled = filled
        m.seq = seq
        self.log_seq = log_seq
        m.trade_id = trade_id
        m.last = last
        return why, quote_left

    def _fillable(self, m: MarketState, taker: Order, cap: int) -> int:
        """How much of `taker` would fill now (FOK), matching exactly as `_match` would."""
        is_buy = taker.is_buy
        opp = m.asks if is_buy else m.bids
        need = taker.remaining
        stp = taker.stp
        check_stp = stp is not STP_NONE
        got = 0
        for price in opp.sorted_prices():
            if cap and (price > cap if is_buy else price < cap):
                break
            queue: list[tuple[str, int, int, int]] = [
                (
                    o.account,
                    o.remaining,
                    o.visible if o.display else o.remaining,
                    o.display,
                )
                for o in opp.levels[price].q
                if o.remaining
            ]
            i = 0
            while i < len(queue):
                account, rem, vis, disp = queue[i]
                i += 1
                if check_stp and account == taker.account:
                    if stp is STP.EXPIRE_MAKER:
                        continue
                    return got
                n = min(vis, need - got)
                got += n
                if got == need:
                    return got
                rem -= n
                if rem:  # an iceberg slice was taken: refill at the back
                    queue.append((account, rem, min(disp, rem), disp))
        return got

    # ------------------------------------------------------------------ state

    def snapshot(self) -> bytes:
        """The engine's state, canonical (see dex.matching.snapshot)."""
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        """The engine a snapshot holds; `ValueError` for another version or a malformed one."""
        return snapshot.load(data, cls)

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    def view(self, symbol: str) -> MarketView:
        return snapshot.view(self._market(symbol))


__all__ = ["Engine"]
