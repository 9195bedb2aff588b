"""Binance's WebSocket streams over the gateway's feed relay and private channels.

Owns the Binance protocol on `/ws`, `/ws/<name>`, `/stream` (market streams; `/ws/<listenKey>`
for a listen key's user data) and `/ws-api/v3` (`userDataStream.subscribe.signature`, and
the trading and account methods, answered by the REST routes' `Rest` methods). Each
connection is a `FeedRelay` subscriber like a `/v1/ws` one: its requests become the native
subscriptions (`FeedRelay.handle`), and every native message queued for it is translated on
its way out (`_Translating.send_text`), so the relay's ordering, fan-out and slow-consumer
rules hold unchanged. Replies of ours (`{"result", "id"}`) carry no `type` and pass through.

Streams: `<symbol>@depth` and `@depth@100ms` (`depthUpdate` with `U` = the native update's
`prev_seq + 1` and `u` = its `seq`: they run on without a gap, and `u` is on the same scale as
REST `depth`'s `lastUpdateId`), `@depth5` / `@depth10` / `@depth20` (also `@100ms`: the
best levels whole, kept per connection from the native snapshot and updates by `_TopBook`),
`@trade`, `@aggTrade` (one per trade), `@ticker`,
`@miniTicker`, `@bookTicker` (from the native ticker, at most every 100 ms), and
`@kline_<interval>` (1m 5m 15m 1h 4h 1d). User data: `executionReport` and
`outboundAccountPosition` (`dex.gateway.binance.userdata`); a stream on a listen key ends
with `listenKeyExpired` when the key lapses or is closed (`ListenKeyWatch`).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
from litestar import WebSocket, websocket

from dex.gateway.binance import common as bc
from dex.gateway.binance.common import BinanceError, from_api
from dex.gateway.binance.rest import Rest
from dex.gateway.binance.userdata import LISTEN_KEY_CHECK_S, ListenKeys, UserStream
from dex.gateway.feed import Subscriber
from dex.gateway.keys import KeyEntry
from dex.gateway.service import Gateway
from dex.marketdata.candles import INTERVALS
from dex.runtime.http import ApiError

MAX_STREAMS = 1024  # streams one connection may hold (Binance's limit)
_json = msgspec.json.Encoder()
PARTIAL_LEVELS = (5, 10, 20)  # <symbol>@depth<levels>[@100ms]: the top levels, whole
_KINDS = {
    "depth": "book",
    "depth@100ms": "book",
    "depth@1000ms": "book",
    **{f"depth{n}{speed}": "book" for n in PARTIAL_LEVELS for speed in ("", "@100ms", "@1000ms")},
    "trade": "trades",
    "aggTrade": "trades",
    "ticker": "ticker",
    "miniTicker": "ticker",
    "bookTicker": "ticker",
}


# The ticker streams: (stream, event type, (field, ticker/24hr field) ...), fields in the
# order Binance sends them; every value from `common.ticker_24hr`, as REST gives it.
_TICKER_STREAMS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "ticker",
        "24hrTicker",
        (
            ("p", "priceChange"),
            ("P", "priceChangePercent"),
            ("w", "weightedAvgPrice"),
            ("x", "prevClosePrice"),
            ("c", "lastPrice"),
            ("Q", "lastQty"),
            ("b", "bidPrice"),
            ("B", "bidQty"),
            ("a", "askPrice"),
            ("A", "askQty"),
            ("o", "openPrice"),
            ("h", "highPrice"),
            ("l", "lowPrice"),
            ("v", "volume"),
            ("q", "quoteVolume"),
            ("O", "openTime"),
            ("C", "closeTime"),
            ("F", "firstId"),
            ("L", "lastId"),
            ("n", "count"),
        ),
    ),
    (
        "miniTicker",
        "24hrMiniTicker",
        (
            ("c", "lastPrice"),
            ("o", "openPrice"),
            ("h", "highPrice"),
            ("l", "lowPrice"),
            ("v", "volume"),
            ("q", "quoteVolume"),
        ),
    ),
    (
        "bookTicker",
        "",
        (("b", "bidPrice"), ("B", "bidQty"), ("a", "askPrice"), ("A", "askQty")),
    ),
)


def _text(message: Any) -> str:
    return _json.encode(message).decode()


async def _answer_requests(
    socket: WebSocket[Any, Any, Any],
    sub: Subscriber,
    answer: Callable[[str | bytes], Awaitable[dict[str, Any]]],
) -> None:
    """Read the client's requests until it leaves; each one's answer is queued in order with
    the connection's other messages."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw: str | bytes = message.get("text") or message.get("bytes") or b""  # type: ignore[assignment]
        sub.push(_text(await answer(raw)))


