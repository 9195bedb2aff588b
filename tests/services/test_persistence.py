"""The persistence service against the real shard writers on a MemoryBus: the store agrees
with the ledgers and the engines, nothing is applied twice (restart, stale replica), bad
entries are skipped and counted, a trimmed log stops it instead of skipping. Runs on SQLite
always and on PostgreSQL when `DEX_DATABASE_URL` is set (a fresh schema, dropped after)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from dex.app.demo import DEMO_ASSETS
from dex.core import commands as mc
from dex.core import events as me
from dex.core.commands import InputRef
from dex.core.enums import OrderType, Side
from dex.core.errors import RejectCode
from dex.persistence import queries
from dex.persistence.schema import balances, events, orders, trades
from dex.persistence.service import PersistenceService
from dex.persistence.store import async_database_url
from dex.risk import events as re_
from dex.risk.address import INVALID_ADDRESS
from dex.risk.codes import RiskCode
from dex.runtime.health import Health
from dex.runtime.http import build_app
from dex.runtime.metrics import ServiceMetrics
from dex.services.reader import INPUT
from dex.wire import codec, layout
from tests.bus.contract import aio
from tests.gateway.harness import gateway
from tests.services.inproc import Cluster, place
from tests.services.reader_kit import (
    ETH_USDC,
    A,
    B,
    RecordingLog,
    caught_up,
    ledger_balances,
    match_events,
    rich_trading,
    until,
)

Database = tuple[str, str | None]  # (url, PostgreSQL schema)


async def _pg(url: str, sql: str) -> None:
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history' / 'dex.sqlite3'}", None
        return
    url = os.environ.get("DEX_DATABASE_URL")
    if not url:
        pytest.skip("DEX_DATABASE_URL is not set: no PostgreSQL server to test against")
    schema = f"dex_test_{secrets.token_hex(6)}"
    asyncio.run(_pg(url, f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, schema
    finally:
        asyncio.run(_pg(url, f'DROP SCHEMA "{schema}" CASCADE'))


def sqlite_db(tmp_path: Any) -> Database:
    return f"sqlite:///{tmp_path / 'dex.sqlite3'}", None


def service(c: Cluster, db: Database, **kw: Any) -> PersistenceService:
    metrics = ServiceMetrics("persistence")
    health = Health(metrics)
    health.started = True
    url, schema = db
    return PersistenceService(
        c.bus,
        url,
        risk_shards=c.r_count,
        matching_shards=c.m_count,
        health=health,
        metrics=metrics,
        log=RecordingLog(),
        schema=schema,
        **kw,
    )


def metric(svc: PersistenceService, name: str, **labels: str) -> float:
    got = svc.metrics.registry.get_sample_value(f"dex_persistence_{name}", labels)
    return 0.0 if got is None else float(got)


async def store_balances(svc: PersistenceService) -> dict[str, dict[str, tuple[int, int]]]:
    assert svc.engine is not None
    out: dict[str, dict[str, tuple[int, int]]] = {}
    async with svc.engine.connect() as conn:
        for row in await conn.execute(select(balances)):
            if row.available or row.locked:
                out.setdefault(row.account, {})[row.asset] = (row.available, row.locked)
    return out


async def store_rows(svc: PersistenceService, table: Any) -> list[dict[str, Any]]:
    assert svc.engine is not None
    async with svc.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


def trade_rows(evs: list[me.Event]) -> list[dict[str, Any]]:
    return sorted(
        (
            {
                "market": e.market,
                "trade_id": e.trade_id,
                "price": e.price,
                "size": e.size,
                "maker_order_id": e.maker_order_id,
                "taker_order_id": e.taker_order_id,
                "taker_side": str(e.aggressor),
                "ts": e.ts,
            }
            for e in evs
            if isinstance(e, me.Trade)
        ),
        key=lambda t: (t["market"], t["trade_id"]),
    )


def expected_orders(c: Cluster, evs: list[me.Event]) -> dict[int, tuple[str, int]]:
    """order_id -> (status, filled lots), from the terminal events and the engines' books."""
    out: dict[int, tuple[str, int]] = {}
    for e in evs:
        if isinstance(e, me.Filled):
            out[e.order_id] = ("filled", e.size)
        elif isinstance(e, me.Cancelled):
            out[e.order_id] = ("cancelled", e.filled)
        elif isinstance(e, me.Expired):
            out[e.order_id] = ("expired", e.filled)
        elif isinstance(e, me.Rejected):
            out[e.order_id] = ("rejected", 0)
    for w in c.me:
        for symbol in w.engine.markets:
            view = w.engine.view(symbol)
            for level in (*view.bids, *view.asks):
                for o in level.orders:
                    out[o.order_id] = ("open", o.filled)
            for oid in view.stop_order_ids:
                out[oid] = ("untriggered", 0)
    return out


