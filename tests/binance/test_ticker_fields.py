"""The Binance ticker shapes: REST `ticker/24hr` and the `@ticker`, `@miniTicker` and
`@bookTicker` streams are made from one native ticker by `common.ticker_24hr`, so a stream's
field carries the same value as its REST field (the weighted average price included)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dex.gateway.binance import common as bc
from dex.gateway.binance.ws import Connection

NATIVE = {
    "market": "ETH-USDC",
    "seq": 41,
    "open": "2000.00",
    "high": "2100.00",
    "low": "1990.00",
    "last": "2050.00",
    "change": "50.00",
    "base_volume": "3.0000",
    "quote_volume": "6090.00",
    "trades": 7,
    "best_bid": "2049.00",
    "best_bid_size": "1.5000",
    "best_ask": "2051.00",
    "best_ask_size": "0.2500",
}
NOW = 1_765_000_000_000


def streams(names: list[str]) -> dict[str, Any]:
    conn = Connection(SimpleNamespace(markets=SimpleNamespace(params={})), combined=False)  # type: ignore[arg-type]
    conn.streams = {n: ("ticker", "ETH-USDC", "") for n in names}
    return dict(conn._tickers(NATIVE, "ETHUSDC", "ethusdc", NOW))


def test_rest_ticker_from_a_native_one() -> None:
    got = bc.ticker_24hr(NATIVE, "0.00", "0.0000", NOW)
    assert got["symbol"] == "ETHUSDC"
    assert got["priceChange"] == "50.00"
    assert got["priceChangePercent"] == "2.500"
    assert got["weightedAvgPrice"] == "2030.00"  # 6090 / 3
    assert (got["openPrice"], got["lastPrice"], got["prevClosePrice"]) == (
        "2000.00",
        "2050.00",
        "2000.00",
    )
    assert (got["bidPrice"], got["bidQty"], got["askPrice"], got["askQty"]) == (
        "2049.00",
        "1.5000",
        "2051.00",
        "0.2500",
    )
    assert (got["openTime"], got["closeTime"], got["count"]) == (NOW - 86_400_000, NOW, 7)


def test_an_empty_market_has_zeros_not_errors() -> None:
    empty = {"market": "ETH-USDC", "base_volume": "0", "quote_volume": "0", "trades": 0}
    got = bc.ticker_24hr(empty, "0.00", "0.0000", NOW)
    assert got["lastPrice"] == got["openPrice"] == "0.00"
    assert got["priceChangePercent"] == "0.000" and got["weightedAvgPrice"] == "0.00"


def test_every_stream_field_equals_its_rest_field() -> None:
    rest = bc.ticker_24hr(NATIVE, "0", "0", NOW)  # the test connection knows no market rules
    got = streams(["ethusdc@ticker", "ethusdc@miniTicker", "ethusdc@bookTicker"])
    ticker, mini, book = got["ethusdc@ticker"], got["ethusdc@miniTicker"], got["ethusdc@bookTicker"]
    assert (ticker["e"], ticker["E"], ticker["s"]) == ("24hrTicker", NOW, "ETHUSDC")
    assert ticker["w"] == rest["weightedAvgPrice"] == "2030"
    assert ticker["p"] == rest["priceChange"] and ticker["P"] == rest["priceChangePercent"]
    assert (ticker["c"], ticker["o"], ticker["h"], ticker["l"]) == (
        "2050.00",
        "2000.00",
        "2100.00",
        "1990.00",
    )
    assert (ticker["v"], ticker["q"], ticker["n"]) == ("3.0000", "6090.00", 7)
    assert (mini["e"], mini["c"], mini["o"], mini["v"]) == (
        "24hrMiniTicker",
        "2050.00",
        "2000.00",
        "3.0000",
    )
    assert list(book) == ["u", "s", "b", "B", "a", "A"]
    assert book == {
        "u": 41,
        "s": "ETHUSDC",
        "b": "2049.00",
        "B": "1.5000",
        "a": "2051.00",
        "A": "0.2500",
    }


def test_only_the_subscribed_streams_are_made() -> None:
    assert list(streams(["ethusdc@miniTicker"])) == ["ethusdc@miniTicker"]
    assert streams([]) == {}
