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
- A log entry that does not decode is logged, counted and skipped (`dex.services.reader`).
- No entry can stop the history of everyone. A NUL in text is stored as U+FFFD, the entry
  counted (`text_replaced_total`) and logged with its position. A batch the store still
  refuses for a value (a data error, not an unreachable store) is stored entry by entry, and
  the one entry that cannot be stored is skipped alone: nothing of it is stored, its position
  is passed, it is counted (`entries_dropped_total`) and logged with its position.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import get
from litestar.params import FromPath, Parameter
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dex.bus import Bus
from dex.persistence import migrations, queries, writer
from dex.persistence.schema import positions
from dex.persistence.store import async_database_url, make_engine
from dex.runtime.health import Health
from dex.runtime.http import ApiError, account_param
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.services.reader import BadList, Batch, LogReader
from dex.wire.layout import PERSISTENCE_READER, me_log, risk_log

DATABASE = "database"  # Health key while the store is unreachable
_FEE_ACCOUNT = re.compile(r"fee:[0-9]+")


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
        schema: str | None = None,
        batch_size: int = 1000,
        read_timeout: float = 0.1,
        max_limit: int = DEFAULTS.persistence_max_limit,
        sqlite_busy_timeout: float = DEFAULTS.sqlite_busy_timeout_ms / 1000,
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
        self.sqlite_busy_timeout = sqlite_busy_timeout  # seconds a SQLite store waits for a lock
        if schema is not None and make_url(self.url).get_backend_name() != "postgresql":
            raise ValueError("a database schema can only be given for PostgreSQL")
        self.fee_accounts = {risk_log(r): f"fee:{r}" for r in range(risk_shards)}
        self.markets: dict[str, tuple[str, str]] = {}  # market -> (base, quote)
        self.engine: AsyncEngine | None = None
        self.initialised = False
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
        self.start_reading()

    async def stop(self) -> None:
        """Finish the batch in hand, then close the store."""
        await self.stop_reading()
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
                writer.insert(conn, positions).on_conflict_do_nothing(),
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
        self.pos = {s: known.get(s, 0) for s in self.streams}

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
        work, moved, bad = writer.collect(got, self.pos, self.fee_accounts, self.markets)
        if not moved:
            return bad
        try:
            async with self._engine().begin() as conn:
                written = await writer.write(conn, work, moved, self.log)
        except writer.PositionsMoved as e:
            self.log.warning("positions_moved", error=str(e))
            await self._load()
            return []
        for stream, (_, new) in moved.items():
            self.pos[stream] = new
        self.markets = work.markets
        for table, n in written.items():
            if n:
                self.m_rows.labels(table).inc(n)
        for stream, seq in work.scrubbed:
            self.m_scrubbed.labels(stream).inc()
            self.log.warning(
                "text_replaced",
                stream=stream,
                log_seq=seq,
                error="NUL characters (the store cannot hold them) stored as U+FFFD",
            )
        return bad

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
        self.m_dropped.labels(stream).inc()
        self.log.error(
            "entry_not_stored", stream=stream, log_seq=seq, error=writer.short_error(error)
        )

    # ------------------------------------------------------------------ queries

    async def balances(self, account: str) -> dict[str, dict[str, int]]:
        """{asset: {"available": units, "locked": units}} of an account (canonical address)."""
        async with self._engine().connect() as conn:
            return await queries.account_balances(conn, account)

    async def trades(self, market: str, limit: int = 100) -> list[dict[str, Any]]:
        """The market's latest trades, newest first (price ticks, size lots, ts ns)."""
        async with self._engine().connect() as conn:
            return await queries.market_trades(conn, market, limit)

    async def orders(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        """The account's latest orders, newest first (as the matching events left them)."""
        async with self._engine().connect() as conn:
            return await queries.account_orders(conn, account, limit)

    # ------------------------------------------------------------------ HTTP

    def route_handlers(self) -> list[Any]:
        svc = self

        @get("/v1/accounts/{account:str}/balances")
        async def account_balances(account: FromPath[str]) -> dict[str, Any]:
            acct = _account(account)
            got = await _store(svc.balances(acct))
            return {
                "account": acct,
                "balances": [
                    {
                        "asset": asset,
                        "available_units": bal["available"],
                        "locked_units": bal["locked"],
                    }
                    for asset, bal in got.items()
                ],
            }

        @get("/v1/markets/{market:str}/trades")
        async def market_trades(
            market: FromPath[str],
            limit: int = Parameter(default=min(100, svc.max_limit), ge=1, le=svc.max_limit),
        ) -> dict[str, Any]:
            if market not in svc.markets:
                raise ApiError(404, "unknown_market", f"unknown market {market!r}", "market")
            got = await _store(svc.trades(market, limit))
            return {
                "market": market,
                "trades": [
                    {
                        "trade_id": t["trade_id"],
                        "price_ticks": t["price"],
                        "size_lots": t["size"],
                        "maker_order_id": t["maker_order_id"],
                        "taker_order_id": t["taker_order_id"],
                        "taker_side": t["taker_side"],
                        "ts": t["ts"],
                    }
                    for t in got
                ],
            }

        @get("/v1/accounts/{account:str}/orders")
        async def account_orders(
            account: FromPath[str],
            limit: int = Parameter(default=min(100, svc.max_limit), ge=1, le=svc.max_limit),
        ) -> dict[str, Any]:
            acct = _account(account)
            got = await _store(svc.orders(acct, limit))
            return {
                "account": acct,
                "orders": [
                    {
                        "order_id": o["order_id"],
                        "market": o["market"],
                        "side": o["side"],
                        "type": o["type"],
                        "client_order_id": o["client_order_id"],
                        "price_ticks": o["price"],
                        "size_lots": o["size"],
                        "status": o["status"],
                        "filled_lots": o["filled"],
                        "reason": o["reason"],
                        "updated_ts": o["updated_ts"],
                    }
                    for o in got
                ],
            }

        return [account_balances, market_trades, account_orders]


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
