"""Feed fan-out benchmark (issue 12): N WebSocket subscribers on one market's book channel of
the gateway's `/v1/ws`, while about R book updates a second are produced.

Run from the repository root with the package installed (`pip install -e .`):

    python bench/feed.py                                  # 1,000 subscribers, 1,000 requests/s, 5 s
    python bench/feed.py --subscribers 100 --rate 200 --seconds 3   # quick check

The exchange runs embedded in this process as `dex up` runs it (market data, matching, risk
and the gateway on one SQLite bus, one risk and one matching shard, each on a free port), like
`tests/services/test_feed.py`. The subscribers run in a second process, so on a 2-core machine
the exchange has one core and the subscribers the other. Each subscriber is a raw asyncio
protocol (`Subscriber`: the handshake, then the server's frames parsed by hand, the update's
`seq` found in its bytes): the `websockets` client costs tens of microseconds per message in
Python, and with it the harness's own p99 at 1,000 subscribers was 125 ms at 22 updates/s,
over the target before the exchange did anything. RLIMIT_NOFILE is raised to the hard limit
in both processes.

The producer appends one request per bus append straight onto the risk shard's input stream
(as the gateway does after its checks), paced to `--rate` a second without waiting for each
append's answer before the next (requests come from many clients at once): a resting ETH-USDC limit
order, then a cancel of the order placed 100 before, so every request changes one level of
the book (orders never cross). Matching may still put several requests in one log entry, and
market data publishes one feed update per log entry and market: the achieved rate printed is
book updates (distinct `seq`s on the feed) per second, from the matching log.

Delivery delay, per message and subscriber: the receipt time (`time.time_ns()` in the
subscriber process, when the chunk holding the frame is read) minus the matching stamp of the
update (an update's `seq` is the market seq of the last event of its matching log entry; that
event's `ts` is the matching shard's stamp, read back from the log after the run). Both are
this machine's wall clock. Printed: p50/p99/max over every delivered update, messages
delivered of those expected (updates x subscribers), and subscribers the gateway dropped as
slow consumers.

Runs, each of `--seconds` of production plus a drain (until no message for 2 s):
1. harness ceiling: the same subscriber process against a trivial `websockets` broadcast
   server in this process (`websockets.broadcast` of a feed-sized update, stamped at send), at
   `--rate`: what this harness and one Python process can deliver, without the exchange (its
   achieved rate is the most it can broadcast);
2. the exchange with one subscriber (the pipeline and feed without fan-out);
3. the exchange with N subscribers;
4. the exchange with N subscribers plus one that subscribes, takes its snapshot and then
   stops reading its socket (TCP back-pressure): the others' figures, and whether the stalled
   one was disconnected (close code 1008, "slow consumer", once more than
   `DEX_WS_MAX_BUFFER_BYTES`, 4 MiB, waits in its transport: on loopback the kernel's buffers
   take a few MB first, so a 5 s run does not get there; tests/services/test_feed_slow.py
   shows the drop with small buffers);
5. the harness ceiling again at the update rate run 3 achieved (at most 3 s): the harness's
   delay for the same fan-out load.

Figures (defaults; 2 cores). Quiet machine (load 0.1-0.5, 2 runs, 16:48 UTC): 1,000
subscribers, 102-108 updates/s (310-320 B), p50 6.5-6.8 ms, **p99 20.4-21.6 ms**, max 40 ms;
one subscriber 464-479 updates/s, p99 4.5 ms; with one stalled subscriber the others' p99
25.8-35.9 ms; the harness alone at the exchange's rate p99 8-13 ms, and at most 208-214
updates/s to 1,000 clients. Runs with other work on the machine (load 1.6-2.6):
- harness ceiling at 1,000/s: the trivial server broadcasts only 115-145 updates/s to 1,000
  clients, p99 43-92 ms;
- exchange, 1 subscriber: 200-440 updates/s, p50 2.2-2.8 ms, p99 7-20 ms;
- exchange, 1,000 subscribers: 1,000 book-changing requests/s arrive as 39-55 feed updates/s
  (matching packs the requests waiting for it into one log entry, and an update is one log
  entry's changes: 500-650 B), every one delivered to every subscriber, p50 14-24 ms, p99
  47-84 ms (target < 100 ms: met), max 70-101 ms; the harness alone at the same rate p99
  16-75 ms;
- with one stalled subscriber the others' p99 was 26-57 ms (unchanged).
Session 7 (load 0.6-1.2, 2 runs; the embedded bus now group-commits, and the producer no longer
waits for each append, which under that commit held it to ~280 requests/s): 1,000 subscribers,
999 requests/s arriving as 156-161 updates/s (250 B), p50 6.3-7.0 ms, **p99 19.0-22.1 ms**,
max 40-48 ms; one subscriber 586-596 updates/s, p99 3.7-4.4 ms; with one stalled subscriber
the others' p99 21.1-23.8 ms; the harness alone at the exchange's rate p99 10.7-11.1 ms.
Before the frames were shared (a task and an ASGI send per subscriber and message) and with
the `websockets` client in the harness: p50 133 ms, p99 314-437 ms at 22-34 updates/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.server import ServerConnection, broadcast, serve

from dex.app.demo import add_demo_markets
from dex.app.run import Running, run_units
from dex.app.units import BUILDERS
from dex.bus.sqlite import SqliteBus
from dex.core.enums import OrderType, Side
from dex.risk import commands as rc
from dex.runtime.logging import configure_logging
from dex.runtime.settings import Settings
from dex.wire import codec, layout

MARKET = "ETH-USDC"
ETH = 10**9
USDC = 10**6
N_ACCOUNTS = 20
KEEP = 100  # resting orders: each place is followed by a cancel of the order KEEP before
BIN_US = 10  # histogram resolution of the delays (microseconds)
QUIET = 2.0  # the drain ends after this long without a message
TARGET_P99_MS = 100.0


def compact(message: dict[str, Any]) -> str:
    """JSON as the gateway writes it (msgspec: no spaces), which the subscribers parse."""
    return json.dumps(message, separators=(",", ":"))


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------------- subscriber process


def subscriber_process(url: str, n: int, stalled: bool, conn: Connection) -> None:
    raise_nofile()
    asyncio.run(_subscribers(url, n, stalled, conn))


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, masked as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


SEQ = b',"seq":'


class Subscriber(asyncio.Protocol):
    """One WebSocket subscriber on a raw asyncio protocol: the handshake, then the server's
    frames parsed by hand (unmasked, never fragmented by our servers), each update's `seq`
    found in its bytes and stamped with the receipt time of the chunk it arrived in. The
    `websockets` client costs tens of microseconds per message in Python; at 1,000
    subscribers that alone was the harness's ceiling. Answers pings; records a close frame."""

    def __init__(self, host: str, path: str, sub: bytes, got: list[tuple[int, int]]) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.sub = sub
        self.got = got
        self.buf = b""
        self.upgraded = False
        self.snapshot = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.messages = 0
        self.bytes = 0
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.snapshot.done():
            self.snapshot.set_exception(ConnectionError(f"closed before the snapshot: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(buf[:end].decode(errors="replace"))
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_masked(1, self.sub))
            buf = buf[end + 4 :]
        i, size = 0, len(buf)
        while size - i >= 2:
            opcode, n = buf[i] & 0x0F, buf[i + 1] & 0x7F
            start = i + 2
            if n == 126:
                if size - i < 4:
                    break
                n, start = int.from_bytes(buf[i + 2 : i + 4], "big"), i + 4
            elif n == 127:
                if size - i < 10:
                    break
                n, start = int.from_bytes(buf[i + 2 : i + 10], "big"), i + 10
            if size - start < n:
                break
            i = start + n
            if opcode == 1:
                self.text(buf, start, i, now)
            elif opcode == 9:  # ping: pong with its payload
                assert self.transport is not None
                self.transport.write(_masked(10, buf[start:i]))
            elif opcode == 8 and n >= 2:
                self.close_code = int.from_bytes(buf[start : start + 2], "big")
                self.close_reason = buf[start + 2 : i].decode(errors="replace")
        self.buf = buf[i:]

    def text(self, buf: bytes, start: int, end: int, now: int) -> None:
        self.last = time.monotonic()
        if buf.startswith(b'{"type":"update"', start):
            at = buf.find(SEQ, start, end) + len(SEQ)
            stop = at
            while 48 <= buf[stop] <= 57:
                stop += 1
            self.got.append((int(buf[at:stop]), now))
            self.messages += 1
            self.bytes += end - start
        elif buf.startswith(b'{"type":"snapshot"', start) and not self.snapshot.done():
            self.snapshot.set_result(None)


async def _subscribers(url: str, n: int, stalled: bool, conn: Connection) -> None:
    sub = json.dumps({"op": "subscribe", "channel": "book", "market": MARKET}).encode()
    where = urlsplit(url)
    host, port, path = where.hostname or "127.0.0.1", where.port or 80, where.path or "/"
    recs: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(50)  # connections opened at once

    async def open_one(got: list[tuple[int, int]]) -> Subscriber:
        async with gate:
            _, proto = await loop.create_connection(
                lambda: Subscriber(f"{host}:{port}", path, sub, got), host, port
            )
            await asyncio.wait_for(proto.snapshot, 60)
            return proto

    subs = await asyncio.gather(*(open_one(recs[i]) for i in range(n)))
    stuck: Subscriber | None = None
    if stalled:  # subscribes, takes its snapshot, then reads nothing more (TCP back-pressure)
        stuck = await open_one([])
        assert stuck.transport is not None
        stuck.transport.pause_reading()
    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)  # "produced": production is over
    while time.monotonic() - max(s.last for s in subs) < QUIET:
        await asyncio.sleep(0.2)
    stalled_result = ""
    if stuck is not None:
        assert stuck.transport is not None
        stuck.transport.resume_reading()
        try:
            await asyncio.wait_for(asyncio.shield(stuck.lost), QUIET * 5)
            how = (
                f"close frame {stuck.close_code} {stuck.close_reason!r}"
                if stuck.close_code is not None
                else "connection dropped by the server"
            )
            stalled_result = f"disconnected ({how}) after {len(stuck.got):,} updates read"
        except TimeoutError:
            stalled_result = f"not disconnected ({len(stuck.got):,} updates were waiting for it)"
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    ts: dict[int, int] = await loop.run_in_executor(None, conn.recv)  # seq -> stamp
    hist: dict[int, int] = {}
    delivered = 0
    worst = 0
    for out in recs:
        for seq, now in out:
            t0 = ts.get(seq)
            if t0 is None:
                continue
            d = (now - t0) // 1000
            worst = max(worst, d)
            b = d // BIN_US
            hist[b] = hist.get(b, 0) + 1
            delivered += 1
    slow = sum(1 for s in subs if s.close_code == 1008)
    received = sum(s.messages for s in subs)
    conn.send(
        {
            "hist": hist,
            "delivered": delivered,
            "max_us": worst,
            "slow": slow,
            "stalled": stalled_result,
            "mean_bytes": sum(s.bytes for s in subs) / max(1, received),
        }
    )


