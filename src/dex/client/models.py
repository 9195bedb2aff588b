"""Typed results of the trading API: msgspec Structs built from the JSON answers.

Amounts are `Decimal` (the answers' decimal strings, never floats), times are ms since the
epoch. Every field a server might leave out has a default and unknown fields are ignored,
so a newer server's answer still parses (forward compatible).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


class _Result(msgspec.Struct, kw_only=True):
    pass


class OrderFill(_Result, kw_only=True):
    """One fill in a place outcome."""

    trade_id: int | None = None
    price: Decimal | None = None
    size: Decimal | None = None
    fee: Decimal | None = None
    fee_asset: str | None = None
    liquidity: str | None = None


class Order(_Result, kw_only=True):
    """An order: the outcome of a place, amend or cancel, or a row of the order history."""

    order_id: int
    client_order_id: str | None = None
    market: str | None = None
    side: str | None = None
    type: str | None = None
    tif: str | None = None
    status: str | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    size: Decimal | None = None
    quote_size: Decimal | None = None
    filled: Decimal | None = None
    remaining: Decimal | None = None
    fills: list[OrderFill] = msgspec.field(default_factory=list)
    reason: str | None = None
    message: str | None = None
    duplicate: bool = False
    kept_priority: bool | None = None
    created_ms: int | None = None
    updated_ms: int | None = None


class Fill(_Result, kw_only=True):
    """One of the account's fills."""

    trade_id: int
    order_id: int | None = None
    market: str | None = None
    side: str | None = None
    price: Decimal | None = None
    size: Decimal | None = None
    fee: Decimal | None = None
    fee_asset: str | None = None
    liquidity: str | None = None
    ts: int | None = None
    time_ms: int | None = None


class Balance(_Result, kw_only=True):
    asset: str
    available: Decimal
    locked: Decimal


class ApiKeyInfo(_Result, kw_only=True):
    """One of the account's API keys (no secret)."""

    api_key: str
    key_type: str | None = None
    account: str | None = None
    permissions: str | None = None
    expires_at: int | None = None
    revoked: bool = False


class CancelAll(_Result, kw_only=True):
    cancelled: list[int] = msgspec.field(default_factory=list)
    market: str | None = None


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of a listing, newest first; `next_cursor` (None at the end) fetches the
    next."""

    items: list[T]
    next_cursor: str | None = None


def convert(data: Any, kind: type[T]) -> T:
    # strict=False: decimal strings become Decimal, and an int where a str is expected is
    # not a reason to fail a trader's call
    return msgspec.convert(data, kind, strict=False)


def page_of(data: Any, key: str, kind: type[T]) -> Page[T]:
    return Page(
        items=[convert(row, kind) for row in data.get(key, [])], next_cursor=data.get("next_cursor")
    )
