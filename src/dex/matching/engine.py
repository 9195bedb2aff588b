"""The matching engine: many markets, `apply(command, input) -> list[Event]`, pure.

Owns every market's book, its untriggered stops and the GTD expiry schedule. No I/O, no clock:
time is the command's `ts`. The rules are pinned in docs/matching-rules.md; this module is the
fast implementation, checked against the naive reference in tests/property.

Invariants: a command that raises CommandError changed nothing; every event gets the market's
next `seq` and the engine's next `log_seq`; every order ends with exactly one terminal event.
"""

from __future__ import annotations

import hashlib
from heapq import heappop, heappush

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
from dex.core.events import (
    Accepted,
    Amended,
    AmendRejected,
    AssetAdded,
    Cancelled,
    CancelRejected,
    Event,
    Expired,
    Filled,
    MarketAdded,
    MarketStatusChanged,
    Rejected,
    Trade,
    Triggered,
)
from dex.core.markets import Asset, check_asset, resolve_market
from dex.matching.book import BookSide, Order, StopOrder
from dex.matching.market import MarketState, Ref
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
HALTED = MarketStatus.HALTED
STP_NONE = STP.NONE
EXPIRE_TAKER = STP.EXPIRE_TAKER
EXPIRE_BOTH = STP.EXPIRE_BOTH

SMALL_ID = (1 << 30) - 1  # ids up to this compare fast (one digit); all are in space 0

# why a taker stopped matching
DONE, EMPTY, CAP, SELF_TRADE, DUST = range(5)