def quantile(hist: dict[int, int], total: int, q: float) -> float:
    """The q-quantile of the histogram, in ms (upper edge of its bin)."""
    want = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= want:
            return (b + 1) * BIN_US / 1000
    return float("nan")


# ---------------------------------------------------------------------- the runs


async def run_clients(
    url: str, n: int, stalled: bool, produce: Any, stamps: Any
) -> tuple[dict[str, Any], float]:
    """Start the subscriber process, wait until all have their snapshot, `produce()` (returns
    the seconds it took), then hand `stamps()` (seq -> ns) to the subscribers for the figures."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=subscriber_process, args=(url, n, stalled, child), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    ready = await loop.run_in_executor(None, parent.recv)
    assert ready == "ready"
    print(f"  {n:,} subscribers ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    seconds, requests = await produce()
    parent.send("produced")
    # the subscribers drain (no message for QUIET seconds), then wait for the stamps
    ts = await stamps()
    parent.send(ts)
    result: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
    proc.join(30)
    result["updates"] = len(ts)
    result["seconds"] = seconds
    result["requests"] = requests
    return result, seconds


async def pace(rate: int, seconds: float, step: Any) -> tuple[float, int]:
    """Call `step(i)` about `rate` times a second (as far as it keeps up) until `seconds` have
    passed; the time it took and the number of calls."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    i = 0
    while (now := loop.time() - start) < seconds:
        due = int(now * rate) + 1
        while i < due and loop.time() - start < seconds:
            await step(i)
            i += 1
        await asyncio.sleep(0.001)
    return loop.time() - start, i


