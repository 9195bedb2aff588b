"""Each operator setting reaches the object that uses it: every service is built by its unit
builder (`dex.app.units`) from settings loaded from `DEX_*` variables, as `dex serve` does, and
shows the value set (its wait, cache size, timeout or limit), not the default."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from dex.app.demo import add_demo_markets
from dex.app.units import (
    Unit,
    gateway_unit,
    market_data_unit,
    matching_unit,
    persistence_unit,
    risk_unit,
)
from dex.bus import Bus, MemoryBus
from dex.runtime.http import ApiError, build_app
from dex.runtime.settings import DEFAULTS, Settings, load_settings
from dex.services.replica import ShardReplica
from dex.services.shard import ShardWorker
from dex.wire.layout import ADMIN_STREAM
from tests.bus.contract import aio
from tests.services.inproc import ACCOUNTS, Cluster
from tests.services.reader_kit import ETH_USDC, caught_up, rich_trading, until

A = ACCOUNTS[0]
TOKEN = "t0ken"


@aio
async def test_the_gateway_waits_keeps_outcomes_and_proxies_as_set(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "DEX_DATA_DIR": str(tmp_path),
            "DEX_GATEWAY_WAIT_MS": "200",
            "DEX_GATEWAY_OUTCOMES_KEPT": "3",
            "DEX_GATEWAY_PROXY_TIMEOUT_MS": "1500",
            "DEX_MARKET_DATA_RECENT_TRADES": "20",
            "DEX_MARKET_DATA_URL": "http://127.0.0.1:9",  # nothing listens: a 503
        }
    )
    bus = MemoryBus()
    await add_demo_markets(bus)
    unit = gateway_unit(bus, settings)
    gw = unit.extra["gateway"]
    gw.pos[ADMIN_STREAM] = 0
    await gw._catch_up_admin()  # the markets: a read names a known one before it is proxied
    try:
        assert (gw.wait, gw.outcomes_kept, gw.max_trades) == (0.2, 3, 20)
        assert gw._http.timeout == httpx.Timeout(1.5)

        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            await gw._wait(gw.requests, gw.request_results, ("dex:{risk:0}:in", 1))
        assert time.monotonic() - started < 5.0
        assert caught.value.status == 504
        assert "no outcome within 0.2 s" in caught.value.message

        app = build_app("gateway", unit.health, unit.metrics, route_handlers=unit.routes)
        async with AsyncTestClient(app=app) as client:
            got = await client.get(f"/v1/markets/{ETH_USDC}/trades", params={"limit": 21})
            assert got.status_code == 400
            assert got.json()["error"]["code"] == "invalid_request"
            got = await client.get(f"/v1/markets/{ETH_USDC}/trades", params={"limit": 20})
            assert got.status_code == 503  # within the limit: asked of market data
    finally:
        await gw.stop()


def test_the_gateway_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    unit = gateway_unit(MemoryBus(), load_settings({"DEX_DATA_DIR": str(tmp_path)}))
    gw = unit.extra["gateway"]
    assert gw.wait == DEFAULTS.gateway_wait_ms / 1000 == 10.0
    assert gw.outcomes_kept == DEFAULTS.gateway_outcomes_kept
    assert gw._http.timeout == httpx.Timeout(DEFAULTS.gateway_proxy_timeout_ms / 1000)


@aio
async def test_market_data_keeps_trades_and_serves_levels_as_set() -> None:
    settings = load_settings(
        {
            "DEX_MATCHING_SHARDS": "3",
            "DEX_MARKET_DATA_RECENT_TRADES": "2",
            "DEX_MARKET_DATA_MAX_LEVELS": "3",
        }
    )
    c = Cluster(matching_shards=3)
    await c.start()
    unit = market_data_unit(c.bus, settings)
    svc = unit.extra["service"]
    assert (svc.recent_trades, svc.max_levels) == (2, 3)
    await svc.start()
    try:
        await rich_trading(c)
        await until(svc, lambda: caught_up(svc), "market data to catch up")
        book = svc.books[ETH_USDC]
        assert book.trades.maxlen == 2 and len(book.trades) == 2  # rich trading makes more
        app = build_app("market-data", unit.health, unit.metrics, route_handlers=unit.routes)
        async with AsyncTestClient(app=app) as client:
            got = await client.get(f"/v1/markets/{ETH_USDC}/trades")
            assert got.status_code == 200 and len(got.json()["trades"]) == 2
            got = await client.get(f"/v1/markets/{ETH_USDC}/trades", params={"limit": 3})
            assert got.status_code == 400
            got = await client.get(f"/v1/markets/{ETH_USDC}/depth", params={"levels": 3})
            assert got.status_code == 200
            got = await client.get(f"/v1/markets/{ETH_USDC}/depth", params={"levels": 4})
            assert got.status_code == 400
    finally:
        await svc.stop()


@aio
async def test_persistence_limits_queries_and_waits_for_sqlite_locks_as_set(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {
            "DEX_DATA_DIR": str(tmp_path),
            "DEX_PERSISTENCE_MAX_LIMIT": "5",
            "DEX_SQLITE_BUSY_TIMEOUT_MS": "1234",
        }
    )
    unit = persistence_unit(MemoryBus(), settings)
    svc = unit.extra["service"]
    assert (svc.max_limit, svc.sqlite_busy_timeout) == (5, 1.234)
    await svc.start()
    try:
        async with svc.engine.connect() as conn:
            got = await conn.exec_driver_sql("PRAGMA busy_timeout")
            assert got.scalar() == 1234
        app = build_app("persistence", unit.health, unit.metrics, route_handlers=unit.routes)
        async with AsyncTestClient(app=app) as client:
            got = await client.get(f"/v1/accounts/{A}/orders", params={"limit": 5})
            assert got.status_code == 200
            got = await client.get(f"/v1/accounts/{A}/orders", params={"limit": 6})
            assert got.status_code == 400
    finally:
        await svc.stop()


@aio
async def test_an_admin_credit_waits_for_risk_as_set() -> None:
    settings = load_settings({"DEX_ADMIN_CREDIT_WAIT_MS": "200", "DEX_ADMIN_TOKEN": TOKEN})
    c = Cluster()  # its shards are never stepped: risk never answers
    await c.setup_markets()
    unit = risk_unit(c.bus, settings)
    app = build_app(
        "risk-engine", unit.health, unit.metrics, route_handlers=unit.routes, admin_token=TOKEN
    )
    started = time.monotonic()
    async with AsyncTestClient(app=app) as client:
        got = await client.post(
            f"/admin/accounts/{A}/credit",
            json={"asset": "USDC", "amount": "1"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert time.monotonic() - started < 5.0
    assert got.status_code == 504
    assert got.json()["error"]["message"].startswith("no answer from risk within 0.2 s")


@pytest.mark.parametrize("builder", [matching_unit, risk_unit])
def test_shard_workers_give_a_snapshot_child_the_time_set(
    builder: Callable[[Bus, Settings], Unit],
) -> None:
    def worker(env: dict[str, str]) -> ShardWorker:
        replica: ShardReplica = builder(MemoryBus(), load_settings(env)).extra["replica"]
        return replica.make(0)

    assert worker({"DEX_SNAPSHOT_CHILD_TIMEOUT_MS": "1500"}).snapshot_child_timeout == 1.5
    default = DEFAULTS.snapshot_child_timeout_ms / 1000
    assert worker({}).snapshot_child_timeout == default == 600.0
