"""The order route's fast path (`dex.gateway.fastpath`) answers what the Litestar route would:
the same statuses, error bodies and headers for the same requests, every check kept; what it
does not take (bad bodies, oversized, query strings, browsers) Litestar answers, charged once.

Each scenario runs twice, through the fast path and through Litestar alone, on fresh in-process
gateways (`tests.gateway.harness`); the answers are compared but for what differs by nature
(order ids, request ids, the timestamps of a signature).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import structlog

from tests.bus.contract import aio
from tests.gateway.harness import Harness, Trader, gateway

FUNDS = {"ETH": "10", "USDC": "100000"}
BUY = {"market": "ETH-USDC", "side": "buy", "type": "limit", "price": "1950.00", "size": "0.1"}
ORDERS_BUCKET = {"public": "1000/1000", "private": "1000/1000", "orders": "12/1"}
BY_NATURE = {"order_id", "x-request-id", "content-length"}  # ids differ in length


def _answer(got: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """Status, body and headers, without what differs between two runs by nature."""
    try:
        body: Any = got.json()
    except ValueError:
        body = got.text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in BY_NATURE}
    headers = {k: v for k, v in got.headers.items() if k not in BY_NATURE}
    return got.status_code, body, headers


async def _scenario(h: Harness, t: Trader, other: Trader) -> list[tuple[int, Any, dict[str, str]]]:
    """Every kind of answer POST /v1/orders gives, in an order that uses the orders bucket
    (12 tokens) up: the last requests are over the limit."""
    post = "POST", "/v1/orders"
    raw = json.dumps(BUY).encode()
    sent = [
        await t.call(*post, BUY),  # placed
        await t.call(*post, {**BUY, "client_order_id": "c-1"}),
        await t.call(*post, {**BUY, "client_order_id": "c-1"}),  # the duplicate
        await t.call(*post, {**BUY, "market": "NOPE-USDC"}),  # 404 unknown market
        await t.call(*post, {**BUY, "price": "1950.001"}),  # 400 off tick
        await t.call(*post, {**BUY, "size": "100000"}),  # refused by risk: funds
        await t.call(*post, {**BUY, "bogus": 1}),  # 400 by Litestar: unknown field
        await t.call(*post, raw=raw, headers={"content-type": "text/plain"}),  # 415
        await t.call(*post, BUY, headers={"DEX-SIGNATURE": "00" * 32}),  # 401 bad_signature
        await t.call(*post, BUY, ts=1),  # 401 timestamp_out_of_window
        await other.call(*post, BUY),  # 403 permission_denied (a read-only key)
        await h.answered(h.client.post("/v1/orders", json=BUY)),  # 401 missing_credentials
        await t.call("POST", "/v1/orders?x=1", BUY),  # 401 (the query is signed for)
        await t.call(*post, raw=json.dumps({**BUY, "pad": "x" * 5000}).encode()),  # 413
        await t.call(*post, BUY, headers={"origin": "https://example.org"}),  # through CORS
    ]
    sent += [await t.call(*post, {**BUY, "client_order_id": f"x-{i}"}) for i in range(8)]
    return [_answer(got) for got in sent]


Answers = list[tuple[int, Any, dict[str, str]]]
Scenario = Callable[[Harness, Trader, Trader], Awaitable[Answers]]


async def run_scenario(fast_path: bool, scenario: Scenario) -> tuple[Answers, Harness]:
    """`scenario`'s answers on a fresh gateway (orders bucket of 12, bodies up to 4 KiB,
    CORS for every origin), for a funded trader and a read-only one."""
    async with gateway(
        buckets=ORDERS_BUCKET, max_body_bytes=4096, fast_path=fast_path, cors_origins="*"
    ) as h:
        t = await h.onboard(fund=FUNDS)
        other = await h.onboard(permissions="read")
        return await scenario(h, t, other), h


@aio
async def test_the_fast_path_answers_as_litestar_does() -> None:
    fast, h = await run_scenario(True, _scenario)
    slow, _ = await run_scenario(False, _scenario)
    codes = [
        (status, body["error"]["code"] if "error" in body else body.get("status"))
        for status, body, _ in fast
    ]
    assert codes[:15] == [
        (200, "open"),
        (200, "open"),
        (200, "open"),  # the duplicate: that order, nothing placed
        (404, "unknown_market"),
        (400, "invalid_request"),
        (400, "insufficient_funds"),
        (400, "invalid_request"),
        (415, "unsupported_media_type"),
        (401, "bad_signature"),
        (401, "timestamp_out_of_window"),
        (403, "permission_denied"),
        (401, "missing_credentials"),
        (200, "open"),  # with a query string: Litestar placed it
        (413, "payload_too_large"),
        (200, "open"),  # a browser's: through Litestar's CORS
    ], codes
    # 12 tokens: 9 charged above (refusals before the bucket take none), 3 left
    assert [status for status, _ in codes[15:]] == [200] * 3 + [429] * 5, codes
    assert all(
        {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(headers)
        for status, _, headers in fast
        if status not in (401, 403, 413, 415)  # refused before the bucket
    )
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert a == b, (i, a, b)
    # the fast path answered the orders that decode, Litestar the rest, nothing twice
    assert h.fast.served > 0 and h.fast.handed_over > 0


@aio
async def test_the_request_id_is_echoed_and_bound_while_the_order_is_handled() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        served = h.fast.served
        got = await t.call("POST", "/v1/orders", BUY, headers={"X-Request-Id": "req-42"})
        assert got.status_code == 200, got.text
        assert got.headers["x-request-id"] == "req-42"
        assert h.fast.served == served + 1
        mine = await t.call("POST", "/v1/orders", BUY, headers={"X-Request-Id": "bad id!"})
        assert len(mine.headers["x-request-id"]) == 32  # not sane: a new one


@aio
async def test_an_unexpected_failure_is_a_logged_500_with_the_one_error_shape() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)

        async def broken(data: Any, key: Any) -> Any:
            raise RuntimeError("a bug, with a detail no client may see")

        h.fast.place = broken
        with structlog.testing.capture_logs() as logs:
            got = await t.call("POST", "/v1/orders", BUY, headers={"X-Request-Id": "r-500"})
        assert got.status_code == 500
        assert got.json() == {
            "error": {"code": "internal_error", "message": "internal error", "field": None}
        }
        assert "a bug" not in got.text
        (logged,) = [e for e in logs if e["event"] == "unhandled exception"]
        assert logged["request_id"] == "r-500" and logged["path"] == "/v1/orders"