async def check_against_shards(svc: PersistenceService, c: Cluster) -> None:
    assert await store_balances(svc) == ledger_balances(c)
    evs = await match_events(c)
    stored_trades = sorted(
        await store_rows(svc, trades), key=lambda t: (t["market"], t["trade_id"])
    )
    assert stored_trades == trade_rows(evs)
    stored_orders = {
        o["order_id"]: (o["status"], o["filled"]) for o in await store_rows(svc, orders)
    }
    assert stored_orders == expected_orders(c, evs)
    for stream in svc.streams:
        last = await c.bus.last(stream)
        assert svc.pos[stream] == last
        assert (await c.bus.positions(stream)).get(layout.PERSISTENCE_READER, 0) == last


@aio
async def test_store_agrees_with_ledgers_and_engines(database: Database) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, database)
    await svc.start()
    try:
        await rich_trading(c)
        await until(svc, lambda: caught_up(svc), "persistence to catch up")
        await check_against_shards(svc, c)
        assert svc.health.ready
        assert metric(svc, "rows_written_total", table="trades") == len(
            trade_rows(await match_events(c))
        )
        assert metric(svc, "entries_applied_total", stream=layout.me_log(0)) == await c.bus.last(
            layout.me_log(0)
        )
        assert metric(svc, "bad_entries_total", stream=layout.me_log(0)) == 0
        # the query API the gateway uses in embedded mode
        bal = await svc.balances(A)
        assert {k: (v["available"], v["locked"]) for k, v in bal.items()} == ledger_balances(c)[A]
        newest = await svc.page(queries.TRADES, [trades.c.market == ETH_USDC], None, 3)
        assert [t["trade_id"] for t in newest.rows] == sorted(
            (t["trade_id"] for t in trade_rows(await match_events(c)) if t["market"] == ETH_USDC),
            reverse=True,
        )[:3]
        mine = (await svc.page(queries.ORDERS, [orders.c.account == B], None, 100)).rows
        assert mine and all(o["account"] == B for o in mine)
        assert [(o["created_ts"], o["order_id"]) for o in mine] == sorted(
            ((o["created_ts"], o["order_id"]) for o in mine), reverse=True
        )
    finally:
        await svc.stop()


@aio
async def test_restart_and_a_stale_replica_never_apply_twice(tmp_path: Any) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    db = sqlite_db(tmp_path)
    svc = service(c, db)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    await svc.stop()
    # more traffic while it is down, then a new instance on the same store resumes
    await c.send(A, place(A, "sell", 200_300, 400))
    await c.send(B, place(B, "buy", 200_300, 400))
    await c.pump()
    again = service(c, db)
    await again.start()
    await until(again, lambda: caught_up(again), "the restarted service to catch up")
    await check_against_shards(again, c)
    # a replica that still believes nothing was stored re-reads everything: refused as a whole
    stale = service(c, db)
    stale.engine = stale._make_engine()
    stale.initialised = True
    got = await c.bus.read_many(dict.fromkeys(stale.streams, 0), limit=10**6)
    assert await stale.apply(got) == []
    assert stale.pos == again.pos  # it reloaded the positions instead of applying
    assert stale.log.named("positions_moved")  # type: ignore[attr-defined]
    await stale.engine.dispose()
    # and entries at or below the position are ignored by the running instance too
    assert await again.apply(got) == []
    await check_against_shards(again, c)
    await again.stop()


