"""The WebSocket feed (`/v1/ws` on the gateway) end to end, in process: the gateway, matching,
risk and market data on one embedded bus (SQLite, as `dex up`), each on a free port, with real
WebSocket clients (`websockets`) and orders placed through the gateway's REST API by traders
onboarded with dex.client (fresh wallets, signed requests). The
first test also runs on Redis Streams (a private `redis-server`), the distributed bus.

Clients keep books from the snapshot and the updates; every message's checksum is computed
here, apart from the service, and checked, `prev_seq` must equal the last `seq`, and at the
end every client's book equals the REST book. Then the protocol: acks, errors that leave the
connection open, trades with consecutive ids, candles, tickers at most every 100 ms; a lost
publish (a gap on the feed) gives the clients a new snapshot; a feed trimmed under a relay
gives new snapshots; a restarted market data (a fresh one on the same bus, from the log's
start or from a later matching snapshot) leaves every client's book right; the feed streams
are trimmed; a slow subscriber is dropped without holding up the others; a connection that
stops answering pings is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from dex.app.demo import add_demo_markets
from dex.app.run import Running, run_units
from dex.app.units import BUILDERS, market_data_unit
from dex.bus import Bus, TrimmedError
from dex.bus.redis import RedisBus
from dex.bus.sqlite import SqliteBus
from dex.client import AsyncClient
from dex.gateway.feed import Subscriber
from dex.gateway.service import Gateway
from dex.marketdata.service import MarketDataService
from dex.runtime.http import build_app
from dex.runtime.server import HttpServer
from dex.runtime.settings import Settings
from dex.wire.layout import md_feed
from tests.bus.contract import aio
from tests.support.polling import eventually
from tests.support.redis_server import private_redis_or_skip
from tests.support.trading import async_trader

MARKETS = ("ETH-USDC", "BTC-USDC")
MID = {"ETH-USDC": Decimal(2000), "BTC-USDC": Decimal(30000)}
TICK = {"ETH-USDC": Decimal("0.01"), "BTC-USDC": Decimal("0.1")}
LOT = {"ETH-USDC": Decimal("0.0001"), "BTC-USDC": Decimal("0.00001")}
SIZE_MAX = {"ETH-USDC": Decimal("0.5"), "BTC-USDC": Decimal("0.03")}
# the decimal strings at each market's precision (tick 0.01 / 0.1, lot 0.0001 / 0.00001)
PRICE_TEXT = {"ETH-USDC": re.compile(r"[0-9]+\.[0-9]{2}"), "BTC-USDC": re.compile(r"[0-9]+\.[0-9]")}
SIZE_TEXT = {
    "ETH-USDC": re.compile(r"[0-9]+\.[0-9]{4}"),
    "BTC-USDC": re.compile(r"[0-9]+\.[0-9]{5}"),
}
TRADERS = 4  # fresh wallets trading at random
WAIT = 15.0  # seconds any one condition may take


def text_of(n: Decimal, step: Decimal) -> str:
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)
    return f"{n:.{-exponent}f}"


def crc(bids: dict[str, str], asks: dict[str, str]) -> int:
    """The feed's checksum, computed here: top 25 levels, bid then ask, `price:size`."""
    b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:25]
    a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:25]
    parts: list[str] = []
    for i in range(25):
        if i < len(b):
            parts += b[i]
        if i < len(a):
            parts += a[i]
    return zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF


# ---------------------------------------------------------------------- the exchange


@dataclass
class Exchange:
    bus: Bus
    settings: Settings
    running: Running
    extra: list[tuple[Any, HttpServer]] = field(default_factory=list)
    clients: list[AsyncClient] = field(default_factory=list)

    @property
    def gw_port(self) -> int:
        return self.running.servers["gateway"].port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gw_port}/v1/ws"

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = next(u.extra["gateway"] for u in self.running.units if u.name == "gateway")
        return gw

    @property
    def market_data(self) -> MarketDataService:
        svc: MarketDataService = next(
            u.extra["service"] for u in self.running.units if u.name == "market-data"
        )
        return svc

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=WAIT)


