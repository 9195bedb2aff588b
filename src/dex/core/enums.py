"""Enumerations used on the wire and in the cores. Values are the wire spelling."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"
    STOP_LIMIT = "stop_limit"
    STOP_MARKET = "stop_market"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"


class STP(StrEnum):
    """Self-trade prevention mode of the incoming order."""

    EXPIRE_TAKER = "expire_taker"
    EXPIRE_MAKER = "expire_maker"
    EXPIRE_BOTH = "expire_both"
    NONE = "none"


class MarketStatus(StrEnum):
    ACTIVE = "active"
    POST_ONLY = "post_only"
    CANCEL_ONLY = "cancel_only"
    HALTED = "halted"


class CancelReason(StrEnum):
    """The closed set of reasons on a `cancelled` event."""

    USER = "user"
    IOC = "ioc"
    FOK = "fok"
    STP = "stp"
    PRICE_BAND = "price_band"
    PRICE_PROTECTION = "price_protection"
    MARKET_STATUS = "market_status"
    NO_LIQUIDITY = "no_liquidity"
    AMEND = "amend"
    ADMIN = "admin"


class OrderStatus(StrEnum):
    """Where an order stands: one set of states for risk, the gateway and persistence.

    An order moves only along `ORDER_TRANSITIONS`; filled, cancelled, expired and rejected
    are terminal (each order ends with exactly one of them)."""

    PENDING = "pending"  # taken by risk (funds held), on its way to matching
    UNTRIGGERED = "untriggered"  # a stop order accepted by matching, waiting for its trigger
    OPEN = "open"  # accepted by matching (or triggered): resting or being matched
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


_ENDS = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)
ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: _ENDS | {OrderStatus.UNTRIGGERED, OrderStatus.OPEN},
    OrderStatus.UNTRIGGERED: _ENDS | {OrderStatus.OPEN},
    OrderStatus.OPEN: _ENDS,
    **{end: frozenset() for end in _ENDS},
}
TERMINAL_STATUSES = _ENDS
