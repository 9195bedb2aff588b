"""Reconciliation (`dex db verify`): the history store checked against itself.

- balance: every account's available and locked per asset, recomputed from
  `ledger_entries`, equals its `balances` row (a row of zeros counts as absent; the system
  accounts `external` and `clearing:<market>` have no rows).
- event: every event's entries sum to zero per asset.
- conservation: per asset, all balances (accounts and fee accounts) plus the clearing
  accounts equal deposits minus completed withdrawals (from `deposits` / `withdrawals`).
- clearing: every clearing account is zero (both sides of every trade applied). A store read
  while persistence is behind on one risk log may show a trade half applied here.

Sums are computed by the database (GROUP BY), so the check reads aggregates, not rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from dex.persistence.ledger import AVAILABLE, CLEARING, is_system
from dex.persistence.schema import balances, deposits, ledger_entries, withdrawals


@dataclass(frozen=True)
class Difference:
    check: str  # balance / event / conservation / clearing
    account: str
    asset: str
    expected: str  # what the ledger (or the flows) say
    found: str  # what the store holds
    where: str = ""


def verify(conn: Connection) -> list[Difference]:
    """Every difference found, in a stable order; empty when the books balance."""
    return [*_balances(conn), *_events(conn), *_conservation(conn), *_clearing(conn)]


def _ledger(conn: Connection) -> dict[tuple[str, str], list[int]]:
    le = ledger_entries.c
    total = func.sum(le.delta)
    got = conn.execute(
        select(le.account, le.asset, le.bucket, total).group_by(le.account, le.asset, le.bucket)
    )
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for account, asset, bucket, delta in got:
        out[(account, asset)][0 if bucket == AVAILABLE else 1] += int(delta)
    return out


def _balances(conn: Connection) -> list[Difference]:
    recomputed = {k: v for k, v in _ledger(conn).items() if not is_system(k[0])}
    stored = {
        (r.account, r.asset): [int(r.available), int(r.locked)]
        for r in conn.execute(select(balances))
    }
    out = []
    for key in sorted(set(recomputed) | set(stored)):
        want = recomputed.get(key, [0, 0])
        have = stored.get(key, [0, 0])
        if want != have:
            out.append(
                Difference(
                    "balance",
                    key[0],
                    key[1],
                    f"available {want[0]} locked {want[1]}",
                    f"available {have[0]} locked {have[1]}",
                )
            )
    return out


def _events(conn: Connection) -> list[Difference]:
    le = ledger_entries.c
    total = func.sum(le.delta)
    got = conn.execute(
        select(le.stream, le.log_seq, le.idx, le.asset, total)
        .group_by(le.stream, le.log_seq, le.idx, le.asset)
        .having(total != 0)
        .order_by(le.stream, le.log_seq, le.idx, le.asset)
    )
    out = []
    for stream, seq, idx, asset, delta in got:
        accounts = conn.execute(
            select(le.account)
            .where(le.stream == stream, le.log_seq == seq, le.idx == idx, le.asset == asset)
            .distinct()
            .order_by(le.account)
        )
        out.append(
            Difference(
                "event",
                ", ".join(a for (a,) in accounts),
                asset,
                "entries sum to 0",
                f"sum {int(delta)}",
                f"{stream}#{seq}/{idx}",
            )
        )
    return out


def _conservation(conn: Connection) -> list[Difference]:
    held: dict[str, int] = defaultdict(int)
    b = balances.c
    for asset, total in conn.execute(
        select(b.asset, func.sum(b.available + b.locked)).group_by(b.asset)
    ):
        held[asset] += int(total)
    le = ledger_entries.c
    for asset, total in conn.execute(
        select(le.asset, func.sum(le.delta))
        .where(le.account.startswith(CLEARING, autoescape=True))
        .group_by(le.asset)
    ):
        held[asset] += int(total)
    flows: dict[str, int] = defaultdict(int)
    d, w = deposits.c, withdrawals.c
    for asset, total in conn.execute(select(d.asset, func.sum(d.amount)).group_by(d.asset)):
        flows[asset] += int(total)
    for asset, total in conn.execute(
        select(w.asset, func.sum(w.amount)).where(w.status == "completed").group_by(w.asset)
    ):
        flows[asset] -= int(total)
    return [
        Difference(
            "conservation",
            "all accounts",
            asset,
            f"deposits - withdrawals {flows.get(asset, 0)}",
            f"held {held.get(asset, 0)}",
        )
        for asset in sorted(set(held) | set(flows))
        if held.get(asset, 0) != flows.get(asset, 0)
    ]


def _clearing(conn: Connection) -> list[Difference]:
    le = ledger_entries.c
    total = func.sum(le.delta)
    got = conn.execute(
        select(le.account, le.asset, total)
        .where(le.account.startswith(CLEARING, autoescape=True))
        .group_by(le.account, le.asset)
        .having(total != 0)
        .order_by(le.account, le.asset)
    )
    return [
        Difference("clearing", account, asset, "0", str(int(delta)))
        for account, asset, delta in got
    ]
