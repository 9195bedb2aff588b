"""The decimal-string form of engine commands and events (replay files, audit output).

People write prices and sizes as decimal strings; the core works in ticks, lots and asset
units. `to_command` converts one parsed line using the engine's markets (so a value that is not
a whole number of ticks or lots is refused with the field named); `render` turns an event back
into a JSON-ready dict with decimal strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from dex.core import commands as c
from dex.core.enums import STP, CancelReason, MarketStatus, OrderType, Side, TimeInForce
from dex.core.errors import CommandError
from dex.core.events import Accepted, Event
from dex.core.markets import Asset, MarketParams, MarketSpec
from dex.core.numbers import to_steps


class _Line(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="cmd"):
    pass


class AddAssetLine(_Line, frozen=True, tag="add_asset"):
    symbol: str
    decimals: int
    ts: int = 0


class AddMarketLine(_Line, frozen=True, tag="add_market"):
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
    ts: int = 0


class SetMarketStatusLine(_Line, frozen=True, tag="set_market_status"):
    ts: int
    market: str
    status: MarketStatus


class PlaceLine(_Line, frozen=True, tag="place"):
    ts: int
    market: str
    account: str
    side: Side
    type: OrderType
    client_order_id: str | None = None
    price: str | None = None
    size: str | None = None
    quote_size: str | None = None
    tif: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    stp: STP = STP.EXPIRE_TAKER
    order_id: int | None = None
    expires_at: int | None = None
    trigger_price: str | None = None
    display_size: str | None = None
    max_price: str | None = None
    min_price: str | None = None


class AmendLine(_Line, frozen=True, tag="amend"):
    ts: int
    market: str
    account: str
    order_id: int | None = None
    client_order_id: str | None = None
    price: str | None = None
    size: str | None = None


class CancelLine(_Line, frozen=True, tag="cancel"):
    ts: int
    market: str
    account: str
    order_id: int | None = None
    client_order_id: str | None = None
    reason: CancelReason = CancelReason.USER


class CancelAllLine(_Line, frozen=True, tag="cancel_all"):
    ts: int
    account: str
    market: str | None = None
    reason: CancelReason = CancelReason.USER


class TickLine(_Line, frozen=True, tag="tick"):
    ts: int


Line = (
    AddAssetLine
    | AddMarketLine
    | SetMarketStatusLine
    | PlaceLine
    | AmendLine
    | CancelLine
    | CancelAllLine
    | TickLine
)
_decoder = msgspec.json.Decoder(Line)


def parse_line(raw: bytes | str) -> Line:
    """Decode one JSON line; a malformed one raises CommandError naming the field."""
    try:
        line: Line = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        message = text.split(" - at ")[0]
        if "at `$." in text:
            field = text.rsplit("at `$.", 1)[1].rstrip("`")
        elif message.endswith("`") and "field `" in message:  # missing or unknown field
            field = message.rsplit("`", 2)[1]
        else:
            field = "cmd"
        raise CommandError(field, message) from None
    except msgspec.DecodeError as exc:
        raise CommandError("line", f"not valid JSON: {exc}") from None
    return line


def _ticks(text: str | None, params: MarketParams, field: str) -> int:
    return 0 if text is None else to_steps(text, params.tick, field, unit="ticks")


def _lots(text: str | None, params: MarketParams, field: str) -> int:
    return 0 if text is None else to_steps(text, params.lot, field, unit="lots")


def _units(text: str | None, asset: Asset, field: str) -> int:
    return (
        0
        if text is None
        else to_steps(text, Decimal(1).scaleb(-asset.decimals), field, unit=f"{asset.symbol} units")
    )


def to_command(line: Line, markets: dict[str, MarketParams]) -> c.Command:
    """Convert a parsed line to an integer command (raises CommandError)."""
    if isinstance(line, AddAssetLine):
        return c.AddAsset(ts=line.ts, asset=Asset(symbol=line.symbol, decimals=line.decimals))
    if isinstance(line, AddMarketLine):
        fields = msgspec.structs.asdict(line)
        del fields["ts"]
        return c.AddMarket(ts=line.ts, spec=MarketSpec(**fields))
    if isinstance(line, SetMarketStatusLine):
        return c.SetMarketStatus(ts=line.ts, market=line.market, status=line.status)
    if isinstance(line, TickLine):
        return c.Tick(ts=line.ts)
    if isinstance(line, CancelAllLine):
        return c.CancelAll(ts=line.ts, account=line.account, market=line.market, reason=line.reason)
    params = markets.get(line.market)
    if params is None:
        raise CommandError("market", f"unknown market {line.market!r}")
    if isinstance(line, CancelLine):
        return c.Cancel(
            ts=line.ts,
            market=line.market,
            account=line.account,
            order_id=line.order_id,
            client_order_id=line.client_order_id,
            reason=line.reason,
        )
    if isinstance(line, AmendLine):
        return c.Amend(
            ts=line.ts,
            market=line.market,
            account=line.account,
            order_id=line.order_id,
            client_order_id=line.client_order_id,
            price=_ticks(line.price, params, "price"),
            size=_lots(line.size, params, "size"),
        )
    return c.Place(
        ts=line.ts,
        market=line.market,
        account=line.account,
        side=line.side,
        type=line.type,
        size=_lots(line.size, params, "size"),
        price=_ticks(line.price, params, "price"),
        quote_size=_units(line.quote_size, params.quote, "quote_size"),
        tif=line.tif,
        post_only=line.post_only,
        stp=line.stp,
        client_order_id=line.client_order_id,
        order_id=line.order_id,
        expires_at=line.expires_at,
        trigger_price=_ticks(line.trigger_price, params, "trigger_price"),
        display_size=_lots(line.display_size, params, "display_size"),
        max_price=_ticks(line.max_price, params, "max_price"),
        min_price=_ticks(line.min_price, params, "min_price"),
    )


_ORDER_FIELDS = (
    "client_order_id",
    "account",
    "side",
    "type",
    "price",
    "size",
    "quote_size",
    "tif",
    "post_only",
    "stp",
    "expires_at",
    "trigger_price",
    "display_size",
    "max_price",
    "min_price",
)
_PRICES = ("price", "trigger_price", "max_price", "min_price", "last_price")
_SIZES = ("size", "remaining", "filled", "display_size", "maker_remaining", "taker_remaining")
_QUOTES = ("quote_size", "taker_remaining_quote")


def render(event: Event, markets: dict[str, MarketParams]) -> dict[str, Any]:
    """An event as a JSON-ready dict, amounts as decimal strings of the market's steps."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    params = markets.get(event.market)
    if params is None:  # asset_added, market_added: nothing to scale
        return out
    optional_zero = isinstance(event, Accepted)
    if isinstance(event, Accepted):  # flatten the accepted order into the event, as expected
        del out["order"]  # encoded without its default fields: read them off the command
        order = msgspec.to_builtins([getattr(event.order, name) for name in _ORDER_FIELDS])
        out.update(zip(_ORDER_FIELDS, order, strict=True))
    for names, scale in (
        (_PRICES, params.price_scale),
        (_SIZES, params.size_scale),
        (_QUOTES, params.quote_scale),
    ):
        for name in names:
            value = out.get(name)
            if value is None or (value == 0 and optional_zero):
                if name in out:
                    out[name] = None
                continue
            out[name] = scale.render(value)
    return out
