"""The shard writers and replicas in one process over a MemoryBus: recovery checks the log,
bad entries change nothing, a trimmed input stops a reader, a lost lease stops a writer,
backpressure, GTD ticks, and lease takeover between replicas."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dex.bus import Bus, FencedError, MemoryBus
from dex.core import commands as mc
from dex.core.enums import TimeInForce
from dex.core.events import Accepted, Expired, Trade
from dex.matching import Engine
from dex.risk import commands as rc
from dex.runtime.health import Health
from dex.runtime.logging import get_logger
from dex.runtime.metrics import ServiceMetrics
from dex.services import shard as shard_module
from dex.services.matching import MatchingShard
from dex.services.replica import ShardReplica
from dex.services.shard import SNAPSHOT_STATE_SHARE, Divergence, ShardWorker
from dex.wire import codec, layout
from tests.bus.contract import aio
from tests.services.inproc import ACCOUNTS, ETH, Cluster, M, R, open_cluster, place, trading
from tests.support.polling import eventually

WAIT = 10.0  # seconds a replica may take to reach a state the test waits for


@aio
async def test_orders_flow_and_every_request_gets_one_answer() -> None:
    c = await open_cluster()
    answered: dict[tuple[str, int], int] = {}
    for r in range(R):
        for _, data in await c.bus.read(layout.risk_log(r), 0, limit=10**6):
            for item in codec.decode_risk_entry(data).items:
                if item.cmd is not None and item.input.stream.endswith(":in"):
                    key = (item.input.stream, item.input.log_seq)
                    answered[key] = answered.get(key, 0) + 1
    assert sorted(answered) == sorted(c.requests)
    assert set(answered.values()) == {1}
    events = []
    seqs: dict[tuple[int, str], list[int]] = {}  # (shard, market): "" is each shard's own
    for m in range(M):
        shard_events = await c.log_events(layout.me_log(m))
        for e in shard_events:
            seqs.setdefault((m, e.market), []).append(e.seq)
        events += shard_events
    assert any(isinstance(e, Trade) for e in events)
    accepted = [e.order.client_order_id for e in events if isinstance(e, Accepted)]
    assert len(accepted) == len(set(accepted)) == 40
    for key, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), key


@aio
async def test_recovery_from_log_and_from_snapshot_gives_the_same_state() -> None:
    c = await open_cluster(snapshot_every=7)
    before = c.hashes()
    # a fresh incarnation of every shard, recovering from what is on the bus
    again = Cluster(c.bus)
    await again.start()
    assert again.hashes() == before
    for w in again.workers:
        await w.take_snapshot()
    third = Cluster(c.bus)
    await third.start()
    assert third.hashes() == before
    assert any(w.snap_seq for w in third.workers)


@aio
async def test_a_tampered_log_is_a_divergence() -> None:
    c = await open_cluster(trade=False)
    await trading(c, 10)
    stream = layout.me_log(0)
    entries = await c.bus.read(stream, 0, limit=10**6)
    forged = None
    for seq, data in entries:
        entry = codec.decode_match_entry(data)
        for i, item in enumerate(entry.items):
            trades = [e for e in item.events if isinstance(e, Trade)]
            if trades and forged is None:
                fake = [
                    e
                    if not isinstance(e, Trade)
                    else e.__class__(
                        *[
                            getattr(e, f) if f != "price" else e.price + 1
                            for f in e.__struct_fields__
                        ]
                    )
                    for e in item.events
                ]
                items = list(entry.items)
                items[i] = codec.MatchItem(item.input, item.cmd, fake, item.error)
                forged = (seq, codec.encode(codec.MatchEntry(entry.pos, items)))
    assert forged is not None
    bus2 = MemoryBus()
    for seq, data in entries:
        await bus2.append(stream, [forged[1] if seq == forged[0] else data])
    w = MatchingShard(bus2, 0, matching_shards=M, risk_shards=R)
    w.lease = await bus2.acquire(w.tag, "t", 60)
    with pytest.raises(Divergence, match=f"log entry {forged[0]}"):
        await w.recover()
    await bus2.release(w.lease)

    # a replica that finds it: the shard stops, not ready, with the alert metric set
    rep = _replica(
        bus2, "r", 5.0, lambda m: MatchingShard(bus2, m, matching_shards=M, risk_shards=R)
    )
    await rep.start()
    rep.health.started = True
    await eventually("me:0 reported", lambda: "shard me:0" in rep.health.reasons(), timeout=WAIT)
    await eventually(
        "divergence", lambda: "divergence" in rep.health.reasons()["shard me:0"], timeout=WAIT
    )
    assert not rep.health.ready
    assert rep.m_divergence.labels("me:0")._value.get() == 1
    assert await bus2.last(stream) == len(entries)  # it wrote nothing
    await rep.stop()


@aio
async def test_bad_entries_are_reported_and_change_nothing() -> None:
    c = Cluster()
    reported: list[tuple[str, int, str]] = []
    for w in c.workers:
        w.on_bad_entry = lambda s, n, msg: reported.append((s, n, msg))
    await c.start()
    await c.setup_markets()
    await c.fund()
    await c.pump()
    before = c.hashes()
    await c.bus.append(layout.ADMIN_STREAM, [b"\x00garbage"])
    await c.bus.append(
        layout.risk_in(0), [b"not msgpack", codec.encode({"cmd": "launch_missiles"})]
    )
    await c.bus.append(layout.risk_to(0, 0), [codec.encode([1, {"cmd": "place"}])])
    await c.pump()
    assert c.hashes() == before
    streams = sorted({s for s, _, _ in reported})
    assert streams == sorted({layout.ADMIN_STREAM, layout.risk_in(0), layout.risk_to(0, 0)})
    assert all(msg.startswith("not a ") for _, _, msg in reported)
    # and the shards go on working
    a = ACCOUNTS[0]
    await c.send(a, place(a, "sell", 200_000, 1000))
    await c.pump()
    assert c.hashes() != before


@aio
async def test_a_refused_append_leaves_the_state_to_be_rebuilt() -> None:
    c = await open_cluster(fund=False, trade=False)
    await c.pump()
    w = c.me[0]
    assert w.lease is not None
    await c.bus.release(w.lease)
    thief = await c.bus.acquire(w.tag, "other", 60)
    assert thief is not None and thief.epoch > w.lease.epoch
    a = ACCOUNTS[0]
    await c.send(a, rc.Deposit(account=a, asset="ETH", amount=ETH, tx_id="faucet:1"))
    await c.send(a, place(a, "sell", 200_000, 1000))
    for r in c.risk:
        await r.step(0)
    last = await c.bus.last(layout.me_log(0))
    with pytest.raises(FencedError):
        for _ in range(3):
            await w.step(0)
    assert w.dirty
    assert await c.bus.last(layout.me_log(0)) == last


@aio
async def test_a_reader_whose_next_entry_was_trimmed_stops() -> None:
    c = await open_cluster(trade=False)
    await c.pump()
    a = next(x for x in ACCOUNTS if layout.shard_for(x, R) == 0)
    for i in range(3):
        await c.send(a, place(a, "sell", 200_000 + i, 1000))
    for r in c.risk:
        await r.step(0)
    to = layout.risk_to(0, layout.shard_for("ETH-USDC", M))
    await c.bus.trim(to, await c.bus.last(to))
    from dex.bus import TrimmedError

    with pytest.raises(TrimmedError):
        await c.me[layout.shard_for("ETH-USDC", M)].step(0)


@aio
async def test_gtd_expiry_on_an_idle_shard_is_a_logged_tick() -> None:
    now = [1_000_000_000_000]
    c = await open_cluster(clock_ns=lambda: now[0], trade=False)
    a = ACCOUNTS[0]
    await c.send(a, place(a, "sell", 200_000, 1000, tif=TimeInForce.GTD, expires_at=now[0] + 5_000))
    await c.pump()
    now[0] += 10_000
    await c.pump()
    m = layout.shard_for("ETH-USDC", M)
    events = await c.log_events(layout.me_log(m))
    assert any(isinstance(e, Expired) for e in events)
    entries = await c.bus.read(layout.me_log(m), 0, limit=1000)
    ticks = [
        i
        for _, d in entries
        for i in codec.decode_match_entry(d).items
        if isinstance(i.cmd, mc.Tick)
    ]
    assert len(ticks) == 1


@aio
async def test_backpressure_rejects_new_orders_while_matching_lags() -> None:
    c = await open_cluster(max_lag=3, trade=False)
    await c.pump()
    a = next(x for x in ACCOUNTS if layout.shard_for(x, R) == 0)
    for i in range(8):  # matching does not run: its input grows
        await c.send(a, place(a, "sell", 200_000 + i, 1000))
        await c.risk[0].step(0)
    events = await c.log_events(layout.risk_log(0))
    codes = [getattr(e, "code", None) for e in events]
    assert "market_unavailable" in [str(x) for x in codes if x is not None]
    await c.pump(10)  # matching catches up; backpressure lifts
    await c.send(a, place(a, "sell", 200_100, 1000))
    await c.pump()
    last = (await c.log_events(layout.risk_log(0)))[-1]
    assert type(last).__name__ == "OrderAcceptedForMatching"


@aio
async def test_backpressure_turns_on_above_the_lag_and_off_at_half_of_it() -> None:
    c = await open_cluster(max_lag=4, trade=False)
    await c.pump()
    r = c.risk[0]
    m = layout.shard_for("ETH-USDC", M)
    n = sum(layout.shard_for(s, M) == m for s in r.ledger.markets)  # markets on shard m

    def at_lag(lag: int) -> list[bool]:
        """Set matching shard m's lag behind this risk shard; the switches it logs."""
        r.to_applied[m] = r.to_last[m] - lag
        return [bool(i.cmd.on) for i in r._backpressure() if isinstance(i.cmd, rc.SetBackpressure)]

    assert at_lag(4) == []  # at the bound: still off
    assert r.ledger.markets["ETH-USDC"].backpressure is False
    assert at_lag(5) == [True] * n  # above it: on, for every market of the shard
    assert r.ledger.markets["ETH-USDC"].backpressure is True
    assert at_lag(4) == []  # still on at the full lag ...
    assert at_lag(3) == []  # ... and above half of it
    assert at_lag(2) == [False] * n  # off at half the lag
    assert r.ledger.markets["ETH-USDC"].backpressure is False
    assert at_lag(4) == []


