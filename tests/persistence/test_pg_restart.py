"""PostgreSQL stopped (`pg_ctl stop -m immediate`) and started again under a running
persistence service and trading: the service goes not-ready, its input waits on the bus (the
writers trim nothing it has not stored, snapshots and trims notwithstanding), and once the
database is back it catches up: the store holds the event stream exactly, its ledger adds up
to the risk engines' balances and `dex db verify` passes. The server is a private one
(`pg_server`), never the shared one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from dex.bus import TrimmedError
from dex.persistence.schema import ledger_entries
from dex.persistence.service import DATABASE, PersistenceService
from dex.persistence.store import run_sync
from dex.persistence.verify import verify
from dex.wire.layout import PERSISTENCE_READER
from tests.bus.contract import aio
from tests.persistence.pg_server import PgServer, pg_server_or_skip
from tests.persistence.stream_kit import StreamCopy, assert_store_equals_stream
from tests.persistence.test_verify import (
    dex_db_verify,
    from_ledger,
    random_trading,
    rows,
    withdrawals_of_every_end,
)
from tests.services.inproc import Cluster
from tests.services.reader_kit import caught_up, ledger_balances, rich_trading, until
from tests.services.test_persistence import service


@pytest.fixture
def pg() -> Iterator[PgServer]:
    yield from pg_server_or_skip()


def database_down(svc: PersistenceService) -> bool:
    return not svc.health.ready and DATABASE in svc.health.reasons()


@aio
async def test_postgres_stopped_and_started_loses_nothing(pg: PgServer) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, (pg.url, None), batch_size=100)
    copy = StreamCopy(c.bus, c.r_count, c.m_count)
    await svc.start()
    try:
        await rich_trading(c)
        await withdrawals_of_every_end(c)
        await until(svc, lambda: caught_up(svc), "persistence to catch up")
        stored = dict(svc.pos)

        await asyncio.to_thread(pg.stop, "immediate")
        await random_trading(c, seed=53, n=200)
        await until(svc, lambda: database_down(svc), "the service to go not-ready")
        await copy.update()  # the logs as they are before the trims
        # the writers snapshot and trim as they do: never past what persistence stored
        for w in c.workers:
            await w.take_snapshot()
        for stream in svc.streams:
            assert (await c.bus.positions(stream))[PERSISTENCE_READER] == stored[stream]
            assert svc.pos[stream] == stored[stream]
            left = await c.bus.read(stream, stored[stream], limit=10**9)  # not TrimmedError
            assert [seq for seq, _ in left] == list(
                range(stored[stream] + 1, await c.bus.last(stream) + 1)
            )
        assert [s for s in svc.streams if await c.bus.last(s) > stored[s]]  # input waiting
        trimmed = []
        for stream in svc.streams:
            try:
                await c.bus.read(stream, 0, limit=1)
            except TrimmedError:
                trimmed.append(stream)
        assert trimmed  # the writers did trim: below what persistence had stored

        await asyncio.to_thread(pg.start)
        await random_trading(c, seed=59, n=100)
        await until(svc, lambda: caught_up(svc), "persistence to catch up again", timeout=30)
        await until(svc, lambda: svc.health.ready, "the service to be ready again")
    finally:
        await svc.stop()
    await assert_store_equals_stream(pg.url, c.bus, c.r_count, c.m_count, copy)
    # the ledger adds up to the risk engines' own balances (the logs are trimmed: their state)
    assert from_ledger(await rows(pg.url, ledger_entries)) == ledger_balances(c)
    assert await run_sync(pg.url, verify) == []
    result = await dex_db_verify(pg.url)
    assert result.exit_code == 0, result.output
