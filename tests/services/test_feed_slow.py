"""A real slow TCP subscriber on `/v1/ws` (issue #12): dropped, holding nobody up.

test_feed.py's slow-subscriber test uses a socket object whose sends never complete; here the
exchange runs in process (test_feed.py's `exchange`) and the slow client is a real TCP
connection. How the slowness is produced: the client's socket gets the smallest receive
buffer and MSS the kernel allows (SO_RCVBUF and TCP_MAXSEG set before connecting), asks for no
compression, subscribes to the ETH-USDC book and trades, and then stops reading (its
transport's reading is paused: no byte is taken from the kernel any more). Trading through the
gateway (3 concurrent senders) then fills, in turn, the client's receive buffer, the server
socket's send buffer and finally the connection's transport buffer, where the relay writes
whole frames (`dex.runtime.wsframes`), bounded by a small `DEX_WS_MAX_BUFFER_BYTES` (16 KiB).

The server's send buffer is not ours to set, but the kernel sizes it from the peer's MSS: on
loopback (MSS 65483) it starts at tcp_wmem's maximum, ~4 MB, which the feed's few KB/s of
updates would take minutes to fill; with the client's MSS of 88 it is ~170 KiB of memory, about
70 KB of data, and the slow client is dropped after a few seconds of trading. Compression off
keeps the wire bytes equal to what the relay counts. The WebSocket ping is set long so that it
is not what closes the connection.

The server cuts the connection of a slow consumer at once: what waits for it in its transport
is discarded (a close frame could not reach it behind the bytes it never read). So the code
and reason are checked on the server's side of the connection (the relay's `Subscriber`, and
the gateway's `ws_slow_consumer` log), and the client checks that, once it reads again, it gets
what the kernel had taken, in order, and then the end of the connection, without the latest
updates (they were in the discarded backlog).

A normal client subscribed the same way reads throughout; it gets every book update in order
(`prev_seq` chained, checksums computed here) and every trade (consecutive ids), while the slow
one is stuck and after it is dropped, and ends with the REST book.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from pathlib import Path
from typing import Any

import httpx
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dex.client import AsyncClient
from dex.gateway.feed import SLOW_CLOSE
from tests.bus.contract import aio_within
from tests.services.test_feed import (
    WAIT,
    BookClient,
    Exchange,
    _eth_equal,
    exchange,
    fund,
    random_orders,
    recv,
    trade_for,
)
from tests.support.polling import eventually

MARKET = "ETH-USDC"
BOOK = {"channel": "book", "market": MARKET}
TRADES = {"channel": "trades", "market": MARKET}
QUIET = ("debug", "info")
MAX_BUFFER = 16 * 1024  # the relay's bound for one connection (the setting's minimum is 1024)


class BookAndTrades(BookClient):
    """test_feed.py's book-checking client, also subscribed to the market's trades."""

    def __init__(self, ws: ClientConnection, markets: tuple[str, ...]) -> None:
        super().__init__(ws, markets)
        self.trade_ids: list[int] = []

    def check(self, msg: dict[str, Any]) -> None:
        if msg.get("channel") == "trades" and msg["type"] == "update":
            self.trade_ids += [t["trade_id"] for t in msg["trades"]]
        else:
            super().check(msg)


def tiny_socket(port: int) -> socket.socket:
    """A TCP socket to the gateway with the smallest receive buffer and segment size the kernel
    allows. The small MSS is what keeps the server's send buffer small: the kernel sizes it from
    the peer's MSS (about 170 KiB of memory, ~70 KB of data, instead of ~4 MB on loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # raised to the kernel's minimum
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)  # Linux's minimum
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def open_slow(ex: Exchange) -> tuple[ClientConnection, BookAndTrades]:
    """A client that subscribes, reads the acks and the snapshot, then stops reading. Without
    compression, so that every byte the relay writes is a byte on the wire."""
    ws = await connect(ex.ws_url, sock=tiny_socket(ex.gw_port), compression=None)
    checker = BookAndTrades(ws, (MARKET,))
    for s in (BOOK, TRADES):
        await ws.send(json.dumps({"op": "subscribe", **s}))
    for _ in range(3):
        checker.check(await recv(ws))
    assert checker.snapshots[MARKET] == 1
    ws.transport.pause_reading()
    return ws, checker


