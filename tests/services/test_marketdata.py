"""The market-data service against the real shard writers on a MemoryBus: its L2 books equal
the engines' visible sizes level by level (icebergs, amends, stops, cancels), trades and
tickers and candles match the logs, a restart after the logs were trimmed rebuilds from the matching
snapshots, bad entries are skipped and counted, a trimmed log without a snapshot stops it."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from dex.bus import MemoryBus, TrimmedError
from dex.core import events as me
from dex.core.numbers import DAY_NS
from dex.gateway.routes import route_handlers
from dex.gateway.service import Gateway
from dex.marketdata.service import MarketDataService
from dex.risk import commands as rc
from dex.runtime.health import Health
from dex.runtime.http import build_app
from dex.runtime.metrics import ServiceMetrics
from dex.services.reader import INPUT
from dex.wire import layout
from tests.bus.contract import aio
from tests.services.inproc import ACCOUNTS, Cluster, place
from tests.services.reader_kit import (
    BTC_USDC,
    ETH_USDC,
    RecordingLog,
    caught_up,
    engine_depth,
    match_events,
    rich_trading,
    until,
)

MARKETS = (ETH_USDC, BTC_USDC)


def service(c: Cluster, **kw: Any) -> MarketDataService:
    metrics = ServiceMetrics("market-data")
    health = Health(metrics)
    health.started = True
    return MarketDataService(
        c.bus,
        risk_shards=c.r_count,
        matching_shards=c.m_count,
        health=health,
        metrics=metrics,
        log=RecordingLog(),
        **kw,
    )


def metric(svc: MarketDataService, name: str, **labels: str) -> float:
    got = svc.metrics.registry.get_sample_value(f"dex_market_data_{name}", labels)
    return 0.0 if got is None else float(got)


def md_depth(svc: MarketDataService, market: str) -> tuple[list[Any], list[Any]]:
    got = svc.depth(market, 10**6)
    assert got is not None
    return (
        [(x["price_ticks"], x["size_lots"]) for x in got["bids"]],
        [(x["price_ticks"], x["size_lots"]) for x in got["asks"]],
    )


def dec(n: int, step: Decimal) -> str:
    """`n` steps as a decimal string with the step's decimals (computed apart from the service)."""
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return f"{Decimal(n) * step:.{max(0, -exponent)}f}"


def steps(c: Cluster, market: str) -> tuple[Decimal, Decimal]:
    """(tick, lot) of a market as the engine holds it."""
    params = c.me[layout.shard_for(market, c.m_count)].engine.markets[market].params
    return params.tick, params.lot


async def all_trades(c: Cluster, after: dict[str, int] | None = None) -> list[me.Trade]:
    if after is None:
        evs = await match_events(c)
    else:
        evs = []
        for stream, pos in after.items():
            for _, data in await c.bus.read(stream, pos, limit=10**6):
                evs += c.me[0].events_of(data)
    return [e for e in evs if isinstance(e, me.Trade)]


