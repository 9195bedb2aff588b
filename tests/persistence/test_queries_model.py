"""Every persistence list and lookup equals a naive computation over the raw log events, on
SQLite and PostgreSQL.

Hypothesis draws small trading programs (deposits, withdrawals that complete or fail, limit,
IOC, post-only and market orders on both sides of two markets, cancels, amends, clock jumps)
and the page sizes and time ranges of the queries. The programs run one after another on one
in-process cluster (a fake clock, so orders spread over several milliseconds and share some);
after each, persistence catches up and every route is read, page by page with limits of 1-3,
and compared with what the matching and risk logs say, decoded with `dex.wire.codec`:
orders (their final status, filled = the sum of their trades, price and size after amends),
fills (fee, fee asset, liquidity, notional), balances (the last available/locked a risk event
carried), ledger entries (summing to those balances), deposits, withdrawals and market
trades — same rows, same order (newest first), same decimal strings.

The examples are drawn up front (`programs`), as in test_candles: the store's pool belongs to
the test's loop and the cluster is built once."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dex.app.demo import DEMO_ASSETS, DEMO_MARKETS
from dex.core import events as me
from dex.core.enums import OrderType, Side, TimeInForce
from dex.risk import commands as rc
from dex.risk import events as re_
from dex.runtime.http import build_app
from dex.wire import codec, layout
from tests.bus.contract import aio
from tests.persistence.test_queries import every, ok, refused
from tests.services.inproc import ACCOUNTS, Cluster
from tests.services.reader_kit import caught_up, until
from tests.services.test_persistence import Database, database, service  # noqa: F401

MS = 1_000_000
T0 = 1_700_000_000_000 * MS
ACCTS = ACCOUNTS[:4]
SPECS = {s.market: s for s in DEMO_MARKETS}
DECIMALS = {a.symbol: a.decimals for a in DEMO_ASSETS}
MID = {"ETH-USDC": (200_000, 10, 1000), "BTC-USDC": (500_000, 10, 200)}  # price, step, lot


class Clock:
    """The shards' clock: 0.3 ms per reading, plus the jumps a program asks for."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 300_000
        return self.now


# ------------------------------------------------------------------ programs

Program = tuple[list[Any], int, tuple[int, int]]  # ops, page limit, time range (indices)


def draw_program(rnd: random.Random) -> Program:
    """A program from hypothesis's random source: its own value strategies start from the
    simplest values and repeat them (the same order placed ten times, nothing crossing)."""
    steps_: list[Any] = []
    acct = lambda: rnd.randrange(len(ACCTS))  # noqa: E731
    for _ in range(rnd.randint(10, 25)):
        kind = rnd.choice(["place"] * 6 + ["cancel", "amend", "deposit", "withdraw", "pump"])
        if kind == "place":
            how = rnd.choice(["gtc", "gtc", "ioc", "post", "market"])
            side = rnd.choice(["buy", "sell"])
            market = rnd.choice(sorted(SPECS))
            steps_.append((kind, acct(), market, side, rnd.randint(-3, 3), rnd.randint(1, 5), how))
        elif kind == "cancel":
            steps_.append((kind, acct(), rnd.randrange(30)))
        elif kind == "amend":
            price = rnd.choice([None, rnd.randint(-3, 3)])
            size = rnd.choice([None, rnd.randint(1, 6)])
            steps_.append((kind, acct(), rnd.randrange(30), price, size))
        elif kind == "deposit":
            steps_.append((kind, acct(), rnd.choice(sorted(DECIMALS)), rnd.randint(1, 10**9)))
        elif kind == "withdraw":
            outcome = rnd.choice(["complete", "fail", None])
            asset = rnd.choice(sorted(DECIMALS))
            steps_.append((kind, acct(), asset, rnd.randint(1, 10**6), outcome))
        else:
            steps_.append((kind, rnd.randint(0, 4)))
    return steps_, rnd.randint(1, 3), (rnd.randrange(100), rnd.randrange(100))


