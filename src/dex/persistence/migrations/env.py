"""Alembic's environment: run the migrations on the connection `dex.persistence.migrations`
hands over (Alembic loads this file itself; it is not imported)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from dex.persistence.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "run the migrations through dex.persistence.migrations (or `dex db upgrade`), "
        "which passes a connection"
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