async def check_against_engines(
    svc: MarketDataService, c: Cluster, trades: list[me.Trade] | None = None
) -> None:
    if trades is None:
        trades = await all_trades(c)
    for market in MARKETS:
        bids, asks = engine_depth(c, market)
        assert md_depth(svc, market) == (bids, asks), market
        tick, lot = steps(c, market)
        book = svc.book(market, 10**6)
        assert book is not None
        assert book["bids"] == [[dec(p, tick), dec(n, lot)] for p, n in bids]
        assert book["asks"] == [[dec(p, tick), dec(n, lot)] for p, n in asks]
        view = c.me[layout.shard_for(market, c.m_count)].engine.view(market)
        assert book["seq"] == c.me[layout.shard_for(market, c.m_count)].engine.markets[market].seq
        mine = [t for t in trades if t.market == market]
        listed = svc.trades(market, 1000)
        assert listed == [
            {
                "trade_id": t.trade_id,
                "price": dec(t.price, tick),
                "size": dec(t.size, lot),
                "taker_side": str(t.aggressor),
                "time_ms": t.ts // 10**6,
            }
            for t in reversed(mine[-1000:])
        ]
        ticker = svc.ticker(market)
        assert ticker is not None
        assert ticker["last"] == (dec(view.last_price, tick) if view.last_price else None)
        assert ticker["best_bid"] == (dec(bids[0][0], tick) if bids else None)
        assert ticker["best_bid_size"] == (dec(bids[0][1], lot) if bids else None)
        assert ticker["best_ask"] == (dec(asks[0][0], tick) if asks else None)
        assert ticker["best_ask_size"] == (dec(asks[0][1], lot) if asks else None)
        assert ticker["base_volume"] == dec(sum(t.size for t in mine), lot)
        assert ticker["quote_volume"] == dec(sum(t.price * t.size for t in mine), tick * lot)
        assert ticker["trades"] == len(mine)
        prices = [t.price for t in mine]
        assert ticker["high"] == (dec(max(prices), tick) if prices else None)
        assert ticker["low"] == (dec(min(prices), tick) if prices else None)
        assert ticker["open"] == (dec(prices[0], tick) if prices else None)
        assert ticker["status"] == str(view.status)
        # one candle per interval that saw a trade, holding every trade (the other candle
        # figures are checked against a naive computation in tests/marketdata)
        for interval, iv in (("1m", 60_000_000_000), ("1d", DAY_NS)):
            rows = svc.candles(market, interval)
            assert rows is not None and len(rows) == len({t.ts // iv for t in mine})
            assert [r[0] for r in rows] == sorted({t.ts // iv * iv // 10**6 for t in mine})
            assert sum(r[7] for r in rows) == len(mine)
            if mine:
                assert rows[-1][4] == dec(prices[-1], tick)


@aio
async def test_books_trades_and_tickers_match_the_engines() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c)
    await svc.start()
    try:
        await rich_trading(c)
        await until(svc, lambda: caught_up(svc), "market data to catch up")
        await check_against_engines(svc, c)
        assert svc.health.ready
        # the iceberg shows only its visible part; the triggered stop rests
        _, asks = md_depth(svc, ETH_USDC)
        assert (200_010, 222) in asks and (199_050, 2600) in asks
        # committed: just below the oldest trade kept, or everything on a log without trades
        for m, stream in enumerate(svc.streams):
            committed = (await c.bus.positions(stream)).get(layout.MARKET_DATA_READER, 0)
            assert committed == svc.commit_floor(stream)
            if m == 2:
                assert committed == await c.bus.last(stream)
            else:
                assert 0 < committed < await c.bus.last(stream)
        assert metric(svc, "trades_total", market=ETH_USDC) == len(svc.trades(ETH_USDC, 1000) or [])
    finally:
        await svc.stop()


@aio
async def test_random_traffic_book_equal_after_every_batch() -> None:
    rng = random.Random(20261126)
    c = Cluster(matching_shards=3)
    await c.start()
    await c.setup_markets()
    await c.fund()
    await c.pump()
    svc = service(c)
    await svc.start()
    placed: list[tuple[str, str]] = []  # (account, client order id)
    for i in range(400):
        acct = rng.choice(ACCOUNTS)
        roll = rng.random()
        if placed and roll < 0.15:
            who, cid = rng.choice(placed)
            await c.send(who, rc.Cancel(market=ETH_USDC, account=who, client_order_id=cid))
        elif placed and roll < 0.3:
            who, cid = rng.choice(placed)
            change: dict[str, int] = rng.choice(
                [
                    {"price": 200_000 + rng.randint(-40, 40)},
                    {"size": rng.randint(100, 3000)},
                    {"price": 200_000 + rng.randint(-40, 40), "size": rng.randint(100, 3000)},
                ]
            )
            await c.send(who, rc.Amend(market=ETH_USDC, account=who, client_order_id=cid, **change))
        else:
            side = rng.choice(["buy", "sell"])
            size = rng.randint(100, 3000)
            extra: dict[str, Any] = {"client_order_id": f"r{i}"}
            if rng.random() < 0.35:
                extra["display_size"] = rng.randint(20, min(size, 400))
            price = 200_000 + rng.randint(-40, 40)
            await c.send(acct, place(acct, side, price, size, **extra))
            placed.append((acct, f"r{i}"))
        if i % 5 == 4:
            await c.pump()
            await until(svc, lambda: caught_up(svc), "market data to catch up")
            assert md_depth(svc, ETH_USDC) == engine_depth(c, ETH_USDC), f"after command {i}"
    await c.pump()
    await until(svc, lambda: caught_up(svc), "market data to catch up")
    await check_against_engines(svc, c)
    kinds = {type(e).__name__ for e in await match_events(c)}
    assert {"Trade", "Amended", "Cancelled", "Filled"} <= kinds
    await svc.stop()


@aio
async def test_restart_after_trim_rebuilds_from_the_matching_snapshots() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "market data to catch up")
    before = {m: (svc.book(m, 100), svc.trades(m, 1000), svc.ticker(m)) for m in MARKETS}
    candles_before = {(m, iv): svc.candles(m, iv) for m in MARKETS for iv in ("1m", "4h", "1d")}
    await svc.stop()
    trades = await all_trades(c)
    lasts = {stream: await c.bus.last(stream) for stream in svc.streams}
    for m, w in enumerate(c.me):
        stream = layout.me_log(m)
        # every other reader has read everything (the shards record it at most every 50 ms)
        await c.bus.commit_position(stream, layout.PERSISTENCE_READER, lasts[stream])
        for r in c.risk:
            assert r.pos[stream] == lasts[stream]
            await c.bus.commit_position(stream, r.tag, lasts[stream])
        await w.take_snapshot()  # and trims below what every reader still needs
    with pytest.raises(TrimmedError):
        await c.bus.read(layout.me_log(0), 0)  # the market was added in a trimmed entry
    again = service(c)
    await again.start()
    await until(again, lambda: caught_up(again), "the restarted service to catch up")
    after = {m: (again.book(m, 100), again.trades(m, 1000), again.ticker(m)) for m in MARKETS}
    assert after == before
    assert {k: again.candles(*k) for k in candles_before} == candles_before
    assert again.log.named("bootstrapped")  # type: ignore[attr-defined]
    # and it goes on from there
    await c.send(ACCOUNTS[0], place(ACCOUNTS[0], "buy", 200_000, 700, display_size=100))
    await c.send(ACCOUNTS[1], place(ACCOUNTS[1], "sell", 199_050, 900))
    await c.pump()
    await until(again, lambda: caught_up(again), "the restarted service to catch up")
    await check_against_engines(again, c, trades + await all_trades(c, lasts))
    await again.stop()


@aio
async def test_trimmed_log_without_snapshot_makes_it_not_ready() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    await rich_trading(c)
    await c.bus.trim(layout.me_log(0), 3)
    svc = service(c)
    await svc.start()
    await until(svc, lambda: not svc.running, "the reader to stop")
    assert not svc.health.ready
    assert "trimmed" in svc.health.reasons()[INPUT]
    assert svc.pos[layout.me_log(0)] == 0
    assert svc.depth(ETH_USDC) is None
    await svc.stop()


@aio
async def test_bad_entry_is_logged_counted_and_skipped() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "market data to catch up")
    before = {m: (svc.depth(m, 100), svc.trades(m, 1000)) for m in MARKETS}
    stream = layout.me_log(2)
    seq = await c.bus.append(stream, [b"\xc1"])
    await until(svc, lambda: svc.pos[stream] == seq, "the bad entry to be passed")
    assert metric(svc, "bad_entries_total", stream=stream) == 1
    [logged] = svc.log.named("bad_entry")  # type: ignore[attr-defined]
    assert (logged["stream"], logged["log_seq"]) == (stream, seq)
    assert {m: (svc.depth(m, 100), svc.trades(m, 1000)) for m in MARKETS} == before
    assert svc.health.ready
    await svc.stop()


@aio
async def test_ticker_counts_only_the_last_24_hours() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    now = [0]
    svc = service(c, clock_ns=lambda: now[0])
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "market data to catch up")
    trades = [e for e in await match_events(c) if isinstance(e, me.Trade) and e.market == ETH_USDC]
    now[0] = trades[-1].ts
    ticker = svc.ticker(ETH_USDC)
    assert ticker is not None and ticker["trades"] == len(trades)
    now[0] = trades[-1].ts + DAY_NS + 2 * 60 * 10**9
    ticker = svc.ticker(ETH_USDC)
    assert ticker is not None
    assert (ticker["trades"], ticker["base_volume"], ticker["high"], ticker["change"]) == (
        0,
        "0.0000",
        None,
        None,
    )
    tick, _ = steps(c, ETH_USDC)
    assert ticker["last"] == dec(trades[-1].price, tick)
    assert len(svc.trades(ETH_USDC, 1000) or []) == len(trades)  # the list is by count
    await svc.stop()


