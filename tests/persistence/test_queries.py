"""The persistence read API over HTTP, on SQLite and PostgreSQL: real trading ingested for the
shapes, filters, decimal strings and lookups; direct table fills for volume and for pages
fetched while rows are inserted; every 400; read-your-writes (`after`) waiting and timing
out.

The app is called through httpx's ASGI transport in the test's own loop, as the real service
runs it: the store's pool (asyncpg) belongs to the loop that opened it, so a test client that
runs the app on a thread and loop of its own cannot use it. Each PostgreSQL test has a schema
of its own (the `database` fixture), dropped after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import insert

from dex.persistence import schema
from dex.persistence.service import PersistenceService
from dex.runtime.http import build_app
from dex.wire import layout
from tests.bus.contract import aio, yield_to_loop
from tests.services.inproc import Cluster, place
from tests.services.reader_kit import BTC_USDC, ETH_USDC, A, B, C, E, caught_up, rich_trading, until
from tests.services.test_persistence import Database, database, service  # noqa: F401

OPEN = {"pending", "untriggered", "open"}
CLOSED = {"filled", "cancelled", "expired", "rejected"}
MS = 1_000_000


@asynccontextmanager
async def api(
    db: Database, *, trade: bool = True, **kw: Any
) -> AsyncIterator[tuple[Cluster, PersistenceService, httpx.AsyncClient]]:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, db, **kw)
    await svc.start()
    try:
        if trade:
            await rich_trading(c)
        else:
            await c.setup_markets()
            await c.pump()
        await until(svc, lambda: caught_up(svc), "persistence to catch up")
        app = build_app("persistence", svc.health, svc.metrics, route_handlers=svc.route_handlers())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://persistence") as client:
            yield c, svc, client
    finally:
        await svc.stop()


async def ok(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    got = await client.get(path, params=params)
    assert got.status_code == 200, got.text
    return got.json()


async def refused(
    client: httpx.AsyncClient,
    path: str,
    want: int,
    code: str,
    field: str | None,
    **params: Any,
) -> None:
    got = await client.get(path, params=params)
    assert got.status_code == want, (params, got.text)
    err = got.json()["error"]
    assert (err["code"], err["field"]) == (code, field), (params, err)


async def every(client: httpx.AsyncClient, path: str, key: str, **params: Any) -> list[Any]:
    """All rows of a list, page after page."""
    out: list[Any] = []
    cursor = None
    while True:
        body = await ok(client, path, **params, **({"cursor": cursor} if cursor else {}))
        out += body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


@aio
async def test_orders_filters_lookups_and_decimals(database: Database) -> None:  # noqa: F811
    async with api(database) as (_, _svc, client):
        path = f"/v1/accounts/{C}/orders"
        amended = await ok(client, f"{path}/by-client-id/amend-me")
        # 199_100 ticks of 0.01, 1500 lots of 0.0001 (amended twice: price, then size)
        assert amended["price"] == "1991.00"
        assert amended["size"] == "0.1500"
        assert amended["filled"] == "0.1500"  # taken by the stop order once triggered
        assert (amended["market"], amended["side"], amended["type"], amended["tif"]) == (
            ETH_USDC,
            "buy",
            "limit",
            "GTC",
        )
        assert amended["status"] == "filled" and amended["reason"] is None
        assert amended["quote_size"] is None and amended["trigger_price"] is None
        assert amended["created_at"] <= amended["updated_at"]
        by_id = await ok(client, f"{path}/{amended['order_id']}")
        assert by_id == amended
        market = await ok(client, f"{path}/by-client-id/amend-me", market=ETH_USDC)
        assert market == amended
        await refused(
            client,
            f"{path}/by-client-id/amend-me",
            404,
            "unknown_order",
            "order_id",
            market=BTC_USDC,
        )
        await refused(client, f"{path}/by-client-id/nope", 404, "unknown_order", "order_id")
        await refused(
            client,
            f"/v1/accounts/{A}/orders/{amended['order_id']}",
            404,
            "unknown_order",
            "order_id",
        )
        await refused(
            client,
            f"{path}/by-client-id/amend-me",
            404,
            "unknown_market",
            "market",
            market="NOPE-USDC",
        )
        # the stop order: its trigger price, and the rejected post-only with its code
        stop = await ok(client, f"/v1/accounts/{E}/orders/by-client-id/stop")
        assert stop["trigger_price"] == "1999.00" and stop["type"] == "stop_limit"
        po = await ok(client, f"/v1/accounts/{E}/orders/by-client-id/po")
        assert po["status"] == "rejected" and po["reason"] == "post_only_would_take"
        assert po["price"] is None and po["filled"] == "0.0000"
        # status, market and time filters
        for acct in (A, B, C, E):
            everything = await every(client, f"/v1/accounts/{acct}/orders", "orders", limit=2)
            ids = [o["order_id"] for o in everything]
            assert len(ids) == len(set(ids)) > 0
            keys = [(o["created_at"], o["order_id"]) for o in everything]
            assert keys == sorted(keys, reverse=True)
            opened = await every(client, f"/v1/accounts/{acct}/orders", "orders", status="open")
            closed = await every(client, f"/v1/accounts/{acct}/orders", "orders", status="closed")
            assert {o["status"] for o in opened} <= OPEN
            assert {o["status"] for o in closed} <= CLOSED
            assert sorted(o["order_id"] for o in opened + closed) == sorted(ids)
            for m in (ETH_USDC, BTC_USDC):
                got = await every(client, f"/v1/accounts/{acct}/orders", "orders", market=m)
                assert got == [o for o in everything if o["market"] == m]
            mid = everything[len(everything) // 2]["created_at"]
            later = await every(client, f"/v1/accounts/{acct}/orders", "orders", start=mid)
            assert later == [o for o in everything if o["created_at"] >= mid]
            before = await every(client, f"/v1/accounts/{acct}/orders", "orders", end=mid)
            assert before == [o for o in everything if o["created_at"] < mid]
            assert (await ok(client, f"/v1/accounts/{acct}/orders", start=mid, end=mid))[
                "orders"
            ] == []


@aio
async def test_fills_ledger_deposits_trades_balances(database: Database) -> None:  # noqa: F811
    async with api(database) as (_, _svc, client):
        fills = await every(client, f"/v1/accounts/{B}/fills", "fills", limit=3)
        assert fills
        keys = [(f["ts"], f["trade_id"]) for f in fills]
        assert keys == sorted(keys, reverse=True)
        for f in fills:
            assert f["liquidity"] in ("maker", "taker")
            price, size = f["price"], f["size"]
            if f["market"] == ETH_USDC:
                assert len(price.split(".")[1]) == 2 and len(size.split(".")[1]) == 4
                from decimal import Decimal

                assert Decimal(f["quote_size"]) == Decimal(price) * Decimal(size)
                assert len(f["quote_size"].split(".")[1]) == 6
            fee_decimals = {"ETH": 9, "BTC": 8, "USDC": 6}[f["fee_asset"]]
            assert len(f["fee"].split(".")[1]) == fee_decimals
        eth = await every(client, f"/v1/accounts/{B}/fills", "fills", market=ETH_USDC)
        assert eth == [f for f in fills if f["market"] == ETH_USDC]
        entries = await every(client, f"/v1/accounts/{B}/ledger", "entries", limit=7)
        assert {e["balance"] for e in entries} <= {"available", "locked"}
        assert "deposit" in {e["cause"] for e in entries}
        usdc = await every(client, f"/v1/accounts/{B}/ledger", "entries", asset="USDC")
        assert usdc == [e for e in entries if e["asset"] == "USDC"]
        assert all(len(e["amount"].lstrip("-").split(".")[1]) == 6 for e in usdc)
        await refused(
            client, f"/v1/accounts/{B}/ledger", 404, "unknown_asset", "asset", asset="NOPE"
        )
        deposits = await every(client, f"/v1/accounts/{B}/deposits", "deposits", limit=1)
        assert {d["asset"] for d in deposits} == {"ETH", "USDC", "BTC"} & {
            d["asset"] for d in deposits
        }
        assert deposits and all(d["amount"].count(".") == 1 for d in deposits)
        assert (await ok(client, f"/v1/accounts/{B}/withdrawals"))["withdrawals"] == []
        trades = await every(client, f"/v1/markets/{ETH_USDC}/trades", "trades", limit=4)
        assert [t["trade_id"] for t in trades] == sorted(
            (t["trade_id"] for t in trades), reverse=True
        )
        assert set(trades[0]) == {"trade_id", "price", "size", "taker_side", "ts"}
        await refused(client, "/v1/markets/NOPE-USDC/trades", 404, "unknown_market", "market")


async def fill_tables(svc: PersistenceService, account: str, n: int, t0: int) -> None:
    """`n` open and `n` filled orders of `account`, `n` fills, ledger entries, deposits,
    withdrawals and trades, at times t0, t0 + 1 ms, ..."""
    assert svc.engine is not None
    rows: dict[Any, list[dict[str, Any]]] = {
        t: []
        for t in (
            schema.orders,
            schema.fills,
            schema.ledger_entries,
            schema.deposits,
            schema.withdrawals,
            schema.trades,
        )
    }
    for i in range(n):
        ts = t0 + i * MS
        for k, status in ((0, "open"), (1, "filled")):
            rows[schema.orders].append(
                {
                    "order_id": t0 // MS * 10 + 2 * i + k,
                    "account": account,
                    "market": ETH_USDC,
                    "side": "buy",
                    "type": "limit",
                    "price": 100_000,
                    "size": 10,
                    "client_order_id": f"v{t0}-{i}-{k}",
                    "status": status,
                    "filled": 0,
                    "reason": None,
                    "updated_ts": ts,
                    "tif": "GTC",
                    "trigger_price": None,
                    "quote_size": None,
                    "created_ts": ts,
                }
            )
        tid = t0 // MS + i
        rows[schema.fills].append(
            {
                "trade_id": tid,
                "market": ETH_USDC,
                "liquidity": "maker",
                "order_id": 1,
                "account": account,
                "side": "buy",
                "price": 100_000,
                "size": 10,
                "fee": 1,
                "fee_asset": "ETH",
                "ts": ts,
                "stream": "s",
                "log_seq": 1,
            }
        )
        rows[schema.trades].append(
            {
                "market": ETH_USDC,
                "trade_id": tid,
                "price": 100_000,
                "size": 10,
                "maker_order_id": 1,
                "taker_order_id": 2,
                "taker_side": "buy",
                "ts": ts,
            }
        )
        rows[schema.ledger_entries].append(
            {
                "stream": "s",
                "log_seq": tid,
                "idx": 0,
                "line": 0,
                "account": account,
                "asset": "USDC",
                "bucket": "available",
                "delta": -5,
                "cause": "deposit",
                "ts": ts,
            }
        )
        rows[schema.deposits].append(
            {
                "tx_id": f"tx{tid}",
                "log_index": 0,
                "account": account,
                "asset": "USDC",
                "amount": 5,
                "ts": ts,
                "stream": "s",
                "log_seq": 1,
            }
        )
        rows[schema.withdrawals].append(
            {
                "withdrawal_id": tid,
                "account": account,
                "asset": "USDC",
                "amount": 5,
                "status": "requested",
                "tx_id": None,
                "reason": None,
                "requested_ts": ts,
                "updated_ts": ts,
                "stream": "s",
                "log_seq": 1,
            }
        )
    async with svc.engine.begin() as conn:
        for table, values in rows.items():
            await conn.execute(insert(table), values)


LISTS = [
    ("orders", "orders", {"status": "open"}, "order_id"),
    ("fills", "fills", {}, "trade_id"),
    ("ledger", "entries", {}, "ref"),
    ("deposits", "deposits", {}, "tx_id"),
    ("withdrawals", "withdrawals", {}, "withdrawal_id"),
]
ACCT = "0x" + "ab" * 20


@aio
async def test_157_open_orders_across_pages_while_rows_are_inserted(
    database: Database,  # noqa: F811
) -> None:
    """Every list: all rows across pages of 50, none repeated or skipped, while newer rows
    (and, for the trades, newer trades) are inserted between the page fetches."""
    async with api(database, trade=False) as (_, svc, client):
        t0 = 1_800_000_000_000 * MS
        await fill_tables(svc, ACCT, 157, t0)
        lists = [
            (f"/v1/accounts/{ACCT}/{r}", key, params, ident) for r, key, params, ident in LISTS
        ]
        lists.append((f"/v1/markets/{ETH_USDC}/trades", "trades", {}, "trade_id"))
        for round_, (path, key, params, ident) in enumerate(lists):
            present = [row[ident] for row in await every(client, path, key, limit=1000, **params)]
            assert len(present) >= 157
            seen: list[Any] = []
            cursor = None
            pages = 0
            while True:
                body = await ok(
                    client, path, limit=50, **params, **({"cursor": cursor} if cursor else {})
                )
                seen += [row[ident] for row in body[key]]
                pages += 1
                cursor = body["next_cursor"]
                if cursor is None:
                    break
                # newer rows arrive while the client pages (a later time: before the cursor)
                await fill_tables(svc, ACCT, 3, t0 + (10_000 + 100 * pages + 1000 * round_) * MS)
            assert seen == present, path  # none skipped, none repeated, newest first


@aio
async def test_every_bad_parameter_is_a_400_naming_it(database: Database) -> None:  # noqa: F811
    async with api(database, trade=False, max_limit=200) as (_, svc, client):
        await fill_tables(svc, ACCT, 5, 1_800_000_000_000 * MS)
        path = f"/v1/accounts/{ACCT}/orders"
        for limit in ("0", "-1", "abc", "201", str(2**63), "1.5", ""):
            await refused(client, path, 400, "invalid_request", "limit", limit=limit)
        for name in ("start", "end"):
            for bad in ("-1", "x", str(2**63), "1e3"):
                await refused(client, path, 400, "invalid_request", name, **{name: bad})
        await refused(client, path, 400, "invalid_request", "start", start="5", end="4")
        await refused(client, path, 400, "invalid_request", "status", status="opened")
        await refused(client, path, 404, "unknown_market", "market", market="NOPE-USDC")
        body = await ok(client, path, limit=2)
        good = body["next_cursor"]
        assert good and body["orders"]
        flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
        fills_cursor = (await ok(client, f"/v1/accounts/{ACCT}/fills", limit=1))["next_cursor"]
        for bad in ("!!", "abc", flipped, fills_cursor, good + "A", ""):
            await refused(client, path, 400, "invalid_request", "cursor", cursor=bad)
        await refused(client, f"{path}/abc", 400, "invalid_request", "order_id")
        await refused(client, f"{path}/{2**63}", 400, "invalid_request", "order_id")
        for after in (
            "x",
            "@5",
            f"{layout.risk_log(0)}@x",
            f"{layout.risk_log(0)}@-1",
            "dex:{risk:9}:log@1",
            f"{layout.risk_log(0)}@1,nope@2",
        ):
            await refused(client, path, 400, "invalid_request", "after", after=after)
        await refused(client, "/v1/accounts/0x123/orders", 400, "invalid_address", "account")
        # the route still answers after all that
        assert (await ok(client, path, limit=200))["orders"]


@aio
async def test_after_waits_for_the_write_then_answers(database: Database) -> None:  # noqa: F811
    async with api(database, trade=False, proxy_timeout_ms=1000) as (c, svc, client):
        stream = layout.risk_log(layout.shard_for(A, c.r_count))
        me = layout.me_log(layout.shard_for(ETH_USDC, c.m_count))
        last_risk, last_me = await c.bus.last(stream), await c.bus.last(me)
        # a request waiting for entries not yet applied is answered once they are
        await svc.stop_reading()
        await c.fund()
        await c.pump()
        await c.send(A, place(A, "buy", 190_000, 10, client_order_id="ryw"))
        await c.pump()
        after = f"{stream}@{await c.bus.last(stream)},{me}@{await c.bus.last(me)}"
        assert await c.bus.last(me) > last_me
        waiting = asyncio.ensure_future(
            client.get(f"/v1/accounts/{A}/orders", params={"after": after, "status": "open"})
        )
        for _ in range(50):
            await yield_to_loop()
        assert not waiting.done()  # the store is behind: the request waits
        svc.start_reading()
        got = await waiting
        assert got.status_code == 200, got.text
        assert [o["client_order_id"] for o in got.json()["orders"]] == ["ryw"]
        # not caught up yet: the entries do not exist
        got = await client.get(
            f"/v1/accounts/{A}/balances", params={"after": f"{stream}@{last_risk + 100}"}
        )
        assert got.status_code == 503
        assert got.json()["error"]["code"] == "not_caught_up"
        assert stream in got.json()["error"]["message"]
