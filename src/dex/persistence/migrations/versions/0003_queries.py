"""The query API's columns and indexes: what an order row shows, and a keyset index per list.

`orders` gains `tif`, `trigger_price`, `quote_size` (from the accepted order; NULL for an
order the engine rejected, and for orders stored before this revision) and `created_ts`
(ns, the accepted or rejected event's time; an order stored before this revision gets its
`updated_ts`, the closest time the store holds).

Each list the API pages through is read newest first by a key that ends in the row's
identity, so every list has an index `(filter columns..., sort key...)` and is answered by a
range scan (`test_explain.py`). The indexes of 0002 that are a prefix of a new one are
replaced by it. `events_catalog` is partial (only `asset_added` / `market_added`, a handful
of rows): the service reads the assets and markets from it at start.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CATALOG_KINDS = "kind IN ('asset_added', 'market_added')"

NEW_INDEXES: list[tuple[str, str, list[str]]] = [
    ("orders_by_account_created", "orders", ["account", "created_ts", "order_id"]),
    (
        "orders_by_account_market_created",
        "orders",
        ["account", "market", "created_ts", "order_id"],
    ),
    ("orders_by_client_id", "orders", ["account", "client_order_id", "created_ts", "order_id"]),
    ("fills_by_account_ts", "fills", ["account", "ts", "trade_id", "market", "liquidity"]),
    (
        "fills_by_account_market_ts",
        "fills",
        ["account", "market", "ts", "trade_id", "liquidity"],
    ),
    (
        "ledger_by_account_ts",
        "ledger_entries",
        ["account", "ts", "stream", "log_seq", "idx", "line"],
    ),
    (
        "ledger_by_account_asset_ts",
        "ledger_entries",
        ["account", "asset", "ts", "stream", "log_seq", "idx", "line"],
    ),
    ("deposits_by_account_ts", "deposits", ["account", "ts", "tx_id", "log_index"]),
    ("withdrawals_by_account_ts", "withdrawals", ["account", "requested_ts", "withdrawal_id"]),
    ("trades_by_market_ts", "trades", ["market", "ts", "trade_id"]),
]
REPLACED: list[tuple[str, str, list[str]]] = [  # 0001/0002 indexes that prefix a new one
    ("orders_by_account", "orders", ["account", "order_id"]),
    ("fills_by_account", "fills", ["account", "ts"]),
    ("ledger_entries_by_account", "ledger_entries", ["account", "asset"]),
    ("deposits_by_account", "deposits", ["account", "ts"]),
    ("withdrawals_by_account", "withdrawals", ["account", "requested_ts"]),
]


def upgrade() -> None:
    op.add_column("orders", sa.Column("tif", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("trigger_price", sa.BigInteger(), nullable=True))
    op.add_column("orders", sa.Column("quote_size", sa.BigInteger(), nullable=True))
    op.add_column(
        "orders",
        sa.Column("created_ts", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE orders SET created_ts = updated_ts")
    for name, table, _ in REPLACED:
        op.drop_index(name, table_name=table)
    for name, table, cols in NEW_INDEXES:
        op.create_index(name, table, cols)
    where = sa.text(CATALOG_KINDS)
    op.create_index(
        "events_catalog", "events", ["kind"], sqlite_where=where, postgresql_where=where
    )


def downgrade() -> None:
    op.drop_index("events_catalog", table_name="events")
    for name, table, _ in NEW_INDEXES:
        op.drop_index(name, table_name=table)
    for name, table, cols in REPLACED:
        op.create_index(name, table, cols)
    with op.batch_alter_table("orders") as batch:
        for col in ("created_ts", "quote_size", "trigger_price", "tif"):
            batch.drop_column(col)
