"""Which logs a persistence replica writes: one lease per log, taken like the shards' leases.

Each log the service reads (every risk log, every matching log) is the lease
`persistence:<stream tag>` (`persistence:risk:0`, `persistence:me:1`). A replica announces
itself with a member lease (`member:persistence:<owner>`), takes free log leases up to its
fair share (`ceil(logs / live replicas)`), renews them every `ttl / 3` in a task of its own
and releases them on stop; the logs of a replica that died are free once their leases expire
and the next `tick` of another replica takes them.

Invariants:
- The leases only share the work; they do not make it exactly once. What does is the
  position update `WHERE log_seq = <old>` in the transaction of the rows (`writer.write`):
  a replica that lost a lease in the middle of a batch either commits before the new holder
  (which then finds the position moved, reloads and goes on) or finds it moved itself and
  writes nothing.
- `held` changes only here: `tick` (between two batches of the reader's loop) takes and
  releases, the renewer drops a lease it could not renew. A stream leaves `held` before
  its lease is released, so no batch of it starts after the release.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from typing import Any

from dex.bus import Bus, Lease
from dex.runtime.metrics import ServiceMetrics
from dex.wire.layout import member_prefix

SERVICE = "persistence"
_TAG = re.compile(r"\{([^}]+)\}")


def lease_name(stream: str) -> str:
    """`persistence:<hash tag of the stream>`: `dex:{risk:0}:log` -> `persistence:risk:0`."""
    m = _TAG.search(stream)
    return f"{SERVICE}:{m.group(1) if m else stream}"


class LogLeases:
    """The log leases of one replica (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        streams: list[str],
        *,
        owner: str,
        ttl: float,
        metrics: ServiceMetrics,
        log: Any,
    ) -> None:
        self.bus = bus
        self.streams = list(streams)
        self.owner = owner
        self.ttl = ttl
        self.log = log
        self.held: dict[str, Lease] = {}
        self._member: Lease | None = None
        self._due = 0.0  # loop time of the next rebalancing
        self._renewer: asyncio.Task[None] | None = None
        self._renew_failing = False
        self.m_held = metrics.gauge("logs_held", "number", "logs whose lease this replica holds")
        self.m_losses = metrics.counter(
            "lease_losses", "total", "log leases lost without a release", ["stream"]
        )

    def reading(self) -> list[str]:
        """The held streams, in the service's order."""
        return [s for s in self.streams if s in self.held]

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        """Stop renewing, then release every lease (call after the last batch)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        held, self.held = self.held, {}
        self.m_held.set(0)
        for lease in [*held.values(), *([self._member] if self._member else [])]:
            try:
                await self.bus.release(lease)
            except Exception as e:  # it expires by itself
                self.log.warning("lease_release_failed", lease=lease.name, error=str(e))
        self._member = None

    async def tick(self) -> list[str]:
        """At most every `ttl / 3`: announce this replica, release the logs above its fair
        share, take free ones up to it; the streams taken (whose positions the caller must
        reload from the store: the previous holder moved them)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._due:
            return []
        self._due = loop.time() + self.ttl / 3
        if self._member is None:
            self._member = await self.bus.acquire(
                member_prefix(SERVICE) + self.owner, self.owner, self.ttl
            )
        members = max(1, len(await self.bus.leases(member_prefix(SERVICE))))
        share = math.ceil(len(self.streams) / members)
        for stream in self.reading()[share:]:
            lease = self.held.pop(stream)
            await self.bus.release(lease)
            self.log.info("log_released", stream=stream, epoch=lease.epoch)
        taken = []
        # start at a place of our own, so replicas starting together ask for different logs
        first = hash(self.owner) % max(1, len(self.streams))
        for stream in self.streams[first:] + self.streams[:first]:
            if len(self.held) >= share:
                break
            if stream in self.held:
                continue
            got = await self.bus.acquire(lease_name(stream), self.owner, self.ttl)
            if got is None:
                continue
            self.held[stream] = got
            taken.append(stream)
            self.m_losses.labels(stream)  # exported from 0 on
            self.log.info("log_acquired", stream=stream, epoch=got.epoch)
        self.m_held.set(len(self.held))
        return taken

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self._renew()
                self._renew_failing = False
            except Exception as e:  # the bus is unreachable: the reader's loop says so
                if not self._renew_failing:
                    self._renew_failing = True
                    self.log.warning("lease_renewal_failed", error=f"{type(e).__name__}: {e}")

    async def _renew(self) -> None:
        if self._member is not None and not await self.bus.renew(self._member, self.ttl):
            self._member = None  # the next tick announces us again
        for stream, lease in list(self.held.items()):
            if await self.bus.renew(lease, self.ttl):
                continue
            if self.held.get(stream) is lease:
                del self.held[stream]
                self.m_losses.labels(stream).inc()
                self.m_held.set(len(self.held))
                self.log.warning("log_lease_lost", stream=stream, epoch=lease.epoch)
