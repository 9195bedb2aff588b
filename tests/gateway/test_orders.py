"""Orders through the trading API: every kind and outcome the engine has, answered as the
engine left the order (status, fills, remaining, reason) in decimal strings; idempotent
retries by client order id; amend and every cancel. Outcomes of the book are 200s; refusals
before the book are 4xx and send nothing.

The gateway runs in-process (`tests.gateway.harness`): signed requests of fresh wallets.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from dex.wire import layout
from tests.bus.contract import aio
from tests.gateway.harness import Harness, Trader, gateway

FUNDS = {"ETH": "10", "USDC": "100000"}
ETH = 10**9
USDC = 10**6


def order(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"market": "ETH-USDC", "side": "buy", "type": "limit", "size": "0.1"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not None}


async def place(t: Trader, **kw: Any) -> dict[str, Any]:
    got = await t.call("POST", "/v1/orders", order(**kw))
    assert got.status_code == 200, got.text
    out: dict[str, Any] = got.json()
    return out


def balance(h: Harness, t: Trader, asset: str) -> tuple[int, int]:
    shard = layout.shard_for(t.address, h.c.r_count)
    available, locked = h.c.risk[shard].ledger.balance(t.address, asset)[:2]
    return available, locked


async def settles(h: Harness, t: Trader, asset: str, want: tuple[int, int]) -> None:
    """Wait until t's balance of `asset` is `want`: risk releases a hold when it reads the
    engine's answer, which may be after the gateway has answered."""
    deadline = time.monotonic() + 10
    while balance(h, t, asset) != want:
        assert time.monotonic() < deadline, (balance(h, t, asset), want)
        await h.c.pump(1)


