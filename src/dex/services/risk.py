"""The risk shard: the single writer of `dex:{risk:r}:log` and of its streams to matching.

Reads the admin stream, its request stream `dex:{risk:r}:in` and every matching shard's
events, stamps each input's time, applies it to the pure `dex.risk.Ledger` and appends one
`RiskEntry` per batch; in the same atomic step the orders it accepted (and the amends and
cancels it passes on) go to `dex:{risk:r}:to:m` of each market's matching shard.

Of the matching events it keeps (and logs) only what the ledger uses: every trade (last
prices), status changes, and events of orders in its own id space. Backpressure: when a
matching shard has more than `max_lag` of our entries not yet applied (as that shard records
in its own log), the shell logs `set_backpressure(on)` for that shard's markets, and `off`
once the lag is down to half.
"""

from __future__ import annotations

from typing import Any

from dex.core.commands import InputRef
from dex.core.errors import CommandError
from dex.core.events import (
    Event,
    MarketStatusChanged,
    Trade,
)
from dex.matching import Engine
from dex.risk import Ledger, LedgerHalted
from dex.risk import commands as rc
from dex.risk.address import canonical_address
from dex.risk.events import OrderAcceptedForMatching, OrderCommandForwarded, RiskEvent
from dex.runtime.settings import DEFAULTS
from dex.services.shard import Divergence, InputFailed, ShardWorker
from dex.wire import codec
from dex.wire.layout import (
    ADMIN_STREAM,
    PERSISTENCE_READER,
    me_log,
    me_tag,
    risk_in,
    risk_log,
    risk_tag,
    risk_to,
    shard_for,
    snapshot_name,
)


