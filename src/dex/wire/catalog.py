"""The markets and assets the admin stream has added, as every engine sees them.

Services that are not engines (the gateway, the admin routes) read the admin stream to know
the markets, their integer steps and the assets. `Catalog.apply` follows the engines' own
rule (`dex.core.markets.check_asset` and `resolve_market`), so a market or asset that the
engines refuse is refused here too and never becomes known. Pure: no I/O.
"""

from __future__ import annotations

from dex.core import commands as mc
from dex.core.errors import CommandError
from dex.core.markets import Asset, MarketParams, MarketSpec, check_asset, resolve_market


class Catalog:
    """Assets by symbol and markets' parameters by symbol, from admin commands in log order."""

    def __init__(self) -> None:
        self.assets: dict[str, Asset] = {}
        self.params: dict[str, MarketParams] = {}

    def resolve(self, spec: MarketSpec) -> MarketParams:
        """The parameters a new market would get; CommandError naming the field if the
        engines would refuse it (an existing market included)."""
        if spec.market in self.params:
            raise CommandError("market", f"market {spec.market} already exists")
        return resolve_market(spec, self.assets)

    def apply(self, cmd: object) -> None:
        """Learn an `AddAsset` or `AddMarket`; other commands change nothing here. Raises
        CommandError (and learns nothing) for what the engines refuse."""
        if isinstance(cmd, mc.AddAsset):
            asset = check_asset(cmd.asset)
            if asset.symbol in self.assets:
                raise CommandError("symbol", f"asset {asset.symbol} is already registered")
            self.assets[asset.symbol] = asset
        elif isinstance(cmd, mc.AddMarket):
            params = self.resolve(cmd.spec)
            self.assets.setdefault(params.base.symbol, params.base)
            self.assets.setdefault(params.quote.symbol, params.quote)
            self.params[cmd.spec.market] = params
