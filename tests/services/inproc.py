"""An in-process cluster for tests: every matching and risk shard on one bus, stepped by hand,
plus helpers that build realistic traffic. Used by the shard tests and as the uninterrupted
reference run of the fault tests."""

from __future__ import annotations

from typing import Any

from dex.app.demo import DEMO_ASSETS, DEMO_MARKETS
from dex.bus import Bus, MemoryBus
from dex.core import commands as mc
from dex.core.enums import OrderType, Side
from dex.risk import commands as rc
from dex.services.matching import MatchingShard
from dex.services.risk import RiskShard
from dex.services.shard import ShardWorker
from dex.wire import codec, layout

M, R = 2, 2  # default shard counts
ACCOUNTS = ["0x" + f"{i:040x}" for i in range(1, 7)]
ETH = 10**9
USDC = 10**6


class Cluster:
    """Every shard of both services on one bus, stepped by hand."""

    def __init__(
        self,
        bus: Bus | None = None,
        max_lag: int = 10_000,
        matching_shards: int = M,
        risk_shards: int = R,
        **kw: Any,
    ) -> None:
        self.bus = bus or MemoryBus()
        self.m_count, self.r_count = matching_shards, risk_shards
        counts = {"matching_shards": matching_shards, "risk_shards": risk_shards}
        self.me = [MatchingShard(self.bus, m, **counts, **kw) for m in range(matching_shards)]
        self.risk = [
            RiskShard(self.bus, r, max_lag=max_lag, **counts, **kw) for r in range(risk_shards)
        ]
        self.requests: list[tuple[str, int]] = []

    @property
    def workers(self) -> list[ShardWorker]:
        return [*self.risk, *self.me]

    async def start(self) -> None:
        for w in self.workers:
            w.lease = await self.bus.acquire(w.tag, "test", 60)
            await w.recover()

    async def setup_markets(self) -> None:
        cmds: list[Any] = [mc.AddAsset(asset=a) for a in DEMO_ASSETS]
        cmds += [mc.AddMarket(spec=s) for s in DEMO_MARKETS]
        await self.bus.append(layout.ADMIN_STREAM, [codec.encode(c) for c in cmds])

    async def send(self, account: str, cmd: Any) -> tuple[str, int]:
        stream = layout.risk_in(layout.shard_for(account, self.r_count))
        seq = await self.bus.append(stream, [codec.encode(cmd)])
        self.requests.append((stream, seq))
        return stream, seq

    async def pump(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            for w in self.workers:
                await w.step(0)

    async def fund(self) -> None:
        for i, a in enumerate(ACCOUNTS):
            await self.send(
                a, rc.Deposit(account=a, asset="ETH", amount=100 * ETH, tx_id=f"faucet:{2 * i}")
            )
            await self.send(
                a,
                rc.Deposit(
                    account=a, asset="USDC", amount=10**6 * USDC, tx_id=f"faucet:{2 * i + 1}"
                ),
            )

    def hashes(self) -> list[str]:
        return [w.ledger.state_hash() for w in self.risk] + [w.engine.state_hash() for w in self.me]

    async def log_events(self, stream: str) -> list[Any]:
        out = []
        for _, data in await self.bus.read(stream, 0, limit=10**6):
            entry = (
                codec.decode_match_entry(data)
                if ":me:" in stream or "{me:" in stream
                else codec.decode_risk_entry(data)
            )
            for item in entry.items:
                out.extend(item.events)
        return out


def place(account: str, side: str, price: int, size: int, **kw: Any) -> rc.Place:
    return rc.Place(
        market="ETH-USDC",
        account=account,
        side=Side(side),
        type=OrderType.LIMIT,
        price=price,
        size=size,
        **kw,
    )


async def open_cluster(*, fund: bool = True, trade: bool = True, **kw: Any) -> Cluster:
    """A started `Cluster(**kw)` with the demo markets, its accounts funded and (`trade`)
    `trading` done."""
    c = Cluster(**kw)
    await c.start()
    await c.setup_markets()
    if fund:
        await c.fund()
    if trade:
        await trading(c)
    return c


async def trading(c: Cluster, n: int = 40) -> None:
    for i in range(n):
        a = ACCOUNTS[i % len(ACCOUNTS)]
        side = "buy" if i % 2 else "sell"
        price = 200_000 + (i % 7) * 10 * (1 if side == "sell" else -1) + (0 if i % 3 else 30)
        await c.send(a, place(a, side, price, 1000 + i, client_order_id=f"c{i}"))
        if i % 5 == 0:
            await c.pump(2)
    await c.pump()
