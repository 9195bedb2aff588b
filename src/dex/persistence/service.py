"""Persistence: the history store (balances, trades, orders, raw events) and its query API.

Reads every risk shard's log (`dex:{risk:r}:log`) and every matching shard's log
(`dex:{me:m}:events`) as the reader `persistence` and writes with SQLAlchemy 2 Core on an async
engine: SQLite through aiosqlite (embedded; `sqlite:///path` is accepted) or PostgreSQL through
asyncpg (`postgresql://...` is accepted).

Schema (created if missing; amounts are integers: asset units, price ticks, size lots):

- `positions(stream PK, log_seq)`: the last entry of each log applied.
- `markets(market PK, base, quote)`: from risk `market_added` (trade_settled needs them).
- `balances(account, asset, available, locked; PK account, asset)`: copied from the risk
  events that carry an account's new balance; fee accounts `fee:<r>` from `trade_settled`.
- `trades(market, trade_id, price, size, maker_order_id, taker_order_id, taker_side, ts;
  PK market, trade_id)`: matching `trade`.
- `orders(order_id PK, account, market, side, type, price, size, client_order_id, status,
  filled, reason, updated_ts)`: matching order events (status open / untriggered / filled /
  cancelled / expired / rejected; `filled` in lots).
- `events(stream, log_seq, idx, kind, body; PK stream, log_seq, idx)`: every event of every
  entry, `body` its JSON (JSONB on PostgreSQL); a command inside an event (an accepted order)
  is written as on the bus, without its fields that hold their default value.

Invariants:
- One transaction per batch: the rows and the new positions commit together. The positions
  are moved with `UPDATE ... WHERE log_seq = <old>`, so an entry applied by anyone before (a
  restart, a second replica) is never applied again: the transaction is rolled back and the
  positions are reloaded. Only after the commit is the bus told (`commit_position`), so the
  writers never trim what is not stored.
- Balances are copied from the events (each carries the account's new balance), never
  computed, so the store agrees with the ledger entry by entry. Orders come from the matching
  events only (their one authoritative life: accepted -> trades -> one terminal event).
- A log entry that does not decode is logged, counted and skipped (`dex.services.reader`).
- No entry can stop the history of everyone. Text is stored as the store can hold it: a NUL
  (which PostgreSQL refuses in text and jsonb; old logs or other paths may carry one) is
  stored as U+FFFD, the entry counted (`text_replaced_total`) and logged with its position.
  A batch the store still refuses for a value (a data error, not an unreachable store) is
  stored entry by entry, and the one entry that cannot be stored is skipped alone: nothing
  of it is stored, its position is passed, it is counted (`entries_dropped_total`) and
  logged with its position.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from litestar import get
from litestar.params import FromPath, Parameter
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    MetaData,
    Table,
    Text,
    event,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dex.bus import Bus
from dex.core import events as me
from dex.core.enums import ORDER_TRANSITIONS, OrderStatus, OrderType, Side
from dex.risk import events as re_
from dex.runtime.health import Health
from dex.runtime.http import ApiError, account_param
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.services.reader import BadList, Batch, LogReader
from dex.wire import codec
from dex.wire.layout import PERSISTENCE_READER, me_log, risk_log

DATABASE = "database"  # Health key while the store is unreachable
_CHUNK = 500  # ids per IN (...) query
_FEE_ACCOUNT = re.compile(r"fee:[0-9]+")

# ---------------------------------------------------------------------------- schema

metadata = MetaData()
BODY = JSON().with_variant(postgresql.JSONB(), "postgresql")

positions = Table(
    "positions",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, nullable=False),
)
markets = Table(
    "markets",
    metadata,
    Column("market", Text, primary_key=True),
    Column("base", Text, nullable=False),
    Column("quote", Text, nullable=False),
)
balances = Table(
    "balances",
    metadata,
    Column("account", Text, primary_key=True),
    Column("asset", Text, primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("locked", BigInteger, nullable=False),
)
trades = Table(
    "trades",
    metadata,
    Column("market", Text, primary_key=True),
    Column("trade_id", BigInteger, primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("maker_order_id", BigInteger, nullable=False),
    Column("taker_order_id", BigInteger, nullable=False),
    Column("taker_side", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
orders = Table(
    "orders",
    metadata,
    Column("order_id", BigInteger, primary_key=True),
    Column("account", Text, nullable=False),
    Column("market", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("type", Text),  # None for an order the engine rejected (the event does not say)
    Column("price", BigInteger),
    Column("size", BigInteger),
    Column("client_order_id", Text),
    Column("status", Text, nullable=False),
    Column("filled", BigInteger, nullable=False),
    Column("reason", Text),  # cancel reason or reject code
    Column("updated_ts", BigInteger, nullable=False),
    Index("orders_by_account", "account", "order_id"),
)
events = Table(
    "events",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("body", BODY, nullable=False),
)

OPEN = OrderStatus.OPEN
UNTRIGGERED = OrderStatus.UNTRIGGERED  # stored as their values (plain text)
_STOPS = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
_BALANCE_EVENTS = (
    re_.DepositCredited,
    re_.WithdrawalRequested,
    re_.WithdrawalCompleted,
    re_.WithdrawalFailed,
    re_.FundsReleased,
)
_ORDER_EVENTS = (
    me.Accepted,
    me.Rejected,
    me.Trade,
    me.Triggered,
    me.Amended,
    me.Filled,
    me.Cancelled,
    me.Expired,
)


def async_database_url(url: str) -> str:
    """The async-driver form of a database URL: aiosqlite for SQLite, asyncpg for PostgreSQL."""
    parsed = make_url(url)
    accepted = {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
    wanted = accepted.get(parsed.drivername)
    if wanted is None:
        raise ValueError(
            f"database URL must be sqlite:///<path> or postgresql://..., got {parsed.drivername}://"
        )
    return parsed.set(drivername=wanted).render_as_string(hide_password=False)


class _PositionsMoved(Exception):
    """Someone else moved a position since we read it: reload, never apply twice."""


class _Work:
    """What one batch writes, built in memory before the transaction."""

    def __init__(self, known_markets: dict[str, tuple[str, str]]) -> None:
        self.markets = dict(known_markets)
        self.new_markets: list[dict[str, Any]] = []
        self.balances: dict[tuple[str, str], tuple[int, int]] = {}
        self.trades: list[dict[str, Any]] = []
        self.order_events: list[me.Event] = []
        self.events: list[dict[str, Any]] = []
        self.scrubbed: list[tuple[str, int]] = []  # entries stored with U+FFFD for NUL


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
        """Open the store, create the schema if missing, load positions, start tailing.

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
        url = make_url(self.url)
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql" and self.schema is not None:
            kwargs["connect_args"] = {"server_settings": {"search_path": self.schema}}
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas(self.sqlite_busy_timeout))
        return engine

    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("the persistence service is not started")
        return self.engine

    async def prepare(self) -> None:
        if self.initialised:
            return
        async with self._engine().begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                self._insert(positions).on_conflict_do_nothing(),
                [{"stream": s, "log_seq": 0} for s in self.streams],
            )
        await self._load()
        self.initialised = True
        self.health.set_ready(DATABASE)
        self.log.info("store_ready", positions=self.pos)

    async def _load(self) -> None:
        async with self._engine().connect() as conn:
            got = await conn.execute(select(positions.c.stream, positions.c.log_seq))
            known = {row.stream: int(row.log_seq) for row in got}
            rows = await conn.execute(select(markets.c.market, markets.c.base, markets.c.quote))
            self.markets = {row.market: (row.base, row.quote) for row in rows}
        self.pos = {s: known.get(s, 0) for s in self.streams}

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT (with ON CONFLICT) for `table`."""
        if self._engine().dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # ------------------------------------------------------------------ applying

    async def apply(self, got: Batch) -> BadList:
        try:
            return await self._apply(got)
        except Exception as e:
            if not _unstorable(e):
                raise
            self.log.warning("batch_not_stored", error=_short(e), entries=_count(got))
        # One entry holds a value the store refuses: store the batch entry by entry, and
        # move past (drop) only the entry that still cannot be stored.
        bad: BadList = []
        for stream, entries in got.items():
            for seq, data in entries:
                try:
                    bad += await self._apply({stream: [(seq, data)]})
                except Exception as e:
                    if not _unstorable(e):
                        raise
                    await self._drop(stream, seq, e)
        return bad

    async def _apply(self, got: Batch) -> BadList:
        work = _Work(self.markets)
        bad: BadList = []
        moved: dict[str, tuple[int, int]] = {}
        for stream, entries in got.items():
            old = last = self.pos[stream]
            is_risk = stream in self.fee_accounts
            for seq, data in entries:
                if seq <= last:
                    continue  # applied already
                last = seq
                try:
                    if is_risk:
                        risk_entry = codec.decode_risk_entry(data)
                        if _holds_nul(risk_entry):
                            risk_entry = _scrubbed(risk_entry)
                            work.scrubbed.append((stream, seq))
                        self._risk_entry(work, stream, seq, risk_entry)
                    else:
                        match_entry = codec.decode_match_events(data)
                        if _holds_nul(match_entry):
                            match_entry = _scrubbed(match_entry)
                            work.scrubbed.append((stream, seq))
                        self._match_entry(work, stream, seq, match_entry)
                except codec.BadEntry as e:
                    bad.append((stream, seq, str(e)))
            if last != old:
                moved[stream] = (old, last)
        if not moved:
            return bad
        try:
            async with self._engine().begin() as conn:
                written = await self._write(conn, work, moved)
        except _PositionsMoved as e:
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
                await self._write(conn, _Work(self.markets), {stream: (old, seq)})
        except _PositionsMoved as e:  # another instance got there first: follow it
            self.log.warning("positions_moved", error=str(e))
            await self._load()
            return
        self.pos[stream] = seq
        self.m_dropped.labels(stream).inc()
        self.log.error("entry_not_stored", stream=stream, log_seq=seq, error=_short(error))

    def _risk_entry(self, work: _Work, stream: str, seq: int, entry: codec.RiskEntry) -> None:
        fee_account = self.fee_accounts[stream]
        idx = 0
        bal = work.balances
        for item in entry.items:
            for ev in item.events:
                work.events.append(_event_row(stream, seq, idx, ev))
                idx += 1
                if isinstance(ev, _BALANCE_EVENTS):
                    bal[(ev.account, ev.asset)] = (ev.available, ev.locked)
                elif isinstance(ev, re_.OrderAcceptedForMatching):
                    bal[(ev.account, ev.hold_asset)] = (ev.available, ev.locked)
                elif isinstance(ev, re_.OrderCommandForwarded):
                    if ev.hold_asset is not None:
                        bal[(ev.account, ev.hold_asset)] = (ev.available, ev.locked)
                elif isinstance(ev, re_.TradeSettled):
                    known = work.markets.get(ev.market)
                    if known is None:
                        raise RuntimeError(
                            f"{stream}#{seq}: trade_settled in {ev.market!r} before market_added"
                        )
                    base, quote = known
                    for side in (ev.maker, ev.taker):
                        if side is None:
                            continue
                        bal[(side.account, base)] = (side.base_available, side.base_locked)
                        bal[(side.account, quote)] = (side.quote_available, side.quote_locked)
                        fee_asset = base if side.side is Side.BUY else quote
                        bal[(fee_account, fee_asset)] = (side.fee_account_balance, 0)
                elif isinstance(ev, re_.MarketAdded):
                    spec = ev.spec
                    if spec.market not in work.markets:
                        work.markets[spec.market] = (spec.base, spec.quote)
                        work.new_markets.append(
                            {"market": spec.market, "base": spec.base, "quote": spec.quote}
                        )

    def _match_entry(
        self, work: _Work, stream: str, seq: int, entry: codec.MatchEntryEvents
    ) -> None:
        idx = 0
        for item in entry.items:
            for ev in item.events:
                work.events.append(_event_row(stream, seq, idx, ev))
                idx += 1
                if isinstance(ev, _ORDER_EVENTS):
                    work.order_events.append(ev)
                if isinstance(ev, me.Trade):
                    work.trades.append(
                        {
                            "market": ev.market,
                            "trade_id": ev.trade_id,
                            "price": ev.price,
                            "size": ev.size,
                            "maker_order_id": ev.maker_order_id,
                            "taker_order_id": ev.taker_order_id,
                            "taker_side": str(ev.aggressor),
                            "ts": ev.ts,
                        }
                    )

    async def _write(
        self, conn: AsyncConnection, work: _Work, moved: dict[str, tuple[int, int]]
    ) -> dict[str, int]:
        for stream, (old, new) in moved.items():
            res = await conn.execute(
                update(positions)
                .where(positions.c.stream == stream, positions.c.log_seq == old)
                .values(log_seq=new)
            )
            if res.rowcount != 1:
                raise _PositionsMoved(f"{stream} is no longer at {old} in the store")
        written = {"positions": len(moved)}
        if work.new_markets:
            stmt = self._insert(markets).on_conflict_do_nothing()
            await conn.execute(stmt, work.new_markets)
            written["markets"] = len(work.new_markets)
        if work.balances:
            stmt = self._insert(balances)
            stmt = stmt.on_conflict_do_update(
                index_elements=[balances.c.account, balances.c.asset],
                set_={"available": stmt.excluded.available, "locked": stmt.excluded.locked},
            )
            rows = [
                {"account": a, "asset": s, "available": v, "locked": lk}
                for (a, s), (v, lk) in work.balances.items()
            ]
            await conn.execute(stmt, rows)
            written["balances"] = len(rows)
        if work.trades:
            await conn.execute(self._insert(trades).on_conflict_do_nothing(), work.trades)
            written["trades"] = len(work.trades)
        if work.order_events:
            written["orders"] = await self._write_orders(conn, work.order_events)
        if work.events:
            await conn.execute(self._insert(events).on_conflict_do_nothing(), work.events)
            written["events"] = len(work.events)
        return written

    async def _write_orders(self, conn: AsyncConnection, evs: list[me.Event]) -> int:
        ids: set[int] = set()
        for ev in evs:
            if isinstance(ev, me.Trade):
                ids.add(ev.maker_order_id)
                ids.add(ev.taker_order_id)
            elif isinstance(ev, _ORDER_EVENTS):
                ids.add(ev.order_id)
        rows: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(sorted(ids), _CHUNK):
            got = await conn.execute(select(orders).where(orders.c.order_id.in_(chunk)))
            for row in got.mappings():
                rows[int(row["order_id"])] = dict(row)
        touched: set[int] = set()
        for ev in evs:
            touched.update(self._fold_order(rows, ev))
        if not touched:
            return 0
        stmt = self._insert(orders)
        cols = ("type", "price", "size", "status", "filled", "reason", "updated_ts")
        stmt = stmt.on_conflict_do_update(
            index_elements=[orders.c.order_id],
            set_={c: stmt.excluded[c] for c in cols},
        )
        await conn.execute(stmt, [rows[oid] for oid in sorted(touched)])
        return len(touched)

    def _fold_order(self, rows: dict[int, dict[str, Any]], ev: me.Event) -> list[int]:
        """Apply one matching event to the order rows it concerns; the ids it changed."""
        if isinstance(ev, me.Accepted):
            o = ev.order
            rows[ev.order_id] = {
                "order_id": ev.order_id,
                "account": o.account,
                "market": ev.market,
                "side": str(o.side),
                "type": str(o.type),
                "price": o.price,
                "size": o.size,
                "client_order_id": o.client_order_id,
                "status": (UNTRIGGERED if o.type in _STOPS else OPEN).value,
                "filled": 0,
                "reason": None,
                "updated_ts": ev.ts,
            }
            return [ev.order_id]
        if isinstance(ev, me.Rejected):
            rows[ev.order_id] = {
                "order_id": ev.order_id,
                "account": ev.account,
                "market": ev.market,
                "side": str(ev.side),
                "type": None,
                "price": None,
                "size": None,
                "client_order_id": ev.client_order_id,
                "status": OrderStatus.REJECTED.value,
                "filled": 0,
                "reason": str(ev.code),
                "updated_ts": ev.ts,
            }
            return [ev.order_id]
        if isinstance(ev, me.Trade):
            changed = []
            for oid in (ev.maker_order_id, ev.taker_order_id):
                row = rows.get(oid)
                if row is None:
                    self.log.warning("order_unknown", order_id=oid, trade_id=ev.trade_id)
                    continue
                row["filled"] += ev.size
                row["updated_ts"] = ev.ts
                changed.append(oid)
            return changed
        if not isinstance(ev, (me.Triggered, me.Amended, me.Filled, me.Cancelled, me.Expired)):
            return []
        row = rows.get(ev.order_id)
        if row is None:
            self.log.warning("order_unknown", order_id=ev.order_id, event=type(ev).__name__)
            return []
        if isinstance(ev, me.Amended):
            row["price"], row["size"], row["updated_ts"] = ev.price, ev.size, ev.ts
            return [ev.order_id]
        status, filled, reason = OPEN, row["filled"], row["reason"]
        if isinstance(ev, me.Filled):
            status, filled = OrderStatus.FILLED, ev.size
        elif isinstance(ev, me.Cancelled):
            status, filled, reason = OrderStatus.CANCELLED, ev.filled, str(ev.reason)
        elif isinstance(ev, me.Expired):
            status, filled = OrderStatus.EXPIRED, ev.filled
        if status not in ORDER_TRANSITIONS[OrderStatus(row["status"])]:
            self.log.error(  # the engine never does this: keep the row, say where
                "order_status_refused",
                order_id=ev.order_id,
                status=str(row["status"]),
                to=str(status),
                event=type(ev).__name__,
            )
            return []
        row.update(status=status.value, filled=filled, reason=reason, updated_ts=ev.ts)
        return [ev.order_id]

    # ------------------------------------------------------------------ queries

    async def balances(self, account: str) -> dict[str, dict[str, int]]:
        """{asset: {"available": units, "locked": units}} of an account (canonical address)."""
        async with self._engine().connect() as conn:
            got = await conn.execute(
                select(balances.c.asset, balances.c.available, balances.c.locked)
                .where(balances.c.account == account.lower())
                .order_by(balances.c.asset)
            )
            return {
                row.asset: {"available": int(row.available), "locked": int(row.locked)}
                for row in got
            }

    async def trades(self, market: str, limit: int = 100) -> list[dict[str, Any]]:
        """The market's latest trades, newest first (price ticks, size lots, ts ns)."""
        async with self._engine().connect() as conn:
            got = await conn.execute(
                select(
                    trades.c.trade_id,
                    trades.c.price,
                    trades.c.size,
                    trades.c.maker_order_id,
                    trades.c.taker_order_id,
                    trades.c.taker_side,
                    trades.c.ts,
                )
                .where(trades.c.market == market)
                .order_by(trades.c.trade_id.desc())
                .limit(limit)
            )
            return [dict(row) for row in got.mappings()]

    async def orders(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        """The account's latest orders, newest first (as the matching events left them)."""
        async with self._engine().connect() as conn:
            got = await conn.execute(
                select(orders)
                .where(orders.c.account == account.lower())
                .order_by(orders.c.order_id.desc())
                .limit(limit)
            )
            return [dict(row) for row in got.mappings()]

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


def _event_row(stream: str, seq: int, idx: int, ev: Any) -> dict[str, Any]:
    body = msgspec.to_builtins(ev)
    return {"stream": stream, "log_seq": seq, "idx": idx, "kind": body["event"], "body": body}


_NUL = "\x00"
_REPLACEMENT = "\ufffd"
_NUL_IN_JSON = b"\\u0000"  # JSON's NUL (a text that spells it out only costs a walk)
_json = msgspec.json.Encoder().encode


def _holds_nul(entry: codec.RiskEntry | codec.MatchEntryEvents) -> bool:
    """Whether any text of the entry's events holds a NUL (one C-speed pass, no walk)."""
    return _NUL_IN_JSON in _json([item.events for item in entry.items])


def _scrubbed(entry: Any) -> Any:
    """The entry with every NUL in the text of its events replaced by U+FFFD."""
    items = [msgspec.structs.replace(i, events=_scrub(i.events)) for i in entry.items]
    return msgspec.structs.replace(entry, items=items)


def _scrub(value: Any) -> Any:
    """`value` with each NUL in its text (strings, keys, nested structs) replaced by U+FFFD;
    the same object where there is none. One character for one: lengths are kept."""
    if isinstance(value, str):
        return value.replace(_NUL, _REPLACEMENT) if _NUL in value else value
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name in value.__struct_fields__:
            old = getattr(value, name)
            new = _scrub(old)
            if new is not old:
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, list):
        items = [_scrub(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        pairs = [(_scrub(k), _scrub(v)) for k, v in value.items()]
        same = all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items(), strict=True))
        return value if same else dict(pairs)
    return value


def _unstorable(error: Exception) -> bool:
    """Whether the store refused a value (not itself: a connection, a lock): a PostgreSQL data
    exception (SQLSTATE class 22: bad text, a number out of range, ...) or a SQLite integer
    too large for its column."""
    if isinstance(error, DataError | OverflowError):
        return True
    if isinstance(error, DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(state, str) and state.startswith("22")
    return False


def _short(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]


def _count(got: Batch) -> int:
    return sum(len(entries) for entries in got.values())


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sqlite_pragmas(busy_timeout: float) -> Callable[[Any, Any], None]:
    """A connect hook: WAL (queries read while the writer writes) and a wait of `busy_timeout`
    seconds for a lock instead of `database is locked` at once."""
    milliseconds = round(busy_timeout * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={milliseconds:d}")
        cursor.close()

    return on_connect
