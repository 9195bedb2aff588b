"""The demo assets and markets that `dex up` adds to an empty exchange."""

from __future__ import annotations

from typing import Any

from dex.bus import Bus
from dex.core import commands as mc
from dex.core.markets import Asset, MarketSpec
from dex.wire import codec
from dex.wire.layout import ADMIN_STREAM

DEMO_MARKETS = (
    MarketSpec(
        market="ETH-USDC",
        base="ETH",
        quote="USDC",
        tick_size="0.01",
        lot_size="0.0001",
        min_size="0.0001",
        min_notional="1",
        price_band_bps=1000,
    ),
    MarketSpec(
        market="BTC-USDC",
        base="BTC",
        quote="USDC",
        tick_size="0.1",
        lot_size="0.00001",
        min_size="0.00001",
        min_notional="1",
        price_band_bps=1000,
    ),
)

DEMO_ASSETS = (
    Asset(symbol="ETH", decimals=9),
    Asset(symbol="BTC", decimals=8),
    Asset(symbol="USDC", decimals=6),
)


async def add_demo_markets(bus: Bus) -> bool:
    """On an empty admin stream, add the demo assets and markets; True if it did."""
    if await bus.last(ADMIN_STREAM):
        return False
    cmds: list[Any] = [mc.AddAsset(asset=a) for a in DEMO_ASSETS]
    cmds += [mc.AddMarket(spec=s) for s in DEMO_MARKETS]
    await bus.append(ADMIN_STREAM, [codec.encode(c) for c in cmds], expect_last=0)
    return True