class RiskShard(ShardWorker):
    """Risk shard `r` of `risk_shards`, feeding `matching_shards` matching shards."""

    def __init__(
        self,
        bus: Any,
        r: int,
        *,
        matching_shards: int,
        risk_shards: int,
        max_lag: int = DEFAULTS.max_lag,
        max_api_keys: int = DEFAULTS.max_api_keys,
        **kw: Any,
    ) -> None:
        super().__init__(bus, risk_tag(r), risk_log(r), log_readers=(PERSISTENCE_READER,), **kw)
        self.r = r
        self.risk_shards = risk_shards
        self.matching_shards = matching_shards
        self.requests = risk_in(r)
        self.me_streams = [me_log(m) for m in range(matching_shards)]
        self.committed_inputs = tuple(self.me_streams)
        self.to_streams = [risk_to(r, m) for m in range(matching_shards)]
        self.max_lag = max_lag
        self.max_api_keys = max_api_keys  # configuration, like the shard counts: not snapshotted
        self.ledger = Ledger(r, risk_shards, max_api_keys)
        self.to_last = [0] * matching_shards  # last entry we wrote to each to-stream
        self.to_applied = [0] * matching_shards  # how far each matching shard has applied them
        self.lagging = [False] * matching_shards
        self.halted: str | None = None

    # ------------------------------------------------------------------ core hooks

    def reset(self) -> None:
        self.ledger = Ledger(self.r, self.risk_shards, self.max_api_keys)

    def dump_core(self) -> bytes:
        return self.ledger.snapshot()

    def load_core(self, data: bytes) -> None:
        self.ledger = Ledger.restore(data, self.max_api_keys)

    def state_hash(self) -> str:
        return self.ledger.state_hash()

    def state_size(self) -> int:
        led = self.ledger
        return len(led.orders) + len(led.closed) + len(led.accounts)

    async def recover(self) -> None:
        await super().recover()
        for m, stream in enumerate(self.to_streams):
            self.to_last[m] = await self.bus.last(stream)
            self.to_applied[m] = (await self.bus.positions(stream)).get(f"me:{m}", 0)
        for m in range(self.matching_shards):
            self.lagging[m] = any(
                info.backpressure
                for sym, info in self.ledger.markets.items()
                if shard_for(sym, self.matching_shards) == m
            )
        self.halted = self.ledger.halted or None

    def inputs(self) -> dict[str, int]:
        pos = self.pos
        return {s: pos.get(s, 0) for s in (ADMIN_STREAM, *self.me_streams, self.requests)}

    def _apply(
        self, cmd: rc.RiskCommand | None, mev: Event | None, src: InputRef, ts: int
    ) -> codec.RiskItem:
        item: Any = cmd if cmd is not None else mev
        try:
            events = self.ledger.apply(item, src, ts)
        except (CommandError, LedgerHalted) as e:
            return codec.RiskItem(src, ts, cmd, mev, [], str(e))
        except Exception as e:  # not a refusal: the shard must stop here (InputFailed)
            raise InputFailed(self.tag, f"{src.stream}#{src.log_seq}", e) from e
        return codec.RiskItem(src, ts, cmd, mev, events)

    def replay(self, log_seq: int, entry: bytes) -> int:
        logged = codec.decode_risk_entry(entry)
        for item in logged.items:
            again = self._apply(item.cmd, item.mev, item.input, item.ts)
            if again.events != item.events or again.error != item.error:
                raise Divergence(
                    f"{self.tag}: log entry {log_seq}, input {item.input.stream}"
                    f"#{item.input.log_seq}: re-applying gave different events"
                )
            self.ts = max(self.ts, item.ts)
        self.pos = dict(logged.pos)
        return len(logged.items)

    def _mine(self, cmd: object) -> bool:
        """An admin command naming an account is for that account's shard only."""
        account = getattr(cmd, "account", None)
        if account is None:
            return True
        canonical = canonical_address(account)
        return canonical is None or shard_for(canonical, self.risk_shards) == self.r

    def _own(self, ev: Event) -> bool:
        kind = type(ev)
        if kind is Trade or kind is MarketStatusChanged:
            return True
        oid = getattr(ev, "order_id", None)
        return oid is not None and oid >> 40 == self.r

    def _command(self, cmd: rc.RiskCommand, src: InputRef) -> codec.RiskItem:
        ts = self.stamp()
        codec.stamp(cmd, ts)
        return self._apply(cmd, None, src, ts)

    def process(
        self, got: dict[str, list[tuple[int, bytes]]]
    ) -> tuple[bytes, dict[str, list[bytes]], int] | None:
        items: list[codec.RiskItem] = []
        pos = dict(self.pos)
        for seq, data in got.get(ADMIN_STREAM, ()):
            pos[ADMIN_STREAM] = seq
            try:
                admin = codec.decode_admin(data)
            except codec.BadEntry as e:
                self._bad(ADMIN_STREAM, seq, str(e))
                continue
            if isinstance(admin, codec.RISK_ADMIN) and self._mine(admin):
                items.append(self._command(admin, InputRef(ADMIN_STREAM, seq)))
        for m, stream in enumerate(self.me_streams):
            for seq, data in got.get(stream, ()):
                pos[stream] = seq
                try:
                    entry = codec.decode_match_events(data)
                except codec.BadEntry as e:
                    self._bad(stream, seq, str(e))
                    continue
                self.to_applied[m] = entry.pos.get(self.to_streams[m], 0)
                src = InputRef(stream, seq)
                for mitem in entry.items:
                    for ev in mitem.events:
                        if self._own(ev):
                            items.append(self._apply(None, ev, src, self.stamp()))
        for seq, data in got.get(self.requests, ()):
            pos[self.requests] = seq
            try:
                cmd = codec.decode_risk_command(data)
            except codec.BadEntry as e:
                self._bad(self.requests, seq, str(e))
                continue
            items.append(self._command(cmd, InputRef(self.requests, seq)))
        items.extend(self._backpressure())
        if pos == self.pos and not items:
            return None
        self.pos = pos
        also = self._forward(items, pos.get(ADMIN_STREAM, 0))
        self.halted = self.ledger.halted or None
        return codec.encode(codec.RiskEntry(pos, items)), also, len(items)

    def _backpressure(self) -> list[codec.RiskItem]:
        """Log set_backpressure for the markets of a matching shard whose lag crossed a bound."""
        out: list[codec.RiskItem] = []
        for m in range(self.matching_shards):
            lag = self.to_last[m] - self.to_applied[m]
            if self.lagging[m]:
                if lag > self.max_lag // 2:
                    continue
            elif lag <= self.max_lag:
                continue
            self.lagging[m] = not self.lagging[m]
            for symbol in list(self.ledger.markets):
                if shard_for(symbol, self.matching_shards) == m:
                    cmd = rc.SetBackpressure(market=symbol, on=self.lagging[m])
                    out.append(self._command(cmd, InputRef(f"shell:{self.tag}", 0)))
        return out

    def _forward(self, items: list[codec.RiskItem], admin_pos: int) -> dict[str, list[bytes]]:
        also: dict[str, list[bytes]] = {}
        for item in items:
            for ev in item.events:
                cmd: codec.ForwardedCommand
                if isinstance(ev, OrderAcceptedForMatching):
                    market, cmd = ev.market, ev.place
                elif isinstance(ev, OrderCommandForwarded):
                    market, cmd = ev.market, ev.command
                else:
                    continue
                m = shard_for(market, self.matching_shards)
                also.setdefault(self.to_streams[m], []).append(
                    codec.encode(codec.ToEntry(admin_pos, cmd))
                )
                self.to_last[m] += 1
        return also

    async def trim(self) -> None:
        await super().trim()
        p = self.pos.get(self.requests, 0)
        if p:
            await self.bus.trim(self.requests, p + 1)
        for m, stream in enumerate(self.to_streams):
            applied = (await self.bus.positions(stream)).get(f"me:{m}", 0)
            if applied:
                await self.bus.trim(stream, applied + 1)

    # ------------------------------------------------------------------ idle audit

    def open_orders(self, market: str) -> dict[int, int]:
        """Our open orders in `market`: order id -> lots not yet filled."""
        return {
            o.oid: o.size - o.filled
            for o in self.ledger.orders.values()
            if o.market.symbol == market and o.size
        }

    async def audit_idle(self) -> tuple[list[str], dict[str, str]]:
        """Compare our open orders with the engine's, market by market, where both sides are at
        the same cut: the matching shard's latest snapshot is exactly where we have read its
        log, and it had applied every order we passed on. Returns (markets checked,
        {market: difference}). Markets of a busy shard are skipped, not guessed."""
        checked: list[str] = []
        differ: dict[str, str] = {}
        for m in range(self.matching_shards):
            snap = await self.bus.get_snapshot(snapshot_name(me_tag(m)))
            if snap is None:
                continue
            seq, data = snap
            if seq != self.pos.get(self.me_streams[m], 0):
                continue
            env = codec.decode_snapshot(data)
            if env.pos.get(self.to_streams[m], 0) != self.to_last[m]:
                continue
            engine = Engine.restore(env.core)
            for symbol, book in engine.markets.items():
                theirs = {oid: o.remaining for oid, o in book.orders.items() if oid >> 40 == self.r}
                theirs.update(
                    (oid, st.cmd.size) for oid, st in book.stops.items() if oid >> 40 == self.r
                )
                ours = self.open_orders(symbol)
                checked.append(symbol)
                if theirs != ours:
                    diff = sorted(set(theirs.items()) ^ set(ours.items()))[:5]
                    differ[symbol] = (
                        f"risk has {len(ours)} open orders, the engine {len(theirs)}; "
                        f"(order id, lots) on one side only: {diff}"
                    )
        return checked, differ

    def events_of(self, entry: bytes) -> list[RiskEvent]:
        return [ev for item in codec.decode_risk_entry(entry).items for ev in item.events]
