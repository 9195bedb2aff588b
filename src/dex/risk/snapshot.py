"""Snapshots of a risk shard: MessagePack, schema-versioned and canonical.

The one owner of the snapshot format: `dump` reads the ledger's state (dex.risk.state) and
`load` rebuilds it; the ledger calls them (`Ledger.snapshot`, `Ledger.restore`).

Accounts, orders, withdrawals, deposits and fee balances are written sorted by key; assets
and markets in the order they were added (that order is behaviour: cancel_all walks markets
in it); remembered client order ids by end time, then order id; API keys (live and revoked)
by id; wallet nonces by account, then nonce; order nonces by time, account, nonce. Two ledgers
that would emit the same future events have the same snapshot, so its SHA-256 is the state
hash. Snapshots written before API keys (no `keys`, `wallet_nonces`, `order_nonces`) load
with none. `api_keys` reads only the keys out of a snapshot, without building a ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar

import msgspec

from dex.core.enums import MarketStatus, OrderStatus, OrderType
from dex.core.markets import Asset, MarketParams, MarketSpec
from dex.risk.state import SCHEMA_VERSION, ApiKey, Closed, MarketInfo, Order, Withdrawal, _Core

SNAPSHOT_VERSION = 1
L = TypeVar("L", bound=_Core)

# An order's snapshot row, read in C (enums encode as their values). A shard may hold
# millions of orders, and a snapshot is taken while the shard waits.
_order_row = attrgetter(
    "oid",
    "account.addr",
    "market.symbol",
    "cid",
    "is_buy",
    "kind",
    "by_quote",
    "price",
    "cap",
    "size",
    "filled",
    "held",
    "pending",
    "amending",
    "status",
    "via",
)
_closed_order = attrgetter("ts", "oid")
_KINDS = {k.value: k for k in OrderType}
# "triggered" was an open order's state after its stop triggered, before statuses were shared
# (dex.core.enums.OrderStatus): such an order is open
_STATUSES = {s.value: s for s in OrderStatus} | {"triggered": OrderStatus.OPEN}


def dump(ledger: _Core) -> bytes:
    """The snapshot of a ledger's state."""
    accounts = [
        [
            a.addr,
            [[asset, cell[0], cell[1]] for asset, cell in sorted(a.bal.items())],
            a.frozen,
            sorted(a.disabled),
            list(a.fees) if a.fees is not None else None,
            a.max_open,
            sorted(a.max_notional.items()),
        ]
        for a in sorted(ledger.accounts.values(), key=lambda a: a.addr)
    ]
    by_id = ledger.orders
    orders = list(map(_order_row, (by_id[oid] for oid in sorted(by_id))))
    closed = []
    for c in sorted(ledger.closed, key=_closed_order):
        key = c.key
        assert key is not None  # only orders with a client order id are remembered
        closed.append([c.ts, key[0], key[1], key[2], c.oid, c.status, c.filled, c.detail])
    state: dict[str, Any] = {
        "v": SNAPSHOT_VERSION,
        "schema": SCHEMA_VERSION,
        "shard": ledger.shard,
        "shard_count": ledger.shard_count,
        "ts": ledger.ts,
        "log_seq": ledger.log_seq,
        "order_seq": ledger.order_seq,
        "withdrawal_seq": ledger.withdrawal_seq,
        "halted": ledger.halted,
        "global_halt": ledger.global_halt,
        "assets": [[a.symbol, a.decimals] for a in ledger.assets.values()],
        "markets": [
            [
                msgspec.to_builtins(m.params.spec),
                m.status.value,
                m.last,
                m.backpressure,
                m.maker_bps,
                m.taker_bps,
            ]
            for m in ledger.markets.values()
        ],
        "accounts": accounts,
        "orders": orders,
        "withdrawals": [
            [w.wid, w.account.addr, w.asset, w.amount]
            for _, w in sorted(ledger.withdrawals.items())
        ],
        "closed": closed,
        "deposits": sorted([tx, index] for tx, index in ledger.deposits),
        "fees": sorted([asset, value] for asset, value in ledger.fees.items()),
        "keys": [_key_row(ledger.keys[k]) for k in sorted(ledger.keys)],
        "wallet_nonces": [
            [addr, sorted(used)] for addr, used in sorted(ledger.wallet_nonces.items())
        ],
        "order_nonces": sorted(
            [used, addr, nonce] for (addr, nonce), used in ledger.order_nonces.items()
        ),
    }
    return msgspec.msgpack.encode(state)


def _key_row(k: ApiKey) -> tuple[str, str, str, str, str, int, bool]:
    return (k.api_key, k.account, k.key_type, k.material, k.permissions, k.expires_at, k.revoked)


class _KeysOnly(msgspec.Struct):
    """A snapshot read for its keys alone: every other section is skipped, not built."""

    v: int
    keys: list[tuple[str, str, str, str, str, int, bool]] = []