@aio
async def test_bad_entry_is_logged_counted_and_skipped(tmp_path: Any) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, sqlite_db(tmp_path))
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    before = (await store_balances(svc), await store_rows(svc, trades))
    stream = layout.me_log(2)  # the idle shard: no writer appends after us
    seq = await c.bus.append(stream, [b"\x93not a match entry"])
    await until(svc, lambda: svc.pos[stream] == seq, "the bad entry to be passed")
    assert metric(svc, "bad_entries_total", stream=stream) == 1
    [logged] = svc.log.named("bad_entry")  # type: ignore[attr-defined]
    assert (logged["stream"], logged["log_seq"]) == (stream, seq)
    assert (await store_balances(svc), await store_rows(svc, trades)) == before
    assert (await c.bus.positions(stream))[layout.PERSISTENCE_READER] == seq
    assert svc.health.ready
    await svc.stop()


NUL = "\x00"
STRANGER = "0x" + "77" * 20  # an account no shard writes about in these tests


def poisoned_match_entry(oid: int, cid: str, ts: int) -> bytes:
    """A matching log entry as an old log (or a path around the gateway) may hold: an order
    accepted with `cid` as its client order id, and one rejected with it."""
    accepted = mc.Place(
        ts=ts,
        market=ETH_USDC,
        account=STRANGER,
        side=Side.BUY,
        type=OrderType.LIMIT,
        price=190_000,
        size=10,
        client_order_id=cid,
        order_id=oid,
    )
    refused = msgspec.structs.replace(accepted, order_id=oid + 1)
    where = InputRef("test", oid)
    head: dict[str, Any] = {"v": 1, "market": ETH_USDC, "ts": ts, "input": where}
    events: list[me.Event] = [
        me.Accepted(**head, seq=1, log_seq=1, order_id=oid, order=accepted),
        me.Rejected(
            **head,
            seq=2,
            log_seq=2,
            order_id=oid + 1,
            client_order_id=cid,
            account=STRANGER,
            side=Side.BUY,
            code=RejectCode.POST_ONLY_WOULD_TAKE,
            message=f"message {cid}",
        ),
    ]
    items = [
        codec.MatchItem(where, accepted, events[:1]),
        codec.MatchItem(where, refused, events[1:]),
    ]
    return codec.encode(codec.MatchEntry({"test": oid}, items))


def poisoned_risk_entry(tx_id: str, available: int, ts: int) -> bytes:
    """A risk log entry crediting STRANGER `available` USDC, its tx id and a refusal's text
    taken as given."""
    where = InputRef("test", available)
    head: dict[str, Any] = {"v": 1, "ts": ts, "input": where}
    events: list[re_.RiskEvent] = [
        re_.DepositCredited(
            **head,
            log_seq=1,
            account=STRANGER,
            asset="USDC",
            amount=5,
            tx_id=tx_id,
            log_index=0,
            available=available,
            locked=0,
        ),
        re_.OrderRejected(
            **head,
            log_seq=2,
            request="place",
            account=STRANGER,
            market=ETH_USDC,
            order_id=None,
            client_order_id=tx_id,
            code=RiskCode.INSUFFICIENT_FUNDS,
            message=f"message {tx_id}",
        ),
    ]
    return codec.encode(
        codec.RiskEntry({"test": 1}, [codec.RiskItem(where, ts, None, None, events)])
    )


