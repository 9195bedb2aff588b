"""The state of the matching engine and the helpers every part of it uses.

`Engine` (engine.py: `apply`, place, take, match) is this state with its parts mixed in:
amend and cancel (amend.py), stops and expiry (stops.py), the admin commands (admin.py), as
the risk ledger is. A mixin's methods are the engine's own, so a call costs what it would if
they were written in one class. The snapshot (snapshot.py) reads and rebuilds this state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dex.core.commands import InputRef
from dex.core.enums import CancelReason
from dex.core.errors import CommandError
from dex.core.markets import Asset
from dex.matching.book import Order, StopOrder
from dex.matching.market import MarketState, Ref

if TYPE_CHECKING:
    from dex.core.commands import Place
    from dex.core.enums import OrderType
    from dex.core.events import Event


class _Core:
    """All markets of one matching shard: the state, and helpers the parts share."""

    def __init__(self) -> None:
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, MarketState] = {}
        self.ts = 0
        self.log_seq = 0
        self.admin_seq = 0  # seq of the market-less stream "" (asset_added)
        self.max_id = 0
        self.id_spaces: dict[int, int] = {}  # order_id >> 40 -> highest id seen
        self.id_end = 0  # first id of the space after max_id's (0: unknown, see _fresh_id)
        self.expiries: list[tuple[int, int, str]] = []  # heap of (expires_at, order_id, market)

    if TYPE_CHECKING:
        # what one part calls of another (the engine has them all)

        def _take(
            self,
            m: MarketState,
            order: Order,
            kind: OrderType,
            cmd: Place,
            ref: Ref | None,
            events: list[Event],
            ts: int,
            src: InputRef,
        ) -> None: ...

        def _finish(
            self,
            m: MarketState,
            order: Order,
            quote_left: int,
            reason: CancelReason,
            events: list[Event],
            ts: int,
            src: InputRef,
        ) -> None: ...

        def _triggers(
            self, m: MarketState, ref: Ref | None, events: list[Event], ts: int, src: InputRef
        ) -> None: ...

        def _expire(self, ts: int, src: InputRef, events: list[Event]) -> None: ...

        def _cancel_one(
            self,
            m: MarketState,
            found: Order | StopOrder,
            reason: CancelReason,
            events: list[Event],
            ts: int,
            src: InputRef,
        ) -> None: ...

    # ------------------------------------------------------------------ helpers

    def _check_ts(self, ts: int) -> int:
        if ts <= self.ts:
            raise CommandError("ts", f"must be above the previous ts {self.ts}, got {ts}")
        return ts

    def _admin_ts(self, ts: int) -> int:
        return self.ts if ts == 0 else self._check_ts(ts)

    def _market(self, symbol: str) -> MarketState:
        m = self.markets.get(symbol)
        if m is None:
            raise CommandError("market", f"unknown market {symbol!r}")
        return m

    def _next_log_seq(self) -> int:
        self.log_seq += 1
        return self.log_seq

    def _unindex(
        self, m: MarketState, entry: Order | StopOrder, account: str, cid: str | None
    ) -> None:
        """Forget an open order (resting or stop) that has ended."""
        if cid is not None:
            m.drop_cid(cid, entry)
        if m.params.max_open_orders:
            self._uncount(m, account)

    @staticmethod
    def _uncount(m: MarketState, account: str) -> None:
        left = m.open_count[account] - 1
        if left:
            m.open_count[account] = left
        else:
            del m.open_count[account]
