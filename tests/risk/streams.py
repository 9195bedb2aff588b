"""Seeded random streams of risk commands, independent of how accounts are sharded.

Orders are amended and cancelled by client order id and withdrawals are reported by the
account's n-th request, so the same stream means the same thing with any shard count (order
and withdrawal ids carry the shard). `run` drives a `Desk` synchronously (every command's
effects are delivered before the next command).
"""

from __future__ import annotations

import random
from typing import Any

from dex.core.enums import STP, OrderType, Side, TimeInForce
from dex.risk import commands as rc
from dex.risk.events import RiskEvent, WithdrawalRequested
from tests.risk.harness import FINE, SIMPLE, Desk, addr
from tests.support.markets import USD

ACCOUNTS = [addr(0x1000 + 7919 * i) for i in range(12)]
MARKETS = {"T-USD": (90, 110), "E-USD": (190, 210)}
ASSETS = ("T", "E", "USD")


def key_id(account: str, n: int) -> str:
    """An API key id of the account's own (ids are unique per shard: one account's ids never
    clash with another's, whatever the shard count)."""
    return f"dk_{ACCOUNTS.index(account):016x}{n:016x}"


def stream(seed: int, n: int) -> list[Any]:
    rng = random.Random(seed)
    ops: list[Any] = [
        rc.AddAsset(asset=USD),
        rc.AddMarket(spec=SIMPLE),
        rc.AddMarket(spec=FINE),
        rc.SetFees(market="T-USD", maker_bps=-5, taker_bps=20),
        rc.SetFees(market="E-USD", maker_bps=3, taker_bps=7),
        rc.SetAccountFees(account=ACCOUNTS[0], maker_bps=-10, taker_bps=10),
    ]
    for i, account in enumerate(ACCOUNTS):
        for asset, amount in (("USD", 3_000_000), ("T", 300), ("E", 3_000)):
            ops.append(
                rc.Deposit(account=account, asset=asset, amount=amount, tx_id=f"d{i}{asset}")
            )
    cids = 0
    for _ in range(n):
        account = rng.choice(ACCOUNTS)
        market = rng.choice(list(MARKETS))
        lo, hi = MARKETS[market]
        roll = rng.random()
        if roll < 0.6:
            cids += 1
            side = rng.choice([Side.BUY, Side.SELL])
            kind = rng.choice([OrderType.LIMIT] * 5 + list(OrderType))
            kw: dict[str, Any] = {"client_order_id": f"c{cids}", "stp": rng.choice(list(STP))}
            if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
                kw.update(price=rng.randint(lo, hi), size=rng.randint(1, 10))
                kw["tif"] = rng.choice([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC])
            else:
                kw["tif"] = TimeInForce.IOC
                if rng.random() < 0.6:
                    kw["size"] = rng.randint(1, 10)
                else:
                    kw["quote_size"] = rng.choice([5_000, 40_000])
            if kind in (OrderType.STOP_LIMIT, OrderType.STOP_MARKET):
                kw["trigger_price"] = rng.randint(lo, hi)
            if rng.random() < 0.2:  # wallet-signed: a nonce, sometimes one used before
                kw["nonce"] = rng.randint(1, 40)
            ops.append(rc.Place(market=market, account=account, side=side, type=kind, **kw))
        elif roll < 0.75 and cids:
            cid = f"c{rng.randint(max(1, cids - 20), cids)}"
            ops.append(rc.Cancel(market=market, account=account, client_order_id=cid))
        elif roll < 0.85 and cids:
            cid = f"c{rng.randint(max(1, cids - 20), cids)}"
            ops.append(
                rc.Amend(
                    market=market,
                    account=account,
                    client_order_id=cid,
                    price=rng.choice([0, rng.randint(lo, hi)]),
                    size=rng.randint(1, 12),
                )
            )
        elif roll < 0.9:
            ops.append(
                rc.Withdraw(
                    account=account, asset=rng.choice(ASSETS), amount=rng.randint(1, 50_000)
                )
            )
        elif roll < 0.95:
            ops.append(("withdrawal_report", account, rng.random() < 0.5))
        elif roll < 0.97:
            ops.append(rc.Freeze(account=account))
            ops.append(rc.Unfreeze(account=account))
        elif roll < 0.98:
            ops.append(
                rc.RegisterApiKey(
                    account=account,
                    api_key=key_id(account, rng.randint(1, 6)),
                    key_type="hmac",
                    material="c2VhbGVk",
                    permissions="read,trade",
                    nonce=rng.randint(0, 20),
                )
            )
        elif roll < 0.99:
            key = key_id(account, rng.randint(1, 6))
            ops.append(rc.RevokeApiKey(account=account, api_key=key, nonce=rng.randint(0, 20)))
        else:
            ops.append(rc.CancelAll(account=account))
    return ops


def run(desk: Desk, ops: list[Any], pending: dict[str, list[int]] | None = None) -> list[RiskEvent]:
    """Apply the stream; withdrawal reports finish the account's oldest pending request
    (`pending`: account -> withdrawal ids, kept across calls when given)."""
    pending = {} if pending is None else pending
    out: list[RiskEvent] = []
    for op in ops:
        if isinstance(op, tuple):
            _, account, completed = op
            wids = pending.get(account)
            if not wids:
                continue
            wid = wids.pop(0)
            op = (
                rc.WithdrawalCompleted(withdrawal_id=wid, tx_id="0x1")
                if completed
                else rc.WithdrawalFailed(withdrawal_id=wid)
            )
        events = desk.do(op)
        out.extend(events)
        for e in events:
            if isinstance(e, WithdrawalRequested):
                pending.setdefault(e.account, []).append(e.withdrawal_id)
    return out
