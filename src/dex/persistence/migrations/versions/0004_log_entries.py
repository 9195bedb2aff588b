"""The raw events one row per log entry, and two ledger indexes fewer (the ingest rate).

Up to 0003 `events` held one row per event (`stream, log_seq, idx, kind, body` JSONB with a
3-column key): ~700 bytes and one key per event, converted to JSONB by the server, the
writer's most expensive table after `ledger_entries`. From here:

- `log_entries(stream, log_seq, body)`: one row per log entry, `body` the JSON array of its
  events in log order (JSON: stored as sent, only validated; lz4 TOAST compression where the
  server is built with it). Unique by stream and log position, as the raw events always were.
- `events` becomes a view of it with the columns it had (`idx` the event's place in the
  entry, `kind` its `event` tag, `body` the event): every reader of `events` reads the same
  rows as before.
- `catalog(stream, log_seq, idx, body)`: the `asset_added` / `market_added` events, what the
  partial index `events_catalog` found (the service reads them at start).
- `ledger_by_account_asset_ts` goes: the ledger of one asset is read from the account's
  range of `ledger_by_account_ts`, filtering the asset (an index scan still; an account holds
  a few assets). Writing a second 7-column key for every ledger entry cost ~0.4 s of the
  ~1 s PostgreSQL spent on 138k entries.
- `ledger_entries` loses its primary key `(stream, log_seq, idx, line)` and
  `ledger_by_account_ts` (which ends in those columns) becomes unique: one index instead of
  two for every entry (~0.2 s of the ~0.6 s left). An entry is still refused twice: by that
  unique index, and before it by the key of `log_entries` (the rows of a log entry are
  written in the transaction that stores the entry itself). On SQLite, which cannot drop a
  primary key, the table is rebuilt with its rows.

The rows move in SQL on PostgreSQL (`json_agg ... ORDER BY idx`, exact) and in Python on
SQLite (its `json_group_array` does not promise an order before 3.44). Downgrade gives 0003's
table back, row for row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CATALOG_KINDS = "kind IN ('asset_added', 'market_added')"
LEDGER_ASSET_INDEX = ["account", "asset", "ts", "stream", "log_seq", "idx", "line"]
LEDGER_INDEX = ["account", "ts", "stream", "log_seq", "idx", "line"]
LEDGER_KEY = ["stream", "log_seq", "idx", "line"]
_BATCH = 5_000  # events per fetch when SQLite's rows move in Python

VIEW = {
    "postgresql": """
        CREATE VIEW events AS
        SELECT e.stream, e.log_seq, x.n - 1 AS idx, x.body ->> 'event' AS kind, x.body
        FROM log_entries AS e CROSS JOIN LATERAL json_array_elements(e.body)
            WITH ORDINALITY AS x(body, n)
    """,
    "sqlite": """
        CREATE VIEW events AS
        SELECT e.stream, e.log_seq, CAST(x.key AS INTEGER) AS idx,
               json_extract(x.value, '$.event') AS kind, x.value AS body
        FROM log_entries AS e, json_each(e.body) AS x
    """,
}


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.create_table(
        "log_entries",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("log_seq", sa.BigInteger(), primary_key=True),
        sa.Column("body", sa.JSON(), nullable=False),
    )
    if postgres and _has_lz4(bind):
        op.execute("ALTER TABLE log_entries ALTER COLUMN body SET COMPRESSION lz4")
    op.create_table(
        "catalog",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("log_seq", sa.BigInteger(), primary_key=True),
        sa.Column("idx", sa.BigInteger(), primary_key=True),
        sa.Column("body", sa.JSON(), nullable=False),
    )
    cast = "::json" if postgres else ""
    op.execute(
        f"INSERT INTO catalog (stream, log_seq, idx, body) "
        f"SELECT stream, log_seq, idx, body{cast} FROM events WHERE {CATALOG_KINDS}"
    )
    if postgres:
        op.execute(
            "INSERT INTO log_entries (stream, log_seq, body) "
            "SELECT stream, log_seq, json_agg(body ORDER BY idx) FROM events "
            "GROUP BY stream, log_seq"
        )
    else:
        _entries_in_python(bind)
    op.drop_index("events_catalog", table_name="events")
    op.drop_table("events")
    op.execute(VIEW[bind.dialect.name])
    op.drop_index("ledger_by_account_asset_ts", table_name="ledger_entries")
    op.drop_index("ledger_by_account_ts", table_name="ledger_entries")
    if postgres:
        key = sa.inspect(bind).get_pk_constraint("ledger_entries")["name"]
        op.drop_constraint(key or "ledger_entries_pkey", "ledger_entries", type_="primary")
    else:
        _rebuild_ledger(keyed=False)
    op.create_index("ledger_by_account_ts", "ledger_entries", LEDGER_INDEX, unique=True)


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.drop_index("ledger_by_account_ts", table_name="ledger_entries")
    if postgres:
        op.create_primary_key("ledger_entries_pkey", "ledger_entries", LEDGER_KEY)
    else:
        _rebuild_ledger(keyed=True)
    op.create_index("ledger_by_account_ts", "ledger_entries", LEDGER_INDEX)
    op.create_index("ledger_by_account_asset_ts", "ledger_entries", LEDGER_ASSET_INDEX)
    op.execute("DROP VIEW events")
    op.create_table(
        "events",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("log_seq", sa.BigInteger(), primary_key=True),
        sa.Column("idx", sa.BigInteger(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    )
    if postgres:
        op.execute(
            "INSERT INTO events (stream, log_seq, idx, kind, body) "
            "SELECT e.stream, e.log_seq, x.n - 1, x.body ->> 'event', x.body::jsonb "
            "FROM log_entries AS e CROSS JOIN LATERAL json_array_elements(e.body) "
            "WITH ORDINALITY AS x(body, n)"
        )
    else:
        op.execute(
            "INSERT INTO events (stream, log_seq, idx, kind, body) "
            "SELECT e.stream, e.log_seq, CAST(x.key AS INTEGER), "
            "json_extract(x.value, '$.event'), x.value "
            "FROM log_entries AS e, json_each(e.body) AS x"
        )
    where = sa.text(CATALOG_KINDS)
    op.create_index(
        "events_catalog", "events", ["kind"], sqlite_where=where, postgresql_where=where
    )
    op.drop_table("catalog")
    op.drop_table("log_entries")


def _rebuild_ledger(*, keyed: bool) -> None:
    """SQLite: `ledger_entries` made again with (`keyed`) or without its primary key, every
    row copied (its indexes are made by the caller)."""
    key = set(LEDGER_KEY) if keyed else set()
    columns: list[tuple[str, type[sa.Text] | type[sa.BigInteger]]] = [
        ("stream", sa.Text),
        ("log_seq", sa.BigInteger),
        ("idx", sa.BigInteger),
        ("line", sa.BigInteger),
        ("account", sa.Text),
        ("asset", sa.Text),
        ("bucket", sa.Text),
        ("delta", sa.BigInteger),
        ("cause", sa.Text),
        ("ts", sa.BigInteger),
    ]
    op.create_table(
        "ledger_entries_0004",
        *(sa.Column(n, t, primary_key=n in key, nullable=False) for n, t in columns),
    )
    names = ", ".join(n for n, _ in columns)
    op.execute(f"INSERT INTO ledger_entries_0004 ({names}) SELECT {names} FROM ledger_entries")
    op.drop_table("ledger_entries")
    op.rename_table("ledger_entries_0004", "ledger_entries")


def _has_lz4(bind: Any) -> bool:
    """Whether the server can compress with lz4 (PostgreSQL 14+ built with it)."""
    got = bind.execute(
        sa.text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
    ).scalar()
    return bool(got)


def _entries_in_python(bind: Any) -> None:
    """SQLite: each entry's event bodies, in `idx` order, as one JSON array."""
    rows = bind.execute(
        sa.text("SELECT stream, log_seq, body FROM events ORDER BY stream, log_seq, idx")
    )
    insert = sa.text("INSERT INTO log_entries (stream, log_seq, body) VALUES (:s, :q, :b)")
    key: tuple[str, int] | None = None
    bodies: list[str] = []
    while chunk := rows.fetchmany(_BATCH):
        done = []
        for stream, seq, body in chunk:
            if key is not None and key != (stream, seq):
                done.append({"s": key[0], "q": key[1], "b": "[" + ",".join(bodies) + "]"})
                bodies = []
            key = (stream, int(seq))
            bodies.append(body if isinstance(body, str) else json.dumps(body))
        if done:
            bind.execute(insert, done)
    if key is not None:
        bind.execute(insert, [{"s": key[0], "q": key[1], "b": "[" + ",".join(bodies) + "]"}])