def _replica(bus: Bus, owner: str, ttl: float, make: Callable[[int], ShardWorker]) -> ShardReplica:
    metrics = ServiceMetrics("matching-engine")
    return ShardReplica(
        bus,
        "matching-engine",
        M,
        make,
        owner=owner,
        ttl=ttl,
        max_shards=0,
        health=Health(metrics),
        metrics=metrics,
        log=get_logger(service="t"),
    )


@aio
async def test_replicas_spread_shards_and_take_over_a_dead_one() -> None:
    bus = MemoryBus()
    make = lambda m: MatchingShard(bus, m, matching_shards=M, risk_shards=R)  # noqa: E731
    a = _replica(bus, "a", 0.3, make)
    await a.start()
    await eventually("a holds every shard", lambda: len(a.workers) == M, timeout=WAIT)
    b = _replica(bus, "b", 0.3, make)
    await b.start()
    await eventually(
        "shards spread", lambda: len(a.workers) == 1 and len(b.workers) == 1, timeout=WAIT
    )
    dead = {w.tag: w.lease.epoch for w in a.workers.values() if w.lease}
    # "a" dies without a word: its leases expire and "b" takes its shard
    a.stopped.set()
    for t in list(a.tasks.values()):
        t.cancel()
    assert a._maintainer is not None and a._renewer is not None
    a._maintainer.cancel()
    a._renewer.cancel()
    await eventually("b took over", lambda: len(b.workers) == M, timeout=WAIT)
    for w in b.workers.values():
        assert w.lease is not None and w.lease.owner == "b"
        assert w.lease.epoch > dead.get(w.tag, 0)
    assert set(dead) <= {w.tag for w in b.workers.values()}
    await b.stop()
    assert await bus.leases("me:") == []


