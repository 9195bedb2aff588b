"""Pre-trade: place, amend, cancel and cancel_all of a risk shard.

A place passes these checks in order, each refusal an `order_rejected` with a stable code:
the address; the client order id's form (1 to 36 of A-Z a-z 0-9 . _ : -, else
`invalid_client_order_id`); a client order id in use returns the earlier outcome
(`order_duplicate`); a wallet-signed order's nonce, in [1, 2^63) and not used by an accepted
order of the account in the last 24 hours (`nonce_used`); the global halt; the market known
and available; the account not frozen; trading not disabled; the account's notional and
open-order limits; a reference price where one is needed; then the structural contract (the
forwarded `dex.core` place validates itself on construction and raises CommandError) and
enough available funds. An accepted order holds its funds at once and is forwarded to
matching as a `dex.core` place with its id and protection price; its nonce is remembered for
24 hours. Amend, cancel and cancel_all are resolved to this shard's open orders and forwarded.
"""

from __future__ import annotations

import re

from dex.core.commands import Amend as MatchAmend
from dex.core.commands import Cancel as MatchCancel
from dex.core.commands import CancelAll as MatchCancelAll
from dex.core.commands import InputRef
from dex.core.commands import Place as MatchPlace
from dex.core.enums import CancelReason, OrderType, Side
from dex.core.errors import CommandError
from dex.core.numbers import DAY_NS
from dex.core.validation import CLIENT_ORDER_ID_RULE, client_order_id_ok
from dex.risk.address import INVALID_ADDRESS, canonical_address, shard_of
from dex.risk.codes import RiskCode
from dex.risk.commands import Amend, Cancel, CancelAll, Place
from dex.risk.events import (
    OrderAcceptedForMatching,
    OrderCommandForwarded,
    OrderDuplicate,
    OrderRejected,
    RiskEvent,
)
from dex.risk.state import MAX_AMOUNT, SCHEMA_VERSION, Account, Order, _Core

V = SCHEMA_VERSION
BUY = Side.BUY
LIMIT = OrderType.LIMIT
STOP_LIMIT = OrderType.STOP_LIMIT
STOP_MARKET = OrderType.STOP_MARKET


