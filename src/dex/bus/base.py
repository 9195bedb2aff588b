"""The bus port: one small async interface for streams, leases and snapshots.

Owns the contract every bus implementation (in-memory, Redis Streams) must honour, the
`Lease` value and the two errors a caller has to handle. Invariants an implementation keeps:

- Each stream numbers its entries `log_seq` = 1, 2, 3, ... with no gap and no repeat; a batch
  is appended entirely or not at all.
- A lease's `epoch` comes from a per-name counter that never expires and only grows, so a
  later holder always has a higher epoch than any earlier one.
- A fenced write (append with a lease, snapshot) happens only while its lease is the current
  one and, for appends, the stream's last `log_seq` is the one the caller expects (for a
  snapshot given its `log`, that log holds the snapshot's `log_seq`); otherwise
  `FencedError` is raised and nothing is written. A paused replica whose lease was taken over
  therefore can never write.
- The epoch fences, the clock does not: a lease is current until it is released or another
  acquire of its name succeeds. Expiry (`ttl` after the last acquire or renew, by the bus's
  clock) only allows that acquire, by anyone. A holder whose lease expired while nobody
  acquired it is still the holder: its renew succeeds and so do its fenced writes. So a stall
  that delays every holder's renewal at once (the bus server not scheduled, a slow fsync, the
  whole machine paused) costs no lease, while a dead holder's lease is taken over once expired.
  (The Redis bus forgets a lease `LEASE_KEEP` seconds after it expired.)
- A reader is never silently moved forward: reading from below the trimmed point raises
  `TrimmedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]
"""A source of monotonic seconds; injected so tests can move lease time without sleeping."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of being the single writer for `name`, valid while `epoch` is the current one."""

    name: str
    owner: str
    epoch: int


class BusError(Exception):
    """Base class of the errors a bus raises for a refused operation."""


class FencedError(BusError):
    """A fenced write was refused: lease lost, stale epoch, unexpected last `log_seq`, or a
    snapshot's `log_seq` beyond the end of its log."""


class TrimmedError(BusError):
    """The entry after the reader's position has been trimmed; the reader must not skip."""


