"""Events of the risk ledger: every change of a risk shard's state is one of these.

Every event carries the schema version `v`, the input's time `ts`, the shard's gap-free
`log_seq` and `input`, the position of the command or matching event that caused it. Events
that change an account's balance carry the account's new balance of each asset touched
(`available`, `locked`). Constructed positionally on the hot path, so the field order is part
of the contract: base fields first, in the order of `_RiskEvent`.

Amounts are asset units; prices ticks; sizes lots.
"""

from __future__ import annotations

import msgspec

from dex.core.commands import Amend, CancelAll, InputRef
from dex.core.commands import Cancel as MatchCancel
from dex.core.commands import Place as MatchPlace
from dex.core.enums import OrderStatus, Side
from dex.core.markets import Asset, MarketSpec
from dex.risk.codes import Control, ReleaseCause, RiskCode


class _RiskEvent(msgspec.Struct, frozen=True, gc=False, tag_field="event"):
    v: int
    ts: int
    log_seq: int
    input: InputRef


class AssetAdded(_RiskEvent, frozen=True, tag="asset_added"):
    asset: Asset


class MarketAdded(_RiskEvent, frozen=True, tag="market_added"):
    spec: MarketSpec


class FeesChanged(_RiskEvent, frozen=True, tag="fees_changed"):
    """A market's rates (account None) or an account's tier (market None; None rates: removed)."""

    market: str | None
    account: str | None
    maker_bps: int | None
    taker_bps: int | None


class LimitsChanged(_RiskEvent, frozen=True, tag="limits_changed"):
    account: str
    max_open_orders: int
    max_order_notional: dict[str, int]


class ControlChanged(_RiskEvent, frozen=True, tag="control_changed"):
    control: Control
    account: str | None
    market: str | None
    on: bool


class RequestRejected(_RiskEvent, frozen=True, tag="request_rejected"):
    """A refused request that is not an order command (funds, fees, limits)."""

    request: str
    account: str | None
    code: RiskCode
    message: str


class DepositCredited(_RiskEvent, frozen=True, tag="deposit_credited"):
    account: str
    asset: str
    amount: int
    tx_id: str
    log_index: int
    available: int
    locked: int


class WithdrawalRequested(_RiskEvent, frozen=True, tag="withdrawal_requested"):
    """The amount moved from available to locked; the chain adapter pays it out."""

    withdrawal_id: int
    account: str
    asset: str
    amount: int
    available: int
    locked: int


class WithdrawalCompleted(_RiskEvent, frozen=True, tag="withdrawal_completed"):
    withdrawal_id: int
    account: str
    asset: str
    amount: int
    tx_id: str
    available: int
    locked: int


class WithdrawalFailed(_RiskEvent, frozen=True, tag="withdrawal_failed"):
    """The amount went back to available."""

    withdrawal_id: int
    account: str
    asset: str
    amount: int
    reason: str
    available: int
    locked: int


class OrderAcceptedForMatching(_RiskEvent, frozen=True, tag="order_accepted_for_matching"):
    """Risk held `hold` of `hold_asset`; `place` goes to the market's matching shard."""

    account: str
    market: str
    order_id: int
    client_order_id: str | None
    hold_asset: str
    hold: int
    max_price: int
    min_price: int
    place: MatchPlace
    available: int
    locked: int


class OrderCommandForwarded(_RiskEvent, frozen=True, tag="order_command_forwarded"):
    """An amend, cancel or cancel_all for matching; an amend may first hold an increase."""

    account: str
    market: str
    order_id: int | None
    command: Amend | MatchCancel | CancelAll
    hold_asset: str | None
    hold_increase: int
    available: int
    locked: int


class OrderRejected(_RiskEvent, frozen=True, tag="order_rejected"):
    """A place, amend, cancel or cancel_all refused by risk; nothing was held or sent."""

    request: str
    account: str
    market: str
    order_id: int | None
    client_order_id: str | None
    code: RiskCode
    message: str


class OrderDuplicate(_RiskEvent, frozen=True, tag="order_duplicate"):
    """A place that repeated a client order id in use: the earlier order's outcome.

    `detail` is the engine's reject code or cancel reason when there is one, else "".
    """

    account: str
    market: str
    client_order_id: str
    order_id: int
    status: OrderStatus
    filled: int
    detail: str


class FundsReleased(_RiskEvent, frozen=True, tag="funds_released"):
    """Held funds back to available: an order's end (`cause` its status), or an amend settled.

    Emitted for every end of an order of this shard, with `amount` 0 if nothing was held.
    """

    account: str
    market: str
    order_id: int
    cause: ReleaseCause
    asset: str
    amount: int
    available: int
    locked: int


class Settlement(msgspec.Struct, frozen=True, gc=False):
    """One side of a trade as this shard applied it (`fee` negative: a rebate)."""

    account: str
    order_id: int
    side: Side
    paid: int
    received: int
    fee: int
    released: int
    base_available: int
    base_locked: int
    quote_available: int
    quote_locked: int
    fee_account_balance: int


class TradeSettled(_RiskEvent, frozen=True, tag="trade_settled"):
    """A trade's sides that belong to this shard (the other is None if not ours)."""

    market: str
    trade_id: int
    price: int
    size: int
    maker: Settlement | None
    taker: Settlement | None


class ApiKeyRegistered(_RiskEvent, frozen=True, tag="api_key_registered"):
    """An API key of the account, live from now until `expires_at` (ms, 0 never) or revoked.

    `material` is what `register_api_key` carried: a sealed HMAC secret or a public key.
    """

    account: str
    api_key: str
    key_type: str
    material: str
    permissions: str
    expires_at: int


class ApiKeyRevoked(_RiskEvent, frozen=True, tag="api_key_revoked"):
    """The key is dead for good; its id is never registered again."""

    account: str
    api_key: str


class Halted(_RiskEvent, frozen=True, tag="halted"):
    """The shard found its own invariants broken and refuses all further work."""

    reason: str


RiskEvent = (
    AssetAdded
    | MarketAdded
    | FeesChanged
    | LimitsChanged
    | ControlChanged
    | RequestRejected
    | DepositCredited
    | WithdrawalRequested
    | WithdrawalCompleted
    | WithdrawalFailed
    | OrderAcceptedForMatching
    | OrderCommandForwarded
    | OrderRejected
    | OrderDuplicate
    | FundsReleased
    | TradeSettled
    | ApiKeyRegistered
    | ApiKeyRevoked
    | Halted
)