class _OrderDesk(_Core):
    __slots__ = ()

    def _trader(self, raw: str) -> Account | None:
        """The account named by a request (a blank one if it has no state yet); None if invalid."""
        acct = self.accounts.get(raw)
        if acct is not None:
            return acct
        addr = canonical_address(raw)
        if addr is None:
            return None
        acct = self.accounts.get(addr)
        if acct is None:
            owner = shard_of(addr, self.shard_count)
            if owner != self.shard:
                raise CommandError("account", f"{addr} belongs to risk shard {owner}")
            acct = Account(addr)  # not stored: it has nothing to hold from
        return acct

    def _refuse(
        self,
        request: str,
        account: str,
        market: str,
        oid: int | None,
        cid: str | None,
        code: RiskCode,
        message: str,
        ts: int,
        src: InputRef,
    ) -> list[RiskEvent]:
        self.log_seq += 1
        return [
            OrderRejected(
                V, ts, self.log_seq, src, request, account, market, oid, cid, code, message
            )
        ]

    def _forget_nonces(self, ts: int) -> None:
        """Drop order nonces used at least 24 hours before `ts`."""
        times = self.nonce_times
        nonces = self.order_nonces
        horizon = ts - DAY_NS
        while times and times[0][0] <= horizon:
            used, addr, nonce = times.popleft()
            if nonces.get((addr, nonce)) == used:  # not used again since (then it is later)
                del nonces[(addr, nonce)]

    def _forget_closed(self, ts: int) -> None:
        """Drop client order ids of orders that ended at least 24 hours before `ts`."""
        closed = self.closed
        cids = self.cids
        horizon = ts - DAY_NS
        while closed and closed[0].ts <= horizon:
            rec = closed.popleft()
            key = rec.key
            if key is not None and cids.get(key) is rec:
                del cids[key]

    # ------------------------------------------------------------------ place

    def _place(
        self, cmd: Place, src: InputRef, ts: int, horizon: int | None = None
    ) -> list[RiskEvent]:
        """Place an order; `horizon` is set (by this method itself) when client order ids
        that ended at or before it, or order nonces used at or before it, fall due to be
        forgotten: they count as forgotten here, and are forgotten only once the place is
        known not to raise, so a malformed place (CommandError) changes nothing."""
        _check_via(cmd.via)
        closed = self.closed
        times = self.nonce_times
        if horizon is None and (
            (closed and closed[0].ts <= ts - DAY_NS) or (times and times[0][0] <= ts - DAY_NS)
        ):
            events = self._place(cmd, src, ts, ts - DAY_NS)
            self._forget_closed(ts)
            self._forget_nonces(ts)
            return events
        addr = cmd.account
        symbol = cmd.market
        cid = cmd.client_order_id
        acct = self.accounts.get(addr)  # stored under its canonical address
        if acct is None:
            acct = self._trader(addr)
            if acct is None:
                return self._refuse(
                    "place",
                    addr,
                    symbol,
                    None,
                    cid,
                    RiskCode.INVALID_ADDRESS,
                    INVALID_ADDRESS,
                    ts,
                    src,
                )
            addr = acct.addr
        if cid is not None and not client_order_id_ok(cid):  # commands come by other paths too
            return self._refuse(
                "place",
                addr,
                symbol,
                None,
                None,  # the refused text is not passed on
                RiskCode.INVALID_CLIENT_ORDER_ID,
                f"client_order_id must be {CLIENT_ORDER_ID_RULE}",
                ts,
                src,
            )
        key = None
        if cid is not None:
            key = (addr, symbol, cid)
            prior = self.cids.get(key)
            if (
                horizon is not None
                and prior is not None
                and prior.ts <= horizon
                and prior.oid not in self.orders
            ):
                prior = None  # ended a day ago: forgotten once this place is done
            if prior is not None:  # an open order, or an ended one (detail set when it ended)
                self.log_seq += 1
                return [
                    OrderDuplicate(
                        V,
                        ts,
                        self.log_seq,
                        src,
                        addr,
                        symbol,
                        cid,
                        prior.oid,
                        prior.status,
                        prior.filled,
                        prior.detail,
                    )
                ]
        nonce = cmd.nonce
        if nonce is not None:
            why = ""
            if not 0 < nonce <= MAX_AMOUNT:
                why = "nonce must be in [1, 2^63)"
            elif (used := self.order_nonces.get((addr, nonce))) is not None and (
                used > ts - DAY_NS  # a day old or more: forgotten, even if not yet pruned
            ):
                why = f"nonce {nonce} was used by an order in the last 24 hours"
            if why:
                return self._refuse(
                    "place", addr, symbol, None, cid, RiskCode.NONCE_USED, why, ts, src
                )
        m = self.markets.get(symbol)
        if self.global_halt or m is None or not m.open or acct.frozen or acct.disabled:
            code: RiskCode | None = None
            why = ""
            if self.global_halt:
                code, why = RiskCode.GLOBAL_HALT, "trading is halted"
            elif m is None or not m.open:
                code, why = RiskCode.MARKET_UNAVAILABLE, f"market {symbol} takes no orders now"
            elif acct.frozen:
                code, why = RiskCode.ACCOUNT_FROZEN, "the account is frozen"
            elif acct.disabled and ("" in acct.disabled or symbol in acct.disabled):
                code, why = RiskCode.TRADING_DISABLED, "trading is disabled for this account"
            if code is not None or m is None:
                code = code or RiskCode.MARKET_UNAVAILABLE
                return self._refuse("place", addr, symbol, None, cid, code, why, ts, src)

        kind = cmd.type
        is_buy = cmd.side is BUY
        size = cmd.size
        price = cmd.price
        quote_size = cmd.quote_size
        tlu = m.tick_lot_units
        max_price = min_price = 0
        if kind is LIMIT or kind is STOP_LIMIT:
            notional = price * size * tlu
            missing_ref = False
        else:
            ref = cmd.trigger_price if kind is STOP_MARKET else m.last
            if ref:
                if is_buy:
                    max_price = ref * (10_000 + m.band_bps) // 10_000
                else:
                    min_price = -(-ref * (10_000 - m.band_bps) // 10_000) or 1
            # a buy by base size needs max_price, a sell by quote amount needs min_price
            missing_ref = not ref and bool(size if is_buy else quote_size)
            notional = quote_size or (max_price or min_price) * size * tlu
        if acct.max_notional:
            cap_notional = acct.max_notional.get(m.quote, 0)
            if cap_notional and notional > cap_notional:
                return self._refuse(
                    "place",
                    addr,
                    symbol,
                    None,
                    cid,
                    RiskCode.NOTIONAL_LIMIT,
                    f"notional {notional} is above the account's limit {cap_notional}",
                    ts,
                    src,
                )
        if acct.max_open and len(acct.orders) >= acct.max_open:
            return self._refuse(
                "place",
                addr,
                symbol,
                None,
                cid,
                RiskCode.OPEN_ORDERS_LIMIT,
                f"the account already has {acct.max_open} open orders",
                ts,
                src,
            )
        if missing_ref:
            return self._refuse(
                "place",
                addr,
                symbol,
                None,
                cid,
                RiskCode.NO_REFERENCE_PRICE,
                f"market {symbol} has not traded yet: no protection price",
                ts,
                src,
            )

        oid = self.prefix | (self.order_seq + 1)
        trigger = cmd.trigger_price
        if (
            quote_size or trigger or max_price or min_price or cmd.display_size or cmd.post_only
        ) or cmd.expires_at is not None:
            place = MatchPlace(
                ts=ts,
                market=symbol,
                account=addr,
                side=cmd.side,
                type=kind,
                size=size,
                price=price,
                quote_size=quote_size,
                tif=cmd.tif,
                post_only=cmd.post_only,
                stp=cmd.stp,
                client_order_id=cid,
                order_id=oid,
                expires_at=cmd.expires_at,
                trigger_price=trigger,
                display_size=cmd.display_size,
                max_price=max_price,
                min_price=min_price,
            )
        else:  # the common case, built faster: the other fields keep their defaults
            place = MatchPlace(
                ts=ts,
                market=symbol,
                account=addr,
                side=cmd.side,
                type=kind,
                size=size,
                price=price,
                tif=cmd.tif,
                stp=cmd.stp,
                client_order_id=cid,
                order_id=oid,
            )
        cap = 0
        bal = acct.bal
        if is_buy:
            cell = bal.get(m.quote)
            if quote_size:
                hold = quote_size
            else:
                cap = price or max_price
                hold = cap * size * tlu
        else:
            cell = bal.get(m.base)
            lots = size or -(-quote_size // (min_price * tlu))
            hold = lots * m.lot_units
        if cell is None or hold > cell[0]:
            return self._refuse(
                "place",
                addr,
                symbol,
                None,
                cid,
                RiskCode.INSUFFICIENT_FUNDS,
                f"the order holds {self._amount(m.quote if is_buy else m.base, hold)}, more "
                f"than the {self._amount(m.quote if is_buy else m.base, cell[0] if cell else 0)}"
                " available",
                ts,
                src,
            )

        self.order_seq += 1
        other = m.base if is_buy else m.quote
        recv = bal.get(other) or acct.cell(other)
        o = Order(
            oid,
            acct,
            m,
            cid,
            is_buy,
            kind,
            quote_size > 0,  # never negative here: the forwarded place checked it
            price,
            cap,
            size,
            hold,
            cell,
            recv,
            key,
        )
        o.via = cmd.via
        cell[0] -= hold
        cell[1] += hold
        self.orders[oid] = acct.orders[oid] = o
        if key is not None:
            self.cids[key] = o
        if nonce is not None:
            self.order_nonces[(addr, nonce)] = ts
            self.nonce_times.append((ts, addr, nonce))
        self.log_seq += 1
        return [
            OrderAcceptedForMatching(
                V,
                ts,
                self.log_seq,
                src,
                addr,
                symbol,
                oid,
                cid,
                o.hold_asset,
                hold,
                max_price,
                min_price,
                place,
                cell[0],
                cell[1],
            )
        ]

    # ------------------------------------------------------------------ amend / cancel

    def _find(self, acct: Account, market: str, oid: int | None, cid: str | None) -> Order | None:
        if oid is not None:
            o = acct.orders.get(oid)
        elif cid is not None:
            found = self.cids.get((acct.addr, market, cid))
            o = acct.orders.get(found.oid) if found is not None else None  # open: not ended
        else:
            raise CommandError("order_id", "order_id or client_order_id is required")
        if o is None or o.market.symbol != market:
            return None
        return o

    def _amend(self, cmd: Amend, src: InputRef, ts: int) -> list[RiskEvent]:
        acct = self._trader(cmd.account)
        symbol = cmd.market
        if acct is None:
            return self._refuse(
                "amend",
                cmd.account,
                symbol,
                cmd.order_id,
                cmd.client_order_id,
                RiskCode.INVALID_ADDRESS,
                INVALID_ADDRESS,
                ts,
                src,
            )
        addr = acct.addr
        o = self._find(acct, symbol, cmd.order_id, cmd.client_order_id)
        code: RiskCode | None = None
        why = ""
        if o is None:
            code, why = RiskCode.UNKNOWN_ORDER, "no open order of this account with that id"
        elif self.global_halt:
            code, why = RiskCode.GLOBAL_HALT, "trading is halted"
        elif acct.frozen:
            code, why = RiskCode.ACCOUNT_FROZEN, "the account is frozen"
        elif acct.disabled and ("" in acct.disabled or symbol in acct.disabled):
            code, why = RiskCode.TRADING_DISABLED, "trading is disabled for this account"
        elif o.amending:
            code, why = RiskCode.AMEND_IN_PROGRESS, "an amend of this order is in progress"
        if code is not None or o is None:
            code = code or RiskCode.UNKNOWN_ORDER
            return self._refuse(
                "amend", addr, symbol, cmd.order_id, cmd.client_order_id, code, why, ts, src
            )
        fwd = MatchAmend(
            ts=ts,
            market=symbol,
            account=addr,
            order_id=o.oid,
            client_order_id=o.cid,
            price=cmd.price,
            size=cmd.size,
        )
        m = o.market
        increase = 0
        if o.kind is LIMIT or o.kind is STOP_LIMIT:
            new_size = cmd.size or o.size
            new_price = cmd.price or o.price
            left = o.size - o.filled
            new_left = new_size - o.filled
            if new_left > 0:
                if o.is_buy:
                    # lots filled before the amend lands are paid from the old hold, so
                    # each lot left keeps at least min(old, new) price of it
                    lowest = o.price if o.price < new_price else new_price
                    increase = (new_price * new_left - lowest * left) * m.tick_lot_units
                else:
                    increase = (new_left - left) * m.lot_units
                increase = max(increase, 0)
            cap_notional = acct.max_notional.get(m.quote, 0) if acct.max_notional else 0
            notional = new_price * new_size * m.tick_lot_units
            if cap_notional and notional > cap_notional:
                return self._refuse(
                    "amend",
                    addr,
                    symbol,
                    o.oid,
                    o.cid,
                    RiskCode.NOTIONAL_LIMIT,
                    f"notional {notional} is above the account's limit {cap_notional}",
                    ts,
                    src,
                )
        cell = o.hold_bal
        if increase > cell[0]:
            return self._refuse(
                "amend",
                addr,
                symbol,
                o.oid,
                o.cid,
                RiskCode.INSUFFICIENT_FUNDS,
                f"the amend holds {self._amount(o.hold_asset, increase)} more, "
                f"more than the {self._amount(o.hold_asset, cell[0])} available",
                ts,
                src,
            )
        cell[0] -= increase
        cell[1] += increase
        o.pending = increase
        o.amending = True
        self._check_asset(acct, o.hold_asset, cell)
        self.log_seq += 1
        return [
            OrderCommandForwarded(
                V,
                ts,
                self.log_seq,
                src,
                addr,
                symbol,
                o.oid,
                fwd,
                o.hold_asset,
                increase,
                cell[0],
                cell[1],
            )
        ]

    def _cancel(self, cmd: Cancel, src: InputRef, ts: int) -> list[RiskEvent]:
        acct = self.accounts.get(cmd.account) or self._trader(cmd.account)
        symbol = cmd.market
        if acct is None:
            return self._refuse(
                "cancel",
                cmd.account,
                symbol,
                cmd.order_id,
                cmd.client_order_id,
                RiskCode.INVALID_ADDRESS,
                INVALID_ADDRESS,
                ts,
                src,
            )
        cid = cmd.client_order_id
        if cmd.order_id is None and cid is not None:  # `_find` inline: the key names the market
            found = self.cids.get((acct.addr, symbol, cid))
            o = acct.orders.get(found.oid) if found is not None else None
        else:
            o = self._find(acct, symbol, cmd.order_id, cid)
        if o is None:
            return self._refuse(
                "cancel",
                acct.addr,
                symbol,
                cmd.order_id,
                cmd.client_order_id,
                RiskCode.UNKNOWN_ORDER,
                "no open order of this account with that id",
                ts,
                src,
            )
        fwd = MatchCancel(
            ts=ts, market=symbol, account=acct.addr, order_id=o.oid, client_order_id=o.cid
        )
        cell = o.hold_bal
        self.log_seq += 1
        return [
            OrderCommandForwarded(
                V,
                ts,
                self.log_seq,
                src,
                acct.addr,
                symbol,
                o.oid,
                fwd,
                o.hold_asset,
                0,
                cell[0],
                cell[1],
            )
        ]

    def _cancel_all(self, cmd: CancelAll, src: InputRef, ts: int) -> list[RiskEvent]:
        acct = self._trader(cmd.account)
        symbol = cmd.market or ""
        if acct is None:
            return self._refuse(
                "cancel_all",
                cmd.account,
                symbol,
                None,
                None,
                RiskCode.INVALID_ADDRESS,
                INVALID_ADDRESS,
                ts,
                src,
            )
        if cmd.market is not None and cmd.market not in self.markets:
            return self._refuse(
                "cancel_all",
                acct.addr,
                symbol,
                None,
                None,
                RiskCode.MARKET_UNAVAILABLE,
                f"unknown market {symbol}",
                ts,
                src,
            )
        if cmd.via is not None:
            _check_via(cmd.via)
            return self._cancel_via(acct, cmd.market, cmd.via, ts, src)
        return self._cancel_all_of(acct, cmd.market, CancelReason.USER, ts, src)

    def _cancel_via(
        self, acct: Account, market: str | None, via: str, ts: int, src: InputRef
    ) -> list[RiskEvent]:
        """A cancel of each open order of `acct` placed through the key `via` (in `market` if
        given), in order id order."""
        events: list[RiskEvent] = []
        for oid in sorted(acct.orders):
            o = acct.orders[oid]
            if o.via != via or (market is not None and o.market.symbol != market):
                continue
            self.log_seq += 1
            events.append(
                OrderCommandForwarded(
                    V,
                    ts,
                    self.log_seq,
                    src,
                    acct.addr,
                    o.market.symbol,
                    oid,
                    MatchCancel(
                        ts=ts,
                        account=acct.addr,
                        market=o.market.symbol,
                        order_id=oid,
                        reason=CancelReason.USER,
                    ),
                    None,
                    0,
                    0,
                    0,
                )
            )
        return events

    def _cancel_all_of(
        self, acct: Account, market: str | None, reason: CancelReason, ts: int, src: InputRef
    ) -> list[RiskEvent]:
        """One forwarded cancel_all per market (one matching shard each) with open orders.

        An explicit market is forwarded even when risk sees no open order there.
        """
        if market is not None:
            symbols = [market]
        else:
            busy = {o.market.symbol for o in acct.orders.values()}
            symbols = [s for s in self.markets if s in busy]  # in the order markets were added
        events: list[RiskEvent] = []
        for symbol in symbols:
            self.log_seq += 1
            events.append(
                OrderCommandForwarded(
                    V,
                    ts,
                    self.log_seq,
                    src,
                    acct.addr,
                    symbol,
                    None,
                    MatchCancelAll(ts=ts, account=acct.addr, market=symbol, reason=reason),
                    None,
                    0,
                    0,
                    0,
                )
            )
        return events


_VIA = re.compile(r"dk_[0-9a-f]{32}")


def _check_via(via: str | None) -> None:
    """`via` names an API key (its id, `dk_` + 32 hex digits) or nothing."""
    if via is not None and (type(via) is not str or not _VIA.fullmatch(via)):
        raise CommandError("via", "must be an API key id (dk_ and 32 hex digits)")
