"""`SqliteBus`: the embedded bus — `MemoryBus` whose state is kept in a SQLite file.

Owns one SQLite file (WAL, `synchronous=FULL`) holding every stream's retained entries and
trimmed point, the lease epoch counters, the snapshots and the reader positions, so a restarted
`dex up` resumes exactly where it stopped. All reads are served from memory (the `MemoryBus`
state, loaded in full on open); every write goes to both.

Invariants, on top of `MemoryBus`'s:

- Memory and file agree after every call. Each write is one SQLite transaction (an append with
  all of its `also` streams, a trim, a snapshot, a position, an epoch) and nothing awaits
  between its check and its write. Appends, snapshots, positions and epochs are applied to
  memory by `MemoryBus`, then written to the file; if the file write fails, the memory change is
  undone and the `sqlite3.Error` propagates. A trim is written to the file first.
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

Complexity: open O(retained entries); append O(batch) plus one commit (an fsync); trim
O(dropped); everything else as `MemoryBus`, with one commit per write.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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

    def close(self) -> None:
        """Close the file; later writes raise `sqlite3.ProgrammingError`. Idempotent."""
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
        """See `Bus.append`; acknowledged only once the batch is committed to the file."""
        touched = [stream, *(name for name, more in also.items() if more)]
        before = {name: self._last_in_memory(name) for name in touched}
        created: list[str] = []
        try:
            # MemoryBus.append never suspends: checks and the memory write are one step.
            last = await super()._append(stream, entries, lease, expect_last, also)
            with self._write() as db:
                rows: list[tuple[int, int, bytes]] = []
                for name, old_last in before.items():
                    s = self._streams[name]
                    sid = self._stream_id(db, name, created)
                    new = s.entries[old_last - s.trimmed :]
                    rows.extend((sid, old_last + 1 + i, data) for i, data in enumerate(new))
                db.executemany("INSERT INTO entries VALUES (?, ?, ?)", rows)
        except BaseException:
            # Refused or not written: undo whatever part reached memory (MemoryBus checks
            # that `also` does not name `stream` only after extending `stream`).
            for name, old_last in before.items():
                undo = self._streams.get(name)
                if undo is not None:
                    del undo.entries[old_last - undo.trimmed :]
            for name in created:
                del self._ids[name]
            raise
        return last

    def _last_in_memory(self, name: str) -> int:
        s = self._streams.get(name)
        return 0 if s is None else s.last

    async def trim(self, stream: str, below: int) -> None:
        """See `Bus.trim`; the dropped entries are deleted from the file first."""
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
        """See `Bus.commit_position`; written to the file only when the position moves."""
        old = self._positions.get(stream, {}).get(reader)
        await super().commit_position(stream, reader, log_seq)
        known = self._positions[stream]
        new = known.get(reader)
        if new == old:
            return
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (stream, reader)"
                    " DO UPDATE SET log_seq = excluded.log_seq",
                    (stream, reader, new),
                )
        except BaseException:
            _restore(known, reader, old)
            raise

    async def identity(self) -> str:
        """See `Bus.identity`: created with the file and kept in it, so it never changes."""
        return self._identity


def _restore(d: dict[K, V], key: K, old: V | None) -> None:
    """Put back `d[key]` as it was before a write that failed (`None`: absent)."""
    if old is None:
        d.pop(key, None)
    else:
        d[key] = old
