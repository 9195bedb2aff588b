"""The history queries, each on a connection the caller opened (the service's read API).

Lists are read newest first by keyset pagination, never OFFSET: each list has a sort key that
ends in the row's identity (so it is unique) and an index `(filter columns, sort key)`
(migration 0003), and a page is `WHERE filters AND (key) < (the last key seen) ORDER BY key
DESC LIMIT n + 1` — one index range scan whatever the page, and stable while rows are
inserted: a row inserted later sorts by its own key, never shifting the rows already paged.

A cursor is the last key of a page, opaque to clients: base64url of `[list, [key...]]` (JSON)
and a keyed 6-byte BLAKE2b tag of it. A cursor that does not decode, fails its tag, names
another list or holds values of the wrong kind is `BadCursor`; nothing is read. The tag is
not a secret (cursors work across restarts and replicas): it catches corrupted and edited
cursors, and a forged one can only page the caller's own rows.

Amounts come back as stored: integer ticks, lots and units; times in ns.

Candles (`candles`) are read from the 1-minute candles the ingest writer keeps
(`candles_1m`, migration 0005) and folded into longer intervals here, into market data's own
`Candle` values (`dex.marketdata.candles`), so both services' candles agree exactly: a
longer candle's open is its first minute's open, its close its last minute's close, high and
low the extremes, volumes and count the sums — what the builder gives over the same trades.
A query reads one range of the table's primary key `(market, open_time)`, at most `limit`
intervals long: it first seeks the minute nearest the asked end of the range (one index
probe), so an empty stretch costs nothing, then reads at most one row per minute of those
intervals. A window with gaps holds fewer than `limit` candles, and `through` says where it
stopped (the next query starts there).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Select,
    Table,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from dex.core.enums import OrderStatus
from dex.marketdata import candles as cb
from dex.persistence import schema
from dex.persistence.schema import (
    CANDLE_ROW,
    balances,
    candles_1m,
    catalog,
    deposits,
    fills,
    ledger_entries,
    orders,
    trades,
    withdrawals,
)

MAX_INT = 2**63 - 1
OPEN_STATUSES = (OrderStatus.PENDING, OrderStatus.UNTRIGGERED, OrderStatus.OPEN)
CLOSED_STATUSES = (
    OrderStatus.FILLED,
    OrderStatus.CANCELLED,
    OrderStatus.EXPIRED,
    OrderStatus.REJECTED,
)
_TAG_BYTES = 6
_TAG_KEY = b"dex-persistence-cursor-v1"
_YIELD_MINUTES = 5_000  # 1-minute rows fetched at a time when a window is longer than a day


@dataclass(frozen=True)
class Listing:
    """A list the API pages: its table and its sort key (newest first, unique)."""

    name: str
    table: Table
    key: tuple[Column[Any], ...]


ORDERS = Listing("orders", orders, (orders.c.created_ts, orders.c.order_id))
FILLS = Listing("fills", fills, (fills.c.ts, fills.c.trade_id, fills.c.market, fills.c.liquidity))
LEDGER = Listing(
    "ledger",
    ledger_entries,
    tuple(ledger_entries.c[n] for n in ("ts", "stream", "log_seq", "idx", "line")),
)
DEPOSITS = Listing("deposits", deposits, (deposits.c.ts, deposits.c.tx_id, deposits.c.log_index))
WITHDRAWALS = Listing(
    "withdrawals", withdrawals, (withdrawals.c.requested_ts, withdrawals.c.withdrawal_id)
)
TRADES = Listing("trades", trades, (trades.c.ts, trades.c.trade_id))


class BadCursor(ValueError):
    """A cursor this code did not make for this list."""


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def _tag(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_TAG_BYTES, key=_TAG_KEY).digest()


def encode_cursor(listing: Listing, key: Sequence[Any]) -> str:
    payload = msgspec.json.encode([listing.name, list(key)])
    return base64.urlsafe_b64encode(payload + _tag(payload)).rstrip(b"=").decode()


def decode_cursor(listing: Listing, cursor: str) -> tuple[Any, ...]:
    """The key a cursor of `listing` holds; BadCursor otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise BadCursor("is not a cursor of this API (not base64url)") from None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(raw) <= _TAG_BYTES or tag != _tag(payload):
        raise BadCursor("is not a cursor of this API (damaged or edited)")
    try:
        name, key = msgspec.json.decode(payload, type=tuple[str, list[int | str]])
    except msgspec.DecodeError:
        raise BadCursor("is not a cursor of this API") from None
    if name != listing.name:
        raise BadCursor(f"is a cursor of the {name} list, not of {listing.name}")
    if len(key) != len(listing.key):
        raise BadCursor("is not a cursor of this list")
    for value, col in zip(key, listing.key, strict=True):
        number = isinstance(col.type, BigInteger)
        if number != isinstance(value, int) or (number and not 0 <= int(value) <= MAX_INT):
            raise BadCursor("is not a cursor of this list")
    return tuple(key)


