"""Who may call the trading API: every refusal of a signed request with its own code, API keys
registered and revoked by the wallet, and wallet-signed orders. A refused request sends
nothing to a risk shard (`h.sent()` unchanged).

The gateway runs in-process (`tests.gateway.harness`): signed requests of fresh wallets.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.bus.contract import aio
from tests.gateway.harness import Harness, Trader, gateway

FUNDS = {"ETH": "10", "USDC": "100000"}
BUY = {"market": "ETH-USDC", "side": "buy", "type": "limit", "price": "1950.00", "size": "0.1"}


def error_of(got: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert got.status_code == status, got.text
    error: dict[str, Any] = got.json()["error"]
    assert error["code"] == code, error
    return error


async def send_signed_as(
    t: Trader, method: str, signed_path: str, sent_path: str, signed: bytes, sent: bytes
) -> httpx.Response:
    """A request whose headers sign `signed_path` + `signed` but which sends other bytes."""
    headers = t.headers(method, signed_path, signed)
    headers["content-type"] = "application/json"
    return await t.h.answered(t.h.client.request(method, sent_path, content=sent, headers=headers))


@aio
async def test_every_refusal_of_a_signed_request_has_its_code_and_sends_nothing() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        reader = await h.onboard(permissions="read")
        body = json.dumps(BUY).encode()
        before = await h.sent()

        bare = await h.answered(h.client.get("/v1/api-keys"))
        error_of(bare, 401, "missing_credentials")
        no_sig = t.headers("POST", "/v1/orders", body)
        del no_sig["DEX-SIGNATURE"]
        got = await h.answered(h.client.post("/v1/orders", content=body, headers=no_sig))
        error_of(got, 401, "missing_credentials")

        unknown = t.headers("POST", "/v1/orders", body)
        unknown["DEX-API-KEY"] = "dk_" + "0" * 32
        got = await h.answered(h.client.post("/v1/orders", content=body, headers=unknown))
        error_of(got, 401, "unknown_key")

        tampered = json.dumps({**BUY, "size": "0.2"}).encode()
        got = await send_signed_as(t, "POST", "/v1/orders", "/v1/orders", body, tampered)
        error_of(got, 401, "bad_signature")

        got = await send_signed_as(
            t, "DELETE", "/v1/orders?market=ETH-USDC", "/v1/orders?market=BTC-USDC", b"", b""
        )
        error_of(got, 401, "bad_signature")

        now = int(time.time() * 1000)
        for stale in (now - 60_000, now + 60_000):
            got = await t.call("POST", "/v1/orders", BUY, ts=stale)
            error_of(got, 401, "timestamp_out_of_window")

        got = await reader.call("POST", "/v1/orders", BUY)
        error_of(got, 403, "permission_denied")
        assert await h.sent() == before

        got = await t.call("POST", "/v1/orders", BUY)  # the same request, signed right
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "open"


@aio
async def test_a_key_revoked_by_delete_or_by_the_wallet_is_key_revoked() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        spare = t.api_key, t.secret
        await t.register()  # a second key of the same wallet
        got = await t.call("DELETE", f"/v1/api-keys/{spare[0]}")
        assert got.status_code == 200, got.text
        assert got.json() == {"api_key": spare[0], "revoked": True}
        listed = await t.call("GET", "/v1/api-keys")
        assert listed.status_code == 200, listed.text
        assert [k["api_key"] for k in listed.json()["keys"]] == [t.api_key]  # revoked: gone
        assert spare[1] not in listed.text and t.secret not in listed.text

        second = t.api_key
        t.api_key, t.secret = spare
        before = await h.sent()
        error_of(await t.call("POST", "/v1/orders", BUY), 401, "key_revoked")
        assert await h.sent() == before

        revoke = t.wallet_body(
            "RevokeApiKey", {"account": t.address, "apiKey": second, "nonce": t.next_nonce()}
        )
        got = await h.answered(h.client.post("/v1/api-keys/revoke", json=revoke))
        assert got.status_code == 200, got.text
        again = await h.answered(h.client.post("/v1/api-keys/revoke", json=revoke))
        error_of(again, 404, "unknown_key")  # already revoked
        await t.register()
        third = t.api_key
        reused = t.wallet_body(
            "RevokeApiKey", {"account": t.address, "apiKey": third, "nonce": revoke["nonce"]}
        )
        got = await h.answered(h.client.post("/v1/api-keys/revoke", json=reused))
        error_of(got, 409, "nonce_used")
        assert (await t.call("GET", "/v1/api-keys")).status_code == 200  # still usable
        t.api_key = second
        error_of(await t.call("GET", "/v1/api-keys"), 401, "key_revoked")


@aio
async def test_a_key_past_its_expiry_is_key_expired() -> None:
    async with gateway() as h:
        expires = int(time.time() * 1000) + 60_000
        t = await h.onboard(expires_at=expires)
        assert (await t.call("GET", "/v1/api-keys")).status_code == 200
        later = expires / 1000 + 1
        h.gw.clock = lambda: later
        got = await t.call("GET", "/v1/api-keys", ts=int(later * 1000))
        error_of(got, 401, "key_expired")


@aio
async def test_an_ed25519_key_signs_requests() -> None:
    async with gateway() as h:
        t = await h.onboard(key_type="ed25519", fund=FUNDS)
        assert t.secret == ""  # an Ed25519 key has no secret to hand out
        got = await t.call("POST", "/v1/orders", BUY)
        assert got.status_code == 200, got.text
        body = json.dumps(BUY).encode()
        tampered = json.dumps({**BUY, "price": "1951.00"}).encode()
        got = await send_signed_as(t, "POST", "/v1/orders", "/v1/orders", body, tampered)
        error_of(got, 401, "bad_signature")


def registration(t: Trader, **change: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "account": t.address,
        "keyType": "hmac",
        "publicKey": "",
        "permissions": "read,trade",
        "nonce": t.next_nonce(),
        "expiresAt": 0,
    }
    message.update(change)
    return t.wallet_body("RegisterApiKey", message)


async def register(h: Harness, body: dict[str, Any]) -> httpx.Response:
    return await h.answered(h.client.post("/v1/api-keys", json=body))


@aio
async def test_register_refusals_name_their_problem_and_send_nothing() -> None:
    async with gateway() as h:
        t = await h.onboard()
        other = await h.onboard()
        before = await h.sent()

        forged = {**registration(t), "signature": "0x" + "11" * 64 + "1b"}
        error_of(await register(h, forged), 401, "bad_signature")
        not_mine = registration(other)
        not_mine["account"] = t.address  # signed by another wallet
        error_of(await register(h, not_mine), 401, "bad_signature")
        for change, field in (
            ({"keyType": "rsa"}, "keyType"),
            ({"permissions": "read,admin"}, "permissions"),
            ({"permissions": ""}, "permissions"),
            ({"keyType": "ed25519", "publicKey": "zz"}, "publicKey"),
            ({"publicKey": "ab" * 32}, "publicKey"),  # an hmac key has none
            ({"expiresAt": int(time.time() * 1000) - 1000}, "expiresAt"),
        ):
            got = await register(h, registration(t, **change))
            assert error_of(got, 400, "invalid_request")["field"] == field, change
        assert await h.sent() == before

        once = registration(t)
        assert (await register(h, once)).status_code == 200
        error_of(await register(h, once), 409, "nonce_used")


def wallet_order(t: Trader, nonce: int | None = None, **change: Any) -> dict[str, Any]:
    """An order signed by the wallet (EIP-712 `Order`), with no API key."""
    body: dict[str, Any] = {**BUY, **change}
    message = {
        "account": t.address,
        "market": body["market"],
        "side": body["side"],
        "type": body["type"],
        "size": body.get("size", ""),
        "price": body.get("price", ""),
        "quoteSize": "",
        "tif": "",
        "postOnly": False,
        "stp": "expire_taker",
        "clientOrderId": "",
        "expiresAt": 0,
        "triggerPrice": "",
        "displaySize": "",
        "nonce": t.next_nonce() if nonce is None else nonce,
    }
    signature = t.wallet_body("Order", message)["signature"]
    return {**body, "account": t.address, "nonce": message["nonce"], "signature": signature}


async def post_order(h: Harness, body: dict[str, Any]) -> httpx.Response:
    return await h.answered(h.client.post("/v1/orders", json=body))


@aio
async def test_wallet_signed_orders_need_a_fresh_nonce_and_the_accounts_signature() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        other = await h.onboard()
        signed = wallet_order(t)
        got = await post_order(h, signed)
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "open"
        before = await h.sent()

        replayed = await post_order(h, signed)
        error_of(replayed, 409, "nonce_used")
        stale = wallet_order(t, nonce=int(time.time() * 1000) - 3_600_000)
        error_of(await post_order(h, stale), 401, "timestamp_out_of_window")
        someone_else = {**wallet_order(other), "account": t.address}
        error_of(await post_order(h, someone_else), 401, "bad_signature")
        changed = {**wallet_order(t), "price": "1900.00"}  # not what was signed
        error_of(await post_order(h, changed), 401, "bad_signature")
        error_of(await post_order(h, BUY), 401, "missing_credentials")
        got = await t.call("POST", "/v1/orders", {**BUY, "account": t.address})
        assert error_of(got, 400, "invalid_request")["field"] == "account"
        after = await h.sent()
        assert sum(after) - sum(before) == 1  # only the replay reached risk (its nonce)
