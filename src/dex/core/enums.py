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