async def page(
    conn: AsyncConnection,
    listing: Listing,
    where: Sequence[ColumnElement[bool]],
    cursor: tuple[Any, ...] | None,
    limit: int,
) -> Page:
    """Up to `limit` rows of `listing` matching `where`, newest first, after `cursor`."""
    stmt = select(listing.table).where(*where)
    if cursor is not None:
        bound = [literal(v, c.type) for v, c in zip(cursor, listing.key, strict=True)]
        stmt = stmt.where(tuple_(*listing.key) < tuple_(*bound))
    stmt = stmt.order_by(*(c.desc() for c in listing.key)).limit(limit + 1)
    rows = [dict(r) for r in (await conn.execute(stmt)).mappings()]
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    return Page(rows, encode_cursor(listing, [rows[-1][c.name] for c in listing.key]))


def time_range(col: Column[Any], start_ns: int | None, end_ns: int | None) -> list[Any]:
    """`start <= col < end` (either bound optional)."""
    out = []
    if start_ns is not None:
        out.append(col >= start_ns)
    if end_ns is not None:
        out.append(col < end_ns)
    return out


def order_filters(
    account: str,
    statuses: Sequence[str] | None,
    market: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> list[Any]:
    where: list[Any] = [orders.c.account == account]
    if market is not None:
        where.append(orders.c.market == market)
    if statuses is not None:
        where.append(orders.c.status.in_(list(statuses)))
    return where + time_range(orders.c.created_ts, start_ns, end_ns)


async def order_by_id(conn: AsyncConnection, account: str, order_id: int) -> dict[str, Any] | None:
    got = await conn.execute(
        select(orders).where(orders.c.order_id == order_id, orders.c.account == account)
    )
    row = got.mappings().first()
    return None if row is None else dict(row)


async def order_by_client_id(
    conn: AsyncConnection, account: str, client_order_id: str, market: str | None
) -> dict[str, Any] | None:
    """The account's newest order with that client order id (in `market` if given)."""
    stmt = select(orders).where(
        orders.c.account == account, orders.c.client_order_id == client_order_id
    )
    if market is not None:
        stmt = stmt.where(orders.c.market == market)
    stmt = stmt.order_by(orders.c.created_ts.desc(), orders.c.order_id.desc()).limit(1)
    row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else dict(row)


async def account_balances(conn: AsyncConnection, account: str) -> dict[str, dict[str, int]]:
    """{asset: {"available": units, "locked": units}} of an account (canonical address)."""
    got = await conn.execute(
        select(balances.c.asset, balances.c.available, balances.c.locked)
        .where(balances.c.account == account.lower())
        .order_by(balances.c.asset)
    )
    return {row.asset: {"available": int(row.available), "locked": int(row.locked)} for row in got}


async def catalog_events(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The body of every `asset_added` and `market_added` event stored (`catalog`), in log
    order. Every shard logs them, so each comes several times."""
    c = catalog.c
    got = await conn.execute(select(c.body).order_by(c.stream, c.log_seq, c.idx))
    return [dict(row.body) for row in got]


async def markets(conn: AsyncConnection) -> dict[str, tuple[str, str]]:
    """market -> (base, quote) of every market stored."""
    table = schema.markets
    rows = await conn.execute(select(table.c.market, table.c.base, table.c.quote))
    return {row.market: (row.base, row.quote) for row in rows}


async def positions(conn: AsyncConnection) -> dict[str, int]:
    """stream -> the last entry of it applied."""
    table = schema.positions
    got = await conn.execute(select(table.c.stream, table.c.log_seq))
    return {row.stream: int(row.log_seq) for row in got}


@dataclass(frozen=True)
class CandleWindow:
    """Candles of the trades in `[lo, through)` (ns), oldest first."""

    candles: list[cb.Candle]
    lo: int
    through: int


async def candles(
    conn: AsyncConnection,
    market: str,
    interval: str,
    start_ns: int | None,
    end_ns: int | None,
    limit: int,
) -> CandleWindow:
    """The candles of `market` opened in `[start_ns, end_ns]` (either optional): the first
    `limit` from `start_ns` if given, else the last `limit` up to `end_ns` — within one window
    of `limit` intervals beginning (or ending) at the nearest trade, so possibly fewer."""
    iv = cb.INTERVALS[interval]
    k = candles_1m.c
    # a candle opens in [start, end] iff its minutes open in [align_up(start), end_excl)
    lo = 0 if start_ns is None else -(-start_ns // iv) * iv
    hi = MAX_INT if end_ns is None else min(MAX_INT, end_ns - end_ns % iv + iv)
    if lo >= hi:
        return CandleWindow([], lo, hi)
    in_range = (k.market == market, k.open_time >= lo, k.open_time < hi)
    if start_ns is not None:
        first = await conn.scalar(
            select(k.open_time).where(*in_range).order_by(k.open_time).limit(1)
        )
        if first is None:
            return CandleWindow([], lo, hi)
        lo = int(first) - int(first) % iv
        hi = min(hi, lo + limit * iv)
    else:
        last = await conn.scalar(
            select(k.open_time).where(*in_range).order_by(k.open_time.desc()).limit(1)
        )
        if last is None:
            return CandleWindow([], lo, hi)
        hi = int(last) - int(last) % iv + iv
        lo = max(lo, hi - limit * iv)
    stmt = (
        select(*CANDLE_ROW)
        .where(k.market == market, k.open_time >= lo, k.open_time < hi)
        .order_by(k.open_time)
    )
    rows: list[cb.Candle] = []
    if (hi - lo) // cb.MINUTE_NS > cb.MAX_CANDLES:  # up to 1,500 days of minutes (1d):
        got = await conn.stream(stmt.execution_options(yield_per=_YIELD_MINUTES))
        async for part in got.partitions():  # streamed, folded as they come
            fold_minutes(part, iv, rows)
    elif conn.dialect.name == "postgresql":  # a day of minutes or less: as 8 arrays
        fold_minutes(await _minute_arrays(conn, stmt), iv, rows)
    else:
        fold_minutes((await conn.execute(stmt)).all(), iv, rows)
    return CandleWindow(rows[:limit] if start_ns is not None else rows[-limit:], lo, hi)


async def _minute_arrays(conn: AsyncConnection, stmt: Select[Any]) -> Iterable[Sequence[Any]]:
    """PostgreSQL: the rows of `stmt` (ordered by open time) fetched as one array per column
    (`array_agg` over the ordered rows), zipped back into rows as they are folded. 8 lists
    instead of 1,440 rows and the driver's 1,440 records: a day of 1m candles then allocates
    few objects the cyclic garbage collector tracks beyond the candles themselves, so its
    full passes (10-20 ms here) come several times less often. `array_agg` over an ordered
    subquery keeps that order in PostgreSQL, which does not promise it: checked, and the
    rows sorted if it were not."""
    inner = stmt.subquery()
    got = (await conn.execute(select(*(func.array_agg(c) for c in inner.c)))).one()
    if got[0] is None:  # no row
        return ()
    times = got[0]
    if any(a >= b for a, b in pairwise(times)):
        return sorted(zip(*got, strict=True))
    return zip(*got, strict=True)


def fold_minutes(minutes: Iterable[Sequence[Any]], iv: int, out: list[cb.Candle]) -> None:
    """Fold 1-minute rows `(open_time, open, high, low, close, base, quote, count)` (integers),
    in time order and later than the candles of `out`, into `out`: the candles of interval
    `iv` (ns, a multiple of a minute), what market data's builder gives over the trades those
    minutes hold (`log_seq` 0: not known here). A candle is made with its fields set
    directly (no per-row call of its constructor): a day of 1m candles is 1,440 of them."""
    new = cb.Candle.__new__
    c = out[-1] if out else None
    for open_time, open_, high, low, close, base, quote, count in minutes:
        start = open_time - open_time % iv
        if c is None or c.open_time != start:
            c = new(cb.Candle)
            c.open_time, c.open, c.high, c.low, c.close = start, open_, high, low, close
            c.base, c.quote, c.count, c.log_seq = base, quote, count, 0
            out.append(c)
            continue
        if high > c.high:
            c.high = high
        if low < c.low:
            c.low = low
        c.close = close
        c.base += base
        c.quote += quote
        c.count += count
