"""The ingest writer: log entries -> rows, written with the positions in one transaction.

`collect` decodes a batch of log entries into a `Work` (all in memory, no I/O); `write` writes
it and moves the positions in the caller's transaction. The service (`service.py`) runs the
batch loop around them.

Invariants:
- The positions are moved with `UPDATE ... WHERE log_seq = <old>`, so an entry applied by
  anyone before (a restart, a second replica) is never applied again: `PositionsMoved` rolls
  the transaction back and the caller reloads the positions.
- Balances are copied from the events (each carries the account's new balance), never
  computed, so the store agrees with the ledger entry by entry. The same events make the
  double-entry `ledger_entries` (`dex.persistence.ledger`), the `fills` (one per own side of
  a `trade_settled`), `deposits` and `withdrawals`, in the same transaction: `dex db verify`
  recomputes the balances from the entries. Orders come from the matching
  events only (their one authoritative life: accepted -> trades -> one terminal event).
- The 1-minute candles (`candles_1m`) are kept with the trades: each part's trades are
  folded per (market, minute) in Python (`minute_candles`, integers) and merged into the
  stored rows (`CANDLE_MERGE`): the open kept, the close the part's (a part is later in its
  log than every row stored; a market's trades all come from its one matching log, written
  in log order), high and low the extremes, volumes and count added. The positions make each
  trade counted once, as they make it stored once.
- The raw events are stored one row per log entry (`log_entries`): the JSON array of the
  entry's events, encoded once per entry by msgspec (the same encoding finds a NUL).
- Text is stored as the store can hold it: a NUL (which PostgreSQL refuses in text and JSON
  it reads) is stored as U+FFFD; `Work.scrubbed` names the entries so changed. A command
  inside an event (an accepted order) is written as on the bus, without its fields that hold
  their default value.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from sqlalchemy import JSON, BigInteger, Connection, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from dex.core import events as me
from dex.core.enums import ORDER_TRANSITIONS, OrderStatus, OrderType, Side
from dex.marketdata.candles import MINUTE_NS
from dex.persistence import ledger
from dex.persistence.schema import (
    balances,
    candles_1m,
    catalog,
    deposits,
    events,
    fills,
    ledger_entries,
    log_entries,
    markets,
    orders,
    positions,
    trades,
    withdrawals,
)
from dex.risk import events as re_
from dex.services.reader import BadList, Batch
from dex.wire import codec, layout

_CHUNK = 500  # ids per IN (...) query
PART = 500  # entries decoded and written at a time (`store`)
STAGE_FROM = 200  # PostgreSQL: rows of a table from which they go through a stage (`Bulk`)
YIELD_EVERY = 16  # entries decoded between two turns of the event loop (`store`)
CATALOG_KIND_NAMES = ("asset_added", "market_added")  # what the service learns decimals from
OPEN = OrderStatus.OPEN
UNTRIGGERED = OrderStatus.UNTRIGGERED  # stored as their values (plain text)
_STOPS = (OrderType.STOP_LIMIT, OrderType.STOP_MARKET)
# Events are matched by their exact type where the type checker can follow it (decoded
# events are never subclasses): `type(ev) is X` or a set lookup instead of a chain of
# isinstance calls, for each of the ~100,000 events of a large batch.
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
_ORDER_TYPES = frozenset(_ORDER_EVENTS)


_END_WITHDRAWAL = (
    update(withdrawals)
    .where(withdrawals.c.withdrawal_id == bindparam("wid"))
    .values(
        status=bindparam("w_status"),
        tx_id=bindparam("w_tx_id"),
        reason=bindparam("w_reason"),
        updated_ts=bindparam("w_ts"),
    )
)


class PositionsMoved(Exception):
    """Someone else moved a position since we read it: reload, never apply twice."""


class Work:
    """What one batch writes, built in memory before the transaction."""

    def __init__(self, known_markets: dict[str, tuple[str, str]]) -> None:
        self.markets = dict(known_markets)
        self.new_markets: list[dict[str, Any]] = []
        self.balances: dict[tuple[str, str], tuple[int, int]] = {}
        # rows as tuples in the column order of `COLUMNS` (no per-row dict, no per-row
        # parameter processing: the store gets them column by column)
        self.trades: list[tuple[Any, ...]] = []
        self.order_events: list[me.Event] = []
        self.raw: list[tuple[str, int, str]] = []  # log_entries: stream, seq, JSON array
        self.catalog: list[dict[str, Any]] = []  # bodies of asset_added / market_added
        self.catalog_rows: list[tuple[str, int, int, str]] = []  # catalog: ..., idx, JSON
        self.entries: list[tuple[Any, ...]] = []
        self.fills: list[tuple[Any, ...]] = []
        self.deposits: list[tuple[Any, ...]] = []
        self.withdrawals: list[tuple[Any, ...]] = []  # requested
        self.withdrawal_ends: list[dict[str, Any]] = []  # completed / failed, in order
        self.scrubbed: list[tuple[str, int]] = []  # entries stored with U+FFFD for NUL


def moves(got: Batch, pos: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Each stream of `got` with entries past `pos`: (its position now, its last entry)."""
    moved = {}
    for stream, entries in got.items():
        last = max((seq for seq, _ in entries), default=0)
        if last > pos[stream]:
            moved[stream] = (pos[stream], last)
    return moved


