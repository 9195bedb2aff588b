"""Two persistence replicas on one bus and one PostgreSQL share the logs by leases; one dies
abruptly (its tasks cancelled, its connections closed, its leases left to expire) in the
middle of heavy trading, and the other takes its logs: the store then holds the event stream
exactly (count and content) and `dex db verify` passes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from dex.persistence.service import PersistenceService
from dex.persistence.store import run_sync
from dex.persistence.verify import verify
from tests.bus.contract import aio
from tests.persistence.stream_kit import assert_store_equals_stream
from tests.persistence.test_migrations import fresh_postgres
from tests.persistence.test_verify import (
    check_books,
    dex_db_verify,
    random_trading,
    withdrawals_of_every_end,
)
from tests.services.inproc import Cluster
from tests.services.reader_kit import rich_trading, until
from tests.services.test_persistence import service

TTL = 0.6  # seconds: a dead replica's logs are free this long after its last renewal


@pytest.fixture
def pg_store() -> Iterator[str]:
    yield from fresh_postgres()


async def caught_up_all(svc: PersistenceService) -> bool:
    for stream in svc.streams:
        if stream not in svc.leases.held or svc.pos[stream] != await svc.bus.last(stream):
            return False
    return True


async def kill(svc: PersistenceService) -> None:
    """Die as a process would: no release, no last batch; its connections closed."""
    for task in (svc._task, svc.leases._renewer):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert svc.engine is not None
    await svc.engine.dispose()


@aio
async def test_two_replicas_share_the_logs_and_one_dying_hands_its_logs_over(
    pg_store: str,
) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    db: tuple[str, Any] = (pg_store, None)
    a = service(c, db, owner="replica-a", lease_ttl=TTL, batch_size=50)
    b = service(c, db, owner="replica-b", lease_ttl=TTL, batch_size=50)
    await a.start()
    await b.start()
    try:
        await rich_trading(c)
        await withdrawals_of_every_end(c)

        def shared() -> bool:
            held_a, held_b = set(a.leases.held), set(b.leases.held)
            return bool(held_a) and bool(held_b) and not held_a & held_b

        await until(a, shared, "both replicas to hold logs", timeout=20)
        assert len(a.leases.held) + len(b.leases.held) == len(a.streams)
        await random_trading(c, seed=41, n=300)
        victim = a.leases.reading()
        await random_trading(c, seed=43, n=100)  # still in flight when the replica dies
        await kill(a)
        await random_trading(c, seed=47, n=300)
        await until(b, lambda: caught_up_all(b), "the survivor to take every log", timeout=30)
        assert set(victim) <= set(b.leases.held)
        assert b.health.ready
    finally:
        await b.stop()
    n = await assert_store_equals_stream(pg_store, c.bus, c.r_count, c.m_count)
    assert n > 2000
    await check_books(c, pg_store)
    assert await run_sync(pg_store, verify) == []
    result = await dex_db_verify(pg_store)
    assert result.exit_code == 0, result.output