async def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The subscribers against a trivial broadcast server: the harness's own ceiling."""
    conns: set[ServerConnection] = set()
    stamps: dict[int, int] = {}
    snapshot = compact(
        {"type": "snapshot", "channel": "book", "market": MARKET, "seq": 0, "bids": [], "asks": []}
    )

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(compact({"type": "subscribed", "channel": "book", "market": MARKET}))
        await ws.send(snapshot)
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def step(i: int) -> None:
        seq = i + 1
        msg = compact(
            {
                "type": "update",
                "channel": "book",
                "market": MARKET,
                "prev_seq": i,
                "seq": seq,
                "bids": [[f"{1990 + i % 10}.{i % 100:02d}", "0.0010"]],
                "asks": [],
                "checksum": 1234567890,
            }
        )
        stamps[seq] = time.time_ns()
        broadcast(conns, msg)

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]

        async def produce() -> tuple[float, int]:
            return await pace(args.rate, args.seconds, step)

        async def get_stamps() -> dict[int, int]:
            return stamps

        result, _ = await run_clients(
            f"ws://127.0.0.1:{port}/", args.subscribers, False, produce, get_stamps
        )
    return result


async def fund(bus: SqliteBus, accounts: list[str]) -> None:
    entries = []
    for i, a in enumerate(accounts):
        for j, (asset, amt) in enumerate((("ETH", 10**6 * ETH), ("USDC", 10**12 * USDC))):
            entries.append(
                codec.encode(
                    rc.Deposit(account=a, asset=asset, amount=amt, tx_id=f"faucet:{2 * i + j}")
                )
            )
    await bus.append(layout.risk_in(0), entries)


