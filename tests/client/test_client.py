"""The client library end to end against an embedded exchange: onboarding (hmac and
ed25519), trading both sides, amend and cancels, pages, wallet-signed orders, typed errors."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from dex.client import (
    BadSignature,
    Client,
    Credentials,
    InsufficientFunds,
    KeyRevoked,
    NotCaughtUp,
    PermissionDenied,
    UnknownOrder,
    Wallet,
)
from tests.client.conftest import Exchange
from tests.support.polling import wait_until

M = "ETH-USDC"


def trader(ex: Exchange, key_type: str = "hmac", **funds: str) -> Client:
    c = Client(ex.url)
    c.onboard(Wallet.generate(), key_type=key_type)
    for asset, amount in funds.items():
        c.faucet(asset, amount)
    return c


def settled(what: str, condition: Callable[[], Any]) -> Any:
    """Poll a read until it holds; the history may answer not_caught_up meanwhile."""
    return wait_until(what, condition, timeout=10, retry_on=(NotCaughtUp,))


def balance(c: Client, asset: str) -> tuple[Decimal, Decimal]:
    b = {x.asset: x for x in c.balances()}.get(asset)
    return (b.available, b.locked) if b else (Decimal(0), Decimal(0))


def test_a_resting_sell_and_a_crossing_buy_fill_both_sides(exchange: Exchange) -> None:
    seller = trader(exchange, "hmac", ETH="2")
    buyer = trader(exchange, "ed25519", USDC="10000")
    assert seller.credentials and seller.credentials.key_type == "hmac"
    assert buyer.credentials and buyer.credentials.key_type == "ed25519"

    sell = seller.place(M, "sell", "limit", size="1", price=Decimal("2000"), client_order_id="s1")
    buy = buyer.place(M, "buy", "limit", size="0.5", price="2000")

    assert sell.status == "open"
    assert buy.status == "filled" and buy.filled == Decimal("0.5")
    assert sum((f.size or 0 for f in buy.fills), Decimal(0)) == Decimal("0.5")
    settled("the seller's fill", lambda: seller.fills().items)
    settled("the buyer's fill", lambda: buyer.fills().items)
    assert settled("seller fills", lambda: seller.fills().items)[0].order_id == sell.order_id
    settled("the buyer's ETH", lambda: balance(buyer, "ETH")[0] > 0)
    settled("seller's ETH", lambda: balance(seller, "ETH") == (Decimal(1), Decimal("0.5")))


def test_amend_and_cancels_by_id_client_id_and_all(exchange: Exchange) -> None:
    c = trader(exchange, ETH="5")
    a = c.place(M, "sell", "limit", size="1", price="2100", client_order_id="a1")
    amended = c.amend(a.order_id, price="2150")
    assert amended.price == Decimal("2150")
    assert c.amend_by_client_id("a1", size="0.5").size == Decimal("0.5")
    assert c.cancel(a.order_id).status == "cancelled"

    c.place(M, "sell", "limit", size="1", price="2100", client_order_id="b1")
    assert c.cancel_by_client_id("b1").client_order_id == "b1"

    ids = {c.place(M, "sell", "limit", size="0.1", price="2200").order_id for _ in range(3)}
    assert set(c.cancel_all(M).cancelled) == ids
    settled("locks released", lambda: balance(c, "ETH") == (Decimal(5), Decimal(0)))


def test_pages_of_two_over_five_orders(exchange: Exchange) -> None:
    c = trader(exchange, ETH="5")
    placed = [c.place(M, "sell", "limit", size="0.1", price="2200").order_id for _ in range(5)]
    first = settled("five orders", lambda: (p := c.orders(limit=2)).items and p)
    assert len(first.items) == 2 and first.next_cursor is not None
    every = [o.order_id for o in c.all_orders(limit=2)]
    assert sorted(every) == sorted(placed)
    assert c.order(placed[0]).order_id == placed[0]


def test_a_wallet_signed_order_needs_no_key(exchange: Exchange) -> None:
    funded = Client(exchange.url)
    wallet = Wallet.generate()
    funded.onboard(wallet)
    funded.faucet("ETH", "1")
    keyless = Client(exchange.url)
    order = keyless.place_with_wallet(wallet, M, "sell", "limit", size="0.2", price="2200")
    assert order.status == "open"
    assert settled("the order", lambda: funded.order(order.order_id)).market == M


def test_typed_errors(exchange: Exchange) -> None:
    c = trader(exchange, ETH="1")
    with pytest.raises(InsufficientFunds) as e:
        c.place(M, "sell", "limit", size="100", price="2000")
    assert e.value.status == 400
    with pytest.raises(UnknownOrder):
        c.cancel(987654321, market=M)
    assert c.credentials is not None
    bad = Client(
        exchange.url, Credentials(c.credentials.api_key, c.credentials.account, secret="x" * 64)
    )
    with pytest.raises(BadSignature):
        bad.balances()

    w = Wallet.generate()
    reader = Client(exchange.url)
    reader.onboard(w, permissions="read")
    assert settled("no balances", lambda: reader.balances() == [])
    with pytest.raises(PermissionDenied):
        reader.place(M, "sell", "limit", size="1", price="2000")

    assert c.credentials.api_key in {k.api_key for k in c.api_keys()}
    c.revoke_key(c.credentials.api_key)
    with pytest.raises(KeyRevoked):
        c.balances()


def test_float_amounts_are_refused_naming_the_argument(exchange: Exchange) -> None:
    c = Client(exchange.url)
    with pytest.raises(TypeError, match="price"):
        c.place(M, "sell", "limit", size="1", price=2000.0)  # type: ignore[arg-type]
