"""Read-only views of an engine's state, for tests, invariant checks and audit tools.

Built on demand (O(open orders)); never used on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from dex.core.enums import MarketStatus, Side


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: int
    account: str
    client_order_id: str | None
    side: Side
    price: int
    size: int
    filled: int
    remaining: int
    visible: int


@dataclass(frozen=True, slots=True)
class LevelView:
    price: int
    total: int
    orders: tuple[OrderView, ...]


@dataclass(frozen=True, slots=True)
class MarketView:
    """`bids` best (highest) first, `asks` best (lowest) first; orders in time priority."""

    market: str
    status: MarketStatus
    last_price: int
    bids: tuple[LevelView, ...]
    asks: tuple[LevelView, ...]
    stop_order_ids: tuple[int, ...]
    open_order_count: int
