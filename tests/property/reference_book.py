"""A naive reference of the matching core, built from docs/matching-rules.md alone.

Obviously correct rather than fast: one list of resting orders per market, sorted on demand by
(price, priority counter); best prices found by scanning; FOK decided by deep-copying the whole
engine and running the ordinary matching on the copy. It imports nothing from `dex.matching`.

`RefEngine().apply(cmd, input_ref) -> list[Event]` has the same shape as the real engine. The
free-text `message` of rejection events is left empty (the test does not compare it).

Where the page leaves a detail open, this is the reading taken (the engine agrees on each):

- `cancelled.size` / `quote_size` are what is cancelled (the remaining lots / quote left), and
  `expired.size` is the remaining lots; `filled.size` is the order's size (for an order by
  quote, the lots it got).
- A stop_market by quote is checked against `min_notional` like a market order by quote.
- `amend_rejected` / `cancel_rejected` repeat the command's `order_id` / `client_order_id`.
- A cancel naming both ids uses `order_id`, as the page says for an amend; an amend naming
  neither is a CommandError, as the page says for a cancel.
- For an order by quote, the lots "available" at a level are those of one resting order's
  visible part (matching goes order by order).
- `set_market_status` to the current status still emits `market_status_changed`.
- `add_asset` / `add_market` with an explicit `ts` need it above the previous one; a second
  asset or market of the same name is a CommandError.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction

from dex.core.commands import (
    SCHEMA_VERSION,
    AddAsset,
    AddMarket,
    Amend,
    Cancel,
    CancelAll,
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
from dex.core.markets import Asset, MarketParams, check_asset, check_market_symbol

LIMIT_2_63 = 2**63
STOP_TYPES = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT)
MARKET_TYPES = (OrderType.MARKET, OrderType.STOP_MARKET)
RESTING_TIFS = (TimeInForce.GTC, TimeInForce.GTD)


@dataclass
class RefOrder:
    order_id: int
    market: str
    account: str
    client_order_id: str | None
    side: Side
    type: OrderType
    price: int
    size: int
    quote_size: int
    tif: TimeInForce
    post_only: bool
    stp: STP
    expires_at: int | None
    trigger_price: int
    display_size: int
    max_price: int
    min_price: int
    accept_no: int  # acceptance order (stops trigger in this order)
    filled: int = 0
    quote_left: int = 0  # orders by quote: what is left to spend / receive
    visible: int = 0
    priority: int = 0  # time priority within a price level (smaller = older)

    @property
    def by_quote(self) -> bool:
        return self.quote_size > 0

    @property
    def remaining(self) -> int:
        return self.size - self.filled

    @property
    def is_limit(self) -> bool:
        return self.type in LIMIT_TYPES


@dataclass
class RefMarket:
    params: MarketParams
    status: MarketStatus
    last_price: int | None = None
    book: list[RefOrder] = field(default_factory=list)  # resting orders, unsorted
    stops: list[RefOrder] = field(default_factory=list)  # untriggered, in acceptance order
    trade_id: int = 0

    def __deepcopy__(self, memo: dict[int, object]) -> RefMarket:
        # MarketParams is immutable after construction and has __slots__: share it.
        new = RefMarket(self.params, self.status, self.last_price)
        memo[id(self)] = new
        new.book = copy.deepcopy(self.book, memo)
        new.stops = copy.deepcopy(self.stops, memo)
        new.trade_id = self.trade_id
        return new

    def side_sorted(self, side: Side) -> list[RefOrder]:
        """Resting orders of `side`, best price first, then oldest first."""
        orders = [o for o in self.book if o.side == side]
        if side == Side.BUY:
            return sorted(orders, key=lambda o: (-o.price, o.priority))
        return sorted(orders, key=lambda o: (o.price, o.priority))

    def best(self, side: Side) -> int | None:
        prices = [o.price for o in self.book if o.side == side]
        if not prices:
            return None
        return max(prices) if side == Side.BUY else min(prices)

    def open_orders(self) -> list[RefOrder]:
        return self.book + self.stops

    def reference(self) -> Fraction | None:
        if self.last_price is not None:
            return Fraction(self.last_price)
        bid, ask = self.best(Side.BUY), self.best(Side.SELL)
        if bid is not None and ask is not None:
            return Fraction(bid + ask, 2)
        return None


def _opposite(side: Side) -> Side:
    return Side.SELL if side == Side.BUY else Side.BUY


def _check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(name, "must be an integer")
    if not 0 <= value < LIMIT_2_63:
        raise CommandError(name, "must be in [0, 2^63)")


def _outside_band(price: int, ref: Fraction | None, band_bps: int) -> bool:
    if ref is None:
        return False
    return abs(price - ref) * 10000 > band_bps * ref


def _market_price_allowed_by_band(side: Side, price: int, ref: Fraction | None, b: int) -> bool:
    if ref is None:
        return True
    if side == Side.BUY:
        return price * 10000 <= ref * (10000 + b)
    return price * 10000 >= ref * (10000 - b)


class RefEngine:
    def __init__(self) -> None:
        self.ts = 0
        self.log_seq = 0
        self.seqs: dict[str, int] = {}
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, RefMarket] = {}  # insertion order = order added
        self.space_max: dict[int, int] = {}
        self.max_id = 0
        self.priority = 0
        self.accept_no = 0
        # per command
        self._events: list[Event] = []
        self._input: InputRef = InputRef("", 0)
        self._cmd_ts = 0
        self._refs: dict[str, Fraction | None] = {}
        self._traded: list[str] = []  # markets that traded during the command, in order

    # ------------------------------------------------------------------ state
    def state(self) -> object:
        """A comparable dump of the whole state (for 'nothing changed' checks)."""

        def order(o: RefOrder) -> tuple[object, ...]:
            return tuple(vars(o).items())

        return (
            self.ts,
            self.log_seq,
            sorted(self.seqs.items()),
            sorted(self.assets.items()),
            [
                (
                    s,
                    m.status,
                    m.last_price,
                    m.trade_id,
                    sorted(order(o) for o in m.book),
                    [order(o) for o in m.stops],
                )
                for s, m in self.markets.items()
            ],
            sorted(self.space_max.items()),
            self.max_id,
            self.priority,
            self.accept_no,
        )

    def open_orders(self, market: str) -> list[RefOrder]:
        return self.markets[market].open_orders()

    # ------------------------------------------------------------------ events
    def _emit(self, cls: type, market: str, *fields: object) -> None:
        seq = self.seqs.get(market, 0) + 1
        self.seqs[market] = seq
        self.log_seq += 1
        self._events.append(
            cls(SCHEMA_VERSION, market, seq, self._cmd_ts, self.log_seq, self._input, *fields)
        )

    def _cancelled(self, o: RefOrder, reason: CancelReason) -> None:
        if o.by_quote:
            size, quote = None, o.quote_left
        else:
            size, quote = o.remaining, None
        self._emit(
            Cancelled,
            o.market,
            o.order_id,
            o.client_order_id,
            o.account,
            o.side,
            size,
            quote,
            o.filled,
            reason,
        )

    def _filled(self, o: RefOrder) -> None:
        size = o.filled if o.by_quote else o.size
        self._emit(Filled, o.market, o.order_id, o.client_order_id, o.account, o.side, size)

    # ------------------------------------------------------------------ apply
    def apply(self, cmd: object, input_ref: InputRef) -> list[Event]:
        self._validate(cmd)  # raises CommandError, nothing changed
        self._events = []
        self._input = input_ref
        ts = cmd.ts  # type: ignore[attr-defined]
        if isinstance(cmd, AddAsset | AddMarket) and ts == 0:
            ts = self.ts
        self.ts = ts
        self._cmd_ts = ts
        self._expire()
        self._refs = {s: m.reference() for s, m in self.markets.items()}
        self._traded = []
        if isinstance(cmd, AddAsset):
            self.assets[cmd.asset.symbol] = cmd.asset
            self._emit(AssetAdded, "", cmd.asset)
        elif isinstance(cmd, AddMarket):
            spec = cmd.spec
            params = MarketParams(spec, self.assets[spec.base], self.assets[spec.quote])
            self.markets[spec.market] = RefMarket(params, spec.status)
            self._emit(MarketAdded, spec.market, spec)
        elif isinstance(cmd, SetMarketStatus):
            m = self.markets[cmd.market]
            previous = m.status
            m.status = cmd.status
            self._emit(MarketStatusChanged, cmd.market, cmd.status, previous)
            if cmd.status == MarketStatus.CANCEL_ONLY:
                # entering cancel_only cancels the untriggered stops, in acceptance order
                for o in list(m.stops):
                    self._remove(o)
                    self._cancelled(o, CancelReason.MARKET_STATUS)
        elif isinstance(cmd, Place):
            self._place(cmd)
        elif isinstance(cmd, Amend):
            self._amend(cmd)
        elif isinstance(cmd, Cancel):
            self._cancel(cmd)
        elif isinstance(cmd, CancelAll):
            self._cancel_all(cmd)
        elif isinstance(cmd, Tick):
            pass
        self._check_triggers()
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ validation
    def _validate(self, cmd: object) -> None:
        if not isinstance(
            cmd, AddAsset | AddMarket | SetMarketStatus | Place | Amend | Cancel | CancelAll | Tick
        ):
            raise CommandError("cmd", "unknown command")
        _check_int(cmd.ts, "ts")
        if isinstance(cmd, AddAsset | AddMarket):
            if cmd.ts != 0 and cmd.ts <= self.ts:
                raise CommandError("ts", "must increase")
        elif cmd.ts <= self.ts:
            raise CommandError("ts", "must increase")

        if isinstance(cmd, AddAsset):
            check_asset(cmd.asset)
            if cmd.asset.symbol in self.assets:
                raise CommandError("asset", "already exists")
            return
        if isinstance(cmd, AddMarket):
            spec = cmd.spec
            check_market_symbol(spec)
            if spec.market in self.markets:
                raise CommandError("market", "already exists")
            for name in (spec.base, spec.quote):
                if name not in self.assets:
                    raise CommandError("asset", f"unknown asset {name}")
            MarketParams(spec, self.assets[spec.base], self.assets[spec.quote])
            return
        if isinstance(cmd, Tick):
            return
        if isinstance(cmd, CancelAll):
            if cmd.market is not None and cmd.market not in self.markets:
                raise CommandError("market", "unknown market")
            return
        if cmd.market not in self.markets:
            raise CommandError("market", "unknown market")
        if isinstance(cmd, SetMarketStatus):
            if cmd.status not in set(MarketStatus):
                raise CommandError("status", "unknown status")
            return
        if isinstance(cmd, Cancel):
            if cmd.order_id is not None:
                _check_int(cmd.order_id, "order_id")
            if cmd.order_id is None and cmd.client_order_id is None:
                raise CommandError("order_id", "order_id or client_order_id required")
            return
        if isinstance(cmd, Amend):
            if cmd.order_id is not None:
                _check_int(cmd.order_id, "order_id")
            _check_int(cmd.price, "price")
            _check_int(cmd.size, "size")
            # The page requires an id explicitly only for cancel; an amend naming no order is
            # taken to be malformed the same way.
            if cmd.order_id is None and cmd.client_order_id is None:
                raise CommandError("order_id", "order_id or client_order_id required")
            if cmd.price == 0 and cmd.size == 0:
                raise CommandError("size", "price or size required")
            return
        assert isinstance(cmd, Place)
        self._validate_place(cmd)

    def _validate_place(self, c: Place) -> None:
        for name in (
            "size",
            "price",
            "quote_size",
            "trigger_price",
            "display_size",
            "max_price",
            "min_price",
        ):
            _check_int(getattr(c, name), name)
        for name in ("order_id", "expires_at"):
            if getattr(c, name) is not None:
                _check_int(getattr(c, name), name)
        if c.side not in set(Side):
            raise CommandError("side", "must be buy or sell")
        if c.type not in set(OrderType):
            raise CommandError("type", "unknown order type")
        if c.tif not in set(TimeInForce):
            raise CommandError("tif", "unknown tif")
        if c.type in LIMIT_TYPES:
            if c.price <= 0 or c.size <= 0:
                raise CommandError("price", "limit orders need price and size")
            if c.quote_size != 0:
                raise CommandError("quote_size", "not for limit orders")
            if c.max_price != 0 or c.min_price != 0:
                raise CommandError("max_price", "not for limit orders")
        else:
            if c.price != 0:
                raise CommandError("price", "market orders have no price")
            if (c.size > 0) == (c.quote_size > 0):
                raise CommandError("size", "exactly one of size and quote_size")
            if c.tif not in (TimeInForce.IOC, TimeInForce.FOK):
                raise CommandError("tif", "market orders are IOC or FOK")
            if c.tif == TimeInForce.FOK and c.size == 0:
                raise CommandError("tif", "FOK only by size")
            if c.post_only:
                raise CommandError("post_only", "not for market orders")
            if c.display_size != 0:
                raise CommandError("display_size", "not for market orders")
            if c.side == Side.BUY and c.min_price != 0:
                raise CommandError("min_price", "buys carry max_price")
            if c.side == Side.SELL and c.max_price != 0:
                raise CommandError("max_price", "sells carry min_price")
        if c.type in STOP_TYPES:
            if c.trigger_price <= 0:
                raise CommandError("trigger_price", "stops need a trigger price")
            if c.post_only:
                raise CommandError("post_only", "not for stops")
            if c.display_size != 0:
                raise CommandError("display_size", "not for stops")
        elif c.trigger_price != 0:
            raise CommandError("trigger_price", "only for stops")
        if (c.tif == TimeInForce.GTD) != (c.expires_at is not None):
            raise CommandError("expires_at", "GTD iff expires_at")
        if c.tif in (TimeInForce.IOC, TimeInForce.FOK) and (c.post_only or c.display_size):
            raise CommandError("tif", "IOC/FOK cannot be post-only or iceberg")
        if c.display_size != 0:
            if not 0 < c.display_size <= c.size:
                raise CommandError("display_size", "must be in (0, size]")
            if c.type != OrderType.LIMIT or c.tif not in RESTING_TIFS:
                raise CommandError("display_size", "icebergs are GTC/GTD limit orders")

    # ------------------------------------------------------------------ expiry
    def _expire(self) -> None:
        due = [
            o
            for m in self.markets.values()
            for o in m.open_orders()
            if o.expires_at is not None and o.expires_at <= self._cmd_ts
        ]
        for o in sorted(due, key=lambda o: (o.expires_at, o.order_id)):
            self._remove(o)
            self._emit(
                Expired,
                o.market,
                o.order_id,
                o.client_order_id,
                o.account,
                o.side,
                o.remaining,
                o.filled,
            )

    def _remove(self, o: RefOrder) -> None:
        m = self.markets[o.market]
        for lst in (m.book, m.stops):
            for i, x in enumerate(lst):
                if x is o:
                    del lst[i]
                    return
        raise AssertionError("order not open")

    # ------------------------------------------------------------------ place
    def _place(self, c: Place) -> None:
        m = self.markets[c.market]
        p = m.params
        ref = self._refs[c.market]
        oid = c.order_id if c.order_id is not None else self.max_id + 1

        def reject(code: RejectCode) -> None:
            self._consume(oid)
            self._emit(Rejected, c.market, oid, c.client_order_id, c.account, c.side, code, "")

        if m.status != MarketStatus.ACTIVE and not (
            m.status == MarketStatus.POST_ONLY and c.type == OrderType.LIMIT and c.post_only
        ):
            return reject(RejectCode.MARKET_STATUS)
        if oid <= self.space_max.get(oid >> 40, -1):
            return reject(RejectCode.DUPLICATE_ORDER_ID)
        if c.client_order_id is not None and any(
            o.account == c.account and o.client_order_id == c.client_order_id
            for o in m.open_orders()
        ):
            return reject(RejectCode.DUPLICATE_CLIENT_ORDER_ID)
        if c.tif == TimeInForce.GTD and c.expires_at is not None and c.expires_at <= self._cmd_ts:
            return reject(RejectCode.ALREADY_EXPIRED)
        if c.size > 0 and c.size < p.min_size_lots:
            return reject(RejectCode.BELOW_MIN_SIZE)
        if c.type in LIMIT_TYPES and c.price * c.size * p.tick_lot_units < p.min_notional_units:
            return reject(RejectCode.BELOW_MIN_NOTIONAL)
        # The page says "market by quote"; a stop_market by quote is checked the same way
        # (as stop_limit is checked like limit). Ambiguous in the page.
        if c.type in MARKET_TYPES and 0 < c.quote_size < p.min_notional_units:
            return reject(RejectCode.BELOW_MIN_NOTIONAL)
        can_rest = c.type in STOP_TYPES or (c.type == OrderType.LIMIT and c.tif in RESTING_TIFS)
        if (
            p.max_open_orders
            and can_rest
            and sum(o.account == c.account for o in m.open_orders()) >= p.max_open_orders
        ):
            return reject(RejectCode.TOO_MANY_OPEN_ORDERS)
        if c.type == OrderType.LIMIT and _outside_band(c.price, ref, p.band_bps):
            return reject(RejectCode.OUTSIDE_PRICE_BAND)
        if c.type in STOP_TYPES and m.last_price is not None:
            if c.side == Side.BUY and m.last_price >= c.trigger_price:
                return reject(RejectCode.STOP_WOULD_TRIGGER)
            if c.side == Side.SELL and m.last_price <= c.trigger_price:
                return reject(RejectCode.STOP_WOULD_TRIGGER)
        if c.post_only and self._would_take(m, c.side, c.price):
            return reject(RejectCode.POST_ONLY_WOULD_TAKE)

        self._consume(oid)
        self.accept_no += 1
        o = RefOrder(
            order_id=oid,
            market=c.market,
            account=c.account,
            client_order_id=c.client_order_id,
            side=c.side,
            type=c.type,
            price=c.price,
            size=c.size,
            quote_size=c.quote_size,
            tif=c.tif,
            post_only=c.post_only,
            stp=c.stp,
            expires_at=c.expires_at,
            trigger_price=c.trigger_price,
            display_size=c.display_size,
            max_price=c.max_price,
            min_price=c.min_price,
            accept_no=self.accept_no,
            quote_left=c.quote_size,
        )
        self._emit(Accepted, c.market, oid, c)  # `order` is the accepted command itself
        if c.type in STOP_TYPES:
            m.stops.append(o)
        else:
            self._take(m, o, ref)

    def _consume(self, oid: int) -> None:
        space = oid >> 40
        self.space_max[space] = max(self.space_max.get(space, -1), oid)
        self.max_id = max(self.max_id, oid)

    @staticmethod
    def _would_take(m: RefMarket, side: Side, price: int) -> bool:
        if side == Side.BUY:
            ask = m.best(Side.SELL)
            return ask is not None and price >= ask
        bid = m.best(Side.BUY)
        return bid is not None and price <= bid

    # ------------------------------------------------------------------ matching
    def _take(self, m: RefMarket, o: RefOrder, ref: Fraction | None) -> None:
        """Run `o` (not in the book) as the incoming taker, FOK checked first."""
        if o.tif == TimeInForce.FOK:
            sim, sim_order = copy.deepcopy((self, o))
            sim._events = []
            sim._match(sim.markets[m.params.symbol], sim_order, ref)
            if sim_order.filled < o.size:
                self._cancelled(o, CancelReason.FOK)
                return
        self._match(m, o, ref)

    def _match(self, m: RefMarket, o: RefOrder, ref: Fraction | None) -> None:
        tlu = m.params.tick_lot_units
        reason: CancelReason | None = None
        while True:
            if (o.quote_left == 0) if o.by_quote else (o.remaining == 0):
                self._filled(o)
                return
            opposite = m.side_sorted(_opposite(o.side))
            if not opposite:
                reason = CancelReason.IOC if o.is_limit else CancelReason.NO_LIQUIDITY
                break
            maker = opposite[0]
            px = maker.price
            if o.is_limit:
                if (o.side == Side.BUY and px > o.price) or (o.side == Side.SELL and px < o.price):
                    reason = CancelReason.IOC
                    break
            else:
                if not _market_price_allowed_by_band(o.side, px, ref, m.params.band_bps):
                    reason = CancelReason.PRICE_BAND
                    break
                if (o.side == Side.BUY and o.max_price and px > o.max_price) or (
                    o.side == Side.SELL and o.min_price and px < o.min_price
                ):
                    reason = CancelReason.PRICE_PROTECTION
                    break
            if maker.account == o.account and o.stp != STP.NONE:
                if o.stp == STP.EXPIRE_TAKER:
                    reason = CancelReason.STP
                    break
                self._remove(maker)
                self._cancelled(maker, CancelReason.STP)
                if o.stp == STP.EXPIRE_BOTH:
                    reason = CancelReason.STP
                    break
                continue
            if o.by_quote:
                lots = min(maker.visible, o.quote_left // (px * tlu))
                if lots == 0:
                    reason = CancelReason.IOC
                    break
            else:
                lots = min(maker.visible, o.remaining)
            # trade
            m.trade_id += 1
            m.last_price = px
            if o.market not in self._traded:
                self._traded.append(o.market)
            maker.filled += lots
            maker.visible -= lots
            o.filled += lots
            if o.by_quote:
                o.quote_left -= px * lots * tlu
            self._emit(
                Trade,
                o.market,
                m.trade_id,
                px,
                lots,
                o.side,
                maker.order_id,
                maker.account,
                maker.client_order_id,
                maker.remaining,
                o.order_id,
                o.account,
                o.client_order_id,
                None if o.by_quote else o.remaining,
                o.quote_left if o.by_quote else None,
            )
            if maker.remaining == 0:
                self._remove(maker)
                self._filled(maker)
            elif maker.visible == 0:
                maker.visible = min(maker.display_size, maker.remaining)
                maker.priority = self._next_priority()
        # the taker stopped with something left
        if reason != CancelReason.STP and o.is_limit and o.tif in RESTING_TIFS:
            self._rest(m, o)
        else:
            self._cancelled(o, reason)

    def _next_priority(self) -> int:
        self.priority += 1
        return self.priority

    def _rest(self, m: RefMarket, o: RefOrder) -> None:
        o.visible = min(o.display_size, o.remaining) if o.display_size else o.remaining
        o.priority = self._next_priority()
        m.book.append(o)

    # ------------------------------------------------------------------ stops
    def _check_triggers(self) -> None:
        """After a command that traded: the stops of the market(s) it traded in."""
        for symbol in self._traded:
            m = self.markets[symbol]
            assert m.status == MarketStatus.ACTIVE  # only an active market trades
            ref = self._refs.get(symbol)
            while True:
                last = m.last_price
                assert last is not None
                hit = next(
                    (
                        s
                        for s in m.stops  # acceptance order
                        if (s.side == Side.BUY and last >= s.trigger_price)
                        or (s.side == Side.SELL and last <= s.trigger_price)
                    ),
                    None,
                )
                if hit is None:
                    break
                self._remove(hit)
                self._emit(
                    Triggered,
                    symbol,
                    hit.order_id,
                    hit.client_order_id,
                    hit.account,
                    hit.side,
                    hit.trigger_price,
                    last,
                )
                if hit.type == OrderType.STOP_LIMIT and _outside_band(
                    hit.price, ref, m.params.band_bps
                ):
                    self._cancelled(hit, CancelReason.PRICE_BAND)
                else:
                    self._take(m, hit, ref)

    # ------------------------------------------------------------------ amend / cancel
    def _find(
        self, m: RefMarket, account: str, oid: int | None, coid: str | None
    ) -> RefOrder | None:
        for o in m.open_orders():
            if oid is not None:
                if o.order_id == oid:
                    return o if o.account == account else None
            elif coid is not None and o.account == account and o.client_order_id == coid:
                return o
        return None

    def _amend(self, c: Amend) -> None:
        m = self.markets[c.market]
        ref = self._refs[c.market]

        def reject(code: RejectCode) -> None:
            self._emit(AmendRejected, c.market, c.order_id, c.client_order_id, c.account, code, "")

        o = self._find(m, c.account, c.order_id, c.client_order_id)
        if o is None:
            return reject(RejectCode.UNKNOWN_ORDER)
        if o in m.stops:
            return reject(RejectCode.NOT_AMENDABLE)
        if m.status in (MarketStatus.CANCEL_ONLY, MarketStatus.HALTED):
            return reject(RejectCode.MARKET_STATUS)
        new_size = c.size or o.size
        new_price = c.price or o.price
        if new_size <= o.filled:
            self._remove(o)
            self._cancelled(o, CancelReason.AMEND)
            return None

        def amended(kept: bool) -> None:
            self._emit(
                Amended,
                o.market,
                o.order_id,
                o.client_order_id,
                o.account,
                o.side,
                o.price,
                o.size,
                o.remaining,
                kept,
            )

        if new_price != o.price:
            if _outside_band(new_price, ref, m.params.band_bps):
                return reject(RejectCode.OUTSIDE_PRICE_BAND)
            would_take = self._would_take(m, o.side, new_price)
            if o.post_only and would_take:
                return reject(RejectCode.POST_ONLY_WOULD_TAKE)
            if m.status == MarketStatus.POST_ONLY and would_take:
                return reject(RejectCode.MARKET_STATUS)
            self._remove(o)
            o.price = new_price
            o.size = new_size
            amended(False)
            o.visible = min(o.display_size, o.remaining) if o.display_size else o.remaining
            self._match(m, o, ref)
        elif new_size < o.size:
            o.size = new_size
            o.visible = min(o.visible, o.remaining)
            amended(True)
        elif new_size > o.size:
            o.size = new_size
            o.visible = min(o.display_size, o.remaining) if o.display_size else o.remaining
            o.priority = self._next_priority()
            amended(False)
        else:
            amended(True)
        return None

    def _cancel(self, c: Cancel) -> None:
        m = self.markets[c.market]
        o = self._find(m, c.account, c.order_id, c.client_order_id)
        if o is None:
            self._emit(
                CancelRejected,
                c.market,
                c.order_id,
                c.client_order_id,
                c.account,
                RejectCode.UNKNOWN_ORDER,
                "",
            )
            return
        self._remove(o)
        self._cancelled(o, c.reason)

    def _cancel_all(self, c: CancelAll) -> None:
        symbols = list(self.markets) if c.market is None else [c.market]
        for s in symbols:
            mine = [o for o in self.markets[s].open_orders() if o.account == c.account]
            for o in sorted(mine, key=lambda o: o.order_id):
                self._remove(o)
                self._cancelled(o, c.reason)
