"""`SqliteBus`: the bus contract, then what the file adds — state that survives a close and a
kill -9, refusal of files it must not use, and memory left unchanged by a failed file write."""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dex.bus import Bus, FencedError, TrimmedError
from dex.bus.sqlite import SCHEMA_VERSION, BusFileError, SqliteBus
from tests.bus.contract import BusContract, FakeClock, acquired, aio, read_all, yield_to_loop


class TestSqliteBus(BusContract):
    """Runs every contract test on a fresh `SqliteBus` in a temporary file."""

    @pytest.fixture
    def bus(self, clock: FakeClock, tmp_path: Path) -> Iterator[Bus]:
        bus = SqliteBus(tmp_path / "bus.sqlite3", clock=clock)
        yield bus
        bus.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bus.sqlite3"  # the parent folder does not exist yet


@contextmanager
def reopened(path: Path, clock: FakeClock | None = None) -> Iterator[SqliteBus]:
    bus = SqliteBus(path, clock=clock or FakeClock())
    try:
        yield bus
    finally:
        bus.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Query the file directly (the bus must be closed: it holds an exclusive lock)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# --- state survives a close and reopen ---------------------------------------------------


@aio
async def test_everything_survives_close_and_reopen(path: Path) -> None:
    clock = FakeClock()
    with reopened(path, clock) as bus:
        identity = await bus.identity()
        lease = await acquired(bus, "shard:0", "a")
        await acquired(bus, "shard:0", "a")  # epoch 2 fences epoch 1
        lease = await acquired(bus, "shard:0", "a")
        other = await acquired(bus, "shard:1", "b")
        also = {"{0}:to:1": [b"x", b"y"], "{0}:to:2": [b"z"], "{0}:to:3": []}
        await bus.append("{0}:log", [b"l1", b"l2"], lease=lease, expect_last=0, also=also)
        await bus.append("{0}:log", [b"l3"], lease=lease, expect_last=2, also={"{0}:to:1": [b"w"]})
        await bus.append("plain", [bytes([i]) for i in range(10)])
        await bus.trim("plain", 5)  # keeps 5..10
        await bus.append("gone", [b"a", b"b", b"c"])
        await bus.trim("gone", 100)  # keeps nothing, last stays 3
        await bus.put_snapshot("snap:0", 3, b"state at 3", lease=lease)
        await bus.put_snapshot("snap:0", 4, b"state at 4", lease=lease)
        await bus.commit_position("{0}:log", "risk:1", 3)
        await bus.commit_position("{0}:log", "md", 2)
        assert [lease.epoch, other.epoch] == [3, 1]

    with reopened(path, clock) as bus:
        assert await bus.identity() == identity
        assert await read_all(bus, "{0}:log") == [(1, b"l1"), (2, b"l2"), (3, b"l3")]
        assert await read_all(bus, "{0}:to:1") == [(1, b"x"), (2, b"y"), (3, b"w")]
        assert await read_all(bus, "{0}:to:2") == [(1, b"z")]
        assert await bus.last("{0}:to:3") == 0
        assert await bus.read("plain", 4) == [(i + 1, bytes([i])) for i in range(4, 10)]
        assert await bus.last("gone") == 3
        for stream, after in (("plain", 3), ("gone", 2), ("gone", 0)):
            with pytest.raises(TrimmedError):
                await bus.read(stream, after)
        assert await bus.read("gone", 3) == []
        assert await bus.get_snapshot("snap:0") == (4, b"state at 4")
        assert await bus.positions("{0}:log") == {"risk:1": 3, "md": 2}

        # Leases are not restored: anyone may take them, with a higher epoch than before.
        assert await bus.leases("") == []
        with pytest.raises(FencedError):
            await bus.append("{0}:log", [b"stale"], lease=lease, expect_last=3)
        with pytest.raises(FencedError):
            await bus.put_snapshot("snap:0", 9, b"stale", lease=lease)
        newer = await acquired(bus, "shard:0", "c")
        assert newer.epoch == 4
        assert (await acquired(bus, "shard:1", "c")).epoch == 2
        assert await bus.append("{0}:log", [b"l4"], lease=newer, expect_last=3) == 4
        assert await bus.append("gone", [b"d"]) == 4
        await bus.commit_position("{0}:log", "md", 1)  # never lowered, also not in the file

    with reopened(path, clock) as bus:
        assert await bus.read("{0}:log", 3) == [(4, b"l4")]
        assert await bus.read("gone", 3) == [(4, b"d")]
        assert await bus.positions("{0}:log") == {"risk:1": 3, "md": 2}
        assert (await acquired(bus, "shard:0", "a")).epoch == 5


