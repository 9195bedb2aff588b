"""The history store's migrations (Alembic), run at service start and by `dex db upgrade`.

Alembic is configured here in code (no alembic.ini): its scripts are this package's `env.py`
and `versions/`, found next to this file, so they work from an installed package. Every
function takes a sync `Connection` inside a transaction (the service and `dex db` pass
`AsyncConnection.run_sync` one), and the migrations run on it: they commit with it.

A store made before migrations existed (the first revision's tables created in code, no
`alembic_version`) is stamped at the first revision, then upgraded: nothing in it is lost.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

HERE = Path(__file__).resolve().parent
BASELINE = "0001"  # the schema the service created in code before migrations
BASELINE_TABLES = frozenset({"positions", "markets", "balances", "trades", "orders", "events"})
VERSION_TABLE = "alembic_version"
_LOCK = 0x646578_6462  # "dexdb": PostgreSQL advisory lock taken while migrating


class UnknownSchema(RuntimeError):
    """The store holds some of the first revision's tables but not all, and no revision:
    not something this code made. Nothing is changed."""


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration: the scripts in this package, run on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision of the scripts."""
    got = ScriptDirectory.from_config(config()).get_current_head()
    if got is None:
        raise RuntimeError(f"no migration scripts in {HERE / 'versions'}")
    return got


def current(connection: Connection) -> str | None:
    """The revision the store is at; None for an empty store or one made before migrations."""
    return MigrationContext.configure(connection).get_current_revision()


def unversioned(connection: Connection) -> bool:
    """Whether the store holds tables of the first revision but no revision: made by the code
    before migrations (`upgrade` stamps it)."""
    tables = set(inspect(connection).get_table_names())
    return VERSION_TABLE not in tables and bool(tables & BASELINE_TABLES)


def upgrade(connection: Connection, target: str = "head") -> str | None:
    """Bring the store to `target` (the newest revision by default); its revision after.

    A store of the code before migrations is stamped at the first revision first. On
    PostgreSQL an advisory lock (held to the end of the transaction) makes replicas that start
    together migrate one after the other."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE not in tables and tables & BASELINE_TABLES:
        missing = BASELINE_TABLES - tables
        if missing:
            raise UnknownSchema(
                f"the store has tables {sorted(tables & BASELINE_TABLES)} but not "
                f"{sorted(missing)} and no {VERSION_TABLE}: not a store of dex, left unchanged"
            )
        command.stamp(config(connection), BASELINE)
    command.upgrade(config(connection), target)
    return current(connection)


def downgrade(connection: Connection, target: str) -> str | None:
    """Take the store back to `target` ("base": empty). Drops tables: tests and rollbacks."""
    command.downgrade(config(connection), target)
    return current(connection)