# how long trading may take to fill the kernel's buffers and then the bound: ~7 s on a quiet
# machine, more under the whole suite (a deadline, not a measure)
DROP_WAIT = 90.0
# the whole test's deadline: the drop, a second of trading after it, the checks and the stop
# (CI once stopped it at 20 s, the deadline of tests whose awaits are all prompt)
TEST_WAIT = DROP_WAIT + 60.0


async def keep_trading(traders: list[AsyncClient], stop: asyncio.Event) -> None:
    seed = 30
    while not stop.is_set():
        await trade_for(traders, 0.3, seed=seed)
        seed += 1


def consecutive(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


async def timeouts(c: httpx.AsyncClient) -> float:
    """The gateway's `dex_gateway_timeouts_total` (requests answered by a timeout)."""
    lines = (await c.get("/metrics")).text.splitlines()
    values = [float(x.split()[-1]) for x in lines if x.startswith("dex_gateway_timeouts_total")]
    assert values, "no dex_gateway_timeouts_total on /metrics"
    return sum(values)


@aio_within(TEST_WAIT)
async def test_a_real_slow_tcp_subscriber_is_dropped_and_holds_nobody_up(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with (
            exchange(tmp_path, ping_ms=600_000, ws_max_buffer_bytes=MAX_BUFFER) as ex,
            ex.http() as c,
        ):
            relay = ex.gateway.feed
            traders = await fund(ex)
            await random_orders(traders, random.Random(21), 20)  # books before anyone subscribes
            slow_ws, slow_seen = await open_slow(ex)
            (slow,) = relay.connections
            assert slow.frames is not None  # the relay writes frames to its transport
            fine = await BookAndTrades.open(ex.ws_url, (MARKET,))
            assert isinstance(fine, BookAndTrades)
            await fine.ws.send(json.dumps({"op": "subscribe", **TRADES}))
            await eventually("the normal client's snapshot", lambda: fine.seq, timeout=WAIT)
            (fine_sub,) = relay.connections - {slow}
            mf = relay.markets[MARKET]

            stop = asyncio.Event()
            trading = asyncio.create_task(keep_trading(traders, stop))
            try:
                await eventually(
                    "the slow client dropped by the server",
                    lambda: slow not in relay.connections,
                    timeout=DROP_WAIT,
                )
                fine_seq_at_drop, fine_updates_at_drop = fine.seq[MARKET], fine.updates
            finally:
                stop.set()
                await trading
                if slow in relay.connections:
                    slow_ws.transport.abort()  # else the gateway's shutdown waits for it

            # Act: trading goes on without it
            await trade_for(traders, 1.0, seed=23)

            # Assert: the slow one was closed as a slow consumer, its subscriptions gone
            assert slow.reason is not None and slow.reason.startswith("slow consumer")
            assert slow.close_code == SLOW_CLOSE
            assert relay.connections == {fine_sub}
            assert mf.book_subs == {fine_sub} and mf.trade_subs == {fine_sub}
            # the normal one: every update in order, during and after, and the REST book
            await eventually(
                "the normal client's book equals the REST book",
                lambda: _eth_equal([fine], c),
                timeout=WAIT,
            )
            assert fine.errors == []
            assert fine.snapshots == {MARKET: 1}  # never resynced
            assert fine.updates > fine_updates_at_drop
            assert consecutive(fine.trade_ids)
            # what the kernel had taken for the slow one reads back in order, then the
            # connection ends: it was cut, its backlog discarded, with no close frame
            slow_ws.transport.resume_reading()
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(WAIT):
                    async for raw in slow_ws:
                        slow_seen.check(json.loads(raw))
            assert slow_ws.close_code is not None  # closed, by the server
            assert slow_seen.errors == []
            assert slow_seen.updates > 0 and consecutive(slow_seen.trade_ids)
            # it had fallen behind while the normal one kept up, and its backlog was dropped
            assert slow_seen.seq[MARKET] < fine_seq_at_drop
            assert await timeouts(c) == 0
            await fine.close()
    assert any(e.get("service") == "gateway" for e in logs)  # the gateway's events are here
    (cut,) = [e for e in logs if e.get("event") == "ws_slow_consumer"]
    assert cut["code"] == SLOW_CLOSE and cut["reason"].startswith("slow consumer")
    odd = [e for e in logs if e.get("service") == "gateway" and e["log_level"] not in QUIET]
    assert odd == []  # no feed_gap, feed_read_failed, feed_snapshot_failed, bad_entry, ...
