"""What the process-level fault tests share: a private Redis, service processes, load, checks.

`Rig` owns one test's world: its own `redis-server --appendonly yes --appendfsync always` on a
free port (tests/support/redis_server.py), the `dex serve matching-engine` / `risk-engine`
processes it starts (each on a free port, with a unique `DEX_REPLICA_ID`, its JSON log lines
in a file under the test's tmp_path), a `RedisBus` and an HTTP client in the test process, and
every request the test appended to the risk shard's input stream.

Every wait is `eventually(what, check)` (tests/support/polling.py): poll a condition until a
deadline, failing with the last value seen and the tails of the service logs; it also fails at
once if a watched process died. Nothing waits a fixed time as a means of synchronisation.

The checks read the surviving logs (the matching shard's `dex:{me:0}:events` and the risk
shard's `dex:{risk:0}:log`, never trimmed here since market-data and persistence, whose
positions trimming waits for, do not run) and fold them in this process with fresh shard
writers, exactly as recovery does. One matching shard and one risk shard: every order flows
through a single stream, so the final books and balances do not depend on batching or timing
and can be compared with an uninterrupted in-process run (`tests.services.inproc.Cluster`).
Time stamps differ between runs, so runs are compared by time-free projections (book views,
balances, open orders); the running services are compared with the fold by state hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.exceptions

from dex.app.demo import DEMO_MARKETS, add_demo_markets
from dex.bus import Bus, Lease
from dex.bus.redis import RedisBus
from dex.core import events as ev
from dex.core.enums import OrderType, Side
from dex.matching.views import MarketView
from dex.risk import commands as rc
from dex.risk import events as rev
from dex.risk.ledger import Ledger
from dex.services.matching import MatchingShard
from dex.services.risk import RiskShard
from dex.wire import codec, layout
from tests.services.inproc import Cluster
from tests.support import polling
from tests.support.redis_server import RedisServer, free_port, have_redis_server

MATCHING = layout.MATCHING
RISK = layout.RISK
TTL_MS = 1000
SNAPSHOT_EVERY = 500
ADMIN_TOKEN = "fault-tests-admin-token"
DEADLINE = 60.0  # seconds any single wait may take before the test fails
POLL = 0.05  # seconds between two checks of a condition
TEST_LIMIT = 150.0  # seconds one test's body may take in all

MARKETS = tuple(s.market for s in DEMO_MARKETS)
IN = layout.risk_in(0)
TO = layout.risk_to(0, 0)
ME_LOG = layout.me_log(0)
RISK_LOG = layout.risk_log(0)
ME_TAG = layout.me_tag(0)
RISK_TAG = layout.risk_tag(0)

ACCOUNTS = ["0x" + f"{i:040x}" for i in range(0xA1, 0xA9)]
ETH, BTC, USDC = 10**9, 10**8, 10**6

# what a poll may meet while a process or Redis is (re)starting: recorded, then retried
TRANSIENT: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
)


# ---------------------------------------------------------------------- waiting


async def eventually(
    what: str,
    check: Callable[[], Any],
    *,
    timeout: float = DEADLINE,
    watch: Iterable[Service] = (),
) -> Any:
    """`tests.support.polling.eventually` as the rig waits: `check()` (sync or async) polled
    every POLL s for up to `timeout` s, the errors of a restarting process or Redis retried.

    Fails at once if a process in `watch` is no longer running, and shows the tails of the
    watched services' logs with a timeout."""
    watched = list(watch)

    def died() -> str | None:
        for svc in watched:
            if not svc.alive:
                return f"{svc.name} exited ({svc.returncode})\n{svc.tail()}"
        return None

    return await polling.eventually(
        what,
        check,
        timeout=timeout,
        interval=POLL,
        retry_on=TRANSIENT,
        abort=died,
        detail=lambda: "\n".join(s.tail() for s in watched),
    )


# ---------------------------------------------------------------------- service processes


