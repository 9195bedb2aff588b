"""The faults the distributed services must survive, with real processes and a real Redis.

Each test starts its own `redis-server --appendonly yes --appendfsync always` on a free port
and runs `dex serve matching-engine` / `dex serve risk-engine` processes against it (one
matching shard, one risk shard, lease TTL 1 s, a snapshot every 500 inputs), drives them by
appending requests to the risk shard's input stream, injects one fault, and then checks on the
surviving logs (see `harness.check_exactly_once`) that every request has exactly one answer,
every accepted order exactly one outcome, no market's `seq` has a gap or a duplicate, that the
logs fold to the same books and balances as an uninterrupted in-process run of the same
requests, that every asset is conserved (accounts' available + locked + fee accounts =
deposits), and that what the running services hold equals that fold.

1. `kill -9` of the matching replica holding the shard with >= 1,000 forwarded orders waiting:
   the standby (another pid) takes over with a higher epoch.
2. `kill -9` of the risk replica holding the shard with >= 1,000 requests waiting: the same.
3. SIGSTOP of the matching holder past its lease; the standby takes over and works; SIGCONT:
   the old holder's appends are refused, it writes nothing, and stays alive and ready.
4. Redis killed (-9) mid-traffic and restarted on its AOF: the services go not-ready, notice the
   new server, recover and go on without loss.
5. Redis restarted from a copy of its AOF taken seconds earlier, mid-traffic (acknowledged
   writes lost): the services notice, recover, and hold the fold of the surviving log.
6. Snapshots requested while the matching shard is busy (`POST /admin/snapshot`) are each the
   fold of the log at their log_seq; the holder is killed mid-traffic and the standby recovers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dex.bus import TrimmedError
from dex.services.matching import MatchingShard
from dex.wire import codec, layout
from tests.faults.harness import (
    IN,
    MATCHING,
    ME_LOG,
    ME_TAG,
    RISK,
    RISK_LOG,
    RISK_TAG,
    TO,
    Logs,
    Rig,
    check_exactly_once,
    check_fold,
    check_services,
    conservation,
    deposits,
    eventually,
    last_entry_pos,
    orders,
    stream_lasts,
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


async def _verify(rig: Rig) -> None:
    """Every check on a quiet system whose requests were all kept."""
    logs = await Logs.read(rig.bus)
    me, risk = await check_fold(rig.bus, rig.sent)
    facts = check_exactly_once(logs, rig.submitted, await stream_lasts(rig.bus), me)
    assert facts.requests == len(rig.sent) and facts.trades > 0
    conservation(risk, rig.sent)
    await check_services(rig, me, risk)


def test_kill_9_of_the_matching_holder_with_a_backlog(rig: Rig) -> None:
    async def body(rig: Rig) -> None:
        await rig.setup()
        risk = rig.service(RISK, "risk-a")
        a = rig.service(MATCHING, "me-a")
        await rig.wait_ready(risk, a)
        first = await rig.wait_holder(ME_TAG, "me-a")
        b = rig.service(MATCHING, "me-b")  # the standby
        await rig.wait_ready(b)
        await rig.submit(deposits() + orders(300, "warm", seed=1))
        await rig.settle()
        assert (await rig.holder(ME_TAG)) == first
        # freeze the matching tier (the standby too, so it cannot take over early), load it
        b.pause()
        a.pause()
        me_last = await rig.bus.last(ME_LOG)
        await rig.submit(orders(1500, "load", seed=2))

        async def backlog() -> int:
            waiting = await rig.bus.last(TO) - (await rig.bus.positions(TO)).get(ME_TAG, 0)
            return waiting if waiting >= 1000 else 0

        await eventually("1,000 orders waiting for matching", backlog, watch=[risk])
        assert await rig.bus.last(ME_LOG) == me_last, "a stopped replica wrote"
        a.kill()
        b.resume()
        taken = await rig.wait_holder(ME_TAG, "me-b", above_epoch=first.epoch)
        assert b.pid != a.pid and taken.epoch > first.epoch
        await rig.settle()
        recovered = b.logged("shard_recovered")
        assert recovered and recovered[-1]["log_seq"] == me_last
        await _verify(rig)

    rig.run(body)


def test_kill_9_of_the_risk_holder_with_a_backlog(rig: Rig) -> None:
    async def body(rig: Rig) -> None:
        await rig.setup()
        me = rig.service(MATCHING, "me-a")
        a = rig.service(RISK, "risk-a")
        await rig.wait_ready(me, a)
        first = await rig.wait_holder(RISK_TAG, "risk-a")
        b = rig.service(RISK, "risk-b")
        await rig.wait_ready(b)
        await rig.submit(deposits() + orders(300, "warm", seed=3))
        await rig.settle()
        b.pause()
        a.pause()
        risk_last = await rig.bus.last(RISK_LOG)
        await rig.submit(orders(1500, "load", seed=4))
        applied = (await last_entry_pos(rig.bus, RISK_LOG, codec.decode_risk_entry))[IN]
        assert await rig.bus.last(IN) - applied >= 1000
        assert await rig.bus.last(RISK_LOG) == risk_last, "a stopped replica wrote"
        a.kill()
        b.resume()
        taken = await rig.wait_holder(RISK_TAG, "risk-b", above_epoch=first.epoch)
        assert b.pid != a.pid and taken.epoch > first.epoch
        await rig.settle()
        recovered = b.logged("shard_recovered")
        assert recovered and recovered[-1]["log_seq"] == risk_last
        await _verify(rig)

    rig.run(body)


@pytest.mark.parametrize("trim", [False, True], ids=["input-kept", "input-trimmed"])
def test_a_replica_stopped_past_its_lease_is_refused_and_writes_nothing(
    rig: Rig, trim: bool
) -> None:
    """input-kept: risk never snapshots, so never trims the forwarded stream, and the old
    holder's next input is still there when it resumes: it gets as far as appending.
    input-trimmed: risk snapshots often and has trimmed what the new holder read, so the old
    holder's next input is gone when it resumes (it must not stay stuck not-ready)."""

    async def body(rig: Rig) -> None:
        assert rig.http is not None
        await rig.setup()
        risk = rig.service(RISK, "risk-a", DEX_SNAPSHOT_EVERY="50" if trim else "1000000")
        a = rig.service(MATCHING, "me-a")
        await rig.wait_ready(risk, a)
        first = await rig.wait_holder(ME_TAG, "me-a")
        b = rig.service(MATCHING, "me-b")
        await rig.wait_ready(b)
        await rig.submit(deposits() + orders(300, "warm", seed=5))
        await rig.settle()
        a.pause()
        a_pos = (await last_entry_pos(rig.bus, ME_LOG, codec.decode_match_entry))[TO]
        taken = await rig.wait_holder(ME_TAG, "me-b", above_epoch=first.epoch)
        await rig.submit(orders(400, "while-stopped", seed=6))
        await rig.settle()

        async def next_input_gone() -> bool:
            try:
                await rig.bus.read(TO, a_pos, limit=1)
            except TrimmedError:
                return True
            return False

        if trim:
            await eventually("risk to trim what me-a would read next", next_input_gone)
        else:
            assert not await next_input_gone()
        before = await rig.bus.read(ME_LOG, 0, limit=10**6)
        snapshot = await rig.bus.get_snapshot(layout.snapshot_name(ME_TAG))
        mark = len(a.log())
        a.resume()
        # the old holder finds out: its append is refused, or its lease is gone at renewal
        await eventually(
            "me-a to find its lease gone",
            lambda: a.logged("append_refused", "lease_lost", since=mark),
            watch=[a, b],
        )
        await rig.wait_ready(a)
        assert a.logged("shard_acquired", since=mark) == []
        assert await a.metric(rig.http, "dex_matching_engine_shards_held_number") == 0
        assert await rig.bus.read(ME_LOG, 0, limit=10**6) == before, "the old holder wrote"
        assert await rig.bus.get_snapshot(layout.snapshot_name(ME_TAG)) == snapshot
        assert await rig.holder(ME_TAG) == taken
        await rig.submit(orders(300, "after", seed=7))
        await rig.settle()
        assert await rig.holder(ME_TAG) == taken
        await _verify(rig)

    rig.run(body)