class Bus(ABC):
    """Append-only numbered streams with blocking reads, fenced writes, leases and snapshots."""

    async def append(
        self,
        stream: str,
        entries: list[bytes],
        *,
        lease: Lease | None = None,
        expect_last: int | None = None,
        also: Mapping[str, list[bytes]] | None = None,
    ) -> int:
        """Append `entries` atomically, numbered after the stream's last; return the new last.

        With `lease`, `expect_last` is required and the append happens only if the lease is
        still the current one (see the module doc: expired but not acquired by anyone since
        counts) and the stream's last `log_seq` equals `expect_last`.
        Without `lease`, a given `expect_last` is still checked. A refusal raises
        `FencedError` and writes nothing. An empty batch is a `ValueError`.

        `also` maps other streams of the same shard (same Redis hash tag) to entries that are
        appended in the same atomic step, under the same checks (empty lists are ignored): a
        shard's log entry and the commands it passes on to other shards are written together
        or not at all.
        """
        if not entries:
            raise ValueError("cannot append an empty batch")
        if lease is not None and expect_last is None:
            raise ValueError("a fenced append needs expect_last")
        if also and stream in also:
            raise ValueError(f"{stream}: `also` must name other streams")
        return await self._append(stream, entries, lease, expect_last, also or {})

    @abstractmethod
    async def _append(
        self,
        stream: str,
        entries: list[bytes],
        lease: Lease | None,
        expect_last: int | None,
        also: Mapping[str, list[bytes]],
    ) -> int:
        """`append` with its arguments checked: each bus's atomic check-and-write."""

    @abstractmethod
    async def read(
        self, stream: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> list[tuple[int, bytes]]:
        """Return up to `limit` `(log_seq, entry)` pairs with `log_seq > after`, in order.

        If there are none and `timeout > 0`, wait up to `timeout` seconds for some to be
        appended, returning an empty list if none arrive. Raises `TrimmedError` if the entry
        `after + 1` has been trimmed away.
        """

    @abstractmethod
    async def trim(self, stream: str, below: int) -> None:
        """Drop the entries with `log_seq < below`; numbering of later entries is unchanged."""

    @abstractmethod
    async def last(self, stream: str) -> int:
        """Return the stream's last `log_seq`, or 0 if nothing was ever appended."""

    @abstractmethod
    async def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """Grant `name` to `owner` for `ttl` seconds with the next epoch, or return None.

        None means another owner holds an unexpired lease on `name`. If `owner` itself holds
        it, a new lease with a higher epoch replaces the old one (fencing a stale incarnation).
        """

    @abstractmethod
    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend `lease` to `ttl` seconds from now; False if it is no longer the current one
        (released, or acquired by someone since). An expired lease nobody acquired is renewed."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Delete the lease on `lease.name` only if `lease` is still the one held."""

    @abstractmethod
    async def put_snapshot(
        self, name: str, log_seq: int, data: bytes, *, lease: Lease, log: str | None = None
    ) -> None:
        """Store `data` taken at `log_seq` as the snapshot `name`, fenced by `lease`.

        Raises `FencedError` and stores nothing (the previous snapshot stays) unless `lease`
        is still the current one (as for `append`). The lease is checked first.

        `log` names the stream the snapshot's `log_seq` is a position of. When given, the
        snapshot is also refused (`FencedError`, naming the snapshot, the stream, its last
        and `log_seq`; nothing stored) unless that stream already holds `log_seq`, i.e. its
        `last(log) >= log_seq` (a stream never appended to has last 0). The check and the
        write are one atomic step. A bus server restarted from an older copy of its data may
        have lost the end of the log; a snapshot stored beyond it would make every later
        recovery load a state ahead of the log. `log` must be a stream of the same shard as
        the snapshot (on Redis: the same hash tag, else `ValueError`).
        """

    @abstractmethod
    async def get_snapshot(self, name: str) -> tuple[int, bytes] | None:
        """Return the latest `(log_seq, data)` stored as snapshot `name`, or None."""

    @abstractmethod
    async def leases(self, prefix: str) -> list[Lease]:
        """Return the unexpired leases whose names start with `prefix`, sorted by name."""

    @abstractmethod
    async def identity(self) -> str:
        """Return an id of the bus server's current incarnation (Redis: its `run_id`).

        It changes when the server restarts, which may have lost acknowledged writes; a
        service seeing it change goes not-ready and recovers from the log.
        """

    @abstractmethod
    async def commit_position(self, stream: str, reader: str, log_seq: int) -> None:
        """Record that `reader` has durably consumed `stream` up to `log_seq` (never lowered).

        Writers trim a stream only below the smallest recorded position of its readers.
        """

    @abstractmethod
    async def positions(self, stream: str) -> dict[str, int]:
        """Return every reader's recorded position on `stream`."""

    async def read_many(
        self, after: Mapping[str, int], *, limit: int = 1000, timeout: float = 0.0
    ) -> dict[str, list[tuple[int, bytes]]]:
        """Read several streams at once: `{stream: entries}` for those with entries after
        their position (each up to `limit`). If none has any and `timeout > 0`, wait until
        one has (or the timeout passes). `TrimmedError` as in `read`.

        This default reads each stream in turn, then waits on all of them; a bus with a
        native multi-stream read overrides it.
        """
        out: dict[str, list[tuple[int, bytes]]] = {}
        for stream, pos in after.items():
            got = await self.read(stream, pos, limit=limit)
            if got:
                out[stream] = got
        if out or timeout <= 0 or not after:
            return out
        waits = {
            asyncio.ensure_future(self.read(s, pos, limit=limit, timeout=timeout)): s
            for s, pos in after.items()
        }
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            got = task.result()
            if got:
                out[waits[task]] = got
        return out
