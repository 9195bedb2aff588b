"""The history store's migrations (Alembic) and `dex db upgrade` / `dex db current`, on SQLite
and on PostgreSQL (`DEX_DATABASE_URL`; each test on a database of its own, dropped after):
from an empty store, from the previous revision, a second upgrade changing nothing, the
migrated schema equal to `dex.persistence.schema`, and a store made by the code before
migrations (its `create_all`, frozen below as LEGACY) upgraded in place without loss; 0002's
and 0003's own steps from a store with rows (0003: nothing lost, `created_ts` backfilled, down
and up again); 0004's and 0005's (the trades stored before it give the 1-minute candles market
data's builder gives)."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    MetaData,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from dex.cli import main
from dex.marketdata import candles as cb
from dex.persistence import migrations, schema
from dex.persistence.store import async_database_url, run_sync
from dex.persistence.verify import verify
from dex.risk.events import DepositCredited
from dex.wire import layout
from tests.bus.contract import aio
from tests.services.inproc import Cluster, place
from tests.services.reader_kit import A, B, caught_up, rich_trading, until
from tests.services.test_persistence import check_against_shards, service, store_rows

T = TypeVar("T")

# ---------------------------------------------------------------------------- the old schema

# What `PersistenceService.prepare` created with `metadata.create_all` before migrations
# existed (commit 4aa4c55), copied here and never changed: the store a data folder of that
# code holds.
LEGACY = MetaData()
Table(
    "positions",
    LEGACY,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, nullable=False),
)
Table(
    "markets",
    LEGACY,
    Column("market", Text, primary_key=True),
    Column("base", Text, nullable=False),
    Column("quote", Text, nullable=False),
)
Table(
    "balances",
    LEGACY,
    Column("account", Text, primary_key=True),
    Column("asset", Text, primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("locked", BigInteger, nullable=False),
)
Table(
    "trades",
    LEGACY,
    Column("market", Text, primary_key=True),
    Column("trade_id", BigInteger, primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("maker_order_id", BigInteger, nullable=False),
    Column("taker_order_id", BigInteger, nullable=False),
    Column("taker_side", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
)
Table(
    "orders",
    LEGACY,
    Column("order_id", BigInteger, primary_key=True),
    Column("account", Text, nullable=False),
    Column("market", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("type", Text),
    Column("price", BigInteger),
    Column("size", BigInteger),
    Column("client_order_id", Text),
    Column("status", Text, nullable=False),
    Column("filled", BigInteger, nullable=False),
    Column("reason", Text),
    Column("updated_ts", BigInteger, nullable=False),
    Index("orders_by_account", "account", "order_id"),
)
Table(
    "events",
    LEGACY,
    Column("stream", Text, primary_key=True),
    Column("log_seq", BigInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("body", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
)

BIG = 2**62 + 12_345  # amounts are integers; a large one must come back exact
LEGACY_ROWS: dict[str, list[dict[str, Any]]] = {
    "positions": [
        {"stream": layout.risk_log(0), "log_seq": 41},
        {"stream": layout.me_log(0), "log_seq": 17},
    ],
    "markets": [{"market": "ETH-USDC", "base": "ETH", "quote": "USDC"}],
    "balances": [
        {"account": A, "asset": "USDC", "available": BIG, "locked": 7},
        {"account": "fee:0", "asset": "ETH", "available": 3, "locked": 0},
    ],
    "trades": [
        {
            "market": "ETH-USDC",
            "trade_id": 1,
            "price": 200_000,
            "size": 5,
            "maker_order_id": 10,
            "taker_order_id": 11,
            "taker_side": "buy",
            "ts": 1_700_000_000_000_000_000,
        }
    ],
    "orders": [
        {
            "order_id": 10,
            "account": A,
            "market": "ETH-USDC",
            "side": "sell",
            "type": "limit",
            "price": 200_000,
            "size": 5,
            "client_order_id": "c-1",
            "status": "filled",
            "filled": 5,
            "reason": None,
            "updated_ts": 1_700_000_000_000_000_000,
        },
        {
            "order_id": 12,
            "account": B,
            "market": "ETH-USDC",
            "side": "buy",
            "type": None,
            "price": None,
            "size": None,
            "client_order_id": None,
            "status": "rejected",
            "filled": 0,
            "reason": "post_only_would_take",
            "updated_ts": 1_700_000_000_000_000_001,
        },
    ],
    "events": [
        {
            "stream": layout.me_log(0),
            "log_seq": 17,
            "idx": 0,
            "kind": "trade",
            "body": {"event": "trade", "trade_id": 1, "price": 200_000, "nested": [1, "x"]},
        }
    ],
}

# ---------------------------------------------------------------------------- stores


async def _admin(url: str, sql: str) -> None:
    engine = create_async_engine(async_database_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def fresh_postgres() -> Iterator[str]:
    """The URL of a new database on the server of DEX_DATABASE_URL, dropped after."""
    url = os.environ.get("DEX_DATABASE_URL")
    if not url:
        pytest.skip("DEX_DATABASE_URL is not set: no PostgreSQL server to test against")
    name = f"dex_mig_{secrets.token_hex(6)}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """The URL of an empty store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'dex.sqlite3'}"
    else:
        yield from fresh_postgres()


