"""What the gateway takes from clients: client order ids, addresses and decimal amounts are
checked at the edge. A malformed one is a 400 naming its field and nothing reaches a risk
shard; the well-formed neighbours of each case go through.

The gateway runs in-process on a MemoryBus with every shard of `tests.services.inproc`, and
is called through httpx's ASGI transport (in the test's own loop); the shards are stepped
while a request waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from dex.gateway.service import Gateway
from dex.runtime.health import Health
from dex.runtime.http import build_app
from dex.runtime.metrics import ServiceMetrics
from dex.wire import layout
from tests.bus.contract import aio
from tests.services.inproc import ACCOUNTS, Cluster, open_cluster
from tests.services.reader_kit import RecordingLog

A = ACCOUNTS[0]  # funded by `open_cluster`: 100 ETH and 1,000,000 USDC
ANSWER_WITHIN = 15.0  # seconds

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


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[tuple[Cluster, httpx.AsyncClient]]:
    """The demo markets, funded accounts and a started gateway answering over HTTP."""
    c = await open_cluster(trade=False)
    await c.pump()
    metrics = ServiceMetrics("gateway")
    health = Health(metrics)
    health.started = True
    gw = Gateway(
        c.bus,
        risk_shards=c.r_count,
        matching_shards=c.m_count,
        health=health,
        metrics=metrics,
        log=RecordingLog(),
        faucet=True,
        persistence_url="http://127.0.0.1:9",
        market_data_url="http://127.0.0.1:9",
    )
    await gw.start()
    app = build_app("gateway", health, metrics, route_handlers=gw.route_handlers())
    try:
        transport = httpx.ASGITransport(app=app)  # in this loop, unlike Litestar's test client
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield c, client
    finally:
        await gw.stop()


async def answered(c: Cluster, request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
    """The response to `request`, the shards stepped until it comes (or the deadline)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(request)
    deadline = loop.time() + ANSWER_WITHIN
    while not task.done():
        if loop.time() > deadline:
            task.cancel()
            raise AssertionError(f"no answer within {ANSWER_WITHIN} s")
        await c.pump(1)
        await asyncio.wait({task}, timeout=0.01)
    return task.result()


async def sent(c: Cluster) -> list[int]:
    """How many requests each risk shard's input holds."""
    return [await c.bus.last(layout.risk_in(r)) for r in range(c.r_count)]


def order(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "market": "ETH-USDC",
        "account": A,
        "side": "buy",
        "type": "limit",
        "price": "1950.00",
        "size": "0.1",
    }
    body.update(kw)
    return body


def refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field, error


@aio
async def test_malformed_client_order_ids_are_a_400_and_are_not_sent() -> None:
    async with gateway() as (c, client):
        before = await sent(c)
        for cid in MALFORMED_CLIENT_ORDER_IDS:
            got = await answered(c, client.post("/v1/orders", json=order(client_order_id=cid)))
            refused(got, "client_order_id")
            assert got.json()["error"]["code"] == "invalid_request"
        assert await sent(c) == before
        got = await answered(
            c, client.post("/v1/orders", json=order(client_order_id=LONGEST_CLIENT_ORDER_ID))
        )
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "open"
        again = await answered(
            c, client.post("/v1/orders", json=order(client_order_id=LONGEST_CLIENT_ORDER_ID))
        )
        assert again.json()["duplicate"] is True  # the id was kept exactly as given


@aio
async def test_look_alike_addresses_are_a_400_on_every_route_and_are_not_sent() -> None:
    async with gateway() as (c, client):
        before = await sent(c)
        for account in LOOK_ALIKE_ADDRESSES:
            got = await answered(c, client.post("/v1/orders", json=order(account=account)))
            refused(got, "account")
            faucet = {"account": account, "asset": "USDC", "amount": "5"}
            refused(await answered(c, client.post("/v1/faucet", json=faucet)), "account")
            cancel = client.delete(
                "/v1/orders/1", params={"market": "ETH-USDC", "account": account}
            )
            refused(await answered(c, cancel), "account")
        assert await sent(c) == before
        faucet = {"account": A, "asset": "USDC", "amount": "5"}
        got = await answered(c, client.post("/v1/faucet", json=faucet))
        assert got.status_code == 200, got.text
        assert got.json()["account"] == A


@pytest.mark.parametrize("field", ["price", "size", "trigger_price", "display_size"])
@aio
async def test_order_amounts_are_ascii_decimals_or_a_400_naming_the_field(field: str) -> None:
    extra: dict[str, Any] = {}
    if field == "trigger_price":
        extra = {"type": "stop_limit", "side": "sell", "price": "2100.00", "trigger_price": "2000"}
    async with gateway() as (c, client):
        before = await sent(c)
        for text in MALFORMED_AMOUNTS:
            got = await answered(c, client.post("/v1/orders", json=order(**{**extra, field: text})))
            refused(got, field)
        assert await sent(c) == before
        fine = {"price": "1950.5", "size": "0.1", "trigger_price": "2000", "display_size": "0.05"}
        got = await answered(
            c, client.post("/v1/orders", json=order(**{**extra, field: fine[field]}))
        )
        assert got.status_code == 200, got.text
        stop = field == "trigger_price"  # a stop limit waits for its trigger
        assert got.json()["status"] == ("untriggered" if stop else "open"), got.text


@aio
async def test_quote_size_and_faucet_amount_are_ascii_decimals_or_a_400() -> None:
    async with gateway() as (c, client):
        before = await sent(c)
        for text in MALFORMED_AMOUNTS:
            market_buy = order(type="market", tif="IOC", price=None, size=None, quote_size=text)
            refused(await answered(c, client.post("/v1/orders", json=market_buy)), "quote_size")
            faucet = {"account": A, "asset": "USDC", "amount": text}
            refused(await answered(c, client.post("/v1/faucet", json=faucet)), "amount")
        assert await sent(c) == before
        faucet = {"account": A, "asset": "USDC", "amount": "0.5"}
        got = await answered(c, client.post("/v1/faucet", json=faucet))
        assert got.status_code == 200, got.text
        assert got.json()["amount_units"] == 500_000


@aio
async def test_an_order_id_in_a_path_is_ascii_digits_or_a_400() -> None:
    async with gateway() as (c, client):
        got = await answered(c, client.post("/v1/orders", json=order()))
        oid = got.json()["order_id"]
        before = await sent(c)
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
            params = {"market": "ETH-USDC", "account": A}
            cancel = client.delete(f"/v1/orders/{quote(text)}", params=params)
            refused(await answered(c, cancel), "order_id")
        assert await sent(c) == before
        params = {"market": "ETH-USDC", "account": A}
        got = await answered(c, client.delete(f"/v1/orders/{oid}", params=params))
        assert got.status_code == 200, got.text
        assert got.json() == {"accepted": True, "order_id": oid}


@aio
async def test_a_faucet_deposit_credited_twice_is_a_409_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dex.gateway import service as gateway_module

    monkeypatch.setattr(gateway_module, "new_credit_tx_id", lambda: "faucet:7")  # one id twice
    async with gateway() as (c, client):
        faucet = {"account": A, "asset": "USDC", "amount": "5"}
        first = await answered(c, client.post("/v1/faucet", json=faucet))
        assert first.status_code == 200, first.text
        ledger = c.risk[layout.shard_for(A, len(c.risk))].ledger
        credited = ledger.balance(A, "USDC")
        assert credited[0] == first.json()["available_units"]
        again = await answered(c, client.post("/v1/faucet", json=faucet))
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "duplicate_deposit"
        assert ledger.balance(A, "USDC") == credited  # credited once
