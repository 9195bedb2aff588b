"""Fills, the double-entry ledger, deposits and withdrawals.

A store upgraded from 0001 keeps every row, and its history is filled in: the entries,
fills, deposits and withdrawals of every risk event already in `events`, by the rules of the
ingest writer (`dex.persistence.writer.rebuild_money`), so `dex db verify` holds at once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dex.persistence.writer import rebuild_money

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fills",
        sa.Column("trade_id", sa.BigInteger(), primary_key=True),
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("liquidity", sa.Text(), primary_key=True),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("fee_asset", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("fills_by_account", "fills", ["account", "ts"])
    op.create_table(
        "ledger_entries",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("log_seq", sa.BigInteger(), primary_key=True),
        sa.Column("idx", sa.BigInteger(), primary_key=True),
        sa.Column("line", sa.BigInteger(), primary_key=True),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
    )
    op.create_index("ledger_entries_by_account", "ledger_entries", ["account", "asset"])
    op.create_table(
        "deposits",
        sa.Column("tx_id", sa.Text(), primary_key=True),
        sa.Column("log_index", sa.BigInteger(), primary_key=True),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("deposits_by_account", "deposits", ["account", "ts"])
    op.create_table(
        "withdrawals",
        sa.Column("withdrawal_id", sa.BigInteger(), primary_key=True),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("tx_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("withdrawals_by_account", "withdrawals", ["account", "requested_ts"])
    rebuild_money(op.get_bind())


def downgrade() -> None:
    op.drop_index("withdrawals_by_account", table_name="withdrawals")
    op.drop_table("withdrawals")
    op.drop_index("deposits_by_account", table_name="deposits")
    op.drop_table("deposits")
    op.drop_index("ledger_entries_by_account", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index("fills_by_account", table_name="fills")
    op.drop_table("fills")
