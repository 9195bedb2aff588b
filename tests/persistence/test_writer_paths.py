"""The writer's two PostgreSQL paths for the tables with a conflict rule store the same: a few
rows as array parameters (`INSERT ... FROM unnest`), many through a temporary stage filled by
binary COPY (`writer.STAGE_FROM`). The same trading, with parts so small that a batch spans
many of them (`writer.PART`), is stored once with every table's rows under the threshold and
once with every table's rows over it: both stores equal the event stream and the shards, and
`dex db verify` finds nothing. A value no column holds is refused on the stage path too (the
entry dropped alone)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, select

from dex.persistence import writer
from dex.persistence.schema import events
from dex.persistence.store import run_sync
from dex.persistence.verify import verify
from tests.bus.contract import aio
from tests.persistence.stream_kit import Row, stream_rows
from tests.services.inproc import Cluster
from tests.services.reader_kit import caught_up, rich_trading, until
from tests.services.test_persistence import (
    Database,
    check_against_shards,
    database,  # noqa: F401
    refused_entry_is_dropped_alone,
    service,
)


@pytest.fixture(params=["arrays", "stage"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every PostgreSQL table write through one path; parts of 3 entries."""
    monkeypatch.setattr(writer, "STAGE_FROM", 10**9 if request.param == "arrays" else 1)
    monkeypatch.setattr(writer, "PART", 3)
    yield request.param


@aio
async def test_both_paths_store_the_stream_exactly(
    database: Database,  # noqa: F811
    path: str,
) -> None:
    c = Cluster(matching_shards=3)
    await c.start()
    svc = service(c, database, batch_size=50)
    await svc.start()
    try:
        await rich_trading(c)
        await until(svc, lambda: caught_up(svc), "persistence to catch up")
        await check_against_shards(svc, c)
        url, schema = database
        assert await stored_events(url, schema) == await stream_rows(c.bus, c.r_count, c.m_count)
        assert await run_sync(url, verify, schema=schema) == []
    finally:
        await svc.stop()


async def stored_events(url: str, schema: str | None) -> list[Row]:
    """The `events` rows of the store (in the test's own schema on PostgreSQL), sorted."""

    def work(conn: Connection) -> list[Row]:
        e = events.c
        got = conn.execute(select(events).order_by(e.stream, e.log_seq, e.idx))
        return [(r.stream, int(r.log_seq), int(r.idx), r.kind, r.body) for r in got]

    return await run_sync(url, work, schema=schema)


@aio
async def test_a_value_no_column_holds_is_dropped_alone_on_the_stage_path(
    database: Database,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer, "STAGE_FROM", 1)
    await refused_entry_is_dropped_alone(database)
