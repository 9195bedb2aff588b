"""Numbers and markets: exact conversion, bad values refused with the field named."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from dex.core.errors import CommandError
from dex.core.markets import (
    Asset,
    MarketParams,
    MarketSpec,
    check_asset,
    check_market_symbol,
    resolve_market,
)
from dex.core.numbers import MAX_INT, Scale, check_int, decimals_of, parse_decimal, to_steps
from tests.support.markets import ETH, ETH_USDC, USDC


@pytest.mark.parametrize(
    ("text", "step", "steps"),
    [
        ("2000.00", "0.01", 200000),
        ("1.5", "0.0001", 15000),
        ("0", "1", 0),
        ("1.5", "0.5", 3),
        ("7.00", "1", 7),
    ],
)
def test_to_steps_exact(text: str, step: str, steps: int) -> None:
    assert to_steps(text, Decimal(step), "price", allow_zero=True) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.005", "not a whole number of steps"),
        ("-1", "must not be negative"),
        ("0", "must be positive"),
        ("1e3", "decimal string"),
        ("abc", "decimal string"),
        ("NaN", "decimal string"),
        (" 1", "decimal string"),
        ("1" * 70, "decimal string"),
        (str(2**63), "below 2^63"),
    ],
)
def test_to_steps_refuses(text: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        to_steps(text, Decimal("0.01") if "." in text else Decimal(1), "size")
    assert info.value.field == "size"
    assert message in info.value.message


# Amounts are ASCII `[0-9]+(\.[0-9]+)?`: `\d`, `$`, `int()` and `Decimal()` all take more.
NOT_ASCII_DECIMALS = [
    "\uff10.\uff10\uff11",  # fullwidth 0.01
    "\u0660.\u0660\u0661",  # Arabic-Indic 0.01
    "\u06f1",  # extended Arabic-Indic 1
    "\u0967",  # Devanagari 1
    "1\uff10",  # an ASCII digit then a fullwidth one
    " 1",
    "1 ",
    "1\n",
    "\n1",
    "1\r\n",
    "1\t",
    "1\u00a0",  # no-break space
    "+1",
    "1e3",
    "1E3",
    "1.",
    ".5",
    "1..5",
    "1.5.",
    "1_000",
    "",
    ".",
    "-",
    "Infinity",
    "0x10",
]


@pytest.mark.parametrize("text", NOT_ASCII_DECIMALS)
def test_only_ascii_digits_with_an_optional_fraction_are_amounts(text: str) -> None:
    for convert in (
        lambda: parse_decimal(text, "price"),
        lambda: to_steps(text, Decimal("0.01"), "price", allow_zero=True),
    ):
        with pytest.raises(CommandError) as info:
            convert()
        assert info.value.field == "price"
        assert "decimal string" in info.value.message


def test_parse_decimal_rejects_non_strings() -> None:
    with pytest.raises(CommandError):
        parse_decimal(12, "price")  # type: ignore[arg-type]


def test_check_int_bounds() -> None:
    assert check_int(MAX_INT, "x") == MAX_INT
    with pytest.raises(CommandError):
        check_int(MAX_INT + 1, "x")
    with pytest.raises(CommandError):
        check_int(-MAX_INT - 2, "x")


@pytest.mark.parametrize(
    ("step", "digits"), [("0.01", 2), ("5", 0), ("0.50", 1), ("100", 0), ("1E+2", 0)]
)
def test_decimals_of(step: str, digits: int) -> None:
    assert decimals_of(Decimal(step)) == digits


def test_scale_renders_fixed_digits() -> None:
    assert Scale(Decimal("0.01")).render(200000) == "2000.00"
    assert Scale(Decimal("0.0001")).render(5) == "0.0005"
    assert Scale(Decimal("0.5")).render(3) == "1.5"
    assert Scale(Decimal("5")).render(3) == "15"
    assert Scale(Decimal("0.01")).render(-150) == "-1.50"


def _spec(**kw: object) -> MarketSpec:
    """ETH-USDC (tests/support/markets.py) with the fields in `kw` changed."""
    return msgspec.structs.replace(ETH_USDC, **kw)


def test_market_params_integer_steps() -> None:
    params = MarketParams(_spec(), ETH, USDC)
    assert params.lot_units == 1
    assert params.tick_lot_units == 1  # 0.01 * 0.0001 * 10^6
    assert params.min_notional_units == 1_000_000
    assert params.max_open_orders == 0


@pytest.mark.parametrize(
    ("kw", "base", "quote", "field"),
    [
        ({"lot_size": "0.00001"}, ETH, USDC, "lot_size"),
        ({"tick_size": "0.001"}, ETH, Asset(symbol="USDC", decimals=2), "tick_size"),
        ({"tick_size": "0"}, ETH, USDC, "tick_size"),
        ({"lot_size": "0"}, ETH, USDC, "lot_size"),
        ({"min_size": "0.00015"}, ETH, USDC, "min_size"),
        ({"min_notional": "0.0000001"}, ETH, USDC, "min_notional"),
        ({"price_band_bps": -1}, ETH, USDC, "price_band_bps"),
        ({"max_open_orders": 0}, ETH, USDC, "max_open_orders"),
        ({"lot_size": "10000000000000000"}, ETH, USDC, "lot_size"),
    ],
)
def test_market_refused(kw: dict[str, object], base: Asset, quote: Asset, field: str) -> None:
    with pytest.raises(CommandError) as info:
        MarketParams(_spec(**kw), base, quote)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"base": "eth"}, "base"),
        ({"quote": "ETH"}, "quote"),
        ({"market": "ETHUSDC"}, "market"),
        ({"base": "ETH\n", "market": "ETH\n-USDC"}, "base"),  # `$` matches before a newline
        ({"quote": "USDC\n", "market": "ETH-USDC\n"}, "quote"),
        ({"base": "ETH\uff11", "market": "ETH\uff11-USDC"}, "base"),  # fullwidth 1
    ],
)
def test_market_symbol_refused(kw: dict[str, object], field: str) -> None:
    with pytest.raises(CommandError) as info:
        check_market_symbol(_spec(**kw))
    assert info.value.field == field


def test_resolve_market_uses_known_assets_and_creates_the_others() -> None:
    eth8 = Asset(symbol="ETH", decimals=8)
    params = resolve_market(_spec(), {"ETH": eth8})
    assert params.base is eth8  # known: as it is, though the steps need only 4 decimals
    assert params.quote == Asset(symbol="USDC", decimals=6)  # tick x lot = 0.000001 USDC
    assert (params.lot_units, params.tick_lot_units) == (10_000, 1)
    fresh = resolve_market(_spec(min_notional="0.0000001"), {})
    assert (fresh.base.decimals, fresh.quote.decimals) == (4, 7)  # the notional needs 7


@pytest.mark.parametrize(
    ("kw", "known", "field"),
    [
        ({"lot_size": "0.0000000001", "min_size": "1"}, {}, "lot_size"),  # ETH would need 10
        ({"tick_size": "0.0000001", "lot_size": "0.001"}, {}, "tick_size"),  # USDC 10
        ({"tick_size": "0.0000001", "lot_size": "0.001"}, {"USDC": USDC}, "tick_size"),
        ({"base": "eth", "market": "eth-USDC"}, {}, "base"),
        ({"market": "ETH-USD"}, {}, "market"),
        ({"price_band_bps": -1}, {"ETH": ETH, "USDC": USDC}, "price_band_bps"),
    ],
)
def test_resolve_market_refused(kw: dict[str, object], known: dict[str, Asset], field: str) -> None:
    with pytest.raises(CommandError) as info:
        resolve_market(_spec(**kw), known)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("asset", "field"),
    [
        (Asset(symbol="e", decimals=2), "symbol"),
        (Asset(symbol="E\n", decimals=2), "symbol"),
        (Asset(symbol="E", decimals=10), "decimals"),
    ],
)
def test_asset_refused(asset: Asset, field: str) -> None:
    with pytest.raises(CommandError) as info:
        check_asset(asset)
    assert info.value.field == field
