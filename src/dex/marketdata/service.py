"""Market data: public L2 books, recent trades and tickers, kept in memory from match events.

Reads every matching shard's log (`dex:{me:m}:events`) as the reader `market-data` and keeps,
per market: the L2 book (price -> visible size per side), the last `recent_trades` trades
(`DEX_MARKET_DATA_RECENT_TRADES`, 1000) and a ticker (last price, best bid/ask, 24-hour volume,
high and low). Served under `/v1/markets/...`; a depth query returns at most `max_levels`
levels per side (`DEX_MARKET_DATA_MAX_LEVELS`).
Prices are ticks, sizes lots, times nanoseconds (integers; the gateway converts).

The book is rebuilt from events by tracking each open order's visible resting size by id:
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
These are the engine's own rules (docs/matching-rules.md), so the book equals, level by level,
the visible sizes of `Engine.view`.

Restart, and what the writers may trim (the choice this service makes). The state lives only
in memory, so a restart must rebuild it without the log from the beginning:
- the book is rebuilt from the matching shard's latest snapshot (`Engine.restore` of its core:
  every open order with its visible part, every waiting stop, each market's status and last
  price), then the log entries after the snapshot are applied;
- the trades and tickers need the entries holding the last trades kept and the last 24 hours
  of trades, so the position committed on each log is the entry before the oldest trade still
  kept (or the position applied, if no trade is kept). On restart the entries from the
  committed position up to the snapshot are read for their trades only.
So the writers trim below `min(snapshot, oldest trade kept)`, never below what a restart needs,
and a log that was trimmed further (a bug, or a lost snapshot) makes the service not-ready.
Costs and limits of this choice: a matching log keeps at least the entries of the last 24
hours in which its markets traded (the 24-hour figures could instead be snapshotted by this
service: not done); the 24-hour window counts whole minutes; several market-data replicas
share one recorded position (the highest), which is safe while each keeps up with the others
within the retained window. The bootstrap reads the snapshot, then the log from
`min(snapshot, committed)`; if the matching shard writes a newer snapshot and trims in
between (and our position was above the old snapshot), that read is refused (not-ready; a
restart bootstraps again) rather than anything skipped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from litestar import get
from litestar.params import FromPath, Parameter

from dex.bus import Bus
from dex.core import events as me
from dex.core.commands import Place
from dex.core.enums import OrderType, Side, TimeInForce
from dex.core.markets import MarketSpec
from dex.core.numbers import DAY_NS
from dex.matching import Engine
from dex.matching.market import MarketState
from dex.runtime.health import Health
from dex.runtime.http import ApiError
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.services.reader import BadList, Batch, LogReader, StopReading
from dex.services.shard import SNAPSHOT_VERSION
from dex.wire import codec
from dex.wire.layout import MARKET_DATA_READER, me_log, me_tag, snapshot_name

MINUTE_NS = 60_000_000_000
_RESTING_TIF = (TimeInForce.GTC, TimeInForce.GTD)


class _Order:
    """An open order's place in the L2 book."""

    __slots__ = ("display", "is_buy", "price", "remaining", "visible")

    def __init__(self, is_buy: bool, price: int, remaining: int, visible: int, display: int):
        self.is_buy = is_buy
        self.price = price
        self.remaining = remaining
        self.visible = visible
        self.display = display


class _Trade:
    __slots__ = ("log_seq", "price", "size", "taker_side", "trade_id", "ts")

    def __init__(self, ev: me.Trade, log_seq: int) -> None:
        self.trade_id = ev.trade_id
        self.price = ev.price
        self.size = ev.size
        self.taker_side = str(ev.aggressor)
        self.ts = ev.ts
        self.log_seq = log_seq


class _Bucket:
    """One minute of trades, for the 24-hour ticker figures."""

    __slots__ = ("count", "high", "log_seq", "low", "minute", "volume")

    def __init__(self, minute: int, log_seq: int) -> None:
        self.minute = minute
        self.log_seq = log_seq  # entry of its first trade
        self.volume = 0
        self.count = 0
        self.high = 0
        self.low = 0


