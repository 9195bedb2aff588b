"""The risk ledger of one shard: `Ledger.apply(item, input, ts) -> list[RiskEvent]`, pure.

Owns the balances (available, locked) of this shard's accounts, the holds of their open
orders, pending withdrawals, kill switches, limits, fee rates, this shard's fee account, and
its accounts' API keys and wallet nonces (dex.risk.keys).
Inputs are risk commands (`dex.risk.commands`) and every event of the matching engine
(`dex.core.events`). No I/O, no clock, no randomness, integers only.

Time: a command's time is its `ts` (stamped by the shell as it logs the command); a matching
event's time is the `ts` argument, the shell's stamp for it. 0 means "the ledger's time". Time
never goes back (CommandError); it may repeat. Windows (the 24-hour memory of client order
ids, the nonces of wallet-signed orders) are measured against the current input's time.

Failures: a malformed input, or one naming an account of another shard, raises CommandError
before anything changes; a business refusal is an event with a `RiskCode`. After every input
the accounts it touched are checked (see `dex.risk.state`); if a check fails the input's events
end with `halted` and every later `apply` raises `LedgerHalted`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from dex.core import events as mev
from dex.core.commands import InputRef
from dex.core.enums import CancelReason
from dex.core.errors import CommandError
from dex.core.markets import check_asset, resolve_market
from dex.risk import commands as rc
from dex.risk import snapshot
from dex.risk.address import INVALID_ADDRESS, canonical_address
from dex.risk.codes import Control, RiskCode
from dex.risk.events import (
    AssetAdded,
    ControlChanged,
    DepositCredited,
    FeesChanged,
    Halted,
    LimitsChanged,
    MarketAdded,
    RequestRejected,
    RiskEvent,
    WithdrawalCompleted,
    WithdrawalFailed,
    WithdrawalRequested,
)
from dex.risk.keys import _Keys
from dex.risk.orders import _OrderDesk
from dex.risk.settlement import _Settlement
from dex.risk.state import MAX_AMOUNT, SCHEMA_VERSION, Account, LedgerHalted, MarketInfo, Withdrawal

V = SCHEMA_VERSION

Handler = Callable[[Any, InputRef, int], list[RiskEvent]]


class Ledger(_OrderDesk, _Settlement, _Keys):
    """All accounts of one risk shard (`shard` of `shard_count`); each account may have at
    most `max_keys` live API keys (configuration, not state: not in the snapshot)."""

    __slots__ = ("_handlers",)

    def __init__(self, shard: int = 0, shard_count: int = 1, max_keys: int = 20) -> None:
        super().__init__(shard, shard_count)
        if max_keys < 0:
            raise ValueError(f"max_keys must not be negative, got {max_keys}")
        self.max_keys = max_keys
        commands: dict[type, Handler] = {
            rc.Place: self._place,
            rc.Cancel: self._cancel,
            rc.Amend: self._amend,
            rc.CancelAll: self._cancel_all,
            rc.Deposit: self._deposit,
            rc.Withdraw: self._withdraw,
            rc.WithdrawalCompleted: self._withdrawal_completed,
            rc.WithdrawalFailed: self._withdrawal_failed,
            rc.Freeze: self._freeze,
            rc.Unfreeze: self._unfreeze,
            rc.DisableTrading: self._disable_trading,
            rc.EnableTrading: self._enable_trading,
            rc.GlobalHalt: self._global_halt,
            rc.Resume: self._resume,
            rc.SetBackpressure: self._set_backpressure,
            rc.SetFees: self._set_fees,
            rc.SetAccountFees: self._set_account_fees,
            rc.SetLimits: self._set_limits,
            rc.AddAsset: self._add_asset,
            rc.AddMarket: self._add_market,
            rc.RegisterApiKey: self._register_api_key,
            rc.RevokeApiKey: self._revoke_api_key,
        }
        events: dict[type, Handler] = {
            mev.Trade: self._on_trade,
            mev.Filled: self._on_filled,
            mev.Accepted: self._on_accepted,
            mev.Cancelled: self._on_cancelled,
            mev.Expired: self._on_expired,
            mev.Rejected: self._on_rejected,
            mev.Amended: self._on_amended,
            mev.AmendRejected: self._on_amend_rejected,
            mev.Triggered: self._on_triggered,
            mev.CancelRejected: self._ignore,
            mev.MarketStatusChanged: self._on_status,
            mev.AssetAdded: self._ignore,
            mev.MarketAdded: self._ignore,
        }
        # one lookup per input: (handler, whether the input is a risk command)
        self._handlers: dict[type, tuple[Handler, bool]] = {
            **{kind: (h, False) for kind, h in events.items()},
            **{kind: (h, True) for kind, h in commands.items()},
        }

    # ------------------------------------------------------------------ dispatch

    def apply(
        self, item: rc.RiskCommand | mev.Event, src: InputRef, ts: int = 0
    ) -> list[RiskEvent]:
        """Apply one input; `ts` is the shell's time stamp for a matching event."""
        if self.halted:
            raise LedgerHalted(f"risk shard {self.shard} halted: {self.halted}")
        try:
            handler, is_command = self._handlers[type(item)]
        except KeyError:
            raise CommandError("cmd", f"not a risk input: {type(item).__name__}") from None
        if is_command:
            ts = item.ts
        if ts < self.ts:
            if ts:
                raise CommandError("ts", f"must not be below the previous ts {self.ts}, got {ts}")
            ts = self.ts
        events = handler(item, src, ts)
        self.ts = ts
        if self.broken:
            self.halted = self.broken
            self.log_seq += 1
            events.append(Halted(V, ts, self.log_seq, src, self.broken))
        return events

    # ------------------------------------------------------------------ helpers

    def _request_rejected(
        self,
        request: str,
        account: str | None,
        code: RiskCode,
        message: str,
        ts: int,
        src: InputRef,
    ) -> list[RiskEvent]:
        return [RequestRejected(V, ts, self._next(), src, request, account, code, message)]

    def _bad_address(self, request: str, raw: str, ts: int, src: InputRef) -> list[RiskEvent]:
        return self._request_rejected(
            request,
            raw,
            RiskCode.INVALID_ADDRESS,
            INVALID_ADDRESS,
            ts,
            src,
        )

    def _known_market(self, symbol: str) -> MarketInfo:
        m = self.markets.get(symbol)
        if m is None:
            raise CommandError("market", f"unknown market {symbol!r}")
        return m

    # ------------------------------------------------------------------ admin

    def _add_asset(self, cmd: rc.AddAsset, src: InputRef, ts: int) -> list[RiskEvent]:
        asset = check_asset(cmd.asset)
        if asset.symbol in self.assets:
            raise CommandError("symbol", f"asset {asset.symbol} is already registered")
        self.assets[asset.symbol] = asset
        return [AssetAdded(V, ts, self._next(), src, asset)]

    def _add_market(self, cmd: rc.AddMarket, src: InputRef, ts: int) -> list[RiskEvent]:
        """Like the engine: assets the market names and risk lacks are created with the
        decimals the market's steps need."""
        spec = cmd.spec
        if spec.market in self.markets:
            raise CommandError("market", f"market {spec.market} already exists")
        params = resolve_market(spec, self.assets)
        events: list[RiskEvent] = []
        for asset in (params.base, params.quote):
            if asset.symbol not in self.assets:
                self.assets[asset.symbol] = asset
                events.append(AssetAdded(V, ts, self._next(), src, asset))
        self.markets[spec.market] = MarketInfo(params)
        events.append(MarketAdded(V, ts, self._next(), src, spec))
        return events

    def _set_fees(self, cmd: rc.SetFees, src: InputRef, ts: int) -> list[RiskEvent]:
        m = self._known_market(cmd.market)
        if not rc.fee_rates_ok(cmd.maker_bps, cmd.taker_bps):
            return self._request_rejected(
                "set_fees",
                None,
                RiskCode.INVALID_FEE_RATES,
                rc.FEE_RATES_RULE,
                ts,
                src,
            )
        m.maker_bps = cmd.maker_bps
        m.taker_bps = cmd.taker_bps
        return [FeesChanged(V, ts, self._next(), src, m.symbol, None, cmd.maker_bps, cmd.taker_bps)]

    def _set_account_fees(self, cmd: rc.SetAccountFees, src: InputRef, ts: int) -> list[RiskEvent]:
        addr = canonical_address(cmd.account)
        if addr is None:
            return self._bad_address("set_account_fees", cmd.account, ts, src)
        maker, taker = cmd.maker_bps, cmd.taker_bps
        if (maker is None) != (taker is None):
            raise CommandError("maker_bps", "give both rates, or neither to remove the tier")
        if maker is not None and taker is not None and not rc.fee_rates_ok(maker, taker):
            return self._request_rejected(
                "set_account_fees",
                addr,
                RiskCode.INVALID_FEE_RATES,
                rc.FEE_RATES_RULE,
                ts,
                src,
            )
        acct = self._account(addr)
        acct.fees = None if maker is None or taker is None else (maker, taker)
        return [FeesChanged(V, ts, self._next(), src, None, addr, maker, taker)]

    def _set_limits(self, cmd: rc.SetLimits, src: InputRef, ts: int) -> list[RiskEvent]:
        addr = canonical_address(cmd.account)
        if addr is None:
            return self._bad_address("set_limits", cmd.account, ts, src)
        if cmd.max_open_orders < 0:
            raise CommandError("max_open_orders", "must not be negative")
        for asset, value in cmd.max_order_notional.items():
            if asset not in self.assets:
                raise CommandError("max_order_notional", f"unknown asset {asset!r}")
            if not 0 <= value <= MAX_AMOUNT:
                raise CommandError("max_order_notional", f"{asset}: must be in [0, 2^63)")
        acct = self._account(addr)
        acct.max_open = cmd.max_open_orders
        acct.max_notional = {a: v for a, v in sorted(cmd.max_order_notional.items()) if v}
        return [
            LimitsChanged(V, ts, self._next(), src, addr, acct.max_open, dict(acct.max_notional))
        ]

    # ------------------------------------------------------------------ kill switches

    def _control(
        self,
        control: Control,
        account: str | None,
        market: str | None,
        on: bool,
        ts: int,
        src: InputRef,
    ) -> RiskEvent:
        return ControlChanged(V, ts, self._next(), src, control, account, market, on)

    def _freeze(self, cmd: rc.Freeze, src: InputRef, ts: int) -> list[RiskEvent]:
        """Freeze an account and cancel all its open orders (one cancel_all per market)."""
        addr = canonical_address(cmd.account)
        if addr is None:
            return self._bad_address("freeze", cmd.account, ts, src)
        acct = self._account(addr)
        acct.frozen = True
        events = [self._control(Control.FREEZE, addr, None, True, ts, src)]
        events.extend(self._cancel_all_of(acct, None, CancelReason.ADMIN, ts, src))
        return events

    def _unfreeze(self, cmd: rc.Unfreeze, src: InputRef, ts: int) -> list[RiskEvent]:
        addr = canonical_address(cmd.account)
        if addr is None:
            return self._bad_address("unfreeze", cmd.account, ts, src)
        self._account(addr).frozen = False
        return [self._control(Control.FREEZE, addr, None, False, ts, src)]

    def _disable_trading(self, cmd: rc.DisableTrading, src: InputRef, ts: int) -> list[RiskEvent]:
        return self._trading(cmd.account, cmd.market, False, "disable_trading", ts, src)

    def _enable_trading(self, cmd: rc.EnableTrading, src: InputRef, ts: int) -> list[RiskEvent]:
        return self._trading(cmd.account, cmd.market, True, "enable_trading", ts, src)

    def _trading(
        self, raw: str, market: str | None, enable: bool, request: str, ts: int, src: InputRef
    ) -> list[RiskEvent]:
        addr = canonical_address(raw)
        if addr is None:
            return self._bad_address(request, raw, ts, src)
        if market is not None:
            self._known_market(market)
        acct = self._account(addr)
        if enable:
            acct.disabled.discard(market or "")
        else:
            acct.disabled.add(market or "")
        return [self._control(Control.TRADING_DISABLED, addr, market, not enable, ts, src)]

    def _global_halt(self, cmd: rc.GlobalHalt, src: InputRef, ts: int) -> list[RiskEvent]:
        self.global_halt = True
        return [self._control(Control.GLOBAL_HALT, None, None, True, ts, src)]

    def _resume(self, cmd: rc.Resume, src: InputRef, ts: int) -> list[RiskEvent]:
        self.global_halt = False
        return [self._control(Control.GLOBAL_HALT, None, None, False, ts, src)]

    def _set_backpressure(self, cmd: rc.SetBackpressure, src: InputRef, ts: int) -> list[RiskEvent]:
        m = self._known_market(cmd.market)
        m.set_status(m.status, cmd.on)
        return [self._control(Control.BACKPRESSURE, None, cmd.market, cmd.on, ts, src)]

    # ------------------------------------------------------------------ funds

    def _deposit(self, cmd: rc.Deposit, src: InputRef, ts: int) -> list[RiskEvent]:
        """Credit a chain deposit once per (tx id, log index); a repeat emits nothing."""
        tx = cmd.tx_id
        if not tx or (tx.startswith("faucet:") and not (tx[7:].isascii() and tx[7:].isdigit())):
            raise CommandError("tx_id", f"must be a transaction id or faucet:<n>, got {tx!r}")
        key = (tx, cmd.log_index)
        if key in self.deposits:
            return []
        addr = canonical_address(cmd.account)
        if addr is None:
            return self._bad_address("deposit", cmd.account, ts, src)
        if cmd.asset not in self.assets:
            return self._request_rejected(
                "deposit", addr, RiskCode.UNKNOWN_ASSET, f"unknown asset {cmd.asset!r}", ts, src
            )
        acct = self.accounts.get(addr)
        cell = acct.bal.get(cmd.asset) if acct is not None else None
        amount = cmd.amount
        total = cell[0] + cell[1] if cell is not None else 0
        if not 0 < amount <= MAX_AMOUNT - total:
            return self._request_rejected(
                "deposit",
                addr,
                RiskCode.INVALID_AMOUNT,
                "amount must be positive and keep the balance below 2^63",
                ts,
                src,
            )
        acct = self._account(addr)
        cell = acct.cell(cmd.asset)
        cell[0] += amount
        self.deposits.add(key)
        return [
            DepositCredited(
                V,
                ts,
                self._next(),
                src,
                addr,
                cmd.asset,
                amount,
                tx,
                cmd.log_index,
                cell[0],
                cell[1],
            )
        ]

    def _withdraw(self, cmd: rc.Withdraw, src: InputRef, ts: int) -> list[RiskEvent]:
        """Move the amount from available to locked until the chain adapter reports back."""
        acct = self._trader(cmd.account)
        if acct is None:
            return self._bad_address("withdraw", cmd.account, ts, src)
        addr = acct.addr
        code: RiskCode | None = None
        why = ""
        cell = acct.bal.get(cmd.asset)
        if self.global_halt:
            code, why = RiskCode.GLOBAL_HALT, "withdrawals are halted"
        elif acct.frozen:
            code, why = RiskCode.ACCOUNT_FROZEN, "the account is frozen"
        elif cmd.asset not in self.assets:
            code, why = RiskCode.UNKNOWN_ASSET, f"unknown asset {cmd.asset!r}"
        elif not 0 < cmd.amount <= MAX_AMOUNT:
            code, why = RiskCode.INVALID_AMOUNT, "amount must be positive and below 2^63"
        elif cell is None or cell[0] < cmd.amount:
            code = RiskCode.INSUFFICIENT_FUNDS
            why = f"available {cell[0] if cell else 0} {cmd.asset} is below {cmd.amount}"
        if code is not None:
            return self._request_rejected("withdraw", addr, code, why, ts, src)
        acct = self._account(addr)
        self.withdrawal_seq += 1
        w = Withdrawal(self.prefix | self.withdrawal_seq, acct, cmd.asset, cmd.amount)
        cell = w.bal
        cell[0] -= w.amount
        cell[1] += w.amount
        self.withdrawals[w.wid] = acct.withdrawals[w.wid] = w
        self._check_asset(acct, w.asset, cell)
        return [
            WithdrawalRequested(
                V, ts, self._next(), src, w.wid, addr, w.asset, w.amount, cell[0], cell[1]
            )
        ]

    def _pending_withdrawal(self, wid: int) -> Withdrawal | None:
        """The pending withdrawal; None if it already finished (a repeated report)."""
        w = self.withdrawals.get(wid)
        if w is None and not (
            wid >> 40 == self.shard and 0 < wid - self.prefix <= self.withdrawal_seq
        ):
            raise CommandError("withdrawal_id", f"unknown withdrawal {wid}")
        return w

    def _finish_withdrawal(self, w: Withdrawal) -> Account:
        del self.withdrawals[w.wid]
        acct = w.account
        del acct.withdrawals[w.wid]
        w.bal[1] -= w.amount
        return acct

    def _withdrawal_completed(
        self, cmd: rc.WithdrawalCompleted, src: InputRef, ts: int
    ) -> list[RiskEvent]:
        w = self._pending_withdrawal(cmd.withdrawal_id)
        if w is None:
            return []
        acct = self._finish_withdrawal(w)
        cell = w.bal
        self._check_asset(acct, w.asset, cell)
        return [
            WithdrawalCompleted(
                V,
                ts,
                self._next(),
                src,
                w.wid,
                acct.addr,
                w.asset,
                w.amount,
                cmd.tx_id,
                cell[0],
                cell[1],
            )
        ]

    def _withdrawal_failed(
        self, cmd: rc.WithdrawalFailed, src: InputRef, ts: int
    ) -> list[RiskEvent]:
        w = self._pending_withdrawal(cmd.withdrawal_id)
        if w is None:
            return []
        acct = self._finish_withdrawal(w)
        cell = w.bal
        cell[0] += w.amount
        self._check_asset(acct, w.asset, cell)
        return [
            WithdrawalFailed(
                V,
                ts,
                self._next(),
                src,
                w.wid,
                acct.addr,
                w.asset,
                w.amount,
                cmd.reason,
                cell[0],
                cell[1],
            )
        ]

    # ------------------------------------------------------------------ state

    def snapshot(self) -> bytes:
        """The ledger's state, canonical (see dex.risk.snapshot)."""
        return snapshot.dump(self)

    @classmethod
    def restore(cls, data: bytes, max_keys: int = 20) -> Ledger:
        """The ledger a snapshot holds; `ValueError` for another version."""
        return snapshot.load(data, lambda shard, count: cls(shard, count, max_keys))

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    def balance(self, account: str, asset: str) -> tuple[int, int]:
        """(available, locked) of an account (canonical address) in an asset."""
        acct = self.accounts.get(account)
        cell = acct.bal.get(asset) if acct is not None else None
        return (cell[0], cell[1]) if cell is not None else (0, 0)

    def fee_balance(self, asset: str) -> int:
        return self.fees.get(asset, 0)


__all__ = ["Account", "Ledger", "LedgerHalted"]
