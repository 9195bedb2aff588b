"""Persistence benchmark (issue 13): ingest rate of the history writer, and history queries.

Run from the repository root with the package installed (`pip install -e .`) and a PostgreSQL
server (trust auth) at `--pg` (default postgresql://postgres@127.0.0.1:5432/test):

    python bench/persistence.py                 # JSON on stdout, progress on stderr (~10 min)
    python bench/persistence.py --keep          # keep the 10M-fill tables, reuse them next time
    python bench/persistence.py --only ingest --profile 30     # ingest, PostgreSQL profiled
    python bench/persistence.py --orders 4000 --fills 200000   # quick check

The ingest runs in its own database (`--db`, default dex_bench), created and dropped; the
SQLite store is a file in a temporary folder. The query tables are in `<db>_queries`, dropped
at the end unless `--keep` (then reused when they hold `--fills` fills at the newest revision).

1. Ingest (`pg_events_per_s`, `sqlite_events_per_s`). The in-process cluster of the tests
   (`tests/services/inproc.py`: every matching and risk shard, 2 + 2, on one MemoryBus) gets
   the demo markets, `--accounts` funded accounts and `--orders` seeded limit orders on
   ETH-USDC (buys and sells a few ticks around one mid, so about half of them trade). That is
   untimed. Then a real `PersistenceService` on a fresh, migrated store reads the logs as the
   service does: `step()` in a loop (`read_many` of `--batch` entries per stream, then one
   transaction: the positions, the entries decoded and written in parts by `writer.store`;
   then `commit_position` on the bus) until the logs are drained; that loop is timed. An
   event is one matching or risk event in those log entries (a row of the `events` view).
   Target: >= 50,000 events/s into PostgreSQL. `--profile N` prints the top N of a cProfile
   of the PostgreSQL ingest.
2. Queries (`queries`, PostgreSQL only). `--fills` fills (default 10,000,000) over
   `--accounts-big` accounts and 2 markets, spread evenly over `--days` (30) days, half as
   many trades and orders, 3 balances per account: `INSERT ... SELECT generate_series` into
   the migrated tables with their secondary indexes dropped, the indexes built after, then
   the trades' 1-minute candles (`candles_1m`, by migration 0005's own backfill SQL), then
   VACUUM ANALYZE (untimed, printed: 114.5 s for 10M here, 3-4 minutes under load). Each
   query runs `--reps` times (candles `--candle-reps`, 1,000) for random accounts / markets
   / days on one connection, after 20 untimed calls; p50 / p99 / max in ms (target p99 < 20
   ms), and the scans of the EXPLAIN of the statements its last call sent. Timed, as the routes call
   them (`dex.persistence.service`): `queries.page` of an account's orders, of its fills and
   of a market's trades (limit 100, first page), `queries.candles` of a market for one UTC
   day in 1m candles (limit 1440; read from `candles_1m` since 0005), and
   `queries.account_balances`. Two runs of the query part on one build:
   `--only queries --keep` twice (the second reuses the tables; drop `<db>_queries` after).

Figures, this 2-core machine shared with other engineers' tests and benches (load given per
run; 20,000 orders: 10,000 log entries, 89,318 events, batch 1000). Each run of this code was
interleaved with a run of the previous writer (commit 279ceee) at the same moment:

   ingest, events/s      PostgreSQL       SQLite     (load at the run's end)
   previous writer       25,690-26,862    34,564-37,121
   this code             42,511-51,831    47,327-52,980  (51,831 / 51,548 at load ~1.1-1.5,
                                                          42,511 at load 2.4)

   What changed (migration 0004 and `writer.store`): the raw events are one row per log
   entry (`log_entries`, a JSON array; 10,000 rows instead of 89,318 JSONB rows, `events` is
   now a view of it); `ledger_entries` keeps one index (`ledger_by_account_ts`, unique) of
   the three it had (its primary key and `ledger_by_account_asset_ts` gone); every table is
   sent by binary COPY (through a temporary stage where a conflict rule applies, from 200
   rows: no array parameters); each batch is decoded and written in parts of 500 entries, a
   part decoded while the previous one is written. What is left is the server:
   per-statement waits of one run (1.98 s in all) were ledger_entries 0.53 s (138k rows),
   log_entries 0.30 s, fills 0.24 s, orders 0.24 s, trades 0.07 s, balances 0.06 s, and the
   PostgreSQL backend used about 1.2 s of CPU against 0.9 s for this process; under
   `--profile` about 1.0 s of the PostgreSQL run is `epoll` (waiting on the server). 50,000
   is met only while the machine is otherwise idle enough for the server and the writer to
   run at the same time.

   queries (10,000,000 fills, 5,000,000 trades and orders over 30 days, 10,000 accounts;
   built in 114.5 s; 1,000 calls each, candles 100), p50 / p99 in ms over the three runs:
   account orders 1.09-1.27 / 1.5-6.0, account fills 1.06-1.30 / 1.7-2.4, market trades
   0.75-0.79 / 0.9-1.8, balances 0.25-0.35 / 0.5-1.0: target met, every plan an index
   scan. A market's day of 1m candles: 1,217-1,323 / 1,396-1,663 ms, target NOT met: the
   candles are built from the day's trades at each call (here 83,333 trades per market and
   day, read and folded by market data's builder in Python); PostgreSQL alone aggregating
   them (GROUP BY minute) takes 25-30 ms, so under 20 ms needs candles kept by the writer.

Candles kept by the writer (migration 0005, `candles_1m`), figures of this session:

   ingest, events/s (5 runs each, interleaved with the previous writer, commit 1cf340e,
   at load 1.5-2.4)      PostgreSQL       SQLite
   previous writer       41,858-52,050    47,352-52,511  (median 42,971 / 50,049)
   with candles_1m       39,301-43,893    48,432-53,276  (median 42,176 / 50,261)

   The writer folds each part's trades per (market, minute) in Python and merges them with
   one more statement per part that holds trades (`INSERT ... SELECT FROM unnest(...) ON
   CONFLICT DO UPDATE`, a few rows): PostgreSQL about 2 % lower at the median, within the
   run-to-run spread here; SQLite unchanged. 50,000 events/s into PostgreSQL is still not
   met on this loaded machine (it was only at load ~1.1-1.5, above).

   queries (the same 10M-fill tables and 86,402 candle rows, built in 129.1 s; 1,000
   calls each), two runs: a market's day of 1m candles p50 3.93 / 4.03 ms,
   p99 7.6 / 8.5 ms, max 45 ms (run 2): target met. It was 1,202 / 1,270 ms p50 / p99
   (the previous commit's `queries.candles`, 30 calls on the same tables). A call reads
   the day's minutes by one range of `candles_1m`'s primary key (a bitmap index scan:
   the heap holds the two markets' minutes interleaved), on PostgreSQL as one array per
   column, and folds them into market data's `Candle` values in Python. The tail is
   CPython's cyclic garbage collector: a day is 1,440 `Candle` objects, and about one call
   in a hundred meets a full collection (12 in 1,000 calls of a loop of this query alone;
   a full `gc.collect()` there took 11-17 ms). Fetched as rows (the first version), the
   same loop met 30 in 1,000 (p99 ~25 ms), and the bench's first run of it (100 calls)
   gave p50 4.5 / p99 44 ms. Other queries, same runs:
   account orders 1.17-1.24 / 4.0-6.0, account fills 1.10-1.31 / 3.1-5.2, market trades
   0.75-0.77 / 1.4-2.4, balances 0.24-0.26 / 0.6-0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import json
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.schema import CreateIndex

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services.inproc import ETH, USDC, Cluster, place

from dex.persistence import migrations, queries, schema
from dex.persistence.service import PersistenceService
from dex.persistence.store import async_database_url, make_engine
from dex.risk import commands as rc
from dex.runtime.health import Health
from dex.runtime.metrics import ServiceMetrics
from dex.wire import codec, layout

SEED = 13
TARGET_EVENTS = 50_000
TARGET_P99_MS = 20.0
MID = 200_000


def say(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


class QuietLog:
    """A logger that keeps the service's warnings and errors (counted per event name) and the
    first few of them, and drops the rest."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.first: list[str] = []

    def _keep(self, event: str, **kw: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        if len(self.first) < 3:
            self.first.append(f"{event} {kw}"[:300])

    def warning(self, event: str, **kw: Any) -> None:
        self._keep(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._keep(event, **kw)

    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **kw: None


# ---------------------------------------------------------------------- traffic


async def traffic(n_accounts: int, n_orders: int, every: int) -> Cluster:
    """A cluster whose logs hold the demo markets, deposits and `n_orders` orders."""
    c = Cluster(max_lag=10**9)
    await c.start()
    await c.setup_markets()
    accounts = ["0x" + f"{i:040x}" for i in range(1, n_accounts + 1)]
    for i, a in enumerate(accounts):
        await c.send(a, rc.Deposit(account=a, asset="ETH", amount=10**6 * ETH, tx_id=f"f:{i}e"))
        await c.send(a, rc.Deposit(account=a, asset="USDC", amount=10**9 * USDC, tx_id=f"f:{i}u"))
    await c.pump(2)
    rng = random.Random(SEED)
    for i in range(n_orders):
        a = accounts[rng.randrange(n_accounts)]
        side = "buy" if rng.random() < 0.5 else "sell"
        offset = rng.randrange(0, 60) * 10
        price = MID - offset + 200 if side == "buy" else MID + offset - 200
        await c.send(a, place(a, side, price, rng.randrange(100, 2000), client_order_id=f"c{i}"))
        if i % every == every - 1:
            await c.pump(2)
    await c.pump()
    return c


async def count_events(c: Cluster) -> tuple[int, int]:
    """(entries, events) in the logs the persistence service reads."""
    risk = [layout.risk_log(r) for r in range(c.r_count)]
    entries = events = 0
    for stream in [*risk, *(layout.me_log(m) for m in range(c.m_count))]:
        for _, data in await c.bus.read(stream, 0, limit=10**9):
            entries += 1
            if stream in risk:
                items = codec.decode_risk_entry(data).items
            else:
                items = codec.decode_match_events(data).items
            events += sum(len(item.events) for item in items)
    return entries, events


# ---------------------------------------------------------------------- ingest


def persistence(c: Cluster, url: str, batch: int) -> PersistenceService:
    metrics = ServiceMetrics("persistence")
    health = Health(metrics)
    health.started = True
    return PersistenceService(
        c.bus,
        url,
        risk_shards=c.r_count,
        matching_shards=c.m_count,
        health=health,
        metrics=metrics,
        log=QuietLog(),
        batch_size=batch,
        read_timeout=0.0,
    )


async def ingest(c: Cluster, url: str, batch: int) -> tuple[float, int, int, QuietLog]:
    """Seconds to drain the logs into the store at `url`, batches, entries applied, and the
    service's warnings."""
    svc = persistence(c, url, batch)
    svc.engine = svc._make_engine()
    await svc.prepare()  # migrations, positions: untimed
    batches = applied = 0
    t0 = time.perf_counter()
    while n := await svc.step():
        batches += 1
        applied += n
    seconds = time.perf_counter() - t0
    await svc.stop()
    for stream in svc.streams:  # the next store reads the logs from their start again
        await c.bus.commit_position(stream, svc.reader, 0)
    assert isinstance(svc.log, QuietLog)
    return seconds, batches, applied, svc.log


# ---------------------------------------------------------------------- queries

T0 = 1_700_000_000_000_000_000  # ns: the first row's time
DAY = 86_400 * 10**9
FILL_SQL = """
INSERT INTO fills (trade_id, market, liquidity, order_id, account, side, price, size, fee,
                   fee_asset, ts, stream, log_seq)
SELECT g / 2, CASE WHEN (g / 2) % 2 = 0 THEN 'ETH-USDC' ELSE 'BTC-USDC' END,
       CASE WHEN g % 2 = 0 THEN 'maker' ELSE 'taker' END, g, {acct},
       CASE WHEN g % 2 = 0 THEN 'buy' ELSE 'sell' END, 200000 + g % 97, 100 + g % 1000,
       g % 50, 'USDC', {t0} + (g / 2) * {step}, :stream, g
FROM generate_series(0::bigint, {n} - 1) AS g
"""
TRADE_SQL = """
INSERT INTO trades (market, trade_id, price, size, maker_order_id, taker_order_id, taker_side,
                    ts)
SELECT CASE WHEN t % 2 = 0 THEN 'ETH-USDC' ELSE 'BTC-USDC' END, t, 200000 + t % 97,
       100 + t % 1000, 2 * t, 2 * t + 1, 'sell', {t0} + t * {step}
FROM generate_series(0::bigint, {n} - 1) AS t
"""
ORDER_SQL = """
INSERT INTO orders (order_id, account, market, side, type, price, size, client_order_id,
                    status, filled, reason, updated_ts, tif, created_ts)
SELECT o, {acct}, CASE WHEN o % 2 = 0 THEN 'ETH-USDC' ELSE 'BTC-USDC' END,
       CASE WHEN o % 2 = 0 THEN 'buy' ELSE 'sell' END, 'limit', 200000 + o % 97,
       100 + o % 1000, 'c' || o, 'filled', 100 + o % 1000, NULL,
       {t0} + o * {step} + 1000, 'GTC', {t0} + o * {step}
FROM generate_series(0::bigint, {n} - 1) AS o
"""
BALANCE_SQL = """
INSERT INTO balances (account, asset, available, locked)
SELECT '0x' || lpad(to_hex(a), 40, '0'), s, 1000000 + a, a % 7
FROM generate_series(1, {n}) AS a, unnest(ARRAY['BTC', 'ETH', 'USDC']) AS s
"""
QUERY_TABLES = ("fills", "trades", "orders", "balances", "candles_1m")
# the trades' 1-minute candles, made as migration 0005 makes them for trades stored before it
CANDLES_SQL = importlib.import_module("dex.persistence.migrations.versions.0005_candles").BACKFILL


def acct_sql(column: str, n_accounts: int) -> str:
    """An account address spread over `n_accounts` by a hash of `column` (not in key order)."""
    return f"'0x' || lpad(to_hex(1 + (({column} * 2654435761) % {n_accounts})), 40, '0')"


def account(i: int) -> str:
    return "0x" + f"{i:040x}"


async def built(url: str) -> int:
    """The fills a kept query database holds (0 if none, or not at the newest revision)."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            if await conn.run_sync(migrations.current) != migrations.head():
                return 0
            return int((await conn.execute(text("SELECT count(*) FROM fills"))).scalar_one())
    except (SQLAlchemyError, OSError) as e:  # no such database yet, or not a store: build it
        say(f"  no query tables to reuse ({type(e).__name__})")
        return 0
    finally:
        await engine.dispose()


async def build(url: str, n_fills: int, n_accounts: int, days: float) -> dict[str, Any]:
    """The query tables at `url` (migrated, emptied): `n_fills` fills over `days` days, half
    as many trades and orders. The secondary indexes are dropped during the load and built
    after (what a bulk load does; the rows and indexes are the migrated schema's)."""
    engine = make_engine(url)
    sizes: dict[str, Any] = {}
    step = int(days * DAY / max(1, n_fills // 2))  # ns between two trades (and two orders)
    t0 = time.perf_counter()
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrations.upgrade)
            await conn.execute(text(f"TRUNCATE {', '.join(QUERY_TABLES)}"))
            indexes = [
                (ix.name, str(CreateIndex(ix).compile(dialect=conn.dialect)))
                for name in QUERY_TABLES
                for ix in schema.metadata.tables[name].indexes
            ]
            for name, _ in indexes:
                await conn.execute(text(f"DROP INDEX {name}"))
            await conn.execute(text("SET maintenance_work_mem = '512MB'"))
            fill = FILL_SQL.format(n=n_fills, acct=acct_sql("g", n_accounts), t0=T0, step=step)
            await conn.execute(text(fill), {"stream": layout.risk_log(0)})
            say(f"  fills: {time.perf_counter() - t0:.0f} s")
            await conn.execute(text(TRADE_SQL.format(n=n_fills // 2, t0=T0, step=step)))
            acct = acct_sql("o", n_accounts)
            await conn.execute(text(ORDER_SQL.format(n=n_fills // 2, acct=acct, t0=T0, step=step)))
            await conn.execute(text(BALANCE_SQL.format(n=n_accounts)))
            say(f"  rows: {time.perf_counter() - t0:.0f} s")
            for _, ddl in indexes:
                await conn.execute(text(ddl))
            say(f"  indexes: {time.perf_counter() - t0:.0f} s")
            await conn.execute(text(CANDLES_SQL))  # reads trades_by_market_ts: after it
            say(f"  candles: {time.perf_counter() - t0:.0f} s")
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in QUERY_TABLES:
                await conn.execute(text(f"VACUUM ANALYZE {table}"))
        sizes["build_s"] = round(time.perf_counter() - t0, 1)
    finally:
        await engine.dispose()
    return sizes


async def table_sizes(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    out: dict[str, Any] = {}
    try:
        async with engine.connect() as conn:
            for table in QUERY_TABLES:
                got = await conn.execute(text(f"SELECT count(*) FROM {table}"))
                out[table] = int(got.scalar_one())
            got = await conn.execute(text("SELECT min(ts), max(ts) FROM trades"))
            lo, hi = got.one()
            out["days"] = round((int(hi) - int(lo)) / DAY, 2)
            out["trades_per_market_day"] = round(out["trades"] / 2 / max(out["days"], 1e-9))
    finally:
        await engine.dispose()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Call = Callable[[AsyncConnection, str, str, int], Awaitable[int]]


async def orders_page(conn: AsyncConnection, acct: str, _market: str, _day: int) -> int:
    where = queries.order_filters(acct, None, None, None, None)
    return len((await queries.page(conn, queries.ORDERS, where, None, 100)).rows)


async def fills_page(conn: AsyncConnection, acct: str, _market: str, _day: int) -> int:
    where = [schema.fills.c.account == acct]
    return len((await queries.page(conn, queries.FILLS, where, None, 100)).rows)


async def trades_page(conn: AsyncConnection, _acct: str, market: str, _day: int) -> int:
    where = [schema.trades.c.market == market]
    return len((await queries.page(conn, queries.TRADES, where, None, 100)).rows)


async def day_candles(conn: AsyncConnection, _acct: str, market: str, day: int) -> int:
    got = await queries.candles(conn, market, "1m", day, day + DAY - 1, 1440)
    return len(got.candles)


async def balances(conn: AsyncConnection, acct: str, _market: str, _day: int) -> int:
    return len(await queries.account_balances(conn, acct))


CALLS: dict[str, Call] = {  # what the routes run (`dex.persistence.service`), limit 100
    "account_orders": orders_page,
    "account_fills": fills_page,
    "market_trades": trades_page,
    "market_candles_1m_day": day_candles,
    "account_balances": balances,
}


async def time_queries(
    url: str, n_accounts: int, days: float, reps: int, candle_reps: int
) -> dict[str, Any]:
    """p50 / p99 of each query of `CALLS` on one connection (random accounts, markets and
    days; 20 warm-up calls untimed), and the scans of the plan of its last call."""
    engine = make_engine(url)
    rng = random.Random(SEED)
    out: dict[str, Any] = {}
    sent: list[tuple[str, Any]] = []

    def caught(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    try:
        async with engine.connect() as conn:
            for name, call in CALLS.items():
                n = candle_reps if name.startswith("market_candles") else reps
                times: list[float] = []
                rows = 0
                for i in range(n + 20):
                    a = account(1 + rng.randrange(n_accounts))
                    m = "ETH-USDC" if rng.random() < 0.5 else "BTC-USDC"
                    day = T0 - T0 % DAY + rng.randrange(max(1, int(days))) * DAY
                    if i == n + 19:
                        event.listen(engine.sync_engine, "before_cursor_execute", caught)
                    t0 = time.perf_counter()
                    got = await call(conn, a, m, day)
                    dt = (time.perf_counter() - t0) * 1000
                    if i >= 20:
                        times.append(dt)
                        rows += got
                event.remove(engine.sync_engine, "before_cursor_execute", caught)
                scans = await plan_scans(conn, sent)
                sent.clear()
                p99 = pct(times, 0.99)
                out[name] = {
                    "calls": n,
                    "p50_ms": round(statistics.median(times), 3),
                    "p99_ms": round(p99, 3),
                    "max_ms": round(max(times), 3),
                    "target_p99_ms": TARGET_P99_MS,
                    "meets_target": p99 < TARGET_P99_MS,
                    "rows_per_call": round(rows / n, 1),
                    "plan": scans,
                    "seq_scan": any("Seq Scan" in s for s in scans),
                }
                say(f"  {name}: {out[name]}")
    finally:
        await engine.dispose()
    return out


async def plan_scans(conn: AsyncConnection, sent: list[tuple[str, Any]]) -> list[str]:
    """The scan nodes of EXPLAIN for each statement a call sent, with its parameters."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    scans = []
    for statement, parameters in sent:
        for (line,) in await raw.fetch("EXPLAIN " + statement, *parameters):
            if "Scan" in line:
                scans.append(line.strip().lstrip("-> ").split("  (")[0])
    return scans


# ---------------------------------------------------------------------- main


async def admin(pg: str, sql: str) -> None:
    engine = create_async_engine(async_database_url(pg), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    pg_url = make_url(args.pg).set(database=args.db).render_as_string(hide_password=False)
    result: dict[str, Any] = {}
    if args.only != "queries":
        result |= await ingest_bench(args, pg_url)
    if args.fills and args.only != "ingest":
        result |= await query_bench(args)
    return result


async def ingest_bench(args: argparse.Namespace, pg_url: str) -> dict[str, Any]:
    """The same traffic drained into PostgreSQL, then into SQLite."""
    result: dict[str, Any] = {"orders": args.orders, "accounts": args.accounts}
    say(f"traffic: {args.orders} orders, {args.accounts} accounts ...")
    t0 = time.perf_counter()
    c = await traffic(args.accounts, args.orders, args.pump_every)
    entries, events = await count_events(c)
    say(f"  {entries} log entries, {events} events ({time.perf_counter() - t0:.1f} s)")
    result |= {"log_entries": entries, "events": events, "batch": args.batch}

    await admin(args.pg, f'DROP DATABASE IF EXISTS "{args.db}"')
    await admin(args.pg, f'CREATE DATABASE "{args.db}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stores = {"pg": pg_url, "sqlite": f"sqlite:///{tmp}/dex.sqlite3"}
            for name, url in stores.items():
                prof = cProfile.Profile() if args.profile and name == "pg" else None
                if prof:
                    prof.enable()
                seconds, batches, applied, log = await ingest(c, url, args.batch)
                if prof:
                    prof.disable()
                    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(
                        args.profile
                    )
                if applied != entries:
                    raise SystemExit(f"{name}: applied {applied} entries of {entries}")
                rate = events / seconds
                result[f"{name}_events_per_s"] = round(rate)
                result[f"{name}_seconds"] = round(seconds, 2)
                result[f"{name}_batches"] = batches
                result[f"{name}_warnings"] = log.counts
                if log.first:
                    say(f"  {name} warnings: {log.counts}; first: {log.first}")
                say(f"ingest {name}: {rate:,.0f} events/s ({seconds:.2f} s, {batches} batches)")
        result["target_pg_events_per_s"] = TARGET_EVENTS
        result["pg_meets_target"] = result["pg_events_per_s"] >= TARGET_EVENTS
    finally:
        await admin(args.pg, f'DROP DATABASE IF EXISTS "{args.db}"')
    return result


async def query_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse, `--keep`) the query database, then time the queries."""
    name = f"{args.db}_queries"
    url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    out: dict[str, Any] = {"accounts_big": args.accounts_big}
    reuse = args.keep and await built(url) == args.fills
    try:
        if reuse:
            say(f"reusing the {args.fills:,} fills of database {name} (--keep)")
        else:
            await admin(args.pg, f'DROP DATABASE IF EXISTS "{name}"')
            await admin(args.pg, f'CREATE DATABASE "{name}"')
            say(f"building {args.fills:,} fills on PostgreSQL over {args.days} days ...")
            out["build"] = await build(url, args.fills, args.accounts_big, args.days)
        out["tables"] = await table_sizes(url)
        say(f"  {out['tables']}")
        out["queries"] = await time_queries(
            url, args.accounts_big, out["tables"]["days"], args.reps, args.candle_reps
        )
    finally:
        if not args.keep:
            await admin(args.pg, f'DROP DATABASE IF EXISTS "{name}"')
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--db", default="dex_bench", help="database created and dropped")
    p.add_argument("--orders", type=int, default=20_000, help="orders of the ingest traffic")
    p.add_argument("--accounts", type=int, default=200, help="accounts of the ingest traffic")
    p.add_argument("--pump-every", type=int, default=10, help="orders sent between steps")
    p.add_argument("--profile", type=int, default=0, help="cProfile the PostgreSQL ingest: top N")
    p.add_argument("--batch", type=int, default=1000, help="entries per stream per read")
    p.add_argument("--fills", type=int, default=10_000_000, help="fills of the query tables")
    p.add_argument("--days", type=float, default=30, help="days the query tables' rows span")
    p.add_argument("--accounts-big", type=int, default=10_000, help="accounts of the tables")
    p.add_argument("--reps", type=int, default=1000, help="timed calls per query")
    p.add_argument("--only", choices=["ingest", "queries"], help="run one half of the bench")
    p.add_argument("--candle-reps", type=int, default=1000, help="timed calls of the candles")
    p.add_argument(
        "--keep", action="store_true", help="keep the query database, reuse it if it matches"
    )
    print(json.dumps(asyncio.run(main(p.parse_args())), indent=2))
