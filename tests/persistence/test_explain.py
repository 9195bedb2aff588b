"""Every query the read API runs is an index scan on PostgreSQL, at volume.

The seven listed tables get ~200,000 rows each (`INSERT ... SELECT generate_series`), spread over
300 accounts and the demo markets, and are ANALYZEd. Then the routes are called over HTTP
(first pages, cursor pages, every filter, the lookups) and every statement they send is caught
as the driver gets it (`before_cursor_execute`): the queries of `dex.persistence.queries` with
the parameters the routes gave them, nothing rebuilt by hand. Each is EXPLAINed twice, with
its parameters (the plan of a first run) and as a generic plan (what asyncpg's prepared
statements get after a few runs), and no plan node may be a `Seq Scan` on one of the tables
(nor a sort: a page is read in the index's order). Every plan today is `Limit` over one
`Index Scan` of the 0003 index for its list (or the primary key for an order by id). The
candles (1m of a day, 1h last, 1d from a start) read one range of `candles_1m`'s primary key
(0005): its probes are `Limit` over an `Index Scan`; its read of the window's minutes (at most
`limit` intervals, no LIMIT) may be a `Bitmap Index Scan` of the key and a sort of those
rows (the heap holds the markets' minutes interleaved, so the planner finds the bitmap
cheaper): allowed there, a sequential scan is not.

PostgreSQL only (`DEX_DATABASE_URL`); a schema of its own, dropped after.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from dex.wire import layout
from tests.persistence.test_queries import api, ok
from tests.services.reader_kit import BTC_USDC, ETH_USDC
from tests.services.test_persistence import Database, _pg

ROWS = 200_000
HANG_GUARD = 600.0  # seconds: only a hang fails on it
ACCOUNTS = 300
MARKETS = (ETH_USDC, BTC_USDC)
TABLES = {"orders", "fills", "ledger_entries", "trades", "deposits", "withdrawals", "candles_1m"}
T0 = 1_800_000_000_000_000_000  # ns
MS = 1_000_000
ACCT = f"'0x' || lpad(to_hex(g % {ACCOUNTS}), 40, '0')"
# the other columns vary within an account's rows (g / ACCOUNTS), not with it
MARKET = f"(ARRAY['{MARKETS[0]}', '{MARKETS[1]}'])[g / 7 % 2 + 1]"
ASSET = f"(ARRAY['ETH', 'BTC', 'USDC'])[g / {ACCOUNTS} % 3 + 1]"
TS = f"{T0} + g::bigint * {MS}"
MINUTE = 60_000 * MS
DAY_MS = 86_400_000

FILL = [
    f"""INSERT INTO orders (order_id, account, market, side, type, price, size,
        client_order_id, status, filled, reason, updated_ts, tif, trigger_price, quote_size,
        created_ts)
    SELECT g, {ACCT}, {MARKET}, CASE WHEN g % 2 = 0 THEN 'buy' ELSE 'sell' END, 'limit',
        200000 + g % 100, 10, 'c' || g,
        (ARRAY['open', 'filled', 'cancelled', 'filled', 'expired', 'rejected',
               'cancelled', 'filled', 'pending', 'filled'])[g / 300 % 10 + 1],
        0, NULL, {TS} + 5, 'GTC', NULL, NULL, {TS}
    FROM generate_series(1, {ROWS}) AS g""",
    f"""INSERT INTO fills (trade_id, market, liquidity, order_id, account, side, price, size,
        fee, fee_asset, ts, stream, log_seq)
    SELECT g / 2, {MARKET},
        CASE WHEN g % 2 = 0 THEN 'maker' ELSE 'taker' END, g, {ACCT}, 'buy', 200000, 10, 1,
        'USDC', {TS}, 's', g
    FROM generate_series(0, {ROWS - 1}) AS g""",
    f"""INSERT INTO ledger_entries (stream, log_seq, idx, line, account, asset, bucket, delta,
        cause, ts)
    SELECT 'dex:{{risk:' || g % 4 || '}}:log', g, 0, 0, {ACCT},
        {ASSET}, 'available', -5, 'trade', {TS}
    FROM generate_series(1, {ROWS}) AS g""",
    f"""INSERT INTO trades (market, trade_id, price, size, maker_order_id, taker_order_id,
        taker_side, ts)
    SELECT {MARKET}, g, 200000, 10, g, g + 1, 'buy', {TS}
    FROM generate_series(1, {ROWS}) AS g""",
    f"""INSERT INTO candles_1m (market, open_time, open, high, low, close, base_volume,
        quote_volume, trade_count)
    SELECT (ARRAY['{MARKETS[0]}', '{MARKETS[1]}'])[g % 2 + 1], {T0} + (g / 2)::bigint * {MINUTE},
        200000, 200000 + g % 9, 200000 - g % 7, 200001, 10 + g % 5, 2000000, 1 + g % 3
    FROM generate_series(0, {ROWS - 1}) AS g""",
    f"""INSERT INTO deposits (tx_id, log_index, account, asset, amount, ts, stream, log_seq)
    SELECT '0x' || md5(g::text), 0, {ACCT}, {ASSET}, 5,
        {TS}, 's', g
    FROM generate_series(1, {ROWS}) AS g""",
    f"""INSERT INTO withdrawals (withdrawal_id, account, asset, amount, status, tx_id, reason,
        requested_ts, updated_ts, stream, log_seq)
    SELECT g, {ACCT}, {ASSET}, 5, 'completed', NULL, NULL,
        {TS}, {TS}, 's', g
    FROM generate_series(1, {ROWS}) AS g""",
]


@pytest.fixture
def postgres() -> Iterator[Database]:
    url = os.environ.get("DEX_DATABASE_URL")
    if not url:
        pytest.skip("DEX_DATABASE_URL is not set: no PostgreSQL server to EXPLAIN on")
    schema = f"dex_explain_{secrets.token_hex(6)}"
    asyncio.run(_pg(url, f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, schema
    finally:
        asyncio.run(_pg(url, f'DROP SCHEMA "{schema}" CASCADE'))


def seq_scans(plan: dict[str, Any], *, sort_ok: bool = False) -> list[str]:
    """The tables of `TABLES` a plan tree reads by a sequential scan, and its sorts (a keyset
    page is read in index order: a sort means the index does not serve the ORDER BY) unless
    `sort_ok` (a candle window's minutes)."""
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in TABLES:
        found.append(plan["Relation Name"])
    if plan.get("Node Type") in ("Sort", "Incremental Sort") and not sort_ok:
        found.append(plan["Node Type"])
    for child in plan.get("Plans", []):
        found += seq_scans(child, sort_ok=sort_ok)
    return found


def index_names(plan: dict[str, Any]) -> set[str]:
    """The indexes a plan tree reads."""
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= index_names(child)
    return found


def literal(value: Any) -> str:
    """A parameter the routes sent, as SQL text (they send only integers and plain text)."""
    if isinstance(value, int):
        return str(value)
    assert isinstance(value, str), value
    return "'" + value.replace("'", "''") + "'"


def account(n: int) -> str:
    return "0x" + format(n % ACCOUNTS, "x").rjust(40, "0")


def test_every_route_query_is_an_index_scan_at_volume(postgres: Database) -> None:
    # filling 1.2 million rows outlasts `aio`'s guard on a busy machine: a guard of its own
    asyncio.run(asyncio.wait_for(every_route_query_is_an_index_scan(postgres), HANG_GUARD))


async def every_route_query_is_an_index_scan(postgres: Database) -> None:
    async with api(postgres, trade=False, max_limit=500) as (_, svc, client):
        assert svc.engine is not None
        async with svc.engine.begin() as conn:
            for sql in FILL:
                await conn.exec_driver_sql(sql)
        async with svc.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
            counts = {
                t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
                for t in TABLES
            }
        assert all(n >= ROWS for n in counts.values()), counts

        sent: list[tuple[str, Any]] = []

        def caught(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
            sent.append((statement, parameters))

        event.listen(svc.engine.sync_engine, "before_cursor_execute", caught)
        acct = account(7)
        mid = (T0 + ROWS // 2 * MS) // MS  # ms, in the middle of the rows
        window = {"start": str(mid), "end": str(mid + 30_000)}
        lists: list[tuple[str, str, dict[str, str]]] = [
            (f"/v1/accounts/{acct}/orders", "orders", {}),
            (f"/v1/accounts/{acct}/orders", "orders", {"status": "open"}),
            (f"/v1/accounts/{acct}/orders", "orders", {"status": "closed"}),
            (f"/v1/accounts/{acct}/orders", "orders", {"market": ETH_USDC}),
            (f"/v1/accounts/{acct}/orders", "orders", {"market": BTC_USDC, "status": "open"}),
            (f"/v1/accounts/{acct}/orders", "orders", window),
            (f"/v1/accounts/{acct}/fills", "fills", {}),
            (f"/v1/accounts/{acct}/fills", "fills", {"market": ETH_USDC}),
            (f"/v1/accounts/{acct}/fills", "fills", window),
            (f"/v1/accounts/{acct}/ledger", "entries", {}),
            (f"/v1/accounts/{acct}/ledger", "entries", {"asset": "USDC"}),
            (f"/v1/accounts/{acct}/deposits", "deposits", {}),
            (f"/v1/accounts/{acct}/withdrawals", "withdrawals", {}),
            (f"/v1/markets/{ETH_USDC}/trades", "trades", {}),
            (f"/v1/markets/{BTC_USDC}/trades", "trades", window),
        ]
        for path, key, params in lists:
            first = await ok(client, path, limit="20", **params)
            assert first[key] and first["next_cursor"], (path, params)
            second = await ok(client, path, limit="20", cursor=first["next_cursor"], **params)
            assert second[key], (path, params)
        day = T0 // MS + 10 * DAY_MS  # ms: a UTC day in the middle of the candles
        for params in (
            {"interval": "1m", "start": str(day), "end": str(day + DAY_MS - 1), "limit": "1440"},
            {"interval": "1h", "limit": "500"},
            {"interval": "1d", "start": str(day), "limit": "30"},
        ):
            got = await ok(client, f"/v1/markets/{ETH_USDC}/candles", **params)
            assert got["candles"], params
        some = (await ok(client, f"/v1/accounts/{acct}/orders", limit="1"))["orders"][0]
        await ok(client, f"/v1/accounts/{acct}/orders/{some['order_id']}")
        cid = some["client_order_id"]
        await ok(client, f"/v1/accounts/{acct}/orders/by-client-id/{cid}")
        await ok(client, f"/v1/accounts/{acct}/orders/by-client-id/{cid}", market=some["market"])
        await ok(client, f"/v1/accounts/{acct}/balances", after=f"{layout.risk_log(0)}@0")
        event.remove(svc.engine.sync_engine, "before_cursor_execute", caught)

        reads = [(s, p) for s, p in sent if any(f"FROM {t}" in s for t in TABLES)]
        assert len(reads) >= 2 * len(lists) + 3 + 2 * 3
        bad = []
        async with svc.engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            for n, (statement, parameters) in enumerate(reads):
                await pg.execute(f"PREPARE q{n} AS {statement}")
                values = ", ".join(map(literal, parameters))
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await pg.execute(f"SET plan_cache_mode = {mode}")
                    got = await pg.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE q{n}({values})")
                    # (SQLAlchemy's asyncpg connection decodes json itself)
                    plan = (json.loads(got) if isinstance(got, str) else got)[0]["Plan"]
                    candles = "FROM candles_1m" in statement
                    if seq_scans(plan, sort_ok=candles) or (
                        candles and index_names(plan) != {"candles_1m_pkey"}
                    ):
                        bad.append((mode, statement, parameters, json.dumps(plan, indent=1)))
            # the check sees a sequential scan where there is one
            got = await pg.fetchval("EXPLAIN (FORMAT JSON) SELECT * FROM orders WHERE side = 'buy'")
            assert seq_scans((json.loads(got) if isinstance(got, str) else got)[0]["Plan"])
        assert not bad, "\n\n".join(map(str, bad))