def collect_entry(
    work: Work, stream: str, seq: int, data: bytes, fee_account: str | None, bad: BadList
) -> None:
    """Decode one log entry into `work` (`fee_account`: the risk log's fee account; None for
    a matching log); an entry that does not decode goes to `bad`."""
    try:
        if fee_account is not None:
            risk_entry = _storable(work, stream, seq, codec.decode_risk_entry(data))
            _risk_entry(work, stream, seq, risk_entry, fee_account)
        else:
            match_entry = _storable(work, stream, seq, codec.decode_match_events(data))
            _match_entry(work, stream, seq, match_entry)
    except codec.BadEntry as e:
        bad.append((stream, seq, str(e)))


@dataclass
class Stored:
    """What `store` did: each moved stream's (old, new) position, the markets known after
    it, the catalog bodies and the scrubbed entries it wrote, the entries that did not
    decode, and rows per table."""

    moved: dict[str, tuple[int, int]]
    markets: dict[str, tuple[str, str]]
    catalog: list[dict[str, Any]] = field(default_factory=list)
    scrubbed: list[tuple[str, int]] = field(default_factory=list)
    bad: BadList = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)


async def store(
    conn: AsyncConnection,
    got: Batch,
    pos: dict[str, int],
    fee_accounts: dict[str, str],
    known_markets: dict[str, tuple[str, str]],
    log: Any,
) -> Stored:
    """Apply the entries of `got` past `pos` in the caller's transaction: move the positions
    (`PositionsMoved` if one is no longer where it was read), then decode and write the
    entries `PART` at a time, each part decoded while the previous one is being written (the
    server works while Python decodes; the decoding gives the loop a turn every
    `YIELD_EVERY` entries so the part in flight sends its next statement at once). The parts
    are written one after the other, in log order per stream: a part reads the order rows
    the ones before it wrote. `fee_accounts` maps each risk log to its fee account; a stream
    not in it is a matching log."""
    moved = moves(got, pos)
    await move_positions(conn, moved)
    bulk = await Bulk.of(conn)
    out = Stored(moved, dict(known_markets), written={"positions": len(moved)})
    pending: asyncio.Task[dict[str, int]] | None = None
    try:
        for stream, entries in got.items():
            fee_account = fee_accounts.get(stream)
            fresh = _past(entries, pos[stream])
            for start in range(0, len(fresh), PART):
                work = Work(out.markets)
                for n, (seq, data) in enumerate(fresh[start : start + PART], 1):
                    collect_entry(work, stream, seq, data, fee_account, out.bad)
                    if n % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                out.markets = work.markets
                out.catalog += work.catalog
                out.scrubbed += work.scrubbed
                if pending is not None:
                    _count(out.written, await pending)
                pending = asyncio.create_task(write_rows(conn, bulk, work, log))
        if pending is not None:
            part, pending = pending, None
            _count(out.written, await part)
    finally:
        if pending is not None and not pending.done():
            await _settle(pending, log)
    return out


def _past(entries: list[tuple[int, bytes]], last: int) -> list[tuple[int, bytes]]:
    """The entries after `last`, each once, in log order (an entry applied is skipped)."""
    out = []
    for seq, data in entries:
        if seq > last:
            out.append((seq, data))
            last = seq
    return out


