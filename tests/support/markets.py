"""The test markets and assets, written once for the unit, property and risk harnesses.

- `T_USD`: tick 1, lot 1, 0 decimals on both assets unless added first: 1 lot = 1 T, and
  1 tick x 1 lot = 1 USD. The market of the matching scenarios (`tests/scenario.py`, in the
  replay text form with at most 5 open orders), the engine contract and the risk desk
  (`tests/risk/harness.py`, as `SIMPLE`).
- `E_USD`: lot 0.1 E (E has 1 decimal: 1 unit), tick 0.5, so tick x lot = 0.05 USD: with USD
  at 2 decimals that is 5 units. Needs `USD` added first. The risk desk's `FINE`.
- `USD`: USD at 2 decimals (cents), added before the markets that need it.
- `AAA_USD`, `BBB_USD` with `AAA` (0 decimals), `BBB` (1 decimal) and `USD`: the two markets
  of the engine-versus-reference state machine (`tests/property`): AAA-USD has tick_lot_units
  1, min notional 200 (2 lots at 100), band 10%; BBB-USD tick_lot_units 2, min size 2 lots,
  min notional 500, band 2%, 3 open orders.
- `ETH_USDC` with `ETH` (4 decimals, the least its lot 0.0001 needs) and `USDC` (6): the
  demo's ETH-USDC steps (the demo itself, `dex.app.demo.DEMO_MARKETS`, has ETH at 9
  decimals), whose integer parameters the unit tests of `MarketParams` derive.

`add_market_line(spec)` is a spec as an `add_market` line of the replay tool's text form.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dex.core.markets import Asset, MarketSpec

T_USD = MarketSpec(
    market="T-USD",
    base="T",
    quote="USD",
    tick_size="1",
    lot_size="1",
    min_size="1",
    min_notional="0",
    price_band_bps=1000,
)
E_USD = MarketSpec(
    market="E-USD",
    base="E",
    quote="USD",
    tick_size="0.5",
    lot_size="0.1",
    min_size="0.1",
    min_notional="0",
    price_band_bps=2000,
)
USD = Asset(symbol="USD", decimals=2)

AAA = Asset(symbol="AAA", decimals=0)
BBB = Asset(symbol="BBB", decimals=1)
AAA_USD = MarketSpec(
    market="AAA-USD",
    base="AAA",
    quote="USD",
    tick_size="0.01",
    lot_size="1",
    min_size="1",
    min_notional="2",
    price_band_bps=1000,
)
BBB_USD = MarketSpec(
    market="BBB-USD",
    base="BBB",
    quote="USD",
    tick_size="0.04",
    lot_size="0.5",
    min_size="1",
    min_notional="5",
    price_band_bps=200,
    max_open_orders=3,
)

ETH = Asset(symbol="ETH", decimals=4)
USDC = Asset(symbol="USDC", decimals=6)
ETH_USDC = MarketSpec(
    market="ETH-USDC",
    base="ETH",
    quote="USDC",
    tick_size="0.01",
    lot_size="0.0001",
    min_size="0.0001",
    min_notional="1",
    price_band_bps=1000,
)


def add_market_line(spec: MarketSpec) -> dict[str, Any]:
    """`spec` as an `add_market` line of the replay text form: the fields it sets (a field at
    its default is left out, as a hand-written line leaves it)."""
    line: dict[str, Any] = {"cmd": "add_market"}
    for field in msgspec.structs.fields(spec):
        value = getattr(spec, field.name)
        if field.required or value != field.default:
            line[field.name] = value
    return line
