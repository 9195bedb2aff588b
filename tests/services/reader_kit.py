"""Shared pieces of the reader tests (persistence, market data): traffic that exercises every
kind of order event, a logger that records, waiting on a reader without sleeping, and the
shards' own state to compare with."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from dex.core import events as me
from dex.core.enums import STP, OrderType, Side, TimeInForce
from dex.risk import commands as rc
from dex.services.reader import LogReader
from dex.wire import codec, layout
from tests.services.inproc import ACCOUNTS, Cluster, place, trading

A, B, C, D, E, F = ACCOUNTS[:6]
ETH_USDC = "ETH-USDC"
BTC_USDC = "BTC-USDC"


class RecordingLog:
    """A structlog-like logger that keeps `(level, event, fields)`."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _at(self, level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return record

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level not in ("debug", "info", "warning", "error"):
            raise AttributeError(level)
        return self._at(level)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.records if name == event]


async def until(reader: LogReader, pred: Callable[[], Any], what: str, timeout: float = 15.0):
    """Wait, pass after pass of the reader's loop, until `pred()` (maybe async) holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = pred()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}")
        if not reader.running:
            raise AssertionError(
                f"waiting for {what}: the reader stopped ({reader.stopped_reason})"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.progressed(), left)


async def caught_up(reader: LogReader) -> bool:
    for stream in reader.streams:
        if reader.pos[stream] != await reader.bus.last(stream):
            return False
    return True


async def rich_trading(c: Cluster) -> None:
    """Markets, fees (with a maker rebate), funds, then crossing limit orders, an iceberg taken
    across a refill and then cut, amends (move and cut), a cancel, a post-only rejection, an
    IOC, a market order, a stop-limit that triggers and rests, and some BTC trades."""
    await c.setup_markets()
    fees = rc.SetFees(market=ETH_USDC, maker_bps=-2, taker_bps=10)
    await c.bus.append(layout.ADMIN_STREAM, [codec.encode(fees)])
    await c.fund()
    await c.pump()
    await trading(c)
    await c.send(A, place(A, "sell", 200_010, 5000, display_size=700, client_order_id="ice"))
    await c.send(C, place(C, "buy", 199_000, 2000, client_order_id="amend-me"))
    await c.send(D, place(D, "sell", 201_500, 800, client_order_id="cancel-me"))
    await c.pump()
    await c.send(B, place(B, "buy", 200_010, 1000, client_order_id="takes-ice"))
    await c.send(C, rc.Amend(market=ETH_USDC, account=C, client_order_id="amend-me", price=199_100))
    await c.send(D, rc.Cancel(market=ETH_USDC, account=D, client_order_id="cancel-me"))
    await c.send(E, place(E, "buy", 202_000, 100, post_only=True, client_order_id="po"))
    await c.send(E, place(E, "buy", 200_010, 200, tif=TimeInForce.IOC, stp=STP.NONE))
    await c.pump()
    await c.send(C, rc.Amend(market=ETH_USDC, account=C, client_order_id="amend-me", size=1500))
    stop = rc.Place(
        market=ETH_USDC,
        account=E,
        side=Side.SELL,
        type=OrderType.STOP_LIMIT,
        trigger_price=199_900,
        price=199_050,
        size=2600,
        client_order_id="stop",
    )
    await c.send(E, stop)
    await c.pump()
    market_buy = rc.Place(
        market=ETH_USDC,
        account=F,
        side=Side.BUY,
        type=OrderType.MARKET,
        size=300,
        tif=TimeInForce.IOC,
        stp=STP.NONE,
    )
    await c.send(F, market_buy)
    await c.send(F, place(F, "sell", 199_100, 20_000, client_order_id="sweep", stp=STP.NONE))
    await c.pump()
    # the iceberg, part of its visible slice taken, is cut in place: it keeps that slice
    await c.send(A, rc.Amend(market=ETH_USDC, account=A, client_order_id="ice", size=4000))
    await c.pump()
    for i, acct in enumerate((A, C)):
        deposit = rc.Deposit(account=acct, asset="BTC", amount=10**8, tx_id=f"faucet:{900 + i}")
        await c.send(acct, deposit)
    await c.pump()
    for i, (acct, side, price) in enumerate(
        [(A, "sell", 500_000), (B, "buy", 500_000), (C, "sell", 500_100), (D, "buy", 500_200)]
    ):
        cmd = rc.Place(
            market=BTC_USDC,
            account=acct,
            side=Side(side),
            type=OrderType.LIMIT,
            price=price,
            size=2000 + 100 * i,
        )
        await c.send(acct, cmd)
    await c.pump()


async def match_events(c: Cluster) -> list[me.Event]:
    out: list[me.Event] = []
    for m in range(c.m_count):
        out += await c.log_events(layout.me_log(m))
    return out


def ledger_balances(c: Cluster) -> dict[str, dict[str, tuple[int, int]]]:
    """Every non-zero balance the risk ledgers hold, fee accounts as `fee:<r>`."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for r, w in enumerate(c.risk):
        for addr, acct in w.ledger.accounts.items():
            for asset, cell in acct.bal.items():
                if cell[0] or cell[1]:
                    out.setdefault(addr, {})[asset] = (cell[0], cell[1])
        for asset, amount in w.ledger.fees.items():
            if amount:
                out.setdefault(f"fee:{r}", {})[asset] = (amount, 0)
    return out


def engine_depth(c: Cluster, market: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(bids, asks) best first, each level's visible size, as the engine holds them."""
    view = c.me[layout.shard_for(market, c.m_count)].engine.view(market)
    bids = [(lv.price, sum(o.visible for o in lv.orders)) for lv in view.bids]
    asks = [(lv.price, sum(o.visible for o in lv.orders)) for lv in view.asks]
    return [x for x in bids if x[1]], [x for x in asks if x[1]]
