"""Reconciliation (`dex db verify`): the history store checked against itself.

- balance: every account's available and locked per asset, recomputed from
  `ledger_entries`, equals its `balances` row (a row of zeros counts as absent; the system
  accounts `external` and `clearing:<market>` have no rows).
- event: every event's entries sum to zero per asset.
- conservation: per asset, all balances (accounts and fee accounts) plus the clearing
  accounts equal deposits minus completed withdrawals (from `deposits` / `withdrawals`).
- clearing: every clearing account is zero (both sides of every trade applied). A store read
  while persistence is behind on one risk log may show a trade half applied here.
- candle: per market, the 1-minute candles the writer keeps (`candles_1m`) equal the ones
  rebuilt from the stored trades (open and close the price of each minute's first and last
  trade in trade order `(ts, trade_id)`, high, low, volumes and count): a difference names
  the market and the minute. The queries answer every interval from those rows.

Sums are computed by the database (GROUP BY), so the check reads aggregates, not rows.

Against the risk engine's own state (`snapshot` differences): each risk shard's latest snapshot
on the bus (`Ledger.restore`) holds its accounts' and its fee account's balances as of the
snapshot's position in the shard's log; every account's balances live on one shard, so they
equal the sums of that log's entries up to that position. A store behind the snapshot is not
compared (a note says so): persistence has not applied that far yet.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, literal_column, select, union

from dex.persistence.ledger import AVAILABLE, CLEARING, is_system
from dex.persistence.schema import (
    CANDLE_ROW,
    balances,
    candles_1m,
    deposits,
    ledger_entries,
    positions,
    trades,
    withdrawals,
)
from dex.risk.ledger import Ledger
from dex.wire import codec, layout

if TYPE_CHECKING:
    from dex.bus import Bus

Cells = dict[tuple[str, str], tuple[int, int]]  # (account, asset) -> (available, locked)


@dataclass(frozen=True)
class Difference:
    check: str  # balance / event / conservation / clearing / snapshot / candle
    account: str  # a candle's: its market
    asset: str
    expected: str  # what the ledger (or the flows) say
    found: str  # what the store holds
    where: str = ""


def verify(conn: Connection) -> list[Difference]:
    """Every difference found, in a stable order; empty when the books balance."""
    return [
        *_balances(conn),
        *_events(conn),
        *_conservation(conn),
        *_clearing(conn),
        *_candles(conn),
    ]


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


MINUTE_NS = 60_000_000_000
_CANDLE_FIELDS = ("open", "high", "low", "close", "base", "quote", "trades")
Minute = tuple[int, int, int, int, int, int, int]  # open, high, low, close, base, quote, trades


def _candles(conn: Connection) -> list[Difference]:
    """Each market's stored 1-minute candles against the ones its stored trades make, one
    market at a time (a market holds at most a row per minute)."""
    markets = union(select(trades.c.market), select(candles_1m.c.market))
    out = []
    for (market,) in conn.execute(select(markets.subquery()).order_by("market")):
        want = rebuilt_minutes(conn, market)
        have = stored_minutes(conn, market)
        for start in sorted(set(want) | set(have)):
            w, h = want.get(start), have.get(start)
            if w != h:
                out.append(
                    Difference(
                        "candle", market, "1m", _said(w), _said(h), f"minute {_minute(start)}"
                    )
                )
    return out


def rebuilt_minutes(conn: Connection, market: str) -> dict[int, Minute]:
    """open_time (ns) -> the 1-minute candle of `market`'s stored trades in that minute: the
    sums by GROUP BY, the open and close by one probe of `trades_by_market_ts` each."""
    t = trades.c
    minute = t.ts - t.ts % literal_column(str(MINUTE_NS))
    g = (
        select(
            minute.label("open_time"),
            func.max(t.price).label("high"),
            func.min(t.price).label("low"),
            func.sum(t.size).label("base"),
            func.sum(t.price * t.size).label("quote"),
            func.count().label("n"),
        )
        .where(t.market == market)
        .group_by(minute)
        .subquery()
    )
    x = trades.alias("x")
    in_minute = (
        x.c.market == market,
        x.c.ts >= g.c.open_time,
        x.c.ts < g.c.open_time + literal_column(str(MINUTE_NS)),
    )
    first = select(x.c.price).where(*in_minute).order_by(x.c.ts, x.c.trade_id).limit(1)
    last = select(x.c.price).where(*in_minute).order_by(x.c.ts.desc(), x.c.trade_id.desc())
    got = conn.execute(
        select(
            g.c.open_time,
            first.scalar_subquery(),
            g.c.high,
            g.c.low,
            last.limit(1).scalar_subquery(),
            g.c.base,
            g.c.quote,
            g.c.n,
        )
    )
    return {int(r[0]): _ints(r[1:]) for r in got}


def stored_minutes(conn: Connection, market: str) -> dict[int, Minute]:
    """open_time (ns) -> the 1-minute candle `candles_1m` holds for `market`."""
    k = candles_1m.c
    got = conn.execute(select(*CANDLE_ROW).where(k.market == market))
    return {int(r[0]): _ints(r[1:]) for r in got}


def _ints(values: Any) -> Minute:
    o, h, lo, c, b, q, n = (int(v) for v in values)
    return (o, h, lo, c, b, q, n)


def _said(candle: Minute | None) -> str:
    if candle is None:
        return "no candle"
    return " ".join(f"{name} {v}" for name, v in zip(_CANDLE_FIELDS, candle, strict=True))


def _minute(open_time: int) -> str:
    """A minute as UTC time and its ms (the API's open time)."""
    at = datetime.fromtimestamp(open_time // 10**9, UTC).strftime("%Y-%m-%dT%H:%MZ")
    return f"{at} ({open_time // 1_000_000} ms)"


# ---------------------------------------------------------------------------- risk snapshots


def risk_shards(conn: Connection) -> list[int]:
    """The risk shards whose logs the store applies (0, 1, ... as their positions say)."""
    streams = {r.stream for r in conn.execute(select(positions.c.stream))}
    out: list[int] = []
    while layout.risk_log(len(out)) in streams:
        out.append(len(out))
    return out


def snapshot_cells(core: bytes, shard: int) -> Cells:
    """The non-zero balances a risk shard's core snapshot holds, its fee account included."""
    led = Ledger.restore(core)
    out: Cells = {}
    for addr, acct in led.accounts.items():
        for asset, cell in acct.bal.items():
            if cell[0] or cell[1]:
                out[(addr, asset)] = (cell[0], cell[1])
    for asset, amount in led.fees.items():
        if amount:
            out[(f"fee:{shard}", asset)] = (amount, 0)
    return out


async def read_snapshots(bus: Bus, shards: list[int]) -> dict[int, tuple[int, Cells]]:
    """Each shard's latest snapshot on the bus: (its position in the shard's log, balances)."""
    out: dict[int, tuple[int, Cells]] = {}
    for r in shards:
        got = await bus.get_snapshot(layout.snapshot_name(layout.risk_tag(r)))
        if got is not None:
            seq, data = got
            out[r] = (seq, snapshot_cells(codec.decode_snapshot(data).core, r))
    return out


def against_snapshots(
    conn: Connection, snapshots: dict[int, tuple[int, Cells]]
) -> tuple[list[Difference], list[str]]:
    """The differences between the store and each risk snapshot, and notes on what was not
    compared (no snapshot yet, or the store behind it)."""
    found: list[Difference] = []
    notes: list[str] = []
    applied = {r.stream: int(r.log_seq) for r in conn.execute(select(positions))}
    for r in risk_shards(conn):
        stream = layout.risk_log(r)
        if r not in snapshots:
            notes.append(f"risk shard {r}: no snapshot on the bus yet, not compared")
            continue
        seq, want = snapshots[r]
        if applied.get(stream, 0) < seq:
            notes.append(
                f"risk shard {r}: the store is at {applied.get(stream, 0)} of its log, behind "
                f"the snapshot at {seq}: not compared"
            )
            continue
        le = ledger_entries.c
        sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for account, asset, bucket, delta in conn.execute(
            select(le.account, le.asset, le.bucket, func.sum(le.delta))
            .where(le.stream == stream, le.log_seq <= seq)
            .group_by(le.account, le.asset, le.bucket)
        ):
            if not is_system(account):
                sums[(account, asset)][0 if bucket == AVAILABLE else 1] += int(delta)
        have = {k: (v[0], v[1]) for k, v in sums.items() if v[0] or v[1]}
        for key in sorted(set(want) | set(have)):
            w, h = want.get(key, (0, 0)), have.get(key, (0, 0))
            if w != h:
                found.append(
                    Difference(
                        "snapshot",
                        key[0],
                        key[1],
                        f"available {w[0]} locked {w[1]}",
                        f"available {h[0]} locked {h[1]}",
                        f"{stream}#{seq}",
                    )
                )
    return found, notes