@aio
async def test_snapshot_refused_by_its_log_leaves_the_file_unchanged(path: Path) -> None:
    clock = FakeClock()
    with reopened(path, clock) as bus:
        lease = await acquired(bus, "L", "a")
        await bus.append("{0}:log", [b"a", b"b"], lease=lease, expect_last=0)
        await bus.put_snapshot("{0}:snap", 2, b"two", lease=lease, log="{0}:log")
        with pytest.raises(FencedError):
            await bus.put_snapshot("{0}:snap", 3, b"three", lease=lease, log="{0}:log")
        with pytest.raises(FencedError):
            await bus.put_snapshot("{0}:new", 1, b"one", lease=lease, log="{0}:empty")
    assert rows(path, "SELECT name, log_seq, data FROM snapshots") == [("{0}:snap", 2, b"two")]
    assert rows(path, "SELECT name FROM streams") == [("{0}:log",)]  # the check made no stream
    with reopened(path, clock) as bus:
        assert await bus.get_snapshot("{0}:snap") == (2, b"two")
        assert await bus.get_snapshot("{0}:new") is None
        assert await bus.last("{0}:log") == 2


@aio
async def test_trim_deletes_rows_from_the_file(path: Path) -> None:
    with reopened(path) as bus:
        await bus.append("s", [b"%d" % i for i in range(1, 101)])
        await bus.append("t", [b"t"])
        await bus.trim("s", 91)
        await bus.trim("s", 50)  # never moves back
    counts = rows(
        path,
        "SELECT name, trimmed, count(seq) FROM streams JOIN entries ON id = stream GROUP BY id",
    )
    assert sorted(counts) == [("s", 90, 10), ("t", 0, 1)]
    with reopened(path) as bus:
        await bus.trim("s", 1000)
        await bus.trim("t", 2)
    assert rows(path, "SELECT count(*) FROM entries") == [(0,)]
    assert sorted(rows(path, "SELECT name, trimmed FROM streams")) == [("s", 100), ("t", 1)]


@aio
async def test_new_file_gets_its_own_identity(tmp_path: Path) -> None:
    with reopened(tmp_path / "a") as a, reopened(tmp_path / "b") as b:
        assert await a.identity() != await b.identity()


# --- crash durability ----------------------------------------------------------------------

