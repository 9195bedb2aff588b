"""Binance user-data streams over the private channels: listen keys, and the native order,
fill and balance messages as `executionReport` and `outboundAccountPosition`.

Owns the listen keys (`ListenKeys`) and the per-connection translation (`UserStream`). A
listen key belongs to the API key that made it, one per API key (as Binance keeps one per
account: a second `POST` answers the live one, kept alive), and lapses `LISTEN_KEY_TTL` after
its last keep-alive (Binance's 60 minutes). They live in memory for one gateway, or in the
Redis the gateway replicas share (`DEX_REDIS_URL`, as the rate limits do), so a key made
through one replica opens, keeps and closes streams on any: `k:<listenKey>` holds the API key
and `a:<api key>` the listen key, both expiring together (PEXPIRE). A connection on a key
that lapsed, was closed or whose API key was revoked is closed (`ws.py` checks the keys of
its connections every `LISTEN_KEY_CHECK_S`). A connection's user data comes from the same
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
from dex.gateway.keys import KeyEntry, KeyRing

LISTEN_KEY_TTL = 3600.0  # seconds after the last keep-alive
LISTEN_KEY_CHECK_S = 1.0  # how often live connections' listen keys are checked
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
    """Listen keys: which API key each belongs to, until when (see the module docstring).
    `redis`: a `redis.asyncio.Redis` shared by the gateway replicas, else in memory. Every
    refusal is a `BinanceError` (-1125 for a key that is not the caller's or not live; -1001,
    503, when Redis cannot be reached)."""

    def __init__(
        self,
        keys: KeyRing,
        redis: Any = None,
        *,
        clock: Any = time.monotonic,
        prefix: str = "dex:listen:",
    ) -> None:
        self.keys = keys
        self.redis = redis
        self.clock = clock
        self.prefix = prefix
        self.memory: dict[str, tuple[str, float]] = {}  # name -> (value, deadline)

    async def new(self, entry: KeyEntry) -> str:
        """The API key's listen key, kept alive; made if it has none."""
        mine = f"a:{entry.api_key}"
        lk = await self._get(mine)
        if lk is None or await self._get(f"k:{lk}") != entry.api_key:
            if self.redis is None and len(self.memory) >= 2 * MAX_LISTEN_KEYS:
                self._prune()
                if len(self.memory) >= 2 * MAX_LISTEN_KEYS:
                    raise BinanceError(
                        -1003, "Too many listen keys on this server; close some.", 429
                    )
            lk = secrets.token_urlsafe(45)[:60]  # 60 characters: ws.LISTEN_KEY_CHARS
        await self._put({f"k:{lk}": entry.api_key, mine: lk})
        return lk

    async def keep(self, entry: KeyEntry, lk: str) -> None:
        owner = await self._mine(entry, lk)
        await self._put({f"k:{lk}": owner, f"a:{owner}": lk})

    async def close(self, entry: KeyEntry, lk: str) -> None:
        owner = await self._mine(entry, lk)
        await self._delete(f"k:{lk}", f"a:{owner}")

    async def lookup(self, lk: str) -> KeyEntry | None:
        """The API key a live listen key belongs to, if that key is still good."""
        return self._usable(await self._get(f"k:{lk}"))

    async def stored(self, lks: list[str]) -> set[str]:
        """Which of `lks` are live (made, kept alive in time, not closed), in one look."""
        owners = await self._get_many([f"k:{lk}" for lk in lks])
        return {lk for lk, owner in zip(lks, owners, strict=True) if owner is not None}

    def _usable(self, api_key: str | None) -> KeyEntry | None:
        entry = None if api_key is None else self.keys.get(api_key)
        if entry is None or entry.revoked or not entry.usable:
            return None
        if entry.expires_at and time.time() * 1000 >= entry.expires_at:
            return None
        return entry

    async def _mine(self, entry: KeyEntry, lk: str) -> str:
        """The API key `lk` belongs to, if it is live and of `entry`'s account."""
        owner = self._usable(await self._get(f"k:{lk}"))
        if owner is None or owner.account != entry.account:
            raise BinanceError(-1125, "This listenKey does not exist.")
        return owner.api_key

    # ------------------------------------------------------------------ storage

    async def _get(self, name: str) -> str | None:
        return (await self._get_many([name]))[0]

    async def _get_many(self, names: list[str]) -> list[str | None]:
        if not names:
            return []
        if self.redis is None:
            now = self.clock()
            found = [self.memory.get(n) for n in names]
            return [None if f is None or f[1] < now else f[0] for f in found]
        got = await self._redis(self.redis.mget([self.prefix + n for n in names]))
        return [None if v is None else v.decode() for v in got]

    async def _put(self, values: dict[str, str]) -> None:
        if self.redis is None:
            until = self.clock() + LISTEN_KEY_TTL
            self.memory.update({n: (v, until) for n, v in values.items()})
            return
        pipe = self.redis.pipeline(transaction=True)
        for name, value in values.items():
            pipe.set(self.prefix + name, value, px=int(LISTEN_KEY_TTL * 1000))
        await self._redis(pipe.execute())

    async def _delete(self, *names: str) -> None:
        if self.redis is None:
            for name in names:
                self.memory.pop(name, None)
            return
        await self._redis(self.redis.delete(*(self.prefix + n for n in names)))

    async def _redis(self, call: Any) -> Any:
        try:
            return await call
        except Exception as e:
            raise BinanceError(
                -1001,
                f"Internal error; unable to process your request. "
                f"Listen keys are unreachable: {type(e).__name__}",
                503,
            ) from None

    def _prune(self) -> None:
        now = self.clock()
        for name in [n for n, (_, until) in self.memory.items() if until < now]:
            del self.memory[name]


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
