"""Order book structures: resting orders, price levels and one side of a book.

A side is a dict price -> Level plus a heap of prices for the best price (lazy: a price whose
level is gone is dropped when it reaches the top; `in_heap` keeps each price in the heap once).
The best price itself is kept in `top`: a new level may improve it, and deleting the level at
the top (always through `drop_level`, or `del` followed by `retop`) finds the next one.
A level is a FIFO deque of orders with its count of live orders (its total is summed only when
a view asks for it).
Cancels are O(1): the order is marked dead (remaining 0) and skipped when it reaches the front;
a level whose dead entries outnumber its live ones is compacted. Orders that must move inside
the book (amends) are removed physically, since their object lives on.

Costs: best price O(1) amortized, add O(log levels) for a new level else O(1), cancel O(1)
amortized, match O(1) per fill.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

import msgspec

from dex.core.commands import Place
from dex.core.enums import STP


class Order(msgspec.Struct, gc=False, eq=False, array_like=True):
    """A resting (or incoming) order; `remaining == 0` in a level's queue means dead.

    A msgspec struct: built in C (several times faster than a Python __init__), no GC header,
    compared by identity (eq=False) so `deque.remove` finds exactly this order. Encoded as an
    array of its fields in this order: that is its row in a snapshot, which decodes straight
    back into orders.
    """

    oid: int
    account: str
    cid: str | None
    is_buy: bool
    price: int
    remaining: int
    filled: int
    visible: int  # shown part of an iceberg; unused (0) when display == 0
    display: int
    expires_at: int  # 0: not GTD
    stp: STP
    post_only: bool


class StopOrder:
    """An accepted stop waiting for its trigger: the accepted command and its order id."""

    __slots__ = ("cmd", "oid")

    def __init__(self, oid: int, cmd: Place) -> None:
        self.oid = oid
        self.cmd = cmd

    @property
    def account(self) -> str:
        return self.cmd.account


class Level:
    __slots__ = ("live", "q")

    def __init__(self) -> None:
        self.q: deque[Order] = deque()
        self.live = 0

    def compact(self) -> None:
        """Drop dead entries (kept while they are few: cancels are O(1))."""
        self.q = deque(o for o in self.q if o.remaining)


class BookSide:
    __slots__ = ("heap", "in_heap", "is_bid", "levels", "top")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []  # prices, negated for bids
        self.in_heap: set[int] = set()
        self.top = 0  # the best price, 0 when the side is empty

    def best(self) -> int:
        """Best price, or 0 when the side is empty."""
        return self.top

    def retop(self) -> None:
        """Find the best price again after the level at the top was deleted."""
        heap = self.heap
        levels = self.levels
        sign = -1 if self.is_bid else 1
        while heap:
            price = heap[0] * sign
            if price in levels:
                self.top = price
                return
            heappop(heap)
            self.in_heap.discard(price)
        self.top = 0

    def new_level(self, price: int) -> Level:
        level = self.levels[price] = Level()
        if price not in self.in_heap:
            self.in_heap.add(price)
            heappush(self.heap, -price if self.is_bid else price)
        top = self.top
        if not top or (price > top if self.is_bid else price < top):
            self.top = price
        return level

    def drop_level(self, price: int) -> None:
        del self.levels[price]
        if price == self.top:
            self.retop()

    def add(self, order: Order) -> Level:
        price = order.price
        level = self.levels.get(price)
        if level is None:
            level = self.new_level(price)
        level.q.append(order)
        level.live += 1
        return level

    def remove_lazy(self, order: Order) -> None:
        """Take a live order out (cancel, expiry); its object must never come back to life."""
        level = self.levels[order.price]
        level.live -= 1
        order.remaining = 0
        if not level.live:
            self.drop_level(order.price)
        elif level.live < len(level.q) >> 2:  # mostly dead entries: compact
            level.compact()

    def remove_now(self, order: Order) -> None:
        """Take a live order out physically (it will re-enter the book: amends)."""
        level = self.levels[order.price]
        level.q.remove(order)
        level.live -= 1
        if not level.live:
            self.drop_level(order.price)

    def sorted_prices(self) -> list[int]:
        """Prices best first."""
        return sorted(self.levels, reverse=self.is_bid)