@aio
async def test_http_api() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "market data to catch up")
    app = build_app("market-data", svc.health, svc.metrics, route_handlers=svc.route_handlers())
    bids, asks = engine_depth(c, ETH_USDC)
    async with AsyncTestClient(app=app) as client:
        got = await client.get(f"/v1/markets/{ETH_USDC}/depth", params={"levels": 2})
        assert got.status_code == 200
        body = got.json()
        assert [(x["price_ticks"], x["size_lots"]) for x in body["asks"]] == asks[:2]
        assert [(x["price_ticks"], x["size_lots"]) for x in body["bids"]] == bids[:2]
        got = await client.get(f"/v1/markets/{ETH_USDC}/trades", params={"limit": 3})
        assert got.status_code == 200
        assert len(got.json()["trades"]) == 3
        got = await client.get(f"/v1/markets/{BTC_USDC}/ticker")
        assert got.status_code == 200
        assert got.json()["market"] == BTC_USDC
        for path in ("depth", "book", "trades", "ticker", "candles"):
            got = await client.get(f"/v1/markets/DOGE-USDC/{path}")
            assert got.status_code == 404
            assert got.json()["error"]["code"] == "unknown_market"
        got = await client.get(f"/v1/markets/{ETH_USDC}/depth", params={"levels": 0})
        assert got.status_code == 400
        assert got.json()["error"]["code"] == "invalid_request"

        tick, lot = steps(c, ETH_USDC)
        got = await client.get(f"/v1/markets/{ETH_USDC}/book", params={"depth": 2})
        assert got.status_code == 200
        body = got.json()
        assert set(body) == {"market", "seq", "bids", "asks", "checksum"}
        assert body["market"] == ETH_USDC and body["seq"] > 0
        assert body["bids"] == [[dec(p, tick), dec(n, lot)] for p, n in bids[:2]]
        assert body["asks"] == [[dec(p, tick), dec(n, lot)] for p, n in asks[:2]]
        full = (await client.get(f"/v1/markets/{ETH_USDC}/book")).json()
        assert full["checksum"] == body["checksum"]  # the top 25 levels, whatever the depth
        assert full["bids"] == [[dec(p, tick), dec(n, lot)] for p, n in bids[:100]]

        got = await client.get("/v1/tickers")
        assert got.status_code == 200
        assert [t["market"] for t in got.json()] == sorted(MARKETS)
        assert got.json()[1] == (await client.get(f"/v1/markets/{ETH_USDC}/ticker")).json()

        got = await client.get(f"/v1/markets/{ETH_USDC}/candles", params={"interval": "5m"})
        assert got.status_code == 200
        body = got.json()
        assert (body["market"], body["interval"]) == (ETH_USDC, "5m")
        assert body["candles"] and all(len(row) == 8 for row in body["candles"])
        open_ms = body["candles"][0][0]
        assert open_ms % 300_000 == 0
        for params in (
            {"start": open_ms, "end": open_ms},
            {"start": open_ms},
            {"end": open_ms, "limit": 1},
        ):
            params["interval"] = "5m"
            got = await client.get(f"/v1/markets/{ETH_USDC}/candles", params=params)
            assert got.status_code == 200, params
            assert got.json()["candles"][0][0] == open_ms, params
        got = await client.get(
            f"/v1/markets/{ETH_USDC}/candles", params={"interval": "5m", "end": open_ms - 1}
        )
        assert got.json()["candles"] == []

        bad: list[tuple[str, dict[str, Any], str]] = [
            ("book", {"depth": 0}, "depth"),
            ("book", {"depth": svc.max_levels + 1}, "depth"),
            ("book", {"depth": "x"}, "depth"),
            ("trades", {"limit": 0}, "limit"),
            ("trades", {"limit": svc.recent_trades + 1}, "limit"),
            ("candles", {"interval": "2m"}, "interval"),
            ("candles", {"start": -1}, "start"),
            ("candles", {"end": "soon"}, "end"),
            ("candles", {"start": 10, "end": 9}, "end"),
            ("candles", {"limit": 0}, "limit"),
            ("candles", {"limit": 1501}, "limit"),
        ]
        for path, params, field in bad:
            got = await client.get(f"/v1/markets/{ETH_USDC}/{path}", params=params)
            assert got.status_code == 400, (path, params)
            error = got.json()["error"]
            assert (error["code"], error["field"]) == ("invalid_request", field), (path, params)
    await svc.stop()


