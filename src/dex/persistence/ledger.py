"""The double-entry ledger: the entries each risk event makes (pure, no I/O).

Every change of an account's `available` or `locked` of one asset is one entry
`(account, asset, bucket, delta, cause)`, `delta` signed integer units, and each event's
entries sum to zero per asset. What the money moves against when it enters or leaves an
account of the exchange:

- `external`: the outside world, one account per asset. A deposit credits the account's
  available and debits `external`; a completed withdrawal debits the account's locked and
  credits `external`. So `-external` is deposits minus completed withdrawals.
- `clearing:<market>`: the two sides of a trade are settled by different risk shards, in
  different events, so each side settles against the market's clearing account: the side's
  paid asset goes in, its received asset comes out. Once both sides of every trade are
  applied each clearing account is zero in every asset.
- `fee:<r>`: risk shard r's fee account (as risk names it), available only; it may go
  negative (maker rebates).

Causes:
- deposit (`deposit_credited`): account available +amount, external -amount.
- withdrawal: `withdrawal_requested` available -amount, locked +amount;
  `withdrawal_completed` locked -amount, external +amount.
- release: `withdrawal_failed` locked -amount, available +amount; `funds_released` likewise
  (an order's end or an amend settled).
- hold: `order_accepted_for_matching` (hold) and `order_command_forwarded` (an amend's
  hold_increase): available -amount, locked +amount.
- trade (`trade_settled`, per own side): locked -paid and clearing +paid in the paid asset
  (quote for a buy, base for a sell); clearing -received and available +received in the other;
  a buy held above the trade price: locked -released, available +released (cause release).
- fee / rebate: the side's available -fee and the fee account +fee in the received asset
  (`fee` negative: a rebate, cause `rebate`).

Entries of zero are not written.
"""

from __future__ import annotations

from dex.core.enums import Side
from dex.risk import events as re_

EXTERNAL = "external"
CLEARING = "clearing:"
AVAILABLE = "available"
LOCKED = "locked"
CAUSES = ("deposit", "withdrawal", "hold", "release", "trade", "fee", "rebate")


# (account, asset, bucket, delta, cause): a plain tuple, not a NamedTuple (the writer makes
# one per entry, a few per event: construction is most of the ledger's cost)
Entry = tuple[str, str, str, int, str]
DELTA = 3  # the place of `delta` in an Entry


def clearing(market: str) -> str:
    return f"{CLEARING}{market}"


def is_system(account: str) -> bool:
    """An account of the ledger alone (no balance row): `external` and `clearing:<market>`."""
    return account == EXTERNAL or account.startswith(CLEARING)


def _move(out: list[Entry], a: Entry, b: Entry) -> None:
    if a[DELTA]:
        out.append(a)
        out.append(b)


def entries(
    ev: re_.RiskEvent, fee_account: str, markets: dict[str, tuple[str, str]]
) -> list[Entry]:
    """The entries of one risk event (empty for an event that moves no money). `markets` maps
    each market to its (base, quote); `fee_account` is the shard's fee account."""
    out: list[Entry] = []
    if isinstance(ev, re_.DepositCredited):
        a, s, n = ev.account, ev.asset, ev.amount
        _move(out, (a, s, AVAILABLE, n, "deposit"), (EXTERNAL, s, AVAILABLE, -n, "deposit"))
    elif isinstance(ev, re_.WithdrawalRequested):
        a, s, n = ev.account, ev.asset, ev.amount
        _move(out, (a, s, AVAILABLE, -n, "withdrawal"), (a, s, LOCKED, n, "withdrawal"))
    elif isinstance(ev, re_.WithdrawalCompleted):
        a, s, n = ev.account, ev.asset, ev.amount
        _move(
            out,
            (a, s, LOCKED, -n, "withdrawal"),
            (EXTERNAL, s, AVAILABLE, n, "withdrawal"),
        )
    elif isinstance(ev, (re_.WithdrawalFailed, re_.FundsReleased)):
        a, s, n = ev.account, ev.asset, ev.amount
        _move(out, (a, s, LOCKED, -n, "release"), (a, s, AVAILABLE, n, "release"))
    elif isinstance(ev, re_.OrderAcceptedForMatching):
        a, s, n = ev.account, ev.hold_asset, ev.hold
        _move(out, (a, s, AVAILABLE, -n, "hold"), (a, s, LOCKED, n, "hold"))
    elif isinstance(ev, re_.OrderCommandForwarded):
        if ev.hold_asset is not None:
            a, s, n = ev.account, ev.hold_asset, ev.hold_increase
            _move(out, (a, s, AVAILABLE, -n, "hold"), (a, s, LOCKED, n, "hold"))
    elif isinstance(ev, re_.TradeSettled):
        base, quote = markets[ev.market]
        for side in (ev.maker, ev.taker):
            if side is not None:
                _settle(out, side, clearing(ev.market), base, quote, fee_account)
    return out


def _settle(
    out: list[Entry], st: re_.Settlement, clear: str, base: str, quote: str, fee_account: str
) -> None:
    a = st.account
    paid, got = (quote, base) if st.side is Side.BUY else (base, quote)
    _move(
        out,
        (a, paid, LOCKED, -st.paid, "trade"),
        (clear, paid, AVAILABLE, st.paid, "trade"),
    )
    _move(
        out,
        (a, paid, LOCKED, -st.released, "release"),
        (a, paid, AVAILABLE, st.released, "release"),
    )
    _move(
        out,
        (clear, got, AVAILABLE, -st.received, "trade"),
        (a, got, AVAILABLE, st.received, "trade"),
    )
    cause = "fee" if st.fee > 0 else "rebate"
    _move(
        out,
        (a, got, AVAILABLE, -st.fee, cause),
        (fee_account, got, AVAILABLE, st.fee, cause),
    )


def fee_asset(side: Side, base: str, quote: str) -> str:
    """The asset a side's fee is taken in: the asset it received."""
    return base if side is Side.BUY else quote