@aio
async def test_idle_audit_finds_holds_equal_to_the_engine_and_flags_a_difference() -> None:
    c = await open_cluster(trade=False)
    await trading(c, 30)
    for w in c.me:
        await w.take_snapshot()
    total = 0
    for r in c.risk:
        checked, differ = await r.audit_idle()
        assert "ETH-USDC" in checked and differ == {}
        total += len(r.open_orders("ETH-USDC"))
    assert total > 0  # there are resting orders to compare
    # risk forgets an order the engine still has: the audit names the market
    r = next(r for r in c.risk if r.open_orders("ETH-USDC"))
    oid = next(iter(r.open_orders("ETH-USDC")))
    r.ledger.orders[oid].filled += 1
    _, differ = await r.audit_idle()
    assert set(differ) == {"ETH-USDC"} and str(oid) in differ["ETH-USDC"]


@aio
async def test_idle_audit_skips_a_shard_with_orders_in_flight() -> None:
    c = await open_cluster(trade=False)
    await c.pump()
    for w in c.me:
        await w.take_snapshot()
    a = next(x for x in ACCOUNTS if layout.shard_for(x, R) == 0)
    await c.send(a, place(a, "sell", 200_000, 1000))
    await c.risk[0].step(0)  # passed on, not yet matched
    checked, differ = await c.risk[0].audit_idle()
    assert "ETH-USDC" not in checked and differ == {}


