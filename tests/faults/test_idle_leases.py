"""An idle cluster never loses a lease: `dex serve matching-engine` and `risk-engine` over a
private durable Redis, with a short lease TTL, for a bounded run that includes a stall of the
Redis server longer than the TTL (SIGSTOP/SIGCONT: what a slow `appendfsync always` fsync, or a
server that is not scheduled, does to every client at once). Each holder's renewals arrive late
then, all together; nobody else took the leases, so the holders keep them: same epochs, no
re-recovery, `dex_<svc>_lease_losses_total` stays 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.harness import MATCHING, ME_TAG, POLL, RISK, RISK_TAG, Rig, Service

TTL_MS = 1000  # short, yet renewals keep it on a loaded machine (500 ms did not, once)
STALL = 3 * TTL_MS / 1000  # seconds the Redis server is stopped
QUIET = 4 * TTL_MS / 1000  # seconds watched before and after the stall


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


async def _sum(rig: Rig, svc: Service, name: str) -> float | None:
    """The sum of every sample of `name` (any labels) on the service's `/metrics`; None if
    it has none."""
    assert rig.http is not None
    text = (await rig.http.get(svc.url + "/metrics")).text
    found = [
        float(parts[1])
        for parts in map(str.split, text.splitlines())
        if len(parts) == 2 and parts[0].split("{", 1)[0] == name
    ]
    return sum(found) if found else None


def test_an_idle_cluster_keeps_its_leases_through_a_redis_stall(rig: Rig) -> None:
    async def body(rig: Rig) -> None:
        await rig.setup()
        ttl = str(TTL_MS)
        risk = rig.service(RISK, "risk-a", DEX_LEASE_TTL_MS=ttl)
        me = rig.service(MATCHING, "me-a", DEX_LEASE_TTL_MS=ttl)
        await rig.wait_ready(risk, me)
        held = {
            ME_TAG: await rig.wait_holder(ME_TAG, "me-a"),
            RISK_TAG: await rig.wait_holder(RISK_TAG, "risk-a"),
        }
        prefixes = {me: "dex_matching_engine", risk: "dex_risk_engine"}
        recoveries = {s: await _sum(rig, s, p + "_recoveries_total") for s, p in prefixes.items()}
        assert all(n is not None and n >= 1 for n in recoveries.values()), recoveries

        async def unchanged() -> None:
            for svc, prefix in prefixes.items():
                assert svc.alive, svc.tail()
                assert await _sum(rig, svc, prefix + "_lease_losses_total") == 0, svc.tail()
                assert await _sum(rig, svc, prefix + "_recoveries_total") == recoveries[svc]
            for tag, lease in held.items():
                assert await rig.holder(tag) == lease, tag

        async def watch(seconds: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                await unchanged()
                await asyncio.sleep(POLL)  # the poll interval, not a synchronisation

        await watch(QUIET)
        admin = redis.Redis.from_url(rig.redis.url)
        try:
            pid = int(admin.info("server")["process_id"])
        finally:
            admin.close()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STALL)  # the fault itself: the server does nothing this long
        finally:
            os.kill(pid, signal.SIGCONT)
        await watch(QUIET)

    rig.run(body)
