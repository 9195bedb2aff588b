"""Orders per second through risk + matching, and shard recovery time. Prints figures only.

    python bench/pipeline.py memory  [--orders N]     # one process, MemoryBus, real replicas
    python bench/pipeline.py redis   [--orders N]     # risk + matching as `dex serve` processes
    python bench/pipeline.py recovery [--resting N --logged N]

Throughput: N limit orders (a mix that rests and crosses, accounts funded first) are appended
to the risk shards' request streams in packs of `--pack` entries per append, as fast as the
pipeline takes them with at most `--window` orders in flight; an order is done when the
matching engine's `accepted`/`rejected` for it is in the log. Latency is submit (the append
of its pack sent) to outcome (seen by a reader of the matching log): p50/p99. The requests
are encoded before the clock starts (that is the submitter's work, not the pipeline's).

Recovery: a matching shard whose snapshot holds `--resting` resting orders, followed by
`--logged` logged commands, is recovered by a fresh shard (snapshot load, re-apply and check).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from dex.app.demo import add_demo_markets
from dex.bus import Bus, MemoryBus
from dex.core import commands as mc
from dex.core.commands import InputRef
from dex.core.enums import OrderType, Side
from dex.risk import commands as rc
from dex.runtime.health import Health
from dex.runtime.logging import configure_logging, get_logger
from dex.runtime.metrics import ServiceMetrics
from dex.services.matching import MatchingShard
from dex.services.replica import ShardReplica
from dex.services.risk import RiskShard
from dex.wire import codec, layout

ETH = 10**9
OFF = 10**9  # --snapshot-every: no snapshot during a run
USDC = 10**6
N_ACCOUNTS = 200


def accounts() -> list[str]:
    return ["0x" + f"{i + 1:040x}" for i in range(N_ACCOUNTS)]


def orders(n: int, tag: str) -> list[tuple[str, rc.Place]]:
    """A deterministic mix around 2000.00: about half rest, half cross."""
    accts = accounts()
    out = []
    for i in range(n):
        a = accts[i % N_ACCOUNTS]
        buy = (i * 7919) % 2 == 0
        offset = (i * 104729) % 40 - 10  # -10..29 ticks: some cross, most rest
        price = 200_000 - offset if buy else 200_000 + offset
        cmd = rc.Place(
            market="ETH-USDC",
            account=a,
            side=Side.BUY if buy else Side.SELL,
            type=OrderType.LIMIT,
            price=price,
            size=10 + (i % 50) * 10,
            client_order_id=f"{tag}{i}",
        )
        out.append((a, cmd))
    return out


class _Cid(msgspec.Struct):
    """A logged command read for its client order id alone (its other fields are skipped)."""

    client_order_id: str | None = None


# A light view of a matching log entry (positions, [input, command, events, error]): the bench
# only needs each command's client order id, so it does not build the events or the command,
# and its own CPU (it shares the cores with the services) stays out of the figures as far as
# it can.
_outcomes = msgspec.msgpack.Decoder(
    tuple[msgspec.Raw, list[tuple[msgspec.Raw, _Cid, msgspec.Raw, msgspec.Raw]]]
).decode


async def fund(bus: Bus, risk_shards: int) -> int:
    n = 0
    by_stream: dict[str, list[bytes]] = {}
    for i, a in enumerate(accounts()):
        s = layout.risk_in(layout.shard_for(a, risk_shards))
        for j, (asset, amt) in enumerate((("ETH", 10**6 * ETH), ("USDC", 10**12 * USDC))):
            by_stream.setdefault(s, []).append(
                codec.encode(
                    rc.Deposit(account=a, asset=asset, amount=amt, tx_id=f"faucet:{2 * i + j}")
                )
            )
            n += 1
    for s, entries in by_stream.items():
        await bus.append(s, entries)
    return n


async def drive(
    bus: Bus,
    n: int,
    *,
    risk_shards: int,
    matching_shards: int,
    pack: int,
    window: int,
    tag: str = "run",
    wall: dict[str, list[int]] | None = None,
) -> dict[str, float]:
    """Submit n orders, wait for every outcome; return throughput and latency figures.

    The requests are built and encoded before the clock starts: that is the submitter's work
    (the gateway's, in another process), not the pipeline's. Flow control is one counter of
    orders in flight and one event, so the driver costs the pipeline little CPU."""
    work = orders(n, tag)
    packs: list[tuple[dict[str, list[bytes]], list[str]]] = []
    for i in range(0, n, pack):
        by_stream: dict[str, list[bytes]] = {}
        cids: list[str] = []
        for a, cmd in work[i : i + pack]:
            by_stream.setdefault(layout.risk_in(layout.shard_for(a, risk_shards)), []).append(
                codec.encode(cmd)
            )
            assert cmd.client_order_id is not None
            cids.append(cmd.client_order_id)
        packs.append((by_stream, cids))
    logs = {layout.me_log(m): await bus.last(layout.me_log(m)) for m in range(matching_shards)}
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()
    room = asyncio.Event()
    in_flight = 0

    async def tail() -> None:
        nonlocal in_flight
        seen = 0
        while seen < n:
            got = await bus.read_many(logs, limit=1000, timeout=0.5)
            now = time.perf_counter()
            for stream, entries in got.items():
                logs[stream] = entries[-1][0]
                for _, data in entries:
                    # every place that reached the engine has its outcome in its own item
                    for item in _outcomes(data)[1]:
                        cid = item[1].client_order_id
                        t0 = sent.pop(cid, None) if cid else None
                        if t0 is not None:
                            lat.append(now - t0)
                            if wall is not None:
                                wall[cid].append(time.time_ns())
                            seen += 1
                            in_flight -= 1
            if in_flight + pack <= window:
                room.set()
        done.set()

    tailer = asyncio.create_task(tail())
    start = time.perf_counter()
    for by_stream, cids in packs:
        while in_flight + len(cids) > window:
            room.clear()
            await room.wait()
        in_flight += len(cids)
        t = time.perf_counter()  # before the append: an outcome can arrive while it is awaited
        for cid in cids:
            sent[cid] = t
        if wall is not None:
            stamp = time.time_ns()
            wall.update((cid, [stamp]) for cid in cids)
        for s, entries in by_stream.items():
            await bus.append(s, entries)
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    await tailer
    lat.sort()
    return {
        "orders": n,
        "seconds": elapsed,
        "orders_per_s": n / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def replica(bus: Bus, service: str, count: int, make: Any) -> ShardReplica:
    metrics = ServiceMetrics(service)
    return ShardReplica(
        bus,
        service,
        count,
        make,
        owner="bench",
        ttl=5.0,
        max_shards=0,
        health=Health(metrics),
        metrics=metrics,
        log=get_logger(service=service),
    )


async def bench_memory(args: argparse.Namespace) -> None:
    bus = MemoryBus()
    m_n, r_n = args.matching_shards, args.risk_shards
    kw = {"matching_shards": m_n, "risk_shards": r_n, "snapshot_every": args.snapshot_every}
    me = replica(bus, "matching-engine", m_n, lambda m: MatchingShard(bus, m, **kw))
    risk = replica(bus, "risk-engine", r_n, lambda r: RiskShard(bus, r, max_lag=10**9, **kw))
    await add_demo_markets(bus)
    await me.start()
    await risk.start()
    await fund(bus, r_n)
    await drive(
        bus,
        2000,
        risk_shards=r_n,
        matching_shards=m_n,
        pack=args.pack,
        window=args.window,
        tag="warm",
    )
    figs = [
        await drive(
            bus,
            args.orders,
            risk_shards=r_n,
            matching_shards=m_n,
            pack=args.pack,
            window=args.window,
            tag=f"run{i}-",
        )
        for i in range(args.runs)
    ]
    await risk.stop()
    await me.stop()
    report("in-memory bus, one process", figs, args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """A redis-server of our own (AOF, fsync always, noeviction) in a temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix="dex-bench-"))
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp)]
    cmd += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    cmd += ["--maxmemory-policy", "noeviction", "--proto-max-bulk-len", "2gb"]
    redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis.asyncio as aioredis
        from redis.exceptions import ConnectionError as RedisConnectionError

        for _ in range(200):
            try:
                client = aioredis.Redis.from_url(url)
                await client.ping()
                await client.aclose()
                break
            except (OSError, RedisConnectionError):
                await asyncio.sleep(0.05)
        yield url
    finally:
        redis.terminate()
        redis.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