async def exchange_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs 2 and 3 on one embedded exchange."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bus = SqliteBus(Path(tmp) / "bus.sqlite3")
        settings = Settings(
            data_dir=tmp,
            stop_timeout_ms=5000,
            matching_shards=1,
            risk_shards=1,
            log_level="warning",
        )
        await add_demo_markets(bus)
        names = ("market-data", "matching-engine", "risk-engine", "gateway")
        units = [BUILDERS[n](bus, settings) for n in names]
        ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_units(
                units, settings, on_ready=ready.set_result, stop=stop, ports=dict.fromkeys(names, 0)
            )
        )
        try:
            running = await asyncio.wait_for(asyncio.shield(ready), 60)
            port = running.servers["gateway"].port
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await c.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            accounts = ["0x" + f"{i + 1:040x}" for i in range(N_ACCOUNTS)]
            await fund(bus, accounts)
            stream = layout.risk_in(0)
            log = layout.me_log(0)
            counter = [0]
            start_log = [0]  # the matching log's end when a run's production starts

            def request(i: int, tag: str) -> bytes:
                j = i // 2
                a = accounts[j % N_ACCOUNTS]
                if i % 2 == 1 and j >= KEEP:
                    old = j - KEEP
                    return codec.encode(
                        rc.Cancel(
                            market=MARKET,
                            account=accounts[old % N_ACCOUNTS],
                            client_order_id=f"{tag}{old}",
                        )
                    )
                buy = j % 2 == 0
                price = 199_000 + (j * 37) % 900 if buy else 200_100 + (j * 53) % 900
                return codec.encode(
                    rc.Place(
                        market=MARKET,
                        account=a,
                        side=Side.BUY if buy else Side.SELL,
                        type=OrderType.LIMIT,
                        price=price,
                        size=10 + j % 50,
                        client_order_id=f"{tag}{j}" if i % 2 == 0 else f"{tag}x{i}",
                    )
                )

            # a book before anyone subscribes
            for i in range(0, 2 * KEEP, 2):
                await bus.append(stream, [request(i, "pre")])

            for n, stalled in ((1, False), (args.subscribers, False), (args.subscribers, True)):
                counter[0] += 1
                tag = f"r{counter[0]}-"
                work = [request(i, tag) for i in range(int(args.rate * args.seconds) + 1)]

                async def produce(work: list[bytes] = work) -> tuple[float, int]:
                    start_log[0] = await bus.last(log)
                    sent: list[asyncio.Future[int]] = []

                    async def step(k: int) -> None:
                        # Not awaited one by one: requests arrive from many clients at once,
                        # and the embedded bus commits the appends of one loop turn together.
                        sent.append(asyncio.ensure_future(bus.append(stream, [work[k]])))

                    took = await pace(args.rate, args.seconds, step)
                    await asyncio.gather(*sent)
                    return took

                async def stamps() -> dict[int, int]:
                    await asyncio.sleep(QUIET)  # the pipeline has written its last entry
                    ts: dict[int, int] = {}
                    after = start_log[0]
                    while True:
                        got = await bus.read(log, after, limit=10_000)
                        if not got:
                            return ts
                        for _seq, data in got:
                            last = None
                            for item in codec.decode_match_events(data).items:
                                for ev in item.events:
                                    if ev.market == MARKET:
                                        last = ev
                            if last is not None:
                                ts[last.seq] = last.ts
                        after = got[-1][0]

                print(
                    f"exchange, {n} subscribers" + (" + 1 stalled" if stalled else "") + ":",
                    file=sys.stderr,
                )
                result, _ = await run_clients(
                    f"ws://127.0.0.1:{port}/v1/ws", n, stalled, produce, stamps
                )
                results.append(result)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            bus.close()
    return results


