"""Persistence: the history store (balances, trades, orders, raw events) and its query API.

Reads every risk shard's log (`dex:{risk:r}:log`) and every matching shard's log
(`dex:{me:m}:events`) as the reader `persistence` and writes with SQLAlchemy 2 Core on an async
engine: SQLite through aiosqlite (embedded; `sqlite:///path` is accepted) or PostgreSQL through
asyncpg (`postgresql://...` is accepted).

The package, each in its place: `schema` (the tables), `migrations` (Alembic: run at start,
and by `dex db upgrade`), `writer` (log entries -> rows), `queries` (the reads), `store` (URLs
and engines), and this module: the service's life, its batch loop and its HTTP routes.

Invariants:
- At start the store is migrated to the newest revision (a store of the code before
  migrations is stamped at the first one), then the positions are loaded.
- One transaction per batch: the rows and the new positions commit together (`writer`); an
  entry applied by anyone before is never applied again. Only after the commit is the bus
  told (`commit_position`), so the writers never trim what is not stored.
- Replicas share the logs by leases (`dex.persistence.leases`): a replica reads only the logs
  it holds; it reloads the positions from the store when it takes a log (and every
  `lease_ttl / 3`, which also keeps its view of the other logs for `after` fresh).
- A log entry that does not decode is logged, counted and skipped (`dex.services.reader`).
- No entry can stop the history of everyone. A NUL in text is stored as U+FFFD, the entry
  counted (`text_replaced_total`) and logged with its position. A batch the store still
  refuses for a value (a data error, not an unreachable store) is stored entry by entry, and
  the one entry that cannot be stored is skipped alone: nothing of it is stored, its position
  is passed, it is counted (`entries_dropped_total`) and logged with its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import socket
from decimal import Decimal
from typing import Any

import msgspec
from litestar import get
from litestar.params import FromPath, FromQuery
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dex.bus import Bus
from dex.core.errors import CommandError
from dex.core.markets import Asset, MarketParams, MarketSpec, check_asset, resolve_market
from dex.core.numbers import Scale
from dex.marketdata import candles as cb
from dex.marketdata.book import Precision
from dex.persistence import migrations, queries, schema, writer
from dex.persistence.leases import LogLeases
from dex.persistence.store import async_database_url, make_engine
from dex.runtime.health import Health
from dex.runtime.http import ApiError, account_param
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.services.reader import INPUT, BadList, Batch, LogReader
from dex.wire.layout import PERSISTENCE_READER, me_log, risk_log

DATABASE = "database"  # Health key while the store is unreachable
_FEE_ACCOUNT = re.compile(r"fee:[0-9]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_NS_PER_MS = 1_000_000
OTHERS_POLL = 0.05  # seconds between two looks at a log another replica writes (`after`)
AFTER_MARGIN_MS = 500  # an `after` wait ends this much before the gateway gives up on us


class PersistenceService(LogReader):
    """The history writer and its read API (one instance per process)."""

    def __init__(
        self,
        bus: Bus,
        database_url: str,
        *,
        risk_shards: int,
        matching_shards: int,
        health: Health,
        metrics: ServiceMetrics,
        log: Any,
        schema: FromQuery[str | None] = None,
        batch_size: int = 1000,
        read_timeout: float = 0.1,
        max_limit: int = DEFAULTS.persistence_max_limit,
        proxy_timeout_ms: int = DEFAULTS.gateway_proxy_timeout_ms,
        sqlite_busy_timeout: float = DEFAULTS.sqlite_busy_timeout_ms / 1000,
        owner: str | None = None,
        lease_ttl: float = DEFAULTS.lease_ttl_ms / 1000,
    ) -> None:
        self.risk_streams = [risk_log(r) for r in range(risk_shards)]
        self.me_streams = [me_log(m) for m in range(matching_shards)]
        super().__init__(
            bus,
            [*self.risk_streams, *self.me_streams],
            PERSISTENCE_READER,
            health=health,
            metrics=metrics,
            log=log,
            batch_size=batch_size,
            read_timeout=read_timeout,
        )
        self.apply_key = DATABASE
        self.url = async_database_url(database_url)
        self.schema = schema
        self.max_limit = max_limit  # the most rows a history query returns
        # how long a read waits for `after`: answered before the gateway's proxy times out
        margin = min(AFTER_MARGIN_MS, proxy_timeout_ms // 5)
        self.after_wait = (proxy_timeout_ms - margin) / 1000
        self._applied = asyncio.Event()  # set (and replaced) each time positions move
        self.assets: dict[str, Asset] = {}  # from asset_added events
        self.params: dict[str, MarketParams] = {}  # from market_added events
        self.sqlite_busy_timeout = sqlite_busy_timeout  # seconds a SQLite store waits for a lock
        if schema is not None and make_url(self.url).get_backend_name() != "postgresql":
            raise ValueError("a database schema can only be given for PostgreSQL")
        self.fee_accounts = {risk_log(r): f"fee:{r}" for r in range(risk_shards)}
        self.markets: dict[str, tuple[str, str]] = {}  # market -> (base, quote)
        self.engine: AsyncEngine | None = None
        self.initialised = False
        owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.leases = LogLeases(
            bus, self.streams, owner=owner, ttl=lease_ttl, metrics=metrics, log=log
        )
        self._seen_at = 0.0  # loop time of the last look at the positions others stored
        self.m_rows = metrics.counter("rows_written", "total", "rows written", ["table"])
        self.m_scrubbed = metrics.counter(
            "text_replaced",
            "total",
            "log entries stored with U+FFFD for NUL characters (PostgreSQL cannot hold them)",
            ["stream"],
        )
        self.m_dropped = metrics.counter(
            "entries_dropped",
            "total",
            "log entries the store refused even alone: skipped, nothing of them stored",
            ["stream"],
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, migrate it to the newest revision, load positions, start tailing.

        If the store is unreachable the service starts not-ready and keeps trying."""
        self.engine = self._make_engine()
        try:
            await self.prepare()
        except (SQLAlchemyError, OSError) as e:
            self.health.set_not_ready(DATABASE, f"{type(e).__name__}: {e}")
            self.log.warning("database_unavailable", error=f"{type(e).__name__}: {e}")
        self.leases.start()
        self.start_reading()

    async def stop(self) -> None:
        """Finish the batch in hand, release the logs, then close the store."""
        await self.stop_reading()
        await self.leases.stop()
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    def _make_engine(self) -> AsyncEngine:
        return make_engine(
            self.url, schema=self.schema, sqlite_busy_timeout=self.sqlite_busy_timeout
        )

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("the persistence service is not started")
        return self.engine

    async def prepare(self) -> None:
        if self.initialised:
            return
        async with self._engine().begin() as conn:
            revision = await conn.run_sync(migrations.upgrade)
            await conn.execute(
                writer.insert(conn, schema.positions).on_conflict_do_nothing(),
                [{"stream": s, "log_seq": 0} for s in self.streams],
            )
        await self._load()
        self.initialised = True
        self.health.set_ready(DATABASE)
        self.log.info("store_ready", revision=revision, positions=self.pos)

    async def _load(self) -> None:
        async with self._engine().connect() as conn:
            known = await queries.positions(conn)
            self.markets = await queries.markets(conn)
            self._learn(await queries.catalog_events(conn))
        held = self.leases.held
        self.pos = {
            s: max(known.get(s, 0), self.pos.get(s, 0)) if s in held else known.get(s, 0)
            for s in self.streams
        }
        self._moved()

    # ------------------------------------------------------------------ leases

    def reading(self) -> list[str]:
        return self.leases.reading()

    async def step(self) -> int:
        """Between two batches: take and release log leases (`LogLeases.tick`), then read
        the logs held."""
        self._failing = self.apply_key  # what a failure here makes not-ready
        await self.prepare()
        self._failing = INPUT
        taken = await self.leases.tick()
        self._failing = self.apply_key
        if taken:
            await self._load()  # where the previous holder left them
        else:
            await self._look()
        if not self.leases.held:  # every log is someone else's: nothing to catch up with
            self.health.set_ready(INPUT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(self.read_timeout, 0.05))
            return 0
        return await super().step()

    async def _look(self) -> None:
        """At most every `lease_ttl / 3`: the positions and catalog the other replicas
        stored (what `after` waits for and what the routes format with)."""
        now = asyncio.get_running_loop().time()
        if now - self._seen_at < self.leases.ttl / 3:
            return
        self._seen_at = now
        await self._load()

    # ------------------------------------------------------------------ applying

    async def apply(self, got: Batch) -> BadList:
        try:
            return await self._apply(got)
        except Exception as e:
            if not writer.unstorable(e):
                raise
            self.log.warning(
                "batch_not_stored", error=writer.short_error(e), entries=writer.count_entries(got)
            )
        # One entry holds a value the store refuses: store the batch entry by entry, and
        # move past (drop) only the entry that still cannot be stored.
        bad: BadList = []
        for stream, entries in got.items():
            for seq, data in entries:
                try:
                    bad += await self._apply({stream: [(seq, data)]})
                except Exception as e:
                    if not writer.unstorable(e):
                        raise
                    await self._drop(stream, seq, e)
        return bad

    async def _apply(self, got: Batch) -> BadList:
        if not writer.moves(got, self.pos):
            return []
        try:
            async with self._engine().begin() as conn:
                done = await writer.store(
                    conn, got, self.pos, self.fee_accounts, self.markets, self.log
                )
        except writer.PositionsMoved as e:
            self.log.warning("positions_moved", error=str(e))
            await self._load()
            return []
        for stream, (_, new) in done.moved.items():
            self.pos[stream] = new
        self.markets = done.markets
        self._learn(done.catalog)
        self._moved()
        for table, n in done.written.items():
            if n:
                self.m_rows.labels(table).inc(n)
        for stream, seq in done.scrubbed:
            self.m_scrubbed.labels(stream).inc()
            self.log.warning(
                "text_replaced",
                stream=stream,
                log_seq=seq,
                error="NUL characters (the store cannot hold them) stored as U+FFFD",
            )
        return done.bad

    async def _drop(self, stream: str, seq: int, error: Exception) -> None:
        """Move past one entry the store refuses, storing nothing of it (counted, logged)."""
        old = self.pos[stream]
        if seq <= old:
            return
        try:
            async with self._engine().begin() as conn:
                await writer.write(conn, writer.Work(self.markets), {stream: (old, seq)}, self.log)
        except writer.PositionsMoved as e:  # another instance got there first: follow it
            self.log.warning("positions_moved", error=str(e))
            await self._load()
            return
        self.pos[stream] = seq
        self._moved()
        self.m_dropped.labels(stream).inc()
        self.log.error(
            "entry_not_stored", stream=stream, log_seq=seq, error=writer.short_error(error)
        )

    # ------------------------------------------------------------------ what it knows

    def _learn(self, bodies: list[dict[str, Any]]) -> None:
        """Learn assets and markets from `asset_added` / `market_added` event bodies, by the
        engines' own rules; one they would refuse (or a repeat: every shard logs them) is
        ignored."""
        for body in bodies:
            try:
                if body.get("event") == "asset_added":
                    asset = check_asset(msgspec.convert(body["asset"], Asset))
                    self.assets.setdefault(asset.symbol, asset)
                elif body.get("event") == "market_added":
                    spec = msgspec.convert(body["spec"], MarketSpec)
                    if spec.market not in self.params:
                        self.params[spec.market] = resolve_market(spec, self.assets)
            except (CommandError, msgspec.ValidationError, KeyError):
                continue

    def _moved(self) -> None:
        """Wake the requests waiting for positions (`wait_for`)."""
        done, self._applied = self._applied, asyncio.Event()
        done.set()

    async def wait_for(self, after: dict[str, int]) -> str | None:
        """Wait until every stream of `after` is applied up to its position, at most
        `after_wait` seconds; the first stream still behind then, None once all are there.
        Woken by each batch this replica applies; a log another replica holds is looked up
        in the store every `OTHERS_POLL` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.after_wait
        while True:
            behind = next((s for s, seq in after.items() if self.pos.get(s, 0) < seq), None)
            if behind is None:
                return None
            left = deadline - loop.time()
            if left <= 0:
                return behind
            wait = left if behind in self.leases.held else min(left, OTHERS_POLL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied.wait(), wait)
            if behind not in self.leases.held:
                await self._others()

    async def _others(self) -> None:
        """The positions of the logs this replica does not hold, as stored."""
        async with self._engine().connect() as conn:
            known = await queries.positions(conn)
        for s in self.streams:
            if s not in self.leases.held and s in known:
                self.pos[s] = max(self.pos.get(s, 0), known[s])

    # ------------------------------------------------------------------ queries

    async def balances(self, account: str) -> dict[str, dict[str, int]]:
        """{asset: {"available": units, "locked": units}} of an account (canonical address)."""
        async with self._engine().connect() as conn:
            return await queries.account_balances(conn, account)

    async def page(
        self,
        listing: queries.Listing,
        where: list[Any],
        cursor: tuple[Any, ...] | None,
        limit: int,
    ) -> queries.Page:
        """A page of a list (`dex.persistence.queries.page`), integers as stored."""
        async with self._engine().connect() as conn:
            return await queries.page(conn, listing, where, cursor, limit)

    async def candles(
        self, market: str, interval: str, start_ns: int | None, end_ns: int | None, limit: int
    ) -> queries.CandleWindow:
        """Candles of the stored trades, from the writer's 1-minute candles
        (`dex.persistence.queries.candles`)."""
        async with self._engine().connect() as conn:
            return await queries.candles(conn, market, interval, start_ns, end_ns, limit)

    async def order(self, account: str, order_id: int) -> dict[str, Any] | None:
        async with self._engine().connect() as conn:
            return await queries.order_by_id(conn, account, order_id)

    async def order_by_client_id(
        self, account: str, client_order_id: str, market: str | None
    ) -> dict[str, Any] | None:
        async with self._engine().connect() as conn:
            return await queries.order_by_client_id(conn, account, client_order_id, market)

    # ------------------------------------------------------------------ HTTP

    def route_handlers(self) -> list[Any]:
        return routes(self)


def routes(svc: PersistenceService) -> list[Any]:
    """The read API (all GET). Every amount is a decimal string at its asset's or market's
    precision, every time ms since the epoch; lists are newest first with `next_cursor`."""
    q = queries

    async def query_of(account: str, after: str | None) -> tuple[str, Query]:
        acct = _account(account)
        await svc_wait(svc, after)
        return acct, Query(svc)

    @get("/v1/accounts/{account:str}/balances")
    async def account_balances(
        account: FromPath[str], after: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        got = await _store(svc.balances(acct))
        return {
            "account": acct,
            "balances": [
                {
                    "asset": asset,
                    "available": qry.units(asset, bal["available"]),
                    "locked": qry.units(asset, bal["locked"]),
                }
                for asset, bal in got.items()
            ],
        }

    @get("/v1/accounts/{account:str}/orders")
    async def account_orders(
        account: FromPath[str],
        status: FromQuery[str | None] = None,
        market: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        statuses = _statuses(status)
        mkt = qry.market(market)
        lo, hi = _range(start, end)
        where = q.order_filters(acct, statuses, mkt, lo, hi)
        got = await _store(svc.page(q.ORDERS, where, _cursor(q.ORDERS, cursor), qry.limit(limit)))
        return {"orders": [qry.order(o) for o in got.rows], "next_cursor": got.next_cursor}

    @get("/v1/accounts/{account:str}/orders/by-client-id/{client_order_id:str}")
    async def order_by_client_id(
        account: FromPath[str],
        client_order_id: FromPath[str],
        market: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        mkt = qry.market(market)
        got = await _store(svc.order_by_client_id(acct, client_order_id, mkt))
        if got is None:
            raise _unknown_order(f"no order with client order id {client_order_id!r}")
        return qry.order(got)

    @get("/v1/accounts/{account:str}/orders/{order_id:str}")
    async def order_by_id(
        account: FromPath[str], order_id: FromPath[str], after: str | None = None
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        oid = _int(order_id, "order_id")
        got = await _store(svc.order(acct, oid))
        if got is None:
            raise _unknown_order(f"no order {oid} of this account")
        return qry.order(got)

    @get("/v1/accounts/{account:str}/fills")
    async def account_fills(
        account: FromPath[str],
        market: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        mkt = qry.market(market)
        lo, hi = _range(start, end)
        where: list[Any] = [schema.fills.c.account == acct]
        if mkt is not None:
            where.append(schema.fills.c.market == mkt)
        where += q.time_range(schema.fills.c.ts, lo, hi)
        got = await _store(svc.page(q.FILLS, where, _cursor(q.FILLS, cursor), qry.limit(limit)))
        return {"fills": [qry.fill(f) for f in got.rows], "next_cursor": got.next_cursor}

    @get("/v1/accounts/{account:str}/ledger")
    async def account_ledger(
        account: FromPath[str],
        asset: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        where: list[Any] = [schema.ledger_entries.c.account == acct]
        if asset is not None:
            where.append(schema.ledger_entries.c.asset == qry.asset(asset))
        got = await _store(svc.page(q.LEDGER, where, _cursor(q.LEDGER, cursor), qry.limit(limit)))
        return {"entries": [qry.entry(e) for e in got.rows], "next_cursor": got.next_cursor}

    @get("/v1/accounts/{account:str}/deposits")
    async def account_deposits(
        account: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        where = [schema.deposits.c.account == acct]
        listing = q.DEPOSITS
        got = await _store(svc.page(listing, where, _cursor(listing, cursor), qry.limit(limit)))
        return {"deposits": [qry.deposit(d) for d in got.rows], "next_cursor": got.next_cursor}

    @get("/v1/accounts/{account:str}/withdrawals")
    async def account_withdrawals(
        account: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        acct, qry = await query_of(account, after)
        where = [schema.withdrawals.c.account == acct]
        listing = q.WITHDRAWALS
        got = await _store(svc.page(listing, where, _cursor(listing, cursor), qry.limit(limit)))
        rows = [qry.withdrawal(w) for w in got.rows]
        return {"withdrawals": rows, "next_cursor": got.next_cursor}

    @get("/v1/markets/{market:str}/trades")
    async def market_trades(
        market: FromPath[str],
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
        after: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        await svc_wait(svc, after)
        qry = Query(svc)
        if market not in svc.params and market not in svc.markets:
            raise _unknown_market(market)
        lo, hi = _range(start, end)
        where = [schema.trades.c.market == market, *q.time_range(schema.trades.c.ts, lo, hi)]
        got = await _store(svc.page(q.TRADES, where, _cursor(q.TRADES, cursor), qry.limit(limit)))
        return {
            "market": market,
            "trades": [qry.trade(t) for t in got.rows],
            "next_cursor": got.next_cursor,
        }

    @get("/v1/markets/{market:str}/candles")
    async def market_candles(
        market: FromPath[str],
        interval: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        limit: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Candles of the stored trades (read from the writer's 1-minute candles), rows as
        market data's (`dex.marketdata.candles`): opened in `[start, end]` (ms), the first
        `limit` from `start`, else the last `limit` up to `end`; `through` (ms) is where the
        window read ended (exclusive)."""
        name = "1m" if interval is None else interval
        if name not in cb.INTERVALS:
            raise ApiError(
                400,
                "invalid_request",
                f"interval must be one of {', '.join(cb.INTERVALS)}, got {name[:40]!r}",
                "interval",
            )
        lo = None if start is None else _int(start, "start")
        hi = None if end is None else _int(end, "end")
        if lo is not None and hi is not None and hi < lo:
            raise ApiError(400, "invalid_request", "end must not be before start", "end")
        n = 500 if limit is None else _int(limit, "limit")
        if not 1 <= n <= cb.MAX_CANDLES:
            raise ApiError(
                400,
                "invalid_request",
                f"limit must be between 1 and {cb.MAX_CANDLES}, got {limit}",
                "limit",
            )
        params = svc.params.get(market)
        if params is None and market not in svc.markets:
            raise _unknown_market(market)
        got = await _store(
            svc.candles(
                market,
                name,
                None if lo is None else min(lo * _NS_PER_MS, queries.MAX_INT),
                None if hi is None else min(hi * _NS_PER_MS, queries.MAX_INT),
                n,
            )
        )
        if params is not None:
            fmt = Precision(params.spec)
            rows = [cb.render(c, fmt) for c in got.candles]
        else:  # a market no event described (only its rows): the integers as stored
            rows = [list(c.row()) for c in got.candles]
        return {"market": market, "interval": name, "candles": rows, "through": _ms(got.through)}

    return [
        account_balances,
        account_orders,
        order_by_client_id,
        order_by_id,
        account_fills,
        account_ledger,
        account_deposits,
        account_withdrawals,
        market_trades,
        market_candles,
    ]


