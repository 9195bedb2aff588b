"""Test harness: risk shards and the real matching engine wired together, in memory.

`Desk.do(cmd)` stamps the command's time, routes it to its risk shard (admin commands to
every shard), sends what risk forwards to the engine (restamped with the engine's own
increasing time) and every engine event to every shard, and returns all the risk events this
produced, in order. With `hold=True` the forwarded commands wait in `to_matching` and the
engine's events in `to_risk`, so tests can deliver them later (`pump`), like a real bus.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from dex.core import commands as mc
from dex.core.commands import InputRef
from dex.core.events import Event
from dex.core.numbers import DAY_NS
from dex.matching.engine import Engine
from dex.risk import commands as rc
from dex.risk.address import canonical_address, shard_of
from dex.risk.events import OrderAcceptedForMatching, OrderCommandForwarded, RiskEvent
from dex.risk.ledger import Ledger
from tests.support.markets import E_USD, T_USD

T0 = 1_000_000
DAY = DAY_NS  # the 24-hour client-order-id memory

# The desk's two markets (tests/support/markets.py): T-USD, tick 1 and lot 1, and E-USD, tick 0.5
# and lot 0.1 (needs USD at 2 decimals: add_asset `USD` first).
SIMPLE = T_USD
FINE = E_USD


def addr(i: int) -> str:
    return f"0x{i:040x}"


def owner(account: str, shards: int) -> int:
    canon = canonical_address(account)
    return shard_of(canon, shards) if canon is not None else 0


class Desk:
    def __init__(self, shards: int = 1, *, hold: bool = False) -> None:
        self.ledgers = [Ledger(i, shards) for i in range(shards)]
        self.engine = Engine()
        self.hold = hold
        self.ts = T0
        self.mts = T0
        self.n_risk = 0
        self.n_match = 0
        self.to_matching: deque[mc.Command] = deque()
        self.to_risk: deque[tuple[Event, InputRef]] = deque()
        self.events: list[RiskEvent] = []  # every risk event, all shards, in order
        self.match_events: list[Event] = []

    @property
    def ledger(self) -> Ledger:
        return self.ledgers[0]

    def shard_for(self, cmd: Any) -> list[int]:
        count = len(self.ledgers)
        if isinstance(cmd, rc.WithdrawalCompleted | rc.WithdrawalFailed):
            return [cmd.withdrawal_id >> 40]
        account = getattr(cmd, "account", None)
        if account is None:
            return list(range(count))
        return [owner(account, count)]

    def do(self, cmd: Any, *, ts: int | None = None) -> list[RiskEvent]:
        """Apply a risk command (stamped now) and, unless holding, everything it causes."""
        self.ts = ts if ts is not None else self.ts + 1
        cmd = msgspec.structs.replace(cmd, ts=self.ts)
        start = len(self.events)
        for shard in self.shard_for(cmd):
            self.n_risk += 1
            out = self.ledgers[shard].apply(cmd, InputRef("risk-in", self.n_risk))
            self.events.extend(out)
            self._forward(out)
        if isinstance(cmd, rc.AddMarket):
            self._engine(mc.AddMarket(spec=cmd.spec))
        elif isinstance(cmd, rc.AddAsset):
            self._engine(mc.AddAsset(asset=cmd.asset))
        if not self.hold:
            self.pump()
        return self.events[start:]

    def _forward(self, out: list[RiskEvent]) -> None:
        for e in out:
            if isinstance(e, OrderAcceptedForMatching):
                self.to_matching.append(e.place)
            elif isinstance(e, OrderCommandForwarded):
                self.to_matching.append(e.command)

    def _engine(self, cmd: mc.Command) -> None:
        self.mts += 1
        if cmd.ts or not isinstance(cmd, mc.AddMarket | mc.AddAsset):
            cmd = msgspec.structs.replace(cmd, ts=self.mts)
        self.n_match += 1
        for e in self.engine.apply(cmd, InputRef("match-in", self.n_match)):
            self.match_events.append(e)
            self.to_risk.append((e, InputRef("match-out", e.log_seq)))

    def step_matching(self) -> bool:
        if not self.to_matching:
            return False
        self._engine(self.to_matching.popleft())
        return True

    def step_risk(self) -> bool:
        if not self.to_risk:
            return False
        e, ref = self.to_risk.popleft()
        for led in self.ledgers:
            out = led.apply(e, ref, self.ts)
            self.events.extend(out)
            self._forward(out)
        return True

    def pump(self) -> None:
        """Deliver everything in flight until nothing is."""
        while self.step_matching() or self.step_risk():
            pass

    def engine_cmd(self, cmd: mc.Command) -> list[RiskEvent]:
        """A command straight to the engine (an operator's market status change, a tick)."""
        start = len(self.events)
        self._engine(cmd)
        if not self.hold:
            self.pump()
        return self.events[start:]

    # ------------------------------------------------------------------ views

    def bal(self, account: str, asset: str) -> tuple[int, int]:
        led = self.ledgers[owner(account, len(self.ledgers))]
        return led.balance(canonical_address(account) or account, asset)

    def fees(self, asset: str) -> int:
        return sum(led.fee_balance(asset) for led in self.ledgers)