class _Translating:
    """The socket a relay subscriber writes to: native messages out as Binance's."""

    def __init__(self, socket: WebSocket[Any, Any, Any], conn: Connection) -> None:
        self.socket = socket
        self.conn = conn

    async def accept(self) -> None:
        await self.socket.accept()

    async def receive(self) -> Any:
        return await self.socket.receive()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.socket.close(code=code, reason=reason)

    async def send_text(self, text: str) -> None:
        for out in self.conn.translate(text):
            await self.socket.send_text(out)


class _TopBook:
    """A market's book as one connection's partial depth streams need it: every level, from
    the native snapshot and the updates after it (size "0" removes a level)."""

    def __init__(self) -> None:
        self.seq: int | None = None  # None until a snapshot
        self.bids: dict[Decimal, list[str]] = {}
        self.asks: dict[Decimal, list[str]] = {}

    def apply(self, msg: dict[str, Any]) -> bool:
        """Take a native book message; False while no snapshot has come (nothing to show)."""
        if msg["type"] == "snapshot":
            self.bids, self.asks = {}, {}
        elif self.seq is None:
            return False
        for side, levels in ((self.bids, msg["bids"]), (self.asks, msg["asks"])):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = [price, size]
        self.seq = msg["seq"]
        return True

    def top(self, levels: int) -> dict[str, Any]:
        """Binance's partial depth: `lastUpdateId` and the best `levels` bids and asks."""
        bids = [self.bids[p] for p in heapq.nlargest(levels, self.bids)]
        asks = [self.asks[p] for p in heapq.nsmallest(levels, self.asks)]
        return {"lastUpdateId": self.seq, "bids": bids, "asks": asks}