class Query:
    """One request's view of what the service knows: parameters checked against it, rows
    rendered with it. An amount of an asset or market the service does not know (none of its
    events said) is rendered as the integer it is stored as."""

    def __init__(self, svc: PersistenceService) -> None:
        self.svc = svc

    def limit(self, raw: str | None) -> int:
        if raw is None:
            return min(100, self.svc.max_limit)
        n = _int(raw, "limit")
        if not 1 <= n <= self.svc.max_limit:
            raise ApiError(
                400,
                "invalid_request",
                f"limit must be between 1 and {self.svc.max_limit}, got {raw}",
                "limit",
            )
        return n

    def market(self, raw: str | None) -> str | None:
        if raw is not None and raw not in self.svc.params and raw not in self.svc.markets:
            raise _unknown_market(raw)
        return raw

    def asset(self, raw: str) -> str:
        if raw not in self.svc.assets:
            raise ApiError(404, "unknown_asset", f"unknown asset {raw!r}", "asset")
        return raw

    def units(self, asset: str, amount: int) -> str:
        known = self.svc.assets.get(asset)
        if known is None:
            return str(amount)
        return _asset_scale(known.decimals).render(amount)

    def _params(self, market: str) -> MarketParams | None:
        return self.svc.params.get(market)

    def price(self, market: str, ticks: int) -> str:
        p = self._params(market)
        return str(ticks) if p is None else p.price_scale.render(ticks)

    def size(self, market: str, lots: int) -> str:
        p = self._params(market)
        return str(lots) if p is None else p.size_scale.render(lots)

    def quote(self, market: str, units: int) -> str:
        p = self._params(market)
        return str(units) if p is None else p.quote_scale.render(units)

    def order(self, o: dict[str, Any]) -> dict[str, Any]:
        m = o["market"]
        return {
            "order_id": o["order_id"],
            "client_order_id": o["client_order_id"],
            "market": m,
            "side": o["side"],
            "type": o["type"],
            "tif": o["tif"],
            "price": self.price(m, o["price"]) if o["price"] else None,
            "trigger_price": self.price(m, o["trigger_price"]) if o["trigger_price"] else None,
            "size": self.size(m, o["size"]) if o["size"] else None,
            "quote_size": self.quote(m, o["quote_size"]) if o["quote_size"] else None,
            "filled": self.size(m, o["filled"]),
            "status": o["status"],
            "reason": o["reason"],
            "created_at": _ms(o["created_ts"]),
            "updated_at": _ms(o["updated_ts"]),
        }

    def fill(self, f: dict[str, Any]) -> dict[str, Any]:
        m = f["market"]
        p = self._params(m)
        notional = f["price"] * f["size"] * (1 if p is None else p.tick_lot_units)
        return {
            "trade_id": f["trade_id"],
            "order_id": f["order_id"],
            "market": m,
            "side": f["side"],
            "price": self.price(m, f["price"]),
            "size": self.size(m, f["size"]),
            "quote_size": self.quote(m, notional),
            "fee": self.units(f["fee_asset"], f["fee"]),
            "fee_asset": f["fee_asset"],
            "liquidity": f["liquidity"],
            "ts": _ms(f["ts"]),
        }

    def entry(self, e: dict[str, Any]) -> dict[str, Any]:
        return {
            "asset": e["asset"],
            "amount": self.units(e["asset"], e["delta"]),
            "balance": e["bucket"],
            "cause": e["cause"],
            # the risk event that made it: `<stream>@<log_seq>` (an `after` the routes take)
            # and its index in that entry
            "ref": f"{e['stream']}@{e['log_seq']}#{e['idx']}",
            "ts": _ms(e["ts"]),
        }

    def deposit(self, d: dict[str, Any]) -> dict[str, Any]:
        return {
            "tx_id": d["tx_id"],
            "log_index": d["log_index"],
            "asset": d["asset"],
            "amount": self.units(d["asset"], d["amount"]),
            "ts": _ms(d["ts"]),
        }

    def withdrawal(self, w: dict[str, Any]) -> dict[str, Any]:
        return {
            "withdrawal_id": w["withdrawal_id"],
            "asset": w["asset"],
            "amount": self.units(w["asset"], w["amount"]),
            "status": w["status"],
            "tx_id": w["tx_id"],
            "reason": w["reason"],
            "requested_at": _ms(w["requested_ts"]),
            "updated_at": _ms(w["updated_ts"]),
        }

    def trade(self, t: dict[str, Any]) -> dict[str, Any]:
        m = t["market"]
        return {
            "trade_id": t["trade_id"],
            "price": self.price(m, t["price"]),
            "size": self.size(m, t["size"]),
            "taker_side": t["taker_side"],
            "ts": _ms(t["ts"]),
        }


