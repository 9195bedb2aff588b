"""A naive reference risk ledger: the oracle of the property tests. Imports nothing from dex.risk.

Built from docs/risk.md alone and on purpose differently from the real ledger: it never keeps
a `locked` balance. It keeps each account's *total* per asset (deposits, trades, completed
withdrawals) and the state of each open order, and derives

    locked    = sum of hold(order) over open orders + pending withdrawals
    available = total - locked

where hold(order) is a formula of the order's state (what is left of it at its hold price).
One shard only (every account is its own); matching events are applied as they come.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dex.core import events as mev
from dex.core.enums import MarketStatus, OrderType, Side
from dex.core.markets import MarketParams

DAY = 24 * 3600 * 1_000_000_000
MAX = 2**63 - 1
HEX = set("0123456789abcdefABCDEF")
CID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class RefMarket:
    base: str
    quote: str
    lot: int  # base units per lot
    tlu: int  # quote units per tick x lot
    band: int
    last: int = 0
    status: MarketStatus = MarketStatus.ACTIVE
    backpressure: bool = False
    maker: int = 0
    taker: int = 0


@dataclass
class RefOrder:
    oid: int
    account: str
    market: str
    cid: str | None
    is_buy: bool
    kind: OrderType
    price: int  # limit price (limit / stop-limit), else 0
    cap: int  # per-lot hold price of a buy by size, else 0
    size: int  # lots, 0 when by quote amount
    quote_size: int
    initial_hold: int
    filled: int = 0
    spent: int = 0  # quote paid, buys by quote amount
    pending: int = 0
    amending: bool = False
    status: str = "pending"


@dataclass
class RefAccount:
    frozen: bool = False
    disabled: set[str] = field(default_factory=set)
    fees: tuple[int, int] | None = None
    max_open: int = 0
    max_notional: dict[str, int] = field(default_factory=dict)


class RefLedger:
    def __init__(self) -> None:
        self.assets: set[str] = set()
        self.markets: dict[str, RefMarket] = {}
        self.accounts: dict[str, RefAccount] = {}
        self.total: dict[tuple[str, str], int] = {}
        self.fees: dict[str, int] = {}
        self.orders: dict[int, RefOrder] = {}
        self.withdrawals: dict[int, tuple[str, str, int]] = {}
        self.deposits: set[tuple[str, int]] = set()
        self.memory: dict[tuple[str, str, str], tuple[int, int]] = {}  # key -> (oid, end ts)
        self.next_oid = 0
        self.next_wid = 0
        self.halt = False

    # ------------------------------------------------------------------ derived

    def hold(self, o: RefOrder) -> int:
        m = self.markets[o.market]
        if o.is_buy:
            base = o.quote_size - o.spent if o.quote_size else o.cap * (o.size - o.filled) * m.tlu
        elif o.size:
            base = (o.size - o.filled) * m.lot
        else:
            base = o.initial_hold - o.filled * m.lot
        return base + o.pending

    def locked(self, account: str, asset: str) -> int:
        total = 0
        for o in self.orders.values():
            m = self.markets[o.market]
            if o.account == account and (m.quote if o.is_buy else m.base) == asset:
                total += self.hold(o)
        for acc, a, amount in self.withdrawals.values():
            if acc == account and a == asset:
                total += amount
        return total

    def balance(self, account: str, asset: str) -> tuple[int, int]:
        locked = self.locked(account, asset)
        return self.total.get((account, asset), 0) - locked, locked

    def acct(self, account: str) -> RefAccount:
        return self.accounts.setdefault(account, RefAccount())

    @staticmethod
    def canonical(address: str) -> str | None:
        if len(address) != 42 or not address.startswith("0x") or not set(address[2:]) <= HEX:
            return None
        digits = address[2:]
        if digits in (digits.lower(), digits.upper()):
            return address.lower()
        return None  # the tests only use mixed case with a wrong checksum

    @staticmethod
    def fee(received: int, bps: int) -> int:
        return ceil_div(received * bps, 10_000)

    @staticmethod
    def rates_ok(maker: int, taker: int) -> bool:
        return abs(maker) <= 10_000 and abs(taker) <= 10_000 and maker + taker >= 0

    # ------------------------------------------------------------------ commands

    def command(self, name: str, ts: int, **c: Any) -> tuple[Any, ...]:
        """Apply a risk command; the outcome: ("ok", ...) or ("rejected", code) etc."""
        out: tuple[Any, ...] = getattr(self, "c_" + name)(ts, **c)
        return out

    def c_add_market(self, ts: int, params: MarketParams) -> tuple[Any, ...]:
        self.assets |= {params.base.symbol, params.quote.symbol}
        self.markets[params.symbol] = RefMarket(
            params.base.symbol,
            params.quote.symbol,
            params.lot_units,
            params.tick_lot_units,
            params.band_bps,
        )
        return ("ok",)

    def c_set_fees(self, ts: int, market: str, maker: int, taker: int) -> tuple[Any, ...]:
        if not self.rates_ok(maker, taker):
            return ("rejected", "invalid_fee_rates")
        self.markets[market].maker, self.markets[market].taker = maker, taker
        return ("ok",)

    def c_set_account_fees(
        self, ts: int, account: str, maker: int | None, taker: int | None
    ) -> tuple[Any, ...]:
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        if maker is not None and taker is not None and not self.rates_ok(maker, taker):
            return ("rejected", "invalid_fee_rates")
        self.acct(acc).fees = None if maker is None or taker is None else (maker, taker)
        return ("ok",)

    def c_set_limits(
        self, ts: int, account: str, max_open: int, notional: dict[str, int]
    ) -> tuple[Any, ...]:
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        a = self.acct(acc)
        a.max_open, a.max_notional = max_open, dict(notional)
        return ("ok",)

    def c_switch(
        self, ts: int, what: str, account: str, market: str | None, on: bool
    ) -> tuple[Any, ...]:
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        a = self.acct(acc)
        if what == "freeze":
            a.frozen = on  # matching cancels its orders; their events release the holds
        elif on:
            a.disabled.add(market or "")
        else:
            a.disabled.discard(market or "")
        return ("ok",)

    def c_halt(self, ts: int, on: bool) -> tuple[Any, ...]:
        self.halt = on
        return ("ok",)

    def c_backpressure(self, ts: int, market: str, on: bool) -> tuple[Any, ...]:
        self.markets[market].backpressure = on
        return ("ok",)

    def c_deposit(
        self, ts: int, account: str, asset: str, amount: int, tx: str, index: int
    ) -> tuple[Any, ...]:
        if (tx, index) in self.deposits:
            return ("nothing",)
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        if asset not in self.assets:
            return ("rejected", "unknown_asset")
        if amount <= 0 or self.total.get((acc, asset), 0) + amount > MAX:
            return ("rejected", "invalid_amount")
        self.deposits.add((tx, index))
        self.total[(acc, asset)] = self.total.get((acc, asset), 0) + amount
        return ("ok",)

    def c_withdraw(self, ts: int, account: str, asset: str, amount: int) -> tuple[Any, ...]:
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        if self.halt:
            return ("rejected", "global_halt")
        if self.acct(acc).frozen:
            return ("rejected", "account_frozen")
        if asset not in self.assets:
            return ("rejected", "unknown_asset")
        if not 0 < amount <= MAX:
            return ("rejected", "invalid_amount")
        if self.balance(acc, asset)[0] < amount:
            return ("rejected", "insufficient_funds")
        self.next_wid += 1
        self.withdrawals[self.next_wid] = (acc, asset, amount)
        return ("ok", self.next_wid)

    def c_withdrawal_done(self, ts: int, wid: int, completed: bool) -> tuple[Any, ...]:
        if wid not in self.withdrawals:
            return ("nothing",)
        acc, asset, amount = self.withdrawals.pop(wid)
        if completed:
            self.total[(acc, asset)] -= amount
        return ("ok",)

    def c_place(self, ts: int, **c: Any) -> tuple[Any, ...]:
        acc = self.canonical(c["account"])
        if acc is None:
            return ("rejected", "invalid_address")
        market, cid = c["market"], c.get("client_order_id")
        if cid is not None and not (0 < len(cid) <= 36 and set(cid) <= CID_CHARS):
            return ("rejected", "invalid_client_order_id")
        a = self.accounts.get(acc, RefAccount())
        if cid is not None:
            for o in self.orders.values():
                if (o.account, o.market, o.cid) == (acc, market, cid):
                    return ("duplicate", o.oid)
            hit = self.memory.get((acc, market, cid))
            if hit is not None and ts - hit[1] < DAY:
                return ("duplicate", hit[0])
        m = self.markets.get(market)
        if self.halt:
            return ("rejected", "global_halt")
        if m is None or m.backpressure or m.status not in ("active", "post_only"):
            return ("rejected", "market_unavailable")
        if a.frozen:
            return ("rejected", "account_frozen")
        if "" in a.disabled or market in a.disabled:
            return ("rejected", "trading_disabled")
        kind, is_buy = c["type"], c["side"] == Side.BUY
        size, price, quote_size = c.get("size", 0), c.get("price", 0), c.get("quote_size", 0)
        max_price = min_price = 0
        if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            notional, ref = price * size * m.tlu, 1
        else:
            ref = c.get("trigger_price", 0) if kind == OrderType.STOP_MARKET else m.last
            if ref and is_buy:
                max_price = ref * (10_000 + m.band) // 10_000
            elif ref:
                min_price = max(1, ceil_div(ref * (10_000 - m.band), 10_000))
            notional = quote_size if quote_size else (max_price or min_price) * size * m.tlu
            if not ((is_buy and size) or (not is_buy and quote_size)):
                ref = 1  # needs no reference
        limit = a.max_notional.get(m.quote, 0)
        if limit and notional > limit:
            return ("rejected", "notional_limit")
        if a.max_open and sum(o.account == acc for o in self.orders.values()) >= a.max_open:
            return ("rejected", "open_orders_limit")
        if not ref:
            return ("rejected", "no_reference_price")
        cap = 0
        if is_buy and quote_size:
            hold = quote_size
        elif is_buy:
            cap = price or max_price
            hold = cap * size * m.tlu
        elif size:
            hold = size * m.lot
        else:
            hold = ceil_div(quote_size, min_price * m.tlu) * m.lot
        asset = m.quote if is_buy else m.base
        if hold > self.balance(acc, asset)[0] or (acc, asset) not in self.total:
            return ("rejected", "insufficient_funds")
        self.next_oid += 1
        self.orders[self.next_oid] = RefOrder(
            self.next_oid, acc, market, cid, is_buy, kind, price, cap, size, quote_size, hold
        )
        return ("accepted", self.next_oid, hold, max_price, min_price)

    def _open(self, account: str, market: str, oid: int | None, cid: str | None) -> RefOrder | None:
        for o in self.orders.values():
            if (o.account, o.market) == (account, market) and (
                o.oid == oid if oid is not None else o.cid == cid
            ):
                return o
        return None

    def c_amend(
        self,
        ts: int,
        account: str,
        market: str,
        oid: int | None,
        cid: str | None,
        price: int,
        size: int,
    ) -> tuple[Any, ...]:
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        o = self._open(acc, market, oid, cid)
        a = self.accounts.get(acc, RefAccount())
        if o is None:
            return ("rejected", "unknown_order")
        if self.halt:
            return ("rejected", "global_halt")
        if a.frozen:
            return ("rejected", "account_frozen")
        if "" in a.disabled or market in a.disabled:
            return ("rejected", "trading_disabled")
        if o.amending:
            return ("rejected", "amend_in_progress")
        m = self.markets[market]
        inc = 0
        if o.kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            new_size, new_price = size or o.size, price or o.price
            left, new_left = o.size - o.filled, (size or o.size) - o.filled
            if new_left > 0:
                if o.is_buy:  # each lot already held keeps min(old, new) price of it
                    inc = max(0, new_price * new_left - min(o.price, new_price) * left) * m.tlu
                else:
                    inc = max(0, new_left - left) * m.lot
            limit = a.max_notional.get(m.quote, 0)
            if limit and new_price * new_size * m.tlu > limit:
                return ("rejected", "notional_limit")
        asset = m.quote if o.is_buy else m.base
        if inc > self.balance(acc, asset)[0]:
            return ("rejected", "insufficient_funds")
        o.pending, o.amending = inc, True
        return ("forwarded", inc)

    def c_cancel(
        self, ts: int, account: str, market: str, oid: int | None, cid: str | None
    ) -> tuple[Any, ...]:
        acc = self.canonical(account)
        if acc is None:
            return ("rejected", "invalid_address")
        if self._open(acc, market, oid, cid) is None:
            return ("rejected", "unknown_order")
        return ("forwarded", 0)

    # ------------------------------------------------------------------ matching events

    def event(self, e: mev.Event, ts: int) -> None:
        if isinstance(e, mev.Trade):
            m = self.markets[e.market]
            m.last = e.price
            base, quote = e.size * m.lot, e.price * e.size * m.tlu
            for oid, maker in ((e.maker_order_id, True), (e.taker_order_id, False)):
                o = self.orders[oid]
                a = self.acct(o.account)
                rates = a.fees if a.fees is not None else (m.maker, m.taker)
                bps = rates[0] if maker else rates[1]
                if o.is_buy:
                    got, paid, got_asset, paid_asset = base, quote, m.base, m.quote
                else:
                    got, paid, got_asset, paid_asset = quote, base, m.quote, m.base
                fee = self.fee(got, bps)
                self.total[(o.account, paid_asset)] -= paid
                self.total[(o.account, got_asset)] = (
                    self.total.get((o.account, got_asset), 0) + got - fee
                )
                self.fees[got_asset] = self.fees.get(got_asset, 0) + fee
                o.filled += e.size
                if o.is_buy and o.quote_size:
                    o.spent += quote
        elif isinstance(e, mev.Filled | mev.Cancelled | mev.Expired | mev.Rejected):
            o = self.orders.pop(e.order_id)
            if o.cid is not None:
                self.memory[(o.account, o.market, o.cid)] = (o.oid, ts)
        elif isinstance(e, mev.Amended):
            o = self.orders[e.order_id]
            o.size, o.price, o.pending, o.amending = e.size, e.price, 0, False
            if o.is_buy:
                o.cap = e.price
        elif isinstance(e, mev.AmendRejected):
            o2 = self.orders.get(e.order_id or 0)
            if o2 is not None:
                o2.pending, o2.amending = 0, False
        elif isinstance(e, mev.MarketStatusChanged):
            self.markets[e.market].status = e.status
