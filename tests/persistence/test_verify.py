"""The double-entry ledger, fills, deposits and withdrawals, and `dex db verify`, on SQLite and
on PostgreSQL (`DEX_DATABASE_URL`; a database of its own per test, dropped after): after
random trading through the in-process cluster and persistence's ingest the books balance and
agree with the risk shards; one tampered balance row or ledger entry fails the check naming
the account and asset, one tampered or missing 1-minute candle naming the market and minute;
a restart and a stale replica write nothing twice."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Connection, delete, func, insert, select, update

from dex.bus.sqlite import SqliteBus
from dex.cli import main
from dex.core import events as me
from dex.core.enums import STP, OrderType, Side, TimeInForce
from dex.marketdata import candles as cb
from dex.persistence import ledger, migrations
from dex.persistence.schema import (
    balances,
    candles_1m,
    deposits,
    fills,
    ledger_entries,
    trades,
    withdrawals,
)
from dex.persistence.service import PersistenceService
from dex.persistence.store import run_sync
from dex.persistence.verify import (
    Difference,
    against_snapshots,
    read_snapshots,
    risk_shards,
    verify,
)
from dex.risk import commands as rc
from dex.risk import events as re_
from dex.wire import layout
from tests.bus.contract import aio
from tests.persistence.test_migrations import fresh_postgres
from tests.services.inproc import ACCOUNTS, Cluster, place
from tests.services.reader_kit import (
    ETH_USDC,
    A,
    B,
    C,
    caught_up,
    ledger_balances,
    match_events,
    rich_trading,
    until,
)
from tests.services.test_persistence import service

TABLES = (ledger_entries, fills, deposits, withdrawals, balances)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'dex.sqlite3'}"
    else:
        yield from fresh_postgres()


def run_verify(url: str) -> Result:
    """`dex db verify` on the store at `url`, no bus to read snapshots from (DEX_REDIS_URL
    unset: never the shared Redis of the test run)."""
    env = {"DEX_DATABASE_URL": url, "DEX_REDIS_URL": None}
    return CliRunner().invoke(main, ["db", "verify"], env=env)


async def dex_db_verify(url: str) -> Result:
    """`dex db verify` on the store at `url` (DEX_DATABASE_URL), off the test's event loop."""
    return await asyncio.to_thread(run_verify, url)


async def random_trading(c: Cluster, seed: int, n: int = 120) -> None:
    """Random limit orders (some IOC or post-only), market orders and cancels in ETH-USDC."""
    rng = random.Random(seed)
    for i in range(n):
        acct = rng.choice(ACCOUNTS)
        side = rng.choice(("buy", "sell"))
        roll = rng.random()
        if roll < 0.1:
            cmd: Any = rc.Place(
                market=ETH_USDC,
                account=acct,
                side=Side(side),
                type=OrderType.MARKET,
                size=rng.randint(1, 800),
                tif=TimeInForce.IOC,
                stp=STP.NONE,
            )
        elif roll < 0.25:
            j = rng.randrange(max(i, 1))
            cmd = rc.Cancel(market=ETH_USDC, account=acct, client_order_id=f"r{seed}-{j}")
        else:
            kw: dict[str, Any] = {"client_order_id": f"r{seed}-{i}", "stp": STP.NONE}
            if roll < 0.35:
                kw["tif"] = TimeInForce.IOC
            elif roll < 0.4:
                kw["post_only"] = True
            price = 200_000 + rng.randint(-60, 60)
            cmd = place(acct, side, price, rng.randint(1, 2500), **kw)
        await c.send(acct, cmd)
        if rng.random() < 0.2:
            await c.pump(2)
    await c.pump()


