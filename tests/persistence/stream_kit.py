"""What the fault tests compare: the `events` rows a store should hold for the logs on a bus
(every event of every entry, in log order) against the rows it holds."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Connection, select

from dex.bus import Bus
from dex.persistence.schema import events
from dex.persistence.store import run_sync
from dex.wire import codec, layout

Row = tuple[str, int, int, str, Any]  # stream, log_seq, idx, kind, body


class StreamCopy:
    """The `events` rows of every entry of the logs persistence reads, kept as they are read
    (`update` before the writers trim, then again: the trimmed entries stay known)."""

    def __init__(self, bus: Bus, risk_shards: int, matching_shards: int) -> None:
        self.bus = bus
        self.risk = [layout.risk_log(r) for r in range(risk_shards)]
        self.streams = [*self.risk, *(layout.me_log(m) for m in range(matching_shards))]
        self.seen = dict.fromkeys(self.streams, 0)
        self.rows: list[Row] = []

    async def update(self) -> None:
        for stream in self.streams:
            for seq, data in await self.bus.read(stream, self.seen[stream], limit=10**9):
                self.seen[stream] = seq
                if stream in self.risk:
                    items: Any = codec.decode_risk_entry(data).items
                else:
                    items = codec.decode_match_events(data).items
                idx = 0
                for item in items:
                    for ev in item.events:
                        body = msgspec.to_builtins(ev)
                        self.rows.append((stream, seq, idx, body["event"], body))
                        idx += 1

    def sorted(self) -> list[Row]:
        return sorted(self.rows, key=lambda r: (r[0], r[1], r[2]))


async def stream_rows(bus: Bus, risk_shards: int, matching_shards: int) -> list[Row]:
    """The `events` rows of every entry now in the logs persistence reads, sorted."""
    copy = StreamCopy(bus, risk_shards, matching_shards)
    await copy.update()
    return copy.sorted()


async def stored_rows(url: str) -> list[Row]:
    """The `events` rows of the store at `url`, sorted."""

    def work(conn: Connection) -> list[Row]:
        got = conn.execute(select(events).order_by(events.c.stream, events.c.log_seq, events.c.idx))
        return [(r.stream, int(r.log_seq), int(r.idx), r.kind, r.body) for r in got]

    return await run_sync(url, work)


async def assert_store_equals_stream(
    url: str, bus: Bus, risk: int, matching: int, copy: StreamCopy | None = None
) -> int:
    """The store holds every event of the logs exactly once, as logged; how many. `copy`:
    the logs as read before a trim (updated here with what came since)."""
    if copy is None:
        want = await stream_rows(bus, risk, matching)
    else:
        await copy.update()
        want = copy.sorted()
    got = await stored_rows(url)
    assert len(got) == len(want), f"{len(got)} rows stored for {len(want)} events logged"
    for g, w in zip(got, want, strict=True):
        assert g == w, f"stored {g[:4]} differs from logged {w[:4]}"
    return len(got)
