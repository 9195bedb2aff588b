"""The records a risk shard keeps, and the base class holding its state and shared helpers.

A balance is a two-item list `[available, locked]` per (account, asset): orders and pending
withdrawals keep a reference to the list they hold from, so settlement updates it in place.

Invariant: for every account and asset, `available >= 0`, `locked >= 0` and `locked` equals
the sum of the holds of the account's open orders in that asset (plus pending amend increases)
plus its pending withdrawals of that asset. Fee accounts may be negative (maker rebates).
`_Core._check` verifies it for one account, in O(its open orders); the ledger runs it after
every input that releases funds or ends an order or a withdrawal (terminal events, amends,
withdrawal reports and requests), and after a fill whose signs look wrong. A place only moves
available to locked after checking the amount is available, and a fill moves the same amount
out of the order's hold and the account's locked, so both are covered by the next full check.

API keys are state of the shard too: every key registered here (`keys`, by id, live and
revoked; a revoked id is kept for good so it is never registered again), the live ones of each
account (`live_keys`, the same objects: not revoked, expired ones dropped when the account
registers another), each account's used wallet nonces (`wallet_nonces`, kept for good), and
the nonces of wallet-signed orders of the last 24 hours (`order_nonces`, with `nonce_times`
in the order they were used, for pruning by time).
"""

from __future__ import annotations

from collections import deque

import msgspec

from dex.core.enums import MarketStatus, OrderStatus, OrderType
from dex.core.errors import CommandError
from dex.core.markets import Asset, MarketParams
from dex.risk.address import shard_of

SCHEMA_VERSION = 1
MAX_AMOUNT = 2**63 - 1

Balance = list[int]  # [available, locked]
PENDING = OrderStatus.PENDING


class MarketInfo:
    """What risk knows of a market: its integer parameters, fees, last price and status."""

    __slots__ = (
        "backpressure",
        "band_bps",
        "base",
        "last",
        "lot_units",
        "maker_bps",
        "open",
        "params",
        "quote",
        "status",
        "symbol",
        "taker_bps",
        "tick_lot_units",
    )

    def __init__(self, params: MarketParams) -> None:
        self.params = params
        self.symbol = params.symbol
        self.base = params.base.symbol
        self.quote = params.quote.symbol
        self.lot_units = params.lot_units
        self.tick_lot_units = params.tick_lot_units
        self.band_bps = params.band_bps
        self.last = 0  # last trade price in ticks seen on the matching stream, 0: none
        self.maker_bps = 0
        self.taker_bps = 0
        self.set_status(params.spec.status, False)

    def set_status(self, status: MarketStatus, backpressure: bool) -> None:
        self.status = status
        self.backpressure = backpressure
        # whether risk takes new orders for it (matching decides what post_only admits)
        self.open = not backpressure and status in _OPEN_STATUSES


_OPEN_STATUSES = (MarketStatus.ACTIVE, MarketStatus.POST_ONLY)


class Account:
    __slots__ = (
        "addr",
        "bal",
        "disabled",
        "fees",
        "frozen",
        "max_notional",
        "max_open",
        "orders",
        "withdrawals",
    )

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.bal: dict[str, Balance] = {}
        self.orders: dict[int, Order] = {}  # open orders of this account, by id
        self.withdrawals: dict[int, Withdrawal] = {}  # pending, by id
        self.frozen = False
        self.disabled: set[str] = set()  # markets with trading disabled; "" = every market
        self.fees: tuple[int, int] | None = None  # (maker, taker) bps overriding the market's
        self.max_open = 0  # 0: no limit
        self.max_notional: dict[str, int] = {}  # quote asset -> max notional of one order

    def cell(self, asset: str) -> Balance:
        bal = self.bal.get(asset)
        if bal is None:
            bal = self.bal[asset] = [0, 0]
        return bal


class Order:
    """An order of this shard that has not ended: what it holds and how it settles.

    `cap` is the per-lot price a buy by base size holds at (its limit or protection price);
    0 for orders that hold a fixed amount (buys by quote, every sell).

    An order with a client order id stays under `key` in the client-id memory after it ends,
    as its own closed record (`status`, `filled`, `detail`, `ts`: like `Closed`).
    """

    __slots__ = (
        "account",
        "amending",
        "by_quote",
        "cap",
        "cid",
        "detail",
        "filled",
        "held",
        "hold_asset",
        "hold_bal",
        "is_buy",
        "key",
        "kind",
        "market",
        "oid",
        "pending",
        "price",
        "recv_bal",
        "size",
        "status",
        "ts",
        "via",
    )

    def __init__(
        self,
        oid: int,
        account: Account,
        market: MarketInfo,
        cid: str | None,
        is_buy: bool,
        kind: OrderType,
        by_quote: bool,
        price: int,
        cap: int,
        size: int,
        held: int,
        hold_bal: Balance,
        recv_bal: Balance,
        key: tuple[str, str, str] | None,
    ) -> None:
        self.oid = oid
        self.account = account
        self.market = market
        self.cid = cid
        self.is_buy = is_buy
        self.kind = kind
        self.by_quote = by_quote
        self.price = price  # limit price (limit and stop-limit orders), else 0
        self.cap = cap
        self.size = size  # total lots (0 for an order by quote amount)
        self.filled = 0
        self.held = held
        self.pending = 0  # an amend's increase, held until `amended` / `amend_rejected`
        self.amending = False
        self.status = PENDING  # a module constant: an enum member read off its class is slow
        self.hold_asset = market.quote if is_buy else market.base
        self.hold_bal = hold_bal  # the account's balance of hold_asset
        self.recv_bal = recv_bal  # ... and of the asset the order receives
        self.key = key  # (account, market, client order id); None without a client id
        self.detail = ""  # once ended: the engine's reject code or cancel reason, if any
        self.ts = 0  # once ended: when
        self.via: str | None = None  # the API key it was placed through, if any


