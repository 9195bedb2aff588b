"""Persistence's candles route on SQLite and PostgreSQL: equal to a naive computation over the
trades stored (hypothesis draws the trades and the queries, including empty intervals and UTC
day boundaries), every parameter refused with its name, an unknown market 404. The trades'
1-minute candles are stored as the ingest writer stores them (`writer.minute_candles`,
merged part by part with its `CANDLE_MERGE` rule), the route folds them into each interval.

Hypothesis draws the examples up front (`examples`) and each runs against one service and
store, emptied between examples: the store's pool belongs to the test's loop, and building a
service per example would cost migrations each time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from dex.persistence import schema, writer
from dex.persistence.writer import Bulk
from tests.bus.contract import aio
from tests.persistence.test_queries import api, ok, refused
from tests.services.reader_kit import ETH_USDC
from tests.services.test_persistence import Database, database  # noqa: F401

MS = 1_000_000
MINUTE = 60_000  # ms
IVS = {"1m": MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "1h": 60 * MINUTE, "4h": 240 * MINUTE}
IVS["1d"] = 24 * 60 * MINUTE
DAY0 = 1_700_006_400_000  # ms, a UTC midnight
TICK, LOT = Decimal("0.01"), Decimal("0.0001")  # ETH-USDC's steps (dex.app.demo)

Trade = tuple[int, int, int]  # (price ticks, size lots, ts ns) in trade order


def dec(n: int, step: Decimal) -> str:
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return f"{Decimal(n) * step:.{max(0, -exponent)}f}"


def naive(trades: list[Trade], interval: str, tick: Decimal, lot: Decimal) -> list[list[Any]]:
    """Every candle of `trades`, oldest first, as rows (independent of the builder)."""
    iv = IVS[interval] * MS
    groups: dict[int, list[Trade]] = {}
    for t in trades:
        groups.setdefault(t[2] // iv * iv, []).append(t)
    rows = []
    for start in sorted(groups):
        g = groups[start]
        prices = [p for p, _, _ in g]
        rows.append(
            [
                start // MS,
                dec(prices[0], tick),
                dec(max(prices), tick),
                dec(min(prices), tick),
                dec(prices[-1], tick),
                dec(sum(s for _, s, _ in g), lot),
                dec(sum(p * s for p, s, _ in g), tick * lot),
                len(g),
            ]
        )
    return rows


def window(
    rows: list[list[Any]], interval: str, start: int | None, end: int | None, limit: int
) -> list[list[Any]]:
    """What the route promises: the rows opened in [start, end], the first `limit` from
    `start` (else the last up to `end`) within `limit` intervals of the nearest one."""
    iv = IVS[interval]
    got = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] <= end)]
    if not got:
        return []
    if start is not None:
        return [r for r in got if r[0] < got[0][0] + limit * iv]
    return [r for r in got if r[0] > got[-1][0] - limit * iv]


trade_lists = st.lists(
    st.tuples(
        st.integers(1, 400_000),
        st.integers(1, 50_000),
        # around two UTC midnights, bunched so candles hold several trades
        st.one_of(
            st.integers(0, 2 * IVS["1d"] + 3 * MINUTE),
            st.integers(-2, 2).map(lambda k: IVS["1d"] + k * MINUTE),
        ),
    ),
    max_size=40,
)
queries = st.lists(
    st.tuples(
        st.sampled_from(list(IVS)),
        st.none() | st.integers(-MINUTE, 2 * IVS["1d"] + 2 * MINUTE),
        st.none() | st.integers(0, 3 * IVS["1d"]),
        st.integers(1, 30),
    ),
    min_size=1,
    max_size=6,
)


def examples(n: int) -> list[tuple[list[Any], list[Any]]]:
    out: list[tuple[list[Any], list[Any]]] = []

    @settings(max_examples=n, database=None, suppress_health_check=list(HealthCheck))
    @given(trade_lists, queries)
    def collect(trades: list[Any], qs: list[Any]) -> None:
        out.append((trades, qs))

    collect()
    return out


@aio
async def test_candles_equal_a_naive_computation(database: Database) -> None:  # noqa: F811
    cases = examples(40)
    async with api(database, trade=False) as (_c, svc, client):
        assert svc.engine is not None
        for raw, qs in cases:
            # trade order is (ts, trade_id): ids follow the times, as one shard stamps them
            ordered = sorted(raw, key=lambda t: t[2])
            trades = [(p, s, (DAY0 + ms) * MS + i) for i, (p, s, ms) in enumerate(ordered)]
            rows = [(ETH_USDC, i + 1, p, s, 1, 2, "buy", ts) for i, (p, s, ts) in enumerate(trades)]
            async with svc.engine.begin() as conn:
                await conn.execute(delete(schema.trades))
                await conn.execute(delete(schema.candles_1m))
                if trades:
                    names = [c.name for c in schema.trades.columns]
                    await conn.execute(
                        insert(schema.trades), [dict(zip(names, r, strict=True)) for r in rows]
                    )
                bulk = await Bulk.of(conn)
                # in parts of up to 7 trades, each merged into what the ones before stored
                for k in range(0, len(rows), 7):
                    minutes = writer.minute_candles(rows[k : k + 7])
                    await bulk.merge(schema.candles_1m, minutes, writer.CANDLE_MERGE)
            for interval, start, end, limit in qs:
                start = None if start is None else max(0, DAY0 + start)
                end = None if end is None else DAY0 + end
                if start is not None and end is not None and end < start:
                    start, end = end, start
                params: dict[str, Any] = {"interval": interval, "limit": limit}
                params |= {k: v for k, v in (("start", start), ("end", end)) if v is not None}
                got = await ok(client, f"/v1/markets/{ETH_USDC}/candles", **params)
                want = window(naive(trades, interval, TICK, LOT), interval, start, end, limit)
                assert got["candles"] == want, (trades, params)
                assert got["interval"] == interval and got["market"] == ETH_USDC


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interval": "2m"}, "interval"),
        ({"start": "-1"}, "start"),
        ({"start": "soon"}, "start"),
        ({"end": "1.5"}, "end"),
        ({"start": "10", "end": "9"}, "end"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1501"}, "limit"),
        ({"limit": "x"}, "limit"),
    ],
)
@aio
async def test_candles_parameters_are_checked(
    database: Database,  # noqa: F811
    params: dict[str, str],
    field: str,
) -> None:
    async with api(database, trade=False) as (_c, _svc, client):
        await refused(
            client, f"/v1/markets/{ETH_USDC}/candles", 400, "invalid_request", field, **params
        )
        await refused(client, "/v1/markets/NOPE-USDC/candles", 404, "unknown_market", "market")