def _count(written: dict[str, int], more: dict[str, int]) -> None:
    for table, n in more.items():
        written[table] = written.get(table, 0) + n


async def _settle(part: asyncio.Task[dict[str, int]], log: Any) -> None:
    """Let a part's write in flight end before its transaction does (the batch failed
    elsewhere, or was cancelled: the transaction rolls back); say if it failed too."""
    await asyncio.wait([part])
    if not part.cancelled() and (error := part.exception()) is not None:
        log.warning("part_not_written", error=short_error(error))


E = TypeVar("E", codec.RiskEntry, codec.MatchEntryEvents)


def _storable(work: Work, stream: str, seq: int, entry: E) -> E:
    """The entry as it is stored (a NUL in its text as U+FFFD), its `log_entries` row added:
    the JSON array of its events, encoded once (that one encoding also finds the NUL)."""
    body = _json([ev for item in entry.items for ev in item.events])
    if _NUL_IN_JSON in body:  # maybe a NUL (or a text spelling one out: then unchanged)
        entry = _scrubbed(entry)
        clean = _json([ev for item in entry.items for ev in item.events])
        if clean != body:
            work.scrubbed.append((stream, seq))
        body = clean
    work.raw.append((stream, seq, body.decode()))
    return entry


def _risk_entry(
    work: Work, stream: str, seq: int, entry: codec.RiskEntry, fee_account: str
) -> None:
    idx = 0
    bal = work.balances
    for item in entry.items:
        for ev in item.events:
            if type(ev) in _CATALOG_TYPES:
                _catalog_row(work, stream, seq, idx, ev)
            _money(work, stream, seq, idx, ev, fee_account)
            idx += 1
            if type(ev) is re_.OrderAcceptedForMatching:
                bal[(ev.account, ev.hold_asset)] = (ev.available, ev.locked)
            elif type(ev) is re_.TradeSettled:
                base, quote = work.markets[ev.market]  # known: `_money` checked
                for side in (ev.maker, ev.taker):
                    if side is None:
                        continue
                    bal[(side.account, base)] = (side.base_available, side.base_locked)
                    bal[(side.account, quote)] = (side.quote_available, side.quote_locked)
                    fee_asset = base if side.side is Side.BUY else quote
                    bal[(fee_account, fee_asset)] = (side.fee_account_balance, 0)
            elif isinstance(ev, _BALANCE_EVENTS):
                bal[(ev.account, ev.asset)] = (ev.available, ev.locked)
            elif type(ev) is re_.OrderCommandForwarded:
                if ev.hold_asset is not None:
                    bal[(ev.account, ev.hold_asset)] = (ev.available, ev.locked)
            elif type(ev) is re_.MarketAdded:
                spec = ev.spec
                if spec.market not in work.markets:
                    work.markets[spec.market] = (spec.base, spec.quote)
                    work.new_markets.append(
                        {"market": spec.market, "base": spec.base, "quote": spec.quote}
                    )


def _money(
    work: Work, stream: str, seq: int, idx: int, ev: re_.RiskEvent, fee_account: str
) -> None:
    """The ledger entries, fills, deposits and withdrawals of one risk event."""
    if type(ev) is re_.TradeSettled and ev.market not in work.markets:
        raise RuntimeError(f"{stream}#{seq}: trade_settled in {ev.market!r} before market_added")
    ts = ev.ts
    work.entries += [  # ENTRY_COLUMNS
        (stream, seq, idx, line, *e, ts)
        for line, e in enumerate(ledger.entries(ev, fee_account, work.markets))
    ]
    if type(ev) is re_.TradeSettled:
        base, quote = work.markets[ev.market]
        for liquidity, side in (("maker", ev.maker), ("taker", ev.taker)):
            if side is None:
                continue
            work.fills.append(  # FILL_COLUMNS
                (
                    ev.trade_id,
                    ev.market,
                    liquidity,
                    side.order_id,
                    side.account,
                    side.side.value,
                    ev.price,
                    ev.size,
                    side.fee,
                    ledger.fee_asset(side.side, base, quote),
                    ts,
                    stream,
                    seq,
                )
            )
    elif type(ev) is re_.DepositCredited:
        work.deposits.append(  # DEPOSIT_COLUMNS
            (ev.tx_id, ev.log_index, ev.account, ev.asset, ev.amount, ts, stream, seq)
        )
    elif type(ev) is re_.WithdrawalRequested:
        work.withdrawals.append(  # WITHDRAWAL_COLUMNS
            (
                ev.withdrawal_id,
                ev.account,
                ev.asset,
                ev.amount,
                "requested",
                None,
                None,
                ts,
                ts,
                stream,
                seq,
            )
        )
    elif type(ev) is re_.WithdrawalCompleted:
        work.withdrawal_ends.append(
            {"wid": ev.withdrawal_id, "w_status": "completed", "w_tx_id": ev.tx_id}
            | {"w_reason": None, "w_ts": ev.ts}
        )
    elif type(ev) is re_.WithdrawalFailed:
        work.withdrawal_ends.append(
            {"wid": ev.withdrawal_id, "w_status": "failed", "w_tx_id": None}
            | {"w_reason": ev.reason, "w_ts": ev.ts}
        )


