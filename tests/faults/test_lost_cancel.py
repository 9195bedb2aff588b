"""A shard task whose cancellation is lost still ends when its lease is dropped.

redis-py sends every command through `asyncio.wait_for` (its default socket timeout), and on
Python 3.11 `wait_for` swallows a cancellation that arrives as the send completes: the task
then goes on as if never cancelled. Seen in the fault tests as a replica that, after Redis came
back from an older AOF, lost its lease mid-recovery and never worked again: `_drop` cancelled
the shard's task, the cancel was lost, and `_drop` awaited a task that kept looping, so the
replica's renewals (then part of its maintenance loop) hung forever.

Here the loss is made certain: a shard whose `step` swallows every cancellation.
"""

from __future__ import annotations

import asyncio

from dex.bus import MemoryBus
from dex.runtime.health import Health
from dex.runtime.logging import get_logger
from dex.runtime.metrics import ServiceMetrics
from dex.services.matching import MatchingShard
from dex.services.replica import ShardReplica
from dex.wire.layout import MATCHING
from tests.bus.contract import aio
from tests.faults.harness import POLL
from tests.support.polling import eventually


class DeafShard(MatchingShard):
    """A matching shard on which a cancellation never lands (as if `wait_for` lost it)."""

    lost = 0

    async def step(self, timeout: float) -> int:
        try:
            return await super().step(timeout)
        except asyncio.CancelledError:
            DeafShard.lost += 1
            return 0


@aio
async def test_a_dropped_shard_ends_even_if_its_cancellation_is_lost() -> None:
    bus = MemoryBus()
    metrics = ServiceMetrics(MATCHING)
    replica = ShardReplica(
        bus,
        MATCHING,
        1,
        lambda m: DeafShard(bus, m, matching_shards=1, risk_shards=1),
        owner="a",
        ttl=60,
        max_shards=0,
        health=Health(metrics),
        metrics=metrics,
        log=get_logger(service="t"),
    )
    await replica.start()
    try:
        await eventually(
            "shard 0 running",
            lambda: 0 in replica.workers and not replica.workers[0].dirty,
            timeout=10.0,
            interval=POLL,
        )
        w = replica.workers[0]
        task = replica.tasks[0]
        assert w.lease is not None
        await bus.release(w.lease)  # another replica takes the shard
        assert await bus.acquire(w.tag, "b", 60) is not None
        tick = asyncio.create_task(replica._renew())  # renewal fails: the shard is dropped
        done, _ = await asyncio.wait({tick}, timeout=10)
        if not done:
            replica.stopped.set()  # ends the deaf task's loop, so this test can finish
            await tick
            raise AssertionError("dropping the shard waited forever for its task")
        await tick
        assert DeafShard.lost >= 1, "the cancellation was not lost: the test proves nothing"
        assert task.done() and replica.workers == {}
    finally:
        await replica.stop()