async def withdrawals_of_every_end(c: Cluster) -> None:
    """Three withdrawals: one completed, one failed, one left pending."""
    for acct, amount in ((A, 7_000_000), (B, 3_000_000), (C, 1_000_000)):
        await c.send(acct, rc.Withdraw(account=acct, asset="USDC", amount=amount))
    await c.pump()
    wids = {}
    for r in range(c.r_count):
        for ev in await c.log_events(layout.risk_log(r)):
            if isinstance(ev, re_.WithdrawalRequested):
                wids[ev.account] = ev.withdrawal_id
    await c.send(A, rc.WithdrawalCompleted(withdrawal_id=wids[A], tx_id="0xchain-tx-1"))
    await c.send(B, rc.WithdrawalFailed(withdrawal_id=wids[B], reason="chain refused"))
    await c.pump()


async def traded(store: str, seed: int) -> tuple[Cluster, PersistenceService]:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, (store, None))
    await svc.start()
    await rich_trading(c)
    await withdrawals_of_every_end(c)
    await random_trading(c, seed)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    return c, svc


async def rows(url: str, table: Any) -> list[dict[str, Any]]:
    def work(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(select(table)).mappings()]

    return await run_sync(url, work)


async def risk_events(c: Cluster) -> list[tuple[str, Any]]:
    out = []
    for r in range(c.r_count):
        out += [(f"fee:{r}", ev) for ev in await c.log_events(layout.risk_log(r))]
    return out