class Connection:
    """One Binance WebSocket connection: its streams, and how its messages look."""

    def __init__(self, gw: Gateway, *, combined: bool, ws_api: bool = False) -> None:
        self.gw = gw
        self.combined = combined  # /stream: {"stream", "data"} envelopes
        self.ws_api = ws_api  # /ws-api/v3: user data as {"subscriptionId", "event"}
        self.streams: dict[str, tuple[str, str, str]] = {}  # name -> native (channel, market, iv)
        self.user: UserStream | None = None
        self.sub: Subscriber | None = None
        self.tops: dict[str, _TopBook] = {}  # market -> its book, for partial depth streams

    # ------------------------------------------------------------------ out

    def translate(self, text: str) -> list[str]:
        msg = msgspec.json.decode(text)
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind is None:
            return [text]  # ours, already Binance's
        if kind in ("order", "fill", "balance"):
            if self.user is None:
                return []
            events = self.user.translate(msg)
            if self.ws_api:
                return [_text({"subscriptionId": 0, "event": e}) for e in events]
            return [_text(e) for e in events]
        if kind == "snapshot" and msg.get("channel") == "book":
            return self._partial(msg, [])  # the diff streams start from REST depth
        if kind != "update":
            return []  # acks, errors of the native side
        channel, market = msg["channel"], msg["market"]
        symbol = bc.symbol_of(market)
        low = symbol.lower()
        now = self.gw.now_ms()
        out: list[tuple[str, Any]] = []
        if channel == "book":
            body = {
                "e": "depthUpdate",
                "E": now,
                "s": symbol,
                "U": msg["prev_seq"] + 1,
                "u": msg["seq"],
                "b": msg["bids"],
                "a": msg["asks"],
            }
            for name in ("depth", "depth@100ms", "depth@1000ms"):
                if f"{low}@{name}" in self.streams:
                    out.append((f"{low}@{name}", body))
            return self._partial(msg, out)
        elif channel == "trades":
            for t in msg["trades"]:
                maker_buys = t["taker_side"] == "sell"
                if f"{low}@trade" in self.streams:
                    out.append(
                        (
                            f"{low}@trade",
                            {
                                "e": "trade",
                                "E": now,
                                "s": symbol,
                                "t": t["trade_id"],
                                "p": t["price"],
                                "q": t["size"],
                                "T": t["time_ms"],
                                "m": maker_buys,
                                "M": True,
                            },
                        )
                    )
                if f"{low}@aggTrade" in self.streams:
                    out.append(
                        (
                            f"{low}@aggTrade",
                            {
                                "e": "aggTrade",
                                "E": now,
                                "s": symbol,
                                "a": t["trade_id"],
                                "p": t["price"],
                                "q": t["size"],
                                "f": t["trade_id"],
                                "l": t["trade_id"],
                                "T": t["time_ms"],
                                "m": maker_buys,
                                "M": True,
                            },
                        )
                    )
        elif channel == "ticker":
            out += self._tickers(msg, symbol, low, now)
        elif channel == "candles":
            name = f"{low}@kline_{msg['interval']}"
            if name in self.streams:
                t, o, h, lo, c, v, q, n = msg["candle"]
                span = INTERVALS[msg["interval"]] // 1_000_000
                out.append(
                    (
                        name,
                        {
                            "e": "kline",
                            "E": now,
                            "s": symbol,
                            "k": {
                                "t": t,
                                "T": t + span - 1,
                                "s": symbol,
                                "i": msg["interval"],
                                "f": -1,
                                "L": -1,
                                "o": o,
                                "c": c,
                                "h": h,
                                "l": lo,
                                "v": v,
                                "n": n,
                                "x": t + span <= now,
                                "q": q,
                                "V": "0",
                                "Q": "0",
                                "B": "0",
                            },
                        },
                    )
                )
        return self._framed(out)

    def _partial(self, msg: dict[str, Any], out: list[tuple[str, Any]]) -> list[str]:
        """`out` and the partial depth streams of `msg`'s market (each book message moves
        the book to a new `lastUpdateId`), as this connection sends them."""
        top = self.tops.get(msg["market"])
        if top is not None and top.apply(msg):
            low = bc.symbol_of(msg["market"]).lower()
            for name in self.streams:
                levels = _partial_levels(name, low)
                if levels is not None:
                    out.append((name, top.top(levels)))
        return self._framed(out)

    def _framed(self, out: list[tuple[str, Any]]) -> list[str]:
        if self.combined:
            return [_text({"stream": name, "data": body}) for name, body in out]
        return [_text(body) for _, body in out]

    def _tickers(self, t: dict[str, Any], symbol: str, low: str, now: int) -> list[tuple[str, Any]]:
        p = self.gw.markets.params.get(t["market"])
        zp = p.price_scale.render(0) if p is not None else "0"
        zs = p.size_scale.render(0) if p is not None else "0"
        full = bc.ticker_24hr(t, zp, zs, now)
        out: list[tuple[str, Any]] = []
        for stream, event, keys in _TICKER_STREAMS:
            name = f"{low}@{stream}"
            if name in self.streams:
                # bookTicker has no event type: the update id comes first
                body: dict[str, Any] = (
                    {"e": event, "E": now, "s": symbol} if event else {"u": t["seq"], "s": symbol}
                )
                body.update((short, full[long_]) for short, long_ in keys)
                out.append((name, body))
        return out

    # ------------------------------------------------------------------ in

    def native(self, name: str) -> tuple[str, str, str]:
        """The native subscription behind a stream name, or BinanceError."""
        symbol, _, kind = name.partition("@")
        market = bc.market_of(self.gw.markets, symbol)
        if kind.startswith("kline_") and kind[6:] in INTERVALS:
            return ("candles", market, kind[6:])
        channel = _KINDS.get(kind)
        if channel is None:
            raise BinanceError(2, f"Invalid request: unknown stream '{name}'")
        return (channel, market, "")

    async def subscribe(self, relay: Any, names: list[str]) -> None:
        assert self.sub is not None
        wanted = [(n, self.native(n)) for n in names]
        if len(self.streams) + len(wanted) > MAX_STREAMS:
            raise BinanceError(2, f"Invalid request: at most {MAX_STREAMS} streams")
        for name, key in wanted:
            if name in self.streams:
                continue
            held = key in self.streams.values()
            self.streams[name] = key
            market = key[1]
            low = bc.symbol_of(market).lower()
            fresh = _partial_levels(name, low) is not None and market not in self.tops
            if fresh:  # its book starts from a snapshot: subscribing again sends one
                self.tops[market] = _TopBook()
            if not held or fresh:
                await relay.handle(self.sub, _request("subscribe", key))

    async def unsubscribe(self, relay: Any, names: list[str]) -> None:
        assert self.sub is not None
        for name in names:
            key = self.streams.pop(name, None)
            if key is None:
                continue
            low = bc.symbol_of(key[1]).lower()
            if not any(_partial_levels(n, low) is not None for n in self.streams):
                self.tops.pop(key[1], None)
            if key not in self.streams.values():
                await relay.handle(self.sub, _request("unsubscribe", key))

    async def follow_user(self, relay: Any, entry: Any) -> None:
        """Push this key's account's orders, fills and balances on this connection."""
        assert self.sub is not None
        self.user = UserStream(self.gw.markets)
        self.sub.key = entry
        for channel in ("orders", "fills", "balances"):
            await relay.handle(self.sub, {"op": "subscribe", "channel": channel})


