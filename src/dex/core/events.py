"""Events of the matching core, in integer form (ticks, lots, quote units, nanoseconds).

Every event carries the schema version `v`, its `market`, the market's gap-free `seq`, the
command time `ts`, the engine's gap-free `log_seq` and `input`, the position of the command
that produced it. Constructed positionally on the hot path, so the field order is part of the
contract: base fields first, in the order of `_Event`.

Sizes are lots, prices ticks, `quote_size`-like fields quote-asset units. A field that does
not apply is None (or 0 for prices of orders that have none, as in the commands).
"""

from __future__ import annotations

import msgspec

from dex.core.commands import InputRef, Place
from dex.core.enums import STP, CancelReason, MarketStatus, OrderType, Side, TimeInForce
from dex.core.errors import RejectCode
from dex.core.markets import Asset, MarketSpec


class _Event(msgspec.Struct, frozen=True, gc=False, tag_field="event"):
    v: int
    market: str
    seq: int
    ts: int
    log_seq: int
    input: InputRef


class AssetAdded(_Event, frozen=True, tag="asset_added"):
    asset: Asset


class MarketAdded(_Event, frozen=True, tag="market_added"):
    spec: MarketSpec


class MarketStatusChanged(_Event, frozen=True, tag="market_status_changed"):
    status: MarketStatus
    previous: MarketStatus


class Accepted(_Event, frozen=True, tag="accepted"):
    """A new order passed every check. `order` is the accepted command itself (on the wire a
    nested object; the replay tool flattens it); its fields are readable on the event too."""

    order_id: int
    order: Place

    @property
    def client_order_id(self) -> str | None:
        return self.order.client_order_id

    @property
    def account(self) -> str:
        return self.order.account

    @property
    def side(self) -> Side:
        return self.order.side

    @property
    def type(self) -> OrderType:
        return self.order.type

    @property
    def price(self) -> int:
        return self.order.price

    @property
    def size(self) -> int:
        return self.order.size

    @property
    def quote_size(self) -> int:
        return self.order.quote_size

    @property
    def tif(self) -> TimeInForce:
        return self.order.tif

    @property
    def post_only(self) -> bool:
        return self.order.post_only

    @property
    def stp(self) -> STP:
        return self.order.stp

    @property
    def expires_at(self) -> int | None:
        return self.order.expires_at

    @property
    def trigger_price(self) -> int:
        return self.order.trigger_price

    @property
    def display_size(self) -> int:
        return self.order.display_size

    @property
    def max_price(self) -> int:
        return self.order.max_price

    @property
    def min_price(self) -> int:
        return self.order.min_price


class Trade(_Event, frozen=True, tag="trade"):
    trade_id: int
    price: int
    size: int
    aggressor: Side
    maker_order_id: int
    maker_account: str
    maker_client_order_id: str | None
    maker_remaining: int
    taker_order_id: int
    taker_account: str
    taker_client_order_id: str | None
    taker_remaining: int | None
    taker_remaining_quote: int | None


class Amended(_Event, frozen=True, tag="amended"):
    order_id: int
    client_order_id: str | None
    account: str
    side: Side
    price: int
    size: int
    remaining: int
    kept_priority: bool


class Triggered(_Event, frozen=True, tag="triggered"):
    order_id: int
    client_order_id: str | None
    account: str
    side: Side
    trigger_price: int
    last_price: int


class AmendRejected(_Event, frozen=True, tag="amend_rejected"):
    order_id: int | None
    client_order_id: str | None
    account: str
    code: RejectCode
    message: str


class CancelRejected(_Event, frozen=True, tag="cancel_rejected"):
    order_id: int | None
    client_order_id: str | None
    account: str
    code: RejectCode
    message: str


class Filled(_Event, frozen=True, tag="filled"):
    order_id: int
    client_order_id: str | None
    account: str
    side: Side
    size: int


class Cancelled(_Event, frozen=True, tag="cancelled"):
    order_id: int
    client_order_id: str | None
    account: str
    side: Side
    size: int | None
    quote_size: int | None
    filled: int
    reason: CancelReason


class Expired(_Event, frozen=True, tag="expired"):
    order_id: int
    client_order_id: str | None
    account: str
    side: Side
    size: int
    filled: int


class Rejected(_Event, frozen=True, tag="rejected"):
    order_id: int
    client_order_id: str | None
    account: str
    side: Side
    code: RejectCode
    message: str


Event = (
    AssetAdded
    | MarketAdded
    | MarketStatusChanged
    | Accepted
    | Trade
    | Amended
    | Triggered
    | AmendRejected
    | CancelRejected
    | Filled
    | Cancelled
    | Expired
    | Rejected
)

TERMINAL = (Filled, Cancelled, Expired, Rejected)
