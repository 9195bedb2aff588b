"""Snapshots of the engine (MessagePack, schema-versioned) and read-only views.

The one owner of the snapshot format: `dump` reads the engine's state (dex.matching.state)
and `load` rebuilds it; the engine calls them (`Engine.snapshot`, `Engine.restore`).

A snapshot is canonical: levels sorted by price (bids best first, then asks best first),
orders in time priority, stops in acceptance order, markets and assets in the order they were
added. Two engines that would emit the same future events have the same snapshot, so its
SHA-256 is the state hash. Dead (lazily cancelled) entries are not written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from dex.core.commands import Place
from dex.core.enums import MarketStatus, Side
from dex.core.markets import Asset, MarketParams, MarketSpec
from dex.matching.book import BookSide, Order, StopOrder
from dex.matching.market import MarketState
from dex.matching.state import _Core
from dex.matching.views import LevelView, MarketView, OrderView

SNAPSHOT_VERSION = 1
E = TypeVar("E", bound=_Core)


def _resting(side: BookSide) -> list[Order]:
    out: list[Order] = []
    for price in side.sorted_prices():
        out.extend(o for o in side.levels[price].q if o.remaining)
    return out


def _id_spaces(engine: _Core) -> dict[int, int]:
    """The highest id per space, including the top id the fast path records lazily."""
    spaces = dict(engine.id_spaces)
    top = engine.max_id
    if top > spaces.get(top >> 40, 0):
        spaces[top >> 40] = top
    return spaces


class _Market(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    spec: MarketSpec
    status: MarketStatus
    seq: int
    trade_id: int
    last: int
    orders: list[Order]  # bids best first, then asks best first, each level in time order
    stops: list[tuple[int, Place]]


class _State(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    ts: int
    log_seq: int
    admin_seq: int
    max_id: int
    id_spaces: list[tuple[int, int]]
    assets: list[tuple[str, int]]
    markets: list[_Market]


_decode_state = msgspec.msgpack.Decoder(_State).decode


def dump(engine: _Core) -> bytes:
    """The snapshot of an engine's state."""
    markets = [
        [
            msgspec.to_builtins(m.params.spec),
            m.status.value,
            m.seq,
            m.trade_id,
            m.last,
            _resting(m.bids) + _resting(m.asks),  # an order encodes as its row
            [[s.oid, msgspec.to_builtins(s.cmd)] for s in m.stops.values()],
        ]
        for m in engine.markets.values()
    ]
    state = {
        "v": SNAPSHOT_VERSION,
        "ts": engine.ts,
        "log_seq": engine.log_seq,
        "admin_seq": engine.admin_seq,
        "max_id": engine.max_id,
        "id_spaces": sorted(_id_spaces(engine).items()),
        "assets": [[a.symbol, a.decimals] for a in engine.assets.values()],
        "markets": markets,
    }
    return msgspec.msgpack.encode(state)


def load(data: bytes, new: Callable[[], E]) -> E:
    """The engine a snapshot holds, built by `new()` (the engine's class: `Engine.restore`)
    and filled; `ValueError` for another version or a malformed snapshot."""
    try:
        state = _decode_state(data)
    except msgspec.ValidationError as e:
        version = msgspec.msgpack.decode(data)
        if isinstance(version, dict) and version.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {version.get('v')!r}") from None
        raise ValueError(f"malformed snapshot: {e}") from None
    if state.v != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot version {state.v!r}")
    engine = new()
    engine.ts = state.ts
    engine.log_seq = state.log_seq
    engine.admin_seq = state.admin_seq
    engine.max_id = state.max_id
    engine.id_spaces = dict(state.id_spaces)
    for symbol, decimals in state.assets:
        engine.assets[symbol] = Asset(symbol=symbol, decimals=decimals)
    expiries: list[tuple[int, int, str]] = []
    for row in state.markets:
        spec = row.spec
        params = MarketParams(spec, engine.assets[spec.base], engine.assets[spec.quote])
        m = MarketState(params, row.status)
        m.seq, m.trade_id, m.last = row.seq, row.trade_id, row.last
        symbol = m.symbol
        engine.markets[symbol] = m
        _rest_all(m, row.orders, expiries)
        for oid, cmd in row.stops:
            stop = StopOrder(oid, cmd)
            m.stops[oid] = stop
            if cmd.client_order_id is not None:
                m.add_cid(cmd.client_order_id, stop)
            if params.max_open_orders:
                m.open_count[cmd.account] = m.open_count.get(cmd.account, 0) + 1
            if cmd.expires_at is not None:
                expiries.append((cmd.expires_at, oid, symbol))
    expiries.sort()
    engine.expiries = expiries
    return engine


def _rest_all(m: MarketState, orders: list[Order], expiries: list[tuple[int, int, str]]) -> None:
    """Put a snapshot's resting orders back in the book, in their order (`Engine._rest` for
    each, with the lookups hoisted: a snapshot may hold millions)."""
    add_bid, add_ask = m.bids.add, m.asks.add
    by_id = m.orders
    add_cid = m.add_cid
    count = m.open_count if m.params.max_open_orders else None
    symbol = m.symbol
    for o in orders:
        (add_bid if o.is_buy else add_ask)(o)
        by_id[o.oid] = o
        if o.cid is not None:
            add_cid(o.cid, o)
        if count is not None:
            count[o.account] = count.get(o.account, 0) + 1
        if o.expires_at:
            expiries.append((o.expires_at, o.oid, symbol))


def _level_views(side: BookSide) -> tuple[LevelView, ...]:
    out = []
    for price in side.sorted_prices():
        level = side.levels[price]
        orders = tuple(
            OrderView(
                o.oid,
                o.account,
                o.cid,
                Side.BUY if o.is_buy else Side.SELL,
                o.price,
                o.filled + o.remaining,
                o.filled,
                o.remaining,
                o.visible if o.display else o.remaining,
            )
            for o in level.q
            if o.remaining
        )
        out.append(LevelView(price, sum(o.remaining for o in orders), orders))
    return tuple(out)


def view(m: MarketState) -> MarketView:
    return MarketView(
        market=m.symbol,
        status=m.status,
        last_price=m.last,
        bids=_level_views(m.bids),
        asks=_level_views(m.asks),
        stop_order_ids=tuple(m.stops),
        open_order_count=len(m.orders) + len(m.stops),
    )