def error_of(got: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert got.status_code == status, got.text
    error: dict[str, Any] = got.json()["error"]
    assert error["code"] == code, error
    return error


@aio
async def test_limit_orders_rest_then_fill_with_decimal_fills() -> None:
    async with gateway() as h:
        maker, taker = await h.onboard(fund=FUNDS), await h.onboard(fund=FUNDS)
        rest = await place(maker, side="sell", price="2000", size="1", client_order_id="m-1")
        assert rest["status"] == "open" and rest["tif"] == "GTC"
        assert (rest["price"], rest["size"], rest["remaining"]) == ("2000.00", "1.0000", "1.0000")
        assert rest["client_order_id"] == "m-1" and rest["duplicate"] is False
        took = await place(taker, side="buy", price="2000.00", size="0.25")
        assert took["status"] == "filled"
        assert (took["filled"], took["remaining"]) == ("0.2500", "0.0000")
        [fill] = took["fills"]
        assert (fill["price"], fill["size"], fill["liquidity"]) == ("2000.00", "0.2500", "taker")
        assert fill["fee_asset"] == "ETH"


@aio
async def test_market_orders_by_size_or_quote_size_default_to_ioc() -> None:
    async with gateway() as h:
        maker, taker = await h.onboard(fund=FUNDS), await h.onboard(fund=FUNDS)
        await place(maker, side="sell", price="2000", size="1")
        by_quote = await place(taker, type="market", size=None, quote_size="1000")
        assert (by_quote["tif"], by_quote["status"], by_quote["filled"]) == (
            "IOC",
            "filled",
            "0.5000",
        )
        assert by_quote["quote_size"] == "1000.000000"
        by_size = await place(taker, type="market", size="0.8")  # 0.5 left in the book
        assert by_size["tif"] == "IOC"
        assert (by_size["status"], by_size["filled"]) == ("cancelled", "0.5000")
        assert by_size["reason"] is not None
        nothing = await place(taker, type="market", size="0.1")  # an empty book
        assert nothing["status"] == "cancelled" and nothing["filled"] == "0.0000"


@aio
async def test_fok_post_only_and_ioc_outcomes_are_200_with_their_reason() -> None:
    async with gateway() as h:
        maker, taker = await h.onboard(fund=FUNDS), await h.onboard(fund=FUNDS)
        await place(maker, side="sell", price="2000", size="0.5")
        usdc = balance(h, taker, "USDC")
        fok = await place(taker, price="2000", size="1", tif="FOK")
        assert (fok["status"], fok["reason"], fok["filled"]) == ("cancelled", "fok", "0.0000")
        await settles(h, taker, "USDC", usdc)  # nothing held, nothing traded
        post = await place(taker, price="2000", size="0.1", post_only=True)
        assert post["status"] in ("rejected", "cancelled")
        assert post["reason"] == "post_only_would_take" and post["fills"] == []
        ioc = await place(taker, price="2000", size="0.8", tif="IOC")
        assert (ioc["status"], ioc["filled"], ioc["remaining"]) == ("cancelled", "0.5000", "0.0000")
        assert ioc["reason"] == "ioc"
        await settles(h, taker, "USDC", (usdc[0] - 1000 * USDC, 0))  # the rest holds nothing


@pytest.mark.parametrize(
    ("stp", "status", "maker_left"),
    [
        ("expire_taker", "cancelled", True),
        ("expire_maker", "open", False),
        ("expire_both", "cancelled", False),
    ],
)
@aio
async def test_self_trade_prevention_modes(stp: str, status: str, maker_left: bool) -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        own = await place(t, side="sell", price="2000", size="0.5")
        got = await place(t, side="buy", price="2000", size="0.1", stp=stp)
        assert (got["status"], got["filled"], got["fills"]) == (status, "0.0000", [])
        if status == "cancelled":
            assert got["reason"] == "stp"
        cancel = await t.call("DELETE", f"/v1/orders/{own['order_id']}?market=ETH-USDC")
        assert cancel.status_code == (200 if maker_left else 404), cancel.text


@aio
async def test_an_iceberg_shows_its_display_size_and_fills_whole() -> None:
    async with gateway() as h:
        maker, taker = await h.onboard(fund=FUNDS), await h.onboard(fund=FUNDS)
        berg = await place(maker, side="sell", price="2000", size="1", display_size="0.1")
        assert berg["status"] == "open"
        took = await place(taker, price="2000", size="0.6")
        assert (took["status"], took["filled"]) == ("filled", "0.6000")


@aio
async def test_stop_orders_wait_untriggered_and_a_trade_triggers_a_stop_market() -> None:
    async with gateway() as h:
        t, a, b = [await h.onboard(fund=FUNDS) for _ in range(3)]
        await place(a, side="sell", price="2000", size="0.1")
        await place(b, price="2000", size="0.1")  # a last price: stops need one
        limit = await place(t, side="sell", type="stop_limit", price="1900", trigger_price="1950")
        assert (limit["status"], limit["trigger_price"]) == ("untriggered", "1950.00")
        stop = await place(t, side="sell", type="stop_market", price=None, trigger_price="1995")
        assert stop["status"] == "untriggered" and stop["type"] == "stop_market"
        await place(b, side="buy", price="1980", size="1")  # the bid the stop will sell into
        await place(a, side="sell", price="1990", size="0.1")
        trade = await place(b, type="market", size="0.1")  # the last trade at 1990 <= 1995
        assert trade["status"] == "filled"
        # the stop fired and sold 0.1 ETH at 1980 into b's bid; the stop limit still waits
        await settles(h, t, "ETH", (10 * ETH - 2 * ETH // 10, ETH // 10))


@aio
async def test_gtd_is_accepted_and_an_expiry_in_the_past_or_too_large_is_a_400() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        ahead = int(time.time() * 1000) + 3_600_000
        gtd = await place(t, price="1950", tif="GTD", expires_at=ahead)
        assert (gtd["status"], gtd["tif"]) == ("open", "GTD")
        before = await h.sent()
        for expires_at in (int(time.time() * 1000) - 60_000, 2**62, 2**63, 2**64):
            body = order(price="1950", tif="GTD", expires_at=expires_at)
            got = await t.call("POST", "/v1/orders", body)
            assert got.status_code == 400, (expires_at, got.text)
            assert got.json()["error"]["field"] == "expires_at", got.text
        assert await h.sent() == before


@aio
async def test_a_repeated_client_order_id_answers_that_order_and_holds_nothing_more() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        first = await place(t, price="1950", client_order_id="retry-1")
        held = balance(h, t, "USDC")
        assert held[1] == 195 * USDC
        again = await place(t, price="1950", client_order_id="retry-1")
        assert again["order_id"] == first["order_id"]
        assert (again["duplicate"], again["status"]) == (True, "open")
        assert balance(h, t, "USDC") == held
        other = await place(t, price="1900", size="0.2", client_order_id="retry-1")
        assert other["order_id"] == first["order_id"] and other["duplicate"] is True
        assert balance(h, t, "USDC") == held


@aio
async def test_amend_by_id_and_by_client_id() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        o = await place(t, price="1950", size="0.5", client_order_id="am-1")
        path = f"/v1/orders/{o['order_id']}?market=ETH-USDC"
        smaller = await t.call("PATCH", path, {"size": "0.3"})
        assert smaller.status_code == 200, smaller.text
        assert smaller.json()["kept_priority"] is True
        assert (smaller.json()["size"], smaller.json()["remaining"]) == ("0.3000", "0.3000")
        moved = await t.call(
            "PATCH", "/v1/orders/by-client-id/am-1?market=ETH-USDC", {"price": "1940.50"}
        )
        assert moved.status_code == 200, moved.text
        assert (moved.json()["price"], moved.json()["kept_priority"]) == ("1940.50", False)
        await settles(h, t, "USDC", (100_000 * USDC - 582_150_000, 582_150_000))
        before = await h.sent()
        got = await t.call("PATCH", path, {})
        assert error_of(got, 400, "invalid_request")["field"] == "price"
        got = await t.call("PATCH", path, {"price": "1940.505"})
        assert error_of(got, 400, "invalid_request")["field"] == "price"
        assert await h.sent() == before
        got = await t.call("PATCH", "/v1/orders/999999?market=ETH-USDC", {"size": "0.1"})
        error_of(got, 404, "unknown_order")


@aio
async def test_cancel_by_id_by_client_id_and_all() -> None:
    async with gateway() as h:
        t = await h.onboard(fund={**FUNDS, "BTC": "1"})
        one = await place(t, price="1950")
        await place(t, price="1940", client_order_id="c-2")
        got = await t.call("DELETE", f"/v1/orders/{one['order_id']}?market=ETH-USDC")
        assert got.status_code == 200, got.text
        assert (got.json()["status"], got.json()["order_id"]) == ("cancelled", one["order_id"])
        got = await t.call("DELETE", "/v1/orders/by-client-id/c-2?market=ETH-USDC")
        assert got.status_code == 200, got.text
        assert got.json()["client_order_id"] == "c-2"
        again = await t.call("DELETE", f"/v1/orders/{one['order_id']}?market=ETH-USDC")
        error_of(again, 404, "unknown_order")
        await settles(h, t, "USDC", (100_000 * USDC, 0))

        eth = [(await place(t, price=p))["order_id"] for p in ("1900", "1910")]
        btc = (await place(t, market="BTC-USDC", side="sell", price="60000", size="0.01"))[
            "order_id"
        ]
        got = await t.call("DELETE", "/v1/orders?market=ETH-USDC")
        assert got.status_code == 200, got.text
        assert sorted(got.json()["cancelled"]) == sorted(eth)
        got = await t.call("DELETE", "/v1/orders")
        assert got.status_code == 200, got.text
        assert got.json()["cancelled"] == [btc]
        await settles(h, t, "BTC", (10**8, 0))
        await settles(h, t, "USDC", (100_000 * USDC, 0))


@aio
async def test_refusals_before_the_book_are_4xx_naming_the_field_and_send_nothing() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        before = await h.sent()
        for change, status, field in (
            ({"price": "1950.001"}, 400, "price"),
            ({"size": "0.00001"}, 400, "size"),
            ({"price": "-1"}, 400, "price"),
            ({"size": "-0.1"}, 400, "size"),
            ({"size": 1}, 400, "size"),
            ({"side": "long"}, 400, "side"),
            ({"post_only": "yes"}, 400, "post_only"),
            ({"tif": "fok"}, 400, "tif"),
            ({"colour": "red"}, 400, "colour"),
            ({"market": "DOGE-USDC"}, 404, "market"),
            ({"type": "market", "post_only": True}, 400, "post_only"),
        ):
            got = await t.call("POST", "/v1/orders", order(**{"price": "1950", **change}))
            assert got.status_code == status, (change, got.text)
            assert got.json()["error"]["field"] == field, (change, got.text)
        assert await h.sent() == before


@aio
async def test_insufficient_funds_is_a_4xx_stating_the_amount_in_decimal_units() -> None:
    async with gateway() as h:
        t = await h.onboard(fund={"USDC": "10"})
        held = balance(h, t, "USDC")
        got = await t.call("POST", "/v1/orders", order(price="2000", size="1"))
        error = error_of(got, 400, "insufficient_funds")
        assert balance(h, t, "USDC") == held
        assert "2000 USDC" in error["message"] and "2000000000" not in error["message"], error
        assert "than the 10 USDC available" in error["message"], error
