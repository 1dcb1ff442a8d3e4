"""Running the Alembic migrations at start-up.

Every gateway replica migrates when it opens the store, so replicas starting
together must not race: on PostgreSQL the whole upgrade runs in one transaction
holding a transaction-level advisory lock (DDL is transactional there, so a
replica that waited finds the schema current and does nothing). On SQLite the
transaction starts with ``BEGIN IMMEDIATE``, which serializes writers across
processes the same way.

To add a migration, copy ``versions/0001_initial.py`` to
``versions/0002_<what>.py`` (there is no alembic.ini; ``script.py.mako`` is the
template), set ``revision = "0002"`` and ``down_revision = "0001"``, and keep
``gateway.store.schema`` in step: the integration tests compare the migrated
database with it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# Arbitrary, fixed: every replica of every version must use the same key.
ADVISORY_LOCK_KEY = 0x6475_6262_696E_6701  # "dubbing" + 1


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at this package's migrations (no alembic.ini)."""
    cfg = Config()
    # Config values go through ConfigParser interpolation: escape '%'.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None before the first migration."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_sync(connection: Connection, *, schema: str | None = None) -> None:
    """Bring the database to the head revision, inside the caller's transaction.

    Safe to run from many replicas at once (see the module docstring). `schema`
    (PostgreSQL only) is created first when missing; the connection must already
    have it first on its search_path.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        if schema is not None:
            exists = connection.scalar(
                text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :s)"),
                {"s": schema},
            )
            # Only CREATE when missing: CREATE SCHEMA IF NOT EXISTS still needs the
            # CREATE privilege, which a locked-down role may not have.
            if not exists:
                quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
                connection.execute(text(f"CREATE SCHEMA {quoted}"))
    command.upgrade(alembic_config(connection), "head")
