"""Binance user-data streams over the private channels: listen keys, and the native order,
fill and balance messages as `executionReport` and `outboundAccountPosition`.

Owns the listen keys (in memory, per gateway replica: a key made on one replica is known on
that one; each lives `LISTEN_KEY_TTL` after its last keep-alive, Binance's 60 minutes) and
the per-connection translation (`UserStream`). A connection's user data comes from the same
private channels a native `/v1/ws` connection subscribes to (orders, fills, balances); the
translation keeps, per order, what Binance's report repeats on every event (quantity, price,
cumulative filled and quote), learnt from the order's `accepted` event and its fills.

Event order. Order states come from the matching logs and fills (with their fee) from the
risk log, which follows: a fill is reported as `TRADE` when its settlement arrives, with the
order's status after it (`FILLED` once the cumulative quantity reaches the order's, or the
order was seen filled and this is its last fill); `NEW`, `CANCELED`, `EXPIRED` and
`REJECTED` are reported when the engine's event arrives.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any

from dex.gateway.binance.common import BinanceError, status_of, symbol_of
from dex.gateway.keys import KeyEntry

LISTEN_KEY_TTL = 3600.0  # seconds after the last keep-alive
MAX_LISTEN_KEYS = 100_000
MAX_ORDERS_KEPT = 10_000  # orders a connection remembers for its reports

_TYPE_BACK = {
    "limit": "LIMIT",
    "market": "MARKET",
    "stop_limit": "STOP_LOSS_LIMIT",
    "stop_market": "STOP_LOSS",
}
_ENDS = {"cancelled": "CANCELED", "expired": "EXPIRED", "rejected": "REJECTED"}


class ListenKeys:
    """Listen keys by id: the API key each was made with, and when it lapses."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.keys: dict[str, tuple[KeyEntry, float]] = {}

    def new(self, entry: KeyEntry) -> str:
        self._prune()
        if len(self.keys) >= MAX_LISTEN_KEYS:
            raise BinanceError(-1003, "Too many listen keys on this server; close some.", 429)
        lk = secrets.token_urlsafe(45)[:60]  # 60 characters: ws.LISTEN_KEY_CHARS
        self.keys[lk] = (entry, self.clock() + LISTEN_KEY_TTL)
        return lk

    def keep(self, entry: KeyEntry, lk: str) -> None:
        self._mine(entry, lk)
        self.keys[lk] = (entry, self.clock() + LISTEN_KEY_TTL)

    def close(self, entry: KeyEntry, lk: str) -> None:
        self._mine(entry, lk)
        del self.keys[lk]

    def lookup(self, lk: str) -> KeyEntry | None:
        got = self.keys.get(lk)
        if got is None or got[1] < self.clock() or got[0].revoked:
            return None
        return got[0]

    def _mine(self, entry: KeyEntry, lk: str) -> None:
        got = self.keys.get(lk)
        if got is None or got[1] < self.clock() or got[0].account != entry.account:
            raise BinanceError(-1125, "This listenKey does not exist.")

    def _prune(self) -> None:
        now = self.clock()
        for lk in [k for k, (_, until) in self.keys.items() if until < now]:
            del self.keys[lk]


class _Order:
    __slots__ = (
        "cid",
        "ended",
        "filled",
        "market",
        "price",
        "qty",
        "quote",
        "side",
        "stop",
        "tif",
        "time",
        "type",
    )

    def __init__(self) -> None:
        self.market = ""
        self.side = "BUY"
        self.type = "LIMIT"
        self.tif = "GTC"
        self.qty = ""
        self.price = ""
        self.stop = ""
        self.cid = ""
        self.filled = Decimal(0)
        self.quote = Decimal(0)
        self.time = 0
        self.ended: str | None = None  # "filled" once the engine said so


