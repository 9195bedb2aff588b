"""An in-process gateway for tests: every shard of `tests.services.inproc` on a MemoryBus, the
gateway app with its guard (keys, rate limits) called through httpx's ASGI transport in the
test's own loop, the shards stepped while a request waits; and `Trader`, a wallet with an API
key that signs its requests the way the trading API asks (dex.wire.signing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account import Account

from dex.gateway.auth import Guard, add_rate_headers
from dex.gateway.binance import binance_api, binance_handlers
from dex.gateway.fastpath import OrderFastPath
from dex.gateway.keys import new_kek, parse_kek
from dex.gateway.ratelimit import Bucket, MemoryLimiter
from dex.gateway.routes import order_placer, route_handlers
from dex.gateway.service import Gateway
from dex.runtime.health import Health
from dex.runtime.http import build_app
from dex.runtime.metrics import ServiceMetrics
from dex.wire import layout, signing
from tests.services.inproc import Cluster, open_cluster
from tests.services.reader_kit import RecordingLog

ANSWER_WITHIN = 15.0  # seconds
CHAIN_ID = 31337
ROOMY = {"public": "100000/100000", "private": "100000/100000", "orders": "100000/100000"}


@dataclass
class Harness:
    c: Cluster
    client: httpx.AsyncClient
    gw: Gateway
    log: RecordingLog
    limiter: MemoryLimiter
    fast: OrderFastPath  # counts the orders it answered (`served`) and `handed_over`
    now: list[float] = field(default_factory=lambda: [0.0])

    async def answered(self, request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        """The response to `request`, the shards stepped until it comes (or the deadline)."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(request)
        deadline = loop.time() + ANSWER_WITHIN
        while not task.done():
            if loop.time() > deadline:
                task.cancel()
                raise AssertionError(f"no answer within {ANSWER_WITHIN} s")
            await self.c.pump(1)
            await asyncio.wait({task}, timeout=0.01)
        return task.result()

    async def sent(self) -> list[int]:
        """How many requests each risk shard's input holds."""
        return [await self.c.bus.last(layout.risk_in(r)) for r in range(self.c.r_count)]

    async def onboard(
        self,
        *,
        permissions: str = "read,trade",
        key_type: str = "hmac",
        expires_at: int = 0,
        fund: dict[str, str] | None = None,
    ) -> Trader:
        """A fresh wallet with a registered key (and faucet funds)."""
        wallet = Account.create()
        trader = Trader(self, bytes(wallet.key), wallet.address.lower())
        await trader.register(permissions=permissions, key_type=key_type, expires_at=expires_at)
        for asset, amount in (fund or {}).items():
            got = await trader.call("POST", "/v1/faucet", {"asset": asset, "amount": amount})
            assert got.status_code == 200, got.text
        return trader


class Trader:
    """A wallet and its API key; signs requests as the trading API asks."""

    def __init__(self, h: Harness, private_key: bytes, address: str) -> None:
        self.h = h
        self.private_key = private_key
        self.address = address
        self.api_key = ""
        self.secret = ""
        self.ed25519: bytes | None = None
        self.nonce = int(time.time() * 1000)

    def next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce

    def wallet_body(self, primary: str, message: dict[str, Any]) -> dict[str, Any]:
        sig = signing.sign_typed(self.private_key, primary, message, CHAIN_ID)
        return {**message, "signature": sig}

    async def register(
        self, *, permissions: str = "read,trade", key_type: str = "hmac", expires_at: int = 0
    ) -> httpx.Response:
        public = ""
        if key_type == "ed25519":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import (
                Encoding,
                NoEncryption,
                PrivateFormat,
                PublicFormat,
            )

            key = Ed25519PrivateKey.generate()
            self.ed25519 = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        message = {
            "account": self.address,
            "keyType": key_type,
            "publicKey": public,
            "permissions": permissions,
            "nonce": self.next_nonce(),
            "expiresAt": expires_at,
        }
        got = await self.h.answered(
            self.h.client.post("/v1/api-keys", json=self.wallet_body("RegisterApiKey", message))
        )
        assert got.status_code == 200, got.text
        self.api_key = got.json()["api_key"]
        self.secret = got.json().get("secret", "")
        return got

    def headers(self, method: str, path: str, body: bytes, ts: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time() * 1000) if ts is None else ts)
        payload = signing.request_payload(stamp, method, path, body)
        if self.ed25519 is not None:
            sig = signing.ed25519_signature(self.ed25519, payload)
        else:
            sig = signing.hmac_signature(self.secret, payload)
        out = {"DEX-API-KEY": self.api_key, "DEX-TIMESTAMP": stamp, "DEX-SIGNATURE": sig}
        if body:
            out["content-type"] = "application/json"
        return out

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        ts: int | None = None,
    ) -> httpx.Response:
        """A signed request (`raw` bytes sent as they are; else `body` as JSON)."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent = {**self.headers(method, path, data, ts), **(headers or {})}
        request = self.h.client.request(method, path, content=data or None, headers=sent)
        return await self.h.answered(request)


@contextlib.asynccontextmanager
async def gateway(
    *,
    buckets: dict[str, str] | None = None,
    max_body_bytes: int = 65536,
    faucet_caps: tuple[int, int] = (1_000_000, 10_000_000),
    wait: float = 10.0,
    faucet: bool = True,
    cors_origins: str = "",
    fast_path: bool = True,
) -> AsyncIterator[Harness]:
    """The demo markets and a started gateway answering over HTTP, with its guard, served as
    `dex up` serves it: its order route's fast path in front (`fast_path=False`: Litestar
    alone). The rate limiter's clock stands still at `Harness.now[0]` (s): buckets refill
    only when a test moves it, so a burst is a burst however slow the machine."""
    c = await open_cluster(trade=False)
    await c.pump()
    metrics = ServiceMetrics("gateway")
    health = Health(metrics)
    health.started = True
    log = RecordingLog()
    gw = Gateway(
        c.bus,
        risk_shards=c.r_count,
        matching_shards=c.m_count,
        health=health,
        metrics=metrics,
        log=log,
        faucet=faucet,
        persistence_url="http://127.0.0.1:9",
        market_data_url="http://127.0.0.1:11",
        kek=parse_kek(new_kek()),
        chain_id=CHAIN_ID,
        faucet_caps=faucet_caps,
        wait=wait,
    )
    await gw.start()
    now = [0.0]
    limiter = MemoryLimiter(clock=lambda: now[0])
    guard = Guard(
        gw.keys,
        limiter,
        {n: Bucket.parse(n, t) for n, t in (buckets or ROOMY).items()},
        recv_window_ms=gw.recv_window_ms,
        now_ms=gw.now_ms,
    )
    binance = binance_api(gw, guard)
    app = build_app(
        "gateway",
        health,
        metrics,
        route_handlers=route_handlers(gw) + binance_handlers(binance),
        guards=[guard],
        before_send=[add_rate_headers],
        max_body_bytes=max_body_bytes,
        cors_origins=cors_origins,
        openapi=True,
    )
    fast = OrderFastPath(
        app,
        place=order_placer(gw),
        guard=guard,
        max_body_bytes=max_body_bytes,
        binance=binance,
    )
    try:
        # in this loop, unlike Litestar's test client
        transport = httpx.ASGITransport(app=fast if fast_path else app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Harness(c, client, gw, log, limiter, fast, now)
    finally:
        await gw.stop()