def from_ledger(entries: list[dict[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Every non-zero balance the entries add up to, system accounts left out."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in entries:
        sums[(e["account"], e["asset"])][0 if e["bucket"] == "available" else 1] += e["delta"]
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for (account, asset), (available, locked) in sums.items():
        if not ledger.is_system(account) and (available or locked):
            out.setdefault(account, {})[asset] = (available, locked)
    return out


async def check_books(c: Cluster, url: str) -> None:
    """The ledger, fills, deposits and withdrawals against the shards and their logs."""
    entries = await rows(url, ledger_entries)
    # each event's entries sum to zero per asset; causes and buckets from the fixed sets
    per_event: dict[tuple[str, int, int, str], int] = defaultdict(int)
    for e in entries:
        per_event[(e["stream"], e["log_seq"], e["idx"], e["asset"])] += e["delta"]
        assert e["cause"] in ledger.CAUSES and e["bucket"] in ("available", "locked")
        assert e["delta"] != 0
    assert per_event and set(per_event.values()) == {0}
    # the entries add up to the risk engines' own balances, fee accounts included
    assert from_ledger(entries) == ledger_balances(c)
    causes = {e["cause"] for e in entries}
    assert causes == set(ledger.CAUSES)  # rich_trading has a maker rebate
    # every clearing account is back to zero
    clearing: dict[tuple[str, str], int] = defaultdict(int)
    for e in entries:
        if e["account"].startswith(ledger.CLEARING):
            clearing[(e["account"], e["asset"])] += e["delta"]
    assert clearing and set(clearing.values()) == {0}
    # fills: two per trade, as the trades say, fees as trade_settled says
    trades = {(e.market, e.trade_id): e for e in await match_events(c) if isinstance(e, me.Trade)}
    settled: dict[tuple[int, str, str], tuple[str, int, str, int]] = {}
    want_deposits, want_withdrawals = [], {}
    for _fee, ev in await risk_events(c):
        if isinstance(ev, re_.TradeSettled):
            for liquidity, s in (("maker", ev.maker), ("taker", ev.taker)):
                if s is not None:
                    settled[(ev.trade_id, ev.market, liquidity)] = (
                        s.account,
                        s.order_id,
                        str(s.side),
                        s.fee,
                    )
        elif isinstance(ev, re_.DepositCredited):
            want_deposits.append((ev.tx_id, ev.log_index, ev.account, ev.asset, ev.amount))
        elif isinstance(ev, re_.WithdrawalRequested):
            want_withdrawals[ev.withdrawal_id] = [ev.account, ev.asset, ev.amount, "requested"]
        elif isinstance(ev, re_.WithdrawalCompleted):
            want_withdrawals[ev.withdrawal_id][3] = "completed"
        elif isinstance(ev, re_.WithdrawalFailed):
            want_withdrawals[ev.withdrawal_id][3] = "failed"
    got_fills = await rows(url, fills)
    assert len(got_fills) == 2 * len(trades) == len(settled)
    for f in got_fills:
        t = trades[(f["market"], f["trade_id"])]
        assert (f["price"], f["size"]) == (t.price, t.size)
        oid = t.maker_order_id if f["liquidity"] == "maker" else t.taker_order_id
        assert f["order_id"] == oid
        assert settled[(f["trade_id"], f["market"], f["liquidity"])] == (
            f["account"],
            f["order_id"],
            f["side"],
            f["fee"],
        )
        base, quote = f["market"].split("-")
        assert f["fee_asset"] == (base if f["side"] == "buy" else quote)
    assert any(f["fee"] < 0 for f in got_fills) and any(f["fee"] > 0 for f in got_fills)
    got_deposits = await rows(url, deposits)
    assert sorted(
        (d["tx_id"], d["log_index"], d["account"], d["asset"], d["amount"]) for d in got_deposits
    ) == sorted(want_deposits)
    got_withdrawals = {
        w["withdrawal_id"]: [w["account"], w["asset"], w["amount"], w["status"]]
        for w in await rows(url, withdrawals)
    }
    assert got_withdrawals == want_withdrawals
    assert sorted(s for _, _, _, s in want_withdrawals.values()) == [
        "completed",
        "failed",
        "requested",
    ]


async def counts(url: str) -> dict[str, int]:
    def work(conn: Connection) -> dict[str, int]:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in TABLES
        }

    return await run_sync(url, work)


@aio
async def test_verify_passes_after_random_trading_and_names_a_tampered_row(store: str) -> None:
    c, svc = await traded(store, seed=13)
    await svc.stop()
    await check_books(c, store)
    assert await run_sync(store, verify) == []
    for w in c.risk:  # the risk engines' own state, as a deployment keeps it on the bus
        await w.take_snapshot()
    shards = list(range(c.r_count))
    snaps = await read_snapshots(c.bus, shards)
    assert sorted(snaps) == shards and all(seq for seq, _ in snaps.values())
    assert await run_sync(store, risk_shards) == shards
    assert await run_sync(store, lambda conn: against_snapshots(conn, snaps)) == ([], [])
    ok = await dex_db_verify(store)
    assert ok.exit_code == 0, ok.output

    # one balance row tampered with: that account and asset, nothing else
    def bump_balance(delta: int) -> Any:
        def work(conn: Connection) -> None:
            conn.execute(
                update(balances)
                .where(balances.c.account == B, balances.c.asset == "ETH")
                .values(available=balances.c.available + delta)
            )

        return work

    await run_sync(store, bump_balance(1))
    found = await run_sync(store, verify)
    assert {(d.check, d.account, d.asset) for d in found} == {
        ("balance", B, "ETH"),
        ("conservation", "all accounts", "ETH"),
    }
    bad = await dex_db_verify(store)
    assert bad.exit_code == 1
    assert B in bad.output and "ETH" in bad.output and "balance" in bad.output
    await run_sync(store, bump_balance(-1))
    assert (await dex_db_verify(store)).exit_code == 0

    # one ledger entry tampered with: its account and asset, and its event no longer balances
    entry = next(
        e
        for e in await rows(store, ledger_entries)
        if e["account"] == C and e["asset"] == "USDC" and e["cause"] == "trade"
    )
    key = (
        ledger_entries.c.stream == entry["stream"],
        ledger_entries.c.log_seq == entry["log_seq"],
        ledger_entries.c.idx == entry["idx"],
        ledger_entries.c.line == entry["line"],
    )

    def tamper(conn: Connection) -> None:
        conn.execute(update(ledger_entries).where(*key).values(delta=entry["delta"] - 5))

    await run_sync(store, tamper)
    found = await run_sync(store, verify)
    assert [(d.check, d.account, d.asset) for d in found if d.check != "event"] == [
        ("balance", C, "USDC")
    ]
    [event] = [d for d in found if d.check == "event"]
    assert event.asset == "USDC" and C in event.account.split(", ")
    assert event.where == f"{entry['stream']}#{entry['log_seq']}/{entry['idx']}"
    assert event.found == "sum -5"
    shard = next(r for r in shards if layout.risk_log(r) == entry["stream"])
    held = ledger_balances(c)[C]["USDC"]
    assert await run_sync(store, lambda conn: against_snapshots(conn, snaps)) == (
        [
            Difference(
                "snapshot",
                C,
                "USDC",
                f"available {held[0]} locked {held[1]}",
                next(d.expected for d in found if d.check == "balance"),  # the tampered sum
                f"{entry['stream']}#{snaps[shard][0]}",
            )
        ],
        [],
    )
    bad = await dex_db_verify(store)
    assert bad.exit_code == 1
    assert C in bad.output and "USDC" in bad.output


@aio
async def test_verify_names_a_tampered_or_missing_candle(store: str) -> None:
    """The writer's 1-minute candles equal market data's builder over the stored trades;
    a candle row changed, or gone, fails verify naming its market and minute."""
    _c, svc = await traded(store, seed=17)
    await svc.stop()
    stored = await rows(store, candles_1m)
    assert stored and not await run_sync(store, verify)
    every = await rows(store, trades)
    for market in {t["market"] for t in every}:
        mine = sorted(
            (t for t in every if t["market"] == market), key=lambda t: (t["ts"], t["trade_id"])
        )
        built = cb.build((t["price"], t["size"], t["ts"]) for t in mine).series["1m"]
        assert sorted(
            tuple(r[c.name] for c in candles_1m.columns if c.name != "market")
            for r in stored
            if r["market"] == market
        ) == [(k.open_time, *k.row()[1:]) for k in built]

    row = max(stored, key=lambda r: r["trade_count"])
    key = (candles_1m.c.market == row["market"], candles_1m.c.open_time == row["open_time"])
    ms = row["open_time"] // 1_000_000

    def bump(conn: Connection) -> None:
        conn.execute(update(candles_1m).where(*key).values(high=row["high"] + 1))

    await run_sync(store, bump)
    [found] = await run_sync(store, verify)
    assert (found.check, found.account, found.asset) == ("candle", row["market"], "1m")
    assert f"({ms} ms)" in found.where and f"high {row['high']} " in found.expected
    assert f"high {row['high'] + 1} " in found.found
    bad = await dex_db_verify(store)
    assert bad.exit_code == 1 and row["market"] in bad.output and str(ms) in bad.output

    def gone(conn: Connection) -> None:
        conn.execute(delete(candles_1m).where(*key))

    await run_sync(store, gone)
    [found] = await run_sync(store, verify)
    assert (found.check, found.account, found.found) == ("candle", row["market"], "no candle")
    assert f"({ms} ms)" in found.where
    await run_sync(store, lambda conn: conn.execute(insert(candles_1m), [row]))
    assert (await dex_db_verify(store)).exit_code == 0


@aio
async def test_a_restart_and_a_stale_replica_write_nothing_twice(store: str) -> None:
    c, svc = await traded(store, seed=29)
    await svc.stop()
    before = await counts(store)
    assert all(before.values())
    # a restart reads everything again from its positions: nothing new, nothing twice
    again = service(c, (store, None))
    await again.start()
    try:
        await until(again, lambda: caught_up(again), "the restarted service to catch up")
        assert await counts(store) == before
        # a replica that believes nothing was stored applies everything again: refused whole
        stale = service(c, (store, None))
        stale.engine = stale._make_engine()
        stale.initialised = True
        got = await c.bus.read_many(dict.fromkeys(stale.streams, 0), limit=10**6)
        assert await stale.apply(got) == []
        await stale.engine.dispose()
        assert await counts(store) == before
        # more trading while the restarted service runs: applied once
        await random_trading(c, seed=31, n=40)
        await until(again, lambda: caught_up(again), "the new trades")
    finally:
        await again.stop()
    after = await counts(store)
    assert after["ledger_entries"] > before["ledger_entries"]
    await check_books(c, store)
    assert await run_sync(store, verify) == []
    assert (await dex_db_verify(store)).exit_code == 0


def test_verify_refuses_a_store_that_is_missing_or_behind(tmp_path: Any) -> None:
    missing = f"sqlite:///{tmp_path / 'none' / 'dex.sqlite3'}"
    got = run_verify(missing)
    assert got.exit_code == 1 and not (tmp_path / "none" / "dex.sqlite3").exists()
    behind = f"sqlite:///{tmp_path / 'old' / 'dex.sqlite3'}"
    asyncio.run(run_sync(behind, lambda conn: migrations.upgrade(conn, migrations.BASELINE)))
    got = run_verify(behind)
    assert got.exit_code == 1
    assert asyncio.run(run_sync(behind, migrations.current)) == migrations.BASELINE


async def verify_folder(data: Any) -> Result:
    """`dex db verify` in the embedded mode: the data folder's SQLite store and bus file."""
    env = {"DEX_DATABASE_URL": None, "DEX_REDIS_URL": None, "DEX_DATA_DIR": str(data)}
    return await asyncio.to_thread(CliRunner().invoke, main, ["db", "verify"], env=env)


@aio
async def test_verify_compares_the_data_folder_with_the_risk_snapshots(tmp_path: Any) -> None:
    """`dex up`'s data folder: the store against the risk shards' latest snapshots in the bus
    file: not compared while the bus is in use or while the store is behind a snapshot (a note
    says so), compared and equal once it caught up, and a tampered entry named."""
    data = tmp_path / "data"
    db = (f"sqlite:///{data / 'dex.sqlite3'}", None)
    bus = SqliteBus(data / "bus.sqlite3")
    c = Cluster(bus=bus, matching_shards=3)
    await c.start()
    svc = service(c, db)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "persistence to catch up")
    await svc.stop()
    await random_trading(c, seed=7, n=40)  # the store misses these
    for w in c.risk:
        await w.take_snapshot()
    in_use = await verify_folder(data)
    assert in_use.exit_code == 0, in_use.output
    assert "note: risk snapshots not compared" in in_use.output
    bus.close()
    behind = await verify_folder(data)
    assert behind.exit_code == 0, behind.output
    assert "behind the snapshot" in behind.output
    # dex up again: the shards recover from their snapshots, persistence catches up
    bus = SqliteBus(data / "bus.sqlite3")
    try:
        c = Cluster(bus=bus, matching_shards=3)
        await c.start()
        svc = service(c, db)
        await svc.start()
        await until(svc, lambda: caught_up(svc), "persistence to catch up after the restart")
        await svc.stop()
    finally:
        bus.close()
    ok = await verify_folder(data)
    assert ok.exit_code == 0, ok.output
    assert "note:" not in ok.output
    url = db[0]
    entry = next(e for e in await rows(url, ledger_entries) if e["account"] == B)

    def tamper(conn: Connection) -> None:
        conn.execute(
            update(ledger_entries)
            .where(
                ledger_entries.c.stream == entry["stream"],
                ledger_entries.c.log_seq == entry["log_seq"],
                ledger_entries.c.idx == entry["idx"],
                ledger_entries.c.line == entry["line"],
            )
            .values(delta=entry["delta"] + 1)
        )

    await run_sync(url, tamper)
    snaps = await read_snapshots_of(data)
    found, notes = await run_sync(url, lambda conn: against_snapshots(conn, snaps))
    assert notes == [] and [(d.check, d.account, d.asset) for d in found] == [
        ("snapshot", B, entry["asset"])
    ]
    bad = await verify_folder(data)
    assert bad.exit_code == 1
    assert "snapshot" in bad.output and B in bad.output


async def read_snapshots_of(data: Any) -> dict[int, Any]:
    bus = SqliteBus(data / "bus.sqlite3")
    try:
        return await read_snapshots(bus, [0, 1])
    finally:
        bus.close()