@contextlib.asynccontextmanager
async def exchange(
    tmp_path: Path, redis_url: str | None = None, ping_ms: int = 20_000, **settings_kw: Any
) -> AsyncIterator[Exchange]:
    """The exchange on the embedded SQLite bus, or on Redis Streams at `redis_url`."""
    bus: Bus = (
        SqliteBus(tmp_path / "bus.sqlite3") if redis_url is None else RedisBus.from_url(redis_url)
    )
    settings = Settings(
        data_dir=str(tmp_path), stop_timeout_ms=5000, ws_ping_ms=ping_ms, **settings_kw
    )
    await add_demo_markets(bus)
    names = ("market-data", "matching-engine", "risk-engine", "gateway")
    units = [BUILDERS[n](bus, settings) for n in names]
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_units(
            units, settings, on_ready=ready.set_result, stop=stop, ports=dict.fromkeys(names, 0)
        )
    )
    try:
        running = await asyncio.wait_for(asyncio.shield(ready), WAIT)
        ex = Exchange(bus, settings, running)
        async with ex.http() as c:
            await eventually(
                "the gateway ready",
                lambda: _ok(c, "/readyz"),
                timeout=WAIT,
                retry_on=(httpx.HTTPError,),
            )
        yield ex
    finally:
        for client in ex.clients if "ex" in locals() else []:
            await client.aclose()
        stop.set()
        for unit, srv in ex.extra if "ex" in locals() else []:
            await unit.stop()
            await srv.stop()
        await asyncio.wait_for(task, 30)
        if isinstance(bus, RedisBus):
            await bus.close()
        else:
            bus.close()


async def _ok(c: httpx.AsyncClient, path: str) -> bool:
    return (await c.get(path)).status_code == 200


async def fund(ex: Exchange) -> list[AsyncClient]:
    """`TRADERS` traders: fresh wallets onboarded with dex.client, each with ETH, BTC and USDC
    from the faucet (at most its per-call cap)."""
    for _ in range(TRADERS):
        ex.clients.append(await async_trader(ex.url, ETH="1000", BTC="100", USDC="1000000"))
    return list(ex.clients)


async def random_orders(traders: list[AsyncClient], rng: random.Random, n: int) -> None:
    """`n` random limit orders within 4% of the mids, each from one of `traders`; any refusal
    fails the test."""
    for _ in range(n):
        market = rng.choice(MARKETS)
        side = rng.choice(("buy", "sell"))
        off = Decimal(rng.randint(-40, 40)) / 1000  # within 4% of the mid
        price = (MID[market] * (1 + off)).quantize(TICK[market])
        size = (SIZE_MAX[market] * Decimal(rng.randint(1, 100)) / 100).quantize(LOT[market])
        client = rng.choice(traders)
        await client.place(
            market,
            side,
            "limit",
            price=text_of(price, TICK[market]),
            size=text_of(size, LOT[market]),
            tif=rng.choice(("GTC", "GTC", "GTC", "IOC")),
        )


async def trade_for(
    traders: list[AsyncClient], seconds: float, seed: int, senders: int = 3
) -> None:
    """Random orders of `traders` from `senders` concurrent tasks for `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def sender(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        while loop.time() < end:
            await random_orders(traders, rng, 5)

    await asyncio.gather(*(sender(k) for k in range(senders)))


# ---------------------------------------------------------------------- clients


class BookClient:
    """A WebSocket client keeping the books of `markets` and checking every message."""

    def __init__(self, ws: ClientConnection, markets: tuple[str, ...]) -> None:
        self.ws = ws
        self.markets = markets
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.seq: dict[str, int] = {}
        self.snapshots: dict[str, int] = dict.fromkeys(markets, 0)
        self.updates = 0
        self.errors: list[str] = []
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, markets: tuple[str, ...] = MARKETS) -> BookClient:
        ws = await connect(url)
        client = cls(ws, markets)
        for m in markets:
            await ws.send(json.dumps({"op": "subscribe", "channel": "book", "market": m}))
        client.task = asyncio.create_task(client.run())
        return client

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.check(json.loads(raw))

    def check(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "subscribed":
            return
        m = msg["market"]
        price_re, size_re = PRICE_TEXT[m], SIZE_TEXT[m]
        for p, n in msg.get("bids", []) + msg.get("asks", []):
            if not (price_re.fullmatch(p) and size_re.fullmatch(n)):
                self.errors.append(f"not at the market's precision: {p} {n}")
        if msg["type"] == "snapshot":
            self.snapshots[m] += 1
            self.books[m] = ({p: n for p, n in msg["bids"]}, {p: n for p, n in msg["asks"]})
        elif msg["type"] == "update":
            self.updates += 1
            if m not in self.books:
                self.errors.append(f"an update before the snapshot: {msg}")
                return
            if msg["prev_seq"] != self.seq[m]:
                self.errors.append(f"gap on {m}: prev_seq {msg['prev_seq']}, had {self.seq[m]}")
            for side, levels in zip(self.books[m], (msg["bids"], msg["asks"]), strict=True):
                for p, n in levels:
                    if Decimal(n) == 0:
                        side.pop(p, None)
                    else:
                        side[p] = n
        else:
            self.errors.append(f"unexpected message {msg}")
            return
        self.seq[m] = msg["seq"]
        if crc(*self.books[m]) != msg["checksum"]:
            self.errors.append(f"checksum of {m} at seq {msg['seq']} does not verify")


async def rest_book(c: httpx.AsyncClient, market: str) -> dict[str, Any]:
    r = await c.get(f"/v1/markets/{market}/book", params={"depth": 1000})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def books_equal_rest(clients: list[BookClient], c: httpx.AsyncClient) -> bool:
    for m in MARKETS:
        rest = await rest_book(c, m)
        want = ({p: n for p, n in rest["bids"]}, {p: n for p, n in rest["asks"]})
        for cl in clients:
            if cl.seq.get(m) != rest["seq"] or cl.books.get(m) != want:
                return False
    return True


async def recv(ws: ClientConnection) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return got


async def recv_until(ws: ClientConnection, want: Any) -> dict[str, Any]:
    """The first message for which `want(msg)` holds (others are skipped)."""
    while True:
        msg = await recv(ws)
        if want(msg):
            return msg


# ---------------------------------------------------------------------- tests


@pytest.fixture(params=["embedded", "redis"])
def bus_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the embedded SQLite bus; else a private Redis server's URL (Redis Streams)."""
    if request.param == "embedded":
        yield None
    else:
        with private_redis_or_skip() as server:
            yield server.url


