"""The matching shard: the single writer of `dex:{me:m}:events` and the books of its markets.

Reads the admin stream and one stream per risk shard (`dex:{risk:r}:to:m`), stamps each
command's time, applies it to the pure `dex.matching.Engine` and appends one `MatchEntry` per
batch through the fenced write. Admin commands: `add_asset` goes to every shard's engine,
`add_market` and `set_market_status` only to the shard that owns the market. A forwarded
command waits until the admin stream has been applied up to the position risk had seen, so a
market is always known before its first order. When a GTD expiry falls due on an idle shard
a `tick` is logged.
"""

from __future__ import annotations

from typing import Any

from dex.core import commands as mc
from dex.core.commands import InputRef
from dex.core.errors import CommandError
from dex.core.events import Event, Trade
from dex.matching import Engine
from dex.services.shard import Divergence, InputFailed, ShardWorker
from dex.wire import codec
from dex.wire.layout import (
    ADMIN_STREAM,
    MARKET_DATA_READER,
    PERSISTENCE_READER,
    me_log,
    me_tag,
    risk_tag,
    risk_to,
    shard_for,
)

TICK_INPUT = InputRef("tick", 0)


class MatchingShard(ShardWorker):
    """Matching shard `m` of `matching_shards`, fed by `risk_shards` risk shards."""

    def __init__(
        self, bus: Any, m: int, *, matching_shards: int, risk_shards: int, **kw: Any
    ) -> None:
        readers = (
            *(risk_tag(r) for r in range(risk_shards)),
            MARKET_DATA_READER,
            PERSISTENCE_READER,
        )
        super().__init__(bus, me_tag(m), me_log(m), log_readers=readers, **kw)
        self.m = m
        self.matching_shards = matching_shards
        self.sources = [risk_to(r, m) for r in range(risk_shards)]
        self.committed_inputs = tuple(self.sources)
        self.engine = Engine()
        self._tick_due = False
        self.trades_total = 0

    # ------------------------------------------------------------------ core hooks

    def reset(self) -> None:
        self.engine = Engine()

    def dump_core(self) -> bytes:
        return self.engine.snapshot()

    def load_core(self, data: bytes) -> None:
        self.engine = Engine.restore(data)

    def state_hash(self) -> str:
        return self.engine.state_hash()

    def state_size(self) -> int:
        return sum(len(m.orders) + len(m.stops) for m in self.engine.markets.values())

    def owns(self, market: str) -> bool:
        return shard_for(market, self.matching_shards) == self.m

    def inputs(self) -> dict[str, int]:
        pos = self.pos
        return {s: pos.get(s, 0) for s in (ADMIN_STREAM, *self.sources)}

    def _apply(self, cmd: mc.Command, src: InputRef) -> codec.MatchItem:
        try:
            events = self.engine.apply(cmd, src)
        except CommandError as e:
            return codec.MatchItem(src, cmd, [], str(e))
        except Exception as e:  # not a refusal: the shard must stop here (InputFailed)
            raise InputFailed(self.tag, f"{src.stream}#{src.log_seq}", e) from e
        return codec.MatchItem(src, cmd, events)

    def replay(self, log_seq: int, entry: bytes) -> int:
        logged = codec.decode_match_entry(entry)
        for item in logged.items:
            again = self._apply(item.cmd, item.input)
            if again.events != item.events or again.error != item.error:
                raise Divergence(
                    f"{self.tag}: log entry {log_seq}, input {item.input.stream}"
                    f"#{item.input.log_seq}: re-applying gave different events"
                )
            self.ts = max(self.ts, item.cmd.ts)
        self.pos = dict(logged.pos)
        return len(logged.items)

    def idle(self) -> bool:
        heap = self.engine.expiries
        if heap and heap[0][0] <= self.clock_ns():
            self._tick_due = True
        return self._tick_due

    def process(
        self, got: dict[str, list[tuple[int, bytes]]]
    ) -> tuple[bytes, dict[str, list[bytes]], int] | None:
        items: list[codec.MatchItem] = []
        pos = dict(self.pos)
        for seq, data in got.get(ADMIN_STREAM, ()):
            pos[ADMIN_STREAM] = seq
            try:
                cmd = codec.decode_admin(data)
            except codec.BadEntry as e:
                self._bad(ADMIN_STREAM, seq, str(e))
                continue
            if isinstance(cmd, mc.AddAsset) or (
                isinstance(cmd, (mc.AddMarket, mc.SetMarketStatus))
                and self.owns(cmd.spec.market if isinstance(cmd, mc.AddMarket) else cmd.market)
            ):
                codec.stamp(cmd, self.stamp())
                items.append(self._apply(cmd, InputRef(ADMIN_STREAM, seq)))
        admin_pos = pos.get(ADMIN_STREAM, 0)
        for stream in self.sources:
            for seq, data in got.get(stream, ()):
                try:
                    fwd = codec.decode_to(data)
                except codec.BadEntry as e:
                    pos[stream] = seq
                    self._bad(stream, seq, str(e))
                    continue
                if fwd.admin > admin_pos:
                    break  # its market may not be added yet: wait for the admin stream
                pos[stream] = seq
                codec.stamp(fwd.cmd, self.stamp())
                items.append(self._apply(fwd.cmd, InputRef(stream, seq)))
        if self._tick_due:
            self._tick_due = False
            items.append(self._apply(mc.Tick(ts=self.stamp()), TICK_INPUT))
        if pos == self.pos and not items:
            return None
        self.pos = pos
        for item in items:
            for ev in item.events:
                if type(ev) is Trade:
                    self.trades_total += 1
        return codec.encode(codec.MatchEntry(pos, items)), {}, len(items)

    def events_of(self, entry: bytes) -> list[Event]:
        """Every event in one of our log entries (for tests and readers)."""
        return [ev for item in codec.decode_match_entry(entry).items for ev in item.events]
