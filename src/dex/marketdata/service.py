"""Market data, the service shell: reads every matching shard's log and serves the public state.

Reads every matching shard's log (`dex:{me:m}:events`) as the reader `market-data` and keeps,
per market, a `market.MarketData` (the pure part, no I/O: the L2 book of `book`, the last
`recent_trades` trades (`DEX_MARKET_DATA_RECENT_TRADES`, 1000), the candles of `candles` and
the 24-hour ticker of `ticker`). This module does the I/O: the log reading, the bootstrap
from the matching snapshots, the clock, and the REST routes under `/v1/markets/...` and
`/v1/tickers` (prices and sizes as the market's decimal strings; a depth query returns at most
`max_levels` levels per side, `DEX_MARKET_DATA_MAX_LEVELS`).

The feed (docs/feed.md): after each batch, per matching log entry and market it touched, a
`dex.wire.feed.FeedUpdate` (levels changed, trades, candles changed; `prev_seq`/`seq` from the
matching log) is appended to the market's `dex:{md:<market>}:feed`, kept to its last
`feed_keep` entries; a `FeedTicker` at most every `ticker_every` seconds for a market that
changed; and `GET /internal/feed/{market}/book` gives the whole book in integers at its seq,
where the gateway's relay starts. A failed publish is logged and dropped (the relay sees the
`prev_seq` gap and takes a new snapshot). After its bootstrap, market data publishes a marker
per market (`prev_seq = seq` = the book's seq, no levels): a relay behind that seq (market data
came back from a later matching snapshot, so the updates in between were never published) sees
the gap even on a market that has no new event; one at or past it drops the marker.

Restart, and what the writers may trim (the choice this service makes). The state lives only
in memory, so a restart must rebuild it without the log from the beginning:
- the book is rebuilt from the matching shard's latest snapshot (`Engine.restore` of its core:
  every open order with its visible part, every waiting stop, each market's status and last
  price), then the log entries after the snapshot are applied;
- the trades, candles and tickers need the entries holding the last trades kept and the
  trades of every candle kept (per interval, from the candle holding `now - 24 h`: up to 48
  hours for the daily one; the ticker is summed from the 1-minute candles), so the position
  committed on each log is the entry before the oldest trade still kept (or the position
  applied, if no trade is kept). On restart the entries from the committed position up to
  the snapshot are read for their trades only, the later ones in full: each entry is applied
  once, so nothing is lost or counted twice.
So the writers trim below `min(snapshot, oldest trade kept)`, never below what a restart needs,
and a log that was trimmed further (a bug, or a lost snapshot) makes the service not-ready.
Costs and limits of this choice: a matching log keeps at least the entries of the last 24 to
48 hours in which its markets traded (the candles and 24-hour figures could instead be
snapshotted by this service: not done); the 24-hour window counts whole minutes; several
market-data replicas share one recorded position (the highest), which is safe while each
keeps up with the others within the retained window. The bootstrap reads the snapshot, then
the log from `min(snapshot, committed)`; if the matching shard writes a newer snapshot and trims in
between (and our position was above the old snapshot), that read is refused (not-ready; a
restart bootstraps again) rather than anything skipped.

Older candles come from persistence (`CandleHistory`, `DEX_PERSISTENCE_URL`). Per market and
interval, the candles from `B = Candles.complete_from[interval]` on hold every trade (B is 0
for a market whose log this service read from its `MarketAdded`; for a market restored from a
snapshot, the first interval opening after the first trade it applied; raised to the oldest
interval kept once 24 hours pass). The boundary rule: an answer takes persistence's candles
opened strictly before B and its own opened at or after B, never both for one interval, so
the interval holding B's edge is counted once, from the side that saw all its trades.
Persistence is asked with `after=<log>@<our position>` so it has stored at least every trade
this service applied. A range from a start: persistence's first `limit` before B, then ours,
but only if persistence's window reached B (`through`), so a shorter answer never skips
candles in the middle. A range without a start: our last `limit` from B on, topped up with
persistence's last ones before B. Persistence unreachable, lagging or failing: the answer is
ours alone with `"complete": false` and `"missing_before": B` (ms) — a chart can draw what
there is and ask again, where a 503 would leave it nothing; otherwise `"complete": true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx
from litestar import get
from litestar.params import FromPath, Parameter

from dex.bus import Bus
from dex.core import events as me
from dex.marketdata.candles import INTERVALS, MAX_CANDLES, MS
from dex.marketdata.market import MarketData
from dex.matching import Engine
from dex.runtime.health import Health
from dex.runtime.http import ApiError
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.services.reader import BadList, Batch, LogReader, StopReading
from dex.services.shard import SNAPSHOT_VERSION
from dex.wire import codec
from dex.wire.feed import FeedTrade, FeedUpdate, encode_feed
from dex.wire.layout import MARKET_DATA_READER, md_feed, me_log, me_tag, snapshot_name

FEED_KEEP = DEFAULTS.market_data_feed_keep  # entries each market's feed stream keeps
TICKER_EVERY = 0.1  # seconds: a market's ticker is published at most this often


HISTORY_TIMEOUT = 2.0  # seconds a candles answer waits for persistence (below the gateway's 5)


class HistoryUnavailable(Exception):
    """Persistence did not give candles (unreachable, behind, an error or a bad answer)."""


class CandleHistory:
    """Persistence's candles (`GET /v1/markets/{m}/candles` on its API) over HTTP."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = HISTORY_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.client = client or httpx.AsyncClient(base_url=url, timeout=timeout)

    async def fetch(
        self,
        market: str,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        after: str,
    ) -> tuple[list[list[Any]], int]:
        """`(rows, through_ms)`: the rows opened in `[start, end]` and where the window read
        ended; HistoryUnavailable on any failure."""
        params: dict[str, Any] = {"interval": interval, "limit": limit, "after": after}
        if start_ms is not None:
            params["start"] = start_ms
        if end_ms is not None:
            params["end"] = end_ms
        try:
            got = await self.client.get(f"/v1/markets/{market}/candles", params=params)
            got.raise_for_status()
            body = got.json()
            rows, through = body["candles"], body["through"]
            if not isinstance(rows, list) or not isinstance(through, int):
                raise TypeError("candles is not a list or through not an integer")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            raise HistoryUnavailable(f"{type(e).__name__}: {e}") from None
        return rows, through

    async def close(self) -> None:
        await self.client.aclose()


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
        feed: bool = True,
        feed_keep: int = FEED_KEEP,
        ticker_every: float = TICKER_EVERY,
        history: CandleHistory | None = None,
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
        self.books: dict[str, MarketData] = {}
        self.full_from: dict[str, int] = dict.fromkeys(self.me_streams, 0)
        self.bootstrapped = False
        self.m_trades = metrics.counter("trades", "total", "trades seen", ["market"])
        self.feed = feed  # publish each market's updates on its feed stream
        self.feed_keep = feed_keep  # entries a feed stream keeps (trimmed below)
        self.ticker_every = ticker_every
        self.outbox: dict[str, list[bytes]] = {}
        self.ticker_due: set[str] = set()
        self._trimmed: dict[str, int] = {}
        self._ticker_task: asyncio.Task[None] | None = None
        self.history = history  # persistence's candles: what our own do not hold

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start tailing; the first pass rebuilds from each matching shard's snapshot (retried
        while the bus is unreachable; not ready until caught up)."""
        self.start_reading()
        if self.feed:
            self._ticker_task = asyncio.create_task(self._tickers())

    async def prepare(self) -> None:
        if self.bootstrapped:
            return
        for m, stream in enumerate(self.me_streams):
            await self._bootstrap(m, stream)
        self.bootstrapped = True
        if self.feed:  # where each book starts: a relay behind it sees the gap
            for data in self.books.values():
                seq = data.book.seq
                marker = FeedUpdate(data.symbol, seq, seq, [], [], [], [])
                self.outbox.setdefault(data.symbol, []).append(encode_feed(marker))
            await self._publish()

    async def stop(self) -> None:
        if self._ticker_task is not None:
            self._ticker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker_task
            self._ticker_task = None
        await self.stop_reading()
        if self.history is not None:
            await self.history.close()

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
            restored = MarketData.from_engine(state, stream, self.recent_trades)
            restored.candles.began_late()  # its older trades are in trimmed entries
            self.books[symbol] = restored
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
        if self.outbox:
            await self._publish()
        return bad

    def _entry(self, stream: str, seq: int, entry: codec.MatchEntryEvents, *, full: bool) -> None:
        books = self.books
        changed: dict[str, tuple[int, list[me.Trade]]] = {}  # market -> (prev_seq, trades)
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
                        books[ev.market] = MarketData.new(ev.spec, stream, self.recent_trades)
                        books[ev.market].book.apply(ev)  # the market's first seq
                    continue
                book = books.get(ev.market)
                if book is not None:
                    if self.feed and ev.market not in changed:
                        changed[ev.market] = (book.book.seq, [])
                        book.book.touched = set()
                    book.apply(ev, seq)
                    if self.feed and isinstance(ev, me.Trade):
                        changed[ev.market][1].append(ev)
        for market, (prev_seq, trades) in changed.items():
            self._updated(books[market], prev_seq, trades)

    def _updated(self, data: MarketData, prev_seq: int, trades: list[me.Trade]) -> None:
        """Queue the feed update of one log entry for one market (published after the batch)."""
        book = data.book
        touched, book.touched = book.touched or set(), None
        bids = sorted(((p, book.bids.get(p, 0)) for buy, p in touched if buy), reverse=True)
        asks = sorted((p, book.asks.get(p, 0)) for buy, p in touched if not buy)
        update = FeedUpdate(
            market=data.symbol,
            prev_seq=prev_seq,
            seq=book.seq,
            bids=bids,
            asks=asks,
            trades=[FeedTrade(t.trade_id, t.price, t.size, str(t.aggressor), t.ts) for t in trades],
            candles=data.changed_candles(trades) if trades else [],
        )
        self.outbox.setdefault(data.symbol, []).append(encode_feed(update))
        self.ticker_due.add(data.symbol)

    async def _publish(self) -> None:
        """Append the queued updates to each market's feed and trim it to `feed_keep` entries.
        A failed append is logged and dropped: a relay sees the `prev_seq` gap and takes a new
        snapshot, so nothing wrong reaches a client."""
        outbox, self.outbox = self.outbox, {}
        for market, entries in outbox.items():
            stream = md_feed(market)
            try:
                await self._trim(stream, await self.bus.append(stream, entries))
            except Exception as e:
                self.log.warning("feed_publish_failed", market=market, error=f"{e!r}")

    async def _trim(self, stream: str, last: int) -> None:
        """Keep the last `feed_keep` entries (trimmed once a tenth more has come)."""
        if last - self._trimmed.get(stream, 0) >= self.feed_keep + max(1, self.feed_keep // 10):
            await self.bus.trim(stream, last - self.feed_keep + 1)
            self._trimmed[stream] = last - self.feed_keep

    async def _tickers(self) -> None:
        """Every `ticker_every` seconds, the ticker of each market that changed since."""
        while True:
            await asyncio.sleep(self.ticker_every)
            due, self.ticker_due = self.ticker_due, set()
            if not due:
                continue
            now = self.clock_ns()
            for market in sorted(due):
                data = self.books.get(market)
                if data is None:
                    continue
                stream = md_feed(market)
                try:
                    entry = encode_feed(data.ticker_entry(now))
                    await self._trim(stream, await self.bus.append(stream, [entry]))
                except Exception as e:
                    self.log.warning("feed_publish_failed", market=market, error=f"{e!r}")

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
        """The integer view of the best `levels` levels a side (ticks and lots)."""
        data = self.books.get(market)
        if data is None:
            return None
        bids, asks = data.book.top(levels)
        return {
            "market": market,
            "seq": data.book.seq,
            "bids": [{"price_ticks": p, "size_lots": n} for p, n in bids],
            "asks": [{"price_ticks": p, "size_lots": n} for p, n in asks],
        }

    def book(self, market: str, depth: int = 100) -> dict[str, Any] | None:
        data = self.books.get(market)
        return None if data is None else data.book_view(depth)

    def trades(self, market: str, limit: int = 100) -> list[dict[str, Any]] | None:
        data = self.books.get(market)
        return None if data is None else data.trades_view(limit)

    def ticker(self, market: str) -> dict[str, Any] | None:
        data = self.books.get(market)
        return None if data is None else data.ticker_view(self.clock_ns())

    def tickers(self) -> list[dict[str, Any]]:
        now = self.clock_ns()
        return [self.books[m].ticker_view(now) for m in sorted(self.books)]

    def candles(
        self,
        market: str,
        interval: str = "1m",
        start: int | None = None,
        end: int | None = None,
        limit: int = 500,
    ) -> list[list[Any]] | None:
        data = self.books.get(market)
        return None if data is None else data.candles_view(interval, start, end, limit)

    async def candles_answer(
        self, market: str, interval: str, start: int | None, end: int | None, limit: int
    ) -> dict[str, Any]:
        """The candles route's answer: ours from the boundary on, persistence's before it (the
        rule in the module docstring)."""
        data = self._market(market)
        floor = data.candles.complete_from[interval]
        b = None if floor is None else floor // MS  # our rows open at or after b (ms)
        answer: dict[str, Any] = {"market": market, "interval": interval, "complete": True}

        def ours(lo: int | None, n: int) -> list[list[Any]]:
            if b is None:
                return []
            rows = data.candles_view(interval, lo, end, n)
            return [r for r in rows if r[0] >= b]

        if b is not None and (b == 0 or (start is not None and start >= b)):
            answer["candles"] = ours(start, limit)
            return answer
        older_end = end if b is None else b - 1 if end is None else min(end, b - 1)
        own: list[list[Any]] = []
        if start is None:
            own = ours(None, limit)
            if len(own) >= limit:
                answer["candles"] = own
                return answer
        try:
            if self.history is None:
                raise HistoryUnavailable("no persistence URL")
            after = f"{data.stream}@{self.pos.get(data.stream, 0)}"
            n = limit if start is not None else limit - len(own)
            rows, through = await self.history.fetch(market, interval, start, older_end, n, after)
        except HistoryUnavailable as e:
            self.log.warning("candle_history_unavailable", market=market, error=str(e))
            answer["candles"] = ours(None if start is None else max(start, b or 0), limit)
            answer["complete"] = False
            answer["missing_before"] = b
            return answer
        if start is None:
            answer["candles"] = rows[max(0, len(rows) - n) :] + own
        elif len(rows) < limit and b is not None and through >= b:
            answer["candles"] = rows + ours(b, limit - len(rows))
        else:  # persistence's window stopped short of b: the next query goes on from there
            answer["candles"] = rows[:limit]
        return answer

    def _market(self, market: str) -> MarketData:
        data = self.books.get(market)
        if data is None:
            raise ApiError(404, "unknown_market", f"unknown market {market!r}", "market")
        return data

    def route_handlers(self) -> list[Any]:
        svc = self

        @get("/v1/markets/{market:str}/book")
        async def market_book(
            market: FromPath[str],
            depth: int = Parameter(default=min(100, svc.max_levels), ge=1, le=svc.max_levels),
        ) -> dict[str, Any]:
            return svc._market(market).book_view(depth)

        @get("/v1/markets/{market:str}/depth")
        async def market_depth(
            market: FromPath[str],
            levels: int = Parameter(default=min(50, svc.max_levels), ge=1, le=svc.max_levels),
        ) -> dict[str, Any]:
            svc._market(market)
            got = svc.depth(market, levels)
            assert got is not None
            return got

        @get("/v1/markets/{market:str}/trades")
        async def market_trades(
            market: FromPath[str],
            limit: int = Parameter(default=min(100, svc.recent_trades), ge=1, le=svc.recent_trades),
        ) -> dict[str, Any]:
            return {"market": market, "trades": svc._market(market).trades_view(limit)}

        @get("/v1/markets/{market:str}/ticker")
        async def market_ticker(market: FromPath[str]) -> dict[str, Any]:
            return svc._market(market).ticker_view(svc.clock_ns())

        @get("/internal/feed/{market:str}/book")
        async def feed_book(market: FromPath[str]) -> dict[str, Any]:
            """The whole book in integers at its seq: where a feed relay starts a market."""
            book = svc._market(market).book
            bids, asks = book.top(len(book.bids) + len(book.asks))
            return {"market": market, "seq": book.seq, "bids": bids, "asks": asks}

        @get("/v1/tickers")
        async def all_tickers() -> list[dict[str, Any]]:
            return svc.tickers()

        @get("/v1/markets/{market:str}/candles")
        async def market_candles(
            market: FromPath[str],
            interval: str = Parameter(default="1m", max_length=8),
            start: int | None = Parameter(default=None, ge=0, le=2**53),
            end: int | None = Parameter(default=None, ge=0, le=2**53),
            limit: int = Parameter(default=500, ge=1, le=MAX_CANDLES),
        ) -> dict[str, Any]:
            if interval not in INTERVALS:
                raise ApiError(
                    400,
                    "invalid_request",
                    f"interval must be one of {', '.join(INTERVALS)}",
                    "interval",
                )
            if start is not None and end is not None and end < start:
                raise ApiError(400, "invalid_request", "end must not be before start", "end")
            return await svc.candles_answer(market, interval, start, end, limit)

        return [
            market_book,
            market_depth,
            market_trades,
            market_ticker,
            all_tickers,
            market_candles,
            feed_book,
        ]


__all__ = ["MAX_CANDLES", "CandleHistory", "HistoryUnavailable", "MarketDataService"]
