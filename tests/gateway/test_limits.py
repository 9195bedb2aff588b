"""The trading API's edges: bodies it refuses before parsing them, rate limits and their
headers, the faucet's caps, the public reference routes, the OpenAPI document and the rule
that no secret or signature is ever written to a log or an error.

The gateway runs in-process (`tests.gateway.harness`); its rate limiter's clock stands still,
so a burst is a burst.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from dex.core import commands as mc
from dex.core.enums import MarketStatus
from dex.wire import codec, layout, signing
from tests.bus.contract import aio
from tests.gateway.harness import CHAIN_ID, gateway

FUNDS = {"ETH": "10", "USDC": "100000"}
BUY = {"market": "ETH-USDC", "side": "buy", "type": "limit", "price": "1950.00", "size": "0.1"}
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def error_of(got: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert got.status_code == status, got.text
    assert set(got.json()) == {"error"}, got.text
    error: dict[str, Any] = got.json()["error"]
    assert set(error) == {"code", "message", "field"}, error
    assert error["code"] == code, error
    return error


@aio
async def test_bodies_refused_before_parsing_change_nothing() -> None:
    async with gateway(max_body_bytes=400_000) as h:
        t = await h.onboard(fund=FUNDS)
        before = await h.sent()
        post = "POST", "/v1/orders"
        error_of(await t.call(*post, raw=b'{"market": "ETH-'), 400, "invalid_json")
        error_of(await t.call(*post, raw=b'{"market": "\xff\xfe"}'), 400, "invalid_json")
        deep = b"[" * 100_000 + b"]" * 100_000
        error_of(await t.call(*post, raw=deep), 400, "invalid_json")
        plain = {"content-type": "text/plain"}
        got = await t.call(*post, raw=json.dumps(BUY).encode(), headers=plain)
        assert error_of(got, 415, "unsupported_media_type")["field"] == "content-type"
        big = json.dumps({**BUY, "client_order_id": "x" * 400_000}).encode()
        assert (await t.call(*post, raw=big)).status_code == 413
        for change, field in (
            ({"nonce": 2**63}, "nonce"),
            ({"expires_at": 2**63, "tif": "GTD"}, "expires_at"),
            ({"size": 2**63}, "size"),
            ({"post_only": 10**30}, "post_only"),
            ({"extra": 2**64}, "extra"),
        ):
            got = await t.call(*post, {**BUY, **change})
            assert error_of(got, 400, "invalid_request")["field"] == field, change
        register = {
            "account": t.address,
            "keyType": "hmac",
            "publicKey": "",
            "permissions": "read",
            "nonce": 2**63,
            "expiresAt": 0,
            "signature": "0x" + "11" * 65,
        }
        got = await h.answered(h.client.post("/v1/api-keys", json=register))
        assert error_of(got, 400, "invalid_request")["field"] == "nonce"
        assert await h.sent() == before
        assert (await t.call(*post, BUY)).status_code == 200  # the same route still serves


@aio
async def test_a_burst_of_orders_over_the_bucket_is_429_and_sends_nothing() -> None:
    buckets = {"public": "100/1", "private": "100/1", "orders": "3/1"}
    async with gateway(buckets=buckets) as h:
        t = await h.onboard(fund=FUNDS)
        for left in (2, 1, 0):
            got = await t.call("POST", "/v1/orders", BUY)
            assert got.status_code == 200, got.text
            assert got.headers["x-ratelimit-limit"] == "3"
            assert got.headers["x-ratelimit-remaining"] == str(left)
        before = await h.sent()
        got = await t.call("POST", "/v1/orders", BUY)
        error_of(got, 429, "rate_limited")
        assert int(got.headers["retry-after"]) >= 1
        assert all(name in got.headers for name in RATE_HEADERS)
        assert got.headers["x-ratelimit-remaining"] == "0"
        assert await h.sent() == before
        other = await h.onboard(fund=FUNDS)  # the orders bucket is per account
        assert (await other.call("POST", "/v1/orders", BUY)).status_code == 200
        reads = await t.call("GET", "/v1/api-keys")  # another bucket of the same account
        assert reads.status_code == 200 and reads.headers["x-ratelimit-limit"] == "100"
        h.now[0] += 1  # one second: one more token
        assert (await t.call("POST", "/v1/orders", BUY)).status_code == 200
        error_of(await t.call("POST", "/v1/orders", BUY), 429, "rate_limited")


@aio
async def test_the_public_bucket_is_per_ip() -> None:
    async with gateway(buckets={"public": "3/1", "private": "3/1", "orders": "3/1"}) as h:
        for left in (2, 1, 0):
            got = await h.answered(h.client.get("/v1/markets"))
            assert got.status_code == 200
            assert got.headers["x-ratelimit-remaining"] == str(left)
        got = await h.answered(h.client.get("/v1/time"))
        error_of(got, 429, "rate_limited")
        assert "retry-after" in got.headers
        elsewhere = await h.answered(h.client.get("/v1/markets", headers={"x-forwarded-for": "1"}))
        assert elsewhere.status_code == 429  # a header a client sets is not its address


@aio
async def test_the_faucet_is_capped_per_call_and_per_day() -> None:
    async with gateway(faucet_caps=(100, 250)) as h:
        t = await h.onboard()
        got = await t.call("POST", "/v1/faucet", {"asset": "USDC", "amount": "100.000001"})
        error = error_of(got, 400, "faucet_limit")
        assert error["field"] == "amount" and "100 USDC" in error["message"]
        for _ in range(2):
            got = await t.call("POST", "/v1/faucet", {"asset": "USDC", "amount": "100"})
            assert got.status_code == 200, got.text
        before = await h.sent()
        got = await t.call("POST", "/v1/faucet", {"asset": "USDC", "amount": "60"})
        error = error_of(got, 429, "faucet_limit")
        assert error["field"] == "amount" and "50.000000 left" in error["message"], error
        assert await h.sent() == before
        got = await t.call("POST", "/v1/faucet", {"asset": "USDC", "amount": "50"})
        assert got.status_code == 200, got.text
        assert got.json()["available"] == "250.000000"
        got = await t.call("POST", "/v1/faucet", {"asset": "ETH", "amount": "1"})
        assert got.status_code == 200, got.text  # per asset
        got = await t.call("POST", "/v1/faucet", {"asset": "XYZ", "amount": "1"})
        error_of(got, 404, "unknown_asset")


@aio
async def test_without_a_faucet_the_route_is_404() -> None:
    async with gateway(faucet=False) as h:
        t = await h.onboard()
        before = await h.sent()
        got = await t.call("POST", "/v1/faucet", {"asset": "USDC", "amount": "1"})
        assert got.status_code == 404, got.text
        assert await h.sent() == before


@aio
async def test_reference_routes_eip712_markets_assets_time() -> None:
    async with gateway() as h:
        got = await h.answered(h.client.get("/v1/eip712"))
        assert got.json() == json.loads(json.dumps(signing.eip712_document(CHAIN_ID)))
        assets = (await h.answered(h.client.get("/v1/assets"))).json()
        assert {a["symbol"]: a["decimals"] for a in assets} == {"ETH": 9, "BTC": 8, "USDC": 6}
        clock = (await h.answered(h.client.get("/v1/time"))).json()["server_time"]
        assert abs(clock - h.gw.now_ms()) < 60_000
        markets = {m["market"]: m for m in (await h.answered(h.client.get("/v1/markets"))).json()}
        eth = markets["ETH-USDC"]
        assert (eth["status"], eth["tick_size"], eth["lot_size"]) == ("active", "0.01", "0.0001")
        assert {"maker_fee_bps", "taker_fee_bps", "min_notional"} <= set(eth)

        halt = mc.SetMarketStatus(market="ETH-USDC", status=MarketStatus.HALTED)
        await h.c.bus.append(layout.ADMIN_STREAM, [codec.encode(halt)])
        for _ in range(500):
            await h.c.pump(1)
            got = await h.answered(h.client.get("/v1/markets"))
            if {m["market"]: m for m in got.json()}["ETH-USDC"]["status"] == "halted":
                break
        else:
            raise AssertionError("the halt never showed on /v1/markets")
        statuses = {m["market"]: m["status"] for m in got.json()}
        assert statuses == {"ETH-USDC": "halted", "BTC-USDC": "active"}


@aio
async def test_no_secret_or_signature_in_logs_or_errors() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        ed = await h.onboard(key_type="ed25519")
        bodies = []
        body = json.dumps(BUY).encode()
        headers = t.headers("POST", "/v1/orders", body)
        signatures = [headers["DEX-SIGNATURE"]]
        tampered = {**headers, "DEX-TIMESTAMP": str(int(headers["DEX-TIMESTAMP"]) + 1)}
        for attempt in (
            h.client.post("/v1/orders", content=body, headers=tampered),
            h.client.post("/v1/orders", content=b"{", headers=headers),
            h.client.post("/v1/orders", content=b'{"x": 1}', headers=headers),
        ):
            bodies.append((await h.answered(attempt)).text)
        bodies.append((await t.call("POST", "/v1/orders", {**BUY, "size": "99999"})).text)
        bodies.append((await ed.call("POST", "/v1/orders", BUY)).text)
        bodies.append((await t.call("DELETE", "/v1/api-keys/" + "dk_" + "0" * 32)).text)
        listing = (await t.call("GET", "/v1/api-keys")).text
        logged = repr(h.log.records)
        metrics = (await h.answered(h.client.get("/metrics"))).text
        for text in (*bodies, listing, logged, metrics):
            assert t.secret not in text
            for sig in signatures:
                assert sig not in text
        assert all(re.search(r'"error"', b) for b in bodies[:4]), bodies


PRIVATE = {
    ("/v1/orders", "post"),
    ("/v1/orders", "delete"),
    ("/v1/orders/{order_id}", "delete"),
    ("/v1/orders/{order_id}", "patch"),
    ("/v1/orders/by-client-id/{client_order_id}", "delete"),
    ("/v1/orders/by-client-id/{client_order_id}", "patch"),
    ("/v1/api-keys", "get"),
    ("/v1/api-keys/{api_key}", "delete"),
    ("/v1/faucet", "post"),
}
PUBLIC = {
    ("/v1/time", "get"),
    ("/v1/eip712", "get"),
    ("/v1/markets", "get"),
    ("/v1/assets", "get"),
    ("/v1/api-keys", "post"),
    ("/v1/api-keys/revoke", "post"),
}


@aio
async def test_the_openapi_document_lists_every_trading_route_and_its_refusals() -> None:
    async with gateway() as h:
        doc = (await h.answered(h.client.get("/docs/openapi.json"))).json()
        ops = {(p, m): op for p, item in doc["paths"].items() for m, op in item.items()}
        assert set(ops) >= PRIVATE | PUBLIC, sorted(PRIVATE | PUBLIC - set(ops))
        for where in PRIVATE:
            responses = ops[where]["responses"]
            for status in ("401", "403", "429"):
                assert status in responses, (where, status)
                schema = json.dumps(responses[status])
                assert "ErrorBody" in schema, (where, status, schema)
        page = (await h.answered(h.client.get("/docs"))).text
        sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]*)"', page)
        assert sources, page[:500]
        assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
