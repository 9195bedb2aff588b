"""The feed end to end across processes: `dex up --distributed` on a private durable Redis,
book subscribers through the client library (`dex.client.Subscriber`, `BookView` checking
every message's chain and checksum), random trading through the gateway, and market data
killed with SIGKILL mid-way (the supervisor restarts it). Every client's book must stay right:
a message that does not chain or whose checksum disagrees is never applied silently (the
client resubscribes and gets a new snapshot), and at the end each client's book equals the
REST book of the restarted market data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from dex.client import AsyncClient, BookView, Subscriber, Wallet
from dex.client.errors import DexError
from dex.runtime.settings import SERVICES
from tests.services.test_smoke import free_base
from tests.services.test_supervisor import _child_serving
from tests.support.dex_process import DexProcess, ready, state, wait_on_process

MARKET = "ETH-USDC"


async def _watch(sub: Subscriber, view: BookView, stats: dict[str, int]) -> None:
    """Keep `view` from the feed; a message that does not chain or check out is counted and
    answered by a new subscription (a new snapshot), as a client must."""
    async for msg in sub:
        if msg.get("type") in ("snapshot", "update"):
            if view.apply(msg):
                stats["applied"] += 1
            else:
                stats["resynced"] += 1
                sub.subscribe("book", MARKET)
        elif msg.get("type") == "reconnected":
            stats["reconnected"] += 1


async def _trade(traders: list[AsyncClient], rng: random.Random, n: int) -> None:
    for _ in range(n):
        t = rng.choice(traders)
        side = rng.choice(("buy", "sell"))
        price = Decimal(2000) + Decimal(rng.randint(-40, 40)) / 10
        size = f"{rng.randint(1, 20) / 100:.2f}"
        with contextlib.suppress(DexError):  # a refusal changes nothing; the book counts
            await t.place(MARKET, side, "limit", size=size, price=str(price))


def test_books_stay_right_through_a_sigkill_of_market_data(
    tmp_path: Path, durable_redis: str
) -> None:
    base = free_base()
    ports = {s: base + i for i, s in enumerate(SERVICES)}
    url = f"http://127.0.0.1:{ports['gateway']}"
    env = {
        "DEX_PORT": str(base),
        "DEX_REDIS_URL": durable_redis,
        "DEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}",
        "DEX_STOP_TIMEOUT_MS": "5000",
        "DEX_RATE_LIMIT_ORDERS": "100000/100000",
    }
    dex = DexProcess.start(["up", "--distributed"], env, tmp_path)
    try:
        for s in SERVICES:
            wait_on_process(
                f"{s} ready", lambda s=s: ready(f"http://127.0.0.1:{ports[s]}"), timeout=60
            )

        async def main() -> tuple[list[BookView], list[dict[str, int]], dict[str, Any]]:
            traders = []
            for _ in range(3):
                t = AsyncClient(url, timeout=15)
                await t.onboard(Wallet.generate())
                await t.faucet("ETH", "100")
                await t.faucet("USDC", "500000")
                traders.append(t)
            views = [BookView() for _ in range(2)]
            stats = [{"applied": 0, "resynced": 0, "reconnected": 0} for _ in views]
            subs = [Subscriber(url.replace("http", "ws", 1) + "/v1/ws") for _ in views]
            for sub in subs:
                sub.subscribe("book", MARKET)
            watchers = [
                asyncio.create_task(_watch(sub, view, st))
                for sub, view, st in zip(subs, views, stats, strict=True)
            ]
            rng = random.Random(7)
            await _trade(traders, rng, 60)
            victim = _child_serving(dex.pid, "market-data")
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            await _trade(traders, rng, 60)  # trading goes on while market data is down
            for _ in range(600):  # the restarted market data serves again
                if state(victim) is None and ready(f"http://127.0.0.1:{ports['market-data']}"):
                    break
                await asyncio.sleep(0.1)  # the poll's interval, within a 60 s deadline
            else:
                raise AssertionError("market data did not serve again within 60 s")
            await _trade(traders, rng, 60)
            async with httpx.AsyncClient(timeout=10) as http:
                rest: dict[str, Any] = {}
                for _ in range(300):  # the views catch up with the book at rest
                    rest = (
                        await http.get(f"{url}/v1/markets/{MARKET}/book", params={"depth": 1000})
                    ).json()
                    if all(
                        v.seq == rest["seq"]
                        and v.bids == dict(rest["bids"])
                        and v.asks == dict(rest["asks"])
                        for v in views
                    ):
                        break
                    await asyncio.sleep(0.1)  # the poll's interval, within a 30 s deadline
                else:
                    raise AssertionError("the clients' books never caught up with REST")
            for w in watchers:
                w.cancel()
            for sub in subs:
                await sub.close()
            for t in traders:
                await t.aclose()
            return views, stats, rest

        views, stats, rest = asyncio.run(main())
        for view, st in zip(views, stats, strict=True):
            assert st["applied"] > 50, st
            assert view.seq == rest["seq"], (st, view.seq, rest["seq"])
            assert view.bids == dict(rest["bids"]) and view.asks == dict(rest["asks"])
    finally:
        assert dex.stop(timeout=60) == 0, dex.output()[-3000:]