def _partial_levels(name: str, low: str) -> int | None:
    """The levels of a partial depth stream `name` of the market whose lower-case symbol is
    `low` (`ethusdc@depth5`, `ethusdc@depth20@100ms`), else None."""
    prefix = f"{low}@depth"
    if not name.startswith(prefix):
        return None
    levels = name[len(prefix) :].partition("@")[0]
    return int(levels) if levels in ("5", "10", "20") else None


def _request(op: str, key: tuple[str, str, str]) -> dict[str, Any]:
    channel, market, interval = key
    req = {"op": op, "channel": channel, "market": market}
    if interval:
        req["interval"] = interval
    return req


LISTEN_KEY_CHARS = 60  # dex.gateway.binance.userdata.ListenKeys.new
LISTEN_KEY_GONE = 1000  # close code after `listenKeyExpired`: the stream ended as Binance's do


class ListenKeyWatch:
    """The connections opened on a listen key (`/ws/<listenKey>`), checked every
    `LISTEN_KEY_CHECK_S` (one round trip for all of them): a connection whose key lapsed or
    was closed, through any replica, gets Binance's `listenKeyExpired` event and is then
    closed. (A revoked or expired API key closes its connections with 4001 through the
    private channels, `dex.gateway.private`.) A store that cannot be reached closes nothing:
    the next check tries again."""

    def __init__(self, listen_keys: ListenKeys, now_ms: Callable[[], int], log: Any) -> None:
        self.listen_keys = listen_keys
        self.now_ms = now_ms
        self.log = log
        self.conns: dict[Subscriber, str] = {}
        self.task: asyncio.Task[None] | None = None
        self.closing: set[asyncio.Task[None]] = set()

    def add(self, sub: Subscriber, listen_key: str) -> None:
        self.conns[sub] = listen_key
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())

    def discard(self, sub: Subscriber) -> None:
        self.conns.pop(sub, None)

    async def _run(self) -> None:
        while self.conns:
            await asyncio.sleep(LISTEN_KEY_CHECK_S)
            await self.check()

    async def check(self) -> None:
        if not self.conns:
            return
        try:
            live = await self.listen_keys.stored(sorted(set(self.conns.values())))
        except BinanceError as e:
            self.log.warning("listen_keys_unchecked", error=e.msg, connections=len(self.conns))
            return
        for sub, lk in list(self.conns.items()):
            if lk in live:
                continue
            del self.conns[sub]
            sub.push(_text({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": lk}))
            task = asyncio.create_task(
                _close_when_sent(sub, "the listen key expired or was closed")
            )
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)


async def _close_when_sent(sub: Subscriber, reason: str) -> None:
    """Close `sub` once what it was sent has gone out (at most 1 s: a stalled client is
    closed all the same)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while sub.buffered > 0 and sub.reason is None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    if sub.reason is None:
        sub.kill(reason, LISTEN_KEY_GONE)


def ws_handlers(api: Rest) -> list[Any]:
    gw, listen_keys = api.gw, api.listen_keys
    relay = gw.feed
    watch = ListenKeyWatch(listen_keys, gw.now_ms, gw.log)

    async def market_streams(
        socket: WebSocket[Any, Any, Any],
        conn: Connection,
        initial: list[str],
        entry: Any = None,
        listen_key: str | None = None,
    ) -> None:
        async def read(sub: Subscriber) -> None:
            conn.sub = sub
            if entry is not None:
                await conn.follow_user(relay, entry)
            if listen_key is not None:
                watch.add(sub, listen_key)
            if initial:
                try:
                    await conn.subscribe(relay, initial)
                except BinanceError as e:
                    sub.push(_text({"error": e.body(), "id": None}))
            await _answer_requests(socket, sub, lambda raw: _market_request(conn, raw))

        try:
            await relay.serve(_Translating(socket, conn), read)
        finally:
            if conn.sub is not None:
                watch.discard(conn.sub)

    async def _market_request(conn: Connection, raw: str | bytes) -> dict[str, Any]:
        try:
            req = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        if not isinstance(req, dict):
            return {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        rid, method, params = req.get("id"), req.get("method"), req.get("params", [])
        try:
            if method == "SUBSCRIBE" or method == "UNSUBSCRIBE":
                if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                    raise BinanceError(2, "Invalid request: params must be a list of streams")
                if method == "SUBSCRIBE":
                    await conn.subscribe(relay, params)
                else:
                    await conn.unsubscribe(relay, params)
                return {"result": None, "id": rid}
            if method == "LIST_SUBSCRIPTIONS":
                return {"result": list(conn.streams), "id": rid}
            if method in ("SET_PROPERTY", "GET_PROPERTY"):
                return {"result": None if method == "SET_PROPERTY" else False, "id": rid}
            raise BinanceError(2, f"Invalid request: unknown method {method!r}")
        except BinanceError as e:
            return {"error": {"code": e.code, "msg": e.msg}, "id": rid}

    @websocket("/ws", opt={})
    async def ws_raw(socket: WebSocket[Any, Any, Any]) -> None:
        await market_streams(socket, Connection(gw, combined=False), [])

    @websocket("/ws/{name:str}", opt={})
    async def ws_named(socket: WebSocket[Any, Any, Any], name: str) -> None:
        try:
            entry = await listen_keys.lookup(name)
        except BinanceError as e:  # the listen keys' store is unreachable: try again later
            await socket.close(code=1011, reason=e.msg[:120])
            return
        if entry is not None:
            conn = Connection(gw, combined=False)
            await market_streams(socket, conn, [], entry, listen_key=name)
            return
        streams = [s for s in name.split("/") if "@" in s]
        if not streams and len(name) == LISTEN_KEY_CHARS:
            # a listen key's shape but not a live one (expired, closed, unknown): refused,
            # not served as an empty market stream the client would wait on forever
            await socket.close(code=1008, reason="unknown or closed listen key")
            return
        await market_streams(socket, Connection(gw, combined=False), streams)

    @websocket("/stream", opt={})
    async def ws_combined(socket: WebSocket[Any, Any, Any]) -> None:
        streams = socket.query_params.get("streams", "")
        await market_streams(
            socket, Connection(gw, combined=True), [s for s in streams.split("/") if s]
        )

    @websocket("/ws-api/v3", opt={})
    async def ws_api(socket: WebSocket[Any, Any, Any]) -> None:
        conn = Connection(gw, combined=False, ws_api=True)

        async def read(sub: Subscriber) -> None:
            conn.sub = sub
            await _answer_requests(socket, sub, lambda raw: _api_request(conn, raw))

        await relay.serve(_Translating(socket, conn), read)

    async def _api_request(conn: Connection, raw: str | bytes) -> dict[str, Any]:
        try:
            req = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            req = None
        if not isinstance(req, dict):
            return _api_error(None, BinanceError(-1100, "Invalid JSON"))
        rid, method, params = req.get("id"), req.get("method"), req.get("params") or {}
        try:
            if method == "ping":
                return {"id": rid, "status": 200, "result": {}}
            if method == "time":
                return {"id": rid, "status": 200, "result": {"serverTime": gw.now_ms()}}
            if method == "userDataStream.subscribe.signature":
                if not isinstance(params, dict):
                    raise BinanceError(-1100, "params must be an object")
                if conn.user is not None:
                    raise BinanceError(-1100, "Already subscribed to the user data stream.")
                entry, _ = _ws_signed(params, "read")
                await conn.follow_user(relay, entry)
                return {"id": rid, "status": 200, "result": {"subscriptionId": 0}}
            if method == "userDataStream.unsubscribe":
                if conn.user is not None and conn.sub is not None:
                    for channel in ("orders", "fills", "balances"):
                        await relay.handle(conn.sub, {"op": "unsubscribe", "channel": channel})
                    conn.user = None
                return {"id": rid, "status": 200, "result": {}}
            if method in _TRADING:
                return {"id": rid, "status": 200, "result": await _trading(method, params)}
            raise BinanceError(-1100, f"Unknown method {method!r}")
        except BinanceError as e:
            return _api_error(rid, e)
        except ApiError as e:  # a refusal of the native path, in Binance's code
            return _api_error(rid, from_api(e, cancel=method == "order.cancel"))

    def _ws_signed(params: Any, permission: str) -> tuple[KeyEntry, dict[str, str]]:
        """The key that signed a WebSocket API request and its parameters as text: signed as
        Binance's are, the parameters but `signature` sorted by name and joined as
        `name=value` with `&` (a JSON true / false as `true` / `false`)."""
        if not isinstance(params, dict):
            raise BinanceError(-1100, "params must be an object")
        text = {k: _param_text(v) for k, v in params.items()}
        payload = "&".join(f"{k}={text[k]}" for k in sorted(text) if k != "signature")
        entry = bc.authenticate(
            gw.keys,
            text.get("apiKey"),
            text,
            payload.encode(),
            text.get("signature"),
            gw.now_ms(),
            permission,
        )
        return entry, text

    async def _trading(method: str, params: Any) -> Any:
        """The WebSocket API's trading and account requests: what their REST routes answer,
        through the same `Rest` methods, keys, buckets and refusals."""
        permission, bucket, weight = _TRADING[method]
        entry, text = _ws_signed(params, permission)
        scope: Any = {}  # where a charge leaves its rate-limit headers: none for a WebSocket
        await api.guard.charge(scope, api.guard.buckets[bucket], entry.account, weight)
        if method in ("order.place", "order.test"):
            market, cmd, resp_type = api.place_command(entry, text)
            return await api.submit(market, cmd, text, resp_type) if method == "order.place" else {}
        if method == "order.cancel":
            return await api.cancel(entry, *api.cancel_ids(text))
        if method == "order.status":
            return await api.order_status(entry, text)
        if method == "openOrders.status":
            return await api.open_orders(entry, text)
        return await api.account(entry)

    return [ws_raw, ws_named, ws_combined, ws_api]


# the WebSocket API's trading and account methods: (permission, bucket, weight), as REST's
_TRADING = {
    "order.place": ("trade", "orders", 1),
    "order.test": ("trade", "private", 1),
    "order.cancel": ("trade", "orders", 1),
    "order.status": ("read", "private", 1),
    "openOrders.status": ("read", "private", 1),
    "account.status": ("read", "private", 1),
}


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api_error(rid: Any, e: BinanceError) -> dict[str, Any]:
    return {"id": rid, "status": e.status, "error": {"code": e.code, "msg": e.msg}}


__all__ = ["Connection", "ws_handlers"]