class Closed:
    """An order that ended, remembered for 24 hours under its client order id (as restored
    from a snapshot; the live ledger keeps the ended `Order` itself)."""

    __slots__ = ("detail", "filled", "key", "oid", "status", "ts")

    def __init__(
        self,
        key: tuple[str, str, str],
        oid: int,
        status: OrderStatus,
        filled: int,
        detail: str,
        ts: int,
    ) -> None:
        self.key = key
        self.oid = oid
        self.status = status
        self.filled = filled
        self.detail = detail
        self.ts = ts


class Withdrawal:
    __slots__ = ("account", "amount", "asset", "bal", "wid")

    def __init__(self, wid: int, account: Account, asset: str, amount: int) -> None:
        self.wid = wid
        self.account = account
        self.asset = asset
        self.amount = amount
        self.bal = account.cell(asset)


class ApiKey(msgspec.Struct, gc=False):
    """An API key of an account (see `dex.risk.commands.RegisterApiKey` for the fields);
    `revoked` is the one field that changes, once, from False to True."""

    account: str
    api_key: str
    key_type: str
    material: str
    permissions: str
    expires_at: int  # ms since the epoch, 0 never
    revoked: bool = False

    def live(self, ts: int) -> bool:
        """Not revoked and not expired at `ts` (nanoseconds, an input's time)."""
        return not self.revoked and not (self.expires_at and self.expires_at <= ts // 1_000_000)


class LedgerHalted(RuntimeError):
    """Raised by `apply` once the shard has halted on a broken invariant."""


class _Core:
    """The state of one risk shard and the helpers every part of the ledger uses."""

    __slots__ = (
        "accounts",
        "assets",
        "broken",
        "cids",
        "closed",
        "deposits",
        "fee_account",
        "fees",
        "global_halt",
        "halted",
        "keys",
        "live_keys",
        "log_seq",
        "markets",
        "max_keys",
        "nonce_times",
        "order_nonces",
        "order_seq",
        "orders",
        "prefix",
        "shard",
        "shard_count",
        "ts",
        "wallet_nonces",
        "withdrawal_seq",
        "withdrawals",
    )

    def __init__(self, shard: int = 0, shard_count: int = 1) -> None:
        if not 0 <= shard < shard_count or shard >= 1 << 23:
            raise ValueError(f"shard {shard} is not in [0, {shard_count})")
        self.shard = shard
        self.shard_count = shard_count
        self.prefix = shard << 40
        self.fee_account = f"fee:{shard}"
        self.ts = 0
        self.log_seq = 0
        self.order_seq = 0
        self.withdrawal_seq = 0
        self.halted = ""  # the reason, once halted
        self.broken = ""  # set by a failed check during the current input
        self.global_halt = False
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, MarketInfo] = {}
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, Order] = {}  # every open order of this shard
        self.cids: dict[tuple[str, str, str], Order | Closed] = {}  # (account, market, cid)
        self.closed: deque[Order | Closed] = deque()  # ended orders with a client id, by end
        self.deposits: set[tuple[str, int]] = set()  # (tx id, log index) credited
        self.withdrawals: dict[int, Withdrawal] = {}  # pending, by id
        self.fees: dict[str, int] = {}  # this shard's fee account, per asset
        self.max_keys = 20  # live API keys per account (the ledger's constructor sets it)
        self.keys: dict[str, ApiKey] = {}  # every key of this shard's accounts, by id
        self.live_keys: dict[str, dict[str, ApiKey]] = {}  # account -> id -> key not revoked
        self.wallet_nonces: dict[str, set[int]] = {}  # account -> nonces used (keys)
        self.order_nonces: dict[tuple[str, int], int] = {}  # (account, nonce) -> when used
        self.nonce_times: deque[tuple[int, str, int]] = deque()  # (ts, account, nonce) by ts

    # ------------------------------------------------------------------ helpers

    def _account(self, addr: str) -> Account:
        """The account of a canonical address; it must belong to this shard."""
        acct = self.accounts.get(addr)
        if acct is None:
            owner = shard_of(addr, self.shard_count)
            if owner != self.shard:
                raise CommandError("account", f"{addr} belongs to risk shard {owner}")
            acct = self.accounts[addr] = Account(addr)
        return acct

    def _next(self) -> int:
        self.log_seq += 1
        return self.log_seq

    def _amount(self, asset: str, units: int) -> str:
        """`units` of `asset` as people write them: `"10.5 USDC"` (messages only)."""
        known = self.assets.get(asset)
        decimals = known.decimals if known is not None else 0
        whole, frac = divmod(abs(units), 10**decimals)
        text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)
        return f"{'-' if units < 0 else ''}{text} {asset}"

    def _check(self, acct: Account) -> None:
        """The self-check of one account, every asset (see the module docstring)."""
        for asset, cell in acct.bal.items():
            self._check_asset(acct, asset, cell)

    def _check_asset(self, acct: Account, asset: str, cell: Balance) -> None:
        """The self-check of one account's balance of one asset; O(its open orders)."""
        want = 0
        for o in acct.orders.values():
            if o.hold_asset == asset:
                want += o.held + o.pending
        if acct.withdrawals:
            for w in acct.withdrawals.values():
                if w.asset == asset:
                    want += w.amount
        if cell[0] < 0 or cell[1] < 0 or cell[1] != want:
            self.broken = (
                f"{acct.addr} {asset}: available {cell[0]}, locked {cell[1]}, "
                f"but its orders and withdrawals hold {want}"
            )