@aio
async def test_clients_keep_exact_books_from_snapshot_and_updates_under_random_trading(
    tmp_path: Path, bus_url: str | None
) -> None:
    async with exchange(tmp_path, bus_url) as ex, ex.http() as c:
        traders = await fund(ex)
        await random_orders(traders, random.Random(1), 20)  # books before anyone subscribes
        early = [await BookClient.open(ex.ws_url) for _ in range(2)]
        trading = asyncio.create_task(trade_for(traders, 3.0, seed=2))
        await eventually(  # the trading is under way: the late clients join while it goes on
            "the early clients have book updates from the trading",
            lambda: all(cl.updates >= 3 for cl in early),
            timeout=WAIT,
        )
        late = [await BookClient.open(ex.ws_url) for _ in range(2)]
        await trading
        clients = early + late
        try:
            await eventually(
                "every client's books equal the REST books",
                lambda: books_equal_rest(clients, c),
                timeout=WAIT,
            )
            for cl in clients:
                assert cl.errors == []
                assert cl.snapshots == dict.fromkeys(MARKETS, 1)  # no resubscribe was needed
            assert all(cl.updates >= 10 for cl in early)
            for m in MARKETS:
                assert (await rest_book(c, m))["bids"]  # the books were not trivially empty
        finally:
            for cl in clients:
                await cl.close()


@pytest.mark.parametrize("snapshots", [False, True], ids=["log-from-start", "later-snapshot"])
@aio
async def test_a_restarted_market_data_leaves_every_client_book_right(
    tmp_path: Path, snapshots: bool
) -> None:
    """A fresh market data on the same bus: without matching snapshots it reads the log from
    its start and publishes again what the relay has (dropped as seen); with them it starts
    from a snapshot later than the relay's books: the relay sees the gap (its marker) and the
    clients get a new snapshot."""
    extra = {"snapshot_every": 10, "snapshot_fork": False} if snapshots else {}
    async with exchange(tmp_path, **extra) as ex, ex.http() as c:
        traders = await fund(ex)
        clients = [await BookClient.open(ex.ws_url) for _ in range(2)]
        await trade_for(traders, 1.0, seed=3)
        old = next(u for u in ex.running.units if u.name == "market-data")
        await old.stop()
        # market data is away: the matching logs go on (and, with snapshots, past them)
        await random_orders(traders, random.Random(4), 40)
        unit = market_data_unit(ex.bus, ex.settings)
        app = build_app(unit.name, unit.health, unit.metrics, route_handlers=unit.routes)
        srv = HttpServer(app)
        await srv.start("127.0.0.1", 0)
        ex.extra.append((unit, srv))
        ex.gateway.market_data_url = f"http://127.0.0.1:{srv.port}"
        await unit.start()
        try:
            if snapshots:  # even before any new trade, the books catch up through a snapshot
                await eventually(
                    "new snapshots",
                    lambda: all(sum(cl.snapshots.values()) > len(MARKETS) for cl in clients),
                    timeout=WAIT,
                )
                await eventually(
                    "every client's books equal the REST books (no new trade)",
                    lambda: books_equal_rest(clients, c),
                    timeout=WAIT,
                )
            await trade_for(traders, 1.0, seed=5)
            await eventually(
                "every client's books equal the REST books after the restart",
                lambda: books_equal_rest(clients, c),
                timeout=WAIT,
            )
            for cl in clients:
                assert cl.errors == []
                if not snapshots:
                    assert cl.snapshots == dict.fromkeys(MARKETS, 1)
        finally:
            for cl in clients:
                await cl.close()