CHILD = """
import asyncio, sys, time
from dex.bus.sqlite import SqliteBus

async def main(path, size):
    bus = SqliteBus(path)
    lease = await bus.acquire("writer", "child", 600.0)
    print(f"epoch {lease.epoch}", flush=True)
    batch = await bus.last("log") // size
    deadline = time.monotonic() + 60.0  # bound: killed long before, or the test fails
    while time.monotonic() < deadline:
        entries = [b"%d:%d:" % (batch, j) + b"x" * 200 for j in range(size)]
        also = {"out": [b"%d" % batch]}
        await bus.append("log", entries, lease=lease, expect_last=batch * size, also=also)
        print(f"acked {batch}", flush=True)  # only once the append returned
        batch += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""
BATCH = 20
ACKS_PER_RUN = 60
KILL_DELAYS = [run * 0.00025 for run in range(8)]  # seconds after the triggering ack line
TIMEOUT = 30.0  # seconds to wait for any one line from the writer, or for it to end


def run_writer_and_kill(path: Path, until: int, delay: float) -> tuple[int, int]:
    """Start a writer on `path`, kill -9 it `delay` s after it acknowledged batch `until`.

    Returns its lease epoch and the last batch it acknowledged before it died (the lines it
    printed after the one that triggered the kill count too)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    stdout, stderr = child.stdout, child.stderr
    lines: queue.Queue[list[bytes] | None] = queue.Queue()

    def pump() -> None:  # a thread, so every wait for a line has a timeout
        for received in stdout:
            if received.endswith(b"\n"):  # the last line may be cut short by the kill
                lines.put(received.split())
        lines.put(None)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    try:

        def line() -> list[bytes]:
            try:
                got = lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no line from the writer in {TIMEOUT}s") from None
            assert got is not None, f"the writer ended: {stderr.read().decode()}"
            return got

        first = line()
        assert first[0] == b"epoch", first
        acked = -1
        while acked < until:
            ack = line()
            assert ack[0] == b"acked", ack
            acked = int(ack[1])
        # Fault injection, not synchronisation: this test reacts to an ack line faster than
        # the writer commits its next batch, so an immediate kill would always land at the
        # same point. Fired `delay` later, it lands at varied points of the next appends
        # (before, inside or after a transaction's commit).
        killer = threading.Timer(delay, child.send_signal, (signal.SIGKILL,))
        killer.start()
        assert child.wait(timeout=TIMEOUT) == -signal.SIGKILL
        pumping.join(timeout=TIMEOUT)
        assert not pumping.is_alive()
        while (late := lines.get_nowait()) is not None:
            acked = int(late[1])
        return int(first[1]), acked
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=TIMEOUT)


async def check_writer_output(path: Path, acked: int, epoch: int) -> int:
    """Every acknowledged batch is there, whole, with its `also` entry; return the batches."""
    with reopened(path) as bus:
        last = await bus.last("log")
        assert last % BATCH == 0, f"partial batch: last is {last}"
        batches = last // BATCH
        assert batches >= acked + 1, f"acknowledged {acked + 1} batches, found {batches}"
        expected = [b"%d:%d:" % (b, j) + b"x" * 200 for b in range(batches) for j in range(BATCH)]
        assert [e for _, e in await read_all(bus, "log")] == expected
        assert [e for _, e in await read_all(bus, "out")] == [b"%d" % b for b in range(batches)]
        assert (await acquired(bus, "writer", "test")).epoch > epoch
        return batches


def test_acknowledged_appends_survive_kill_9_and_no_batch_is_partial(path: Path) -> None:
    epochs = []
    batches = 0
    for delay in KILL_DELAYS:  # each writer resumes the file the previous one was killed on
        epoch, acked = run_writer_and_kill(path, batches + ACKS_PER_RUN - 1, delay)
        epochs.append(epoch)
        batches = asyncio.run(check_writer_output(path, acked, epoch))
    assert epochs == sorted(set(epochs))


# --- files it refuses ----------------------------------------------------------------------


def test_refuses_a_newer_schema_naming_file_and_versions(path: Path) -> None:
    SqliteBus(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(BusFileError) as refused:
        SqliteBus(path)
    message = str(refused.value)
    assert str(path) in message
    assert f"version {SCHEMA_VERSION + 1}" in message and f"version {SCHEMA_VERSION}," in message
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]


