"""The database itself: its URL (SQLite through aiosqlite, PostgreSQL through asyncpg) and the
async engine the service, the migrations and `dex db` open on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dex.runtime.settings import DEFAULTS

T = TypeVar("T")


def async_database_url(url: str) -> str:
    """The async-driver form of a database URL: aiosqlite for SQLite, asyncpg for PostgreSQL."""
    parsed = make_url(url)
    accepted = {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
    wanted = accepted.get(parsed.drivername)
    if wanted is None:
        raise ValueError(
            f"database URL must be sqlite:///<path> or postgresql://..., got {parsed.drivername}://"
        )
    return parsed.set(drivername=wanted).render_as_string(hide_password=False)


def history_url(database_url: str, data_dir: str) -> str:
    """The history store of a deployment: `database_url` (DEX_DATABASE_URL) or, when it is
    empty, the embedded mode's SQLite file `<data_dir>/dex.sqlite3`."""
    return database_url or f"sqlite+aiosqlite:///{Path(data_dir) / 'dex.sqlite3'}"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for PostgreSQL or an in-memory SQLite."""
    parsed = make_url(async_database_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(
    url: str,
    *,
    schema: str | None = None,
    sqlite_busy_timeout: float = DEFAULTS.sqlite_busy_timeout_ms / 1000,
) -> AsyncEngine:
    """An async engine on `url` (any form `async_database_url` accepts). On PostgreSQL,
    `schema` is the search path (tests keep to a schema of their own); on SQLite the folder
    is created, and each connection is in WAL mode and waits `sqlite_busy_timeout` seconds
    for a lock."""
    parsed = make_url(async_database_url(url))
    kwargs: dict[str, Any] = {}
    if schema is not None:
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("a database schema can only be given for PostgreSQL")
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas(sqlite_busy_timeout))
    return engine


async def run_sync(url: str, work: Callable[[Connection], T], *, schema: str | None = None) -> T:
    """`work(connection)` in one transaction on a fresh engine, then the engine is closed
    (what `dex db` and the tests use; the service keeps its engine)."""
    engine = make_engine(url, schema=schema)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def sqlite_pragmas(busy_timeout: float) -> Callable[[Any, Any], None]:
    """A connect hook: WAL (queries read while the writer writes) and a wait of `busy_timeout`
    seconds for a lock instead of `database is locked` at once."""
    milliseconds = round(busy_timeout * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={milliseconds:d}")
        cursor.close()

    return on_connect
