"""`Subscriber`: the gateway's WebSocket `/v1/ws` as an async iterator of decoded messages,
and `BookView`, a local L2 book checked against the feed's `prev_seq` and checksum.

Invariants: after every (re)connect the subscriber authenticates first (when it has
credentials), then sends every subscription it holds, before yielding anything else; a
dropped connection is retried with exponential backoff (capped) and announced by a
`{"type": "reconnected"}` message, after which a book consumer must wait for a new
snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from dex.client.wallet import Credentials, now_ms
from dex.wire import signing

WS_PATH = "/v1/ws"


class Subscriber:
    def __init__(
        self,
        ws_url: str,
        credentials: Credentials | None = None,
        *,
        cancel_on_disconnect: bool = False,
        max_backoff: float = 5.0,
    ) -> None:
        self.ws_url = ws_url
        self.credentials = credentials
        self.cancel_on_disconnect = cancel_on_disconnect
        self.max_backoff = max_backoff
        self.subscriptions: list[dict[str, Any]] = []
        self.connection: ClientConnection | None = None
        self.connects = 0
        self._closed = False

    def subscribe(
        self, channel: str, market: str | None = None, interval: str | None = None
    ) -> None:
        """Add a subscription: sent now if connected, and after every reconnect."""
        req = {"op": "subscribe", "channel": channel}
        if market is not None:
            req["market"] = market
        if interval is not None:
            req["interval"] = interval
        self.subscriptions.append(req)
        if self.connection is not None:
            asyncio.get_running_loop().create_task(self._send(self.connection, req))

    async def _send(self, ws: ClientConnection, req: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):  # a reconnect sends it again
            await ws.send(json.dumps(req))

    def _auth(self) -> dict[str, Any]:
        assert self.credentials is not None
        ts = str(now_ms())
        payload = signing.request_payload(ts, "GET", WS_PATH, b"")
        return {
            "op": "auth",
            "api_key": self.credentials.api_key,
            "timestamp": ts,
            "signature": self.credentials.sign(payload),
            "cancel_on_disconnect": self.cancel_on_disconnect,
        }

    async def _open(self) -> ClientConnection:
        ws = await connect(self.ws_url)
        try:
            if self.credentials is not None:
                await ws.send(json.dumps(self._auth()))
            for req in self.subscriptions:
                await ws.send(json.dumps(req))
        except ConnectionClosed:
            await ws.close()
            raise
        self.connection = ws
        self.connects += 1
        return ws

    async def close(self) -> None:
        self._closed = True
        if self.connection is not None:
            await self.connection.close()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        backoff = 0.05
        while not self._closed:
            try:
                ws = await self._open()
            except (OSError, InvalidHandshake, ConnectionClosed):
                # not listening, refused the upgrade (starting, overloaded), or dropped at once
                await asyncio.sleep(backoff)  # backoff before the next attempt
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if self.connects > 1:
                yield {"type": "reconnected"}
            backoff = 0.05
            try:
                async for raw in ws:
                    yield json.loads(raw)
            except ConnectionClosed:
                pass
            self.connection = None


def checksum(bids: dict[str, str], asks: dict[str, str]) -> int:
    """The feed's CRC32 of the top 25 levels (docs/feed.md)."""
    b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:25]
    a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:25]
    parts: list[str] = []
    for i in range(25):
        if i < len(b):
            parts += b[i]
        if i < len(a):
            parts += a[i]
    return zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF


class BookView:
    """One market's book from snapshot and update messages. `apply` returns False when the
    message does not chain (`prev_seq` is not the last `seq`) or the checksum disagrees: the
    view is then invalid until the next snapshot (resubscribe to get one)."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None

    def apply(self, msg: dict[str, Any]) -> bool:
        if msg.get("type") == "snapshot":
            self.bids, self.asks = dict(msg["bids"]), dict(msg["asks"])
        elif msg.get("type") == "update":
            if self.seq is None or msg["prev_seq"] != self.seq:
                self.seq = None
                return False
            for side, levels in ((self.bids, msg["bids"]), (self.asks, msg["asks"])):
                for price, size in levels:
                    if Decimal(size) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = size
        else:
            return True
        self.seq = msg["seq"]
        if checksum(self.bids, self.asks) != msg["checksum"]:
            self.seq = None
            return False
        return True

    def best_bid(self) -> Decimal | None:
        return max(map(Decimal, self.bids), default=None)

    def best_ask(self) -> Decimal | None:
        return min(map(Decimal, self.asks), default=None)
