"""The WebSocket feed on the gateway (`/v1/ws`): subscriptions, the relay of market data's feed
streams, fan-out (docs/feed.md has the protocol).

How it travels. Market data appends each market's updates to `dex:{md:<market>}:feed`
(`dex.wire.feed`), numbered by the market's event seq from the matching log. The first
subscription to a market makes this relay follow its stream from its end (`bus.last`, before
anything else) and ask market data for the whole book at some seq S
(`GET /internal/feed/{market}/book`). Updates read meanwhile wait in `pending`; once the
snapshot is in, those with `seq <= S` are dropped and the rest must chain from S
(`prev_seq` = the book's seq), else the snapshot is asked again later. Every update market
data publishes after answering at S is appended after the position taken first, so nothing
falls between the snapshot and the updates. The relay keeps that book (`FeedBook`); a
subscriber gets the book's snapshot, then every update in order.

A gap (an update whose `prev_seq` is not the book's seq: a market-data restart that came
back from a later matching snapshot, a lost publish) or a feed trimmed below the relay's
position drops the book and starts over as above: its book subscribers then get a new
snapshot, never an update on a wrong book. An update already seen (`seq` not above the book's,
e.g. republished by a restarted market data) is dropped, and so are its trades.

Fan-out. Each message is encoded once (JSON text) and framed once (`dex.runtime.wsframes`):
the same frame is written to each subscriber's transport, at once, without a task per
connection. A subscriber whose transport holds more than `max_buffer` bytes the kernel has not
taken is disconnected and never holds anyone else up: its connection is cut at once (what
waits for it is discarded: a close frame could not reach it behind the data it has not read),
which frees its memory at once too; the gateway logs `ws_slow_consumer` with the code 1008.
On a server that offers no frame writer (and for the Binance connections, whose messages are
translated per connection) each connection has a queue, bounded the same way, and one writer
task that sends it through ASGI; past the bound the queue is dropped and the client gets the
close frame (1008, reason "slow consumer ..."). Dead connections are closed by the server's
WebSocket ping (uvicorn's `ws_ping_interval` / `ws_ping_timeout`, both `DEX_WS_PING_MS`, set
in `dex.app.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from dex.bus import Bus, TrimmedError
from dex.core.markets import MarketSpec
from dex.marketdata.book import Precision
from dex.marketdata.candles import INTERVALS
from dex.marketdata.feed import (
    FeedBook,
    candle_message,
    ticker_message,
    trades_message,
    update_message,
)
from dex.runtime.wsframes import frame_writer, text_frame
from dex.wire.codec import BadEntry
from dex.wire.feed import FeedTicker, FeedUpdate, decode_feed
from dex.wire.layout import md_feed

CHANNELS = ("book", "trades", "ticker", "candles")
OPS = ("subscribe", "unsubscribe")
MAX_BUFFER = 4 * 1024 * 1024  # bytes queued for one connection before it is dropped
MAX_PENDING = 100_000  # updates held while a book waits for its snapshot
TICKER_EVERY = 0.1  # seconds: at most one ticker message per market this often
SLOW_CLOSE = 1008  # WebSocket close code for a slow subscriber (policy violation)
GOING_AWAY = 1001  # ... when the gateway stops

_json = msgspec.json.Encoder()


def _text(message: dict[str, Any]) -> str:
    return _json.encode(message).decode()


_framed: list[Any] = [None, b""]  # the last text framed and its frame: a fan-out frames once


def _frame(text: str) -> bytes:
    if _framed[0] is not text:
        _framed[0], _framed[1] = text, text_frame(text)
    frame: bytes = _framed[1]
    return frame


class Subscriber:
    """One connection: its subscriptions and how its messages go out: whole frames written to
    its transport, or (without a frame writer) a send queue; either bounded by `max_buffer`."""

    def __init__(self, socket: Any, max_buffer: int) -> None:
        self.socket = socket
        self.max_buffer = max_buffer
        self.frames = frame_writer(getattr(socket, "scope", None))
        self.queue: deque[str] = deque()
        self.buffered = 0  # characters queued or being sent
        self.wake = asyncio.Event()
        self.reason: str | None = None  # why the connection is being closed
        self.close_code = SLOW_CLOSE
        self.cut = False  # the connection was aborted (no closing handshake)
        self.writer: asyncio.Task[None] | None = None
        self.subs: set[tuple[str, str, str]] = set()  # (channel, market, interval or "")
        # the private part (dex.gateway.private): the key the connection authenticated with,
        # its private channels, and whether its key's orders are cancelled when it drops
        self.key: Any = None
        self.private: set[str] = set()
        self.cancel_on_disconnect = False

    def push(self, text: str) -> None:
        """Queue a message; past `max_buffer` the connection is dropped instead."""
        if self.reason is not None:
            return
        if self.frames is not None:
            # a closing connection takes nothing more; its reader sees it end
            if self.frames.write(_frame(text)) and self.frames.buffered() > self.max_buffer:
                self.kill(f"slow consumer: more than {self.max_buffer} bytes waiting to be sent")
            return
        self.queue.append(text)
        self.buffered += len(text)
        if self.buffered > self.max_buffer:
            self.kill(f"slow consumer: more than {self.max_buffer} bytes waiting to be sent")
        else:
            self.wake.set()

    def kill(self, reason: str, code: int = SLOW_CLOSE) -> None:
        self.reason, self.close_code = reason, code
        self.queue.clear()
        if self.frames is not None and code == SLOW_CLOSE:
            self.frames.abort()  # a slow consumer's backlog is dropped with it
            self.cut = True
        if self.writer is not None:
            self.writer.cancel()

    async def write(self) -> None:
        """Send the queue, in order, until the connection fails or is dropped (with a frame
        writer, `push` sends: this only waits to be cancelled by `kill`)."""
        if self.frames is not None:
            await asyncio.Event().wait()
        while self.reason is None:
            await self.wake.wait()
            self.wake.clear()
            while self.queue and self.reason is None:
                text = self.queue.popleft()
                await self.socket.send_text(text)
                self.buffered -= len(text)


class MarketFeed:
    """What the relay holds for one followed market."""

    def __init__(self, spec: MarketSpec) -> None:
        self.market = spec.market
        self.stream = md_feed(spec.market)
        self.fmt = Precision(spec)
        self.pos = 0  # the feed stream's position read up to
        self.book: FeedBook | None = None  # None while waiting for a snapshot
        self.pending: list[FeedUpdate] = []
        self.seen = 0  # seq of the last update whose trades and candles were relayed
        self.book_subs: set[Subscriber] = set()
        self.waiting: set[Subscriber] = set()  # book subscribers waiting for a snapshot
        self.trade_subs: set[Subscriber] = set()
        self.ticker_subs: set[Subscriber] = set()
        self.candle_subs: dict[str, set[Subscriber]] = {iv: set() for iv in INTERVALS}
        self.snapshot_cache: tuple[int, str] | None = None
        self.ticker_text: str | None = None  # the last ticker message sent
        self.ticker_next: FeedTicker | None = None
        self.ticker_sent = -1.0
        self.ticker_timer: asyncio.TimerHandle | None = None
        self.syncing: asyncio.Task[None] | None = None

    def snapshot_text(self) -> str:
        book = self.book
        assert book is not None
        if self.snapshot_cache is None or self.snapshot_cache[0] != book.seq:
            self.snapshot_cache = (book.seq, _text(book.snapshot_message(self.fmt)))
        return self.snapshot_cache[1]

    def subscribers(self, channel: str, interval: str) -> set[Subscriber]:
        if channel == "trades":
            return self.trade_subs
        if channel == "ticker":
            return self.ticker_subs
        return self.candle_subs[interval]


class FeedRelay:
    """Follows the feed streams of subscribed markets and serves `/v1/ws` connections."""

    def __init__(
        self,
        bus: Bus,
        *,
        market_spec: Callable[[str], MarketSpec | None],
        fetch_book: Callable[[str], Awaitable[dict[str, Any]]],
        log: Any,
        max_buffer: int = MAX_BUFFER,
        read_timeout: float = 0.1,
    ) -> None:
        self.bus = bus
        self.market_spec = market_spec
        self.fetch_book = fetch_book
        self.log = log
        self.max_buffer = max_buffer
        self.read_timeout = read_timeout
        self.markets: dict[str, MarketFeed] = {}
        self.by_stream: dict[str, MarketFeed] = {}
        self.connections: set[Subscriber] = set()
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # the private channels on the same connections (dex.gateway.private), if any: sees
        # each request first (`request` -> whether it took it) and each dropped connection
        self.extension: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._tail())

    async def stop(self) -> None:
        tasks = [self._task] + [mf.syncing for mf in self.markets.values()]
        for t in tasks:
            if t is not None:
                t.cancel()
        for t in tasks:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        for mf in self.markets.values():
            if mf.ticker_timer is not None:
                mf.ticker_timer.cancel()
        for sub in list(self.connections):
            sub.kill("the gateway is stopping", GOING_AWAY)
        if self.extension is not None:  # its key checker lives as long as the connections
            await self.extension.stop()

    # ------------------------------------------------------------------ following

    async def _follow(self, spec: MarketSpec) -> MarketFeed:
        mf = self.markets.get(spec.market)
        if mf is None:
            mf = MarketFeed(spec)
            mf.pos = await self.bus.last(mf.stream)
            if spec.market in self.markets:  # followed by another request meanwhile
                return self.markets[spec.market]
            self.markets[spec.market] = mf
            self.by_stream[mf.stream] = mf
            self._resync(mf)
            self._more.set()
        return mf

    def _resync(self, mf: MarketFeed, first: FeedUpdate | None = None) -> None:
        """Drop the book: its subscribers wait for a new snapshot."""
        mf.book = None
        mf.pending = [] if first is None else [first]
        mf.waiting |= mf.book_subs
        mf.book_subs.clear()
        if mf.syncing is None or mf.syncing.done():
            mf.syncing = asyncio.create_task(self._sync(mf))

    async def _sync(self, mf: MarketFeed) -> None:
        delay = 0.05
        while True:
            try:
                snap = await self.fetch_book(mf.market)
                book = FeedBook(
                    mf.market,
                    int(snap["seq"]),
                    [(int(p), int(n)) for p, n in snap["bids"]],
                    [(int(p), int(n)) for p, n in snap["asks"]],
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # market data away or not caught up: ask again
                self.log.warning("feed_snapshot_failed", market=mf.market, error=f"{e!r}")
            else:
                if self._chain(mf, book):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _chain(self, mf: MarketFeed, book: FeedBook) -> bool:
        """Put the pending updates on `book`; the book is taken if they chain from it."""
        for u in mf.pending:
            if u.seq <= book.seq:
                continue
            if u.prev_seq != book.seq:
                return False
            book.apply(u)
        mf.book, mf.pending = book, []
        if mf.waiting:
            text = mf.snapshot_text()
            for sub in mf.waiting:
                sub.push(text)
            mf.book_subs |= mf.waiting
            mf.waiting.clear()
        return True

    async def _tail(self) -> None:
        while True:
            after = {mf.stream: mf.pos for mf in self.markets.values()}
            if not after:
                self._more.clear()
                await self._more.wait()
                continue
            try:
                got = await self.bus.read_many(after, limit=1000, timeout=self.read_timeout)
            except TrimmedError:
                await self._trimmed()
                continue
            except Exception as e:  # bus away: retry
                self.log.warning("feed_read_failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.5)
                continue
            for stream, entries in got.items():
                mf = self.by_stream.get(stream)
                if mf is None:  # its last subscriber left while the read was under way
                    continue
                mf.pos = entries[-1][0]
                for seq, data in entries:
                    try:
                        entry = decode_feed(data)
                    except BadEntry as e:
                        self.log.warning("bad_entry", stream=stream, log_seq=seq, error=str(e))
                        continue
                    if isinstance(entry, FeedTicker):
                        self._ticker(mf, entry)
                    else:
                        self._update(mf, entry)

    async def _trimmed(self) -> None:
        """The feeds trimmed below our position start over from their end (new snapshots)."""
        for mf in list(self.markets.values()):
            try:
                await self.bus.read(mf.stream, mf.pos, limit=1)
            except TrimmedError:
                self.log.warning("feed_trimmed", market=mf.market, pos=mf.pos)
                mf.pos = await self.bus.last(mf.stream)
                self._resync(mf)

    # ------------------------------------------------------------------ relaying

    def _update(self, mf: MarketFeed, u: FeedUpdate) -> None:
        if u.seq > mf.seen:
            mf.seen = u.seq
            if u.trades and mf.trade_subs:
                _fan(mf.trade_subs, _text(trades_message(u, mf.fmt)))
            for c in u.candles:
                subs = mf.candle_subs.get(c.interval)
                if subs:
                    _fan(subs, _text(candle_message(mf.market, c, mf.fmt)))
        book = mf.book
        if book is None:
            mf.pending.append(u)
            if len(mf.pending) > MAX_PENDING:
                del mf.pending[: len(mf.pending) - MAX_PENDING]
            return
        if u.seq <= book.seq:
            return  # seen already (a replica or a restarted market data)
        if u.prev_seq != book.seq:
            self.log.warning("feed_gap", market=mf.market, seq=book.seq, prev_seq=u.prev_seq)
            self._resync(mf, u)
            return
        book.apply(u)
        if mf.book_subs:
            _fan(mf.book_subs, _text(update_message(u, book, mf.fmt)))

    def _ticker(self, mf: MarketFeed, t: FeedTicker) -> None:
        mf.ticker_next = t
        loop = asyncio.get_running_loop()
        wait = mf.ticker_sent + TICKER_EVERY - loop.time()
        if wait <= 0:
            self._send_ticker(mf)
        elif mf.ticker_timer is None:
            mf.ticker_timer = loop.call_later(wait, self._send_ticker, mf)

    def _send_ticker(self, mf: MarketFeed) -> None:
        mf.ticker_timer = None
        t, mf.ticker_next = mf.ticker_next, None
        if t is None:
            return
        mf.ticker_sent = asyncio.get_running_loop().time()
        mf.ticker_text = _text(ticker_message(t, mf.fmt))
        _fan(mf.ticker_subs, mf.ticker_text)

    # ------------------------------------------------------------------ connections

    async def serve(
        self, socket: Any, read: Callable[[Subscriber], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """One `/v1/ws` connection, until the client leaves or is dropped. `read` reads the
        client's requests instead of `/v1/ws`'s (another protocol over the same relay, e.g.
        `dex.gateway.binance.ws`, which turns them into `handle` calls)."""
        await socket.accept()
        sub = Subscriber(socket, self.max_buffer)
        self.connections.add(sub)
        sub.writer = asyncio.create_task(sub.write())
        reader = asyncio.create_task((read or self._requests)(sub))
        try:
            await asyncio.wait({sub.writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sub.writer, reader):
                t.cancel()
            for t in (sub.writer, reader):
                try:
                    await t
                except asyncio.CancelledError:
                    pass  # cancelled just above
                except Exception as e:  # the client went away mid-send, or a bug: said
                    self.log.info("ws_connection_ended", error=f"{type(e).__name__}: {e}")
            self._drop(sub)
            if sub.close_code == SLOW_CLOSE and sub.reason is not None:
                self.log.info("ws_slow_consumer", code=SLOW_CLOSE, reason=sub.reason)
            if sub.reason is not None and not sub.cut:
                try:
                    await asyncio.wait_for(socket.close(code=sub.close_code, reason=sub.reason), 1)
                except Exception as e:  # a stalled client: the closing handshake is given up
                    self.log.info("ws_close_abandoned", reason=sub.reason, error=type(e).__name__)

    def _drop(self, sub: Subscriber) -> None:
        self.connections.discard(sub)
        if self.extension is not None:
            self.extension.dropped(sub)
        for channel, market, interval in sub.subs:
            mf = self.markets.get(market)
            if mf is None:
                continue
            if channel == "book":
                mf.book_subs.discard(sub)
                mf.waiting.discard(sub)
            else:
                mf.subscribers(channel, interval).discard(sub)
            self._unfollow_if_idle(mf)
        sub.subs.clear()

    def _unfollow_if_idle(self, mf: MarketFeed) -> None:
        """Stop following a market nobody subscribes to any more: its stream is no longer
        read and its book no longer kept (a new subscriber starts over from a snapshot)."""
        if mf.book_subs or mf.waiting or mf.trade_subs or mf.ticker_subs:
            return
        if any(mf.candle_subs.values()):
            return
        if self.markets.get(mf.market) is not mf:
            return
        del self.markets[mf.market]
        self.by_stream.pop(mf.stream, None)
        if mf.syncing is not None:
            mf.syncing.cancel()
        if mf.ticker_timer is not None:
            mf.ticker_timer.cancel()

    async def _requests(self, sub: Subscriber) -> None:
        while True:
            message = await sub.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            await self._request(sub, raw)

    async def handle(self, sub: Subscriber, request: dict[str, Any]) -> None:
        """One `/v1/ws` request on `sub`, as if the client had sent it."""
        await self._request(sub, _json.encode(request))

    async def _request(self, sub: Subscriber, raw: str | bytes) -> None:
        def error(code: str, text: str) -> None:
            sub.push(_text({"type": "error", "code": code, "message": text}))

        try:
            req = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return error("invalid_json", "a request is one JSON object")
        if not isinstance(req, dict):
            return error("invalid_json", "a request is one JSON object")
        op, channel, market = req.get("op"), req.get("channel"), req.get("market")
        if self.extension is not None and await self.extension.request(sub, req):
            return None
        if op not in OPS:
            return error("unknown_op", f"op must be one of {', '.join(OPS)}")
        if channel not in CHANNELS:
            return error("unknown_channel", f"channel must be one of {', '.join(CHANNELS)}")
        spec = self.market_spec(market) if isinstance(market, str) else None
        if spec is None:
            return error("unknown_market", f"no market {market!r}")
        interval = ""
        if channel == "candles":
            asked = req.get("interval")
            if not isinstance(asked, str) or asked not in INTERVALS:
                return error("invalid_interval", f"interval must be one of {', '.join(INTERVALS)}")
            interval = asked
        key = (channel, spec.market, interval)
        ack = {"channel": channel, "market": spec.market}
        if interval:
            ack["interval"] = interval
        if op == "unsubscribe":
            if key not in sub.subs:
                return error("not_subscribed", f"not subscribed to {channel} of {spec.market}")
            mf = self.markets[spec.market]  # followed while anyone subscribes to it
            if channel == "book":
                mf.book_subs.discard(sub)
                mf.waiting.discard(sub)
            else:
                mf.subscribers(channel, interval).discard(sub)
            sub.subs.discard(key)
            sub.push(_text({"type": "unsubscribed", **ack}))
            self._unfollow_if_idle(mf)
            return None
        mf = await self._follow(spec)
        while self.markets.get(spec.market) is not mf:  # unfollowed while we waited
            mf = await self._follow(spec)
        if sub.reason is not None:
            return None
        sub.subs.add(key)
        sub.push(_text({"type": "subscribed", **ack}))
        if channel == "book":  # (again: a new snapshot, as a client does after a gap)
            mf.book_subs.discard(sub)
            mf.waiting.discard(sub)
            if mf.book is None:
                mf.waiting.add(sub)
            else:
                sub.push(mf.snapshot_text())
                mf.book_subs.add(sub)
        else:
            mf.subscribers(channel, interval).add(sub)
            if channel == "ticker" and mf.ticker_text is not None:
                sub.push(mf.ticker_text)
        return None


def _fan(subs: set[Subscriber], text: str) -> None:
    for sub in list(subs):
        sub.push(text)


__all__ = ["CHANNELS", "FeedRelay", "Subscriber"]