class Service:
    """One `dex serve <kind>` process: its port, replica id, log file and signals."""

    def __init__(self, kind: str, name: str, redis_url: str, workdir: Path, **env: str) -> None:
        self.kind = kind
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DEX_")}
        self.env = {
            **clean,
            "DEX_REDIS_URL": redis_url,
            "DEX_PORT": str(self.port),
            "DEX_REPLICA_ID": name,
            "DEX_MATCHING_SHARDS": "1",
            "DEX_RISK_SHARDS": "1",
            "DEX_LEASE_TTL_MS": str(TTL_MS),
            "DEX_SNAPSHOT_EVERY": str(SNAPSHOT_EVERY),
            "DEX_LOG_LEVEL": "info",
            "DEX_ADMIN_TOKEN": ADMIN_TOKEN,
            "DEX_DATA_DIR": str(workdir / "data"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dex.cli", "serve", self.kind],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def pause(self) -> None:
        assert self.alive, self.name
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.alive, self.name
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """`kill -9`, and reap it."""
        assert self.proc is not None and self.alive, self.name
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def shutdown(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (after SIGCONT, in case it is stopped); SIGKILL if it outstays `timeout`."""
        if self.proc is None or not self.alive:
            return self.returncode
        os.kill(self.pid, signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    # --- what it logged (one JSON object per line)

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(errors="replace")
        lines = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logged(self, *events: str, since: int = 0) -> list[dict[str, Any]]:
        """The log records named one of `events`, from record number `since` on."""
        return [r for r in self.log()[since:] if r.get("event") in events]

    def tail(self, lines: int = 25) -> str:
        if not self.log_path.exists():
            return f"--- {self.name}: no log"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} (pid {self.proc.pid if self.proc else '-'}):\n" + "\n".join(text)

    # --- HTTP

    async def readyz(self, http: httpx.AsyncClient) -> int:
        return (await http.get(self.url + "/readyz")).status_code

    async def ready(self, http: httpx.AsyncClient) -> bool:
        return await self.readyz(http) == 200

    async def metric(self, http: httpx.AsyncClient, name: str) -> float:
        """The value of an unlabelled sample on `/metrics` (0 if absent)."""
        text = (await http.get(self.url + "/metrics")).text
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        return 0.0

    async def shards(self, http: httpx.AsyncClient) -> dict[str, Any]:
        r = await http.get(self.url + "/internal/shards", params={"hash": "true"})
        assert r.status_code == 200, (self.name, r.status_code, r.text)
        shards: dict[str, Any] = r.json()["shards"]
        return shards

    async def snapshot_now(self, http: httpx.AsyncClient) -> dict[str, int]:
        r = await http.post(
            self.url + "/admin/snapshot", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert r.status_code == 200, (self.name, r.status_code, r.text)
        done: dict[str, int] = r.json()["snapshots"]
        return done


# ---------------------------------------------------------------------- one test's world


class Rig:
    """A private Redis, the services of one test, and what the test sent."""

    def __init__(self, tmp_path: Path) -> None:
        if not have_redis_server():
            pytest.skip("`redis-server` is not on PATH")
        self.dir = tmp_path
        (tmp_path / "redis").mkdir()
        self.redis = RedisServer.start(tmp_path / "redis")
        self.services: list[Service] = []
        self.bus: RedisBus = RedisBus(self.redis.url)
        self.http: httpx.AsyncClient | None = None
        self.submitted: dict[int, Any] = {}  # log_seq on the request stream -> command
        self.sent: list[Any] = []  # every command appended, in order

    def service(self, kind: str, name: str, **env: str) -> Service:
        """Start `dex serve <kind>` as replica `name` (`env`: extra DEX_* settings)."""
        svc = Service(kind, name, self.redis.url, self.dir, **env).start()
        self.services.append(svc)
        return svc

    def by_owner(self, owner: str) -> Service:
        return next(s for s in self.services if s.name == owner)

    def run(self, body: Callable[[Rig], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            self.http = httpx.AsyncClient(timeout=5)
            try:
                await body(self)
            finally:
                await self.http.aclose()
                await self.bus.close()

        asyncio.run(asyncio.wait_for(main(), TEST_LIMIT))

    def close(self) -> None:
        for svc in self.services:
            svc.shutdown()
        self.redis.cleanup()

    async def new_bus(self) -> None:
        """Drop the connections of a Redis that went away; the next call reconnects."""
        await self.bus.close()
        self.bus = RedisBus(self.redis.url)

    # --- set-up and traffic

    async def wait_ready(self, *services: Service) -> None:
        assert self.http is not None
        for svc in services:
            await eventually(f"{svc.name} ready", lambda s=svc: s.ready(self.http), watch=[svc])

    async def holder(self, tag: str) -> Lease | None:
        found = [lease for lease in await self.bus.leases(tag) if lease.name == tag]
        return found[0] if found else None

    async def wait_holder(self, tag: str, owner: str, above_epoch: int = 0) -> Lease:
        async def check() -> Lease | None:
            lease = await self.holder(tag)
            if lease is not None and lease.owner == owner and lease.epoch > above_epoch:
                return lease
            return None

        held: Lease = await eventually(
            f"{owner} holding {tag} above epoch {above_epoch}", check, watch=[self.by_owner(owner)]
        )
        return held

    async def setup(self) -> None:
        assert await add_demo_markets(self.bus)

    async def submit(self, cmds: list[Any], chunk: int = 250) -> list[int]:
        """Append requests to the risk shard's input; returns their log_seqs."""
        seqs: list[int] = []
        for i in range(0, len(cmds), chunk):
            part = cmds[i : i + chunk]
            last = await self.bus.append(IN, [codec.encode(c) for c in part])
            for k, cmd in enumerate(part):
                seq = last - len(part) + 1 + k
                self.submitted[seq] = cmd
                seqs.append(seq)
            self.sent += part
        return seqs

    async def settled(self) -> bool:
        return await settled(self.bus)

    async def settle(self, *, timeout: float = DEADLINE) -> None:
        await eventually(
            "every request and every forwarded order applied",
            lambda: settled(self.bus),
            timeout=timeout,
            watch=[s for s in self.services if s.alive],
        )


# ---------------------------------------------------------------------- load


def deposits() -> list[rc.Deposit]:
    out = []
    for a in ACCOUNTS:
        for asset, amount in (("ETH", 100 * ETH), ("BTC", 10 * BTC), ("USDC", 10**7 * USDC)):
            out.append(
                rc.Deposit(account=a, asset=asset, amount=amount, tx_id=f"faucet:{len(out) + 1}")
            )
    return out


def orders(n: int, tag: str, seed: int) -> list[rc.Place | rc.Cancel]:
    """`n` requests: limit orders on both markets around one price (many cross, many rest)
    and, every tenth, a cancel by client order id of an earlier order of the batch."""
    rnd = random.Random(seed)
    out: list[rc.Place | rc.Cancel] = []
    placed: list[tuple[str, str, str]] = []
    for i in range(n):
        if i % 10 == 9:
            account, market, cid = placed[rnd.randrange(len(placed))]
            out.append(rc.Cancel(market=market, account=account, client_order_id=cid))
            continue
        account = ACCOUNTS[rnd.randrange(len(ACCOUNTS))]
        side = Side.BUY if rnd.random() < 0.5 else Side.SELL
        if rnd.random() < 0.75:
            market, price = "ETH-USDC", 200_000 + 5 * rnd.randrange(-40, 41)
            size = rnd.randrange(500, 3000)  # lots of 0.0001 ETH
        else:
            market, price = "BTC-USDC", 600_000 + 10 * rnd.randrange(-40, 41)
            size = rnd.randrange(50, 300)  # lots of 0.00001 BTC
        cid = f"{tag}-{i}"
        out.append(
            rc.Place(
                market=market,
                account=account,
                side=side,
                type=OrderType.LIMIT,
                price=price,
                size=size,
                client_order_id=cid,
            )
        )
        placed.append((account, market, cid))
    return out


# ---------------------------------------------------------------------- reading the logs


async def last_entry_pos(bus: Bus, stream: str, decode: Callable[[bytes], Any]) -> dict[str, int]:
    """The input positions recorded in a shard log's last entry ({} if the log is empty)."""
    last = await bus.last(stream)
    if not last:
        return {}
    got = await bus.read(stream, last - 1, limit=1)
    return dict(decode(got[0][1]).pos)


async def settled(bus: Bus) -> bool:
    """Every request applied by risk, every forwarded command applied by matching, every
    matching entry applied by risk. Positions are read before the streams' ends, so a True
    answer describes one quiet moment."""
    risk_pos = await last_entry_pos(bus, RISK_LOG, codec.decode_risk_entry)
    me_pos = await last_entry_pos(bus, ME_LOG, codec.decode_match_entry)
    return (
        risk_pos.get(IN, 0) == await bus.last(IN)
        and me_pos.get(TO, 0) == await bus.last(TO)
        and risk_pos.get(ME_LOG, 0) == await bus.last(ME_LOG)
    )


async def read_log(bus: Bus, stream: str, decode: Callable[[bytes], Any]) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    after = 0
    while got := await bus.read(stream, after, limit=1000):
        out += [(seq, decode(data)) for seq, data in got]
        after = got[-1][0]
    return out


@dataclass
class Logs:
    risk: list[tuple[int, codec.RiskEntry]]
    me: list[tuple[int, codec.MatchEntry]]

    @classmethod
    async def read(cls, bus: Bus) -> Logs:
        return cls(
            await read_log(bus, RISK_LOG, codec.decode_risk_entry),
            await read_log(bus, ME_LOG, codec.decode_match_entry),
        )

    def risk_items(self) -> list[codec.RiskItem]:
        return [item for _, entry in self.risk for item in entry.items]

    def me_items(self) -> list[codec.MatchItem]:
        return [item for _, entry in self.me for item in entry.items]

    def requests(self) -> list[tuple[int, Any]]:
        """(log_seq, command without its stamp) of every request the risk log answered."""
        return [
            (item.input.log_seq, msgspec.structs.replace(item.cmd, ts=0))
            for item in self.risk_items()
            if item.input.stream == IN and item.cmd is not None
        ]


def _risk_uses(event: ev.Event) -> bool:
    """Whether risk shard 0 of 1 logs a matching event (as `RiskShard._own` decides)."""
    if type(event) in (ev.Trade, ev.MarketStatusChanged):
        return True
    oid = getattr(event, "order_id", None)
    return oid is not None and oid >> 40 == 0


TERMINAL = (ev.Filled, ev.Cancelled, ev.Expired, ev.Rejected)


@dataclass
class Facts:
    requests: int
    accepted: int
    trades: int


def check_exactly_once(
    logs: Logs,
    submitted: dict[int, Any],
    last: dict[str, int],
    fold_me: MatchingShard,
    *,
    must_answer: Iterable[int] | None = None,
) -> Facts:
    """The exactly-once checks on the surviving logs (`last`: each stream's last log_seq).

    - every request in the risk log is answered once, and is the command sent at that log_seq;
      every request in `must_answer` (default: all submitted) is answered;
    - risk applied every matching entry once (each event it uses, once) and nothing else;
    - matching applied every forwarded entry once and in order, with no gap;
    - each market's public `seq` runs 1, 2, 3, ... with no gap and no duplicate;
    - every order risk accepted has exactly one `accepted` or `rejected` from matching, by
      order id and by (account, client order id), and nothing else has one;
    - an order has at most one terminal event, and it is open in the final book iff it has none.
    """
    answered = Counter(seq for seq, _ in logs.requests())
    dup = {seq: n for seq, n in answered.items() if n != 1}
    assert not dup, f"requests answered more than once: {dup}"
    for seq, cmd in logs.requests():
        assert submitted.get(seq) == cmd, f"request {seq} in the risk log is not what was sent"
    wanted = set(submitted if must_answer is None else must_answer)
    missing = sorted(wanted - set(answered))
    assert not missing, f"{len(missing)} requests without an answer, e.g. {missing[:10]}"
    assert sorted(answered) == list(range(1, last[IN] + 1)), "answers are not 1..last request"

    # risk's reading of the matching log: each entry's used events, once, nothing else
    used = {
        seq: sum(map(_risk_uses, (e for i in entry.items for e in i.events)))
        for seq, entry in logs.me
    }
    got = Counter(item.input.log_seq for item in logs.risk_items() if item.input.stream == ME_LOG)
    assert {s: n for s, n in got.items()} == {s: n for s, n in used.items() if n}, (
        "risk did not apply each matching event exactly once"
    )
    for name, entries in (("risk", logs.risk), ("matching", logs.me)):
        assert [seq for seq, _ in entries] == list(range(1, len(entries) + 1)), name
        for stream in {s for _, e in entries for s in e.pos}:
            p = [e.pos.get(stream, 0) for _, e in entries]
            assert p == sorted(p), f"{name} log: position on {stream} went back"

    # matching's reading of risk's orders: 1, 2, 3, ... once each
    fwd = [i.input.log_seq for i in logs.me_items() if i.input.stream == TO]
    assert fwd == list(range(1, last[TO] + 1)), "forwarded entries not applied once, in order"
    admin = [i.input.log_seq for i in logs.me_items() if i.input.stream == layout.ADMIN_STREAM]
    assert admin == list(range(1, len(admin) + 1)), "admin entries not applied once, in order"

    events = [e for i in logs.me_items() for e in i.events]
    seqs: dict[str, list[int]] = {}
    for e in events:
        seqs.setdefault(e.market, []).append(e.seq)
    for market, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), f"market {market!r}: seq has a gap or duplicate"

    accepted = [
        (e.order_id, e.account, e.client_order_id)
        for i in logs.risk_items()
        for e in i.events
        if isinstance(e, rev.OrderAcceptedForMatching)
    ]
    assert len({a[0] for a in accepted}) == len(accepted), "risk accepted an order id twice"
    outcomes = [e for e in events if isinstance(e, (ev.Accepted, ev.Rejected))]
    by_id = Counter(e.order_id for e in outcomes)
    by_cid = Counter((e.account, e.client_order_id) for e in outcomes)
    assert by_id == Counter(a[0] for a in accepted), "outcomes by order id are not one each"
    assert by_cid == Counter((a[1], a[2]) for a in accepted), "outcomes by client id not one each"

    terminal = Counter(e.order_id for e in events if isinstance(e, TERMINAL))
    assert not [o for o, n in terminal.items() if n != 1], "an order ended twice"
    open_ids = {
        o.order_id
        for market in MARKETS
        for side in (fold_me.engine.view(market).bids, fold_me.engine.view(market).asks)
        for level in side
        for o in level.orders
    }
    for oid, _, _ in accepted:
        assert (oid in open_ids) != (oid in terminal), f"order {oid}: open and ended, or neither"
    return Facts(len(answered), len(accepted), sum(type(e) is ev.Trade for e in events))


async def stream_lasts(bus: Bus) -> dict[str, int]:
    return {s: await bus.last(s) for s in (IN, TO, ME_LOG, RISK_LOG)}


# ---------------------------------------------------------------------- folding


class _WithoutSnapshots:
    """A read-only view of a bus that hides snapshots, so recovery folds the whole log."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def get_snapshot(self, name: str) -> None:
        return None


async def fold(bus: Bus, *, snapshots: bool = True) -> tuple[MatchingShard, RiskShard]:
    """The state of the log as recovery rebuilds it (it only reads: the lease is a dummy)."""
    source: Any = bus if snapshots else _WithoutSnapshots(bus)
    me = MatchingShard(source, 0, matching_shards=1, risk_shards=1)
    risk = RiskShard(source, 0, matching_shards=1, risk_shards=1)
    for w in (me, risk):
        w.lease = Lease(w.tag, "fault-test-fold", 0)
        await w.recover()
    return me, risk


async def reference(cmds: list[Any]) -> Cluster:
    """The uninterrupted in-process run of the same requests, run until it is quiet."""
    c = Cluster(matching_shards=1, risk_shards=1)
    await c.start()
    await c.setup_markets()
    for cmd in cmds:
        await c.send(cmd.account, cmd)
    for _ in range(10_000):
        if await settled(c.bus):
            return c
        for w in c.workers:
            await w.step(0)
    raise AssertionError("the reference run did not settle")


def books(me: MatchingShard) -> dict[str, MarketView]:
    """The books as the engine shows them: levels and orders in priority, no time stamps."""
    return {m: me.engine.view(m) for m in MARKETS}


def ledger_state(ledger: Ledger) -> dict[str, Any]:
    """Balances of every account, fee accounts and open orders, without time stamps."""
    return {
        "balances": {
            addr: {asset: tuple(cell) for asset, cell in sorted(acct.bal.items())}
            for addr, acct in sorted(ledger.accounts.items())
        },
        "fees": dict(sorted(ledger.fees.items())),
        "open": {
            oid: (
                o.account.addr,
                o.market.symbol,
                o.cid,
                o.is_buy,
                o.price,
                o.size,
                o.filled,
                o.held,
                o.pending,
                str(o.status),
            )
            for oid, o in sorted(ledger.orders.items())
        },
        "order_seq": ledger.order_seq,
    }


async def check_fold(bus: Bus, cmds: list[Any]) -> tuple[MatchingShard, RiskShard]:
    """Fold the logs (from the snapshots and from scratch: same state), and compare the books
    and balances with an uninterrupted run of `cmds`."""
    me, risk = await fold(bus)
    me_all, risk_all = await fold(bus, snapshots=False)
    assert me.state_hash() == me_all.state_hash(), "matching: snapshot + log != whole log"
    assert risk.state_hash() == risk_all.state_hash(), "risk: snapshot + log != whole log"
    ref = await reference(cmds)
    assert books(me) == books(ref.me[0]), "books differ from the uninterrupted run"
    assert ledger_state(risk.ledger) == ledger_state(ref.risk[0].ledger), (
        "balances or open orders differ from the uninterrupted run"
    )
    return me, risk


async def check_services(rig: Rig, me: MatchingShard, risk: RiskShard) -> None:
    """What the running holders have in memory is the fold of the log: each holder's
    `GET /internal/shards?hash=true` (owner, epoch, log_seq, state hash), and for matching also
    `POST /admin/snapshot`, which stores the running engine's snapshot at its log_seq."""
    assert rig.http is not None
    for tag, log, fold in ((RISK_TAG, RISK_LOG, risk), (ME_TAG, ME_LOG, me)):
        lease = await rig.holder(tag)
        assert lease is not None
        info = (await rig.by_owner(lease.owner).shards(rig.http))[tag]
        assert (info["owner"], info["epoch"]) == (lease.owner, lease.epoch)
        assert info["log_seq"] == await rig.bus.last(log)
        assert info["state_hash"] == fold.state_hash(), f"{tag}: service state != fold of its log"
    lease = await rig.holder(ME_TAG)
    assert lease is not None
    done = await rig.by_owner(lease.owner).snapshot_now(rig.http)
    assert done == {ME_TAG: await rig.bus.last(ME_LOG)}
    snap = await rig.bus.get_snapshot(layout.snapshot_name(ME_TAG))
    assert snap is not None and snap[0] == done[ME_TAG]
    core = codec.decode_snapshot(snap[1]).core
    assert hashlib.sha256(core).hexdigest() == me.state_hash(), "matching service != fold"


def conservation(risk: RiskShard, cmds: list[Any]) -> None:
    """For each asset: accounts' available + locked + fee accounts = deposits - withdrawals."""
    ledger = risk.ledger
    deposited: Counter[str] = Counter()
    for cmd in cmds:
        if isinstance(cmd, rc.Deposit):
            deposited[cmd.asset] += cmd.amount
        assert not isinstance(cmd, rc.Withdraw)
    held: Counter[str] = Counter()
    for acct in ledger.accounts.values():
        for asset, (available, locked) in acct.bal.items():
            held[asset] += available + locked
    for asset, amount in ledger.fees.items():
        held[asset] += amount
    assert +held == +deposited, (held, deposited)
    assert all(v == 0 for v in ledger.fees.values()), "no fees are set, yet a fee was charged"