def api_keys(data: bytes) -> list[ApiKey]:
    """The API keys (live and revoked) in a snapshot `dump` wrote, by id; `ValueError` for
    another version."""
    state = msgspec.msgpack.decode(data, type=_KeysOnly)
    if state.v != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported risk snapshot version {state.v!r}")
    return [
        ApiKey(account, key_id, key_type, material, permissions, expires_at, revoked)
        for key_id, account, key_type, material, permissions, expires_at, revoked in state.keys
    ]


def load(data: bytes, new: Callable[[int, int], L]) -> L:
    """The ledger a snapshot holds, built by `new(shard, shard_count)` (the ledger's class:
    `Ledger.restore`) and filled; `ValueError` for another version."""
    state = msgspec.msgpack.decode(data)
    if state.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported risk snapshot version {state.get('v')!r}")
    led = new(state["shard"], state["shard_count"])
    led.ts = state["ts"]
    led.log_seq = state["log_seq"]
    led.order_seq = state["order_seq"]
    led.withdrawal_seq = state["withdrawal_seq"]
    led.halted = state["halted"]
    led.global_halt = state["global_halt"]
    for symbol, decimals in state["assets"]:
        led.assets[symbol] = Asset(symbol=symbol, decimals=decimals)
    for spec_data, status, last, backpressure, maker, taker in state["markets"]:
        spec = msgspec.convert(spec_data, MarketSpec)
        m = MarketInfo(MarketParams(spec, led.assets[spec.base], led.assets[spec.quote]))
        m.set_status(MarketStatus(status), backpressure)
        m.last = last
        m.maker_bps = maker
        m.taker_bps = taker
        led.markets[spec.market] = m
    for addr, cells, frozen, disabled, fees, max_open, notional in state["accounts"]:
        acct = led._account(addr)
        for asset, available, locked in cells:
            acct.bal[asset] = [available, locked]
        acct.frozen = frozen
        acct.disabled = set(disabled)
        acct.fees = (fees[0], fees[1]) if fees is not None else None
        acct.max_open = max_open
        acct.max_notional = {asset: value for asset, value in notional}
    _load_orders(led, state["orders"])
    for wid, addr, asset, amount in state["withdrawals"]:
        acct = led.accounts[addr]
        w = Withdrawal(wid, acct, asset, amount)
        led.withdrawals[wid] = acct.withdrawals[wid] = w
    for ts, addr, symbol, cid, oid, status, filled, detail in state["closed"]:
        key = (addr, symbol, cid)
        rec = Closed(key, oid, _STATUSES[status], filled, detail, ts)
        led.cids[key] = rec
        led.closed.append(rec)
    led.deposits = {(tx, index) for tx, index in state["deposits"]}
    led.fees = {asset: value for asset, value in state["fees"]}
    for key_id, account, key_type, material, permissions, expires_at, revoked in state.get(
        "keys", ()
    ):
        api_key = ApiKey(account, key_id, key_type, material, permissions, expires_at, revoked)
        led.keys[key_id] = api_key
        if not revoked:
            led.live_keys.setdefault(account, {})[key_id] = api_key
    led.wallet_nonces = {addr: set(used) for addr, used in state.get("wallet_nonces", ())}
    for used, addr, nonce in state.get("order_nonces", ()):
        led.order_nonces[(addr, nonce)] = used
        led.nonce_times.append((used, addr, nonce))
    return led


def _load_orders(led: _Core, rows: list[list[Any]]) -> None:
    """Rebuild the open orders (the bulk of a snapshot), with the account, market and balance
    cells of each (account, market, side) looked up once."""
    places: dict[tuple[str, str, bool], tuple[Any, MarketInfo, Any, Any]] = {}
    orders, cids = led.orders, led.cids
    for row in rows:
        oid, addr, symbol, cid, is_buy, kind, by_quote, price, cap, size = row[:10]
        filled, held, pending, amending, status = row[10:15]
        where = places.get((addr, symbol, is_buy))
        if where is None:
            acct = led.accounts[addr]
            m = led.markets[symbol]
            hold_bal = acct.cell(m.quote if is_buy else m.base)
            recv_bal = acct.cell(m.base if is_buy else m.quote)
            where = places[(addr, symbol, is_buy)] = (acct, m, hold_bal, recv_bal)
        acct, m, hold_bal, recv_bal = where
        key = (addr, symbol, cid) if cid is not None else None
        o = Order(
            oid,
            acct,
            m,
            cid,
            is_buy,
            _KINDS[kind],
            by_quote,
            price,
            cap,
            size,
            held,
            hold_bal,
            recv_bal,
            key,
        )
        o.filled = filled
        o.pending = pending
        o.amending = amending
        o.status = _STATUSES[status]
        o.via = row[15] if len(row) > 15 else None  # rows of older snapshots end at status
        orders[oid] = acct.orders[oid] = o
        if key is not None:
            cids[key] = o