@aio
async def test_text_the_store_cannot_hold_never_stops_the_history(database: Database) -> None:
    """PostgreSQL refuses a NUL in text and in jsonb. An entry carrying one, put straight on
    the logs, is stored with U+FFFD in its place, counted and logged with its position; the
    entries after it are stored and the service stays ready, also after a restart."""
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, database)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    me_stream = layout.me_log(2)  # the idle matching shard: no writer appends after us
    risk_stream = layout.risk_log(0)  # its shard is not stepped again in this test
    ts = 2 * 10**18
    bad = f"a{NUL}b"
    bad_me = await c.bus.append(me_stream, [poisoned_match_entry(10**12, bad, ts)])
    good_me = await c.bus.append(me_stream, [poisoned_match_entry(10**12 + 2, "fine", ts + 1)])
    bad_risk = await c.bus.append(risk_stream, [poisoned_risk_entry(f"tx{NUL}", 5, ts)])
    good_risk = await c.bus.append(risk_stream, [poisoned_risk_entry("tx-ok", 12, ts + 1)])
    await until(svc, lambda: caught_up(svc), "the entries after the bad ones to be stored")
    assert svc.health.ready, svc.health.reasons()
    for stream, seq in ((me_stream, bad_me), (risk_stream, bad_risk)):
        assert metric(svc, "text_replaced_total", stream=stream) == 1
        assert (stream, seq) in {
            (r["stream"], r["log_seq"]) for r in svc.log.named("text_replaced")
        }  # type: ignore[attr-defined]
    assert metric(svc, "entries_dropped_total", stream=me_stream) == 0
    assert (await c.bus.positions(me_stream))[layout.PERSISTENCE_READER] == good_me
    assert (await c.bus.positions(risk_stream))[layout.PERSISTENCE_READER] == good_risk
    # the bad entry is stored too, U+FFFD where the NUL was
    stored = {o["order_id"]: o for o in await store_rows(svc, orders)}
    assert stored[10**12]["client_order_id"] == "a\ufffdb"
    assert stored[10**12]["status"] == "open"
    assert stored[10**12 + 1]["client_order_id"] == "a\ufffdb"
    assert stored[10**12 + 2]["client_order_id"] == "fine"
    assert (await store_balances(svc))[STRANGER] == {"USDC": (12, 0)}
    assert svc.engine is not None
    async with svc.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.stream, events.c.log_seq, events.c.idx, events.c.body).where(
                events.c.log_seq.in_([bad_me, bad_risk])
            )
        )
        bodies = {(r.stream, r.log_seq, r.idx): r.body for r in rows}
    assert bodies[(me_stream, bad_me, 0)]["order"]["client_order_id"] == "a\ufffdb"
    assert bodies[(me_stream, bad_me, 1)]["message"] == "message a\ufffdb"
    assert bodies[(risk_stream, bad_risk, 0)]["tx_id"] == "tx\ufffd"
    assert bodies[(risk_stream, bad_risk, 1)]["client_order_id"] == "tx\ufffd"
    await svc.stop()
    # a new instance on the same store is ready and has nothing left to do
    again = service(c, database)
    await again.start()
    await until(again, lambda: again.health.ready, "the restarted service to be ready")
    assert again.pos == svc.pos
    await again.stop()


def trade_entry(trade_id: int, price: int, ts: int) -> bytes:
    """A matching log entry holding one trade at `price` ticks (of orders no one knows)."""
    where = InputRef("test", trade_id)
    cmd = mc.Cancel(ts=ts, market=ETH_USDC, account=STRANGER, order_id=1)
    trade = me.Trade(
        **{"v": 1, "market": ETH_USDC, "seq": 1, "ts": ts, "log_seq": 1, "input": where},
        trade_id=trade_id,
        price=price,
        size=1,
        aggressor=Side.BUY,
        maker_order_id=1,
        maker_account=STRANGER,
        maker_client_order_id=None,
        maker_remaining=0,
        taker_order_id=2,
        taker_account=STRANGER,
        taker_client_order_id=None,
        taker_remaining=0,
        taker_remaining_quote=None,
    )
    return codec.encode(
        codec.MatchEntry({"test": trade_id}, [codec.MatchItem(where, cmd, [trade])])
    )