@aio
async def test_a_state_replaced_by_recovery_is_freed_despite_gc_freeze() -> None:
    import gc
    import weakref

    bus = MemoryBus()
    rep = _replica(bus, "a", 5.0, lambda m: MatchingShard(bus, m, matching_shards=M, risk_shards=R))
    await rep.start()
    try:
        await eventually(
            "recovered", lambda: len(rep.workers) == M and not rep.workers[0].dirty, timeout=WAIT
        )
        w = rep.workers[0]
        old = weakref.ref(w.engine)
        w.dirty = True  # as after a bus restart: rebuild from the log
        await eventually(
            "recovered again", lambda: not w.dirty and w.engine is not old(), timeout=WAIT
        )
        assert old() is None  # the engine refers to itself (bound apply): only gc frees it
    finally:
        await rep.stop()
        gc.unfreeze()


@aio
async def test_an_input_that_makes_the_core_raise_halts_its_shard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure of the core is deterministic: rebuilding and retrying would fail the same way
    forever. The shard stops at that input (not ready, alert), as on a divergence; the
    other shard goes on."""
    real = Engine._add_market

    def poisoned(self: Engine, cmd: mc.AddMarket, src: mc.InputRef) -> list[Any]:
        if cmd.spec.market == "BTC-USDC":
            raise RuntimeError("the core cannot take this")
        return real(self, cmd, src)

    monkeypatch.setattr(Engine, "_add_market", poisoned)
    bus = MemoryBus()
    await Cluster(bus).setup_markets()
    poison = next(
        seq
        for seq, data in await bus.read(layout.ADMIN_STREAM, 0)
        if isinstance(cmd := codec.decode_admin(data), mc.AddMarket)
        and cmd.spec.market == "BTC-USDC"
    )
    make = lambda m: MatchingShard(bus, m, matching_shards=M, risk_shards=R)  # noqa: E731
    rep = _replica(bus, "a", 5.0, make)
    bad = layout.shard_for("BTC-USDC", M)
    tag = layout.me_tag(bad)
    good = layout.me_tag(1 - bad)
    await rep.start()
    try:
        await eventually(
            "the shard stopped", lambda: bad in rep.tasks and rep.tasks[bad].done(), timeout=WAIT
        )
        sample = rep.m_input_failed.labels(tag)._value.get()  # type: ignore[attr-defined]
        assert sample == 1
        reasons = rep.health.reasons()
        assert not rep.health.ready and f"shard {tag}" in reasons
        assert f"{layout.ADMIN_STREAM}#{poison}" in reasons[f"shard {tag}"]
        assert rep.m_recoveries.labels(tag)._value.get() <= 2  # type: ignore[attr-defined]
        assert await bus.last(layout.me_log(bad)) == 0 or all(
            codec.decode_match_entry(d).pos.get(layout.ADMIN_STREAM, 0) < poison
            for _, d in await bus.read(layout.me_log(bad), 0)
        )
        # the other shard is not held up
        ok = rep.workers[1 - bad]
        await eventually(
            "the other shard", lambda: ok.pos.get(layout.ADMIN_STREAM, 0) >= poison, timeout=WAIT
        )
        assert f"shard {good}" not in rep.health.reasons()
        # it keeps its lease, so no other replica takes the shard and fails the same way
        assert tag in {lease.name for lease in await bus.leases("me:") if lease.owner == "a"}
    finally:
        await rep.stop()


# ---------------------------------------------------------------- snapshots in the background


def _failures(w: ShardWorker) -> list[str]:
    """What `w` reports as failed snapshots (`on_snapshot_failed`), as they come."""
    out: list[str] = []
    w.on_snapshot_failed = lambda seq, why: out.append(why)
    return out


@aio
async def test_a_background_snapshot_holds_the_state_at_its_start_while_the_shard_goes_on() -> None:
    c = await open_cluster()
    w = c.me[0]
    at, state = w.last, w.engine.state_hash()
    await w.take_snapshot(background=True)
    assert w.snapshotting() and not w.snapshot_due()
    for i in range(10):  # the shard goes on while the child serializes
        a = ACCOUNTS[i % len(ACCOUNTS)]
        await c.send(a, place(a, "buy", 199_000 - i, 500, client_order_id=f"later{i}"))
    await c.pump()
    assert w.last > at
    await w.join_snapshot()
    snap = await c.bus.get_snapshot(w.snapshot)
    assert snap is not None and snap[0] == at == w.snap_seq
    copy = MatchingShard(c.bus, 0, matching_shards=M, risk_shards=R)
    copy.load_core(codec.decode_snapshot(snap[1]).core)
    assert copy.engine.state_hash() == state != w.engine.state_hash()
    again = Cluster(c.bus)  # snapshot + the log after it = the state now
    await again.start()
    assert again.hashes() == c.hashes()


@aio
async def test_a_background_snapshot_that_fails_is_reported_and_falls_due_again() -> None:
    c = await open_cluster(snapshot_every=5)
    w = c.me[1]
    failures: list[tuple[int, str]] = []
    w.on_snapshot_failed = lambda seq, why: failures.append((seq, why))
    before = await c.bus.get_snapshot(w.snapshot)
    assert w.lease is not None
    await w.take_snapshot(background=True)
    await c.bus.release(w.lease)  # lost before the bytes arrive: the store is fenced off
    await w.join_snapshot()
    assert failures and failures[0][0] == w.last and "FencedError" in failures[0][1]
    assert await c.bus.get_snapshot(w.snapshot) == before
    assert w.snapshot_due()


@aio
async def test_a_snapshot_child_that_dies_stores_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    c = await open_cluster(fund=False)
    w = c.risk[0]
    failures = _failures(w)

    def broken() -> bytes:
        raise MemoryError("no room")

    monkeypatch.setattr(w, "dump_core", broken)  # the forked child inherits it
    await w.take_snapshot(background=True)
    await w.join_snapshot()
    assert failures == ["RuntimeError: the snapshot process exited with 1"]
    assert await c.bus.get_snapshot(w.snapshot) is None


@aio
async def test_a_large_state_is_snapshotted_less_often_than_every_n_inputs() -> None:
    c = await open_cluster(snapshot_every=5)
    w = c.me[0]
    size = w.state_size()
    assert size == sum(len(m.orders) + len(m.stops) for m in w.engine.markets.values()) > 0
    need = math.ceil(size * SNAPSHOT_STATE_SHARE)
    assert need > 1, size
    w.snapshot_every = 1
    w.since_snapshot = need - 1
    assert not w.snapshot_due()  # every input would be due by snapshot_every alone
    w.since_snapshot = need
    assert w.snapshot_due()
    w.snapshot_every = need + 1  # and never more often than snapshot_every
    assert not w.snapshot_due()
    r = c.risk[0]
    led = r.ledger
    assert r.state_size() == len(led.orders) + len(led.closed) + len(led.accounts) > 0


@aio
async def test_a_snapshot_that_cannot_fork_is_taken_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = await open_cluster(fund=False)
    w = c.me[0]
    notes = _failures(w)

    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    await w.take_snapshot(background=True)
    assert not w.snapshotting()
    assert len(notes) == 1 and notes[0].startswith("cannot fork")
    snap = await c.bus.get_snapshot(w.snapshot)
    assert snap is not None and snap[0] == w.last == w.snap_seq


@aio
async def test_snapshots_without_fork_are_taken_in_place() -> None:
    c = await open_cluster(snapshot_fork=False)
    w = c.me[0]
    await w.take_snapshot(background=True)
    assert not w.snapshotting()
    snap = await c.bus.get_snapshot(w.snapshot)
    assert snap is not None and snap[0] == w.last == w.snap_seq


@aio
async def test_a_snapshot_child_that_hangs_is_killed_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = await open_cluster(fund=False)
    w = c.me[0]
    failures = _failures(w)

    def stuck() -> bytes:
        signal.pause()  # the child waits for a signal that only its kill brings
        return b""

    monkeypatch.setattr(w, "dump_core", stuck)
    w.snapshot_child_timeout = 0.5
    await w.take_snapshot(background=True)
    await w.join_snapshot()
    assert failures == ["RuntimeError: the snapshot process took over 0.5 s and was killed"]
    assert await c.bus.get_snapshot(w.snapshot) is None
    assert w.snapshot_due()  # falls due again


@aio
async def test_a_failed_background_snapshot_with_no_listener_is_raised_where_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = await open_cluster(fund=False)
    w = c.me[0]
    assert w.on_snapshot_failed is None

    def broken() -> bytes:
        raise MemoryError("no room")

    monkeypatch.setattr(w, "dump_core", broken)
    await w.take_snapshot(background=True)
    with pytest.raises(RuntimeError, match="exited with 1"):
        await w.join_snapshot()
    assert await c.bus.get_snapshot(w.snapshot) is None


@aio
async def test_a_snapshot_taken_while_another_thread_holds_a_lock_it_needs_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lock held by another thread at the moment of a fork stays held forever in the child
    (its copy of the lock has no thread to release it). Here a thread is busy under a lock
    that the snapshot needs, and lets go when the snapshot asks: a forked child would ask its
    own copy of the world, where nobody answers, and hang until it is killed."""
    c = await open_cluster(fund=False)
    w = c.me[0]
    failures = _failures(w)
    lock = threading.Lock()
    holding = threading.Event()
    asked = threading.Event()

    def busy() -> None:
        with lock:
            holding.set()
            asked.wait(30)  # busy under the lock until the snapshot asks for it

    real = w.dump_core

    def dump_core() -> bytes:
        asked.set()
        with lock:
            return real()

    monkeypatch.setattr(w, "dump_core", dump_core)
    w.snapshot_child_timeout = 5.0
    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(holding.wait, 10)
        started = time.monotonic()
        await w.take_snapshot(background=True)
        await w.join_snapshot()
        took = time.monotonic() - started
    finally:
        asked.set()
        await asyncio.to_thread(thread.join, 10)
    assert failures == [] and took < 5.0
    snap = await c.bus.get_snapshot(w.snapshot)
    assert snap is not None and snap[0] == w.last == w.snap_seq


