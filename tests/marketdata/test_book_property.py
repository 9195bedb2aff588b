"""The L2 book built from matching events equals the engine's visible book, and its checksum an
independent computation, after every command of random engine command streams.

The command streams are those of the engine-versus-reference machine
(tests/property/test_engine_vs_reference.py: every order type and TIF, icebergs, amends,
cancels, stops, expiry, status changes, snapshot/restore); this machine also feeds every event
the engine emits to one `L2Book` per market and, after each command, compares each book with
`Engine.view` level by level, its `seq` with the market's event seq, and its checksum with one
computed here from the view (decimal strings rendered here with `Decimal`, `zlib.crc32`).
"""

from __future__ import annotations

import os
import zlib
from decimal import Decimal

from hypothesis import settings
from hypothesis.stateful import invariant

from dex.core.events import Event, MarketAdded
from dex.core.markets import MarketSpec
from dex.marketdata.book import L2Book, Precision, checksum
from dex.matching.views import MarketView
from tests.property.test_engine_vs_reference import SETTINGS, EngineVsReference

IN_CI = os.environ.get("CI") == "true"


def text(n: int, step: str) -> str:
    """`n` steps of `step` as a decimal string with the step's decimals."""
    d = Decimal(step)
    places = max(0, -int(d.normalize().as_tuple().exponent))
    return f"{Decimal(n) * d:.{places}f}"


def view_levels(view: MarketView) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(bids, asks) best first: each level's visible size, levels showing nothing left out."""
    bids = [(lv.price, sum(o.visible for o in lv.orders)) for lv in view.bids]
    asks = [(lv.price, sum(o.visible for o in lv.orders)) for lv in view.asks]
    return [x for x in bids if x[1]], [x for x in asks if x[1]]


def view_checksum(view: MarketView, spec: MarketSpec) -> int:
    bids, asks = view_levels(view)
    parts: list[str] = []
    for i in range(25):
        for side in (bids, asks):
            if i < len(side):
                price, size = side[i]
                parts.append(f"{text(price, spec.tick_size)}:{text(size, spec.lot_size)}")
    return zlib.crc32(":".join(parts).encode())


class BookVsEngine(EngineVsReference):
    def __init__(self) -> None:
        super().__init__()
        self.books: dict[str, L2Book] = {}
        self.specs: dict[str, MarketSpec] = {}

    def record(self, events: list[Event]) -> None:
        super().record(events)
        for e in events:
            if isinstance(e, MarketAdded):
                self.books[e.market] = L2Book(e.spec)
                self.specs[e.market] = e.spec
            book = self.books.get(e.market)
            if book is not None:
                book.apply(e)

    @invariant()
    def books_equal_the_engine(self) -> None:
        for market, book in self.books.items():
            view = self.eng.view(market)
            bids, asks = view_levels(view)
            assert book.top(10**6) == (bids, asks), f"{market} differs after command {self.n}"
            assert book.seq == self.eng.markets[market].seq
            assert book.status == view.status
            spec = self.specs[market]
            snap = book.snapshot(25, Precision(spec))
            assert snap["checksum"] == view_checksum(view, spec)
            assert snap["bids"] == [
                [text(p, spec.tick_size), text(n, spec.lot_size)] for p, n in bids[:25]
            ]
            assert snap["asks"] == [
                [text(p, spec.tick_size), text(n, spec.lot_size)] for p, n in asks[:25]
            ]


TestBookVsEngine = BookVsEngine.TestCase
TestBookVsEngine.settings = settings(SETTINGS, max_examples=60 if IN_CI else 30)


def test_checksum_interleaves_the_top_25_levels_of_each_side() -> None:
    bids = [[f"{100 - i}.5", f"{i + 1}"] for i in range(30)]
    asks = [["101.0", "0.25"], ["102.0", "3"]]
    parts = ["100.5", "1", "101.0", "0.25", "99.5", "2", "102.0", "3"]
    parts += [x for i in range(2, 25) for x in bids[i]]
    assert checksum(bids, asks) == zlib.crc32(":".join(parts).encode())
    assert checksum([], []) == zlib.crc32(b"") == 0
    assert checksum([["1", "2"]], []) == zlib.crc32(b"1:2")
    assert checksum([], [["3", "4"]]) == zlib.crc32(b"3:4")
    # unsigned: a value with the top bit set stays positive
    many = [[str(i), "1"] for i in range(1, 26)]
    assert 0 <= checksum(many, many) < 2**32
