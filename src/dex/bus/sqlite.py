"""`SqliteBus`: the embedded bus — `MemoryBus` whose state is kept in a SQLite file.

Owns one SQLite file (WAL, `synchronous=FULL`) holding every stream's retained entries and
trimmed point, the lease epoch counters, the snapshots and the reader positions, so a restarted
`dex up` resumes exactly where it stopped. All reads are served from memory (the `MemoryBus`
state, loaded in full on open); every write goes to both.

Invariants, on top of `MemoryBus`'s:

- Memory never holds an entry the file does not. An append is checked when it is made (the
  fencing of `MemoryBus`, counting the appends still waiting for their commit), then waits for
  the group commit: every append made until the event loop's next turn is written in one
  transaction (one fsync for all of them, which is what lets the embedded exchange batch
  under load), and only after that transaction commits are they added to memory, in the
  order they were checked, where readers see them, and answered. If the transaction fails,
  each of them raises its `sqlite3.Error` and nothing reaches memory. An append whose caller
  was cancelled meanwhile is made all the same (like one whose answer was lost).
- A reader's position joins the same group commit: applied to memory by `MemoryBus`, written
  with the appends of its turn, and put back in memory if that transaction fails.
- The file keeps the order of the writes: a trim, a snapshot or an epoch first commits the
  waiting appends and positions, then is one transaction of its own with nothing awaited
  between its check and its write. Snapshots and epochs are applied to memory by `MemoryBus`,
  then written to the file; if the file write fails, the memory change is undone and the
  `sqlite3.Error` propagates. A trim is written to the file first, so it never drops entries
  below a position the file does not hold yet.
- On disk a stream's entries are exactly `log_seq` = trimmed + 1 .. last, with no gap (checked
  on open); a trim deletes the rows below the new trimmed point, so memory and file hold only
  what is retained.
- Leases are not restored (the process that held them is gone); epoch counters are, so a lease
  granted after a restart has a higher epoch than any granted before it.
- `identity()` is an id generated when the file is created and stored in it. It never changes:
  a restart of the embedded process loses nothing that was acknowledged (see below), so a
  service has nothing to re-check. Restoring an older copy of the file is not detected.
- One process at a time: the file is opened in SQLite's exclusive locking mode, so a second
  `SqliteBus` (or any other SQLite client) on the same file is refused while this one is open.
  It therefore needs a file of its own, not one shared with another store.

Durability: an append is acknowledged (returns) only after its transaction committed with
`synchronous=FULL`, i.e. after the WAL was fsynced; an acknowledged append survives a kill -9
of the process and, the disk permitting, a power loss. A batch is in the file entirely or not
at all.

Schema (`PRAGMA application_id` marks a dex bus file, `PRAGMA user_version` is the schema
version; a file with a newer version than `SCHEMA_VERSION` is refused, naming both):
`meta(key, value)` holding `identity`; `streams(id, name, trimmed)`;
`entries(stream, seq, data)` keyed by (stream id, `log_seq`); `epochs(name, epoch)`;
`snapshots(name, log_seq, data)`; `positions(stream, reader, log_seq)`.

Complexity: open O(retained entries); append O(batch) plus its share of one commit (an fsync);
trim O(dropped); everything else as `MemoryBus`, with one commit per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dex.bus.base import Clock, Lease
from dex.bus.memory import MemoryBus

SCHEMA_VERSION = 1
FILE_NAME = "bus.sqlite3"  # its name in the data folder: a file of its own (see the lock)
APPLICATION_ID = 0x64657862  # "dexb": marks a file as a dex bus file

K = TypeVar("K")
V = TypeVar("V")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE streams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    trimmed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE entries (
    stream INTEGER NOT NULL REFERENCES streams (id),
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE epochs (name TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
CREATE TABLE snapshots (name TEXT PRIMARY KEY, log_seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE positions (
    stream TEXT NOT NULL,
    reader TEXT NOT NULL,
    log_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, reader)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Pending:
    """A write checked and waiting for the next group commit: an append or a position."""

    done: asyncio.Future[int]
    rows: list[tuple[str, int, bytes]]  # an append's (stream name, log_seq, entry), all streams
    position: tuple[str, str, int] | None  # a position's (stream, reader, log_seq)
    then: Callable[[], int]  # its memory step once committed; the caller's answer
    undo: Callable[[], None] | None = None  # what puts memory back if the commit fails


class BusFileError(Exception):
    """The file cannot be used as a bus file: newer schema, foreign, corrupt or in use."""


class SqliteBus(MemoryBus):
    """`MemoryBus` kept in the SQLite file `path`; lease time from `clock`. Call `close()`."""

    def __init__(self, path: str | Path, clock: Clock = time.monotonic) -> None:
        """Open (creating it and its parent folder if missing) and load the bus file `path`."""
        super().__init__(clock)
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._ids: dict[str, int] = {}  # stream name -> streams.id, for streams in the file
        self._db = self._connect()
        try:
            self._open_schema()
            self._load()
        except BaseException:
            self._db.close()
            raise
        # Appends and positions checked but not yet committed (the next group commit), and
        # the last log_seq of each stream the appends touch, counting them.
        self._pending: list[_Pending] = []
        self._pending_last: dict[str, int] = {}
        self._commit_soon: asyncio.Handle | None = None

    def close(self) -> None:
        """Close the file; later writes raise `sqlite3.ProgrammingError`. Idempotent. Writes
        still waiting for their commit (none once every write was awaited) are refused."""
        if self._commit_soon is not None:
            self._commit_soon.cancel()
            self._commit_soon = None
        pending, self._pending = self._pending, []
        self._pending_last.clear()
        for p in reversed(pending):
            if p.undo is not None:
                p.undo()
            if not p.done.done():
                with contextlib.suppress(RuntimeError):  # its loop may be closed already
                    p.done.set_exception(sqlite3.ProgrammingError("the bus file was closed"))
        self._db.close()

    # --- opening ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, `_write` issues BEGIN/COMMIT itself.
        # timeout=0: a lock held by someone else is refused at once, never waited for.
        db = sqlite3.connect(self._path, isolation_level=None, timeout=0)
        try:
            # Exclusive mode must be set before WAL is entered so no shared memory is used;
            # BEGIN EXCLUSIVE then takes the lock, which is kept until close.
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute("BEGIN EXCLUSIVE")
            db.execute("COMMIT")
        except sqlite3.DatabaseError as e:  # "database is locked", "file is not a database"
            db.close()
            raise BusFileError(f"{self._path}: cannot open the bus file: {e}") from e
        if mode != "wal":
            db.close()
            raise BusFileError(f"{self._path}: cannot use WAL mode (journal_mode is {mode})")
        db.execute("PRAGMA synchronous = FULL")
        return db

    def _open_schema(self) -> None:
        db = self._db
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app == 0 and version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if tables:
                raise BusFileError(f"{self._path}: not a dex bus file (has other tables)")
            self._create()
            return
        if app != APPLICATION_ID:
            raise BusFileError(f"{self._path}: not a dex bus file (application_id {app:#x})")
        if version > SCHEMA_VERSION:
            raise BusFileError(
                f"{self._path}: bus file schema version {version} is newer than version"
                f" {SCHEMA_VERSION}, the newest this dex knows; upgrade dex to open it"
            )
        if version < SCHEMA_VERSION:  # no older version exists yet, so nothing to migrate
            raise BusFileError(f"{self._path}: unknown bus file schema version {version}")

    def _create(self) -> None:
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO meta VALUES ('identity', ?)", (uuid.uuid4().hex,))
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            (self._identity,) = db.execute(
                "SELECT value FROM meta WHERE key = 'identity'"
            ).fetchone()
            names: dict[int, str] = {}
            for sid, name, trimmed in db.execute("SELECT id, name, trimmed FROM streams"):
                names[sid] = name
                self._ids[name] = sid
                self._stream(name).trimmed = trimmed
            for sid, seq, data in db.execute("SELECT stream, seq, data FROM entries ORDER BY 1, 2"):
                s = self._stream(names[sid])
                if seq != s.last + 1:
                    raise BusFileError(
                        f"{self._path}: stream {names[sid]!r} has entry {seq} after {s.last}"
                    )
                s.entries.append(data)
            self._epochs.update(db.execute("SELECT name, epoch FROM epochs"))
            for name, log_seq, data in db.execute("SELECT name, log_seq, data FROM snapshots"):
                self._snapshots[name] = (log_seq, data)
            for stream, reader, log_seq in db.execute("SELECT * FROM positions"):
                self._positions.setdefault(stream, {})[reader] = log_seq
        finally:
            db.execute("COMMIT")

    # --- writing ----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed if the block completes, rolled back otherwise."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _stream_id(self, db: sqlite3.Connection, name: str, created: list[str]) -> int:
        sid = self._ids.get(name)
        if sid is None:
            cursor = db.execute("INSERT INTO streams (name) VALUES (?)", (name,))
            assert cursor.lastrowid is not None
            sid = self._ids[name] = cursor.lastrowid
            created.append(name)
        return sid

    async def _append(
        self,
        stream: str,
        entries: list[bytes],
        lease: Lease | None,
        expect_last: int | None,
        also: Mapping[str, list[bytes]],
    ) -> int:
        """See `Bus.append`: checked now (counting the appends waiting for the same commit),
        then committed with every append made until the loop's next turn (one transaction,
        one fsync), and only then added to memory, where readers see it. It returns once
        committed: nothing is read, or acknowledged, before it is in the file."""
        s = self._check_append(stream, lease, expect_last, self._pending_last.get(stream))
        rows: list[tuple[str, int, bytes]] = []
        for name, batch in ((stream, entries), *also.items()):
            if batch:
                first = self._pending_last.get(name, self._last_in_memory(name)) + 1
                rows.extend((name, first + i, data) for i, data in enumerate(batch))
                self._pending_last[name] = first + len(batch) - 1
        return await self._in_next_commit(
            rows, None, lambda: self._apply_append(s, entries, also), None
        )

    def _in_next_commit(
        self,
        rows: list[tuple[str, int, bytes]],
        position: tuple[str, str, int] | None,
        then: Callable[[], int],
        undo: Callable[[], None] | None,
    ) -> asyncio.Future[int]:
        """Queue a checked write for the group commit at the loop's next turn; its answer."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._pending.append(_Pending(done, rows, position, then, undo))
        if self._commit_soon is None:
            self._commit_soon = loop.call_soon(self._commit_pending)
        return done

    def _commit_pending(self) -> None:
        """The group commit: every pending write in one transaction, then the appends into
        memory in the order they were checked, each caller answered. If the transaction
        fails, every one of them fails with its error: no append reaches memory and the
        positions are put back."""
        if self._commit_soon is not None:
            self._commit_soon.cancel()  # when called by another write before its turn came
            self._commit_soon = None
        pending, self._pending = self._pending, []
        self._pending_last.clear()
        if not pending:
            return
        created: list[str] = []
        try:
            with self._write() as db:
                rows = [
                    (self._stream_id(db, name, created), seq, data)
                    for p in pending
                    for name, seq, data in p.rows
                ]
                if rows:
                    db.executemany("INSERT INTO entries VALUES (?, ?, ?)", rows)
                positions = [p.position for p in pending if p.position is not None]
                if positions:
                    db.executemany(
                        "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (stream, reader)"
                        " DO UPDATE SET log_seq = excluded.log_seq",
                        positions,
                    )
        except Exception as e:
            for name in created:
                del self._ids[name]
            told = False
            for p in reversed(pending):
                if p.undo is not None:
                    p.undo()
                if not p.done.done():
                    p.done.set_exception(e)
                    told = True
            if not told:  # every caller gave up waiting: the failure is said all the same
                raise
            return
        for p in pending:
            got = p.then()
            if not p.done.done():  # a caller cancelled meanwhile: its write is made all the same
                p.done.set_result(got)

    def _last_in_memory(self, name: str) -> int:
        s = self._streams.get(name)
        return 0 if s is None else s.last

    async def trim(self, stream: str, below: int) -> None:
        """See `Bus.trim`; the dropped entries are deleted from the file first."""
        self._commit_pending()  # the file keeps the order of the writes
        s = self._streams.get(stream)
        if s is not None:
            trimmed = min(below - 1, s.last)  # as MemoryBus.trim computes it
            if trimmed > s.trimmed:
                sid = self._ids[stream]
                with self._write() as db:
                    db.execute("DELETE FROM entries WHERE stream = ? AND seq <= ?", (sid, trimmed))
                    db.execute("UPDATE streams SET trimmed = ? WHERE id = ?", (trimmed, sid))
        await super().trim(stream, below)

    async def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """See `Bus.acquire`; the epoch counter is committed before the lease is returned."""
        self._commit_pending()  # the file keeps the order of the writes
        old_epoch = self._epochs.get(name)
        old_held = self._held.get(name)
        lease = await super().acquire(name, owner, ttl)
        if lease is None:
            return None
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO epochs VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                    " SET epoch = excluded.epoch",
                    (name, lease.epoch),
                )
        except BaseException:
            _restore(self._epochs, name, old_epoch)
            _restore(self._held, name, old_held)
            raise
        return lease

    async def put_snapshot(
        self, name: str, log_seq: int, data: bytes, *, lease: Lease, log: str | None = None
    ) -> None:
        """See `Bus.put_snapshot`; a refused snapshot (lease or `log`) never reaches the file."""
        self._commit_pending()  # the file keeps the order of the writes
        old = self._snapshots.get(name)
        # MemoryBus checks the lease and `log` and stores in memory in one step (no await
        # between them); a refusal raises before memory or the file is touched.
        await super().put_snapshot(name, log_seq, data, lease=lease, log=log)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                    " SET log_seq = excluded.log_seq, data = excluded.data",
                    (name, log_seq, data),
                )
        except BaseException:
            _restore(self._snapshots, name, old)
            raise

    async def commit_position(self, stream: str, reader: str, log_seq: int) -> None:
        """See `Bus.commit_position`; written to the file only when the position moves, in
        the next group commit (with the appends of the same turn), and returns once there."""
        old = self._positions.get(stream, {}).get(reader)
        await super().commit_position(stream, reader, log_seq)
        known = self._positions[stream]
        new = known.get(reader)
        if new is None:
            return
        if new == old and not any(
            p.position is not None and p.position[:2] == (stream, reader) for p in self._pending
        ):
            return  # in the file already
        # (Already in memory but still waiting for the file: written again with it, so this
        # caller too returns only once the file holds it, or fails with it.)
        await self._in_next_commit(
            [], (stream, reader, new), lambda: new, lambda: _restore(known, reader, old)
        )

    async def identity(self) -> str:
        """See `Bus.identity`: created with the file and kept in it, so it never changes."""
        return self._identity


def _restore(d: dict[K, V], key: K, old: V | None) -> None:
    """Put back `d[key]` as it was before a write that failed (`None`: absent)."""
    if old is None:
        d.pop(key, None)
    else:
        d[key] = old