class MarketBook:
    """One market's public state: L2 book, the last `recent_trades` trades, ticker figures."""

    def __init__(
        self,
        spec: MarketSpec,
        stream: str,
        recent_trades: int = DEFAULTS.market_data_recent_trades,
    ) -> None:
        self.symbol = spec.market
        self.base = spec.base
        self.quote = spec.quote
        self.stream = stream
        self.status = spec.status
        self.bids: dict[int, int] = {}  # price -> visible lots
        self.asks: dict[int, int] = {}
        self.orders: dict[int, _Order] = {}
        self.stops: dict[int, Place] = {}
        self.trades: deque[_Trade] = deque(maxlen=recent_trades)
        self.buckets: deque[_Bucket] = deque()
        self.last_price = 0
        self.log_seq = 0  # last log entry that changed this market

    @classmethod
    def from_engine(
        cls,
        m: MarketState,
        stream: str,
        recent_trades: int = DEFAULTS.market_data_recent_trades,
    ) -> MarketBook:
        """The book of a market as a restored engine holds it."""
        book = cls(m.params.spec, stream, recent_trades)
        book.status = m.status
        book.last_price = m.last
        for oid, o in m.orders.items():
            visible = o.visible if o.display else o.remaining
            book._add(oid, _Order(o.is_buy, o.price, o.remaining, visible, o.display))
        for oid, stop in m.stops.items():
            book.stops[oid] = stop.cmd
        return book

    # ------------------------------------------------------------------ book upkeep

    def _level(self, is_buy: bool, price: int, delta: int) -> None:
        side = self.bids if is_buy else self.asks
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

    def apply(self, ev: me.Event, log_seq: int) -> None:
        """Apply one matching event of this market (trades too: see `trade`)."""
        self.log_seq = log_seq
        if isinstance(ev, me.Trade):
            self._book_trade(ev)
            self.trade(ev, log_seq)
        elif isinstance(ev, me.Accepted):
            order = ev.order
            if order.type in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET):
                self.stops[ev.order_id] = order
            elif order.type is OrderType.LIMIT and order.tif in _RESTING_TIF:
                self._enter(ev.order_id, order)
        elif isinstance(ev, me.Triggered):
            stop = self.stops.pop(ev.order_id, None)
            if stop is not None and stop.type is OrderType.STOP_LIMIT and stop.tif in _RESTING_TIF:
                self._enter(ev.order_id, stop)
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
        elif isinstance(ev, (me.Filled, me.Cancelled, me.Expired)):
            self._remove(ev.order_id)
        elif isinstance(ev, me.MarketStatusChanged):
            self.status = ev.status

    def _book_trade(self, ev: me.Trade) -> None:
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

    def trade(self, ev: me.Trade, log_seq: int) -> None:
        """Record a trade for the trade list and the ticker (not the book)."""
        self.last_price = ev.price
        self.trades.append(_Trade(ev, log_seq))
        minute = ev.ts // MINUTE_NS
        b = self.buckets[-1] if self.buckets else None
        if b is None or b.minute != minute:
            b = _Bucket(minute, log_seq)
            b.high = b.low = ev.price
            self.buckets.append(b)
        b.volume += ev.size
        b.count += 1
        b.high = max(b.high, ev.price)
        b.low = min(b.low, ev.price)

    # ------------------------------------------------------------------ views

    def prune(self, now_ns: int) -> None:
        """Forget the minutes that are more than 24 hours old."""
        oldest = (now_ns - DAY_NS) // MINUTE_NS
        while self.buckets and self.buckets[0].minute < oldest:
            self.buckets.popleft()

    def oldest_needed(self) -> int | None:
        """The log entry of the oldest trade still kept (list or 24 hours), if any."""
        seqs = []
        if self.trades:
            seqs.append(self.trades[0].log_seq)
        if self.buckets:
            seqs.append(self.buckets[0].log_seq)
        return min(seqs) if seqs else None

    def depth(self, levels: int) -> dict[str, Any]:
        bids = sorted(self.bids.items(), reverse=True)[:levels]
        asks = sorted(self.asks.items())[:levels]
        return {
            "market": self.symbol,
            "log_seq": self.log_seq,
            "bids": [{"price_ticks": p, "size_lots": n} for p, n in bids],
            "asks": [{"price_ticks": p, "size_lots": n} for p, n in asks],
        }

    def recent_trades(self, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for t in reversed(self.trades):
            if len(out) >= limit:
                break
            out.append(
                {
                    "trade_id": t.trade_id,
                    "price_ticks": t.price,
                    "size_lots": t.size,
                    "taker_side": t.taker_side,
                    "ts": t.ts,
                }
            )
        return out

    def ticker(self, now_ns: int) -> dict[str, Any]:
        self.prune(now_ns)
        day = list(self.buckets)
        return {
            "market": self.symbol,
            "status": str(self.status),
            "last_price_ticks": self.last_price or None,
            "best_bid_ticks": max(self.bids) if self.bids else None,
            "best_ask_ticks": min(self.asks) if self.asks else None,
            "volume_24h_lots": sum(b.volume for b in day),
            "trades_24h": sum(b.count for b in day),
            "high_24h_ticks": max((b.high for b in day), default=None),
            "low_24h_ticks": min((b.low for b in day), default=None),
        }


class MarketDataService(LogReader):
    """The public market-data state of every market, from every matching shard's log."""

    def __init__(
        self,
        bus: Bus,
        *,
        risk_shards: int,
        matching_shards: int,
        health: Health,
        metrics: ServiceMetrics,
        log: Any,
        clock_ns: Callable[[], int] = time.time_ns,
        batch_size: int = 1000,
        read_timeout: float = 0.1,
        recent_trades: int = DEFAULTS.market_data_recent_trades,
        max_levels: int = DEFAULTS.market_data_max_levels,
    ) -> None:
        self.me_streams = [me_log(m) for m in range(matching_shards)]
        super().__init__(
            bus,
            self.me_streams,
            MARKET_DATA_READER,
            health=health,
            metrics=metrics,
            log=log,
            batch_size=batch_size,
            read_timeout=read_timeout,
        )
        self.risk_shards = risk_shards  # unused: market data reads matching logs only
        self.clock_ns = clock_ns
        self.recent_trades = recent_trades  # trades kept per market: the most a query returns
        self.max_levels = max_levels  # the most levels per side a depth query returns
        self.books: dict[str, MarketBook] = {}
        self.full_from: dict[str, int] = dict.fromkeys(self.me_streams, 0)
        self.bootstrapped = False
        self.m_trades = metrics.counter("trades", "total", "trades seen", ["market"])

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start tailing; the first pass rebuilds from each matching shard's snapshot (retried
        while the bus is unreachable; not ready until caught up)."""
        self.start_reading()

    async def prepare(self) -> None:
        if self.bootstrapped:
            return
        for m, stream in enumerate(self.me_streams):
            await self._bootstrap(m, stream)
        self.bootstrapped = True

    async def stop(self) -> None:
        await self.stop_reading()

    async def _bootstrap(self, m: int, stream: str) -> None:
        snap = await self.bus.get_snapshot(snapshot_name(me_tag(m)))
        if snap is None:
            return  # never snapshotted, so never trimmed: read the log from the start
        seq, data = snap
        try:
            env = codec.decode_snapshot(data)
            if env.v != SNAPSHOT_VERSION:
                raise codec.BadEntry(f"snapshot version {env.v} is not {SNAPSHOT_VERSION}")
            engine = Engine.restore(env.core)
        except Exception as e:  # unusable: try the whole log (a trimmed one stops us)
            self.log.warning("snapshot_unusable", stream=stream, log_seq=seq, error=str(e))
            return
        committed = (await self.bus.positions(stream)).get(self.reader, 0)
        for symbol, state in engine.markets.items():
            book = MarketBook.from_engine(state, stream, self.recent_trades)
            book.log_seq = seq
            self.books[symbol] = book
        self.pos[stream] = min(seq, committed)
        self.full_from[stream] = seq
        self.log.info("bootstrapped", stream=stream, snapshot=seq, trades_from=self.pos[stream] + 1)

    # ------------------------------------------------------------------ applying

    async def apply(self, got: Batch) -> BadList:
        bad: BadList = []
        try:
            for stream, entries in got.items():
                for seq, data in entries:
                    if seq <= self.pos[stream]:
                        continue
                    try:
                        entry = codec.decode_match_events(data)
                    except codec.BadEntry as e:
                        bad.append((stream, seq, str(e)))
                    else:
                        self._entry(stream, seq, entry, full=seq > self.full_from[stream])
                    self.pos[stream] = seq
        except Exception as e:  # half a batch is in memory: the state can't be trusted
            raise StopReading(f"applying a batch failed: {type(e).__name__}: {e}") from e
        now = self.clock_ns()
        for book in self.books.values():
            book.prune(now)
        return bad

    def _entry(self, stream: str, seq: int, entry: codec.MatchEntryEvents, *, full: bool) -> None:
        books = self.books
        for item in entry.items:
            for ev in item.events:
                if isinstance(ev, me.Trade):
                    self.m_trades.labels(ev.market).inc()
                    if not full:  # the snapshot already holds the book: trades only
                        books[ev.market].trade(ev, seq)
                        continue
                if not full:
                    continue
                if isinstance(ev, me.MarketAdded):
                    if ev.market not in books:
                        books[ev.market] = MarketBook(ev.spec, stream, self.recent_trades)
                    continue
                book = books.get(ev.market)
                if book is not None:
                    book.apply(ev, seq)

    def commit_floor(self, stream: str) -> int:
        floor = self.pos[stream]
        for book in self.books.values():
            if book.stream == stream:
                oldest = book.oldest_needed()
                if oldest is not None:
                    floor = min(floor, oldest - 1)
        return floor

    # ------------------------------------------------------------------ queries

    def depth(self, market: str, levels: int = 50) -> dict[str, Any] | None:
        book = self.books.get(market)
        return None if book is None else book.depth(levels)

    def trades(self, market: str, limit: int = 100) -> list[dict[str, Any]] | None:
        book = self.books.get(market)
        return None if book is None else book.recent_trades(limit)

    def ticker(self, market: str) -> dict[str, Any] | None:
        book = self.books.get(market)
        return None if book is None else book.ticker(self.clock_ns())

    def _book(self, market: str) -> MarketBook:
        book = self.books.get(market)
        if book is None:
            raise ApiError(404, "unknown_market", f"unknown market {market!r}", "market")
        return book

    def route_handlers(self) -> list[Any]:
        svc = self

        @get("/v1/markets/{market:str}/depth")
        async def market_depth(
            market: FromPath[str],
            levels: int = Parameter(default=min(50, svc.max_levels), ge=1, le=svc.max_levels),
        ) -> dict[str, Any]:
            return svc._book(market).depth(levels)

        @get("/v1/markets/{market:str}/trades")
        async def market_trades(
            market: FromPath[str],
            limit: int = Parameter(default=min(100, svc.recent_trades), ge=1, le=svc.recent_trades),
        ) -> dict[str, Any]:
            return {"market": market, "trades": svc._book(market).recent_trades(limit)}

        @get("/v1/markets/{market:str}/ticker")
        async def market_ticker(market: FromPath[str]) -> dict[str, Any]:
            return svc._book(market).ticker(svc.clock_ns())

        return [market_depth, market_trades, market_ticker]


__all__ = ["MarketBook", "MarketDataService"]
