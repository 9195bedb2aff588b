"""Unmodified `ccxt.binance` against a running exchange: every REST call a bot makes, with
the values the native API gives for the same orders, fills, fees and balances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ccxt
import pytest

from dex.client import Client
from tests.client.conftest import Exchange
from tests.support.trading import settled, trader

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
