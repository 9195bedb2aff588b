"""Assets and markets, and the integer parameters derived from them.

A market `BASE-QUOTE` has a tick (price step, in quote per base) and a lot (size step, in
base). Inside the cores a price is a number of ticks and a size a number of lots. A market is
accepted only if a lot is a whole number of base units and a tick times a lot is a whole number
of quote units, so `ticks * lots * tick_lot_units` is an exact amount of quote units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

import msgspec

from dex.core.enums import MarketStatus
from dex.core.errors import CommandError
from dex.core.numbers import MAX_INT, Scale, decimals_of, parse_decimal, to_steps

MAX_DECIMALS = 9
_SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9]{0,15}")  # fullmatch: `$` would take a final newline


class Asset(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    decimals: int


def check_asset(asset: Asset) -> Asset:
    if not _SYMBOL_RE.fullmatch(asset.symbol):
        raise CommandError(
            "symbol", f"must be 1-16 upper-case letters or digits, got {asset.symbol!r}"
        )
    if not 0 <= asset.decimals <= MAX_DECIMALS:
        raise CommandError(
            "decimals", f"must be between 0 and {MAX_DECIMALS}, got {asset.decimals}"
        )
    return asset


class MarketSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A market as configured: decimal strings, exactly as an operator writes them."""

    market: str
    base: str
    quote: str
    tick_size: str
    lot_size: str
    min_size: str
    min_notional: str
    price_band_bps: int
    max_open_orders: int | None = None
    status: MarketStatus = MarketStatus.ACTIVE


def needed_decimals(spec: MarketSpec) -> tuple[int, int]:
    """Decimals the base and quote assets need for this market's steps."""
    tick = parse_decimal(spec.tick_size, "tick_size")
    lot = parse_decimal(spec.lot_size, "lot_size")
    notional = parse_decimal(spec.min_notional, "min_notional")
    return decimals_of(lot), max(decimals_of(tick * lot), decimals_of(notional))


class MarketParams:
    """Integer parameters of a market, derived once from its spec and its two assets."""

    __slots__ = (
        "band_bps",
        "base",
        "lot",
        "lot_units",
        "max_open_orders",
        "min_notional_units",
        "min_size_lots",
        "price_scale",
        "quote",
        "quote_scale",
        "size_scale",
        "spec",
        "symbol",
        "tick",
        "tick_lot_units",
    )

    def __init__(self, spec: MarketSpec, base: Asset, quote: Asset) -> None:
        self.spec = spec
        self.symbol = spec.market
        self.base = base
        self.quote = quote
        self.tick = parse_decimal(spec.tick_size, "tick_size")
        self.lot = parse_decimal(spec.lot_size, "lot_size")
        if self.tick <= 0:
            raise CommandError("tick_size", f"must be positive, got {spec.tick_size}")
        if self.lot <= 0:
            raise CommandError("lot_size", f"must be positive, got {spec.lot_size}")
        lot_units = self.lot * 10**base.decimals
        if lot_units != lot_units.to_integral_value():
            raise CommandError(
                "lot_size",
                f"{spec.lot_size} is not a whole number of {base.symbol} units "
                f"({base.decimals} decimals)",
            )
        tick_lot_units = self.tick * self.lot * 10**quote.decimals
        if tick_lot_units != tick_lot_units.to_integral_value():
            raise CommandError(
                "tick_size",
                f"tick {spec.tick_size} x lot {spec.lot_size} is not a whole number of "
                f"{quote.symbol} units ({quote.decimals} decimals)",
            )
        self.lot_units = int(lot_units)
        self.tick_lot_units = int(tick_lot_units)
        if self.lot_units > MAX_INT or self.tick_lot_units > MAX_INT:
            raise CommandError("lot_size", "step is too large (must be below 2^63 units)")
        self.min_size_lots = to_steps(spec.min_size, self.lot, "min_size", unit="lots")
        self.min_notional_units = to_steps(
            spec.min_notional, Decimal(1).scaleb(-quote.decimals), "min_notional", allow_zero=True
        )
        if not 0 <= spec.price_band_bps <= 1_000_000:
            raise CommandError(
                "price_band_bps", f"must be between 0 and 1000000, got {spec.price_band_bps}"
            )
        self.band_bps = spec.price_band_bps
        if spec.max_open_orders is not None and spec.max_open_orders <= 0:
            raise CommandError("max_open_orders", f"must be positive, got {spec.max_open_orders}")
        self.max_open_orders = spec.max_open_orders or 0
        self.price_scale = Scale(self.tick)
        self.size_scale = Scale(self.lot)
        self.quote_scale = Scale(Decimal(1).scaleb(-quote.decimals))


def resolve_market(spec: MarketSpec, known_assets: Mapping[str, Asset]) -> MarketParams:
    """The integer parameters of a new market, or CommandError naming the field at fault.

    The one rule for adding a market, for every core and service that adds or checks one:
    the symbols are checked; an asset in `known_assets` is used as it is; one the market names
    and `known_assets` lacks is created with the decimals the market's steps need (at most
    `MAX_DECIMALS`; the field is the step that needs more). The new assets are the market's
    `base` and `quote` whose symbols are not in `known_assets`. Whether the market already
    exists is the caller's to check.
    """
    check_market_symbol(spec)
    base_dec, quote_dec = needed_decimals(spec)
    pair = []
    for symbol, dec, field in (
        (spec.base, base_dec, "lot_size"),
        (spec.quote, quote_dec, "tick_size"),
    ):
        asset = known_assets.get(symbol)
        if asset is None:
            if dec > MAX_DECIMALS:
                raise CommandError(
                    field, f"{symbol} would need {dec} decimals, at most {MAX_DECIMALS}"
                )
            asset = Asset(symbol=symbol, decimals=dec)  # its symbol is checked above
        pair.append(asset)
    return MarketParams(spec, pair[0], pair[1])


def check_market_symbol(spec: MarketSpec) -> None:
    for field, symbol in (("base", spec.base), ("quote", spec.quote)):
        if not _SYMBOL_RE.fullmatch(symbol):
            raise CommandError(field, f"must be 1-16 upper-case letters or digits, got {symbol!r}")
    if spec.base == spec.quote:
        raise CommandError("quote", "must differ from base")
    if spec.market != f"{spec.base}-{spec.quote}":
        raise CommandError("market", f"must be '{spec.base}-{spec.quote}', got {spec.market!r}")
