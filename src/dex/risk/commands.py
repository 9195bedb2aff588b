"""Commands of the risk ledger, in integer form (ticks, lots, asset units, nanoseconds).

What the gateway, the chain adapter and operators send to a risk shard. Parsed from outside,
so every type forbids unknown fields. `ts` is the time the shell stamped when it logged the
command (`max(previous + 1, clock)`); 0 means "the ledger's current time".

Orders use the matching engine's integer conventions (see docs/matching-rules.md): prices in
ticks, sizes in lots, `quote_size` in quote-asset units, 0 for an absent number. Risk assigns
the order id and stamps the protection price, so a `place` carries neither.
"""

from __future__ import annotations

import msgspec

from dex.core.commands import AddAsset as AddAsset  # shared with matching
from dex.core.commands import AddMarket as AddMarket
from dex.core.commands import CommandStruct
from dex.core.enums import STP, OrderType, Side, TimeInForce

SCHEMA_VERSION = 1


class _Command(CommandStruct, frozen=True, kw_only=True):
    ts: int = 0
    v: int = SCHEMA_VERSION


# ---------------------------------------------------------------- admin
# add_asset and add_market are the core's commands (dex.core.commands), shared with matching.


class SetFees(_Command, frozen=True, tag="set_fees"):
    """A market's maker and taker rates in basis points (a negative maker rate is a rebate)."""

    market: str
    maker_bps: int
    taker_bps: int


MAX_BPS = 10_000  # a fee rate is at most 100%, either way
FEE_RATES_RULE = "rates must be within +-10000 bps and maker_bps >= -taker_bps"


def fee_rates_ok(maker_bps: int, taker_bps: int) -> bool:
    """Whether a maker and taker rate may be set (`FEE_RATES_RULE`): each within +-100%, and
    a maker rebate never above the taker fee (the exchange never pays out more than it takes
    on one trade)."""
    return (
        -MAX_BPS <= maker_bps <= MAX_BPS
        and -MAX_BPS <= taker_bps <= MAX_BPS
        and maker_bps >= -taker_bps
    )


class SetAccountFees(_Command, frozen=True, tag="set_account_fees"):
    """An account's own rates for every market (a fee tier); both None removes them."""

    account: str
    maker_bps: int | None = None
    taker_bps: int | None = None


class SetLimits(_Command, frozen=True, tag="set_limits"):
    """An account's limits; each replaces the previous set. 0 / absent: no limit.

    `max_order_notional` maps a quote asset to the largest notional (in its units) of one
    order in any market quoted in it.
    """

    account: str
    max_open_orders: int = 0
    max_order_notional: dict[str, int] = msgspec.field(default_factory=dict)


class Freeze(_Command, frozen=True, tag="freeze"):
    account: str


class Unfreeze(_Command, frozen=True, tag="unfreeze"):
    account: str


class DisableTrading(_Command, frozen=True, tag="disable_trading"):
    """Refuse new orders and amends of one account, in one market or (None) all markets."""

    account: str
    market: str | None = None


class EnableTrading(_Command, frozen=True, tag="enable_trading"):
    account: str
    market: str | None = None


class GlobalHalt(_Command, frozen=True, tag="global_halt"):
    pass


class Resume(_Command, frozen=True, tag="resume"):
    pass


class SetBackpressure(_Command, frozen=True, tag="set_backpressure"):
    """Set by the shell when the market's matching shard lags too far behind this shard."""

    market: str
    on: bool


# ---------------------------------------------------------------- funds


class Deposit(_Command, frozen=True, tag="deposit"):
    """A deposit seen on chain; `(tx_id, log_index)` credits it exactly once.

    The faucet is a deposit whose `tx_id` is `faucet:<n>` (n decimal digits).
    """

    account: str
    asset: str
    amount: int
    tx_id: str
    log_index: int = 0


class Withdraw(_Command, frozen=True, tag="withdraw"):
    account: str
    asset: str
    amount: int


class WithdrawalCompleted(_Command, frozen=True, tag="withdrawal_completed"):
    withdrawal_id: int
    tx_id: str


class WithdrawalFailed(_Command, frozen=True, tag="withdrawal_failed"):
    withdrawal_id: int
    reason: str = ""


# ---------------------------------------------------------------- orders


class Place(_Command, frozen=True, tag="place"):
    market: str
    account: str
    side: Side
    type: OrderType
    size: int = 0
    price: int = 0
    quote_size: int = 0
    tif: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    stp: STP = STP.EXPIRE_TAKER
    client_order_id: str | None = None
    expires_at: int | None = None
    trigger_price: int = 0
    display_size: int = 0
    # a wallet-signed order's nonce, in [1, 2^63): once per account in any 24 hours; it stays
    # with risk (matching's place has no such field)
    nonce: int | None = None
    # the API key that placed it (an id, never a secret): `cancel_all` with `via` cancels
    # exactly the open orders placed through one key (a connection's cancel-on-disconnect)
    via: str | None = None


class Amend(_Command, frozen=True, tag="amend"):
    """New total size (0: unchanged) and/or new price (0: unchanged) of an open order."""

    market: str
    account: str
    order_id: int | None = None
    client_order_id: str | None = None
    price: int = 0
    size: int = 0


class Cancel(_Command, frozen=True, tag="cancel"):
    market: str
    account: str
    order_id: int | None = None
    client_order_id: str | None = None


class CancelAll(_Command, frozen=True, tag="cancel_all"):
    """Cancel the account's open orders (in one market if given; with `via`, only those
    placed through that API key, each forwarded as its own cancel)."""

    account: str
    market: str | None = None
    via: str | None = None


# ---------------------------------------------------------------- API keys


class RegisterApiKey(_Command, frozen=True, tag="register_api_key"):
    """An API key the account's wallet signed for (the gateway checked the signature).

    `api_key` is the key's public id, `dk_` + 32 lowercase hex digits. `material` is, for an
    `hmac` key, the sealed secret (1 to 200 characters of the base64url alphabet, `=` padding
    allowed); for an `ed25519` key, the raw 32-byte public key as 64 lowercase hex digits.
    `permissions` is a non-empty subset of read,trade,withdraw, comma-separated in that order.
    `nonce` is the wallet's, in [0, 2^63), once per account (shared with a wallet-signed
    revoke); `expires_at` is in ms since the epoch, 0 never.
    """

    account: str
    api_key: str
    key_type: str
    material: str
    permissions: str
    nonce: int
    expires_at: int = 0


class RevokeApiKey(_Command, frozen=True, tag="revoke_api_key"):
    """Revoke an API key of the account; `nonce` is set when the wallet signed the
    revocation, and is then used up like a registration's."""

    account: str
    api_key: str
    nonce: int | None = None


RiskCommand = (
    AddAsset
    | AddMarket
    | SetFees
    | SetAccountFees
    | SetLimits
    | Freeze
    | Unfreeze
    | DisableTrading
    | EnableTrading
    | GlobalHalt
    | Resume
    | SetBackpressure
    | Deposit
    | Withdraw
    | WithdrawalCompleted
    | WithdrawalFailed
    | Place
    | Amend
    | Cancel
    | CancelAll
    | RegisterApiKey
    | RevokeApiKey
)