def test_redis_restart_makes_services_not_ready_then_they_resume(rig: Rig) -> None:
    async def body(rig: Rig) -> None:
        assert rig.http is not None
        await rig.setup()
        me = rig.service(MATCHING, "me-a")
        risk = rig.service(RISK, "risk-a")
        await rig.wait_ready(me, risk)
        await rig.submit(deposits() + orders(300, "warm", seed=8))
        await rig.settle()
        start = (await last_entry_pos(rig.bus, ME_LOG, codec.decode_match_entry))[TO]
        load = orders(2000, "mid", seed=9)
        await rig.submit(load[:1500], chunk=1500)

        async def matching_busy() -> bool:
            pos = await last_entry_pos(rig.bus, ME_LOG, codec.decode_match_entry)
            return pos[TO] > start

        await eventually("matching working on the new orders", matching_busy, watch=[me, risk])
        await rig.submit(load[1500:], chunk=500)
        assert not await rig.settled()
        # kill -9 mid-traffic: with appendfsync always, no acknowledged write is lost
        rig.redis.kill()

        async def both_not_ready() -> bool:
            return await me.readyz(rig.http) == 503 and await risk.readyz(rig.http) == 503

        await eventually("both services not ready", both_not_ready, watch=[me, risk])
        rig.redis.restart()
        await rig.new_bus()
        await rig.wait_ready(me, risk)
        for svc, metric in (
            (me, "dex_matching_engine_bus_restarts_total"),
            (risk, "dex_risk_engine_bus_restarts_total"),
        ):
            await eventually(
                f"{svc.name} to count the restart",
                lambda s=svc, m=metric: s.metric(rig.http, m),
                watch=[svc],
            )
            assert svc.logged("bus_restarted")
        await rig.submit(orders(300, "after", seed=10))
        await rig.settle()
        await rig.wait_ready(me, risk)
        await _verify(rig)

    rig.run(body)