async def bench_redis(args: argparse.Namespace) -> None:
    async with private_redis() as url:
        await _bench_redis(args, url)


async def _bench_redis(args: argparse.Namespace, url: str) -> None:
    from dex.bus.redis import RedisBus

    procs: list[subprocess.Popen[bytes]] = []
    try:
        bus = RedisBus(url)
        await add_demo_markets(bus)
        env = {
            **os.environ,
            "DEX_REDIS_URL": url,
            "DEX_MATCHING_SHARDS": str(args.matching_shards),
            "DEX_RISK_SHARDS": str(args.risk_shards),
            "DEX_LOG_LEVEL": "warning",
            "DEX_SNAPSHOT_EVERY": str(args.snapshot_every),
            "DEX_MAX_LAG": str(10**9),
        }
        ports = {}
        for service in ("matching-engine", "risk-engine"):
            ports[service] = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dex.cli", "serve", service],
                    env={**env, "DEX_PORT": str(ports[service]), "DEX_REPLICA_ID": service},
                    stdout=subprocess.DEVNULL,
                )
            )
        while (
            len(await bus.leases("me:")) < args.matching_shards
            or len(await bus.leases("risk:")) < args.risk_shards
        ):
            await asyncio.sleep(0.1)
        await fund(bus, args.risk_shards)
        await drive(
            bus,
            2000,
            risk_shards=args.risk_shards,
            matching_shards=args.matching_shards,
            pack=args.pack,
            window=args.window,
            tag="warm",
        )
        wall: dict[str, list[int]] | None = {} if args.trace else None
        figs = [
            await drive(
                bus,
                args.orders,
                risk_shards=args.risk_shards,
                matching_shards=args.matching_shards,
                pack=args.pack,
                window=args.window,
                tag=f"run{i}-",
                wall=wall,
            )
            for i in range(args.runs)
        ]
        report("Redis bus, risk + matching as separate processes (AOF, fsync always)", figs, args)
        if wall is not None:
            await print_stages(bus, wall, args)
        for service, port in ports.items():
            print(f"  {service}: {step_stats(port, service)}")
        await bus.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