async def svc_wait(svc: PersistenceService, after: str | None) -> None:
    """Read-your-writes: wait until `after` (`<stream>@<log_seq>,...`) is applied, or 503
    `not_caught_up` naming the stream still behind."""
    if after is None:
        return
    wanted: dict[str, int] = {}
    for part in after.split(","):
        stream, at, seq = part.strip().rpartition("@")
        if not at or not stream:
            raise ApiError(
                400, "invalid_request", f"after: {part!r} is not <stream>@<log_seq>", "after"
            )
        if stream not in svc.pos:
            raise ApiError(
                400, "invalid_request", f"after: persistence does not read {stream!r}", "after"
            )
        wanted[stream] = max(wanted.get(stream, 0), _int(seq, "after"))
    behind = await svc.wait_for(wanted)
    if behind is not None:
        raise ApiError(
            503,
            "not_caught_up",
            f"the history has not yet applied {behind} up to {wanted[behind]} "
            f"(it is at {svc.pos.get(behind, 0)})",
            "after",
        )


def _int(raw: str, field: str) -> int:
    """A non-negative integer below 2^63 written in digits, or 400 naming `field`."""
    if not _DIGITS.fullmatch(raw) or int(raw) > queries.MAX_INT:
        raise ApiError(
            400,
            "invalid_request",
            f"{field} must be a whole number below 2^63, got {raw[:40]!r}",
            field,
        )
    return int(raw)