def test_refuses_an_unknown_older_schema(path: Path) -> None:
    SqliteBus(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 0")
    db.close()
    with pytest.raises(BusFileError, match="unknown bus file schema version 0"):
        SqliteBus(path)


def test_refuses_foreign_files(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.close()
    with pytest.raises(BusFileError, match="not a dex bus file"):
        SqliteBus(other)
    assert rows(other, "SELECT name FROM sqlite_schema") == [("orders",)]

    tagged = tmp_path / "tagged.sqlite3"
    db = sqlite3.connect(tagged)
    db.execute("PRAGMA application_id = 7")
    db.close()
    with pytest.raises(BusFileError, match="application_id 0x7"):
        SqliteBus(tagged)

    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a database at all, just some text that is long enough" * 20)
    with pytest.raises(BusFileError, match=re.escape(str(text))):
        SqliteBus(text)


def test_refuses_a_file_already_open(path: Path) -> None:
    first = SqliteBus(path)
    try:
        with pytest.raises(BusFileError, match="locked"):
            SqliteBus(path)
    finally:
        first.close()
    SqliteBus(path).close()


@aio
async def test_refuses_a_file_with_a_gap_in_a_stream(path: Path) -> None:
    with reopened(path) as bus:
        await bus.append("s", [b"a", b"b", b"c"])
    db = sqlite3.connect(path)
    db.execute("DELETE FROM entries WHERE seq = 2")
    db.commit()
    db.close()
    with pytest.raises(BusFileError, match="'s' has entry 3 after 1"):
        SqliteBus(path)


# --- a failed file write leaves memory as it was -------------------------------------------


@contextmanager
def failing_writes(bus: SqliteBus, table: str) -> Iterator[None]:
    """Make every write to `table` fail, through temporary triggers on the bus's connection."""
    db = bus._db
    for op in ("INSERT", "UPDATE", "DELETE"):
        db.execute(
            f"CREATE TEMP TRIGGER fail_{op} BEFORE {op} ON main.{table}"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    try:
        yield
    finally:
        for op in ("INSERT", "UPDATE", "DELETE"):
            db.execute(f"DROP TRIGGER temp.fail_{op}")


@aio
async def test_failed_file_writes_leave_memory_unchanged(path: Path) -> None:
    clock = FakeClock()
    with reopened(path, clock) as bus:
        lease = await acquired(bus, "L", "a")
        await bus.append("s", [b"a"], lease=lease, expect_last=0, also={"t": [b"x"]})
        await bus.put_snapshot("snap", 1, b"one", lease=lease)
        await bus.commit_position("s", "r", 1)

        with failing_writes(bus, "entries"):
            with pytest.raises(sqlite3.IntegrityError, match="injected"):
                await bus.append("s", [b"b"], lease=lease, expect_last=1, also={"new": [b"y"]})
            with pytest.raises(sqlite3.IntegrityError):
                await bus.trim("s", 2)
        assert await read_all(bus, "s") == [(1, b"a")]
        assert await bus.last("new") == 0
        with failing_writes(bus, "epochs"):
            with pytest.raises(sqlite3.IntegrityError):
                await bus.acquire("L", "a", 10.0)
            with pytest.raises(sqlite3.IntegrityError):
                await bus.acquire("M", "a", 10.0)
        assert await bus.leases("") == [lease]
        with failing_writes(bus, "snapshots"):
            with pytest.raises(sqlite3.IntegrityError):
                await bus.put_snapshot("snap", 2, b"two", lease=lease)
            with pytest.raises(sqlite3.IntegrityError):
                await bus.put_snapshot("other", 2, b"two", lease=lease)
        assert await bus.get_snapshot("snap") == (1, b"one")
        assert await bus.get_snapshot("other") is None
        with failing_writes(bus, "positions"):
            with pytest.raises(sqlite3.IntegrityError):
                await bus.commit_position("s", "r", 2)
            with pytest.raises(sqlite3.IntegrityError):
                await bus.commit_position("s", "q", 2)
        assert await bus.positions("s") == {"r": 1}

        # Works again once the file does; the stream created by the failed append is usable.
        assert await bus.append("s", [b"b"], lease=lease, expect_last=1, also={"new": [b"y"]}) == 2
        assert (await acquired(bus, "M", "a")).epoch == 1

    with reopened(path, clock) as bus:
        assert await read_all(bus, "s") == [(1, b"a"), (2, b"b")]
        assert await read_all(bus, "new") == [(1, b"y")]
        assert await read_all(bus, "t") == [(1, b"x")]
        assert (await acquired(bus, "L", "b")).epoch == 2


@aio
async def test_also_naming_the_stream_itself_writes_nothing(path: Path) -> None:
    with reopened(path) as bus:
        with pytest.raises(ValueError):
            await bus.append("s", [b"a"], also={"t": [b"c"], "s": [b"b"]})
        assert await bus.last("s") == 0
        assert await bus.last("t") == 0
    with reopened(path) as bus:
        assert await bus.last("s") == 0


def test_close_is_idempotent_and_later_writes_raise(path: Path) -> None:
    bus = SqliteBus(path)
    bus.close()
    bus.close()
    with pytest.raises(sqlite3.ProgrammingError):
        asyncio.run(bus.append("s", [b"a"]))
    assert asyncio.run(bus.last("s")) == 0


# --- group commit -------------------------------------------------------------------------


def traced(bus: SqliteBus) -> list[str]:
    """Every statement the bus's connection runs from now on, in order."""
    statements: list[str] = []
    bus._db.set_trace_callback(statements.append)
    return statements


@aio
async def test_appends_made_together_share_one_commit_and_keep_their_order(path: Path) -> None:
    with reopened(path) as bus:
        statements = traced(bus)
        lasts = await asyncio.gather(
            bus.append("s", [b"a", b"b"]),
            bus.append("t", [b"x"], also={"s": [b"c"]}),
            bus.append("s", [b"d"], expect_last=3),
        )
        assert lasts == [2, 1, 4]
        assert [s for s in statements if s == "COMMIT"] == ["COMMIT"]
        with pytest.raises(FencedError):  # counted the others: last is 4 now
            await asyncio.gather(bus.append("s", [b"e"]), bus.append("s", [b"f"], expect_last=4))
        assert await bus.last("s") == 5
    with reopened(path) as bus:
        assert await read_all(bus, "s") == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")]
        assert await read_all(bus, "t") == [(1, b"x")]


@aio
async def test_a_reader_sees_an_append_only_once_it_is_committed(path: Path) -> None:
    with reopened(path) as bus:
        statements = traced(bus)
        committed_when_read: list[bool] = []

        async def reader() -> None:
            got = await bus.read("s", 0, timeout=5)
            committed_when_read.append("COMMIT" in statements)
            assert got == [(1, b"a")]

        waiting = asyncio.ensure_future(reader())
        await yield_to_loop()
        appended = asyncio.ensure_future(bus.append("s", [b"a"]))
        # One step of the loop: the append runs up to its wait and schedules its commit,
        # which runs after this test's turn (not yield_to_loop: that is two steps).
        await asyncio.sleep(0)
        assert bus._pending, "the append was not checked in that step"
        assert await bus.last("s") == 0 and await bus.read("s", 0) == []
        assert await appended == 1
        await waiting
        assert committed_when_read == [True]


@aio
async def test_other_writes_commit_the_waiting_appends_first(path: Path) -> None:
    """A lease taken, a snapshot, a position or a trim reaches the file after the appends
    checked before it, as their order on the loop says."""
    with reopened(path) as bus:
        lease = await acquired(bus, "L", "a")
        statements = traced(bus)
        got = await asyncio.gather(
            bus.append("s", [b"a"], lease=lease, expect_last=0),
            bus.acquire("L", "a", 10.0),
        )
        assert got[0] == 1 and got[1] is not None and got[1].epoch == 2
        writes = [" ".join(s.split()[:3]) for s in statements if s.startswith("INSERT")]
        assert writes == ["INSERT INTO streams", "INSERT INTO entries", "INSERT INTO epochs"]
        with pytest.raises(FencedError):  # the old incarnation's lease is fenced off
            await bus.append("s", [b"b"], lease=lease, expect_last=1)
        assert await read_all(bus, "s") == [(1, b"a")]


@aio
async def test_a_failed_group_commit_fails_every_append_in_it_and_changes_nothing(
    path: Path,
) -> None:
    with reopened(path) as bus:
        await bus.append("s", [b"a"])
        with failing_writes(bus, "entries"):
            results = await asyncio.gather(
                bus.append("s", [b"b"]),
                bus.append("new", [b"x"], also={"s": [b"c"]}),
                return_exceptions=True,
            )
        assert [type(r) for r in results] == [sqlite3.IntegrityError] * 2
        assert await read_all(bus, "s") == [(1, b"a")] and await bus.last("new") == 0
        assert await bus.append("new", [b"y"], also={"s": [b"d"]}) == 1
    with reopened(path) as bus:
        assert await read_all(bus, "s") == [(1, b"a"), (2, b"d")]
        assert await read_all(bus, "new") == [(1, b"y")]


@aio
async def test_a_failed_commit_nobody_waits_for_any_more_is_reported_to_the_loop(
    path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, context: reported.append(context.get("exception")))
    try:
        with reopened(path) as bus:
            with failing_writes(bus, "entries"):
                waiting = asyncio.ensure_future(bus.append("s", [b"a"]))
                await asyncio.sleep(0)  # checked and queued; its commit comes next turn
                waiting.cancel()  # its caller gives up before the commit runs
                deadline = loop.time() + 5
                while not reported:
                    assert loop.time() < deadline, "the failed commit was never reported"
                    await asyncio.sleep(0.01)
            assert [type(e) for e in reported] == [sqlite3.IntegrityError]
            assert await bus.last("s") == 0  # and it changed nothing
    finally:
        loop.set_exception_handler(None)


@aio
async def test_positions_join_the_group_commit_and_are_put_back_if_it_fails(path: Path) -> None:
    with reopened(path) as bus:
        await bus.append("s", [b"a", b"b"])
        statements = traced(bus)
        await asyncio.gather(
            bus.commit_position("s", "r", 1),
            bus.append("s", [b"c"]),
            bus.commit_position("s", "q", 2),
            bus.commit_position("s", "r", 2),
        )
        assert statements.count("COMMIT") == 1
        with failing_writes(bus, "positions"):
            results = await asyncio.gather(
                bus.commit_position("s", "r", 3),
                bus.append("s", [b"d"]),
                bus.commit_position("s", "r", 3),  # already in memory: waits for the file
                bus.commit_position("s", "q", 1),  # lower: nothing to write or wait for
                return_exceptions=True,
            )
        assert [type(r) for r in results] == [sqlite3.IntegrityError] * 3 + [type(None)]
        assert await bus.positions("s") == {"r": 2, "q": 2}
        assert await bus.last("s") == 3
    with reopened(path) as bus:
        assert await bus.positions("s") == {"r": 2, "q": 2}
        assert await read_all(bus, "s") == [(1, b"a"), (2, b"b"), (3, b"c")]


@aio
async def test_closing_refuses_the_writes_still_waiting_for_their_commit(path: Path) -> None:
    bus = SqliteBus(path)
    await bus.append("s", [b"a"])
    await bus.commit_position("s", "r", 1)
    waiting = asyncio.ensure_future(bus.append("s", [b"b"]))
    position = asyncio.ensure_future(bus.commit_position("s", "r", 2))
    await asyncio.sleep(0)  # one step: both checked and queued, their commit not yet run
    assert len(bus._pending) == 2
    bus.close()
    for write in (waiting, position):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            await write
    with reopened(path) as again:
        assert await read_all(again, "s") == [(1, b"a")]
        assert await again.positions("s") == {"r": 1}
