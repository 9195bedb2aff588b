"""The first revision: the schema the service created in code before migrations existed
(positions, markets, balances, trades, orders, events), written out.

A store made by that code has exactly these tables; it is stamped at this revision
(`dex.persistence.migrations.upgrade`) instead of running it.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "positions",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "markets",
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("base", sa.Text(), nullable=False),
        sa.Column("quote", sa.Text(), nullable=False),
    )
    op.create_table(
        "balances",
        sa.Column("account", sa.Text(), primary_key=True),
        sa.Column("asset", sa.Text(), primary_key=True),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("locked", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "trades",
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("trade_id", sa.BigInteger(), primary_key=True),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("maker_order_id", sa.BigInteger(), nullable=False),
        sa.Column("taker_order_id", sa.BigInteger(), nullable=False),
        sa.Column("taker_side", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.BigInteger(), primary_key=True),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("client_order_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("filled", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
    )
    op.create_index("orders_by_account", "orders", ["account", "order_id"])
    op.create_table(
        "events",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("log_seq", sa.BigInteger(), primary_key=True),
        sa.Column("idx", sa.BigInteger(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_index("orders_by_account", table_name="orders")
    op.drop_table("orders")
    op.drop_table("trades")
    op.drop_table("balances")
    op.drop_table("markets")
    op.drop_table("positions")
