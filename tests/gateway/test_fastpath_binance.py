"""`POST /api/v3/order` through the fast path (`dex.gateway.fastpath`) answers what the
Binance adapter's Litestar route would: the same statuses, `{"code", "msg"}` refusals, order
shapes and headers for the same requests, every check (parameters, signature, key, rate limit,
the native order rules) kept, each request charged once; what it does not take (oversized,
browsers) Litestar answers.

Each scenario runs twice, through the fast path and through Litestar alone, on fresh
in-process gateways (`tests.gateway.harness`); the answers are compared but for what differs
by nature (order ids, times, request ids).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from dex.wire import layout
from tests.bus.contract import aio
from tests.gateway.harness import Harness, Trader, gateway
from tests.gateway.test_fastpath import FUNDS, run_scenario
from tests.gateway.test_orders import settles

PATH = "/api/v3/order"
BUY = {
    "symbol": "ETHUSDC",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "price": "1950.00",
    "quantity": "0.1",
}
FORM = "application/x-www-form-urlencoded"
BY_NATURE = {"orderId", "transactTime", "workingTime", "x-request-id", "content-length"}


async def _post(
    t: Trader,
    params: dict[str, Any],
    *,
    in_query: bool = False,
    ts: int | None = None,
    secret: str | None = None,
    headers: dict[str, str] | None = None,
    tail: str = "",
) -> httpx.Response:
    """A Binance-signed order request: the parameters (with `timestamp`) signed with HMAC
    over the query string or the form body, `tail` appended unsigned to the body."""
    text = urlencode({**params, "timestamp": int(time.time() * 1000) if ts is None else ts})
    sig = hmac.new((secret or t.secret).encode(), text.encode(), hashlib.sha256).hexdigest()
    signed = f"{text}&signature={sig}"
    sent = {"X-MBX-APIKEY": t.api_key, "content-type": FORM, **(headers or {})}
    if in_query:
        request = t.h.client.post(f"{PATH}?{signed}", content=tail.encode(), headers=sent)
    else:
        request = t.h.client.post(PATH, content=(signed + tail).encode(), headers=sent)
    return await t.h.answered(request)


def _answer(got: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """Status, body and headers, without what differs between two runs by nature."""
    body: Any = got.json()
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in BY_NATURE}
        if str(body.get("clientOrderId", "")).startswith("dex"):  # made for us: random
            body["clientOrderId"] = "dex..."
    headers = {k: v for k, v in got.headers.items() if k not in BY_NATURE}
    return got.status_code, body, headers


async def _scenario(h: Harness, t: Trader, reader: Trader) -> list[tuple[int, Any, dict[str, str]]]:
    """Every kind of answer the route gives, in an order that uses the orders bucket (12
    tokens) up: the last requests are over the limit."""
    maker = {**BUY, "type": "LIMIT_MAKER"}
    del maker["timeInForce"]
    sent = [
        await _post(t, {**BUY, "newOrderRespType": "RESULT"}),  # placed
        await _post(t, {**maker, "newClientOrderId": "c-1"}),  # FULL, the default
        await _post(t, {**maker, "newClientOrderId": "c-1", "newOrderRespType": "ACK"}),
        await _post(t, {**BUY, "symbol": "NOPEUSDC"}),  # -1121
        await _post(t, {**BUY, "price": "1950.001"}),  # -1013 PRICE_FILTER
        await _post(t, {**BUY, "quantity": "100000"}),  # -2010 no funds
        await _post(t, {**BUY, "type": "TRAILING"}),  # -1116
        await _post(t, {**maker, "side": "SELL", "price": "1900.00"}),  # -2010 would take
        await _post(t, {**BUY, "newOrderRespType": "RESULT"}, in_query=True),  # query signed
        await _post(t, BUY, headers={"origin": "https://example.org"}),  # through CORS
        await _post(t, BUY, headers={"content-type": "text/plain"}),  # -1100 415, not charged
        await _post(t, BUY, tail="&side=SELL"),  # -1101 duplicate, not charged
        await _post(t, BUY, secret="0" * 64),  # -1022 bad signature
        await _post(t, BUY, ts=1),  # -1021 outside the window
        await _post(reader, BUY),  # -2015 a read-only key
        await _post(t, BUY, headers={"X-MBX-APIKEY": ""}),  # -2014 no key
        await _post(t, BUY, tail="&pad=" + "x" * 5000),  # 413 by Litestar: too large
    ]
    sent += [await _post(t, {**BUY, "newClientOrderId": f"x-{i}"}) for i in range(6)]
    return [_answer(got) for got in sent]


@aio
async def test_the_fast_path_answers_the_binance_route_as_litestar_does() -> None:
    fast, h = await run_scenario(True, _scenario)
    slow, _ = await run_scenario(False, _scenario)
    codes = [(status, body.get("status", body.get("code"))) for status, body, _ in fast]
    assert codes[:17] == [
        (200, "NEW"),
        (200, "NEW"),
        (200, None),  # ACK: no status; the duplicate client id answers that order
        (400, -1121),
        (400, -1013),
        (400, -2010),
        (400, -1116),
        (400, -2010),
        (200, "NEW"),  # signed in the query string
        (200, "NEW"),  # a browser's: through Litestar's CORS
        (415, -1100),
        (400, -1101),
        (401, -1022),
        (400, -1021),
        (401, -2015),
        (401, -2014),
        (413, -1100),
    ], codes
    assert fast[7][1]["msg"] == "Order would immediately match and take."
    assert fast[5][1]["msg"] == "Account has insufficient balance for requested action."
    full = fast[1][1]
    assert full["clientOrderId"] == "c-1" and full["fills"] == [] and full["type"] == "LIMIT_MAKER"
    assert "fills" not in fast[0][1] and fast[0][1]["cummulativeQuoteQty"] == "0.000000"
    # 12 tokens: 10 charged above (refusals before the key check take none), 2 left
    assert [status for status, _ in codes[17:]] == [200] * 2 + [429] * 4, codes
    assert all(body["code"] == -1003 for status, body, _ in fast[19:])
    refused_before_the_bucket = range(10, 17)  # 415, -1101, -1022, -1021, -2015, -2014, 413
    limits = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
    for i, (_, _, headers) in enumerate(fast):
        assert (limits <= set(headers)) == (i not in refused_before_the_bucket), (i, headers)
    assert "retry-after" in fast[-1][2]
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert a == b, (i, a, b)
    # the fast path answered all but the oversized and the browser's, nothing twice
    assert h.fast.handed_over == 2 and h.fast.served == len(fast) - 2


@aio
async def test_the_binance_route_refuses_a_failure_of_ours_with_1000_and_logs_it() -> None:
    for fast_path in (True, False):
        async with gateway(fast_path=fast_path) as h:
            t = await h.onboard(fund=FUNDS)
            assert h.fast.binance is not None

            async def broken(*_: Any) -> Any:
                raise RuntimeError("a bug, with a detail no client may see")

            h.fast.binance.new_order = broken  # type: ignore[method-assign]
            with structlog.testing.capture_logs() as logs:
                got = await _post(t, BUY, headers={"X-Request-Id": "r-500"})
            assert got.status_code == 500, fast_path
            assert got.json() == {
                "code": -1000,
                "msg": "An unknown error occurred while processing the request.",
            }
            assert got.headers["x-request-id"] == "r-500"
            (logged,) = [e for e in logs if e["event"] == "unhandled exception"]
            assert logged["request_id"] == "r-500" and logged["path"] == PATH


@aio
async def test_an_order_placed_through_the_fast_path_is_the_native_order() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        got = await _post(t, {**BUY, "newClientOrderId": "same-order"})
        assert got.status_code == 200, got.text
        assert h.fast.served == 1
        await settles(h, t, "USDC", (100000_000000 - 195_000000, 195_000000))
        # placed through the key, as a native order is: what cancel-on-disconnect cancels
        shard = layout.shard_for(t.address, h.c.r_count)
        held = h.c.risk[shard].ledger.orders[got.json()["orderId"]]
        assert held.via == t.api_key
        # the native API knows it by its client id, and cancelling it frees the hold
        gone = await t.call("DELETE", "/v1/orders/by-client-id/same-order?market=ETH-USDC")
        assert gone.status_code == 200, gone.text
        assert gone.json()["order_id"] == got.json()["orderId"]
        await settles(h, t, "USDC", (100000_000000, 0))