async def refused_entry_is_dropped_alone(database: Database) -> None:
    """A value no column can hold (a price of 2^63 ticks, from no core of ours) must not
    stop the history: the batch is stored entry by entry, that entry alone is skipped,
    counted and logged with its position, and the service stays ready. (Also run by
    tests/persistence/test_writer_paths.py with the writer's COPY stage forced.)"""
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, database)
    await svc.start()
    try:
        await rich_trading(c)
        await until(svc, lambda: caught_up(svc), "persistence to catch up")
        stream = layout.me_log(2)  # the idle matching shard: no writer appends after us
        ts = 2 * 10**18
        last = await c.bus.append(
            stream,
            [
                trade_entry(10**12, 190_000, ts),
                trade_entry(10**12 + 1, 2**63, ts + 1),  # above BIGINT
                trade_entry(10**12 + 2, 190_001, ts + 2),
            ],
        )
        await until(svc, lambda: caught_up(svc), "the entries after the refused one to be stored")
        assert svc.health.ready, svc.health.reasons()
        assert metric(svc, "entries_dropped_total", stream=stream) == 1
        refused = last - 1
        assert (stream, refused) in {
            (r["stream"], r["log_seq"]) for r in svc.log.named("entry_not_stored")
        }  # type: ignore[attr-defined]
        stored = {
            t["trade_id"]: t["price"]
            for t in await store_rows(svc, trades)
            if t["trade_id"] >= 10**12
        }
        assert stored == {10**12: 190_000, 10**12 + 2: 190_001}
        assert (await c.bus.positions(stream))[layout.PERSISTENCE_READER] == last
    finally:
        await svc.stop()


@aio
async def test_an_entry_the_store_refuses_is_dropped_alone(database: Database) -> None:
    await refused_entry_is_dropped_alone(database)


@aio
async def test_a_nul_client_order_id_is_refused_on_every_path_and_history_goes_on(
    database: Database,
) -> None:
    """The order that stopped the history (issue 9): refused by the gateway (400 naming the
    field) and by risk when it comes another way (`invalid_client_order_id`, the id not
    repeated); the store never sees it and keeps storing everyone's orders."""
    bad = f"a{NUL}b"
    async with gateway() as h:
        c = h.c
        t = await h.onboard(fund={"USDC": "10000"})
        svc = service(c, database)
        await svc.start()
        try:
            body = {"market": "ETH-USDC", "side": "buy", "type": "limit", "price": "1950.00"}
            got = await t.call(
                "POST", "/v1/orders", {**body, "size": "0.1", "client_order_id": bad}
            )
            assert got.status_code == 400, got.text
            assert got.json()["error"]["field"] == "client_order_id"
            me = t.address
            stream, seq = await c.send(me, place(me, "buy", 195_000, 1000, client_order_id=bad))
            ok = await t.call(
                "POST", "/v1/orders", {**body, "size": "0.1", "client_order_id": "ok-1"}
            )
            assert ok.json()["status"] == "open", ok.text
            await c.pump()
            await until(svc, lambda: caught_up(svc), "persistence to catch up")
            assert svc.health.ready, svc.health.reasons()
            mine = await svc.page(queries.ORDERS, [orders.c.account == me], None, 100)
            assert [o["client_order_id"] for o in mine.rows] == ["ok-1"]
            refusals = [
                r["body"]
                for r in await store_rows(svc, events)
                if r["kind"] == "order_rejected"
                and r["body"]["input"] == {"stream": stream, "log_seq": seq}
            ]
            assert [(b["code"], b["client_order_id"]) for b in refusals] == [
                ("invalid_client_order_id", None)
            ]
            for s in svc.streams:
                assert metric(svc, "text_replaced_total", stream=s) == 0
        finally:
            await svc.stop()


@aio
async def test_trimmed_log_makes_it_not_ready_instead_of_skipping(tmp_path: Any) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    await rich_trading(c)
    stream = layout.me_log(0)
    await c.bus.trim(stream, 3)  # entries 1 and 2 are gone before persistence read them
    svc = service(c, sqlite_db(tmp_path))
    await svc.start()
    await until(svc, lambda: not svc.running, "the reader to stop")
    assert not svc.health.ready
    assert "trimmed" in svc.health.reasons()[INPUT]
    assert svc.pos[stream] == 0
    assert await store_rows(svc, trades) == []
    assert svc.log.named("input_trimmed")  # type: ignore[attr-defined]
    await svc.stop()


