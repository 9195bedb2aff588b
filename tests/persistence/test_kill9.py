"""`kill -9` of persistence in the middle of a large backlog, then a restart: the store holds
the event stream exactly (count and content) and `dex db verify` passes.

Persistence runs as a real process (`dex serve persistence`) on a private durable Redis and a
fresh PostgreSQL database; the shards run in the test (`tests.services.inproc.Cluster` on a
`RedisBus` of the same server) and write the backlog before persistence starts, so that its
first batch is large. It is killed while that batch's transaction is open (it has written:
PostgreSQL gave it a transaction id), so nothing of it may be stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Connection, select
from sqlalchemy.engine import make_url

from dex.bus.redis import RedisBus
from dex.persistence.schema import positions
from dex.persistence.store import run_sync
from dex.persistence.verify import verify
from dex.wire import layout
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
from tests.services.reader_kit import rich_trading
from tests.support.dex_process import DexProcess
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer, free_port, private_redis_or_skip


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with private_redis_or_skip() as server:
        yield server


@pytest.fixture
def pg_store() -> Iterator[str]:
    yield from fresh_postgres()


async def stored_positions(url: str) -> dict[str, int]:
    def work(conn: Connection) -> dict[str, int]:  # read once the store is migrated
        return {r.stream: int(r.log_seq) for r in conn.execute(select(positions))}

    return await run_sync(url, work)


WRITING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
"""


@aio
async def test_kill_9_during_a_large_batch_then_restart_stores_the_stream_exactly(
    redis_server: RedisServer, pg_store: str, tmp_path: Path
) -> None:
    bus = RedisBus(redis_server.url)
    c = Cluster(bus=bus)
    await c.start()
    await rich_trading(c)
    await withdrawals_of_every_end(c)
    await random_trading(c, seed=61, n=600)
    last = {s: await bus.last(s) for s in c_streams(c)}
    env = {
        "DEX_REDIS_URL": redis_server.url,
        "DEX_DATABASE_URL": pg_store,
        "DEX_PORT": str(free_port()),
        "DEX_RISK_SHARDS": str(c.r_count),
        "DEX_MATCHING_SHARDS": str(c.m_count),
        "DEX_DATA_DIR": str(tmp_path / "data"),
    }
    proc = DexProcess.start(["serve", "persistence"], env, tmp_path)
    try:
        watcher = await asyncpg.connect(pg_store)
        try:

            async def migrated() -> bool:
                """The store is migrated and the positions are there (all 0)."""
                if await watcher.fetchval("SELECT to_regclass('positions')") is None:
                    return False
                return bool(await watcher.fetchval("SELECT count(*) FROM positions"))

            async def writing() -> bool:
                """A transaction of the service's that has written (an xid) is open."""
                n = await watcher.fetchval(WRITING, make_url(pg_store).database)
                return bool(n)

            await eventually("the store to be migrated", migrated, timeout=40, interval=0.005)
            await eventually(
                "persistence to be inside its first batch", writing, timeout=40, interval=0.005
            )
        finally:
            proc.kill()  # SIGKILL, mid-transaction
            await watcher.close()
        got = await stored_positions(pg_store)
        assert got and got != last, "killed after everything was stored: nothing to resume"
        assert set(got.values()) == {0}, "killed after its first batch: not mid-batch"
        # more trading while it is dead, then a new process resumes from the store
        await random_trading(c, seed=67, n=100)
        last = {s: await bus.last(s) for s in c_streams(c)}
        proc = DexProcess.start(["serve", "persistence"], env, tmp_path)

        async def all_stored() -> bool:
            return await stored_positions(pg_store) == last

        await eventually("the restarted process to store everything", all_stored, timeout=40)
        assert proc.stop() == 0
    finally:
        proc.kill()
    await assert_store_equals_stream(pg_store, bus, c.r_count, c.m_count)
    await check_books(c, pg_store)
    assert await run_sync(pg_store, verify) == []
    result = await dex_db_verify(pg_store)
    assert result.exit_code == 0, result.output
    await bus.close()


def c_streams(c: Cluster) -> list[str]:
    return [
        *(layout.risk_log(r) for r in range(c.r_count)),
        *(layout.me_log(m) for m in range(c.m_count)),
    ]