class Engine:
    """All markets of one matching shard."""

    def __init__(self) -> None:
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, MarketState] = {}
        self.ts = 0
        self.log_seq = 0
        self.admin_seq = 0  # seq of the market-less stream "" (asset_added)
        self.max_id = 0
        self.id_spaces: dict[int, int] = {}  # order_id >> 40 -> highest id seen
        self.id_end = 0  # first id of the space after max_id's (0: unknown, see _fresh_id)
        self.expiries: list[tuple[int, int, str]] = []  # heap of (expires_at, order_id, market)
        # the entry point: `apply` is `_place` itself, so that a Place or a Cancel (the common
        # commands) runs in apply's own frame, without a dispatch call (this is a reference
        # cycle: an engine is freed by the cyclic GC)
        self.apply = self._place  # type: ignore[method-assign]

    # ------------------------------------------------------------------ dispatch

    def apply(self, cmd: Command, src: InputRef) -> list[Event]:
        """Apply one command; returns its events (an engine's `apply` is bound to `_place`)."""
        return self._place(cmd, src)

    def _dispatch(self, cmd: Command, src: InputRef) -> list[Event]:
        """Every command but Place and Cancel (which `_place` takes itself)."""
        kind = type(cmd)
        if kind is Amend:
            return self._amend(cmd, src)  # type: ignore[arg-type]
        if kind is CancelAll:
            return self._cancel_all(cmd, src)  # type: ignore[arg-type]
        if kind is Tick:
            ts = self._check_ts(cmd.ts)
            events: list[Event] = []
            self._expire(ts, src, events)
            self.ts = ts
            return events
        if kind is SetMarketStatus:
            return self._set_status(cmd, src)  # type: ignore[arg-type]
        if kind is AddMarket:
            return self._add_market(cmd, src)  # type: ignore[arg-type]
        if kind is AddAsset:
            return self._add_asset(cmd, src)  # type: ignore[arg-type]
        raise CommandError("cmd", f"unknown command {kind.__name__}")

    def _check_ts(self, ts: int) -> int:
        if ts <= self.ts:
            raise CommandError("ts", f"must be above the previous ts {self.ts}, got {ts}")
        return ts

    def _admin_ts(self, ts: int) -> int:
        return self.ts if ts == 0 else self._check_ts(ts)

    def _market(self, symbol: str) -> MarketState:
        m = self.markets.get(symbol)
        if m is None:
            raise CommandError("market", f"unknown market {symbol!r}")
        return m

    def _next_log_seq(self) -> int:
        self.log_seq += 1
        return self.log_seq

    # ------------------------------------------------------------------ admin

    def _add_asset(self, cmd: AddAsset, src: InputRef) -> list[Event]:
        ts = self._admin_ts(cmd.ts)
        asset = check_asset(cmd.asset)
        if asset.symbol in self.assets:
            raise CommandError("symbol", f"asset {asset.symbol} is already registered")
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        self.assets[asset.symbol] = asset
        self.admin_seq += 1
        events.append(AssetAdded(V, "", self.admin_seq, ts, self._next_log_seq(), src, asset))
        return events

    def _add_market(self, cmd: AddMarket, src: InputRef) -> list[Event]:
        ts = self._admin_ts(cmd.ts)
        spec = cmd.spec
        if spec.market in self.markets:
            raise CommandError("market", f"market {spec.market} already exists")
        params = resolve_market(spec, self.assets)
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        for asset in (params.base, params.quote):
            if asset.symbol not in self.assets:
                self.assets[asset.symbol] = asset
                self.admin_seq += 1
                events.append(
                    AssetAdded(V, "", self.admin_seq, ts, self._next_log_seq(), src, asset)
                )
        m = self.markets[spec.market] = MarketState(params, spec.status)
        m.seq = 1
        events.append(MarketAdded(V, m.symbol, 1, ts, self._next_log_seq(), src, spec))
        return events

    def _set_status(self, cmd: SetMarketStatus, src: InputRef) -> list[Event]:
        m = self._market(cmd.market)
        ts = self._check_ts(cmd.ts)
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        previous = m.status
        m.status = cmd.status
        m.seq += 1
        events.append(
            MarketStatusChanged(
                V, m.symbol, m.seq, ts, self._next_log_seq(), src, cmd.status, previous
            )
        )
        if cmd.status is MarketStatus.CANCEL_ONLY:
            for stop in list(m.stops.values()):
                self._cancel_one(m, stop, CancelReason.MARKET_STATUS, events, ts, src)
        return events

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

    def _place(self, cmd: Command, src: InputRef) -> list[Event]:
        """`apply` itself (bound in __init__): a Place or a Cancel here, the rest dispatched.

        Named `_place` as the Place path lives here (tests/meta/faults.py mutates it).
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

    def _add_stop(self, m: MarketState, cmd: Place, oid: int) -> None:
        stop = StopOrder(oid, cmd)
        m.stops[oid] = stop
        if cmd.client_order_id is not None:
            m.add_cid(cmd.client_order_id, stop)
        if m.counted:
            m.open_count[cmd.account] = m.open_count.get(cmd.account, 0) + 1
        if cmd.expires_at is not None:
            heappush(self.expiries, (cmd.expires_at, oid, m.symbol))

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

    def _unindex(
        self, m: MarketState, entry: Order | StopOrder, account: str, cid: str | None
    ) -> None:
        """Forget an open order (resting or stop) that has ended."""
        if cid is not None:
            m.drop_cid(cid, entry)
        if m.params.max_open_orders:
            self._uncount(m, account)

    @staticmethod
    def _uncount(m: MarketState, account: str) -> None:
        left = m.open_count[account] - 1
        if left:
            m.open_count[account] = left
        else:
            del m.open_count[account]

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

    # ------------------------------------------------------------------ stops

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

    # ------------------------------------------------------------------ cancel / amend

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

    # ------------------------------------------------------------------ state

    def snapshot(self) -> bytes:
        from dex.matching.snapshot import dump

        return dump(self)

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        from dex.matching.snapshot import load

        return load(data)

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    def view(self, symbol: str) -> MarketView:
        from dex.matching.snapshot import view

        return view(self._market(symbol))


__all__ = ["BookSide", "Engine"]