def programs(n: int) -> list[Program]:
    """`n` programs, the same every run (hypothesis, derandomized)."""
    out: list[Program] = []

    @settings(
        max_examples=n, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(st.randoms(use_true_random=False))
    def collect(rnd: random.Random) -> None:
        out.append(draw_program(rnd))

    collect()
    return out


async def run(
    c: Cluster,
    clock: Clock,
    k: int,
    steps: list[Any],
    placed: dict[str, list[tuple[str, str]]],
    seen: set[int],
) -> None:
    """Send program `k`'s commands, pumping between some. Kept across programs: `placed`,
    each account's orders (market, client order id); `seen`, the withdrawals ended or left."""
    outcomes: list[str | None] = []
    for i, op in enumerate(steps):
        kind, rest = op[0], op[1:]
        if kind == "pump":
            clock.now += rest[0] * MS
            await c.pump(2)
            continue
        a = ACCTS[rest[0]]
        if kind == "place":
            _, market, side, off, lots, how = rest
            mid, step, lot = MID[market]
            cid = f"p{k}-{i}"
            cmd = rc.Place(
                market=market,
                account=a,
                side=Side(side),
                type=OrderType.MARKET if how == "market" else OrderType.LIMIT,
                price=0 if how == "market" else mid + off * step,
                size=lots * lot,
                tif=TimeInForce.IOC if how in ("ioc", "market") else TimeInForce.GTC,
                post_only=how == "post",
                client_order_id=cid,
            )
            placed.setdefault(a, []).append((market, cid))
            await c.send(a, cmd)
        elif kind in ("cancel", "amend") and placed.get(a):
            market, cid = placed[a][rest[1] % len(placed[a])]
            if kind == "cancel":
                await c.send(a, rc.Cancel(market=market, account=a, client_order_id=cid))
            else:
                mid, step, lot = MID[market]
                price = 0 if rest[2] is None else mid + rest[2] * step
                size = 0 if rest[3] is None else rest[3] * lot
                if price or size:
                    amend = rc.Amend(
                        market=market, account=a, client_order_id=cid, price=price, size=size
                    )
                    await c.send(a, amend)
        elif kind == "deposit":
            _, asset, amount = rest
            await c.send(a, rc.Deposit(account=a, asset=asset, amount=amount, tx_id=f"t{k}-{i}"))
        elif kind == "withdraw":
            _, asset, amount, outcome = rest
            await c.send(a, rc.Withdraw(account=a, asset=asset, amount=amount))
            outcomes.append(outcome)
    await c.pump()
    # end this program's withdrawals as the chain watcher would (the outcomes in order)
    fresh = [
        ev
        for r in range(c.r_count)
        for ev in await c.log_events(layout.risk_log(r))
        if isinstance(ev, re_.WithdrawalRequested) and ev.withdrawal_id not in seen
    ]
    for n, (ev, outcome) in enumerate(zip(fresh, outcomes, strict=False)):
        seen.add(ev.withdrawal_id)
        if outcome == "complete":
            cmd: Any = rc.WithdrawalCompleted(withdrawal_id=ev.withdrawal_id, tx_id=f"w{k}-{n}")
        elif outcome == "fail":
            cmd = rc.WithdrawalFailed(withdrawal_id=ev.withdrawal_id, reason=f"r{k}-{n}")
        else:
            continue
        await c.send(ev.account, cmd)
    await c.pump()


# ------------------------------------------------------------------ the naive model


def units(n: int, digits: int) -> str:
    return f"{Decimal(n).scaleb(-digits):.{digits}f}"


def steps(n: int, step: str) -> str:
    digits = len(step.split(".")[1]) if "." in step else 0
    return f"{Decimal(n) * Decimal(step):.{digits}f}"


def ms(ns: int) -> int:
    return ns // MS


class Model:
    """What the routes should answer, computed from the raw events of every log."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}  # order_id -> row (with "_ts", "_acct")
        self.fills: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self.balances: dict[str, dict[str, tuple[int, int]]] = {}
        self.deposits: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self.withdrawals: dict[int, dict[str, Any]] = {}
        self.trades: dict[str, list[tuple[tuple[int, int], dict[str, Any]]]] = {}

    @classmethod
    async def of(cls, c: Cluster) -> Model:
        m = cls()
        for s in range(c.m_count):
            for _, data in await c.bus.read(layout.me_log(s), 0, limit=10**9):
                for item in codec.decode_match_events(data).items:
                    for ev in item.events:
                        m.match(ev)
        for r in range(c.r_count):
            for _, data in await c.bus.read(layout.risk_log(r), 0, limit=10**9):
                for item in codec.decode_risk_entry(data).items:
                    for ev in item.events:
                        m.risk(ev)
        return m

    def match(self, ev: Any) -> None:
        if isinstance(ev, me.Accepted):
            o, spec = ev.order, SPECS[ev.market]
            self.orders[ev.order_id] = {
                "order_id": ev.order_id,
                "client_order_id": o.client_order_id,
                "market": ev.market,
                "side": o.side.value,
                "type": o.type.value,
                "tif": o.tif.value,
                "price": steps(o.price, spec.tick_size) if o.price else None,
                "trigger_price": None,
                "size": o.size,
                "quote_size": None,
                "filled": 0,
                "status": "open",
                "reason": None,
                "created_at": ms(ev.ts),
                "updated_at": ms(ev.ts),
                "_ts": ev.ts,
                "_acct": o.account,
            }
        elif isinstance(ev, me.Rejected):
            self.orders[ev.order_id] = {
                "order_id": ev.order_id,
                "client_order_id": ev.client_order_id,
                "market": ev.market,
                "side": ev.side.value,
                "type": None,
                "tif": None,
                "price": None,
                "trigger_price": None,
                "size": None,
                "quote_size": None,
                "filled": 0,
                "status": "rejected",
                "reason": ev.code.value,
                "created_at": ms(ev.ts),
                "updated_at": ms(ev.ts),
                "_ts": ev.ts,
                "_acct": ev.account,
            }
        elif isinstance(ev, me.Trade):
            for oid in (ev.maker_order_id, ev.taker_order_id):
                self.orders[oid]["filled"] += ev.size
                self.orders[oid]["updated_at"] = ms(ev.ts)
            row = {
                "trade_id": ev.trade_id,
                "price": steps(ev.price, SPECS[ev.market].tick_size),
                "size": steps(ev.size, SPECS[ev.market].lot_size),
                "taker_side": ev.aggressor.value,
                "ts": ms(ev.ts),
            }
            self.trades.setdefault(ev.market, []).append(((ev.ts, ev.trade_id), row))
        elif isinstance(ev, me.Amended):
            row = self.orders[ev.order_id]
            row["price"] = steps(ev.price, SPECS[ev.market].tick_size)
            row["size"], row["updated_at"] = ev.size, ms(ev.ts)
        elif isinstance(ev, (me.Filled, me.Cancelled, me.Expired, me.Triggered)):
            row = self.orders[ev.order_id]
            row["updated_at"] = ms(ev.ts)
            if isinstance(ev, me.Filled):
                row["status"] = "filled"
            elif isinstance(ev, me.Cancelled):
                row["status"], row["reason"] = "cancelled", ev.reason.value
            elif isinstance(ev, me.Expired):
                row["status"] = "expired"

    def _bal(self, account: str, asset: str, available: int, locked: int) -> None:
        self.balances.setdefault(account, {})[asset] = (available, locked)

    def risk(self, ev: Any) -> None:
        if isinstance(
            ev,
            (
                re_.DepositCredited,
                re_.WithdrawalRequested,
                re_.WithdrawalCompleted,
                re_.WithdrawalFailed,
                re_.FundsReleased,
            ),
        ):
            self._bal(ev.account, ev.asset, ev.available, ev.locked)
        hold = isinstance(ev, re_.OrderAcceptedForMatching) or (
            isinstance(ev, re_.OrderCommandForwarded) and ev.hold_asset is not None
        )
        if hold:
            self._bal(ev.account, ev.hold_asset, ev.available, ev.locked)
        if isinstance(ev, re_.DepositCredited):
            row = {
                "tx_id": ev.tx_id,
                "log_index": ev.log_index,
                "asset": ev.asset,
                "amount": units(ev.amount, DECIMALS[ev.asset]),
                "ts": ms(ev.ts),
            }
            key = (ev.ts, ev.tx_id, ev.log_index)
            self.deposits.setdefault(ev.account, []).append((key, row))
        elif isinstance(ev, re_.WithdrawalRequested):
            self.withdrawals[ev.withdrawal_id] = {
                "withdrawal_id": ev.withdrawal_id,
                "asset": ev.asset,
                "amount": units(ev.amount, DECIMALS[ev.asset]),
                "status": "requested",
                "tx_id": None,
                "reason": None,
                "requested_at": ms(ev.ts),
                "updated_at": ms(ev.ts),
                "_ts": ev.ts,
                "_acct": ev.account,
            }
        elif isinstance(ev, (re_.WithdrawalCompleted, re_.WithdrawalFailed)):
            w = self.withdrawals[ev.withdrawal_id]
            w["updated_at"] = ms(ev.ts)
            if isinstance(ev, re_.WithdrawalCompleted):
                w["status"], w["tx_id"] = "completed", ev.tx_id
            else:
                w["status"], w["reason"] = "failed", ev.reason
        elif isinstance(ev, re_.TradeSettled):
            spec = SPECS[ev.market]
            notional = Decimal(ev.price) * Decimal(spec.tick_size)
            notional *= Decimal(ev.size) * Decimal(spec.lot_size)
            for liquidity, side in (("maker", ev.maker), ("taker", ev.taker)):
                if side is None:
                    continue
                received = spec.base if side.side is Side.BUY else spec.quote
                self._bal(side.account, spec.base, side.base_available, side.base_locked)
                self._bal(side.account, spec.quote, side.quote_available, side.quote_locked)
                row = {
                    "trade_id": ev.trade_id,
                    "order_id": side.order_id,
                    "market": ev.market,
                    "side": side.side.value,
                    "price": steps(ev.price, spec.tick_size),
                    "size": steps(ev.size, spec.lot_size),
                    "quote_size": f"{notional:.{DECIMALS[spec.quote]}f}",
                    "fee": units(side.fee, DECIMALS[received]),
                    "fee_asset": received,
                    "liquidity": liquidity,
                    "ts": ms(ev.ts),
                }
                key = (ev.ts, ev.trade_id, ev.market, liquidity)
                self.fills.setdefault(side.account, []).append((key, row))

    # ---- the answers, rendered and newest first

    def account_orders(self, account: str) -> list[dict[str, Any]]:
        mine = [o for o in self.orders.values() if o["_acct"] == account]
        mine.sort(key=lambda o: (o["_ts"], o["order_id"]), reverse=True)
        return [self.render_order(o) for o in mine]

    @staticmethod
    def render_order(o: dict[str, Any]) -> dict[str, Any]:
        lot = SPECS[o["market"]].lot_size
        out = {k: v for k, v in o.items() if not k.startswith("_")}
        out["size"] = steps(o["size"], lot) if o["size"] else None
        out["filled"] = steps(o["filled"], lot)
        return out

    def account_balances(self, account: str) -> list[dict[str, Any]]:
        got = self.balances.get(account, {})
        return [
            {
                "asset": asset,
                "available": units(got[asset][0], DECIMALS[asset]),
                "locked": units(got[asset][1], DECIMALS[asset]),
            }
            for asset in sorted(got)
        ]

    def account_withdrawals(self, account: str) -> list[dict[str, Any]]:
        mine = [w for w in self.withdrawals.values() if w["_acct"] == account]
        mine.sort(key=lambda w: (w["_ts"], w["withdrawal_id"]), reverse=True)
        return [{k: v for k, v in w.items() if not k.startswith("_")} for w in mine]


def newest_first(rows: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for _, row in sorted(rows, key=lambda kr: kr[0], reverse=True)]


# ------------------------------------------------------------------ the comparison


@asynccontextmanager
async def cluster_api(
    db: Database, clock: Clock
) -> AsyncIterator[tuple[Cluster, Any, httpx.AsyncClient]]:
    c = Cluster(matching_shards=2, risk_shards=2, clock_ns=clock)
    await c.start()
    svc = service(c, db)
    await svc.start()
    try:
        await c.setup_markets()
        fees = rc.SetFees(market="ETH-USDC", maker_bps=-2, taker_bps=10)
        await c.bus.append(layout.ADMIN_STREAM, [codec.encode(fees)])
        await c.fund()
        for i, a in enumerate(ACCTS):
            await c.send(a, rc.Deposit(account=a, asset="BTC", amount=10**8, tx_id=f"btc{i}"))
        await c.pump()
        app = build_app("persistence", svc.health, svc.metrics, route_handlers=svc.route_handlers())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://persistence") as client:
            yield c, svc, client
    finally:
        await svc.stop()


async def compare(
    client: httpx.AsyncClient, m: Model, limit: int, span: tuple[int, int], where: str
) -> None:
    for a in ACCTS:
        base = f"/v1/accounts/{a}"
        want = m.account_orders(a)
        got = await every(client, f"{base}/orders", "orders", limit=limit)
        assert got == want, (where, a, "orders")
        for status, names in (
            ("open", {"open", "untriggered", "pending"}),
            ("closed", {"filled", "cancelled", "expired", "rejected"}),
        ):
            got = await every(client, f"{base}/orders", "orders", limit=limit, status=status)
            assert got == [o for o in want if o["status"] in names], (where, a, status)
        for market in SPECS:
            got = await every(client, f"{base}/orders", "orders", limit=limit, market=market)
            assert got == [o for o in want if o["market"] == market], (where, a, market)
        times = sorted({o["created_at"] for o in want})
        if times:
            lo = times[span[0] % len(times)]
            hi = max(lo, times[span[1] % len(times)])
            got = await every(client, f"{base}/orders", "orders", limit=limit, start=lo, end=hi)
            assert got == [o for o in want if lo <= o["created_at"] < hi], (where, a, lo, hi)
            got = await every(
                client, f"{base}/orders", "orders", limit=limit, start=lo, status="open"
            )
            assert got == [o for o in want if lo <= o["created_at"] and o["status"] == "open"]
        for o in want:
            assert await ok(client, f"{base}/orders/{o['order_id']}") == o, (where, o)
            by_cid = await ok(client, f"{base}/orders/by-client-id/{o['client_order_id']}")
            assert by_cid == o, (where, o)
        other = [o for o in m.orders.values() if o["_acct"] != a][:1]
        for o in other:
            path = f"{base}/orders/{o['order_id']}"
            await refused(client, path, 404, "unknown_order", "order_id")

        fills = newest_first(m.fills.get(a, []))
        assert await every(client, f"{base}/fills", "fills", limit=limit) == fills, (where, a)
        for market in SPECS:
            got = await every(client, f"{base}/fills", "fills", limit=limit, market=market)
            assert got == [f for f in fills if f["market"] == market], (where, a, market)
        if fills:
            lo = fills[-1 - span[0] % len(fills)]["ts"]
            got = await every(client, f"{base}/fills", "fills", limit=limit, start=lo, end=lo + 1)
            assert got == [f for f in fills if f["ts"] == lo], (where, a, lo)

        balances = m.account_balances(a)
        assert (await ok(client, f"{base}/balances"))["balances"] == balances, (where, a)
        entries = await every(client, f"{base}/ledger", "entries", limit=limit + 4)
        total: dict[tuple[str, str], Decimal] = {}
        for e in entries:
            key = (e["asset"], e["balance"])
            total[key] = total.get(key, Decimal(0)) + Decimal(e["amount"])
        for b in balances:
            for bucket in ("available", "locked"):
                assert total.get((b["asset"], bucket), 0) == Decimal(b[bucket]), (where, a, b)
        assert len({(e["ref"], e["asset"], e["balance"], e["amount"]) for e in entries}) == len(
            entries
        )
        assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), reverse=True)

        deposits = newest_first(m.deposits.get(a, []))
        got = await every(client, f"{base}/deposits", "deposits", limit=limit)
        assert got == deposits, (where, a)
        got = await every(client, f"{base}/withdrawals", "withdrawals", limit=limit)
        assert got == m.account_withdrawals(a), (where, a)

    for market in SPECS:
        trades = newest_first(m.trades.get(market, []))
        got = await every(client, f"/v1/markets/{market}/trades", "trades", limit=limit)
        assert got == trades, (where, market)
        if trades:
            lo, hi = trades[-1]["ts"], trades[0]["ts"]
            mid = lo + (hi - lo) * (span[1] % 100) // 100
            got = await every(
                client, f"/v1/markets/{market}/trades", "trades", limit=limit, start=mid
            )
            assert got == [t for t in trades if t["ts"] >= mid], (where, market, mid)


@aio
async def test_every_route_equals_a_naive_computation_over_the_logs(
    database: Database,  # noqa: F811
) -> None:
    clock = Clock()
    placed: dict[str, list[tuple[str, str]]] = {}
    seen: set[int] = set()
    async with cluster_api(database, clock) as (c, svc, client):
        for k, (steps_, limit, span) in enumerate(programs(8)):
            await run(c, clock, k, steps_, placed, seen)
            await until(svc, lambda: caught_up(svc), "persistence to catch up")
            model = await Model.of(c)
            await compare(client, model, limit, span, f"after program {k}: {steps_}")
        assert model.trades and any(model.fills.values())
        statuses = {o["status"] for o in model.orders.values()}
        assert {"open", "filled", "cancelled"} <= statuses, statuses
        assert len(model.orders) >= 30 and sum(map(len, model.trades.values())) >= 3
        assert {w["status"] for w in model.withdrawals.values()} == {
            "requested",
            "completed",
            "failed",
        }