def _match_entry(work: Work, stream: str, seq: int, entry: codec.MatchEntryEvents) -> None:
    idx = 0
    for item in entry.items:
        for ev in item.events:
            if type(ev) in _CATALOG_TYPES:
                _catalog_row(work, stream, seq, idx, ev)
            idx += 1
            if type(ev) in _ORDER_TYPES:
                work.order_events.append(ev)
            if type(ev) is me.Trade:
                work.trades.append(  # TRADE_COLUMNS
                    (
                        ev.market,
                        ev.trade_id,
                        ev.price,
                        ev.size,
                        ev.maker_order_id,
                        ev.taker_order_id,
                        ev.aggressor.value,
                        ev.ts,
                    )
                )


def insert(conn: AsyncConnection | Connection, table: Table) -> Any:
    """The dialect's INSERT (with ON CONFLICT) for `table`."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def write(
    conn: AsyncConnection, work: Work, moved: dict[str, tuple[int, int]], log: Any
) -> dict[str, int]:
    """Move the positions and write `work` in the caller's transaction; rows per table.
    Raises `PositionsMoved` when a position is no longer where it was read."""
    await move_positions(conn, moved)
    written = {"positions": len(moved)}
    _count(written, await write_rows(conn, await Bulk.of(conn), work, log))
    return written


async def move_positions(conn: AsyncConnection, moved: dict[str, tuple[int, int]]) -> None:
    """`UPDATE positions ... WHERE log_seq = <old>` for each stream; `PositionsMoved` when
    one is no longer there. Through SQLAlchemy, first: that begins the transaction the rows
    then join on the driver's own connection."""
    for stream, (old, new) in moved.items():
        res = await conn.execute(
            update(positions)
            .where(positions.c.stream == stream, positions.c.log_seq == old)
            .values(log_seq=new)
        )
        if res.rowcount != 1:
            raise PositionsMoved(f"{stream} is no longer at {old} in the store")


async def write_rows(conn: AsyncConnection, bulk: Bulk, work: Work, log: Any) -> dict[str, int]:
    """Write `work`'s rows (`Bulk`: binary COPY per table on PostgreSQL, `executemany` of
    plain tuples on SQLite); rows per table."""
    written: dict[str, int] = {}
    if work.new_markets:
        added = [(m["market"], m["base"], m["quote"]) for m in work.new_markets]
        await bulk.insert(markets, added)
        written["markets"] = len(added)
    if work.balances:
        bals = [(a, s, v, lk) for (a, s), (v, lk) in work.balances.items()]
        await bulk.upsert(balances, bals)
        written["balances"] = len(bals)
    if work.trades:
        await bulk.insert(trades, work.trades)
        written["trades"] = len(work.trades)
        minutes = minute_candles(work.trades)
        await bulk.merge(candles_1m, minutes, CANDLE_MERGE)
        written["candles_1m"] = len(minutes)
    if work.order_events:
        written["orders"] = await _write_orders(bulk, work.order_events, log)
    for table, rows in ((log_entries, work.raw), (ledger_entries, work.entries)):
        if rows:
            await bulk.append(table, rows)
            written[table.name] = len(rows)
    for table, rows in (
        (catalog, work.catalog_rows),
        (fills, work.fills),
        (deposits, work.deposits),
        (withdrawals, work.withdrawals),
    ):
        if rows:
            await bulk.insert(table, rows)
            written[table.name] = len(rows)
    if work.withdrawal_ends:
        await conn.execute(_END_WITHDRAWAL, work.withdrawal_ends)
        written["withdrawals"] = written.get("withdrawals", 0) + len(work.withdrawal_ends)
    return written


