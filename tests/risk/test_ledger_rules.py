"""Scenario tests: one rule of the risk ledger each, balances computed by hand.

Market T-USD (tests/risk/harness.py): tick 1, lot 1, both assets 0 decimals, so a trade of
n lots at p ticks moves n T and p*n USD; band 1000 bps (10%). Fees 0 unless a test sets them.
Risk and the real matching engine run together (`Desk`); order ids are 1, 2, 3... (shard 0).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from dex.core.commands import InputRef, SetMarketStatus
from dex.core.enums import MarketStatus, OrderStatus, OrderType, Side, TimeInForce
from dex.core.errors import CommandError
from dex.core.events import Accepted
from dex.risk import commands as rc
from dex.risk.codes import RiskCode
from dex.risk.events import (
    ControlChanged,
    DepositCredited,
    FundsReleased,
    Halted,
    OrderAcceptedForMatching,
    OrderCommandForwarded,
    OrderDuplicate,
    OrderRejected,
    RequestRejected,
    RiskEvent,
    TradeSettled,
    WithdrawalCompleted,
    WithdrawalFailed,
    WithdrawalRequested,
)
from dex.risk.ledger import Ledger, LedgerHalted
from tests.risk.harness import DAY, FINE, SIMPLE, Desk, addr
from tests.support.markets import USD

A, B, C = addr(1), addr(2), addr(3)
M = "T-USD"


def place(account: str, side: str, price: int, size: int, **kw: Any) -> rc.Place:
    kind = kw.pop("type", OrderType.LIMIT if price else OrderType.MARKET)
    if kind in (OrderType.MARKET, OrderType.STOP_MARKET):
        kw.setdefault("tif", TimeInForce.IOC)
    return rc.Place(
        market=kw.pop("market", M),
        account=account,
        side=Side(side),
        type=kind,
        price=price,
        size=size,
        **kw,
    )


_tx = iter(range(10**9))


def fund(desk: Desk, account: str, asset: str, amount: int) -> None:
    desk.do(rc.Deposit(account=account, asset=asset, amount=amount, tx_id=f"tx{next(_tx)}"))


@pytest.fixture
def desk() -> Desk:
    d = Desk()
    d.do(rc.AddMarket(spec=SIMPLE))
    for account in (A, B, C):
        fund(d, account, "USD", 10_000)
        fund(d, account, "T", 100)
    return d


def of(events: list[RiskEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def rejected(events: list[RiskEvent]) -> RiskCode:
    [e] = of(events, OrderRejected) or of(events, RequestRejected)
    return e.code  # type: ignore[no-any-return]


def trade_at_100(desk: Desk) -> None:
    """C sells 1 at 100 and B buys it, leaving last price 100 and nothing in the book."""
    desk.do(place(C, "sell", 100, 1))
    desk.do(place(B, "buy", 100, 1))


# ---------------------------------------------------------------- holds


def test_limit_orders_hold_price_times_size_on_buys_and_size_on_sells(desk: Desk) -> None:
    [buy] = of(desk.do(place(A, "buy", 90, 5)), OrderAcceptedForMatching)
    assert (buy.hold_asset, buy.hold, buy.order_id) == ("USD", 450, 1)
    assert desk.bal(A, "USD") == (9_550, 450)
    [sell] = of(desk.do(place(B, "sell", 110, 7)), OrderAcceptedForMatching)
    assert (sell.hold_asset, sell.hold) == ("T", 7)
    assert desk.bal(B, "T") == (93, 7)
    assert buy.place.order_id == 1 and sell.place.order_id == 2


def test_partial_fill_and_price_improvement_refund(desk: Desk) -> None:
    desk.do(place(B, "sell", 100, 10))
    events = desk.do(place(A, "buy", 105, 4))
    [ts] = of(events, TradeSettled)
    assert (ts.price, ts.size) == (100, 4)
    assert ts.taker.released == 20  # held 105 x 4, paid 100 x 4
    assert desk.bal(A, "USD") == (9_600, 0)
    assert desk.bal(A, "T") == (104, 0)
    assert desk.bal(B, "T") == (90, 6)  # 4 sold, 6 still held
    assert desk.bal(B, "USD") == (10_400, 0)
    [done] = of(events, FundsReleased)
    assert (done.order_id, done.cause, done.amount) == (2, "filled", 0)


def test_resting_buy_filled_later_below_its_price(desk: Desk) -> None:
    desk.do(place(A, "buy", 100, 5))
    desk.do(place(B, "sell", 95, 2))  # trades at the maker's price, 100: no refund
    assert desk.bal(A, "USD") == (9_500, 300)
    desk.do(place(C, "sell", 100, 3))
    assert desk.bal(A, "USD") == (9_500, 0)
    assert desk.bal(A, "T") == (105, 0)


def test_fees_are_ceiled_in_the_asset_received(desk: Desk) -> None:
    desk.do(rc.SetFees(market=M, maker_bps=10, taker_bps=30))
    desk.do(place(B, "sell", 100, 7))
    [ts] = of(desk.do(place(A, "buy", 100, 7)), TradeSettled)
    assert ts.taker.fee == 1  # ceil(7 T x 30 / 10000) = ceil(0.021)
    assert ts.maker.fee == 1  # ceil(700 USD x 10 / 10000) = ceil(0.7)
    assert desk.bal(A, "T") == (106, 0)
    assert desk.bal(B, "USD") == (10_699, 0)
    assert (desk.fees("T"), desk.fees("USD")) == (1, 1)


def test_maker_rebate_is_paid_from_the_fee_account(desk: Desk) -> None:
    desk.do(rc.SetFees(market=M, maker_bps=-25, taker_bps=30))
    desk.do(place(B, "sell", 100, 10))
    [ts] = of(desk.do(place(A, "buy", 100, 10)), TradeSettled)
    assert ts.maker.fee == -2  # ceil(1000 x -25 / 10000) = ceil(-2.5): the rebate rounds down
    assert desk.bal(B, "USD") == (11_002, 0)
    assert desk.fees("USD") == -2
    assert ts.taker.fee == 1 and desk.fees("T") == 1
    assert ts.maker.fee_account_balance == -2


def test_fee_rates_refused_when_the_rebate_exceeds_the_taker_fee(desk: Desk) -> None:
    assert rejected(desk.do(rc.SetFees(market=M, maker_bps=-31, taker_bps=30))) == (
        RiskCode.INVALID_FEE_RATES
    )
    assert rejected(desk.do(rc.SetFees(market=M, maker_bps=0, taker_bps=10_001))) == (
        RiskCode.INVALID_FEE_RATES
    )
    assert rejected(desk.do(rc.SetAccountFees(account=A, maker_bps=-5, taker_bps=4))) == (
        RiskCode.INVALID_FEE_RATES
    )
    desk.do(rc.SetFees(market=M, maker_bps=-30, taker_bps=30))
    assert desk.ledger.markets[M].maker_bps == -30


def test_account_fee_tier_overrides_the_market(desk: Desk) -> None:
    desk.do(rc.SetFees(market=M, maker_bps=0, taker_bps=100))
    # A's tier: 2% as maker, 5% as taker (rates that tell maker from taker and from the market)
    desk.do(rc.SetAccountFees(account=A, maker_bps=200, taker_bps=500))

    def fees(maker: str, taker: str) -> tuple[int, int]:
        desk.do(place(maker, "sell", 100, 40))
        [ts] = of(desk.do(place(taker, "buy", 100, 40)), TradeSettled)
        assert (ts.maker.account, ts.taker.account) == (maker, taker)
        return ts.maker.fee, ts.taker.fee

    # fees in the asset received: the taker buys 40 T, the maker receives 4,000 USD
    assert fees(B, A) == (0, 2)  # A takes at 5%: ceil(40 x 0.05) = 2 T (1% would be 1)
    assert fees(A, B) == (80, 1)  # A makes at 2%: 80 USD; B takes at the market's 1%
    desk.do(rc.SetAccountFees(account=A))  # removed: the market's rates again
    assert fees(B, A) == (0, 1)
    assert fees(A, B) == (0, 1)
    with pytest.raises(CommandError):
        desk.do(rc.SetAccountFees(account=A, maker_bps=1))


def test_market_buy_by_size_needs_a_reference_and_holds_at_the_protection_price(
    desk: Desk,
) -> None:
    assert rejected(desk.do(place(A, "buy", 0, 2))) == RiskCode.NO_REFERENCE_PRICE
    trade_at_100(desk)
    desk.do(place(B, "sell", 104, 1))
    events = desk.do(place(A, "buy", 0, 3))
    [acc] = of(events, OrderAcceptedForMatching)
    assert (acc.max_price, acc.hold) == (110, 330)  # floor(100 x 1.1) = 110
    assert acc.place.max_price == 110
    # 1 filled at 104 (6 back), the rest cancelled (no liquidity): 220 back
    assert desk.bal(A, "USD") == (10_000 - 104, 0)
    [fr] = [e for e in of(events, FundsReleased) if e.account == A]
    assert (fr.cause, fr.amount) == ("cancelled", 220)


def test_market_sell_by_quote_holds_ceil_amount_over_min_price(desk: Desk) -> None:
    sell = place(A, "sell", 0, 0, quote_size=500)
    assert rejected(desk.do(sell)) == RiskCode.NO_REFERENCE_PRICE
    trade_at_100(desk)
    [acc] = of(desk.do(sell), OrderAcceptedForMatching)
    assert (acc.min_price, acc.hold_asset, acc.hold) == (90, "T", 6)  # ceil(500 / 90)
    assert desk.bal(A, "T") == (100, 0)  # nothing to sell to: all released


def test_market_buy_by_quote_and_sell_by_size_need_no_reference(desk: Desk) -> None:
    [buy] = of(desk.do(place(A, "buy", 0, 0, quote_size=300)), OrderAcceptedForMatching)
    assert (buy.hold, buy.max_price) == (300, 0)
    [sell] = of(desk.do(place(A, "sell", 0, 2)), OrderAcceptedForMatching)
    assert (sell.hold, sell.min_price) == (2, 0)
    assert desk.bal(A, "USD") == (10_000, 0) and desk.bal(A, "T") == (100, 0)


def test_market_buy_by_quote_spends_at_most_the_amount(desk: Desk) -> None:
    trade_at_100(desk)
    desk.do(place(B, "sell", 100, 2))
    desk.do(place(B, "sell", 101, 5))
    events = desk.do(place(A, "buy", 0, 0, quote_size=350))
    # 2 at 100, then 1 at 101 (149 left buys one lot of 101), 48 left: cancelled
    assert desk.bal(A, "USD") == (10_000 - 301, 0)
    assert desk.bal(A, "T") == (103, 0)
    assert [(e.cause, e.amount) for e in of(events, FundsReleased) if e.account == A] == [
        ("cancelled", 49)
    ]


def test_stop_market_takes_its_protection_price_from_the_trigger(desk: Desk) -> None:
    trade_at_100(desk)
    stop = place(A, "buy", 0, 2, type=OrderType.STOP_MARKET, trigger_price=120)
    [acc] = of(desk.do(stop), OrderAcceptedForMatching)
    assert (acc.max_price, acc.hold) == (132, 264)
    sstop = place(A, "sell", 0, 0, type=OrderType.STOP_MARKET, trigger_price=80, quote_size=300)
    [acc] = of(desk.do(sstop), OrderAcceptedForMatching)
    assert (acc.min_price, acc.hold) == (72, 5)  # ceil(300 / 72)
    limit = place(A, "buy", 95, 3, type=OrderType.STOP_LIMIT, trigger_price=101)
    [acc] = of(desk.do(limit), OrderAcceptedForMatching)
    assert acc.hold == 285
    assert desk.bal(A, "USD") == (10_000 - 264 - 285, 549)


def test_triggered_stop_settles_like_its_order(desk: Desk) -> None:
    trade_at_100(desk)
    desk.do(place(A, "buy", 0, 2, type=OrderType.STOP_MARKET, trigger_price=101))
    desk.do(place(B, "sell", 103, 5))
    desk.do(place(C, "sell", 101, 1))
    events = desk.do(place(B, "buy", 101, 1))  # trades at 101: the stop triggers
    [ts] = [e for e in of(events, TradeSettled) if e.taker and e.taker.account == A]
    assert (ts.price, ts.size, ts.taker.released) == (103, 2, 2 * (111 - 103))
    assert desk.bal(A, "USD") == (10_000 - 206, 0)


def test_a_stop_is_untriggered_until_it_triggers_then_open(desk: Desk) -> None:
    trade_at_100(desk)
    desk.do(place(A, "buy", 95, 2, type=OrderType.STOP_LIMIT, trigger_price=101))
    [stop] = desk.ledger.accounts[A].orders.values()
    assert stop.status == OrderStatus.UNTRIGGERED
    desk.do(place(C, "sell", 101, 1))
    desk.do(place(B, "buy", 101, 1))  # trades at 101: the stop triggers and rests at 95
    assert stop.status == OrderStatus.OPEN


def test_an_order_event_the_status_table_refuses_raises_and_changes_nothing(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5))
    [accepted] = [e for e in desk.match_events if isinstance(e, Accepted)]
    led = desk.ledger
    before = led.snapshot()
    with pytest.raises(CommandError, match="cannot go from open to open"):
        led.apply(accepted, InputRef("x", 1), desk.ts)  # accepted twice: open -> open
    assert led.snapshot() == before


def test_a_snapshot_with_the_old_triggered_status_loads_it_as_open(desk: Desk) -> None:
    trade_at_100(desk)
    desk.do(place(A, "buy", 95, 2, type=OrderType.STOP_LIMIT, trigger_price=101))
    desk.do(place(C, "sell", 101, 1))
    desk.do(place(B, "buy", 101, 1))
    snap = desk.ledger.snapshot()
    assert snap.count(b"open") >= 1
    old = snap.replace(b"\xa4open", b"\xa9triggered")  # msgpack: the status as the old word
    assert old != snap
    [stop] = Ledger.restore(old).accounts[A].orders.values()
    assert stop.status == OrderStatus.OPEN


# ---------------------------------------------------------------- ends of orders


def test_cancel_releases_the_whole_hold(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5))
    events = desk.do(rc.Cancel(market=M, account=A, order_id=1))
    [fwd] = of(events, OrderCommandForwarded)
    assert fwd.command.order_id == 1
    [fr] = of(events, FundsReleased)
    assert (fr.cause, fr.amount, fr.available, fr.locked) == ("cancelled", 450, 10_000, 0)
    assert desk.ledger.orders == {}


def test_cancel_by_client_order_id_and_unknown_orders(desk: Desk) -> None:
    desk.do(place(A, "sell", 120, 5, client_order_id="s1"))
    desk.do(rc.Cancel(market=M, account=A, client_order_id="s1"))
    assert desk.bal(A, "T") == (100, 0)
    assert rejected(desk.do(rc.Cancel(market=M, account=A, order_id=1))) == RiskCode.UNKNOWN_ORDER
    assert rejected(desk.do(rc.Cancel(market=M, account=B, order_id=9))) == RiskCode.UNKNOWN_ORDER
    with pytest.raises(CommandError):
        desk.do(rc.Cancel(market=M, account=A))


def test_gtd_expiry_releases(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5, tif=TimeInForce.GTD, expires_at=desk.mts + 3))
    assert desk.bal(A, "USD") == (9_550, 450)
    desk.do(place(B, "sell", 120, 1))
    events = desk.do(place(B, "sell", 121, 1))
    assert [e.cause for e in of(events, FundsReleased)] == ["expired"]
    assert desk.bal(A, "USD") == (10_000, 0)


def test_engine_rejection_releases_the_order_hold(desk: Desk) -> None:
    desk.do(place(B, "sell", 100, 5))
    events = desk.do(place(A, "buy", 100, 5, post_only=True))
    [fr] = of(events, FundsReleased)
    assert (fr.cause, fr.amount) == ("rejected", 500)
    assert desk.bal(A, "USD") == (10_000, 0)


def test_ioc_rest_and_self_trade_cancel_release(desk: Desk) -> None:
    desk.do(place(B, "sell", 100, 2))
    desk.do(place(A, "buy", 102, 5, tif=TimeInForce.IOC))
    assert desk.bal(A, "USD") == (9_800, 0)
    desk.do(place(A, "sell", 100, 2))
    desk.do(place(A, "buy", 100, 3))  # expire_taker: A's buy is cancelled (stp)
    assert desk.bal(A, "USD") == (9_800, 0)
    assert desk.bal(A, "T") == (100, 2)


# ---------------------------------------------------------------- amends


def test_amend_up_holds_the_increase_then_settles_exactly(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5))
    events = desk.do(rc.Amend(market=M, account=A, order_id=1, price=95, size=6))
    [fwd] = of(events, OrderCommandForwarded)
    assert fwd.hold_increase == 95 * 6 - 90 * 5
    [fr] = of(events, FundsReleased)
    assert (fr.cause, fr.amount) == ("amended", 0)
    assert desk.bal(A, "USD") == (10_000 - 570, 570)


def test_amend_down_releases_on_amended(desk: Desk) -> None:
    desk.do(place(A, "sell", 120, 10))
    events = desk.do(rc.Amend(market=M, account=A, order_id=1, size=4))
    assert of(events, OrderCommandForwarded)[0].hold_increase == 0
    assert [(e.cause, e.amount) for e in of(events, FundsReleased)] == [("amended", 6)]
    assert desk.bal(A, "T") == (96, 4)


def test_amend_rejected_releases_only_the_increase(desk: Desk) -> None:
    trade_at_100(desk)
    desk.do(place(A, "buy", 95, 5))
    events = desk.do(rc.Amend(market=M, account=A, order_id=3, price=200))  # outside the band
    assert of(events, OrderCommandForwarded)[0].hold_increase == 525
    assert [(e.cause, e.amount) for e in of(events, FundsReleased)] == [("amend_rejected", 525)]
    assert desk.bal(A, "USD") == (10_000 - 475, 475)


def test_amend_while_one_is_in_flight_and_fills_in_between() -> None:
    desk = Desk(hold=True)
    desk.do(rc.AddMarket(spec=SIMPLE))
    fund(desk, A, "USD", 10_000)
    fund(desk, B, "T", 100)
    desk.do(place(A, "buy", 100, 10))
    desk.pump()
    desk.do(rc.Amend(market=M, account=A, order_id=1, price=90, size=20))
    assert desk.bal(A, "USD") == (10_000 - 1000 - 900, 1900)  # 90 x (20 - 10) more
    code = rejected(desk.do(rc.Amend(market=M, account=A, order_id=1, size=30)))
    assert code == RiskCode.AMEND_IN_PROGRESS
    desk.do(place(B, "sell", 100, 5))  # reaches matching before the amend: 5 fill at 100
    desk.to_matching.rotate(-1)  # the sell is behind the amend in the queue: swap them
    desk.pump()
    # now 15 left at 90: held 1350, paid 500
    assert desk.bal(A, "USD") == (10_000 - 500 - 1350, 1350)
    assert desk.bal(A, "T") == (5, 0)


# ---------------------------------------------------------------- funds


def test_deposit_is_credited_once_per_tx_and_log_index(desk: Desk) -> None:
    dep = rc.Deposit(account=A, asset="USD", amount=5, tx_id="0xabc", log_index=3)
    assert of(desk.do(dep), DepositCredited)[0].available == 10_005
    assert desk.do(dep) == []
    desk.do(rc.Deposit(account=A, asset="USD", amount=5, tx_id="0xabc", log_index=4))
    assert desk.bal(A, "USD") == (10_010, 0)


def test_faucet_is_a_deposit_with_a_numbered_tx_id(desk: Desk) -> None:
    desk.do(rc.Deposit(account=A, asset="T", amount=1, tx_id="faucet:17"))
    assert desk.do(rc.Deposit(account=A, asset="T", amount=1, tx_id="faucet:17")) == []
    assert desk.bal(A, "T") == (101, 0)
    with pytest.raises(CommandError):
        desk.do(rc.Deposit(account=A, asset="T", amount=1, tx_id="faucet:x"))
    with pytest.raises(CommandError):
        desk.do(rc.Deposit(account=A, asset="T", amount=1, tx_id=""))


def test_deposit_refusals(desk: Desk) -> None:
    dep = rc.Deposit(account=A, asset="BTC", amount=1, tx_id="t")
    assert rejected(desk.do(dep)) == RiskCode.UNKNOWN_ASSET
    dep = rc.Deposit(account=A, asset="T", amount=0, tx_id="t")
    assert rejected(desk.do(dep)) == RiskCode.INVALID_AMOUNT
    dep = rc.Deposit(account=A, asset="T", amount=2**63 - 100, tx_id="t")
    assert rejected(desk.do(dep)) == RiskCode.INVALID_AMOUNT  # the balance would reach 2^63
    dep = rc.Deposit(account="0x12", asset="T", amount=1, tx_id="t")
    assert rejected(desk.do(dep)) == RiskCode.INVALID_ADDRESS


def test_withdrawal_pending_then_completed(desk: Desk) -> None:
    [req] = of(desk.do(rc.Withdraw(account=A, asset="USD", amount=300)), WithdrawalRequested)
    assert desk.bal(A, "USD") == (9_700, 300)
    events = desk.do(rc.WithdrawalCompleted(withdrawal_id=req.withdrawal_id, tx_id="0xdead"))
    assert of(events, WithdrawalCompleted)[0].tx_id == "0xdead"
    assert desk.bal(A, "USD") == (9_700, 0)
    assert desk.do(rc.WithdrawalCompleted(withdrawal_id=req.withdrawal_id, tx_id="x")) == []
    with pytest.raises(CommandError):
        desk.do(rc.WithdrawalFailed(withdrawal_id=req.withdrawal_id + 1))


def test_withdrawal_failed_returns_the_funds(desk: Desk) -> None:
    [req] = of(desk.do(rc.Withdraw(account=A, asset="T", amount=40)), WithdrawalRequested)
    events = desk.do(rc.WithdrawalFailed(withdrawal_id=req.withdrawal_id, reason="gas"))
    assert of(events, WithdrawalFailed)[0].reason == "gas"
    assert desk.bal(A, "T") == (100, 0)


def test_withdrawal_refusals(desk: Desk) -> None:
    desk.do(place(A, "buy", 100, 50))
    w = rc.Withdraw(account=A, asset="USD", amount=5_001)
    assert rejected(desk.do(w)) == RiskCode.INSUFFICIENT_FUNDS  # 5000 are held by the order
    w = rc.Withdraw(account=A, asset="X", amount=1)
    assert rejected(desk.do(w)) == RiskCode.UNKNOWN_ASSET
    w = rc.Withdraw(account=A, asset="T", amount=-1)
    assert rejected(desk.do(w)) == RiskCode.INVALID_AMOUNT
    w = rc.Withdraw(account=addr(99), asset="T", amount=1)
    assert rejected(desk.do(w)) == RiskCode.INSUFFICIENT_FUNDS  # an account never funded
    desk.do(rc.Freeze(account=A))
    assert rejected(desk.do(rc.Withdraw(account=A, asset="T", amount=1))) == (
        RiskCode.ACCOUNT_FROZEN
    )
    desk.do(rc.GlobalHalt())
    assert rejected(desk.do(rc.Withdraw(account=B, asset="T", amount=1))) == RiskCode.GLOBAL_HALT


# ---------------------------------------------------------------- kill switches and limits


def test_freeze_cancels_all_open_orders_per_market_and_refuses_trading() -> None:
    desk = Desk()
    desk.do(rc.AddAsset(asset=USD))
    desk.do(rc.AddMarket(spec=SIMPLE))
    desk.do(rc.AddMarket(spec=FINE))
    fund(desk, A, "USD", 1_000_000)
    desk.do(place(A, "buy", 90, 5))
    desk.do(place(A, "buy", 100, 3, market="E-USD"))
    # USD has 2 decimals: T-USD moves 100 units per tick x lot, E-USD 5 (0.5 x 0.1 USD)
    assert desk.bal(A, "USD") == (1_000_000 - 45_000 - 1_500, 46_500)
    events = desk.do(rc.Freeze(account=A))
    assert of(events, ControlChanged)[0].on is True
    forwarded = of(events, OrderCommandForwarded)
    assert [(f.market, f.command.reason) for f in forwarded] == [
        (M, "admin"),
        ("E-USD", "admin"),
    ]
    assert desk.bal(A, "USD") == (1_000_000, 0)
    assert rejected(desk.do(place(A, "buy", 90, 1))) == RiskCode.ACCOUNT_FROZEN
    desk.do(rc.Unfreeze(account=A))
    assert of(desk.do(place(A, "buy", 90, 1)), OrderAcceptedForMatching)


def test_amend_refused_when_frozen_disabled_or_halted(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5))
    amend = rc.Amend(market=M, account=A, order_id=1, size=6)
    desk.do(rc.DisableTrading(account=A, market=M))
    assert rejected(desk.do(amend)) == RiskCode.TRADING_DISABLED
    desk.do(rc.EnableTrading(account=A, market=M))
    desk.do(rc.GlobalHalt())
    assert rejected(desk.do(amend)) == RiskCode.GLOBAL_HALT
    desk.do(rc.Resume())
    assert rejected(desk.do(rc.Amend(market=M, account=A, order_id=7, size=6))) == (
        RiskCode.UNKNOWN_ORDER
    )
    desk.do(rc.Freeze(account=A))  # also cancels the order
    desk.do(rc.Unfreeze(account=A))
    desk.do(place(A, "buy", 90, 5))
    desk.do(rc.Freeze(account=B))
    assert rejected(desk.do(rc.Amend(market=M, account=A, order_id=2, size=9, price=2000))) == (
        RiskCode.INSUFFICIENT_FUNDS
    )


def test_disable_trading_per_market_and_for_all_markets(desk: Desk) -> None:
    desk.do(rc.DisableTrading(account=A, market=M))
    assert rejected(desk.do(place(A, "buy", 90, 1))) == RiskCode.TRADING_DISABLED
    assert of(desk.do(place(B, "buy", 90, 1)), OrderAcceptedForMatching)
    desk.do(rc.EnableTrading(account=A, market=M))
    desk.do(rc.DisableTrading(account=A))
    assert rejected(desk.do(place(A, "buy", 90, 1))) == RiskCode.TRADING_DISABLED
    desk.do(rc.EnableTrading(account=A))
    assert of(desk.do(place(A, "buy", 90, 1)), OrderAcceptedForMatching)
    with pytest.raises(CommandError):
        desk.do(rc.DisableTrading(account=A, market="NOPE-USD"))


def test_global_halt_refuses_orders_but_not_cancels(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 1))
    desk.do(rc.GlobalHalt())
    assert rejected(desk.do(place(A, "buy", 90, 1))) == RiskCode.GLOBAL_HALT
    desk.do(rc.Cancel(market=M, account=A, order_id=1))
    assert desk.bal(A, "USD") == (10_000, 0)
    desk.do(rc.Resume())
    assert of(desk.do(place(A, "buy", 90, 1)), OrderAcceptedForMatching)


def test_market_unavailable_unknown_status_and_backpressure(desk: Desk) -> None:
    assert rejected(desk.do(place(A, "buy", 90, 1, market="X-USD"))) == (
        RiskCode.MARKET_UNAVAILABLE
    )
    desk.do(rc.SetBackpressure(market=M, on=True))
    assert rejected(desk.do(place(A, "buy", 90, 1))) == RiskCode.MARKET_UNAVAILABLE
    desk.do(rc.SetBackpressure(market=M, on=False))
    desk.engine_cmd(SetMarketStatus(market=M, status=MarketStatus.HALTED))
    assert rejected(desk.do(place(A, "buy", 90, 1))) == RiskCode.MARKET_UNAVAILABLE
    desk.engine_cmd(SetMarketStatus(market=M, status=MarketStatus.ACTIVE))
    assert of(desk.do(place(A, "buy", 90, 1)), OrderAcceptedForMatching)
    assert rejected(desk.do(rc.CancelAll(account=A, market="X-USD"))) == (
        RiskCode.MARKET_UNAVAILABLE
    )


def test_limits_on_notional_and_open_orders(desk: Desk) -> None:
    desk.do(rc.SetLimits(account=A, max_open_orders=2, max_order_notional={"USD": 500}))
    assert rejected(desk.do(place(A, "buy", 101, 5))) == RiskCode.NOTIONAL_LIMIT
    assert rejected(desk.do(place(A, "sell", 0, 0, quote_size=501))) == RiskCode.NOTIONAL_LIMIT
    desk.do(place(A, "buy", 100, 5))
    desk.do(place(A, "sell", 120, 1))
    assert rejected(desk.do(place(A, "sell", 120, 1))) == RiskCode.OPEN_ORDERS_LIMIT
    assert rejected(desk.do(rc.Amend(market=M, account=A, order_id=1, size=6))) == (
        RiskCode.NOTIONAL_LIMIT
    )
    with pytest.raises(CommandError):
        desk.do(rc.SetLimits(account=A, max_order_notional={"NOPE": 1}))
    with pytest.raises(CommandError):
        desk.do(rc.SetLimits(account=A, max_open_orders=-1))
    with pytest.raises(CommandError):
        desk.do(rc.SetLimits(account=A, max_order_notional={"USD": -1}))


def test_insufficient_funds_and_never_funded_accounts(desk: Desk) -> None:
    assert rejected(desk.do(place(A, "buy", 100, 101))) == RiskCode.INSUFFICIENT_FUNDS
    assert rejected(desk.do(place(A, "sell", 100, 101))) == RiskCode.INSUFFICIENT_FUNDS
    assert rejected(desk.do(place(addr(77), "sell", 100, 1))) == RiskCode.INSUFFICIENT_FUNDS
    assert addr(77) not in desk.ledger.accounts


KEY_1, KEY_2 = "dk_" + "1" * 32, "dk_" + "2" * 32


def test_cancel_all_via_a_key_cancels_exactly_the_orders_placed_through_it(desk: Desk) -> None:
    """A connection's cancel-on-disconnect: risk remembers the key each order came through,
    also across a snapshot, and cancels those orders only, each with its own cancel."""
    first = desk.do(msgspec.structs.replace(place(A, "buy", 90, 1), via=KEY_1))
    second = desk.do(msgspec.structs.replace(place(A, "buy", 91, 1), via=KEY_1))
    other_key = desk.do(msgspec.structs.replace(place(A, "buy", 92, 1), via=KEY_2))
    no_key = desk.do(place(A, "buy", 93, 1))
    oids = [of(e, OrderAcceptedForMatching)[0].order_id for e in (first, second, other_key)]
    oids.append(of(no_key, OrderAcceptedForMatching)[0].order_id)
    restored = Ledger.restore(desk.ledger.snapshot())
    assert restored.snapshot() == desk.ledger.snapshot()
    assert [restored.orders[o].via for o in oids] == [KEY_1, KEY_1, KEY_2, None]

    events = desk.do(rc.CancelAll(account=A, via=KEY_1))
    forwarded = of(events, OrderCommandForwarded)
    assert [e.command.order_id for e in forwarded] == oids[:2]
    assert [e.cause for e in of(events, FundsReleased)] == ["cancelled", "cancelled"]
    assert sorted(desk.ledger.accounts[A].orders) == sorted(oids[2:])
    assert desk.do(rc.CancelAll(account=A, via=KEY_1)) == []  # nothing of that key is left


def test_a_malformed_via_is_refused_and_changes_nothing(desk: Desk) -> None:
    before = desk.ledger.snapshot()
    for bad in ("", "dk_short", "DK_" + "1" * 32, "dk_" + "g" * 32):
        with pytest.raises(CommandError) as e:
            desk.ledger.apply(
                msgspec.structs.replace(place(A, "buy", 90, 1), via=bad, ts=desk.ts + 1),
                InputRef("risk-in", 1),
            )
        assert e.value.field == "via"
        with pytest.raises(CommandError):
            desk.ledger.apply(
                rc.CancelAll(account=A, via=bad, ts=desk.ts + 1), InputRef("risk-in", 1)
            )
    assert desk.ledger.snapshot() == before


def test_cancel_all_forwards_one_command_per_market_with_open_orders(desk: Desk) -> None:
    assert desk.do(rc.CancelAll(account=A)) == []
    desk.do(place(A, "buy", 90, 1))
    desk.do(place(A, "buy", 91, 1))
    events = desk.do(rc.CancelAll(account=A))
    assert len(of(events, OrderCommandForwarded)) == 1
    assert [e.cause for e in of(events, FundsReleased)] == ["cancelled", "cancelled"]
    assert len(of(desk.do(rc.CancelAll(account=A, market=M)), OrderCommandForwarded)) == 1


# ---------------------------------------------------------------- client order ids


def test_duplicate_client_order_id_returns_the_earlier_outcome_for_24_hours(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5, client_order_id="k"))
    [dup] = of(desk.do(place(A, "buy", 95, 1, client_order_id="k")), OrderDuplicate)
    assert (dup.order_id, dup.status, dup.filled) == (1, OrderStatus.OPEN, 0)
    desk.do(place(B, "sell", 90, 2))
    desk.do(rc.Cancel(market=M, account=A, client_order_id="k"))
    end_ts = desk.ts  # A's order ended here
    [dup] = of(desk.do(place(A, "buy", 95, 1, client_order_id="k")), OrderDuplicate)
    assert (dup.status, dup.filled, dup.detail) == (OrderStatus.CANCELLED, 2, "user")
    assert desk.bal(A, "USD") == (10_000 - 180, 0)
    # another market or account is another key
    assert of(desk.do(place(B, "buy", 95, 1, client_order_id="k")), OrderAcceptedForMatching)
    desk.do(rc.Cancel(market=M, account=B, client_order_id="k"))
    # remembered for 24 hours after the end (1 ns short of it included), free again at 24 h
    again = place(A, "buy", 95, 1, client_order_id="k")
    assert of(desk.do(again, ts=end_ts + DAY - 1), OrderDuplicate)
    [acc] = of(desk.do(again, ts=end_ts + DAY), OrderAcceptedForMatching)
    assert acc.order_id == 4


def test_engine_rejected_order_is_remembered_with_its_code(desk: Desk) -> None:
    desk.do(place(B, "sell", 100, 5))
    desk.do(place(A, "buy", 100, 5, post_only=True, client_order_id="p"))
    [dup] = of(desk.do(place(A, "buy", 100, 5, client_order_id="p")), OrderDuplicate)
    assert (dup.status, dup.detail) == (OrderStatus.REJECTED, "post_only_would_take")


# ---------------------------------------------------------------- addresses


CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # from EIP-55's test vectors


@pytest.mark.parametrize(
    ("account", "ok"),
    [
        (CHECKSUMMED, True),
        (CHECKSUMMED.lower(), True),
        ("0x" + CHECKSUMMED[2:].upper(), True),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", False),  # one letter's case flipped
        ("0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", False),
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", False),
        ("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00", False),
        ("0xzaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", False),
    ],
)
def test_addresses_are_validated_and_compared_in_canonical_form(
    desk: Desk, account: str, ok: bool
) -> None:
    events = desk.do(rc.Deposit(account=account, asset="T", amount=3, tx_id=f"a{account}"))
    if ok:
        assert of(events, DepositCredited)[0].account == CHECKSUMMED.lower()
        assert desk.ledger.balance(CHECKSUMMED.lower(), "T") == (3, 0)
    else:
        assert rejected(events) == RiskCode.INVALID_ADDRESS


@pytest.mark.parametrize(
    "cmd",
    [
        place("0xnope", "buy", 1, 1),
        rc.Amend(market=M, account="0xnope", order_id=1, size=1),
        rc.Cancel(market=M, account="0xnope", order_id=1),
        rc.CancelAll(account="0xnope"),
        rc.Withdraw(account="0xnope", asset="T", amount=1),
        rc.Freeze(account="0xnope"),
        rc.Unfreeze(account="0xnope"),
        rc.DisableTrading(account="0xnope"),
        rc.SetAccountFees(account="0xnope"),
        rc.SetLimits(account="0xnope"),
    ],
)
def test_every_account_command_rejects_a_bad_address(desk: Desk, cmd: Any) -> None:
    assert rejected(desk.do(cmd)) == RiskCode.INVALID_ADDRESS


# ---------------------------------------------------------------- contract and self-check


def test_contract_errors_change_nothing(desk: Desk) -> None:
    before = desk.ledger.snapshot()
    led = desk.ledger
    with pytest.raises(CommandError):
        led.apply(rc.GlobalHalt(ts=1), InputRef("x", 1))  # time goes back
    with pytest.raises(CommandError):
        led.apply("nonsense", InputRef("x", 1))  # type: ignore[arg-type]
    with pytest.raises(CommandError):
        led.apply(place(A, "buy", 10, 0, ts=desk.ts), InputRef("x", 1))  # size 0
    with pytest.raises(CommandError):
        led.apply(rc.AddMarket(spec=SIMPLE), InputRef("x", 1))
    with pytest.raises(CommandError):
        led.apply(rc.SetFees(market="X-USD", maker_bps=0, taker_bps=0), InputRef("x", 1))
    assert led.snapshot() == before


def test_a_place_that_raises_changes_nothing_even_when_client_ids_fall_due(desk: Desk) -> None:
    """A malformed place arriving when remembered client order ids are 24 hours old raises
    before the ledger forgets them: the snapshot is byte-identical, and the ids are still
    forgotten by the next valid place."""
    desk.do(place(A, "buy", 90, 5, client_order_id="k"))
    desk.do(rc.Cancel(market=M, account=A, client_order_id="k"))
    end_ts = desk.ts
    led = desk.ledger
    before = led.snapshot()
    bad = place(A, "buy", 10, 0, client_order_id="k", ts=end_ts + DAY)  # size 0
    with pytest.raises(CommandError):
        led.apply(bad, InputRef("x", 1))
    assert led.snapshot() == before
    [acc] = of(
        desk.do(place(A, "buy", 95, 1, client_order_id="k"), ts=end_ts + DAY),
        OrderAcceptedForMatching,
    )
    assert acc.order_id == 2
    assert led.snapshot() != before


def test_accounts_of_other_shards_are_a_contract_error() -> None:
    shard0 = Ledger(0, 2)
    foreign = next(
        addr(i) for i in range(1, 50) if Desk(2).shard_for(rc.Freeze(account=addr(i))) == [1]
    )
    with pytest.raises(CommandError):
        shard0.apply(rc.Freeze(account=foreign), InputRef("x", 1))
    with pytest.raises(CommandError):
        shard0.apply(place(foreign, "buy", 1, 1), InputRef("x", 1))
    with pytest.raises(ValueError):
        Ledger(2, 2)


def test_broken_invariant_halts_the_shard(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5))
    desk.ledger.accounts[A].bal["USD"][1] += 1  # a hold that no order explains
    events = desk.do(rc.Cancel(market=M, account=A, order_id=1))
    [halted] = of(events, Halted)
    assert "locked" in halted.reason
    with pytest.raises(LedgerHalted):
        desk.do(rc.GlobalHalt())
    restored = Ledger.restore(desk.ledger.snapshot())
    assert restored.halted == desk.ledger.halted


def test_snapshot_round_trip_keeps_every_kind_of_state(desk: Desk) -> None:
    desk.do(rc.SetFees(market=M, maker_bps=-1, taker_bps=3))
    desk.do(rc.SetAccountFees(account=A, maker_bps=0, taker_bps=1))
    desk.do(rc.SetLimits(account=B, max_open_orders=5, max_order_notional={"USD": 10**6}))
    desk.do(rc.DisableTrading(account=C, market=M))
    desk.do(rc.Freeze(account=C))
    desk.do(place(A, "buy", 90, 5, client_order_id="x"))
    desk.do(place(B, "sell", 90, 1, client_order_id="y"))
    desk.do(rc.Withdraw(account=B, asset="USD", amount=7))
    desk.do(rc.SetBackpressure(market=M, on=True))
    snap = desk.ledger.snapshot()
    again = Ledger.restore(snap)
    assert again.snapshot() == snap
    assert again.state_hash() == desk.ledger.state_hash()
    with pytest.raises(ValueError):
        Ledger.restore(msgspec.msgpack.encode({"v": 99}))


def test_matching_events_about_unknown_orders_of_this_shard_are_contract_errors(
    desk: Desk,
) -> None:
    desk.do(place(B, "sell", 100, 5))
    desk.do(place(A, "buy", 100, 2))
    events = [e for e in desk.match_events if e.__class__.__name__ in ("Trade", "Filled")]
    trade, filled = events[0], events[1]
    led = desk.ledger
    before = led.snapshot()
    ref = InputRef("m", 1)
    stale = [
        msgspec.structs.replace(trade, maker_order_id=77),
        msgspec.structs.replace(trade, taker_order_id=78),
        msgspec.structs.replace(filled, order_id=79),
    ]
    accepted = next(e for e in desk.match_events if e.__class__.__name__ == "Accepted")
    stale.append(msgspec.structs.replace(accepted, order_id=80))
    for e in stale:
        with pytest.raises(CommandError):
            led.apply(e, ref)
    assert led.snapshot() == before
    # other shards' orders are none of this shard's business
    foreign = msgspec.structs.replace(filled, order_id=(5 << 40) | 1)
    assert led.apply(foreign, ref) == []
    foreign_trade = msgspec.structs.replace(
        trade, maker_order_id=(5 << 40) | 1, taker_order_id=(5 << 40) | 2, price=101
    )
    assert led.apply(foreign_trade, ref) == []
    assert led.markets[M].last == 101


def test_amended_that_disagrees_with_risk_halts(desk: Desk) -> None:
    desk.do(place(A, "buy", 90, 5))
    desk.do(rc.Amend(market=M, account=A, order_id=1, size=6))
    amended = next(e for e in desk.match_events if e.__class__.__name__ == "Amended")
    led = Ledger.restore(desk.ledger.snapshot())
    led.orders[1].amending = True
    events = led.apply(msgspec.structs.replace(amended, remaining=2), InputRef("m", 1))
    assert isinstance(events[-1], Halted)
