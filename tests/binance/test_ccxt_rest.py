"""Unmodified `ccxt.binance` against a running exchange: every REST call a bot makes, with
the values the native API gives for the same orders, fills, fees and balances."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt
import httpx
import pytest

from dex.client import Client, Wallet
from tests.client.conftest import Exchange
from tests.support.trading import holdings, settled, trader

SYMBOL = "ETH/USDC"


@pytest.fixture(scope="module")
def maker(exchange: Exchange) -> Client:
    return trader(exchange.url, ETH="50", USDC="100000")


@pytest.fixture(scope="module")
def taker(exchange: Exchange) -> Client:
    return trader(exchange.url, ETH="50", USDC="100000")


def test_public_calls(binance: Callable[..., Any], maker: Client, taker: Client) -> None:
    ex = binance()
    markets = ex.load_markets()
    assert SYMBOL in markets and "BTC/USDC" in markets
    m = markets[SYMBOL]
    assert m["id"] == "ETHUSDC" and m["spot"]
    assert m["precision"]["price"] == 0.01 and m["precision"]["amount"] == 0.0001
    assert m["limits"]["cost"]["min"] == 1
    assert abs(ex.fetch_time() - ex.milliseconds()) < 60_000

    mk, tk = binance(maker), binance(taker)
    mk.create_order(SYMBOL, "limit", "sell", 0.5, 2000)
    tk.create_order(SYMBOL, "limit", "buy", 0.2, 2000)
    mk.create_order(SYMBOL, "limit", "buy", 1, 1990)

    book = settled("the book", lambda: (b := ex.fetch_order_book(SYMBOL))["bids"] and b)
    native = maker.book("ETH-USDC")
    assert book["nonce"] == native["seq"]
    assert book["bids"][0] == [1990.0, 1.0] and book["asks"][0] == [2000.0, 0.3]

    ticker = settled("the ticker", lambda: (t := ex.fetch_ticker(SYMBOL))["last"] and t)
    assert ticker["last"] == 2000 and ticker["bid"] == 1990 and ticker["ask"] == 2000
    assert ticker["baseVolume"] >= 0.2
    tickers = ex.fetch_tickers([SYMBOL, "BTC/USDC"])
    assert set(tickers) == {SYMBOL, "BTC/USDC"}
    assert SYMBOL in ex.fetch_tickers()

    trades = ex.fetch_trades(SYMBOL)
    assert trades[-1]["price"] == 2000 and trades[-1]["amount"] == 0.2
    assert trades[-1]["side"] == "buy"
    ohlcv = ex.fetch_ohlcv(SYMBOL, "1m", limit=5)
    assert ohlcv[-1][4] == 2000 and ohlcv[-1][5] >= 0.2

    with pytest.raises(ccxt.BadSymbol):
        ex.publicGetDepth({"symbol": "NOPEUSDC"})
    assert len(mk.cancel_all_orders(SYMBOL)) == 2  # the book empty for the next tests


def _native_fills(client: Client, order_id: int) -> list[Any]:
    return [f for f in client.fills(market="ETH-USDC").items if f.order_id == order_id]


def test_orders_fills_and_balances_equal_the_native_api(
    binance: Callable[..., Any], exchange: Exchange
) -> None:
    seller = trader(exchange.url, ETH="10", USDC="10000")
    buyer = trader(exchange.url, ETH="10", USDC="10000")
    mk, tk = binance(seller), binance(buyer)
    mk.load_markets()
    tk.load_markets()

    resting = mk.create_order(SYMBOL, "limit", "sell", 1, 2010)
    assert resting["status"] == "open" and resting["clientOrderId"].startswith("x-dex-")
    post = mk.create_order(SYMBOL, "limit", "sell", 0.5, 2020, {"postOnly": True})
    assert post["status"] == "open"
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        tk.create_order(SYMBOL, "limit", "buy", 0.1, 2010, {"postOnly": True})

    taken = tk.create_order(SYMBOL, "limit", "buy", 0.4, 2010, {"timeInForce": "IOC"})
    assert taken["status"] == "closed" and taken["filled"] == 0.4
    assert taken["average"] == 2010 and taken["cost"] == pytest.approx(804)
    native = settled("the fill", lambda: _native_fills(buyer, int(taken["id"])))
    assert [(t["price"], t["amount"]) for t in taken["trades"]] == [
        (float(f.price), float(f.size)) for f in native
    ]
    assert Decimal(str(taken["trades"][0]["fee"]["cost"])) == native[0].fee

    fok = tk.create_order(SYMBOL, "limit", "buy", 2, 2010, {"timeInForce": "FOK"})
    assert fok["status"] == "expired" and fok["filled"] == 0
    by_amount = tk.create_order(SYMBOL, "market", "buy", 0.1)
    assert by_amount["filled"] == 0.1
    by_cost = tk.create_order(SYMBOL, "market", "buy", None, None, {"cost": 201})
    assert by_cost["cost"] == pytest.approx(201) and by_cost["filled"] == 0.1

    # the maker's history shows the taker's fills once persistence has stored them
    # (the order from the matching log, its fills' cost from the risk log's settlements)
    def maker_order() -> Any:
        o = mk.fetch_order(resting["id"], SYMBOL)
        return o["filled"] == pytest.approx(0.6) and o["cost"] == pytest.approx(0.6 * 2010) and o

    got = settled("the maker's fills", maker_order)
    assert got["status"] == "open"
    assert {o["id"] for o in mk.fetch_open_orders(SYMBOL)} == {resting["id"], post["id"]}

    cancelled = mk.cancel_order(post["id"], SYMBOL)
    assert cancelled["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        mk.cancel_order(post["id"], SYMBOL)
    with pytest.raises(ccxt.OrderNotFound):
        mk.fetch_order("999999999", SYMBOL)
    mk.create_order(SYMBOL, "limit", "sell", 0.2, 2100)
    gone = mk.cancel_all_orders(SYMBOL)
    assert len(gone) == 2 and all(o["status"] == "canceled" for o in gone)
    assert mk.fetch_open_orders(SYMBOL) == []

    closed = tk.fetch_closed_orders(SYMBOL)
    assert {o["id"] for o in closed} >= {taken["id"], by_amount["id"], by_cost["id"]}
    mine = tk.fetch_my_trades(SYMBOL)
    native_all = buyer.fills(market="ETH-USDC").items
    assert sorted((t["id"], t["price"], t["amount"]) for t in mine) == sorted(
        (str(f.trade_id), float(f.price), float(f.size)) for f in native_all
    )
    assert all(t["takerOrMaker"] == "taker" for t in mine)

    balance = tk.fetch_balance()
    native_bal = holdings(buyer)
    for asset in ("ETH", "USDC"):
        assert Decimal(str(balance[asset]["free"])) == native_bal[asset][0]
        assert Decimal(str(balance[asset]["used"])) == native_bal[asset][1]


def test_refusals_raise_what_binance_would(binance: Callable[..., Any], exchange: Exchange) -> None:
    poor = trader(exchange.url, USDC="10")
    ex = binance(poor)
    ex.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYMBOL, "limit", "buy", 1, 1995)
    with pytest.raises(ccxt.InvalidOrder):
        ex.privatePostOrder(  # off the tick (ccxt itself rounds prices to the tick)
            {
                "symbol": "ETHUSDC",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": "1995.001",
            }
        )
    with pytest.raises(ccxt.InvalidOrder):
        ex.privatePostOrder(  # off the lot
            {
                "symbol": "ETHUSDC",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.00011",
                "price": "1995",
            }
        )
    with pytest.raises(ccxt.BadSymbol):
        ex.privatePostOrder(
            {"symbol": "NOPEUSDC", "side": "BUY", "type": "MARKET", "quantity": "1"}
        )
    for cid in ("../balances", "a/b?c=1", "x" * 37):  # no client order id looks like these
        with pytest.raises(ccxt.OrderNotFound):
            ex.privateGetOrder({"symbol": "ETHUSDC", "origClientOrderId": cid})
    with pytest.raises(ccxt.BadRequest):  # neither id: -1102
        ex.privateGetOrder({"symbol": "ETHUSDC"})
    stranger = binance(apiKey="dk_" + "0" * 32, secret="x" * 43)
    with pytest.raises(ccxt.AuthenticationError):
        stranger.fetch_balance()
    forged = binance(apiKey=poor.credentials.api_key, secret="y" * 43)  # type: ignore[union-attr]
    with pytest.raises(ccxt.AuthenticationError):
        forged.fetch_balance()
    assert holdings(poor)["USDC"] == (Decimal(10), Decimal(0))


def test_an_order_test_checks_the_order_and_places_nothing(
    binance: Callable[..., Any], exchange: Exchange
) -> None:
    poor = trader(exchange.url, USDC="10")  # too poor for it: Binance's test checks no funds
    ex = binance(poor)
    ex.load_markets()
    got = ex.create_order(SYMBOL, "limit", "buy", 1, 1995, {"test": True})
    assert got["id"] is None  # nothing placed: nothing to name
    assert ex.fetch_open_orders(SYMBOL) == []
    assert holdings(poor)["USDC"] == (Decimal(10), Decimal(0))
    order = {"symbol": "ETHUSDC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    with pytest.raises(ccxt.InvalidOrder):  # off the tick
        ex.privatePostOrderTest({**order, "quantity": "0.001", "price": "1995.001"})
    with pytest.raises(ccxt.BadSymbol):
        ex.privatePostOrderTest({**order, "symbol": "NOPEUSDC", "quantity": "1", "price": "1"})
    reader = Client(exchange.url, timeout=15)
    reader.onboard(Wallet.generate(), permissions="read")
    with pytest.raises(ccxt.AuthenticationError):  # a read-only key may not test orders
        binance(reader).privatePostOrderTest({**order, "quantity": "0.001", "price": "1995"})


def _refusal(e: Exception) -> dict[str, Any]:
    """The JSON answer ccxt puts in its exception's message (after the exchange's id)."""
    body: dict[str, Any] = json.loads(str(e).split(" ", 1)[1])
    return body


def test_edit_order_cancels_then_places(binance: Callable[..., Any], exchange: Exchange) -> None:
    client = trader(exchange.url, USDC="1000")
    ex = binance(client)
    ex.load_markets()
    first = ex.create_order(SYMBOL, "limit", "buy", 0.2, 1900)  # holds 380
    # 585 fits the 1,000 only because the first order's hold is released before it is placed
    edited = ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.3, 1950)
    assert edited["id"] != first["id"] and edited["status"] == "open"
    assert (edited["price"], edited["amount"]) == (1950, 0.3)
    assert ex.fetch_order(first["id"], SYMBOL)["status"] == "canceled"
    assert [o["id"] for o in ex.fetch_open_orders(SYMBOL)] == [edited["id"]]
    assert settled("the hold moved", lambda: holdings(client)["USDC"][1] == Decimal(585))

    # the new order is checked first: a malformed one cancels nothing
    replace = {
        "symbol": "ETHUSDC",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.1",
        "cancelOrderId": edited["id"],
    }
    with pytest.raises(ccxt.InvalidOrder):
        ex.privatePostOrderCancelReplace(
            {**replace, "price": "1950.001", "cancelReplaceMode": "STOP_ON_FAILURE"}
        )
    # a failed cancel places nothing (STOP_ON_FAILURE), or places all the same (ALLOW_FAILURE)
    unknown = {**replace, "price": "1900", "cancelOrderId": "999999999"}
    with pytest.raises(ccxt.ExchangeError) as refused:
        ex.privatePostOrderCancelReplace({**unknown, "cancelReplaceMode": "STOP_ON_FAILURE"})
    body = _refusal(refused.value)
    assert body["code"] == -2022 and body["data"]["newOrderResult"] == "NOT_ATTEMPTED"
    assert body["data"]["cancelResponse"] == {"code": -2011, "msg": "Unknown order sent."}
    assert [o["id"] for o in ex.fetch_open_orders(SYMBOL)] == [edited["id"]]
    with pytest.raises(ccxt.ExchangeError) as partly:
        ex.privatePostOrderCancelReplace({**unknown, "cancelReplaceMode": "ALLOW_FAILURE"})
    body = _refusal(partly.value)
    assert body["code"] == -2021
    assert (body["data"]["cancelResult"], body["data"]["newOrderResult"]) == ("FAILURE", "SUCCESS")
    placed = body["data"]["newOrderResponse"]
    assert {o["id"] for o in ex.fetch_open_orders(SYMBOL)} == {edited["id"], str(placed["orderId"])}
    # cancelled, but the new order refused (no funds): partly failed, the hold released
    with pytest.raises(ccxt.ExchangeError) as poor:
        ex.privatePostOrderCancelReplace(
            {
                **replace,
                "price": "1900",
                "quantity": "5",
                "cancelOrderId": edited["id"],
                "cancelReplaceMode": "STOP_ON_FAILURE",
            }
        )
    body = _refusal(poor.value)
    assert body["code"] == -2021 and body["data"]["cancelResponse"]["status"] == "CANCELED"
    assert body["data"]["newOrderResponse"]["code"] == -2010
    assert [o["id"] for o in ex.fetch_open_orders(SYMBOL)] == [str(placed["orderId"])]
    assert settled("one hold left", lambda: holdings(client)["USDC"][1] == Decimal(190))


def test_an_ed25519_key(binance: Callable[..., Any], exchange: Exchange) -> None:
    client = Client(exchange.url, timeout=15)
    client.onboard(Wallet.generate(), key_type="ed25519")
    client.faucet("USDC", "1000")
    ex = binance(client)
    ex.load_markets()
    assert ex.fetch_balance()["USDC"]["free"] == 1000
    order = ex.create_order(SYMBOL, "limit", "buy", 0.01, 1900)
    assert ex.fetch_order(order["id"], SYMBOL)["status"] == "open"
    assert ex.cancel_order(order["id"], SYMBOL)["status"] == "canceled"


def test_over_the_rate_limit(binance: Callable[..., Any], exchange: Exchange) -> None:
    """Last in the module: it spends this client IP's public bucket (1200, 20 a second).
    Binance answers 429 with code -1003, which ccxt raises as DDoSProtection (the parent of
    RateLimitExceeded: ccxt maps a 429 status before it reads the code)."""
    with httpx.Client(base_url=exchange.url) as http:
        answers = (http.get("/api/v3/ping") for _ in range(2000))
        refused = next(r for r in answers if r.status_code != 200)
        assert refused.status_code == 429 and refused.json()["code"] == -1003
        assert int(refused.headers["retry-after"]) >= 0
    ex = binance()
    with pytest.raises(ccxt.DDoSProtection):  # 20 tokens a second come back meanwhile
        for _ in range(100):
            ex.fetch_time()
