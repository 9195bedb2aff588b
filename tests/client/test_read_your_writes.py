"""Read-your-writes: a read right after a write's answer reflects that write, with no retry
(the gateway passes persistence the log positions that answered the write; persistence
answers once it has stored them)."""

from __future__ import annotations

from decimal import Decimal

from dex.client import Client, Wallet
from tests.client.conftest import Exchange


def test_every_read_right_after_a_write_shows_it(exchange: Exchange) -> None:
    seller, buyer = Client(exchange.url), Client(exchange.url)
    seller.onboard(Wallet.generate())
    buyer.onboard(Wallet.generate())
    for round_ in range(5):
        credited = seller.faucet("ETH", "1")
        assert {b.asset: b.available for b in seller.balances()}["ETH"] == Decimal(
            credited["available"]
        )
        buyer.faucet("USDC", "3000")
        sell = seller.place("ETH-USDC", "sell", "limit", size="0.5", price="2000")
        assert seller.order(sell.order_id).status == "open"  # no retry: the first read
        opened = seller.orders(status="open").items
        assert sell.order_id in [o.order_id for o in opened]
        buy = buyer.place("ETH-USDC", "buy", "limit", size="0.5", price="2000")
        assert buy.status == "filled", round_
        assert [f.trade_id for f in buyer.fills(limit=1).items] == [buy.fills[0].trade_id]
        held = {b.asset: b for b in buyer.balances()}
        assert held["ETH"].available == Decimal("0.5") * (round_ + 1)
        seller.cancel_all("ETH-USDC")
        assert seller.orders(status="open").items == []