def _range(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """start/end (ms, start inclusive, end exclusive) as ns bounds."""
    lo = None if start is None else _int(start, "start")
    hi = None if end is None else _int(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise ApiError(400, "invalid_request", f"start {lo} is after end {hi}", "start")
    # the column holds ns below 2^63: a bound past that is the same as no bound
    return (
        None if lo is None else min(lo * _NS_PER_MS, queries.MAX_INT),
        None if hi is None else min(hi * _NS_PER_MS, queries.MAX_INT),
    )


def _statuses(raw: str | None) -> list[str] | None:
    if raw is None or raw == "all":
        return None
    if raw == "open":
        return [s.value for s in queries.OPEN_STATUSES]
    if raw == "closed":
        return [s.value for s in queries.CLOSED_STATUSES]
    raise ApiError(
        400, "invalid_request", f"status must be open, closed or all, got {raw[:40]!r}", "status"
    )


def _cursor(listing: queries.Listing, raw: str | None) -> tuple[Any, ...] | None:
    if raw is None:
        return None
    try:
        return queries.decode_cursor(listing, raw)
    except queries.BadCursor as e:
        raise ApiError(400, "invalid_request", f"cursor {e}", "cursor") from None


def _ms(ns: int) -> int:
    return int(ns) // _NS_PER_MS


@functools.cache
def _asset_scale(decimals: int) -> Scale:
    return Scale(Decimal(1).scaleb(-decimals))


def _unknown_market(market: str) -> ApiError:
    return ApiError(404, "unknown_market", f"unknown market {market[:40]!r}", "market")


def _unknown_order(message: str) -> ApiError:
    return ApiError(404, "unknown_order", message, "order_id")


def _account(account: str) -> str:
    if _FEE_ACCOUNT.fullmatch(account):
        return account
    return account_param(account)


async def _store(query: Any) -> Any:
    """Await a store query; an unreachable store is 503 `unavailable`, not a 500."""
    try:
        return await query
    except (SQLAlchemyError, OSError) as e:
        raise ApiError(
            503, "unavailable", f"the history store is unavailable: {type(e).__name__}"
        ) from None
