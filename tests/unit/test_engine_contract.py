"""Malformed integer commands raise CommandError naming the field and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from dex.core.commands import (
    AddMarket,
    Amend,
    Cancel,
    CancelAll,
    InputRef,
    Place,
    SetMarketStatus,
    Tick,
)
from dex.core.enums import MarketStatus, OrderType, Side, TimeInForce
from dex.core.errors import CommandError, RejectCode
from dex.core.events import AmendRejected, Trade
from dex.matching.engine import Engine
from tests.support.markets import T_USD

SRC = InputRef("t", 1)


@pytest.fixture
def engine() -> Engine:
    eng = Engine()
    eng.apply(AddMarket(spec=T_USD), SRC)
    eng.apply(
        Place(
            ts=1,
            market="T-USD",
            account="a",
            side=Side.SELL,
            type=OrderType.LIMIT,
            price=100,
            size=2,
        ),
        SRC,
    )
    return eng


def _place(**kw: Any) -> Place:
    fields: dict[str, Any] = {
        "ts": 5,
        "market": "T-USD",
        "account": "b",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "price": 100,
        "size": 1,
    }
    fields.update(kw)
    return Place(**fields)


LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
STOP_LIMIT = OrderType.STOP_LIMIT
STOP_MARKET = OrderType.STOP_MARKET

BAD: list[tuple[Callable[[], Any], str]] = [  # (command factory, field)
    (lambda: _place(market="X-Y"), "market"),
    (lambda: _place(ts=1), "ts"),
    (lambda: _place(size=-1), "size"),
    (lambda: _place(price=2**63), "price"),
    (lambda: _place(order_id=0), "order_id"),
    (lambda: _place(price=0), "price"),
    (lambda: _place(size=0), "size"),
    (lambda: _place(quote_size=5), "quote_size"),
    (lambda: _place(max_price=5), "max_price"),
    (lambda: _place(min_price=5), "min_price"),
    (lambda: _place(tif=TimeInForce.IOC, post_only=True), "post_only"),
    (lambda: _place(tif=TimeInForce.FOK, display_size=1), "display_size"),
    (lambda: _place(size=2, display_size=3), "display_size"),
    (lambda: _place(type=MARKET), "price"),
    (lambda: _place(type=MARKET, price=0, size=0), "size"),
    (lambda: _place(type=MARKET, price=0, size=1, quote_size=1), "size"),
    (lambda: _place(type=MARKET, price=0, tif=TimeInForce.GTC), "tif"),
    (lambda: _place(type=MARKET, price=0, size=0, quote_size=9, tif=TimeInForce.FOK), "tif"),
    (lambda: _place(type=MARKET, price=0, tif=TimeInForce.IOC, post_only=True), "post_only"),
    (lambda: _place(type=MARKET, price=0, tif=TimeInForce.IOC, display_size=1), "display_size"),
    (lambda: _place(type=MARKET, price=0, tif=TimeInForce.IOC, min_price=1), "min_price"),
    (
        lambda: _place(type=MARKET, side=Side.SELL, price=0, tif=TimeInForce.IOC, max_price=1),
        "max_price",
    ),
    (lambda: _place(type=STOP_LIMIT), "trigger_price"),
    (lambda: _place(type=STOP_LIMIT, trigger_price=90, post_only=True), "post_only"),
    (lambda: _place(type=STOP_LIMIT, trigger_price=90, display_size=1), "display_size"),
    (lambda: _place(trigger_price=90), "trigger_price"),
    (lambda: _place(tif=TimeInForce.GTD), "expires_at"),
    (lambda: _place(expires_at=10), "expires_at"),
    (lambda: _place(tif=TimeInForce.GTD, expires_at=2**63), "expires_at"),
    (lambda: _place(client_order_id=""), "client_order_id"),
    (lambda: _place(client_order_id="x" * 65), "client_order_id"),
    (lambda: Amend(ts=5, market="T-USD", account="a", order_id=1), "size"),
    (lambda: Amend(ts=5, market="T-USD", account="a", price=3), "order_id"),
    (lambda: Amend(ts=5, market="T-USD", account="a", order_id=1, size=-2), "size"),
    (lambda: Amend(ts=5, market="X-Y", account="a", order_id=1, size=2), "market"),
    (lambda: Cancel(ts=5, market="T-USD", account="a"), "order_id"),
    (lambda: Cancel(ts=1, market="T-USD", account="a", order_id=1), "ts"),
    (lambda: CancelAll(ts=5, account="a", market="X-Y"), "market"),
    (lambda: SetMarketStatus(ts=5, market="X-Y", status=MarketStatus.HALTED), "market"),
    (lambda: Tick(ts=1), "ts"),
    (lambda: AddMarket(spec=T_USD), "market"),
    (lambda: AddMarket(ts=1, spec=msgspec.structs.replace(T_USD, market="U-USD", base="U")), "ts"),
    (
        lambda: AddMarket(
            spec=msgspec.structs.replace(T_USD, market="U-USD", base="U", lot_size="0.0000000001")
        ),
        "lot_size",
    ),
]


@pytest.mark.parametrize(("make", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_malformed_command_raises_and_changes_nothing(
    engine: Engine, make: Callable[[], Any], field: str
) -> None:
    """Structural rules fail when the command is built (or decoded); the rest in apply."""
    before = engine.state_hash()
    with pytest.raises(CommandError) as info:
        engine.apply(make(), SRC)
    assert info.value.field == field, info.value
    assert engine.state_hash() == before


def test_unknown_command_type(engine: Engine) -> None:
    with pytest.raises(CommandError):
        engine.apply(object(), SRC)  # type: ignore[arg-type]


def test_view_shows_the_book(engine: Engine) -> None:
    engine.apply(_place(price=99, size=3, display_size=1, client_order_id="k"), SRC)
    view = engine.view("T-USD")
    assert [(lv.price, lv.total) for lv in view.asks] == [(100, 2)]
    (bid,) = view.bids
    assert (bid.price, bid.total, bid.orders[0].visible, bid.orders[0].client_order_id) == (
        99,
        3,
        1,
        "k",
    )
    assert view.open_order_count == 2 and view.last_price == 0


def test_restore_refuses_other_versions(engine: Engine) -> None:
    raw = msgspec.msgpack.decode(engine.snapshot())
    raw["v"] = 99
    with pytest.raises(ValueError, match="unsupported snapshot version 99"):
        Engine.restore(msgspec.msgpack.encode(raw))


def test_accepted_event_carries_the_order(engine: Engine) -> None:
    cmd = _place(
        type=OrderType.STOP_LIMIT,
        trigger_price=90,
        tif=TimeInForce.GTD,
        expires_at=99,
        client_order_id="s",
    )
    (event,) = engine.apply(cmd, SRC)
    assert event.order is cmd and event.order_id == 2
    fields = [
        "client_order_id",
        "account",
        "side",
        "type",
        "price",
        "size",
        "quote_size",
        "tif",
        "post_only",
        "stp",
        "expires_at",
        "trigger_price",
        "display_size",
        "max_price",
        "min_price",
    ]
    assert {f: getattr(event, f) for f in fields} == {f: getattr(cmd, f) for f in fields}


def test_cancelled_entries_are_compacted_and_fifo_kept() -> None:
    eng = Engine()
    eng.apply(AddMarket(spec=T_USD), SRC)
    for i in range(1, 21):
        eng.apply(_place(ts=i, account=f"s{i}", side=Side.SELL, order_id=i), SRC)
    for i in range(1, 17):  # cancel the 16 oldest: lazily, then compacted
        eng.apply(Cancel(ts=100 + i, market="T-USD", account=f"s{i}", order_id=i), SRC)
    level = eng.markets["T-USD"].asks.levels[100]
    assert level.live == 4 and len(level.q) < 16
    assert [o.order_id for o in eng.view("T-USD").asks[0].orders] == [17, 18, 19, 20]
    events = eng.apply(_place(ts=200, account="b", size=2, order_id=30), SRC)
    assert [e.maker_order_id for e in events if isinstance(e, Trade)] == [17, 18]


def test_amend_that_would_take_in_a_post_only_market_is_refused(engine: Engine) -> None:
    engine.apply(_place(price=99, client_order_id="k"), SRC)  # order 2, below the ask at 100
    engine.apply(SetMarketStatus(ts=6, market="T-USD", status=MarketStatus.POST_ONLY), SRC)
    (event,) = engine.apply(
        Amend(ts=7, market="T-USD", account="b", client_order_id="k", price=100), SRC
    )
    assert isinstance(event, AmendRejected) and event.code == RejectCode.MARKET_STATUS
    (bid,) = engine.view("T-USD").bids
    assert (bid.price, bid.orders[0].order_id, bid.orders[0].remaining) == (99, 2, 1)
