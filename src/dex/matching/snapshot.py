"""Snapshots of the engine (MessagePack, schema-versioned) and read-only views.

A snapshot is canonical: levels sorted by price (bids best first, then asks best first),
orders in time priority, stops in acceptance order, markets and assets in the order they were
added. Two engines that would emit the same future events have the same snapshot, so its
SHA-256 is the state hash. Dead (lazily cancelled) entries are not written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from dex.core.commands import Place
from dex.core.enums import STP, MarketStatus, Side
from dex.core.markets import Asset, MarketParams, MarketSpec
from dex.matching.book import BookSide, Order, StopOrder
from dex.matching.market import MarketState
from dex.matching.views import LevelView, MarketView, OrderView

SNAPSHOT_VERSION = 1

if TYPE_CHECKING:
    from dex.matching.engine import Engine


def _resting(side: BookSide) -> list[Order]:
    out: list[Order] = []
    for price in side.sorted_prices():
        out.extend(o for o in side.levels[price].q if o.remaining)
    return out


def _id_spaces(engine: Engine) -> dict[int, int]:
    """The highest id per space, including the top id the fast path records lazily."""
    spaces = dict(engine.id_spaces)
    top = engine.max_id
    if top > spaces.get(top >> 40, 0):
        spaces[top >> 40] = top
    return spaces


def dump(engine: Engine) -> bytes:
    markets = []
    for m in engine.markets.values():
        orders = [
            [
                o.oid,
                o.account,
                o.cid,
                o.is_buy,
                o.price,
                o.remaining,
                o.filled,
                o.visible,
                o.display,
                o.expires_at,
                o.stp.value,
                o.post_only,
            ]
            for o in _resting(m.bids) + _resting(m.asks)
        ]
        stops = [[s.oid, msgspec.to_builtins(s.cmd)] for s in m.stops.values()]
        markets.append(
            [
                msgspec.to_builtins(m.params.spec),
                m.status.value,
                m.seq,
                m.trade_id,
                m.last,
                orders,
                stops,
            ]
        )
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


def load(data: bytes) -> Engine:
    from dex.matching.engine import Engine

    state: dict[str, Any] = msgspec.msgpack.decode(data)
    if state.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot version {state.get('v')!r}")
    engine = Engine()
    engine.ts = state["ts"]
    engine.log_seq = state["log_seq"]
    engine.admin_seq = state["admin_seq"]
    engine.max_id = state["max_id"]
    engine.id_spaces = {space: top for space, top in state["id_spaces"]}
    for symbol, decimals in state["assets"]:
        engine.assets[symbol] = Asset(symbol=symbol, decimals=decimals)
    expiries: list[tuple[int, int, str]] = []
    for spec_raw, status, seq, trade_id, last, orders, stops in state["markets"]:
        spec = msgspec.convert(spec_raw, MarketSpec)
        params = MarketParams(spec, engine.assets[spec.base], engine.assets[spec.quote])
        m = MarketState(params, MarketStatus(status))
        m.seq, m.trade_id, m.last = seq, trade_id, last
        engine.markets[m.symbol] = m
        for row in orders:
            oid, account, cid, is_buy, price, rem, filled, vis, disp, exp, stp, post = row
            o = Order(oid, account, cid, is_buy, price, rem, filled, vis, disp, exp, STP(stp), post)
            engine._rest(m, o)
            if exp:
                expiries.append((exp, oid, m.symbol))
        for oid, raw in stops:
            cmd = msgspec.convert(raw, Place)
            stop = StopOrder(oid, cmd)
            m.stops[oid] = stop
            if cmd.client_order_id is not None:
                m.add_cid(cmd.client_order_id, stop)
            if params.max_open_orders:
                m.open_count[cmd.account] = m.open_count.get(cmd.account, 0) + 1
            if cmd.expires_at is not None:
                expiries.append((cmd.expires_at, oid, m.symbol))
    expiries.sort()
    engine.expiries = expiries
    return engine


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
