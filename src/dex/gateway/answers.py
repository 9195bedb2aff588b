"""The public API's answers, as typed models: the OpenAPI document shows each route's body
from them, and the routes return them (`typed`), so an answer outside its model is a bug
found at once rather than a surprise for a client. Amounts are decimal strings at the asset's
or market's precision; times are ms since the epoch.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class _Answer(msgspec.Struct, kw_only=True):
    pass


class ServerTime(_Answer, kw_only=True):
    server_time: int


class TypedDataDocument(_Answer, kw_only=True):
    """The EIP-712 domain and types (`dex.wire.signing.TYPES`)."""

    domain: dict[str, Any]
    types: dict[str, list[dict[str, str]]]


class MarketRules(_Answer, kw_only=True):
    market: str
    base: str
    quote: str
    tick_size: str
    lot_size: str
    min_size: str
    min_notional: str
    price_band_bps: int
    max_open_orders: int | None
    status: str
    maker_fee_bps: int
    taker_fee_bps: int


class AssetInfo(_Answer, kw_only=True):
    symbol: str
    decimals: int


class ApiKeyInfo(_Answer, kw_only=True):
    api_key: str
    key_type: str
    account: str
    permissions: str
    expires_at: int


class NewApiKey(ApiKeyInfo, kw_only=True, omit_defaults=True):
    """A registered key; `secret` (an HMAC key's) is shown in this answer only."""

    secret: str | None = None


class ApiKeys(_Answer, kw_only=True):
    keys: list[ApiKeyInfo]


class Revoked(_Answer, kw_only=True):
    api_key: str
    revoked: bool


class OutcomeFill(_Answer, kw_only=True):
    trade_id: int
    price: str
    size: str
    liquidity: str
    fee: str | None  # None: settled after the answer (GET /v1/fills has it)
    fee_asset: str | None


class OrderOutcome(_Answer, kw_only=True):
    """A place's answer: the order as the engine left it after the input that placed it."""

    order_id: int
    client_order_id: str | None
    market: str
    side: str
    type: str
    tif: str
    price: str | None
    trigger_price: str | None
    size: str | None
    quote_size: str | None
    status: str
    filled: str
    remaining: str | None
    fills: list[OutcomeFill]
    reason: str | None
    message: str | None
    duplicate: bool


class Cancelled(_Answer, kw_only=True):
    order_id: int
    client_order_id: str | None
    market: str
    status: str
    filled: str
    reason: str | None


class CancelledAll(_Answer, kw_only=True):
    cancelled: list[int]
    market: str | None


class Amended(_Answer, kw_only=True):
    order_id: int
    client_order_id: str | None
    market: str
    status: str
    price: str
    size: str
    remaining: str
    kept_priority: bool


class OrderRow(_Answer, kw_only=True):
    """An order as the history holds it."""

    order_id: int
    client_order_id: str | None
    market: str
    side: str
    type: str | None
    tif: str | None
    price: str | None
    trigger_price: str | None
    size: str | None
    quote_size: str | None
    filled: str
    status: str
    reason: str | None
    created_at: int
    updated_at: int


class OrdersPage(_Answer, kw_only=True):
    orders: list[OrderRow]
    next_cursor: str | None


class FillRow(_Answer, kw_only=True):
    trade_id: int
    order_id: int
    market: str
    side: str
    price: str
    size: str
    quote_size: str
    fee: str
    fee_asset: str
    liquidity: str
    ts: int


class FillsPage(_Answer, kw_only=True):
    fills: list[FillRow]
    next_cursor: str | None


class Balance(_Answer, kw_only=True):
    asset: str
    available: str
    locked: str


class Balances(_Answer, kw_only=True):
    balances: list[Balance]


class LedgerPage(_Answer, kw_only=True):
    entries: list[dict[str, Any]]
    next_cursor: str | None


class DepositsPage(_Answer, kw_only=True):
    deposits: list[dict[str, Any]]
    next_cursor: str | None


class WithdrawalsPage(_Answer, kw_only=True):
    withdrawals: list[dict[str, Any]]
    next_cursor: str | None


class Credited(_Answer, kw_only=True):
    asset: str
    amount: str
    available: str
    locked: str


def typed(kind: type[T], value: Any) -> T:
    """`value` (a dict, as built or as an upstream answered) as its answer model; extra
    fields of an upstream's answer are dropped."""
    return msgspec.convert(value, kind)
