"""Unmodified `ccxt.pro.binance` against a running exchange: the order book kept equal to
the engine's through random trading, trades, tickers, and the account's orders and balances
through the user-data stream."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import ccxt.pro
import pytest

from dex.client import Client
from tests.binance.conftest import connect
from tests.client.conftest import Exchange
from tests.support.trading import holdings, settled, trader

SYMBOL = "BTC/USDC"  # its own market: the REST tests use ETH/USDC
# a minute of random trading (the figure), embedded and distributed alike
TRADING_SECONDS = {"embedded": 60.0, "distributed": 60.0}
WAIT = 20.0


@pytest.fixture(scope="module")
def traders(exchange: Exchange) -> tuple[Client, Client]:
    return (
        trader(exchange.url, BTC="5", USDC="400000"),
        trader(exchange.url, BTC="5", USDC="400000"),
    )


def _pro(exchange: Exchange, client: Client | None = None) -> Any:
    return connect(ccxt.pro.binance, exchange.url, client)


async def _within(what: str, coro: Any, seconds: float = WAIT) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        raise AssertionError(f"{what}: nothing within {seconds} s") from None


def _levels(side: list[list[float]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(str(p)), Decimal(str(q))) for p, q, *_ in side]


def test_order_book_follows_random_trading(
    exchange: Exchange, traders: tuple[Client, Client], request: pytest.FixtureRequest
) -> None:
    exchange_kind = request.node.callspec.params["exchange"]

    async def main() -> None:
        a, b = traders
        watcher, pa, pb = _pro(exchange), _pro(exchange, a), _pro(exchange, b)
        try:
            await asyncio.gather(watcher.load_markets(), pa.load_markets(), pb.load_markets())
            await pa.create_order(SYMBOL, "limit", "buy", 0.01, 60000)
            book = await _within("the first book", watcher.watch_order_book(SYMBOL))
            rng = random.Random(15)
            loop = asyncio.get_running_loop()
            stop = loop.time() + TRADING_SECONDS[exchange_kind]
            updates = 0

            async def trade() -> None:
                while loop.time() < stop:
                    who = rng.choice((pa, pb))
                    side = rng.choice(("buy", "sell"))
                    price = 60000 + rng.randint(-40, 40) * 10
                    amount = rng.randint(1, 30) / 1000
                    kind = rng.choice(("limit", "limit", "limit", "market"))
                    try:
                        if kind == "market":
                            await who.create_order(SYMBOL, "market", side, amount)
                        else:
                            await who.create_order(SYMBOL, "limit", side, amount, price)
                    except ccxt.InsufficientFunds:
                        await who.cancel_all_orders(SYMBOL)
                    except ccxt.InvalidOrder:
                        pass  # a market order into an empty side
                await asyncio.gather(pa.cancel_all_orders(SYMBOL), pb.cancel_all_orders(SYMBOL))

            trading = asyncio.create_task(trade())
            while not trading.done():
                watch = asyncio.ensure_future(watcher.watch_order_book(SYMBOL))
                await asyncio.wait({watch, trading}, timeout=WAIT, return_when="FIRST_COMPLETED")
                if not watch.done():
                    watch.cancel()
                    assert trading.done(), "no book update while trading"
                    trading.result()  # its failure, if it failed
                    break
                book = watch.result()
                updates += 1
            await trading
            assert updates > 10
            # once quiet: the book ccxt keeps is the engine's, level for level, at its seq
            deadline = loop.time() + WAIT
            while True:
                native = await asyncio.to_thread(a.book, "BTC-USDC", 1000)
                if book["nonce"] == native["seq"]:
                    break
                assert loop.time() < deadline, "ccxt's book never reached the engine's seq"
                book = await _within("a book update", watcher.watch_order_book(SYMBOL), 1.0)
            assert _levels(book["bids"]) == [(Decimal(p), Decimal(q)) for p, q in native["bids"]]
            assert _levels(book["asks"]) == [(Decimal(p), Decimal(q)) for p, q in native["asks"]]
        finally:
            await asyncio.gather(watcher.close(), pa.close(), pb.close())

    asyncio.run(main())


def test_trades_ticker_orders_and_balance(
    exchange: Exchange, traders: tuple[Client, Client]
) -> None:
    async def main() -> None:
        a, b = traders
        watcher, pa, pb = _pro(exchange), _pro(exchange, a), _pro(exchange, b)
        try:
            await asyncio.gather(watcher.load_markets(), pa.load_markets(), pb.load_markets())
            acked: list[Any] = []  # the market streams' SUBSCRIBE answers, as ccxt reads them
            handle = watcher.handle_subscription_status

            def spy(client: Any, message: Any) -> Any:
                acked.append(message.get("id"))
                return handle(client, message)

            watcher.handle_subscription_status = spy
            trades = asyncio.create_task(watcher.watch_trades(SYMBOL))
            ticker = asyncio.create_task(watcher.watch_ticker(SYMBOL))
            seen: list[dict[str, Any]] = []

            async def collect() -> None:  # always waiting: no report falls between two calls
                while True:
                    seen.extend(await pa.watch_orders(SYMBOL))

            collecting = asyncio.create_task(collect())

            async def report(order: dict[str, Any], status: str) -> dict[str, Any]:
                while not (
                    got := [o for o in seen if o["id"] == order["id"] and o["status"] == status]
                ):
                    await asyncio.sleep(0.05)
                return got[-1]

            async def acknowledged() -> None:
                while len(acked) < 2:
                    await asyncio.sleep(0.05)

            await _within("the trades and ticker subscriptions acknowledged", acknowledged())
            # the user-data stream is live once a probe order is reported on it (a probe
            # placed before the subscription took effect is never reported: place another)
            for _ in range(20):
                probe = await pa.create_order(SYMBOL, "limit", "sell", 0.001, 62000)
                try:
                    await asyncio.wait_for(report(probe, "open"), 1.0)
                    break
                except TimeoutError:
                    continue
                finally:
                    await pa.cancel_order(probe["id"], SYMBOL)
            else:
                raise AssertionError("the user-data stream never reported an order")
            balance = asyncio.create_task(pa.watch_balance())  # the next balance event

            ask = await pa.create_order(SYMBOL, "limit", "sell", 0.02, 61000)
            opened = await _within("watch_orders: open", report(ask, "open"))
            assert opened["amount"] == 0.02 and opened["price"] == 61000
            assert opened["clientOrderId"] == ask["clientOrderId"]

            async def held() -> dict[str, Any]:
                # (the probe's release may be the first balance event after the watch began)
                got = await balance
                while (got["BTC"]["used"] or 0) < 0.02:
                    got = await pa.watch_balance()
                return got

            got_balance = await _within("watch_balance: the ask's hold", held())
            assert got_balance["BTC"]["used"] >= 0.02
            await pb.create_order(SYMBOL, "limit", "buy", 0.02, 61000, {"timeInForce": "IOC"})
            got_trades = await _within("watch_trades", trades)
            assert (got_trades[-1]["price"], got_trades[-1]["amount"]) == (61000, 0.02)
            assert got_trades[-1]["side"] == "buy"

            async def traded_ticker() -> dict[str, Any]:
                got = await ticker  # (the one pushed at subscription may predate any trade)
                while got["last"] is None:
                    got = await watcher.watch_ticker(SYMBOL)
                return got

            got_ticker = await _within("watch_ticker", traded_ticker())
            assert got_ticker["symbol"] == SYMBOL and got_ticker["last"] is not None
            filled = await _within("watch_orders: filled", report(ask, "closed"))
            collecting.cancel()
            assert filled["filled"] == 0.02 and filled["cost"] == pytest.approx(0.02 * 61000)
            native = await asyncio.to_thread(
                settled,
                "the maker's fill in the history",
                lambda: [
                    f for f in a.fills(market="BTC-USDC").items if f.order_id == int(ask["id"])
                ],
            )
            assert sum(f.size for f in native) == Decimal("0.02")
            assert Decimal(str(filled["trades"][-1]["fee"]["cost"])) == native[-1].fee
            balances = await pa.fetch_balance()
            native_bal = await asyncio.to_thread(holdings, a)
            assert Decimal(str(balances["USDC"]["free"])) == native_bal["USDC"][0]
        finally:
            await asyncio.gather(watcher.close(), pa.close(), pb.close())

    asyncio.run(main())


def test_stream_protocol(exchange: Exchange) -> None:
    """SUBSCRIBE / LIST_SUBSCRIPTIONS / UNSUBSCRIBE and a refused stream, on /stream."""
    import json

    from websockets.sync.client import connect as ws_connect

    ws_url = exchange.url.replace("http://", "ws://")
    with ws_connect(f"{ws_url}/stream?streams=ethusdc@trade") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdc@kline_1m"], "id": 7}))
        assert json.loads(ws.recv(timeout=WAIT)) == {"result": None, "id": 7}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        listed = json.loads(ws.recv(timeout=WAIT))
        assert listed["id"] == 8 and set(listed["result"]) == {"ethusdc@trade", "btcusdc@kline_1m"}
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdc@trade"], "id": 9}))
        assert json.loads(ws.recv(timeout=WAIT)) == {"result": None, "id": 9}
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nopeusdc@trade"], "id": 10}))
        refused = json.loads(ws.recv(timeout=WAIT))
        assert refused["id"] == 10 and refused["error"]["code"] == -1121


def test_partial_depth_streams(exchange: Exchange) -> None:
    """`<symbol>@depth<5|10|20>[@100ms]`: the top levels whole, with `lastUpdateId`, equal to
    REST depth at the same id; bare on /ws, in `{"stream", "data"}` on /stream; added beside
    a diff stream of the same market on a connection that already follows its book."""
    import json

    import httpx
    from websockets.sync.client import connect as ws_connect

    client = trader(exchange.url, USDC="100000", BTC="5")
    ws_url = exchange.url.replace("http://", "ws://")

    def rest(levels: int) -> dict[str, Any]:
        got = httpx.get(
            f"{exchange.url}/api/v3/depth", params={"symbol": "BTCUSDC", "limit": levels}
        )
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    def reaches(ws: Any, want: dict[str, Any], stream: str | None) -> None:
        while True:
            msg = json.loads(ws.recv(timeout=WAIT))
            if stream is not None:
                if msg.get("stream") != stream:
                    continue  # the diff stream's updates, the SUBSCRIBE reply
                msg = msg["data"]
            assert set(msg) == {"lastUpdateId", "bids", "asks"}, msg
            if msg["lastUpdateId"] == want["lastUpdateId"]:
                assert msg == want
                return

    with (
        ws_connect(f"{ws_url}/stream?streams=btcusdc@depth") as combined,
        ws_connect(f"{ws_url}/ws/btcusdc@depth10") as bare,
    ):
        combined.send(
            json.dumps({"method": "SUBSCRIBE", "params": ["btcusdc@depth5@100ms"], "id": 1})
        )
        placed = []
        for i in range(6):
            for side, price in (("buy", 58000 + 100 * i), ("sell", 62000 + 100 * i)):
                placed.append(
                    client.place("BTC-USDC", side, "limit", size="0.01", price=str(price))
                )
                assert placed[-1].status == "open", placed[-1]
        ours = {Decimal(base + 100 * i) for base in (58000, 62000) for i in range(6)}

        def shown() -> bool:
            book = rest(1000)
            return ours <= {Decimal(p) for p, _ in book["bids"] + book["asks"]}

        settled("the book shows them", shown)
        top5, top10 = rest(5), rest(10)
        assert top5["lastUpdateId"] == top10["lastUpdateId"]
        assert len(top5["bids"]) == len(top5["asks"]) == 5
        reaches(combined, top5, "btcusdc@depth5@100ms")
        reaches(bare, top10, None)
    for order in placed:
        client.cancel(order.order_id)


def test_trading_over_the_websocket_api(exchange: Exchange) -> None:
    """ccxt.pro's `*_ws` calls (`order.place`, `order.status`, `openOrders.status`,
    `account.status`, `order.cancel` on /ws-api/v3): the REST answers, the same refusals."""
    client = trader(exchange.url, USDC="5000")

    async def main() -> None:
        pro = _pro(exchange, client)
        try:
            await pro.load_markets()
            # 5% under the last trade: inside the price band, under every ask
            last = (await pro.fetch_ticker(SYMBOL))["last"] or 60000
            price = Decimal(str(last)) * Decimal("0.95")
            price = price.quantize(Decimal("0.1"))
            placed = await _within(
                "order.place", pro.create_order_ws(SYMBOL, "limit", "buy", 0.01, float(price))
            )
            assert placed["status"] == "open" and Decimal(str(placed["price"])) == price
            got = await _within("order.status", pro.fetch_order_ws(placed["id"], SYMBOL))
            assert (got["id"], got["status"], got["amount"]) == (placed["id"], "open", 0.01)
            listed = await _within("openOrders.status", pro.fetch_open_orders_ws(SYMBOL))
            assert [o["id"] for o in listed] == [placed["id"]]
            balance = await _within("account.status", pro.fetch_balance_ws())
            # ccxt 4.5.90 parses account.status's spot balances as no assets (it reads the
            # answer as a futures account's): what the gateway sent is in `info`
            usdc = [b for b in balance["info"]["balances"] if b["asset"] == "USDC"]
            native = await asyncio.to_thread(holdings, client)
            held = price * Decimal("0.01")
            assert [Decimal(usdc[0]["locked"])] == [native["USDC"][1]] == [held]
            with pytest.raises(ccxt.InsufficientFunds):
                await pro.create_order_ws(SYMBOL, "limit", "buy", 1, float(price))
            cancelled = await _within("order.cancel", pro.cancel_order_ws(placed["id"], SYMBOL))
            assert cancelled["id"] == placed["id"] and cancelled["status"] == "canceled"
            with pytest.raises(ccxt.OrderNotFound):
                await pro.cancel_order_ws(placed["id"], SYMBOL)
            assert await _within("no order", pro.fetch_open_orders_ws(SYMBOL)) == []
            assert client.credentials is not None
            forged = connect(
                ccxt.pro.binance,
                exchange.url,
                apiKey=client.credentials.api_key,
                secret="y" * 43,
            )
            try:
                with pytest.raises(ccxt.AuthenticationError):
                    await forged.fetch_open_orders_ws(SYMBOL)
            finally:
                await forged.close()
        finally:
            await pro.close()

    asyncio.run(main())


def test_listen_key_user_data(exchange: Exchange) -> None:
    """The listen-key flow (what ccxt 4.4 uses): POST /api/v3/userDataStream with the API key
    gives a key; /ws/<listenKey> then carries the account's executionReport and
    outboundAccountPosition; PUT keeps it alive; DELETE ends an open stream on it with
    `listenKeyExpired` and a close, and it is refused afterwards."""
    import json

    import httpx
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect as ws_connect

    client = trader(exchange.url, USDC="5000")
    assert client.credentials is not None
    header = {"X-MBX-APIKEY": client.credentials.api_key}
    with httpx.Client(base_url=exchange.url + "/api/v3", timeout=WAIT) as http:
        got = http.post("/userDataStream", headers=header)
        assert got.status_code == 200, got.text
        key = got.json()["listenKey"]
        ws_url = exchange.url.replace("http://", "ws://")
        with ws_connect(f"{ws_url}/ws/{key}") as ws:
            placed = client.place("ETH-USDC", "buy", "limit", size="0.1", price="1990")
            seen: dict[str, dict[str, Any]] = {}
            while "executionReport" not in seen or "outboundAccountPosition" not in seen:
                event = json.loads(ws.recv(timeout=WAIT))
                seen.setdefault(event["e"], event)
            report = seen["executionReport"]
            assert report["i"] == placed.order_id and report["s"] == "ETHUSDC"
            assert report["S"] == "BUY" and report["X"] == "NEW"
            usdc = [b for b in seen["outboundAccountPosition"]["B"] if b["a"] == "USDC"]
            assert [Decimal(usdc[0]["l"])] == [Decimal("199")]
        assert (
            http.put("/userDataStream", params={"listenKey": key}, headers=header).status_code
            == 200
        )
        # one key per API key: asking again answers the live one
        assert http.post("/userDataStream", headers=header).json()["listenKey"] == key
        with ws_connect(f"{ws_url}/ws/{key}") as ws:
            assert (
                http.delete(
                    "/userDataStream", params={"listenKey": key}, headers=header
                ).status_code
                == 200
            )
            # an open stream on a closed key hears so, as Binance says it, then is closed
            while (event := json.loads(ws.recv(timeout=WAIT))).get("e") != "listenKeyExpired":
                pass
            assert event["listenKey"] == key
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)  # nothing after it but the close
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        with (
            pytest.raises((InvalidStatus, ConnectionClosed)),
            ws_connect(f"{ws_url}/ws/{key}") as ws,
        ):
            ws.recv(timeout=WAIT)  # a closed key: the handshake or the socket is refused
        gone = http.put("/userDataStream", params={"listenKey": key}, headers=header)
        assert gone.status_code == 400 and gone.json()["code"] == -1125


def test_a_revoked_key_closes_its_user_data_stream(exchange: Exchange) -> None:
    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect

    client = trader(exchange.url)
    assert client.credentials is not None
    header = {"X-MBX-APIKEY": client.credentials.api_key}
    with httpx.Client(base_url=exchange.url + "/api/v3", timeout=WAIT) as http:
        key = http.post("/userDataStream", headers=header).json()["listenKey"]
    ws_url = exchange.url.replace("http://", "ws://")
    with ws_connect(f"{ws_url}/ws/{key}") as ws:
        client.revoke_key(client.credentials.api_key)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
