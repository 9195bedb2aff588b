"""Errors and stable rejection codes.

Two kinds of failure: a broken contract (a malformed command, an unknown market on an
integer command) raises `CommandError` before any state changes; a business rejection is a
value (an event carrying a `RejectCode`).
"""

from __future__ import annotations

from enum import StrEnum


class CommandError(ValueError):
    """A command that is malformed or names something unknown; nothing was changed.

    `field` names the offending field (dotted path), `message` says what is wrong.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RejectCode(StrEnum):
    """Stable codes for refused orders, amends and cancels. Never renumber or rename."""

    MARKET_STATUS = "market_status"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    INVALID_ORDER = "invalid_order"
    BELOW_MIN_SIZE = "below_min_size"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    TOO_MANY_OPEN_ORDERS = "too_many_open_orders"
    OUTSIDE_PRICE_BAND = "outside_price_band"
    POST_ONLY_WOULD_TAKE = "post_only_would_take"
    STOP_WOULD_TRIGGER = "stop_would_trigger"
    ALREADY_EXPIRED = "already_expired"
    UNKNOWN_ORDER = "unknown_order"
    NOT_AMENDABLE = "not_amendable"