class UserStream:
    """One connection's translation of native private messages into Binance events."""

    def __init__(self, markets: Any) -> None:
        self.markets = markets
        self.orders: dict[int, _Order] = {}

    def translate(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        kind = msg.get("type")
        if kind == "balance":
            return [self._balance(msg)]
        if kind == "order":
            return self._order(msg)
        if kind == "fill":
            return self._fill(msg)
        return []  # acks of the subscription

    def _known(self, oid: int) -> _Order:
        o = self.orders.get(oid)
        if o is None:
            if len(self.orders) >= MAX_ORDERS_KEPT:
                self.orders.pop(next(iter(self.orders)))
            o = self.orders[oid] = _Order()
        return o

    def _balance(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {
            "e": "outboundAccountPosition",
            "E": msg["ts"],
            "u": msg["ts"],
            "B": [{"a": msg["asset"], "f": msg["available"], "l": msg["locked"]}],
        }

    def _order(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        status, ev, oid = msg["status"], msg.get("event") or {}, msg["order_id"]
        o = self._known(oid)
        if ev.get("market"):
            o.market = ev["market"]
        if ev.get("event") == "accepted":
            o.side = str(ev.get("side", "buy")).upper()
            o.type = _TYPE_BACK.get(str(ev.get("type")), "LIMIT")
            if ev.get("post_only") and o.type == "LIMIT":
                o.type = "LIMIT_MAKER"
            o.tif = str(ev.get("tif") or "GTC").upper()
            o.qty = ev.get("size") or ""
            o.price = ev.get("price") or ""
            o.stop = ev.get("trigger_price") or ""
            o.cid = ev.get("client_order_id") or ""
            o.time = int(ev.get("ts", 0)) // 1_000_000
            return [self._report(oid, o, "NEW", "NEW", msg_time=o.time)]
        if status == "filled":
            o.ended = "filled"
            return []
        if status in _ENDS:
            o.cid = o.cid or ev.get("client_order_id") or ""
            ts = int(ev.get("ts", 0)) // 1_000_000
            shown = status_of(status, ev.get("reason")) if status == "cancelled" else _ENDS[status]
            report = self._report(oid, o, _ENDS[status], shown, msg_time=ts)
            self.orders.pop(oid, None)
            return [report]
        return []  # pending, partially_filled: reported with the fill

    def _fill(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        oid = msg["order_id"]
        o = self._known(oid)
        o.market = o.market or msg["market"]
        size, price = Decimal(msg["size"]), Decimal(msg["price"])
        o.filled += size
        o.quote += size * price
        done = (o.qty and o.filled >= Decimal(o.qty)) or (not o.qty and o.ended == "filled")
        status = "FILLED" if done else "PARTIALLY_FILLED"
        report = self._report(oid, o, "TRADE", status, msg_time=msg["ts"])
        report.update(
            l=msg["size"],
            L=msg["price"],
            n=msg["fee"],
            N=msg["fee_asset"],
            t=msg["trade_id"],
            m=msg["liquidity"] == "maker",
            Y=format(size * price, "f"),
        )
        if done:
            self.orders.pop(oid, None)
        return [report]

    def _report(
        self, oid: int, o: _Order, exec_type: str, status: str, *, msg_time: int
    ) -> dict[str, Any]:
        p = self.markets.params.get(o.market)
        zero_price = p.price_scale.render(0) if p is not None else "0"
        zero_size = p.size_scale.render(0) if p is not None else "0"
        filled = p.size_scale.render(0) if p is not None and not o.filled else format(o.filled, "f")
        return {
            "e": "executionReport",
            "E": msg_time,
            "s": symbol_of(o.market),
            "c": o.cid,
            "S": o.side,
            "o": o.type,
            "f": o.tif,
            "q": o.qty or filled,
            "p": o.price or zero_price,
            "P": o.stop or zero_price,
            "F": zero_size,
            "g": -1,
            "C": o.cid if exec_type == "CANCELED" else "",
            "x": exec_type,
            "X": status,
            "r": "NONE",
            "i": oid,
            "l": zero_size,
            "z": filled,
            "L": zero_price,
            "n": "0",
            "N": None,
            "T": msg_time,
            "t": -1,
            "I": oid,
            "w": status in ("NEW", "PARTIALLY_FILLED"),
            "m": False,
            "M": False,
            "O": o.time or msg_time,
            "Z": format(o.quote, "f"),
            "Y": "0",
            "Q": "0",
            "W": o.time or msg_time,
            "V": "EXPIRE_TAKER",
        }
