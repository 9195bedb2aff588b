"""Stateful property test: the real risk ledger, the real matching engine and the reference.

Random deposits (repeated ones too), faucet, withdrawals and their reports, orders of every
kind, amends, cancels, cancel_all, freezes, trading switches, halts, backpressure, fee rates and
tiers, limits, market status changes and time passing. Forwarded commands and the engine's
events travel through queues delivered in random bursts, so amends race with fills like on a
real bus. After every step: conservation per asset (accounts + fee account = deposits -
completed withdrawals), no negative balance outside the fee account, locked = holds of open
orders + pending withdrawals, finished orders hold nothing, and every balance equals the naive
reference ledger's (tests/risk/reference_ledger.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dex.core import events as mev
from dex.core.commands import SetMarketStatus, Tick
from dex.core.enums import STP, MarketStatus, OrderType, Side, TimeInForce
from dex.risk import commands as rc
from dex.risk.codes import RiskCode
from dex.risk.events import (
    ApiKeyRegistered,
    ApiKeyRevoked,
    DepositCredited,
    Halted,
    OrderAcceptedForMatching,
    OrderCommandForwarded,
    OrderDuplicate,
    OrderRejected,
    RequestRejected,
    RiskEvent,
    WithdrawalCompleted,
    WithdrawalRequested,
)
from tests.risk.harness import DAY, FINE, SIMPLE, Desk, addr
from tests.risk.reference_ledger import RefLedger
from tests.support.coverage_runs import until_every_outcome
from tests.support.markets import USD

IN_CI = os.environ.get("CI") == "true"
# Under tests/meta a fault is injected: finding a failure is all that matters, not shrinking.
FAULT_RUN = bool(os.environ.get("DEX_FAULT"))
SETTINGS = settings(
    max_examples=300 if IN_CI else 60,
    phases=(Phase.generate,) if FAULT_RUN else tuple(Phase),
    derandomize=IN_CI,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

ACCOUNTS = (addr(0xA1), addr(0xB2), addr(0xC3).upper().replace("0X", "0x"))
BAD = ("0x1234", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")  # short; bad checksum
CANON = tuple(a.lower() for a in ACCOUNTS)
MARKETS = {"T-USD": (90, 110), "E-USD": (190, 210)}  # price range in ticks
ASSETS = ("T", "E", "USD")
CIDS = (None, None, "k1", "k2", "k3")
BAD_CID = "k 1"  # a space: not a client order id (invalid_client_order_id)

# Halted: tests/risk/test_ledger_rules. API keys and wallet nonces are not money: they have
# their own reference model in tests/risk/test_api_keys.
KEY_KINDS = {ApiKeyRegistered, ApiKeyRevoked}
KEY_CODES = {
    RiskCode.NONCE_USED,
    RiskCode.UNKNOWN_KEY,
    RiskCode.TOO_MANY_KEYS,
    RiskCode.INVALID_KEY,
}
ALL_KINDS = set(typing.get_args(RiskEvent)) - {Halted} - KEY_KINDS
SEEN_KINDS: set[type] = set()
SEEN_CODES: set[RiskCode] = set()


def outcome(events: list[RiskEvent]) -> tuple[Any, ...]:
    """The ledger's answer to one command, in the reference's terms."""
    for e in events:
        if isinstance(e, OrderRejected | RequestRejected):
            return ("rejected", e.code.value)
        if isinstance(e, OrderAcceptedForMatching):
            return ("accepted", e.order_id, e.hold, e.max_price, e.min_price)
        if isinstance(e, OrderDuplicate):
            return ("duplicate", e.order_id)
        if isinstance(e, WithdrawalRequested):
            return ("ok", e.withdrawal_id)
        if isinstance(e, OrderCommandForwarded) and e.command.__class__.__name__ != "CancelAll":
            return ("forwarded", e.hold_increase)
    return ("ok",) if events else ("nothing",)


class LedgerVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.desk = Desk(hold=True)
        self.ref = RefLedger()
        self.deposited: dict[str, int] = {}
        self.withdrawn: dict[str, int] = {}
        self.finished: set[int] = set()
        self.wids: list[int] = []
        self.tx = 0

    # ------------------------------------------------------------------ plumbing

    def run(self, cmd: Any, ref_name: str | None = None, **ref_args: Any) -> list[RiskEvent]:
        events = self.desk.do(cmd)
        self.record(events)
        if ref_name is not None:
            expected = self.ref.command(ref_name, self.desk.ts, **ref_args)
            actual = outcome(events)
            if expected[0] == "ok" and actual[0] == "forwarded":
                actual = ("ok",)  # freeze: forwarded cancel_alls
            assert actual == expected, f"{cmd!r}: ledger {actual} != reference {expected}"
        return events

    def record(self, events: list[RiskEvent]) -> None:
        for e in events:
            SEEN_KINDS.add(type(e))
            assert not isinstance(e, Halted), e
            if isinstance(e, OrderRejected | RequestRejected):
                SEEN_CODES.add(e.code)
            elif isinstance(e, DepositCredited):
                self.deposited[e.asset] = self.deposited.get(e.asset, 0) + e.amount
            elif isinstance(e, WithdrawalCompleted):
                self.withdrawn[e.asset] = self.withdrawn.get(e.asset, 0) + e.amount
            elif isinstance(e, WithdrawalRequested):
                self.wids.append(e.withdrawal_id)

    def deliver_one(self) -> bool:
        if not self.desk.to_risk:
            return False
        e, _ = self.desk.to_risk[0]
        start = len(self.desk.events)
        self.desk.step_risk()
        self.record(self.desk.events[start:])
        self.ref.event(e, self.desk.ts)
        if isinstance(e, mev.Filled | mev.Cancelled | mev.Expired | mev.Rejected):
            self.finished.add(e.order_id)
        return True

    def open_orders(self) -> list[Any]:
        return list(self.desk.ledger.orders.values())

    # ------------------------------------------------------------------ setup

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        self.run(rc.AddAsset(asset=USD))
        for spec in (SIMPLE, FINE):
            self.run(rc.AddMarket(spec=spec))
            self.ref.command("add_market", 0, params=self.desk.ledger.markets[spec.market].params)
        for market in MARKETS:
            maker = data.draw(st.sampled_from([-5, 0, 10]))
            self.run(
                rc.SetFees(market=market, maker_bps=maker, taker_bps=20),
                "set_fees",
                market=market,
                maker=maker,
                taker=20,
            )
        for account in ACCOUNTS:
            for asset, amount in (("USD", 2_000_000), ("T", 200), ("E", 2_000)):
                self.deposit_to(account, asset, amount)

    def deposit_to(self, account: str, asset: str, amount: int, tx: str | None = None) -> None:
        if tx is None:
            self.tx += 1
            tx = f"tx{self.tx}"
        self.run(
            rc.Deposit(account=account, asset=asset, amount=amount, tx_id=tx),
            "deposit",
            account=account,
            asset=asset,
            amount=amount,
            tx=tx,
            index=0,
        )

    # ------------------------------------------------------------------ funds

    @rule(data=st.data())
    def deposit(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(ACCOUNTS + BAD[:1]))
        asset = data.draw(st.sampled_from((*ASSETS, "NOPE")))
        amount = data.draw(st.sampled_from([0, 1, 500, 20_000, 2**63 - 1]))
        tx = data.draw(st.sampled_from(["faucet:1", "faucet:2", "dup", None]))
        self.deposit_to(account, asset, amount, tx)

    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(ACCOUNTS + BAD[1:]))
        asset = data.draw(st.sampled_from((*ASSETS, "NOPE")))
        amount = data.draw(st.sampled_from([-1, 1, 100, 5_000, 10**7]))
        self.run(
            rc.Withdraw(account=account, asset=asset, amount=amount),
            "withdraw",
            account=account,
            asset=asset,
            amount=amount,
        )
        if self.wids and data.draw(st.booleans()):
            self.report(data)

    @precondition(lambda self: self.wids)
    @rule(data=st.data())
    def withdrawal_report(self, data: st.DataObject) -> None:
        self.report(data)

    def report(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(self.wids))
        completed = data.draw(st.booleans())
        cmd = (
            rc.WithdrawalCompleted(withdrawal_id=wid, tx_id="0xchain")
            if completed
            else rc.WithdrawalFailed(withdrawal_id=wid, reason="reverted")
        )
        self.run(cmd, "withdrawal_done", wid=wid, completed=completed)

    # ------------------------------------------------------------------ orders

    @rule(data=st.data())
    def place(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 3))):
            self.place_one(data)

    @rule(data=st.data())
    def cross(self, data: st.DataObject) -> None:
        """Two opposite limit orders at one price from two accounts: trades, mostly."""
        market = data.draw(st.sampled_from(list(MARKETS)))
        lo, hi = MARKETS[market]
        price = data.draw(st.integers(lo + 5, hi - 5))
        maker, taker = data.draw(st.permutations(ACCOUNTS))[:2]
        first = data.draw(st.sampled_from([Side.BUY, Side.SELL]))
        for account, side in (
            (maker, first),
            (taker, Side.BUY if first is Side.SELL else Side.SELL),
        ):
            kw: dict[str, Any] = {
                "price": price,
                "size": data.draw(st.integers(1, 8)),
                "client_order_id": data.draw(st.sampled_from(CIDS)),
            }
            cmd = rc.Place(market=market, account=account, side=side, type=OrderType.LIMIT, **kw)
            self.run(
                cmd, "place", market=market, account=account, side=side, type=OrderType.LIMIT, **kw
            )
        if data.draw(st.booleans()):
            self.deliver_all()

    def place_one(self, data: st.DataObject) -> None:
        d = data.draw
        market = d(st.sampled_from(list(MARKETS)))
        lo, hi = MARKETS[market]
        account = d(st.sampled_from(ACCOUNTS + BAD[:1]))
        side = d(st.sampled_from([Side.BUY, Side.SELL]))
        kind = d(st.sampled_from([OrderType.LIMIT] * 4 + list(OrderType)))
        kw: dict[str, Any] = {
            "stp": d(st.sampled_from(list(STP))),
            "client_order_id": d(st.sampled_from((*CIDS, BAD_CID))),
        }
        if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            kw["price"] = d(st.integers(lo, hi))
            kw["size"] = d(st.integers(1, 12))
            kw["tif"] = d(st.sampled_from(list(TimeInForce)))
            if kw["tif"] is TimeInForce.GTD:
                kw["expires_at"] = self.desk.mts + d(st.integers(1, 30))
            if kind is OrderType.LIMIT and kw["tif"] in (TimeInForce.GTC, TimeInForce.GTD):
                kw["post_only"] = d(st.booleans())
                if d(st.integers(0, 4)) == 0:
                    kw["display_size"] = 1
        else:
            kw["tif"] = d(st.sampled_from([TimeInForce.IOC, TimeInForce.FOK]))
            if kw["tif"] is TimeInForce.FOK or d(st.booleans()):
                kw["size"] = d(st.integers(1, 12))
            else:
                kw["quote_size"] = d(st.sampled_from([300, 5_000, 90_000]))
        if kind in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET):
            kw["trigger_price"] = d(st.integers(lo, hi))
        cmd = rc.Place(market=market, account=account, side=side, type=kind, **kw)
        self.run(cmd, "place", market=market, account=account, side=side, type=kind, **kw)

    @rule(data=st.data())
    def amend(self, data: st.DataObject) -> None:
        d = data.draw
        orders = self.open_orders()
        if orders and d(st.integers(0, 5)):
            o = d(st.sampled_from(orders))
            account, market, oid = o.account.addr, o.market.symbol, o.oid
            cid = o.cid if d(st.booleans()) else None
        else:
            account, market, oid, cid = d(st.sampled_from(ACCOUNTS)), "T-USD", 999, None
        lo, hi = MARKETS[market]
        price = d(st.sampled_from([0, lo, (lo + hi) // 2, hi + 30]))
        size = d(st.integers(1 if not price else 0, 15))
        target = {"order_id": oid} if cid is None else {"client_order_id": cid}
        self.run(
            rc.Amend(market=market, account=account, price=price, size=size, **target),
            "amend",
            account=account,
            market=market,
            oid=target.get("order_id"),
            cid=cid,
            price=price,
            size=size,
        )

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        d = data.draw
        orders = self.open_orders()
        if orders and d(st.integers(0, 5)):
            o = d(st.sampled_from(orders))
            account, market, oid, cid = o.account.addr, o.market.symbol, o.oid, o.cid
            if cid is not None and d(st.booleans()):
                oid = None
            else:
                cid = None
        else:
            account, market, oid, cid = d(st.sampled_from(ACCOUNTS + BAD[:1])), "E-USD", 999, None
        self.run(
            rc.Cancel(market=market, account=account, order_id=oid, client_order_id=cid),
            "cancel",
            account=account,
            market=market,
            oid=oid,
            cid=cid,
        )

    @rule(data=st.data())
    def cancel_all(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(ACCOUNTS))
        market = data.draw(st.sampled_from([None, *MARKETS, "NO-USD"]))
        self.run(rc.CancelAll(account=account, market=market))

    # ------------------------------------------------------------------ switches

    @rule(data=st.data())
    def switch(self, data: st.DataObject) -> None:
        d = data.draw
        account = d(st.sampled_from(ACCOUNTS + BAD[:1]))
        what = d(st.sampled_from(["freeze", "trading", "halt", "backpressure"]))
        on = d(st.integers(0, 3)) == 0  # mostly off, so that trading goes on
        market = d(st.sampled_from([None, *MARKETS]))
        if what == "freeze":
            cmd: Any = rc.Freeze(account=account) if on else rc.Unfreeze(account=account)
            self.run(cmd, "switch", what=what, account=account, market=None, on=on)
        elif what == "trading":
            cls = rc.DisableTrading if on else rc.EnableTrading
            self.run(
                cls(account=account, market=market),
                "switch",
                what=what,
                account=account,
                market=market,
                on=on,
            )
        elif what == "halt":
            self.run(rc.GlobalHalt() if on else rc.Resume(), "halt", on=on)
        else:
            m = market or "T-USD"
            self.run(rc.SetBackpressure(market=m, on=on), "backpressure", market=m, on=on)

    @rule(data=st.data())
    def fees_and_limits(self, data: st.DataObject) -> None:
        d = data.draw
        account = d(st.sampled_from(ACCOUNTS + BAD[:1]))
        maker = d(st.sampled_from([-30, -10, 0, 5]))
        taker = d(st.sampled_from([0, 10, 25]))
        what = d(st.sampled_from(["market", "tier", "no_tier", "limits"]))
        if what == "market":
            market = d(st.sampled_from(list(MARKETS)))
            self.run(
                rc.SetFees(market=market, maker_bps=maker, taker_bps=taker),
                "set_fees",
                market=market,
                maker=maker,
                taker=taker,
            )
        elif what in ("tier", "no_tier"):
            mk, tk = (maker, taker) if what == "tier" else (None, None)
            self.run(
                rc.SetAccountFees(account=account, maker_bps=mk, taker_bps=tk),
                "set_account_fees",
                account=account,
                maker=mk,
                taker=tk,
            )
        else:
            max_open = d(st.sampled_from([0, 1, 2]))
            notional = d(st.sampled_from([{}, {}, {"USD": 50_000}]))
            self.run(
                rc.SetLimits(
                    account=account, max_open_orders=max_open, max_order_notional=notional
                ),
                "set_limits",
                account=account,
                max_open=max_open,
                notional=notional,
            )

    @rule(data=st.data())
    def market_status(self, data: st.DataObject) -> None:
        market = data.draw(st.sampled_from(list(MARKETS)))
        status = data.draw(st.sampled_from([MarketStatus.ACTIVE] * 6 + list(MarketStatus)))
        self.desk.engine_cmd(SetMarketStatus(market=market, status=status))

    @rule(data=st.data())
    def time_passes(self, data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            self.desk.ts += DAY  # forgets client order ids of orders ended a day ago
        self.desk.mts += data.draw(st.integers(1, 20))
        self.desk.engine_cmd(Tick())

    # ------------------------------------------------------------------ delivery

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 30))):
            if data.draw(st.integers(0, 2)) and self.desk.step_matching():
                continue
            if not self.deliver_one() and not self.desk.step_matching():
                break

    @rule()
    def deliver_all(self) -> None:
        while self.desk.step_matching() or self.deliver_one():
            pass

    # ------------------------------------------------------------------ invariants

    @invariant()
    def conservation_and_holds(self) -> None:
        led = self.desk.ledger
        for asset in ASSETS:
            total = sum(sum(a.bal.get(asset, (0, 0))) for a in led.accounts.values())
            total += led.fee_balance(asset)
            assert total == self.deposited.get(asset, 0) - self.withdrawn.get(asset, 0), asset
        for acct in led.accounts.values():
            for asset, (available, locked) in acct.bal.items():
                assert available >= 0 and locked >= 0, (acct.addr, asset)
                held = sum(
                    o.held + o.pending for o in acct.orders.values() if o.hold_asset == asset
                )
                held += sum(w.amount for w in acct.withdrawals.values() if w.asset == asset)
                assert locked == held, (acct.addr, asset, locked, held)
        assert not self.finished & set(led.orders), "a finished order still holds"

    @invariant()
    def agrees_with_reference(self) -> None:
        led = self.desk.ledger
        for account in CANON:
            for asset in ASSETS:
                assert led.balance(account, asset) == self.ref.balance(account, asset), (
                    account,
                    asset,
                )
        for asset in ASSETS:
            assert led.fee_balance(asset) == self.ref.fees.get(asset, 0), asset
        assert set(led.orders) == set(self.ref.orders)


TestLedgerVsReference = LedgerVsReference.TestCase
TestLedgerVsReference.settings = SETTINGS


def every_kind_and_code_report() -> dict[str, list[str]]:
    """What derandomized runs of the machine never produced: event kinds, refusal codes (300
    programs, then 1,000 more if something was missed: `tests.support.coverage_runs`)."""
    SEEN_KINDS.clear()
    SEEN_CODES.clear()

    def missing() -> dict[str, list[str]]:
        return {
            "event kinds": sorted(k.__name__ for k in ALL_KINDS - SEEN_KINDS),
            "rejection codes": sorted(str(c) for c in set(RiskCode) - KEY_CODES - SEEN_CODES),
        }

    return until_every_outcome(LedgerVsReference, SETTINGS, missing, (300, 1_000))


def test_every_event_kind_and_rejection_code_occurs() -> None:
    """A run of the machine produces every event kind and refusal code.

    In a fresh interpreter, as tests/property/test_engine_vs_reference.py's own: the
    derandomized programs were seen to differ after other tests had run in the same process
    (after the rest of tests/risk, no program reached notional_limit; a fresh run does)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from tests.risk.test_ledger_vs_reference import "
            "every_kind_and_code_report as r; print(json.dumps(r()))",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    missing = json.loads(done.stdout.strip().splitlines()[-1])
    assert missing == {"event kinds": [], "rejection codes": []}, f"never produced: {missing}"
