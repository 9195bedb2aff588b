"""Commands of the matching core, in integer form (ticks, lots, asset units, nanoseconds).

These are what risk hands to matching and what the matching log stores. The decimal-string
form that people write (the replay tool's lines, the API) is converted at the edge.

Optional numeric fields use 0 for "absent": every price and size that is present must be
positive. `order_id` and `expires_at` use None.
"""

from __future__ import annotations

import msgspec

from dex.core.enums import STP, CancelReason, MarketStatus, OrderType, Side, TimeInForce
from dex.core.markets import Asset, MarketSpec
from dex.core.validation import check_amend, check_enums, check_place, check_target

SCHEMA_VERSION = 1


class InputRef(msgspec.Struct, frozen=True, gc=False):
    """Where a command came from: the stream it was read from and its position there."""

    stream: str
    log_seq: int


class CommandStruct(
    msgspec.Struct,
    frozen=True,
    gc=False,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="cmd",
    omit_defaults=True,
):
    """The wire form of every command, the core's and risk's: a map tagged by `cmd`, unknown
    fields refused, fields at their default value left out (commands are logged and passed
    on many times). `kw_only` applies to the fields of the class that sets it: each base
    that declares fields sets it again."""


class _Command(CommandStruct, frozen=True, kw_only=True):
    ts: int = 0
    v: int = SCHEMA_VERSION


class AddAsset(_Command, frozen=True, tag="add_asset"):
    asset: Asset


class AddMarket(_Command, frozen=True, tag="add_market"):
    spec: MarketSpec


class SetMarketStatus(_Command, frozen=True, tag="set_market_status"):
    market: str
    status: MarketStatus

    def __post_init__(self) -> None:
        check_enums(self, status=MarketStatus)


class Place(_Command, frozen=True, tag="place"):
    market: str
    account: str
    side: Side
    type: OrderType
    size: int = 0
    price: int = 0
    quote_size: int = 0
    tif: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    stp: STP = STP.EXPIRE_TAKER
    client_order_id: str | None = None
    order_id: int | None = None
    expires_at: int | None = None
    trigger_price: int = 0
    display_size: int = 0
    max_price: int = 0
    min_price: int = 0

    def __post_init__(self) -> None:
        check_place(self)


class Amend(_Command, frozen=True, tag="amend"):
    market: str
    account: str
    order_id: int | None = None
    client_order_id: str | None = None
    price: int = 0
    size: int = 0

    def __post_init__(self) -> None:
        check_amend(self)


class Cancel(_Command, frozen=True, tag="cancel"):
    market: str
    account: str
    order_id: int | None = None
    client_order_id: str | None = None
    reason: CancelReason = CancelReason.USER

    def __post_init__(self) -> None:
        check_target(self)
        if type(self.reason) is not CancelReason:
            check_enums(self, reason=CancelReason)


class CancelAll(_Command, frozen=True, tag="cancel_all"):
    account: str
    market: str | None = None
    reason: CancelReason = CancelReason.USER

    def __post_init__(self) -> None:
        if type(self.reason) is not CancelReason:
            check_enums(self, reason=CancelReason)


class Tick(_Command, frozen=True, tag="tick"):
    pass


Command = AddAsset | AddMarket | SetMarketStatus | Place | Amend | Cancel | CancelAll | Tick
