"""Traders for the tests that drive a running exchange through its public gateway.

`trader(base_url, ETH="2", ...)` is a `dex.client.Client` of a fresh wallet (`Wallet.generate`)
whose API key it adopted (`onboard`), funded from the faucet with each asset and amount given
(decimal text, within the faucet's per-call cap); `async_trader` is the same as an
`AsyncClient`. `holdings(client)` is the trader's signed `GET /v1/balances` as
`{asset: (available, locked)}` in `Decimal`. `settled(what, condition)` polls a read until it
holds, an answer `not_caught_up` (the history not yet at the trader's last write) counting as
"not yet".

`internal_balances(persistence_url, account)` is persistence's own view of any account (its
internal `GET /v1/accounts/{account}/balances`, not on the public gateway), for the tests
about what an operator sees.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from dex.client import AsyncClient, Client, NotCaughtUp, Wallet
from tests.support.polling import wait_until

Holdings = dict[str, tuple[Decimal, Decimal]]

SETTLE = 30.0  # seconds a read may take to show what was written


def trader(base_url: str, **funds: str) -> Client:
    client = Client(base_url, timeout=15)
    client.onboard(Wallet.generate())
    for asset, amount in funds.items():
        client.faucet(asset, amount)
    return client


async def async_trader(base_url: str, **funds: str) -> AsyncClient:
    client = AsyncClient(base_url, timeout=15)
    await client.onboard(Wallet.generate())
    for asset, amount in funds.items():
        await client.faucet(asset, amount)
    return client


def account_of(client: Client | AsyncClient) -> str:
    assert client.credentials is not None, "the client has no key: onboard it first"
    return client.credentials.account


def holdings(client: Client) -> Holdings:
    return {b.asset: (b.available, b.locked) for b in client.balances()}


def settled(what: str, condition: Callable[[], Any], timeout: float = SETTLE) -> Any:
    """`condition()`'s first truthy value; `NotCaughtUp` and HTTP errors count as not yet."""
    return wait_until(
        what, condition, timeout=timeout, interval=0.1, retry_on=(NotCaughtUp, httpx.HTTPError)
    )


def internal_balances(persistence_url: str, account: str) -> Holdings:
    """Persistence's balances of `account` (its internal route), as `holdings` gives them."""
    r = httpx.get(f"{persistence_url}/v1/accounts/{account}/balances", timeout=5)
    r.raise_for_status()
    return {
        b["asset"]: (Decimal(b["available"]), Decimal(b["locked"])) for b in r.json()["balances"]
    }
