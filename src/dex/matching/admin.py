"""The admin commands of the engine: add an asset, add a market, set a market's status.
Mixed into `Engine`.
"""

from __future__ import annotations

from dex.core.commands import SCHEMA_VERSION, AddAsset, AddMarket, InputRef, SetMarketStatus
from dex.core.enums import CancelReason, MarketStatus
from dex.core.errors import CommandError
from dex.core.events import AssetAdded, Event, MarketAdded, MarketStatusChanged
from dex.core.markets import check_asset, resolve_market
from dex.matching.market import MarketState
from dex.matching.state import _Core

V = SCHEMA_VERSION


class _Admin(_Core):
    def _add_asset(self, cmd: AddAsset, src: InputRef) -> list[Event]:
        ts = self._admin_ts(cmd.ts)
        asset = check_asset(cmd.asset)
        if asset.symbol in self.assets:
            raise CommandError("symbol", f"asset {asset.symbol} is already registered")
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        self.assets[asset.symbol] = asset
        self.admin_seq += 1
        events.append(AssetAdded(V, "", self.admin_seq, ts, self._next_log_seq(), src, asset))
        return events

    def _add_market(self, cmd: AddMarket, src: InputRef) -> list[Event]:
        ts = self._admin_ts(cmd.ts)
        spec = cmd.spec
        if spec.market in self.markets:
            raise CommandError("market", f"market {spec.market} already exists")
        params = resolve_market(spec, self.assets)
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        for asset in (params.base, params.quote):
            if asset.symbol not in self.assets:
                self.assets[asset.symbol] = asset
                self.admin_seq += 1
                events.append(
                    AssetAdded(V, "", self.admin_seq, ts, self._next_log_seq(), src, asset)
                )
        m = self.markets[spec.market] = MarketState(params, spec.status)
        m.seq = 1
        events.append(MarketAdded(V, m.symbol, 1, ts, self._next_log_seq(), src, spec))
        return events

    def _set_status(self, cmd: SetMarketStatus, src: InputRef) -> list[Event]:
        m = self._market(cmd.market)
        ts = self._check_ts(cmd.ts)
        events: list[Event] = []
        self._expire(ts, src, events)
        self.ts = ts
        previous = m.status
        m.status = cmd.status
        m.seq += 1
        events.append(
            MarketStatusChanged(
                V, m.symbol, m.seq, ts, self._next_log_seq(), src, cmd.status, previous
            )
        )
        if cmd.status is MarketStatus.CANCEL_ONLY:
            for stop in list(m.stops.values()):
                self._cancel_one(m, stop, CancelReason.MARKET_STATUS, events, ts, src)
        return events