@pytest.fixture
def postgres_store() -> Iterator[str]:
    yield from fresh_postgres()


def on(url: str, work: Callable[[Connection], T]) -> T:
    """`work(connection)` in one committed transaction on the store."""
    return asyncio.run(run_sync(url, work))


def diff(md: MetaData) -> Callable[[Connection], list[Any]]:
    """What autogenerate would change to make the store look like `md` (types compared)."""

    def work(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, md))

    return work


def shape(conn: Connection) -> dict[str, Any]:
    """The store's tables as reflected: columns (name, type, nullable), primary key, indexes."""
    insp = inspect(conn)
    out: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        out[name] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)],
            insp.get_pk_constraint(name)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(name)),
        )
    return out


def contents(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the first revision's tables (their columns of then), in primary-key
    order."""
    out = {}
    for name in sorted(migrations.BASELINE_TABLES):
        table = LEGACY.tables[name]
        got = conn.execute(select(table).order_by(*table.primary_key.columns))
        out[name] = [dict(r) for r in got.mappings()]
    return out


def legacy_store(rows: bool) -> Callable[[Connection], None]:
    """The work that makes what the code before migrations made: its create_all (and the
    position rows it added), then `LEGACY_ROWS` if `rows`."""

    def work(conn: Connection) -> None:
        LEGACY.create_all(conn)
        if rows:
            for name, values in LEGACY_ROWS.items():
                conn.execute(LEGACY.tables[name].insert(), values)

    return work


def dex_db(url: str, *args: str, data_dir: str | None = None) -> Result:
    """`dex db ...` with the store at `url` (DEX_DATABASE_URL), or with DEX_DATABASE_URL unset
    and the data folder `data_dir` (DEX_DATA_DIR): the embedded mode's SQLite file."""
    env = {"DEX_DATABASE_URL": None, "DEX_DATA_DIR": data_dir} if data_dir else {}
    if not data_dir:
        env["DEX_DATABASE_URL"] = url
    return CliRunner().invoke(main, ["db", *args], env=env)


def said(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result.output.strip()


def head() -> str:
    return migrations.head()


# ---------------------------------------------------------------------------- the tests


def test_the_scripts_ship_in_the_package() -> None:
    """Alembic finds its scripts next to the package's code (no alembic.ini): one line of
    revisions from the baseline to one head, each a file of the versions package."""
    files = importlib.resources.files("dex.persistence.migrations")
    assert files.joinpath("env.py").is_file()
    assert files.joinpath("script.py.mako").is_file()
    assert files.joinpath("versions", "__init__.py").is_file()
    scripts = ScriptDirectory.from_config(migrations.config())
    chain = list(scripts.walk_revisions())  # newest first
    assert [s.revision for s in chain][-1] == migrations.BASELINE
    assert chain[-1].down_revision is None
    assert scripts.get_heads() == [head()]
    for s in chain:
        assert s.path is not None and files.joinpath("versions", os.path.basename(s.path)).is_file()


def test_upgrade_from_empty_gives_the_schema_of_the_code(store: str) -> None:
    assert on(store, migrations.current) is None
    assert on(store, migrations.upgrade) == head()
    assert on(store, migrations.current) == head()
    assert on(store, diff(schema.metadata)) == []
    tables = set(on(store, lambda conn: inspect(conn).get_table_names()))
    assert tables == set(schema.metadata.tables) | {migrations.VERSION_TABLE}


def test_the_first_revision_is_the_schema_of_the_code_before_migrations(store: str) -> None:
    """Revision 0001 is exactly what create_all made: a store stamped at it is right."""
    on(store, lambda conn: migrations.upgrade(conn, migrations.BASELINE))
    assert on(store, diff(LEGACY)) == []
    made = on(store, shape)
    made.pop(migrations.VERSION_TABLE)
    other = store + "-legacy" if store.startswith("sqlite") else None
    if other is not None:  # the same comparison the other way: create_all's store, reflected
        on(other, legacy_store(rows=False))
        assert on(other, shape) == made


def test_from_the_previous_revision_down_to_base_and_up_again(store: str) -> None:
    on(store, migrations.upgrade)
    scripts = ScriptDirectory.from_config(migrations.config())
    previous = scripts.get_revision(head()).down_revision
    target = previous if isinstance(previous, str) else "base"
    assert on(store, lambda conn: migrations.downgrade(conn, target)) == (
        None if target == "base" else target
    )
    if target == "base":
        left = set(on(store, lambda conn: inspect(conn).get_table_names()))
        assert left <= {migrations.VERSION_TABLE}
    assert said(dex_db(store, "upgrade")) == f"upgraded: {previous or 'none'} -> {head()} (head)"
    assert on(store, migrations.current) == head()
    assert on(store, diff(schema.metadata)) == []


def test_an_up_to_date_store_is_left_unchanged(store: str) -> None:
    on(store, migrations.upgrade)
    on(store, lambda conn: conn.execute(schema.positions.insert(), LEGACY_ROWS["positions"]))
    before = (on(store, shape), on(store, contents))
    assert said(dex_db(store, "upgrade")) == f"up to date: {head()} (head)"
    assert on(store, migrations.upgrade) == head()
    assert (on(store, shape), on(store, contents)) == before
    assert on(store, migrations.current) == head()


def test_dex_db_current(store: str, tmp_path: Any) -> None:
    if store.startswith("sqlite"):
        data = str(tmp_path / "folder")
        assert said(dex_db(store, "current", data_dir=data)) == (
            f"none (no store at {tmp_path / 'folder' / 'dex.sqlite3'}: dex db upgrade creates it)"
        )
        assert said(dex_db(store, "upgrade", data_dir=data)) == f"upgraded: none -> {head()} (head)"
        assert said(dex_db(store, "current", data_dir=data)) == f"{head()} (head)"
        on(store, lambda conn: None)  # an empty SQLite file
    assert said(dex_db(store, "current")) == f"none (empty: dex db upgrade brings it to {head()})"
    said(dex_db(store, "upgrade"))
    assert said(dex_db(store, "current")) == f"{head()} (head)"


def test_dex_db_upgrade_stamps_a_store_of_the_code_before_migrations(store: str) -> None:
    """A store made by create_all, with rows in every table and no alembic_version: stamped at
    the first revision and upgraded, every row as it was."""
    on(store, legacy_store(rows=True))
    assert said(dex_db(store, "current")) == (
        f"none (made before migrations: dex db upgrade brings it to {head()})"
    )
    assert said(dex_db(store, "upgrade")) == f"upgraded: none -> {head()} (head)"
    assert said(dex_db(store, "current")) == f"{head()} (head)"
    got = on(store, contents)
    for name, rows in LEGACY_ROWS.items():
        key = [c.name for c in LEGACY.tables[name].primary_key.columns]
        assert got[name] == sorted(rows, key=lambda r: [r[k] for k in key])
    assert on(store, diff(schema.metadata)) == []


def test_a_store_with_only_some_old_tables_is_refused_and_left_alone(store: str) -> None:
    on(store, lambda conn: LEGACY.tables["positions"].create(conn))
    got = dex_db(store, "upgrade")
    assert got.exit_code == 1
    assert "UnknownSchema" in got.output
    assert set(on(store, lambda conn: inspect(conn).get_table_names())) == {"positions"}
    with pytest.raises(migrations.UnknownSchema):
        on(store, migrations.upgrade)


def test_replicas_starting_together_migrate_once(postgres_store: str) -> None:
    """Several persistence replicas start at once on PostgreSQL: the advisory lock lets one
    migrate while the others wait, then find it done. (The embedded mode, on SQLite, runs one
    persistence.)"""
    store = postgres_store

    async def together() -> list[str | None]:
        four = asyncio.gather(*(run_sync(store, migrations.upgrade) for _ in range(4)))
        return list(await asyncio.wait_for(four, 60))  # without the lock they can hang

    assert asyncio.run(together()) == [head()] * 4
    assert on(store, diff(schema.metadata)) == []


@aio
async def test_the_service_upgrades_a_data_folder_of_the_code_before_in_place(
    store: str,
) -> None:
    """A store filled by real trading, turned into what the code before migrations left (the
    same tables, shown equal to create_all's, and no alembic_version); more trading while it
    is down; the new service stamps and upgrades it at start, loses nothing and applies
    nothing twice."""
    c = Cluster(matching_shards=3)
    await c.start()
    db = (store, None)
    svc = service(c, db)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    events_before = {
        (r["stream"], r["log_seq"], r["idx"]) for r in await store_rows(svc, schema.events)
    }
    await svc.stop()
    await run_sync(store, lambda conn: migrations.downgrade(conn, migrations.BASELINE))
    await run_sync(store, lambda conn: conn.execute(text(f"DROP TABLE {migrations.VERSION_TABLE}")))
    assert await run_sync(store, diff(LEGACY)) == []
    assert await run_sync(store, migrations.unversioned)
    await c.send(A, place(A, "sell", 200_300, 400))
    await c.send(B, place(B, "buy", 200_300, 400))
    await c.pump()
    again = service(c, db)
    await again.start()
    try:
        await until(again, lambda: caught_up(again), "the upgraded store to catch up")
        assert again.health.ready
        await check_against_shards(again, c)
        events_after = {
            (r["stream"], r["log_seq"], r["idx"]) for r in await store_rows(again, schema.events)
        }
        assert events_before < events_after
        assert await run_sync(store, migrations.current) == head()
        # the history before the upgrade got its ledger entries, fills and deposits too
        assert await run_sync(store, verify) == []
        fill_rows = await store_rows(again, schema.fills)
        assert len(fill_rows) == 2 * len(await store_rows(again, schema.trades))
        credited = []
        for r in range(c.r_count):
            credited += [e for e in await c.log_events(layout.risk_log(r)) if is_deposit(e)]
        deposit_rows = await store_rows(again, schema.deposits)
        assert sorted((d["tx_id"], d["amount"]) for d in deposit_rows) == sorted(
            (e.tx_id, e.amount) for e in credited
        )
    finally:
        await again.stop()


NEW_IN_0002 = {"fills", "ledger_entries", "deposits", "withdrawals"}


def test_0002_adds_the_ledger_tables_and_its_downgrade_takes_them_away(store: str) -> None:
    """0001 with rows -> 0002: the four tables appear empty with their keys and indexes, the
    rows of 0001 untouched; 0002 -> 0001: exactly the first revision's store again."""
    on(store, lambda conn: migrations.upgrade(conn, migrations.BASELINE))
    for name, rows in LEGACY_ROWS.items():
        on(
            store,
            lambda conn, name=name, rows=rows: conn.execute(LEGACY.tables[name].insert(), rows),
        )
    before = on(store, contents)
    legacy_shape = on(store, shape)
    assert on(store, lambda conn: migrations.upgrade(conn, "0002")) == "0002"
    made = on(store, shape)
    assert set(made) == set(legacy_shape) | NEW_IN_0002
    assert made["ledger_entries"][1] == ["stream", "log_seq", "idx", "line"]
    assert made["fills"][1] == ["trade_id", "market", "liquidity"]
    assert made["deposits"][1] == ["tx_id", "log_index"]
    assert made["withdrawals"][1] == ["withdrawal_id"]
    assert on(store, contents) == before
    for name in NEW_IN_0002:
        table = schema.metadata.tables[name]
        assert on(store, lambda conn, t=table: conn.execute(select(t)).all()) == []
    # an entry as large as money gets comes back exact
    entry = {
        "stream": layout.risk_log(0),
        "log_seq": 1,
        "idx": 0,
        "line": 0,
        "account": A,
        "asset": "USDC",
        "bucket": "available",
        "delta": -BIG,
        "cause": "deposit",
        "ts": 1,
    }
    on(store, lambda conn: conn.execute(schema.ledger_entries.insert(), [entry]))
    got = on(
        store,
        lambda conn: [dict(r) for r in conn.execute(select(schema.ledger_entries)).mappings()],
    )
    assert got == [entry]
    assert on(store, lambda conn: migrations.downgrade(conn, migrations.BASELINE)) == "0001"
    assert on(store, shape) == legacy_shape
    assert on(store, contents) == before
    assert on(store, diff(LEGACY)) == []


def is_deposit(ev: Any) -> bool:
    return isinstance(ev, DepositCredited)


ROWS_0002: dict[str, list[dict[str, Any]]] = {
    "fills": [
        {
            "trade_id": 1,
            "market": "ETH-USDC",
            "liquidity": "maker",
            "order_id": 10,
            "account": A,
            "side": "sell",
            "price": 200_000,
            "size": 5,
            "fee": -BIG,
            "fee_asset": "USDC",
            "ts": 1_700_000_000_000_000_000,
            "stream": layout.risk_log(0),
            "log_seq": 40,
        }
    ],
    "ledger_entries": [
        {
            "stream": layout.risk_log(0),
            "log_seq": 41,
            "idx": 0,
            "line": 0,
            "account": A,
            "asset": "USDC",
            "bucket": "available",
            "delta": BIG,
            "cause": "deposit",
            "ts": 1_700_000_000_000_000_002,
        }
    ],
    "deposits": [
        {
            "tx_id": "0xabc",
            "log_index": 3,
            "account": A,
            "asset": "USDC",
            "amount": BIG,
            "ts": 1_700_000_000_000_000_002,
            "stream": layout.risk_log(0),
            "log_seq": 41,
        }
    ],
    "withdrawals": [
        {
            "withdrawal_id": 9,
            "account": B,
            "asset": "ETH",
            "amount": 3,
            "status": "requested",
            "tx_id": None,
            "reason": None,
            "requested_ts": 1_700_000_000_000_000_003,
            "updated_ts": 1_700_000_000_000_000_004,
            "stream": layout.risk_log(0),
            "log_seq": 42,
        }
    ],
}
NEW_ORDER_COLUMNS = ("tif", "trigger_price", "quote_size", "created_ts")


def store_0002_with_rows(store: str) -> None:
    """A store at 0002 holding `LEGACY_ROWS` and `ROWS_0002`."""
    assert on(store, lambda conn: migrations.upgrade(conn, "0002")) == "0002"

    def fill(conn: Connection) -> None:
        for name, rows in LEGACY_ROWS.items():
            conn.execute(LEGACY.tables[name].insert(), rows)
        for name, rows in ROWS_0002.items():
            conn.execute(schema.metadata.tables[name].insert(), rows)

    on(store, fill)


def rows_0002(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables 0002 added, in primary-key order."""
    out = {}
    for name in sorted(NEW_IN_0002):
        table = schema.metadata.tables[name]
        key = list(table.primary_key.columns) or list(table.columns)  # ledger: none since 0004
        got = conn.execute(select(table).order_by(*key))
        out[name] = [dict(r) for r in got.mappings()]
    return out


def new_order_columns(conn: Connection) -> dict[int, tuple[Any, ...]]:
    """order_id -> (updated_ts, tif, trigger_price, quote_size, created_ts)."""
    o = schema.orders
    got = conn.execute(select(o.c.order_id, o.c.updated_ts, *(o.c[n] for n in NEW_ORDER_COLUMNS)))
    return {row[0]: tuple(row[1:]) for row in got}


def test_0003_keeps_every_row_and_backfills_created_ts(store: str) -> None:
    """0002 with rows -> 0003: every row as it was; the orders' new columns NULL and
    `created_ts` their `updated_ts`; the keyset indexes there, the ones they replace gone."""
    store_0002_with_rows(store)
    before = (on(store, contents), on(store, rows_0002))
    shape_0002 = on(store, shape)
    assert on(store, lambda conn: migrations.upgrade(conn, "0003")) == "0003"
    assert (on(store, contents), on(store, rows_0002)) == before
    assert on(store, new_order_columns) == {
        o["order_id"]: (o["updated_ts"], None, None, None, o["updated_ts"])
        for o in LEGACY_ROWS["orders"]
    }
    made = on(store, shape)
    assert set(made) == set(shape_0002)
    indexes = {name for table in made.values() for name, _ in table[2]}
    assert {
        "orders_by_account_created",
        "orders_by_client_id",
        "fills_by_account_ts",
        "ledger_by_account_asset_ts",
        "trades_by_market_ts",
        "events_catalog",
    } <= indexes
    assert not indexes & {"orders_by_account", "fills_by_account", "ledger_entries_by_account"}
    if on(store, migrations.current) == head():
        assert on(store, diff(schema.metadata)) == []


def test_0003_down_to_0002_and_up_again(store: str) -> None:
    """0003 -> 0002 gives exactly the 0002 store back (its columns, indexes and rows); 0003
    again backfills `created_ts` once more, an order added at 0002 included."""
    store_0002_with_rows(store)
    before = (on(store, contents), on(store, rows_0002))
    shape_0002 = on(store, shape)
    on(store, lambda conn: migrations.upgrade(conn, "0003"))
    assert on(store, lambda conn: migrations.downgrade(conn, "0002")) == "0002"
    assert on(store, shape) == shape_0002
    assert (on(store, contents), on(store, rows_0002)) == before
    late = {**LEGACY_ROWS["orders"][0], "order_id": 13, "updated_ts": 1_700_000_000_000_000_009}
    on(store, lambda conn: conn.execute(LEGACY.tables["orders"].insert(), [late]))
    assert on(store, lambda conn: migrations.upgrade(conn, "0003")) == "0003"
    got = on(store, new_order_columns)
    assert {oid: row[-1] for oid, row in got.items()} == {
        10: 1_700_000_000_000_000_000,
        12: 1_700_000_000_000_000_001,
        13: 1_700_000_000_000_000_009,
    }
    assert on(store, rows_0002) == before[1]
    if on(store, migrations.current) == head():
        assert on(store, diff(schema.metadata)) == []


EVENTS_0003 = [  # entries of several events, catalog kinds among them, out of key order
    {
        "stream": layout.risk_log(1),
        "log_seq": 5,
        "idx": idx,
        "kind": kind,
        "body": {"event": kind, "n": idx, "text": "é ü \u2603", "deep": {"a": [idx, None]}},
    }
    for idx, kind in ((2, "trade_settled"), (0, "asset_added"), (1, "market_added"))
] + [
    {
        "stream": layout.me_log(1),
        "log_seq": seq,
        "idx": 0,
        "kind": "accepted",
        "body": {"event": "accepted", "big": BIG},
    }
    for seq in (3, 1, 2)
]


def events_rows(conn: Connection) -> list[dict[str, Any]]:
    table = LEGACY.tables["events"]
    got = conn.execute(select(table).order_by(*table.primary_key.columns))
    return [dict(r) for r in got.mappings()]


def store_0003_with_events(store: str) -> None:
    store_0002_with_rows(store)
    assert on(store, lambda conn: migrations.upgrade(conn, "0003")) == "0003"
    on(store, lambda conn: conn.execute(LEGACY.tables["events"].insert(), EVENTS_0003))


def test_0004_stores_one_row_per_entry_and_the_events_view_reads_as_before(store: str) -> None:
    """0003 with rows -> 0004: `log_entries` holds one row per entry (its events' bodies in
    `idx` order), `catalog` the asset_added / market_added events, and the `events` view
    gives back exactly the rows the table held; every other row as it was; the ledger's
    asset index gone."""
    store_0003_with_events(store)
    before = (on(store, contents), on(store, rows_0002), on(store, events_rows))
    assert len(before[2]) == len(EVENTS_0003) + len(LEGACY_ROWS["events"])
    assert on(store, lambda conn: migrations.upgrade(conn, "0004")) == "0004"
    assert (on(store, contents), on(store, rows_0002), on(store, events_rows)) == before

    def entries(conn: Connection) -> dict[tuple[str, int], list[Any]]:
        got = conn.execute(select(schema.log_entries))
        return {(r.stream, r.log_seq): r.body for r in got}

    want: dict[tuple[str, int], list[Any]] = {}
    for row in before[2]:
        want.setdefault((row["stream"], row["log_seq"]), []).append(row["body"])
    assert on(store, entries) == want
    catalog = on(store, lambda conn: conn.execute(select(schema.catalog)).all())
    assert sorted((r.idx, r.body["event"]) for r in catalog) == [
        (0, "asset_added"),
        (1, "market_added"),
    ]
    made = on(store, shape)
    assert "events" not in made  # a view now
    assert {"log_entries", "catalog"} <= set(made)
    indexes = {name for table in made.values() for name, _ in table[2]}
    assert "ledger_by_account_ts" in indexes
    assert not indexes & {"ledger_by_account_asset_ts", "events_catalog"}
    if on(store, migrations.current) == head():
        assert on(store, diff(schema.metadata)) == []


def test_0004_down_to_0003_and_up_again(store: str) -> None:
    """0004 -> 0003 gives exactly the 0003 store back (its `events` table, indexes and rows);
    0004 again gives the same view."""
    store_0003_with_events(store)
    before = (on(store, contents), on(store, rows_0002), on(store, events_rows))
    shape_0003 = on(store, shape)
    on(store, lambda conn: migrations.upgrade(conn, "0004"))
    assert on(store, lambda conn: migrations.downgrade(conn, "0003")) == "0003"
    assert on(store, shape) == shape_0003
    assert (on(store, contents), on(store, rows_0002), on(store, events_rows)) == before
    assert on(store, lambda conn: migrations.upgrade(conn, "0004")) == "0004"
    assert on(store, events_rows) == before[2]


MINUTE_NS = 60_000_000_000
DAY_NS = 1_440 * MINUTE_NS
T_0004 = 1_700_006_400 * 10**9  # a UTC midnight


def trades_0004() -> list[dict[str, Any]]:
    """Trades of two markets over a UTC midnight: several per minute, empty minutes, two at
    the same ns (their ids order them), stored out of trade order, a price near 2**60 (its
    quote volume near 2**61: exact)."""
    spots = [
        (0, 5), (0, 5), (0, 59_999_999_999), (1, 0), (3, 7), (3, 7), (3, 8), (1_439, 1),
        (1_440, 0), (1_441, 30), (1_441, 31), (2_000, 2),
    ]  # fmt: skip
    out = []
    for m, market in enumerate(("ETH-USDC", "BTC-USDC")):
        for i, (minute, ns) in enumerate(spots):
            big = (m, i) == (1, 4)
            price = 2**60 + 12_345 if big else 200_000 + (i * 37 + m * 11) % 50
            out.append(
                {
                    "market": market,
                    "trade_id": 1_000 + i,  # ids follow the times, as a shard stamps them
                    "price": price,
                    "size": 2 if big else 1 + (i * 13) % 7,
                    "maker_order_id": 1,
                    "taker_order_id": 2,
                    "taker_side": "buy",
                    "ts": T_0004 - DAY_NS // 2 + minute * MINUTE_NS + ns,
                }
            )
    return out[::-1]


def store_0004_with_trades(store: str) -> list[dict[str, Any]]:
    """A store at 0004 holding `trades_0004` (and 0002's rows); every trade it holds."""
    store_0003_with_events(store)
    assert on(store, lambda conn: migrations.upgrade(conn, "0004")) == "0004"
    on(store, lambda conn: conn.execute(schema.trades.insert(), trades_0004()))
    return on(store, lambda conn: [dict(r) for r in conn.execute(select(schema.trades)).mappings()])


def built_minutes(trades: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """(market, 1-minute row) of market data's builder over `trades` in trade order."""
    out = set()
    for market in {t["market"] for t in trades}:
        mine = sorted(
            (t for t in trades if t["market"] == market), key=lambda t: (t["ts"], t["trade_id"])
        )
        built = cb.build((t["price"], t["size"], t["ts"]) for t in mine)
        out |= {(market, c.open_time, *c.row()[1:]) for c in built.series["1m"]}
    return out


def stored_minutes(conn: Connection) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in conn.execute(select(schema.candles_1m))}


def test_0005_makes_the_candles_of_the_trades_stored_before_it(store: str) -> None:
    """0004 with trades -> 0005: `candles_1m` holds exactly the 1-minute candles market data's
    builder makes of those trades (open and close by trade order, big integers exact), and
    every other row is as it was; verify agrees."""
    rows = store_0004_with_trades(store)
    before = (on(store, contents), on(store, rows_0002))
    assert on(store, lambda conn: migrations.upgrade(conn, "0005")) == "0005"
    want = built_minutes(rows)
    assert len(want) >= 2 * 7
    assert on(store, stored_minutes) == want
    assert (on(store, contents), on(store, rows_0002)) == before
    if on(store, migrations.current) == head():
        assert on(store, diff(schema.metadata)) == []
        assert not [d for d in on(store, verify) if d.check == "candle"]


def test_0005_down_to_0004_and_up_again(store: str) -> None:
    """0005 -> 0004 gives exactly the 0004 store back (no candles table, every row kept);
    0005 again makes the same candles."""
    store_0004_with_trades(store)
    shape_0004 = on(store, shape)
    before = (on(store, contents), on(store, rows_0002))
    on(store, lambda conn: migrations.upgrade(conn, "0005"))
    made = on(store, stored_minutes)
    assert on(store, lambda conn: migrations.downgrade(conn, "0004")) == "0004"
    assert on(store, shape) == shape_0004
    assert (on(store, contents), on(store, rows_0002)) == before
    assert on(store, lambda conn: migrations.upgrade(conn, "0005")) == "0005"
    assert on(store, stored_minutes) == made