@aio
async def test_a_lost_publish_gives_clients_a_new_snapshot_never_a_wrong_book(
    tmp_path: Path,
) -> None:
    async with exchange(tmp_path) as ex, ex.http() as c:
        traders = await fund(ex)
        await random_orders(traders, random.Random(6), 10)
        clients = [await BookClient.open(ex.ws_url) for _ in range(2)]
        await eventually(
            "the snapshots",
            lambda: all(min(cl.snapshots.values()) for cl in clients),
            timeout=WAIT,
        )
        # market data loses the publish of one batch (as when the bus refused the append):
        # the next update of those markets does not chain on the relay's book
        svc = ex.market_data
        publish = svc._publish

        async def lose_once() -> None:
            svc._publish = publish  # type: ignore[method-assign]
            svc.outbox = {}

        svc._publish = lose_once  # type: ignore[method-assign]
        await trade_for(traders, 1.0, seed=7)
        try:
            await eventually(
                "a new snapshot of the market(s) whose updates were lost",
                lambda: all(sum(cl.snapshots.values()) > len(MARKETS) for cl in clients),
                timeout=WAIT,
            )
            await eventually(
                "every client's books equal the REST books",
                lambda: books_equal_rest(clients, c),
                timeout=WAIT,
            )
            for cl in clients:
                assert cl.errors == []  # no update ever applied to a book it did not fit
        finally:
            for cl in clients:
                await cl.close()


async def _eth_equal(clients: list[BookClient], c: httpx.AsyncClient) -> bool:
    rest = await rest_book(c, "ETH-USDC")
    want = ({p: n for p, n in rest["bids"]}, {p: n for p, n in rest["asks"]})
    return all(
        cl.seq.get("ETH-USDC") == rest["seq"] and cl.books.get("ETH-USDC") == want for cl in clients
    )


@aio
async def test_a_feed_trimmed_under_the_relay_gives_new_snapshots_and_feeds_stay_bounded(
    tmp_path: Path,
) -> None:
    async with exchange(tmp_path) as ex, ex.http() as c:
        ex.market_data.feed_keep = 20
        traders = await fund(ex)
        clients = [await BookClient.open(ex.ws_url, ("ETH-USDC",))]
        await eventually("the snapshot", lambda: clients[0].snapshots["ETH-USDC"], timeout=WAIT)
        relay = ex.gateway.feed
        mf = relay.markets["ETH-USDC"]
        stream = md_feed("ETH-USDC")
        rng = random.Random(8)

        async def trade_past_40() -> bool:
            await random_orders(traders, rng, 10)
            return await ex.bus.last(stream) > 40

        await eventually("the feed past 40 entries", trade_past_40, timeout=WAIT)

        async def kept_20_or_21() -> bool:
            """The feed keeps its last 20 entries, trimmed again once it holds 22 (checked
            again if a ticker came between the reads)."""
            last = await ex.bus.last(stream)
            if len(await ex.bus.read(stream, last - 20, limit=100)) != 20:
                return False
            try:
                await ex.bus.read(stream, last - 22, limit=1)
            except TrimmedError:
                return True
            return False

        await eventually("the feed trimmed to its last 20 or 21", kept_20_or_21, timeout=WAIT)

        # the relay falls behind the trim (as a stalled gateway would): a new snapshot. (Its
        # position is put back until then: a read in flight may have moved it on again.)
        def behind() -> bool:
            if clients[0].snapshots["ETH-USDC"] >= 2:
                return True
            mf.pos = 0
            return False

        await trade_for(traders, 0.5, seed=9)
        try:
            await eventually("a new snapshot", behind, timeout=WAIT)
            await eventually(
                "the client's book equals the REST book",
                lambda: _eth_equal(clients, c),
                timeout=WAIT,
            )
            assert clients[0].errors == []
        finally:
            for cl in clients:
                await cl.close()


