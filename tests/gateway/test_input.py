"""What the gateway takes from clients: client order ids, addresses and decimal amounts are
checked at the edge. A malformed one is a 400 naming its field and nothing reaches a risk
shard; the well-formed neighbours of each case go through.

The gateway runs in-process (`tests.gateway.harness`): signed requests of fresh wallets.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from dex.wire import layout
from tests.bus.contract import aio
from tests.gateway.harness import Harness, Trader, gateway

A = "0x" + "ab" * 20

NUL = "\x00"
MALFORMED_CLIENT_ORDER_IDS = [
    f"a{NUL}b",
    NUL,
    "x" * 37,
    "",
    "a b",
    " a",
    "a ",
    "a\n",
    "a\r\n",
    "a/b",
    "caf\u00e9",
    "\uff4b",  # fullwidth k
    "\u0661",  # Arabic-Indic 1
    "a\tb",
    "a\u200bb",  # zero-width space
    "a+b",
    "a%b",
]
LONGEST_CLIENT_ORDER_ID = ("Az09._:-" * 5)[:36]

LOOK_ALIKE_ADDRESSES = [
    A + "\n",
    A + "\r\n",
    " " + A,
    A + " ",
    A + "\u00a0",  # no-break space
    "\uff10x" + A[2:],  # fullwidth 0
    "0\uff58" + A[2:],  # fullwidth x
    "0x" + "\uff14" * 40,  # fullwidth 4
    "0x" + "\u0664" * 40,  # Arabic-Indic 4
    "0x" + "\u0430" * 40,  # Cyrillic a
    A[:-1] + "\uff11",  # the last digit fullwidth
]

MALFORMED_AMOUNTS = [
    "\uff10.\uff10\uff11",  # fullwidth 0.01
    "\u0660.\u0660\u0661",  # Arabic-Indic 0.01
    "\u06f1",  # extended Arabic-Indic 1
    "1\uff10",
    " 1",
    "1 ",
    "1\n",
    "+1",
    "1e3",
    "1.",
    ".5",
    "1_0",
    "-1",
]


FUNDS = {"ETH": "100", "USDC": "1000000"}


def order(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "market": "ETH-USDC",
        "side": "buy",
        "type": "limit",
        "price": "1950.00",
        "size": "0.1",
    }
    body.update(kw)
    return {k: v for k, v in body.items() if v is not None}


def refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field, error


async def place(t: Trader, **kw: Any) -> Any:
    return await t.call("POST", "/v1/orders", order(**kw))


@aio
async def test_malformed_client_order_ids_are_a_400_and_are_not_sent() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        before = await h.sent()
        for cid in MALFORMED_CLIENT_ORDER_IDS:
            got = await place(t, client_order_id=cid)
            refused(got, "client_order_id")
            assert got.json()["error"]["code"] == "invalid_request"
        assert await h.sent() == before
        got = await place(t, client_order_id=LONGEST_CLIENT_ORDER_ID)
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "open"
        again = await place(t, client_order_id=LONGEST_CLIENT_ORDER_ID)
        assert again.json()["duplicate"] is True  # the id was kept exactly as given
        assert again.json()["order_id"] == got.json()["order_id"]


async def wallet_order(h: Harness, t: Trader, account: str) -> Any:
    nonce = t.next_nonce()
    message = {
        "account": account,
        "market": "ETH-USDC",
        "side": "buy",
        "type": "limit",
        "size": "0.1",
        "price": "1950.00",
        "quoteSize": "",
        "tif": "",
        "postOnly": False,
        "stp": "expire_taker",
        "clientOrderId": "",
        "expiresAt": 0,
        "triggerPrice": "",
        "displaySize": "",
        "nonce": nonce,
    }
    body = {**order(), "account": account, "nonce": nonce, "signature": "0x" + "11" * 65}
    del message
    return await h.answered(h.client.post("/v1/orders", json=body))


@aio
async def test_look_alike_addresses_are_a_400_on_every_route_and_are_not_sent() -> None:
    async with gateway() as h:
        t = await h.onboard()
        before = await h.sent()
        for account in LOOK_ALIKE_ADDRESSES:
            refused(await wallet_order(h, t, account), "account")
            register = {
                "account": account,
                "keyType": "hmac",
                "publicKey": "",
                "permissions": "read",
                "nonce": 1,
                "expiresAt": 0,
                "signature": "0x" + "11" * 65,
            }
            got = await h.answered(h.client.post("/v1/api-keys", json=register))
            refused(got, "account")
            revoke = {
                "account": account,
                "apiKey": t.api_key,
                "nonce": 2,
                "signature": "0x" + "11" * 65,
            }
            got = await h.answered(h.client.post("/v1/api-keys/revoke", json=revoke))
            refused(got, "account")
        assert await h.sent() == before


@pytest.mark.parametrize("field", ["price", "size", "trigger_price", "display_size"])
@aio
async def test_order_amounts_are_ascii_decimals_or_a_400_naming_the_field(field: str) -> None:
    extra: dict[str, Any] = {}
    if field == "trigger_price":
        extra = {"type": "stop_limit", "side": "sell", "price": "2100.00", "trigger_price": "2000"}
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        before = await h.sent()
        for text in MALFORMED_AMOUNTS:
            refused(await place(t, **{**extra, field: text}), field)
        assert await h.sent() == before
        fine = {"price": "1950.5", "size": "0.1", "trigger_price": "2000", "display_size": "0.05"}
        got = await place(t, **{**extra, field: fine[field]})
        assert got.status_code == 200, got.text
        stop = field == "trigger_price"  # a stop limit waits for its trigger
        assert got.json()["status"] == ("untriggered" if stop else "open"), got.text


@aio
async def test_quote_size_and_faucet_amount_are_ascii_decimals_or_a_400() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        before = await h.sent()
        for text in MALFORMED_AMOUNTS:
            market_buy = order(type="market", price=None, size=None, quote_size=text)
            refused(await t.call("POST", "/v1/orders", market_buy), "quote_size")
            faucet = {"asset": "USDC", "amount": text}
            refused(await t.call("POST", "/v1/faucet", faucet), "amount")
        assert await h.sent() == before
        got = await t.call("POST", "/v1/faucet", {"asset": "USDC", "amount": "0.5"})
        assert got.status_code == 200, got.text
        assert got.json()["amount"] == "0.500000"


@aio
async def test_an_order_id_in_a_path_is_ascii_digits_or_a_400() -> None:
    async with gateway() as h:
        t = await h.onboard(fund=FUNDS)
        got = await place(t)
        oid = got.json()["order_id"]
        before = await h.sent()
        for text in (
            "\u0661",  # Arabic-Indic 1
            "\uff11",  # fullwidth 1
            "+1",
            "1_0",
            " 1",
            "1\n",
            "0",
            "-1",
            str(2**63),
            f"{oid}\n",
            "".join(chr(ord("\uff10") + int(d)) for d in str(oid)),  # the id in fullwidth
        ):
            path = f"/v1/orders/{quote(text)}?market=ETH-USDC"
            refused(await t.call("DELETE", path), "order_id")
        assert await h.sent() == before
        got = await t.call("DELETE", f"/v1/orders/{oid}?market=ETH-USDC")
        assert got.status_code == 200, got.text
        assert got.json()["order_id"] == oid
        assert got.json()["status"] == "cancelled"


@aio
async def test_a_faucet_deposit_credited_twice_is_a_409_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dex.gateway import service as gateway_module

    once = "faucet:987654321"  # one id, credited twice
    monkeypatch.setattr(gateway_module, "new_credit_tx_id", lambda: once)
    async with gateway() as h:
        t = await h.onboard()
        faucet = {"asset": "USDC", "amount": "5"}
        first = await t.call("POST", "/v1/faucet", faucet)
        assert first.status_code == 200, first.text
        ledger = h.c.risk[layout.shard_for(t.address, len(h.c.risk))].ledger
        credited = ledger.balance(t.address, "USDC")
        assert credited[0] == 5_000_000
        again = await t.call("POST", "/v1/faucet", faucet)
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "duplicate_deposit"
        assert ledger.balance(t.address, "USDC") == credited  # credited once