@aio
async def test_a_shard_process_at_rest_runs_no_other_thread_so_its_snapshots_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dex serve` binds its HTTP port with `getaddrinfo` on the default executor, whose
    thread would stay for good and rule forking out; a replica makes the executor's threads
    end with their calls, so the process forks for its periodic snapshots."""
    loop = asyncio.get_running_loop()
    await loop.getaddrinfo("127.0.0.1", 0)
    assert shard_module.threads_besides_this() >= 1
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    bus = MemoryBus()
    rep = _replica(bus, "a", 5.0, lambda m: MatchingShard(bus, m, matching_shards=M, risk_shards=R))
    await rep.start()
    try:

        def at_rest() -> bool:  # recovered, and the executor's thread gone
            recovered = len(rep.workers) == M and not rep.workers[0].dirty
            return recovered and shard_module.threads_besides_this() == 0

        await eventually("the replica at rest", at_rest, timeout=WAIT)
        w = rep.workers[0]
        await w.take_snapshot(background=True)
        await w.join_snapshot()
        assert len(forks) == 1
        snap = await bus.get_snapshot(w.snapshot)
        assert snap is not None and snap[0] == w.snap_seq
        assert await loop.getaddrinfo("127.0.0.1", 0)  # the executor still serves calls ...
        await eventually(  # ... on threads that end with the call
            "the executor's thread gone again",
            lambda: shard_module.threads_besides_this() == 0,
            timeout=WAIT,
        )
    finally:
        await rep.stop()


@aio
async def test_leases_are_renewed_while_maintenance_work_is_held_up() -> None:
    """Renewals run on their own: maintenance (rebalancing, idle snapshots and audits) that
    takes longer than the lease TTL does not let a lease expire."""
    bus = MemoryBus()
    # a TTL long against a loaded machine's scheduling delays (renewals every TTL / 3), short
    # against the watch: with renewals held up by the maintenance, the leases expire in it
    rep = _replica(bus, "a", 1.0, lambda m: MatchingShard(bus, m, matching_shards=M, risk_shards=R))
    held_up = asyncio.Event()

    async def stuck() -> None:
        held_up.set()
        await asyncio.Event().wait()  # never done

    rep._idle_work = stuck  # type: ignore[method-assign]
    await rep.start()
    try:
        async with asyncio.timeout(10):
            await held_up.wait()
        leases = await bus.leases("me:")
        assert len(leases) == M
        loop = asyncio.get_running_loop()
        end = loop.time() + 3 * rep.ttl
        while loop.time() < end:  # alive (unexpired) all along, with the same epochs
            assert await bus.leases("me:") == leases
            await asyncio.sleep(0.02)  # the poll interval; the deadline bounds the watch
        assert sum(rep.m_lease_losses.labels(x.name)._value.get() for x in leases) == 0  # type: ignore[attr-defined]
    finally:
        await rep.stop()