@aio
async def test_protocol_acks_errors_trades_candles_and_tickers(tmp_path: Path) -> None:
    async with exchange(tmp_path) as ex, ex.http() as c, connect(ex.ws_url) as ws:
        traders = await fund(ex)
        bad = [
            ("not json", "invalid_json"),
            ("[1, 2]", "invalid_json"),
            ({"op": "subscrib", "channel": "book", "market": "ETH-USDC"}, "unknown_op"),
            ({"op": "subscribe", "channel": "depth", "market": "ETH-USDC"}, "unknown_channel"),
            ({"op": "subscribe", "channel": "book", "market": "DOGE-USDC"}, "unknown_market"),
            ({"op": "subscribe", "channel": "book"}, "unknown_market"),
            ({"op": "subscribe", "channel": "candles", "market": "ETH-USDC"}, "invalid_interval"),
            (
                {"op": "subscribe", "channel": "candles", "market": "ETH-USDC", "interval": "2m"},
                "invalid_interval",
            ),
            ({"op": "unsubscribe", "channel": "trades", "market": "ETH-USDC"}, "not_subscribed"),
        ]
        for req, code in bad:
            await ws.send(req if isinstance(req, str) else json.dumps(req))
            msg = await recv(ws)
            assert msg["type"] == "error" and msg["code"] == code, (req, msg)
            assert set(msg) == {"type", "code", "message"} and msg["message"]
        # the connection is still open and serves
        subs = [
            {"channel": "trades", "market": "ETH-USDC"},
            {"channel": "candles", "market": "ETH-USDC", "interval": "1m"},
            {"channel": "candles", "market": "ETH-USDC", "interval": "1h"},
            {"channel": "ticker", "market": "ETH-USDC"},
        ]
        for s in subs:
            await ws.send(json.dumps({"op": "subscribe", **s}))
            assert await recv(ws) == {"type": "subscribed", **s}
        trades: list[dict[str, Any]] = []
        candles: dict[str, list[list[Any]]] = {"1m": [], "1h": []}
        tickers: list[tuple[float, dict[str, Any]]] = []
        loop = asyncio.get_running_loop()

        async def listen() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["channel"] == "trades":
                    trades.extend(msg["trades"])
                elif msg["channel"] == "candles":
                    candles[msg["interval"]].append(msg["candle"])
                elif msg["channel"] == "ticker":
                    tickers.append((loop.time(), msg))

        listener = asyncio.create_task(listen())
        started = loop.time()
        rng = random.Random(11)

        async def rest_trades_now() -> list[dict[str, Any]]:
            r = await c.get("/v1/markets/ETH-USDC/trades", params={"limit": 1000})
            got: list[dict[str, Any]] = r.json()["trades"]  # newest first, 1000 at most
            return got

        async def traded() -> bool:
            await random_orders(traders, rng, 10)
            return len(await rest_trades_now()) > 5

        await eventually("a few ETH-USDC trades", traded, timeout=WAIT)
        rest_trades = await rest_trades_now()
        newest = rest_trades[0]["trade_id"]
        await eventually(
            "every trade", lambda: trades and trades[-1]["trade_id"] == newest, timeout=WAIT
        )
        elapsed = loop.time() - started
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        assert len(trades) > 5
        ids = [t["trade_id"] for t in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive
        assert trades[-len(rest_trades) :] == list(reversed(rest_trades))  # same strings
        # candles: each message is the open candle as it is now; the last one equals REST
        for interval in ("1m", "1h"):
            assert candles[interval]
            r = await c.get("/v1/markets/ETH-USDC/candles", params={"interval": interval})
            assert candles[interval][-1] == r.json()["candles"][-1]
            counts = [row[7] for row in candles[interval] if row[0] == candles[interval][-1][0]]
            assert counts == sorted(counts) and len(set(counts)) == len(counts)
        # tickers: at most one every 100 ms
        assert tickers
        assert len(tickers) <= elapsed / 0.1 + 2
        assert tickers[-1][1]["market"] == "ETH-USDC" and tickers[-1][1]["trades"] > 0
        # unsubscribe: acknowledged, then nothing more on that channel
        for s in subs:
            await ws.send(json.dumps({"op": "unsubscribe", **s}))
            msg = await recv_until(ws, lambda m: m["type"] != "update")
            assert msg == {"type": "unsubscribed", **s}
        await ws.send(json.dumps({"op": "subscribe", "channel": "book", "market": "BTC-USDC"}))
        assert (await recv(ws))["type"] == "subscribed"
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and snap["market"] == "BTC-USDC"
        assert snap["checksum"] == crc(dict(snap["bids"]), dict(snap["asks"]))


class _StuckSocket:
    """A connection whose sends never complete (a client that stopped reading)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        await asyncio.Event().wait()


class _Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


@aio
async def test_a_slow_subscriber_is_dropped_and_holds_nobody_up() -> None:
    stuck, fine = Subscriber(_StuckSocket(), 1000), Subscriber(_Socket(), 1000)
    for sub in (stuck, fine):
        sub.writer = asyncio.create_task(sub.write())
    for i in range(50):
        for sub in (stuck, fine):
            sub.push(f"message {i:03} " + "x" * 40)  # what the relay does: no waiting
        await asyncio.sleep(0)
    await eventually("the fast one got everything", lambda: len(fine.socket.sent) == 50, timeout=5)
    assert stuck.reason is not None and stuck.reason.startswith("slow consumer")
    assert stuck.writer is not None
    await eventually("the stuck writer ended", stuck.writer.done, timeout=5)
    assert fine.reason is None
    fine.writer.cancel()  # type: ignore[union-attr]


TRADES = {"channel": "trades", "market": "ETH-USDC"}


@aio
async def test_a_connection_that_stops_answering_pings_is_closed(tmp_path: Path) -> None:
    async with exchange(tmp_path, ping_ms=300) as ex:
        relay = ex.gateway.feed
        live = await connect(ex.ws_url)
        dead = await connect(ex.ws_url)
        try:
            for ws in (live, dead):
                await ws.send(json.dumps({"op": "subscribe", **TRADES}))
                assert (await recv(ws))["type"] == "subscribed"
            assert len(relay.connections) == 2
            dead.transport.pause_reading()  # a client that is gone: no pong comes back
            await eventually(
                "the silent connection closed by the server",
                lambda: len(relay.connections) == 1,
                timeout=WAIT,
            )
            mf = relay.markets["ETH-USDC"]
            assert len(mf.trade_subs) == 1  # its subscriptions went with it
            # the live one answered the pings of that time and is still served
            await live.send(json.dumps({"op": "unsubscribe", **TRADES}))
            assert await recv(live) == {"type": "unsubscribed", **TRADES}
            assert len(relay.connections) == 1
        finally:
            await live.close()
            dead.transport.abort()


@aio
async def test_the_relay_stops_following_a_market_its_last_subscriber_left(
    tmp_path: Path,
) -> None:
    """Nobody subscribed to a market any more (unsubscribed, or the connection gone): the
    gateway stops reading its feed and keeping its book; a new subscriber starts over from a
    snapshot."""
    book = {"channel": "book", "market": "ETH-USDC"}
    async with exchange(tmp_path) as ex:
        relay = ex.gateway.feed
        first = await connect(ex.ws_url)
        second = await connect(ex.ws_url)
        try:
            for ws in (first, second):
                await ws.send(json.dumps({"op": "subscribe", **book}))
                assert (await recv(ws))["type"] == "subscribed"
                assert (await recv(ws))["type"] == "snapshot"
            await second.send(json.dumps({"op": "subscribe", **TRADES}))
            assert (await recv(second))["type"] == "subscribed"
            assert set(relay.markets) == {"ETH-USDC"}
            await first.send(json.dumps({"op": "unsubscribe", **book}))
            assert (await recv(first))["type"] == "unsubscribed"
            assert set(relay.markets) == {"ETH-USDC"}  # the second still follows it
            await second.send(json.dumps({"op": "unsubscribe", **book}))
            assert (await recv(second))["type"] == "unsubscribed"
            assert set(relay.markets) == {"ETH-USDC"}  # its trades still
            await second.close()  # gone with its last subscription
            await eventually("the market unfollowed", lambda: not relay.markets, timeout=WAIT)
            assert not relay.by_stream

            await first.send(json.dumps({"op": "subscribe", **book}))
            assert (await recv(first))["type"] == "subscribed"
            again = await recv(first)
            assert again["type"] == "snapshot" and again["market"] == "ETH-USDC"
            assert set(relay.markets) == {"ETH-USDC"}
        finally:
            await first.close()
