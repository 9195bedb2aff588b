"""Stable codes and small enumerations of the risk ledger. Values are the wire spelling.

Never renumber or rename a code: clients and stored events depend on the spelling.
"""

from __future__ import annotations

from enum import StrEnum


class RiskCode(StrEnum):
    """Why risk refused a request (an order, an amend, a withdrawal, an admin change, an API
    key's registration or revocation)."""

    INVALID_ADDRESS = "invalid_address"  # not `0x` + 40 hex, or a bad EIP-55 checksum
    INVALID_CLIENT_ORDER_ID = "invalid_client_order_id"  # not 1-36 of A-Z a-z 0-9 . _ : -
    INVALID_AMOUNT = "invalid_amount"  # not in [1, 2^63), or a balance would reach 2^63
    UNKNOWN_ASSET = "unknown_asset"
    GLOBAL_HALT = "global_halt"
    MARKET_UNAVAILABLE = "market_unavailable"  # unknown, cancel_only/halted, or backpressure
    ACCOUNT_FROZEN = "account_frozen"
    TRADING_DISABLED = "trading_disabled"
    NOTIONAL_LIMIT = "notional_limit"
    OPEN_ORDERS_LIMIT = "open_orders_limit"
    NO_REFERENCE_PRICE = "no_reference_price"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    UNKNOWN_ORDER = "unknown_order"
    AMEND_IN_PROGRESS = "amend_in_progress"
    INVALID_FEE_RATES = "invalid_fee_rates"
    NONCE_USED = "nonce_used"  # a wallet nonce used before (an order's: in the last 24 hours)
    UNKNOWN_KEY = "unknown_key"  # no such API key of this account, or already revoked
    TOO_MANY_KEYS = "too_many_keys"  # the account has the most live API keys allowed
    INVALID_KEY = "invalid_key"  # a malformed API key registration, or an id already used


class ReleaseCause(StrEnum):
    """Why `funds_released` gave held funds back: an order's end (its terminal status) or an
    amend settled."""

    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    AMENDED = "amended"  # the amend's new hold is less than the old one
    AMEND_REJECTED = "amend_rejected"  # the increase held for a refused amend


class Control(StrEnum):
    """The kill switches and flow controls reported by `control_changed`."""

    FREEZE = "freeze"  # account: all trading and withdrawals
    TRADING_DISABLED = "trading_disabled"  # account, optionally one market
    GLOBAL_HALT = "global_halt"  # every account and market
    BACKPRESSURE = "backpressure"  # one market: new orders refused while on