@aio
async def test_the_gateway_serves_the_market_data_routes_as_market_data_answers() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c)
    await svc.start()
    await rich_trading(c)
    await until(svc, lambda: caught_up(svc), "market data to catch up")
    md_app = build_app("market-data", svc.health, svc.metrics, route_handlers=svc.route_handlers())
    metrics = ServiceMetrics("gateway")
    health = Health(metrics)
    health.started = True
    gw = Gateway(
        c.bus,
        risk_shards=c.r_count,
        matching_shards=c.m_count,
        health=health,
        metrics=metrics,
        log=RecordingLog(),
        faucet=False,
        persistence_url="http://127.0.0.1:9",
        market_data_url="http://market-data",
    )
    await gw._http.aclose()
    gw._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=md_app), timeout=5.0)
    gw.pos[layout.ADMIN_STREAM] = 0
    await gw._catch_up_admin()  # the markets it knows (it checks them before proxying)
    gw_app = build_app("gateway", health, metrics, route_handlers=route_handlers(gw))
    asks = [
        ("/v1/tickers", {}),
        (f"/v1/markets/{ETH_USDC}/book", {"depth": 3}),
        (f"/v1/markets/{ETH_USDC}/book", {}),
        (f"/v1/markets/{ETH_USDC}/trades", {"limit": 4}),
        (f"/v1/markets/{BTC_USDC}/ticker", {}),
        (f"/v1/markets/{ETH_USDC}/candles", {"interval": "1h", "limit": 2}),
        (f"/v1/markets/{ETH_USDC}/depth", {"levels": 2}),
        (f"/v1/markets/{ETH_USDC}/book", {"depth": 0}),
        (f"/v1/markets/{ETH_USDC}/candles", {"interval": "7m"}),
        (f"/v1/markets/{ETH_USDC}/candles", {"start": 5, "end": 4}),
        ("/v1/markets/DOGE-USDC/book", {}),
        ("/v1/markets/DOGE-USDC/candles", {}),
    ]
    try:
        direct = httpx.AsyncClient(transport=httpx.ASGITransport(app=md_app), base_url="http://m")
        proxied = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw_app), base_url="http://g")
        async with direct, proxied:
            for path, params in asks:
                want = await direct.get(path, params=params)
                got = await proxied.get(path, params=params)
                assert got.status_code == want.status_code, (path, params)
                if want.status_code == 200:
                    assert got.json() == want.json(), (path, params)
                else:
                    assert want.status_code in (400, 404), (path, params)
                    assert got.json()["error"] == {
                        k: want.json()["error"][k] for k in ("code", "message", "field")
                    }, (path, params)
    finally:
        await gw.stop()
        await svc.stop()


@aio
async def test_a_log_that_lost_entries_it_has_seen_stops_it() -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    await rich_trading(c)
    svc = service(c)
    await svc.start()
    await until(svc, lambda: svc.pos[layout.me_log(0)] > 1, "read shard 0's log")
    older = MemoryBus()  # the bus as an older copy: shard 0's log is shorter
    await older.append(
        layout.me_log(0), [data for _, data in (await c.bus.read(layout.me_log(0), 0))[:1]]
    )
    svc.bus = older
    await until(svc, lambda: not svc.running, "the reader to stop")
    assert "lost entries" in svc.health.reasons()[INPUT]
    await svc.stop()