def line(title: str, r: dict[str, Any], n: int, requests: bool = True) -> str:
    total = r["delivered"]
    expected = r["updates"] * n
    p50 = quantile(r["hist"], total, 0.5)
    p99 = quantile(r["hist"], total, 0.99)
    req = f" ({r['requests'] / r['seconds']:,.0f} requests/s)" if requests else ""
    return (
        f"  {title}: {r['updates'] / r['seconds']:,.0f} updates/s{req}   p50 {p50:.1f} ms   "
        f"p99 {p99:.1f} ms   max {r['max_us'] / 1000:.1f} ms   {total:,} of {expected:,} "
        f"messages delivered (mean {r['mean_bytes']:,.0f} B)   {r['slow']} dropped as slow"
    )


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"feed fan-out: {args.subscribers:,} subscribers on {MARKET} book, "
        f"{args.rate:,} requests/s for {args.seconds:g} s (NOFILE {raise_nofile():,})"
    )
    print("harness ceiling (trivial broadcast server):", file=sys.stderr)
    ceil = await ceiling(args)
    print(line("harness ceiling (websockets.broadcast)", ceil, args.subscribers, False))
    one, plain, with_stalled = await exchange_runs(args)
    print(line("exchange, 1 subscriber", one, 1))
    print(line(f"exchange, {args.subscribers:,} subscribers", plain, args.subscribers))
    same = max(1, round(plain["updates"] / plain["seconds"]))
    at_same = argparse.Namespace(**{**vars(args), "rate": same, "seconds": min(args.seconds, 3)})
    print(f"harness ceiling at the exchange's {same}/s:", file=sys.stderr)
    ceil_same = await ceiling(at_same)
    print(line(f"harness ceiling at the exchange's {same}/s", ceil_same, args.subscribers, False))
    print(line("exchange + 1 stalled", with_stalled, args.subscribers))
    print(f"  stalled subscriber: {with_stalled['stalled']}")
    p99 = quantile(plain["hist"], plain["delivered"], 0.99)
    print(f"  target p99 < {TARGET_P99_MS:.0f} ms: {'met' if p99 < TARGET_P99_MS else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=1000, help="requests a second to the exchange")
    ap.add_argument("--seconds", type=float, default=5.0, help="of production, each run")
    configure_logging("bench", "warning", stream=sys.stderr)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
