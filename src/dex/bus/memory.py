"""`MemoryBus`: the embedded, in-process bus (one asyncio event loop, nothing persisted).

Owns streams, leases, epoch counters and snapshots in plain dicts. Every method runs without
awaiting between its check and its write, so on one event loop each call is atomic — this is
what makes fenced appends safe here. Invariants: a stream's entries are a list whose first
element has `log_seq = trimmed + 1`; `trimmed <= last`; epoch counters only grow.
Complexity: append O(batch), read O(limit), trim O(dropped), everything else O(1).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from dex.bus.base import Bus, Clock, FencedError, Lease, TrimmedError


@dataclass(slots=True)
class _Stream:
    entries: list[bytes] = field(default_factory=list)
    trimmed: int = 0  # log_seq of the last dropped entry; entries[i] has log_seq trimmed+1+i
    # Replaced on every append: waiting readers hold the old one, which is set to wake them.
    appended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last(self) -> int:
        return self.trimmed + len(self.entries)


@dataclass(slots=True)
class _Held:
    lease: Lease
    expires_at: float


def _beyond_log(name: str, log: str, last: int, log_seq: int) -> str:
    """The message of a snapshot refused because its log does not hold its `log_seq`."""
    return f"snapshot {name}: log {log} last is {last}, before the snapshot's log_seq {log_seq}"


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")


class MemoryBus(Bus):
    """In-memory `Bus` for the embedded mode and for tests; lease time from `clock`."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        """Create an empty bus whose leases expire according to `clock` (seconds)."""
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._held: dict[str, _Held] = {}
        self._epochs: dict[str, int] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._positions: dict[str, dict[str, int]] = {}
        self._identity = uuid.uuid4().hex

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    def _holder(self, name: str) -> _Held | None:
        """The unexpired lease on `name`: one that no other owner may acquire."""
        held = self._held.get(name)
        if held is not None and held.expires_at <= self._clock():
            return None
        return held

    def _is_held(self, lease: Lease) -> bool:
        """`lease` is the current one on its name: not released, and nobody has acquired the
        name since (expired or not, see `Bus`)."""
        held = self._held.get(lease.name)
        return held is not None and held.lease == lease

    async def _append(
        self,
        stream: str,
        entries: list[bytes],
        lease: Lease | None,
        expect_last: int | None,
        also: Mapping[str, list[bytes]],
    ) -> int:
        """See `Bus.append`."""
        s = self._check_append(stream, lease, expect_last, None)
        return self._apply_append(s, entries, also)

    def _check_append(
        self, stream: str, lease: Lease | None, expect_last: int | None, last: int | None
    ) -> _Stream:
        """The fencing checks of an append to `stream` whose last is `last` (None: the one in
        memory); raises `FencedError`. Changes nothing but creating the empty stream."""
        s = self._stream(stream)
        if lease is not None and not self._is_held(lease):
            raise FencedError(f"{stream}: lease {lease.name} epoch {lease.epoch} is not held")
        last = s.last if last is None else last
        if expect_last is not None and last != expect_last:
            raise FencedError(f"{stream}: last is {last}, caller expected {expect_last}")
        return s

    def _apply_append(
        self, s: _Stream, entries: list[bytes], also: Mapping[str, list[bytes]]
    ) -> int:
        """Add a checked append to memory and wake the readers waiting on its streams."""
        self._extend(s, entries)
        for name, more in also.items():
            if more:
                self._extend(self._stream(name), more)
        return s.last

    @staticmethod
    def _extend(s: _Stream, entries: list[bytes]) -> None:
        s.entries.extend(entries)
        s.appended.set()
        s.appended = asyncio.Event()

    async def read(
        self, stream: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> list[tuple[int, bytes]]:
        """See `Bus.read`."""
        if after < 0 or limit < 1:
            raise ValueError(f"need after >= 0 and limit >= 1, got {after=} {limit=}")
        s = self._stream(stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if after < s.trimmed:
                raise TrimmedError(f"{stream}: entry {after + 1} was trimmed (up to {s.trimmed})")
            if s.last > after:
                start = after - s.trimmed
                return [
                    (s.trimmed + 1 + i, s.entries[i])
                    for i in range(start, min(start + limit, len(s.entries)))
                ]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(s.appended.wait(), remaining)
            except TimeoutError:
                return []

    async def trim(self, stream: str, below: int) -> None:
        """See `Bus.trim`."""
        s = self._stream(stream)
        drop = min(below - 1, s.last) - s.trimmed
        if drop > 0:
            del s.entries[:drop]
            s.trimmed += drop

    async def last(self, stream: str) -> int:
        """See `Bus.last`."""
        return self._stream(stream).last

    async def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """See `Bus.acquire`."""
        _check_ttl(ttl)
        held = self._holder(name)
        if held is not None and held.lease.owner != owner:
            return None
        epoch = self._epochs[name] = self._epochs.get(name, 0) + 1
        lease = Lease(name=name, owner=owner, epoch=epoch)
        self._held[name] = _Held(lease, self._clock() + ttl)
        return lease

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """See `Bus.renew`."""
        _check_ttl(ttl)
        if not self._is_held(lease):
            return False
        self._held[lease.name].expires_at = self._clock() + ttl
        return True

    async def release(self, lease: Lease) -> None:
        """See `Bus.release`."""
        if self._is_held(lease):
            del self._held[lease.name]

    async def put_snapshot(
        self, name: str, log_seq: int, data: bytes, *, lease: Lease, log: str | None = None
    ) -> None:
        """See `Bus.put_snapshot`."""
        if not self._is_held(lease):
            raise FencedError(f"snapshot {name}: lease {lease.name} epoch {lease.epoch} not held")
        if log is not None:
            s = self._streams.get(log)  # not `_stream`: a check creates no stream
            last = 0 if s is None else s.last
            if last < log_seq:
                raise FencedError(_beyond_log(name, log, last, log_seq))
        self._snapshots[name] = (log_seq, data)

    async def get_snapshot(self, name: str) -> tuple[int, bytes] | None:
        """See `Bus.get_snapshot`."""
        return self._snapshots.get(name)

    async def leases(self, prefix: str) -> list[Lease]:
        """See `Bus.leases`."""
        names = sorted(n for n in self._held if n.startswith(prefix))
        return [h.lease for n in names if (h := self._holder(n)) is not None]

    async def identity(self) -> str:
        """See `Bus.identity`: fixed for the life of this object."""
        return self._identity

    async def commit_position(self, stream: str, reader: str, log_seq: int) -> None:
        """See `Bus.commit_position`."""
        known = self._positions.setdefault(stream, {})
        if log_seq > known.get(reader, -1):
            known[reader] = log_seq

    async def positions(self, stream: str) -> dict[str, int]:
        """See `Bus.positions`."""
        return dict(self._positions.get(stream, {}))