@aio
async def test_http_api(tmp_path: Any) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, sqlite_db(tmp_path))
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    app = build_app("persistence", svc.health, svc.metrics, route_handlers=svc.route_handlers())
    async with AsyncTestClient(app=app) as client:
        got = await client.get(f"/v1/accounts/{A}/balances")
        assert got.status_code == 200
        body = got.json()
        assert body["account"] == A
        listed = {
            b["asset"]: (
                units(b["available"], DECIMALS[b["asset"]]),
                units(b["locked"], DECIMALS[b["asset"]]),
            )
            for b in body["balances"]
        }
        assert {k: v for k, v in listed.items() if v != (0, 0)} == ledger_balances(c)[A]
        got = await client.get("/v1/accounts/fee:0/balances")
        assert got.status_code == 200
        fees = {
            b["asset"]: units(b["available"], DECIMALS[b["asset"]]) for b in got.json()["balances"]
        }
        assert {k: (v, 0) for k, v in fees.items() if v} == ledger_balances(c)["fee:0"]
        got = await client.get(f"/v1/markets/{ETH_USDC}/trades", params={"limit": 2})
        assert got.status_code == 200
        listed = got.json()["trades"]
        assert len(listed) == 2 and listed[0]["trade_id"] > listed[1]["trade_id"]
        assert set(listed[0]) == {"trade_id", "price", "size", "taker_side", "ts"}
        got = await client.get(f"/v1/accounts/{B}/orders")
        assert got.status_code == 200
        assert {o["status"] for o in got.json()["orders"]} <= {
            "open",
            "untriggered",
            "filled",
            "cancelled",
            "expired",
            "rejected",
        }
        got = await client.get("/v1/markets/NOPE-USDC/trades")
        assert got.status_code == 404
        assert got.json()["error"]["code"] == "unknown_market"
        got = await client.get("/v1/accounts/0x123/balances")
        assert got.status_code == 400
        assert got.json()["error"] == {
            "code": "invalid_address",
            "message": INVALID_ADDRESS,
            "field": "account",
        }
        got = await client.get(f"/v1/markets/{ETH_USDC}/trades", params={"limit": 0})
        assert got.status_code == 400
    await svc.stop()


DECIMALS = {a.symbol: a.decimals for a in DEMO_ASSETS}  # the assets of tests.services.inproc


def units(text: str, decimals: int) -> int:
    """A decimal string rendered at `decimals` digits back to integer units (exact digits
    checked: a string at any other precision fails)."""
    whole, _, frac = text.partition(".")
    assert len(frac) == decimals, (text, decimals)
    return int(whole + frac)


def test_database_urls() -> None:
    assert async_database_url("sqlite:///x/dex.db") == "sqlite+aiosqlite:///x/dex.db"
    assert async_database_url("postgresql://u:p@h:5432/db") == "postgresql+asyncpg://u:p@h:5432/db"
    assert async_database_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    with pytest.raises(ValueError, match="sqlite"):
        async_database_url("mysql://h/db")
    with pytest.raises(ValueError, match="PostgreSQL"):
        service(Cluster(), ("sqlite:///x.db", "some_schema"))


@aio
async def test_unreachable_store_is_not_ready_and_retried() -> None:
    c = Cluster()
    await c.start()
    svc = service(c, ("postgresql://postgres@127.0.0.1:1/nowhere", None))
    await svc.start()
    await until(svc, lambda: "database" in svc.health.reasons(), "the store to be reported down")
    assert not svc.health.ready
    assert svc.running  # it keeps trying
    assert svc.log.named("database_unavailable")  # type: ignore[attr-defined]
    app = build_app("persistence", svc.health, svc.metrics, route_handlers=svc.route_handlers())
    async with AsyncTestClient(app=app) as client:
        got = await client.get(f"/v1/accounts/{A}/balances")
        assert got.status_code == 503
        assert got.json()["error"]["code"] == "unavailable"
    await svc.stop()
    assert not svc.running