def minute_candles(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The `candles_1m` rows of trade rows (`trades` column order) given in log order: per
    (market, minute), open and close the first and last trade's price, high, low, base
    volume (lots), quote volume (price x size) and the count. Integers only; one row per
    key, as one `INSERT ... ON CONFLICT DO UPDATE` may touch a row only once."""
    acc: dict[tuple[str, int], list[int]] = {}
    for market, _id, price, size, _maker, _taker, _side, ts in rows:
        key = (market, ts - ts % MINUTE_NS)
        c = acc.get(key)
        if c is None:  # open, high, low, close, base, quote, count
            acc[key] = [price, price, price, price, size, price * size, 1]
            continue
        if price > c[1]:
            c[1] = price
        elif price < c[2]:
            c[2] = price
        c[3] = price
        c[4] += size
        c[5] += price * size
        c[6] += 1
    return [(market, start, *c) for (market, start), c in acc.items()]


# How a part's minute candles merge into the stored ones (`candles_1m`'s conflict rule), per
# dialect: the stored open is kept; the part is later in the log, so its close is the close.
CANDLE_MERGE = {
    postgres: "ON CONFLICT (market, open_time) DO UPDATE SET "
    f"high = {greatest}(candles_1m.high, excluded.high), "
    f"low = {least}(candles_1m.low, excluded.low), "
    "close = excluded.close, "
    "base_volume = candles_1m.base_volume + excluded.base_volume, "
    "quote_volume = candles_1m.quote_volume + excluded.quote_volume, "
    "trade_count = candles_1m.trade_count + excluded.trade_count"
    for postgres, greatest, least in ((True, "GREATEST", "LEAST"), (False, "max", "min"))
}


class Bulk:
    """Many rows per statement on the driver's connection, inside the transaction SQLAlchemy
    began. On PostgreSQL (asyncpg) the rows keyed by their log position go by binary COPY
    straight into their table (`append`); the others need their conflict rule: a few rows
    (fewer than `STAGE_FROM`) go as one array per column in `INSERT ... SELECT FROM unnest`
    (one statement, no per-row parameters), more by binary COPY (its client encoding is
    several times cheaper than arrays') into a temporary table of the transaction
    (`stage_<name>`, `ON COMMIT DROP`: nothing of it outlives the transaction, nothing of it
    needs the WAL) that one `INSERT ... SELECT` empties into the table. Small batches (the
    steady state) so make no temporary table and no catalog rows. SQLite (aiosqlite) gets
    `executemany` of the tuples. Inserts are `ON CONFLICT DO NOTHING` (the positions already
    make them happen once; a row the log holds twice is kept once, as before); upserts
    replace the columns that change; merges (`merge`) follow a rule of their table's."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self.raw = raw
        self.postgres = postgres
        self.staged: set[str] = set()  # the tables whose stage this transaction made

    @classmethod
    async def of(cls, conn: AsyncConnection) -> Bulk:
        fairy = await conn.get_raw_connection()
        return cls(fairy.driver_connection, conn.dialect.name == "postgresql")

    async def insert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        await self._run(table, rows, _conflict(table, upsert=False))

    async def append(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows keyed by their log position (`log_entries`, `ledger_entries`): the positions
        alone keep them once, so PostgreSQL takes them by binary COPY, with no conflict
        check; a row already there is a broken position and fails the batch loudly."""
        if self.postgres:
            names = [c.name for c in table.columns]
            await self.raw.copy_records_to_table(table.name, records=rows, columns=names)
        else:
            await self.insert(table, rows)

    async def upsert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        await self._run(table, rows, _conflict(table, upsert=True))

    async def merge(
        self, table: Table, rows: Sequence[tuple[Any, ...]], rule: dict[bool, str]
    ) -> None:
        """Rows (one per key) whose conflict clause is `rule[postgres]`."""
        await self._run(table, rows, rule[self.postgres])

    async def orders(self, ids: list[int]) -> list[dict[str, Any]]:
        names = [c.name for c in orders.columns]
        if self.postgres:
            got = await self.raw.fetch(
                f"SELECT {', '.join(names)} FROM orders WHERE order_id = ANY($1::bigint[])", ids
            )
            return [dict(zip(names, r, strict=True)) for r in got]
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(ids, _CHUNK):
            marks = ", ".join("?" * len(chunk))
            cur = await self.raw.execute(
                f"SELECT {', '.join(names)} FROM orders WHERE order_id IN ({marks})", chunk
            )
            rows += [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
            await cur.close()
        return rows

    async def _run(self, table: Table, rows: Sequence[tuple[Any, ...]], conflict: str) -> None:
        if not self.postgres:
            await self.raw.executemany(_statement(table, conflict), rows)
            return
        if len(rows) < STAGE_FROM:
            columns = (list(col) for col in zip(*rows, strict=True))
            await self.raw.execute(_from_arrays(table, conflict), *columns)
            return
        if table.name not in self.staged:
            await self.raw.execute(
                f"CREATE TEMPORARY TABLE stage_{table.name} (LIKE {table.name}) ON COMMIT DROP"
            )
            self.staged.add(table.name)
        names = [c.name for c in table.columns]
        await self.raw.copy_records_to_table(f"stage_{table.name}", records=rows, columns=names)
        await self.raw.execute(_from_stage(table, conflict))


def _conflict(table: Table, *, upsert: bool) -> str:
    if not upsert:
        return "ON CONFLICT DO NOTHING"
    keys = [c.name for c in table.primary_key.columns]
    changed = ", ".join(
        f"{c.name} = excluded.{c.name}" for c in table.columns if c.name not in keys
    )
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {changed}"


@functools.cache
def _statement(table: Table, conflict: str) -> str:
    """SQLite: the INSERT of one row of `table`, run by executemany."""
    names = ", ".join(c.name for c in table.columns)
    marks = ", ".join("?" * len(table.columns))
    return f"INSERT INTO {table.name} ({names}) VALUES ({marks}) {conflict}"


@functools.cache
def _from_arrays(table: Table, conflict: str) -> str:
    """PostgreSQL: insert the rows given as one array parameter per column."""
    names = ", ".join(c.name for c in table.columns)
    arrays = ", ".join(f"${i}::{_pg_type(c)}[]" for i, c in enumerate(table.columns, 1))
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names} "
        f"FROM unnest({arrays}) AS u({names}) {conflict}"
    )


def _pg_type(col: Any) -> str:
    if isinstance(col.type, BigInteger):
        return "bigint"
    if isinstance(col.type, JSON):
        return "json"  # sent as its text
    return "text"


@functools.cache
def _from_stage(table: Table, conflict: str) -> str:
    """PostgreSQL: move the rows of `table`'s stage into it (the stage is left empty)."""
    names = ", ".join(c.name for c in table.columns)
    return (
        f"WITH staged AS (DELETE FROM stage_{table.name} RETURNING {names}) "
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM staged {conflict}"
    )


ORDER_COLUMNS = tuple(c.name for c in orders.columns)
_order_values = operator.itemgetter(*ORDER_COLUMNS)  # an order row's values in column order


async def _write_orders(bulk: Bulk, evs: list[me.Event], log: Any) -> int:
    ids: set[int] = set()
    for ev in evs:
        if isinstance(ev, me.Trade):
            ids.add(ev.maker_order_id)
            ids.add(ev.taker_order_id)
        elif isinstance(ev, _ORDER_EVENTS):
            ids.add(ev.order_id)
    rows = {int(r["order_id"]): r for r in await bulk.orders(sorted(ids))}
    touched: set[int] = set()
    for ev in evs:
        touched.update(fold_order(rows, ev, log))
    if not touched:
        return 0
    await bulk.upsert(orders, [_order_values(rows[oid]) for oid in sorted(touched)])
    return len(touched)


def fold_order(rows: dict[int, dict[str, Any]], ev: me.Event, log: Any) -> list[int]:
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
            "tif": str(o.tif),
            "trigger_price": o.trigger_price or None,  # 0: not a stop order
            "quote_size": o.quote_size or None,  # 0: sized in base lots
            "created_ts": ev.ts,
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
            "tif": None,
            "trigger_price": None,
            "quote_size": None,
            "created_ts": ev.ts,
        }
        return [ev.order_id]
    if isinstance(ev, me.Trade):
        changed = []
        for oid in (ev.maker_order_id, ev.taker_order_id):
            row = rows.get(oid)
            if row is None:
                log.warning("order_unknown", order_id=oid, trade_id=ev.trade_id)
                continue
            row["filled"] += ev.size
            row["updated_ts"] = ev.ts
            changed.append(oid)
        return changed
    if not isinstance(ev, (me.Triggered, me.Amended, me.Filled, me.Cancelled, me.Expired)):
        return []
    row = rows.get(ev.order_id)
    if row is None:
        log.warning("order_unknown", order_id=ev.order_id, event=type(ev).__name__)
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
        log.error(  # the engine never does this: keep the row, say where
            "order_status_refused",
            order_id=ev.order_id,
            status=str(row["status"]),
            to=str(status),
            event=type(ev).__name__,
        )
        return []
    row.update(status=status.value, filled=filled, reason=reason, updated_ts=ev.ts)
    return [ev.order_id]


def _catalog_row(work: Work, stream: str, seq: int, idx: int, ev: Any) -> None:
    """The `catalog` row of an `asset_added` / `market_added` event, and its body to learn."""
    body = _json(ev).decode()
    work.catalog_rows.append((stream, seq, idx, body))
    work.catalog.append(msgspec.json.decode(body))


# the events of `CATALOG_KIND_NAMES` (both logs carry them)
_CATALOG_TYPES = frozenset({re_.AssetAdded, re_.MarketAdded, me.AssetAdded, me.MarketAdded})


_NUL = "\x00"
_REPLACEMENT = "\ufffd"
_NUL_IN_JSON = b"\\u0000"  # JSON's NUL (a text that spells it out only costs a walk)
_json = msgspec.json.Encoder().encode


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


def unstorable(error: Exception) -> bool:
    """Whether the store refused a value (not itself: a connection, a lock): a PostgreSQL data
    exception (SQLSTATE class 22: bad text, a number out of range, ...) or a SQLite integer
    too large for its column."""
    if isinstance(error, DataError | OverflowError):
        return True
    if isinstance(error, DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    else:  # raised by the driver itself (`Bulk` writes on its connection)
        state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and state.startswith("22")


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]


def count_entries(got: Batch) -> int:
    return sum(len(entries) for entries in got.values())


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_REBUILD_BATCH = 5_000  # events decoded per flush of the rebuild


def rebuild_money(conn: Connection) -> dict[str, int]:
    """Write the ledger entries, fills, deposits and withdrawals of every risk event already in
    `events` (a store upgraded from before they existed: revision 0002 runs this), in log
    order, with the rules of the ingest writer; rows per table. Idempotent (ON CONFLICT DO
    NOTHING; a withdrawal's end sets the same values again)."""
    from dex.persistence.verify import risk_shards

    known = {r.market: (r.base, r.quote) for r in conn.execute(select(markets))}
    fee_accounts = {layout.risk_log(r): f"fee:{r}" for r in risk_shards(conn)}
    written: dict[str, int] = {}
    if not fee_accounts:
        return written
    got = conn.execute(
        select(events.c.stream, events.c.log_seq, events.c.idx, events.c.body)
        .where(events.c.stream.in_(sorted(fee_accounts)))
        .order_by(events.c.stream, events.c.log_seq, events.c.idx)
    )
    while rows := got.fetchmany(_REBUILD_BATCH):
        work = Work(known)
        for stream, seq, idx, body in rows:
            try:
                ev = msgspec.convert(body, re_.RiskEvent)
            except msgspec.ValidationError:
                continue  # not an event this code knows: no rows, `dex db verify` will say
            if isinstance(ev, re_.MarketAdded):
                work.markets.setdefault(ev.spec.market, (ev.spec.base, ev.spec.quote))
            _money(work, stream, int(seq), int(idx), ev, fee_accounts[stream])
        known = work.markets
        for table, values in (
            (ledger_entries, work.entries),
            (fills, work.fills),
            (deposits, work.deposits),
            (withdrawals, work.withdrawals),
        ):
            if values:
                names = [c.name for c in table.columns]
                dicts = [dict(zip(names, row, strict=True)) for row in values]
                conn.execute(insert(conn, table).on_conflict_do_nothing(), dicts)
                written[table.name] = written.get(table.name, 0) + len(values)
        if work.withdrawal_ends:
            conn.execute(_END_WITHDRAWAL, work.withdrawal_ends)
    return written
