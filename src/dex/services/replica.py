"""A replica of a sharded service (matching-engine or risk-engine): leases, spreading, running.

A replica announces itself with a member lease, holds shard leases up to its share
(`ceil(shards / live replicas)`, capped by `max_shards`), recovers each shard it acquires and
runs it; a shard whose holder died is free once its lease expires and is taken by whoever
has room. Every `ttl / 3` it renews its leases, watches the bus server's identity (a changed
Redis `run_id` may mean lost writes: every shard rebuilds from the log) and rebalances.

Per shard: recovery -> ready -> steps. A refused append (`FencedError`) means the lease is
gone: the shard is dropped without writing anything more. A trimmed input or a divergence
stops the shard and keeps the replica not-ready (with an alert metric), and so does an input
whose application raised (`InputFailed`) twice, before and after a rebuild from the log; any
other error (the bus is down) makes it not-ready, then it rebuilds from the log and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Callable
from typing import Any

from dex.bus import Bus, FencedError, TrimmedError
from dex.runtime.health import Health
from dex.runtime.metrics import ServiceMetrics
from dex.runtime.settings import DEFAULTS
from dex.services.shard import Divergence, InputFailed, ShardWorker, keep_threads_transient
from dex.wire.layout import member_prefix

STEP_WAIT = 0.1  # seconds a step waits for input, which bounds how fast a stop is seen

# The collector's thresholds while shards run. A step allocates thousands of short-lived
# containers (event lists, batch dicts) that reference counting frees, and the state (resting
# orders, accounts) is long-lived: at the default 700 allocations per young collection the
# collector runs tens of times per batch and, as the state grows, walks it again and again
# (about a fifth of a busy shard's time). Young collections every 100,000 allocations keep
# cycles (asyncio, exceptions) collected without that cost.
GC_THRESHOLDS = (100_000, 50, 100)


def settle_gc() -> None:
    """After a recovery: free what it replaced, keep the collector off the recovered state
    (`gc.freeze`) and space its young collections out (`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class ShardReplica:
    """One process's share of a sharded service."""

    def __init__(
        self,
        bus: Bus,
        service: str,
        shard_count: int,
        make: Callable[[int], ShardWorker],
        *,
        owner: str,
        ttl: float,
        max_shards: int,
        idle_check: float = DEFAULTS.idle_check_ms / 1000,
        health: Health,
        metrics: ServiceMetrics,
        log: Any,
    ) -> None:
        self.bus = bus
        self.service = service
        self.shard_count = shard_count
        self.make = make
        self.owner = owner
        self.ttl = ttl
        self.max_shards = max_shards
        self.idle_check = idle_check
        self.health = health
        self.log = log
        self.workers: dict[int, ShardWorker] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._leaving: set[int] = set()
        self.stopped = asyncio.Event()
        self._identity: str | None = None
        self._member: Any = None
        self._maintainer: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._renew_failing = False  # the last renewal pass failed (logged once per streak)
        m = metrics
        self.m_items = m.counter("commands", "total", "inputs applied", ["shard"])
        self.m_batches = m.counter("batches", "total", "log entries appended", ["shard"])
        self.m_batch = m.histogram(
            "batch_size", "items", "inputs per appended entry", buckets=(1, 10, 100, 1000, 10000)
        )
        self.m_step = m.histogram("step_latency", "seconds", "read+apply+append time per batch")
        self.m_lag = m.gauge("input_lag", "entries", "entries not yet applied", ["stream"])
        self.m_epoch = m.gauge("lease_epoch", "number", "epoch of the held shard lease", ["shard"])
        self.m_held = m.gauge("shards_held", "number", "shards this replica writes")
        self.m_lease_losses = m.counter(
            "lease_losses",
            "total",
            "shards given up without a release: lease renewal or a fenced write refused",
            ["shard"],
        )
        self.m_recoveries = m.counter("recoveries", "total", "shard recoveries", ["shard"])
        self.m_recovery_s = m.histogram("recovery", "seconds", "time to recover a shard")
        self.m_divergence = m.gauge(
            "divergence_alert", "bool", "1 when re-applying the log gave other events", ["shard"]
        )
        self.m_input_failed = m.gauge(
            "input_failed_alert",
            "bool",
            "1 when applying an input raised twice, before and after a rebuild (shard stopped)",
            ["shard"],
        )
        self.m_bad = m.counter("bad_entries", "total", "entries that did not decode", ["stream"])
        self.m_snapshot_failures = m.counter(
            "snapshot_failures", "total", "background snapshots not stored", ["shard"]
        )
        self.m_restarts = m.counter("bus_restarts", "total", "bus server identity changes seen")
        self.m_mismatch = m.gauge(
            "holds_mismatch",
            "bool",
            "1 when risk's open orders differ from the engine's",
            ["market"],
        )
        self.m_audits = m.counter("idle_audits", "total", "idle-market comparisons run", ["market"])

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        keep_threads_transient(asyncio.get_running_loop())  # so that snapshots may fork
        self._identity = await self.bus.identity()
        self._member = await self.bus.acquire(
            member_prefix(self.service) + self.owner, self.owner, self.ttl
        )
        self._renewer = asyncio.create_task(self._renew_forever())
        await self._rebalance()
        self._maintainer = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        """Finish the batches in hand, snapshot every shard, delete the leases."""
        self.stopped.set()
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        for shard in list(self.workers):  # leases go on being renewed while they snapshot
            await self._release(shard)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._member is not None:
            try:
                await self.bus.release(self._member)
            except Exception as e:  # it expires by itself; say so and go on stopping
                self.log.warning("member_release_failed", error=f"{type(e).__name__}: {e}")

    # ------------------------------------------------------------------ leases

    async def _renew_forever(self) -> None:
        """Renew the member lease and every shard lease every `ttl / 3`, in a task of its own:
        nothing else the replica does (rebalancing, idle snapshots and audits, lag metrics,
        a release's snapshot) can hold a renewal up. Runs until cancelled (after `stop` has
        released the shards)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.ttl / 3  # a fixed rate: a slow pass does not push the next one back
            try:
                await self._renew()
                if self._renew_failing:
                    self._renew_failing = False
                    self.log.info("lease_renewal_resumed")
            except Exception as e:  # the bus is unreachable: `_maintain` reports it
                if not self._renew_failing:
                    self._renew_failing = True
                    self.log.warning("lease_renewal_failed", error=f"{type(e).__name__}: {e}")
            now = loop.time()
            due = max(due, now)  # after a pass longer than the period: the next one now
            await asyncio.sleep(due - now)

    async def _renew(self) -> None:
        """One renewal pass. A shard lease that cannot be renewed is no longer ours (the bus
        says whose it is now): the shard is dropped, the loss counted and logged with its
        cause. (An expired lease that nobody acquired is renewed: `dex.bus.base`.)"""
        if self._member is None or not await self.bus.renew(self._member, self.ttl):
            name = member_prefix(self.service) + self.owner
            self._member = await self.bus.acquire(name, self.owner, self.ttl)
        for shard, w in list(self.workers.items()):
            lease = w.lease
            if lease is None or await self.bus.renew(lease, self.ttl):
                continue
            if self.workers.get(shard) is not w or w.lease is not lease:
                continue  # released or replaced meanwhile: not a loss
            now = [x for x in await self.bus.leases(lease.name) if x.name == lease.name]
            if now:
                cause = f"taken by {now[0].owner} at epoch {now[0].epoch}"
            else:
                cause = "the bus no longer has it (restarted from older data?)"
            self._lost(w, f"renewal refused: {cause}")
            await self._drop(shard)

    def _lost(self, w: ShardWorker, cause: str) -> None:
        """Count and log a shard given up without a release."""
        self.m_lease_losses.labels(w.tag).inc()
        epoch = w.lease.epoch if w.lease is not None else None
        self.log.warning("lease_lost", shard=w.tag, epoch=epoch, cause=cause)

    async def _maintain(self) -> None:
        while not self.stopped.is_set():
            try:
                await self._tick()
                self.health.set_ready("bus")
            except Exception as e:  # the bus is unreachable: report, retry next tick
                self.health.set_not_ready("bus", f"bus unreachable: {type(e).__name__}: {e}")
                self.log.warning("bus_unreachable", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), self.ttl / 3)

    async def _tick(self) -> None:
        identity = await self.bus.identity()
        if identity != self._identity:
            self.log.warning("bus_restarted", previous=self._identity, now=identity)
            self.m_restarts.inc()
            self._identity = identity
            for w in self.workers.values():
                w.dirty = True  # it may have lost acknowledged writes: follow the log
        await self._rebalance()
        await self._idle_work()
        for w in self.workers.values():
            if not w.dirty:
                for stream, pos in w.inputs().items():
                    self.m_lag.labels(stream).set(max(0, await self.bus.last(stream) - pos))

    async def _idle_work(self) -> None:
        """On a shard idle for `idle_check` seconds: snapshot it if it changed (so a matching
        shard's book is on the bus at a quiet cut), and let risk compare its open orders with
        the engine's (an alert metric and log line on any difference)."""
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.dirty or now - w.active_at < self.idle_check:
                continue
            if w.since_snapshot:
                await w.take_snapshot()
            audit = getattr(w, "audit_idle", None)
            if audit is None:
                continue
            async with w.applying:  # never beside a batch that is ahead of the log
                checked, differ = await audit()
            for market in checked:
                self.m_audits.labels(market).inc()
                self.m_mismatch.labels(market).set(1 if market in differ else 0)
            for market, why in differ.items():
                self.log.error("holds_mismatch", shard=w.tag, market=market, detail=why)

    async def _rebalance(self) -> None:
        if self.stopped.is_set():
            return
        members = max(1, len(await self.bus.leases(member_prefix(self.service))))
        target = math.ceil(self.shard_count / members)
        if self.max_shards:
            target = min(target, self.max_shards)
        for shard in sorted(self.workers, reverse=True)[: max(0, len(self.workers) - target)]:
            await self._release(shard)
        for shard in range(self.shard_count):
            if len(self.workers) >= target:
                break
            if shard in self.workers:
                continue
            w = self.make(shard)
            w.on_bad_entry = self.bad_entry_reporter(w.tag)
            w.on_snapshot_failed = self.snapshot_failure_reporter(w.tag)
            lease = await self.bus.acquire(w.tag, self.owner, self.ttl)
            if lease is None:
                continue
            w.lease = lease
            self.workers[shard] = w
            self.m_epoch.labels(w.tag).set(lease.epoch)
            self.m_lease_losses.labels(w.tag)  # exported from 0 on
            self.tasks[shard] = asyncio.create_task(self._run(shard, w))
            self.log.info("shard_acquired", shard=w.tag, epoch=lease.epoch)
        self.m_held.set(len(self.workers))

    async def _release(self, shard: int) -> None:
        """Hand a shard over: finish its batch, snapshot, delete its lease."""
        w = self.workers.get(shard)
        if w is None:
            return
        self._leaving.add(shard)
        task = self.tasks.pop(shard, None)
        if task is not None:
            await task
        # the shard stays in `workers` until its lease is deleted, so that the renewals go on
        # while its last snapshot is written (a large one takes seconds)
        if w.lease is not None:
            try:
                if not w.dirty:
                    await w.take_snapshot()  # after one running in the background, if any
                else:
                    await w.join_snapshot()
                lease, w.lease = w.lease, None  # no longer renewed (a refusal is no loss)
                if lease is not None:
                    await self.bus.release(lease)
            except Exception as e:
                self.log.warning("release_failed", shard=w.tag, error=str(e))
        self._leaving.discard(shard)
        if self.workers.get(shard) is w:
            self.workers.pop(shard)
        self.health.set_ready(f"shard {w.tag}")
        self.log.info("shard_released", shard=w.tag)
        self.m_held.set(len(self.workers))

    async def _drop(self, shard: int) -> None:
        """Forget a shard whose lease is gone, writing nothing."""
        w = self.workers.pop(shard, None)
        task = self.tasks.pop(shard, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if w is not None:
            self.health.set_ready(f"shard {w.tag}")
        self.m_held.set(len(self.workers))

    # ------------------------------------------------------------------ running a shard

    async def _run(self, shard: int, w: ShardWorker) -> None:
        key = f"shard {w.tag}"
        backoff = 0.05
        failed_at: str | None = None  # the input whose application raised, until one succeeds
        # `self.workers.get(shard) is w`: a dropped shard's task ends even if its cancellation
        # was lost (Python 3.11's wait_for, which redis-py uses for every send, can swallow one)
        while (
            shard not in self._leaving
            and not self.stopped.is_set()
            and self.workers.get(shard) is w
        ):
            try:
                if w.dirty:
                    self.health.set_not_ready(key, "recovering")
                    started = time.perf_counter()
                    gc.unfreeze()  # the state being replaced must be collectable (it has cycles)
                    await w.recover()
                    settle_gc()
                    self.m_recovery_s.observe(time.perf_counter() - started)
                    self.m_recoveries.labels(w.tag).inc()
                    self.log.info(
                        "shard_recovered",
                        shard=w.tag,
                        log_seq=w.last,
                        replayed=w.recovered_items,
                        seconds=round(time.perf_counter() - started, 3),
                    )
                    self.health.set_ready(key)
                started = time.perf_counter()
                n = await w.step(STEP_WAIT)
                failed_at = None
                if n:
                    self.m_step.observe(time.perf_counter() - started)
                    self.m_items.labels(w.tag).inc(n)
                    self.m_batches.labels(w.tag).inc()
                    self.m_batch.observe(n)
                if w.snapshot_due() and not w.dirty:  # dirty: the bus restarted mid-step
                    await w.take_snapshot(background=True)
                halted = getattr(w, "halted", None)
                if halted:
                    self.health.set_not_ready(key, f"halted: {halted}")
                backoff = 0.05
            except FencedError as e:
                self.log.warning("append_refused", shard=w.tag, error=str(e))
                if self.workers.get(shard) is w:
                    self._lost(w, f"fenced write refused: {e}")
                self.workers.pop(shard, None)
                self.tasks.pop(shard, None)
                self.health.set_ready(key)
                self.m_held.set(len(self.workers))
                return
            except TrimmedError as e:
                self.health.set_not_ready(key, f"input trimmed: {e}")
                self.log.error("input_trimmed", shard=w.tag, error=str(e))
                return
            except Divergence as e:
                self.health.set_not_ready(key, f"divergence: {e}")
                self.m_divergence.labels(w.tag).set(1)
                self.log.error("divergence", shard=w.tag, error=str(e))
                return
            except InputFailed as e:
                w.dirty = True
                if e.where != failed_at:  # perhaps a passing fault: rebuild, try once more
                    failed_at = e.where
                    self.health.set_not_ready(key, f"input failed, retrying: {e}")
                    self.log.warning(
                        "input_failed_retrying", shard=w.tag, input=e.where, error=str(e)
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopped.wait(), backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                # the same input failed again on the rebuilt state: it always will
                self.health.set_not_ready(key, f"input failed: {e}")
                self.m_input_failed.labels(w.tag).set(1)
                self.log.error("input_failed", shard=w.tag, input=e.where, error=str(e))
                return
            except Exception as e:  # bus down or a bad state: rebuild from the log, retry
                w.dirty = True
                self.health.set_not_ready(key, f"{type(e).__name__}: {e}")
                self.log.warning("shard_error", shard=w.tag, error=f"{type(e).__name__}: {e}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), backoff)
                backoff = min(backoff * 2, 2.0)

    def snapshot_failure_reporter(self, tag: str) -> Callable[[int, str], None]:
        def report(log_seq: int, message: str) -> None:
            self.m_snapshot_failures.labels(tag).inc()
            self.log.warning("snapshot_failed", shard=tag, log_seq=log_seq, error=message)

        return report

    def bad_entry_reporter(self, tag: str) -> Callable[[str, int, str], None]:
        def report(stream: str, log_seq: int, message: str) -> None:
            self.m_bad.labels(stream).inc()
            self.log.warning("bad_entry", shard=tag, stream=stream, log_seq=log_seq, error=message)

        return report