async def bench_recovery(args: argparse.Namespace) -> None:
    if args.bus == "memory":
        await _bench_recovery(args, MemoryBus())
        return
    from dex.bus.redis import RedisBus

    async with private_redis() as url:
        bus = RedisBus(url)
        await _bench_recovery(args, bus)
        await bus.close()


async def _bench_recovery(args: argparse.Namespace, bus: Bus) -> None:
    kw = {"matching_shards": 1, "risk_shards": 1, "snapshot_every": 10**9, "batch_size": 1000}
    w = MatchingShard(bus, 0, **kw)
    w.lease = await bus.acquire(w.tag, "bench", 3600)
    await w.recover()
    await add_demo_markets(bus)
    await w.step(0)
    t = time.perf_counter()
    src = InputRef("bench", 0)
    for i in range(args.resting):  # straight into the engine: the snapshot is what matters
        buy = i % 2 == 0
        price = (195_000 - i % 4000) if buy else (205_000 + i % 4000)  # inside the band
        w.engine.apply(
            mc.Place(
                market="ETH-USDC",
                account=f"0x{i % 1000:040x}",
                side=Side.BUY if buy else Side.SELL,
                type=OrderType.LIMIT,
                price=price,
                size=10 + i % 90,
                order_id=i + 1,
                ts=w.stamp(),
            ),
            src,
        )
    resting = sum(len(m.orders) for m in w.engine.markets.values())
    assert resting == args.resting, f"only {resting} of {args.resting} orders rest"
    await w.take_snapshot()
    build = time.perf_counter() - t
    stream = layout.risk_to(0, 0)
    batch = []
    for i in range(args.logged):
        buy = i % 2 == 0
        price = 194_000 + i % 12_000 if buy else 206_000 - i % 12_000  # some cross
        cmd = mc.Place(
            market="ETH-USDC",
            account=f"0x{i % 1000:040x}",
            side=Side.BUY if buy else Side.SELL,
            type=OrderType.LIMIT,
            price=price,
            size=10 + i % 90,
            order_id=args.resting + i + 1,
        )
        batch.append(codec.encode(codec.ToEntry(0, cmd)))
        if len(batch) == 1000:
            await bus.append(stream, batch)
            batch = []
            while await w.step(0):
                pass
    if batch:
        await bus.append(stream, batch)
    while await w.step(0):
        pass
    fresh = MatchingShard(bus, 0, **kw)
    fresh.lease = w.lease
    t = time.perf_counter()
    await fresh.recover()
    took = time.perf_counter() - t
    assert fresh.engine.state_hash() == w.engine.state_hash()
    print(
        f"recovery ({args.bus} bus): snapshot of {args.resting:,} resting orders + "
        f"{fresh.recovered_items:,} "
        f"logged commands re-applied and checked: {took:.2f} s (target < 5 s; "
        f"building the state took {build:.1f} s)"
    )


