"""Market data's candles reach back through persistence: a market-data service that began on a
trimmed log (restored from the matching snapshot, so it never saw the early trades) answers
the candles of every trade — persistence's before its boundary, its own from there — equal to
a naive computation from all the trades, none lost or counted twice (1m and 1h, the boundary
interval split between the two); with persistence unreachable it answers its own, marked
incomplete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from dex.bus import TrimmedError
from dex.core import events as me
from dex.marketdata.service import CandleHistory, MarketDataService
from dex.runtime.http import build_app
from dex.wire import layout
from tests.bus.contract import aio
from tests.persistence.test_candles import LOT, TICK, naive
from tests.services.inproc import ACCOUNTS, Cluster, place
from tests.services.reader_kit import ETH_USDC, caught_up, until
from tests.services.test_marketdata import service as md_service
from tests.services.test_persistence import service as store_service
from tests.services.test_persistence import sqlite_db

MINUTE = 60_000_000_000
DAY0 = 1_700_006_400_000_000_000  # ns, a UTC midnight


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def trade(c: Cluster, clock: Clock, at: int, price: int, size: int) -> None:
    """One trade of `size` lots at `price`, stamped `at`."""
    clock.now = at
    await c.send(ACCOUNTS[0], place(ACCOUNTS[0], "buy", price, size))
    await c.send(ACCOUNTS[1], place(ACCOUNTS[1], "sell", price, size))
    await c.pump()


def trades_of(events: list[Any]) -> list[tuple[int, int, int]]:
    return [(e.price, e.size, e.ts) for e in events if isinstance(e, me.Trade)]


@asynccontextmanager
async def client_of(name: str, svc: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(name, svc.health, svc.metrics, route_handlers=svc.route_handlers())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
        yield client


class Unreachable(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


@aio
async def test_a_late_market_data_answers_every_candle_through_persistence(
    tmp_path: Any,
) -> None:
    clock = Clock(DAY0)
    c = Cluster(matching_shards=1, clock_ns=clock)
    await c.start()
    await c.setup_markets()
    await c.fund()
    await c.pump()
    store = store_service(c, sqlite_db(tmp_path))
    await store.start()
    md: MarketDataService | None = None
    try:
        # phase 1, seen by persistence only: 55 min to ~62 min past midnight
        for k in range(10):
            await trade(c, clock, DAY0 + 55 * MINUTE + k * 40_000_000_000, 200_000 + k, 100 + k)
        stream = layout.me_log(0)
        early = trades_of(await c.log_events(stream))
        last = await c.bus.last(stream)
        await until(store, lambda: caught_up(store), "persistence to catch up")
        # the readers have read it all (market data too: it ran and went away), the shard
        # snapshots and trims: a new market data starts from the snapshot
        for reader in (
            layout.PERSISTENCE_READER,
            layout.MARKET_DATA_READER,
            *(r.tag for r in c.risk),
        ):
            await c.bus.commit_position(stream, reader, last)
        await c.me[0].take_snapshot()
        with pytest.raises(TrimmedError):
            await c.bus.read(stream, 0)
        # phase 2: the first trade in the minute (and the hour) of the last early one, then
        # every 4 minutes into the next hour
        t = early[-1][2] + 5_000_000_000
        assert t // MINUTE == early[-1][2] // MINUTE
        for k in range(20):
            await trade(c, clock, t + k * 4 * MINUTE, 199_990 - 3 * k, 50 + 7 * k)
        late: list[tuple[int, int, int]] = []
        for _, data in await c.bus.read(stream, last, limit=10**6):
            late += trades_of(c.me[0].events_of(data))
        assert late and late[-1][2] > DAY0 + 2 * 60 * MINUTE
        everything = early + late
        await until(store, lambda: caught_up(store), "persistence to catch up")

        async with client_of("persistence", store) as to_store:
            md = md_service(c, clock_ns=clock, history=CandleHistory("", client=to_store))
            await md.start()
            await until(md, lambda: caught_up(md), "market data to catch up")
            async with client_of("market-data", md) as client:
                for interval in ("1m", "1h"):
                    want = naive(everything, interval, TICK, LOT)
                    own = md.candles(ETH_USDC, interval, None, None, 1500)
                    assert own is not None and own != want
                    for params in (
                        {"interval": interval, "limit": 1500},
                        {"interval": interval, "start": DAY0 // 10**6, "limit": 1500},
                    ):
                        got = await client.get(f"/v1/markets/{ETH_USDC}/candles", params=params)
                        assert got.status_code == 200, got.text
                        body = got.json()
                        assert body["complete"] is True
                        assert body["candles"] == want, params
                    # pages of 2 from the start walk the same rows, across the boundary
                    paged: list[Any] = []
                    start = DAY0 // 10**6
                    while True:
                        params = {"interval": interval, "start": start, "limit": 2}
                        got = await client.get(f"/v1/markets/{ETH_USDC}/candles", params=params)
                        rows = got.json()["candles"]
                        if not rows:
                            break
                        paged += rows
                        start = rows[-1][0] + 1
                    assert paged == want
                    # the last 3, ending inside the history
                    end = want[1][0]
                    got = await client.get(
                        f"/v1/markets/{ETH_USDC}/candles",
                        params={"interval": interval, "end": end, "limit": 3},
                    )
                    assert got.json()["candles"] == [r for r in want if r[0] <= end][-3:]

            # persistence unreachable: its own candles from the boundary, marked incomplete
            await md.history.close()  # type: ignore[union-attr]
            md.history = CandleHistory(
                "", client=httpx.AsyncClient(transport=Unreachable(), base_url="http://x")
            )
            async with client_of("market-data", md) as client:
                got = await client.get(
                    f"/v1/markets/{ETH_USDC}/candles", params={"interval": "1m", "limit": 1500}
                )
                body = got.json()
                assert got.status_code == 200
                assert body["complete"] is False
                boundary = body["missing_before"]
                want = naive(everything, "1m", TICK, LOT)
                assert body["candles"] == [r for r in want if r[0] >= boundary]
                assert boundary > want[0][0]
    finally:
        if md is not None:
            await md.stop()
        await store.stop()
