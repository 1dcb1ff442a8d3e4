"""Alembic environment for the job store.

The store runs migrations itself at start-up (``gateway.store.migrate``) on a
connection it already holds, inside its own transaction (and, on PostgreSQL,
under an advisory lock), and passes that connection in ``config.attributes``.
There is no offline (SQL script) mode and no ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from gateway.store.schema import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the job store migrations run through gateway.store.migrate.upgrade(), "
            "which supplies the connection"
        )
    context.configure(connection=connection, target_metadata=metadata)
    # The caller's transaction is already open: Alembic joins it, and the caller commits.
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