async def print_stages(bus: Bus, wall: dict[str, list[int]], args: argparse.Namespace) -> None:
    """Where an order's time goes (`--trace`), from the time stamps the shards logged: submit
    -> risk's stamp on the request -> matching's stamp on the order -> outcome seen by the
    bench. All are wall-clock nanoseconds of this machine."""
    risk_ts: dict[str, int] = {}
    for r in range(args.risk_shards):
        for _, data in await bus.read(layout.risk_log(r), 0, limit=10**7):
            for item in codec.decode_risk_entry(data).items:
                cid = getattr(item.cmd, "client_order_id", None)
                if cid in wall:
                    risk_ts[cid] = item.ts
    me_ts: dict[str, int] = {}
    for m in range(args.matching_shards):
        for _, data in await bus.read(layout.me_log(m), 0, limit=10**7):
            for mitem in codec.decode_match_entry(data).items:
                cid = getattr(mitem.cmd, "client_order_id", None)
                if cid in wall:
                    me_ts[cid] = mitem.cmd.ts
    stages: list[list[float]] = [[], [], []]
    for cid, (sent, seen) in ((c, t) for c, t in wall.items() if len(t) == 2):
        if cid in risk_ts and cid in me_ts:
            stages[0].append((risk_ts[cid] - sent) / 1e6)
            stages[1].append((me_ts[cid] - risk_ts[cid]) / 1e6)
            stages[2].append((seen - me_ts[cid]) / 1e6)
    names = ("submit -> risk stamp", "risk stamp -> matching stamp", "matching stamp -> seen")
    for name, values in zip(names, stages, strict=True):
        values.sort()
        if values:
            print(
                f"  {name}: p50 {values[len(values) // 2]:.1f} ms   "
                f"p90 {values[int(len(values) * 0.9)]:.1f} ms   ({len(values):,} orders)"
            )


def step_stats(port: int, service: str) -> str:
    """Mean batch size and step time from the service's own /metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    name = service.replace("-", "_")
    values: dict[str, float] = {}
    for line in text.splitlines():
        for key in ("batch_size_items_sum", "batch_size_items_count", "step_latency_seconds_sum"):
            if line.startswith(f"dex_{name}_{key} "):
                values[key] = float(line.split()[1])
    n = values.get("batch_size_items_count", 0) or 1
    return (
        f"{n:,.0f} batches, {values.get('batch_size_items_sum', 0) / n:.0f} inputs per batch, "
        f"{values.get('step_latency_seconds_sum', 0) / n * 1000:.2f} ms per step"
    )


def report(title: str, figs: list[dict[str, float]], args: argparse.Namespace) -> None:
    """Each run's figures, then the run with the median throughput (runs follow each other on
    the same processes, so later runs meet a larger book)."""
    print(
        f"{title}: {args.runs} runs of {args.orders:,} orders, {args.risk_shards} risk x "
        f"{args.matching_shards} matching shards, pack {args.pack}, window {args.window}"
        + (f", snapshots every {args.snapshot_every:,} inputs" if args.snapshot_every < OFF else "")
    )
    for fig in figs:
        print(
            f"  {fig['orders_per_s']:,.0f} orders/s   p50 {fig['p50_ms']:.1f} ms   "
            f"p99 {fig['p99_ms']:.1f} ms   ({fig['seconds']:.1f} s)"
        )
    mid = sorted(figs, key=lambda f: f["orders_per_s"])[len(figs) // 2]
    print(
        f"  median run: {mid['orders_per_s']:,.0f} orders/s   p50 {mid['p50_ms']:.1f} ms   "
        f"p99 {mid['p99_ms']:.1f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("mode", choices=["memory", "redis", "recovery"])
    p.add_argument("--orders", type=int, default=50_000)
    p.add_argument("--pack", type=int, default=200, help="orders per append")
    p.add_argument("--window", type=int, default=500, help="orders in flight at most")
    p.add_argument("--runs", type=int, default=3, help="timed runs (after one warm-up)")
    p.add_argument(
        "--trace",
        action="store_true",
        help="redis: also print where an order's time goes, stage by stage",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=OFF,
        help="the shards' DEX_SNAPSHOT_EVERY (default: none during the run; the services' "
        "default is 10000)",
    )
    p.add_argument("--matching-shards", type=int, default=1)
    p.add_argument("--risk-shards", type=int, default=1)
    p.add_argument("--resting", type=int, default=1_000_000)
    p.add_argument("--logged", type=int, default=100_000)
    p.add_argument("--bus", choices=["memory", "redis"], default="memory", help="for recovery")
    args = p.parse_args()
    configure_logging("bench", "warning")
    run = {"memory": bench_memory, "redis": bench_redis, "recovery": bench_recovery}[args.mode]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