def test_redis_restarted_from_an_older_aof_is_followed(rig: Rig) -> None:
    async def body(rig: Rig) -> None:
        assert rig.http is not None
        await rig.setup()
        me = rig.service(MATCHING, "me-a")
        risk = rig.service(RISK, "risk-a")
        await rig.wait_ready(me, risk)
        await rig.submit(deposits() + orders(300, "warm", seed=11))
        await rig.settle()
        load = orders(1000, "mid", seed=12)
        await rig.submit(load[:400], chunk=100)
        assert not await rig.settled()
        copy = rig.redis.snapshot_aof()  # while the services are busy with those orders
        await rig.submit(load[400:], chunk=100)
        await rig.settle()
        before = await stream_lasts(rig.bus)
        rig.redis.restart(from_aof=copy)
        await rig.new_bus()
        after = await stream_lasts(rig.bus)
        assert after[IN] < before[IN] and after[RISK_LOG] < before[RISK_LOG], (before, after)
        await eventually(
            "both services to notice the new server",
            lambda: me.logged("bus_restarted") and risk.logged("bus_restarted"),
            watch=[me, risk],
        )
        await rig.wait_ready(me, risk)
        more = await rig.submit(orders(300, "after", seed=13))
        await rig.settle()
        logs = await Logs.read(rig.bus)
        me_fold, risk_fold = await check_fold(rig.bus, [cmd for _, cmd in sorted(logs.requests())])
        facts = check_exactly_once(
            logs, rig.submitted, await stream_lasts(rig.bus), me_fold, must_answer=more
        )
        assert facts.requests < len(rig.sent), "nothing was lost: the copy was not older"
        await check_services(rig, me_fold, risk_fold)
        conservation(risk_fold, [cmd for _, cmd in logs.requests()])

    rig.run(body)


def test_snapshots_taken_under_load_are_the_state_at_their_log_seq(rig: Rig) -> None:
    """An operator's `POST /admin/snapshot` (and the idle snapshot) runs beside the shard's
    own loop: a snapshot must never catch the state between applying a batch and appending
    it (the state would be ahead of the snapshot's log_seq and recovery would apply the batch
    twice). Every snapshot seen while traffic flows is checked against a fold of the log up
    to its log_seq; then the holder is killed mid-traffic and the standby recovers from them."""

    async def body(rig: Rig) -> None:
        assert rig.http is not None
        await rig.setup()
        risk = rig.service(RISK, "risk-a")
        a = rig.service(MATCHING, "me-a")
        await rig.wait_ready(risk, a)
        first = await rig.wait_holder(ME_TAG, "me-a")
        b = rig.service(MATCHING, "me-b")
        await rig.wait_ready(b)
        await rig.submit(deposits())
        await rig.settle()
        seen: dict[int, set[bytes]] = {}
        stop = asyncio.Event()
        taken = 0

        async def snapshots() -> None:
            nonlocal taken
            while not stop.is_set():
                await a.snapshot_now(rig.http)
                got = await rig.bus.get_snapshot(layout.snapshot_name(ME_TAG))
                assert got is not None
                seen.setdefault(got[0], set()).add(codec.decode_snapshot(got[1]).core)
                taken += 1

        hammer = asyncio.create_task(snapshots())
        load = orders(2000, "load", seed=20)
        for i in range(0, len(load), 50):  # many small batches: many appends to catch
            await rig.submit(load[i : i + 50])
            await rig.settle()
        await rig.submit(orders(500, "last", seed=30))
        stop.set()
        await hammer
        a.kill()  # mid-traffic, right after its latest snapshot
        await rig.wait_holder(ME_TAG, "me-b", above_epoch=first.epoch)
        await rig.settle()
        assert not b.logged("divergence"), b.tail()
        folder = MatchingShard(rig.bus, 0, matching_shards=1, risk_shards=1)
        at = 0
        for seq in sorted(seen):
            if seq > at:
                for log_seq, entry in await rig.bus.read(ME_LOG, at, limit=seq - at):
                    folder.replay(log_seq, entry)
                    at = log_seq
            for core in seen[seq]:
                state = hashlib.sha256(core).hexdigest()
                assert state == folder.state_hash(), f"snapshot at {seq} is not the log's state"
        assert taken >= 20 and len(seen) >= 10, (taken, len(seen))
        await _verify(rig)

    rig.run(body)
