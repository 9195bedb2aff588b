"""The request bodies of the admin routes (unknown fields refused)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from dex.core.enums import MarketStatus


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    status: MarketStatus


class DisableRequest(msgspec.Struct, forbid_unknown_fields=True):
    market: str | None = None


class CreditRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Test funds (no `tx_id`: the exchange makes a new one), or a chain deposit the operator
    credits by hand (`tx_id`, `log_index`): credited once, a repeat is a 409."""

    asset: str
    amount: str
    tx_id: str | None = None
    log_index: Annotated[int, msgspec.Meta(ge=0, lt=2**32)] = 0


class LimitsRequest(msgspec.Struct, forbid_unknown_fields=True):
    max_open_orders: int = 0
    max_order_notional: dict[str, str] = msgspec.field(default_factory=dict)


class FeesRequest(msgspec.Struct, forbid_unknown_fields=True):
    market: str
    maker_bps: int
    taker_bps: int
