"""1-minute candles kept by the ingest writer (`candles_1m`), backfilled from the trades.

Up to 0004 a candle query rebuilt its candles from the trades of its window at each call: a
UTC day of 1m candles read that day's trades (83,333 per market at 10M fills, 1.2-1.7 s).
From here the writer keeps one row per (market, minute holding a trade) in the transaction
that writes the trades, and a query reads at most one row per minute of its window.

- `candles_1m(market, open_time, open, high, low, close, base_volume, quote_volume,
  trade_count; PK market, open_time)`: `open_time` ns, a multiple of 60 s since the epoch;
  prices in ticks, base volume in lots, quote volume (price x size) in ticks x lots. The
  primary key is the query's one index range.
- The rows of the trades already stored are made here in SQL, the same on SQLite and
  PostgreSQL: per market and minute, the high, low, volumes and count by GROUP BY, and the
  open and close as the price of the minute's first and last trade in trade order
  `(ts, trade_id)` (two probes of `trades_by_market_ts` per minute).

Downgrade drops the table (the trades keep everything it held).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MINUTE_NS = 60_000_000_000

# a minute's trades: those of its market with `open_time <= ts < open_time + 1 min`
_IN_MINUTE = "t.market = g.market AND t.ts >= g.open_time AND t.ts < g.open_time + " + str(
    MINUTE_NS
)
BACKFILL = f"""
INSERT INTO candles_1m (market, open_time, open, high, low, close, base_volume, quote_volume,
                        trade_count)
SELECT g.market, g.open_time,
       (SELECT t.price FROM trades AS t WHERE {_IN_MINUTE}
        ORDER BY t.ts, t.trade_id LIMIT 1),
       g.high, g.low,
       (SELECT t.price FROM trades AS t WHERE {_IN_MINUTE}
        ORDER BY t.ts DESC, t.trade_id DESC LIMIT 1),
       g.base_volume, g.quote_volume, g.trade_count
FROM (
    SELECT market, ts - ts % {MINUTE_NS} AS open_time, max(price) AS high,
           min(price) AS low, sum(size) AS base_volume, sum(price * size) AS quote_volume,
           count(*) AS trade_count
    FROM trades
    GROUP BY market, ts - ts % {MINUTE_NS}
) AS g
"""


def upgrade() -> None:
    op.create_table(
        "candles_1m",
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("open_time", sa.BigInteger(), primary_key=True),
        sa.Column("open", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("close", sa.BigInteger(), nullable=False),
        sa.Column("base_volume", sa.BigInteger(), nullable=False),
        sa.Column("quote_volume", sa.BigInteger(), nullable=False),
        sa.Column("trade_count", sa.BigInteger(), nullable=False),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("candles_1m")
