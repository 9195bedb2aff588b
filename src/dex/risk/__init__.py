"""The risk ledger (pure): balances, holds, pre-trade checks, settlement and fees.

`Ledger(shard, shard_count).apply(item, input_ref, ts) -> list[RiskEvent]` where `item` is a
risk command (`dex.risk.commands`) or a matching event (`dex.core.events`). Depends on
`dex.core` (and the matching engine's structural checks of the commands it forwards); nothing
depends on it but the risk service shell. The rules are in docs/risk.md.
"""

from dex.core.enums import OrderStatus
from dex.risk.codes import Control, RiskCode
from dex.risk.ledger import Ledger, LedgerHalted

__all__ = ["Control", "Ledger", "LedgerHalted", "OrderStatus", "RiskCode"]
