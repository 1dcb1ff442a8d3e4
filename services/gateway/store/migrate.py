"""Running the Alembic migrations at start-up.

Every gateway replica migrates when it opens the store, so replicas starting
together must not race: on PostgreSQL the whole upgrade runs in one transaction
holding a transaction-level advisory lock (DDL is transactional there, so a
replica that waited finds the schema current and does nothing). On SQLite the
transaction starts with ``BEGIN IMMEDIATE``, which serializes writers across
processes the same way.

To add a migration: ``alembic -x ... revision`` is not wired up (there is no
alembic.ini); copy ``versions/0001_initial.py`` to ``versions/0002_<what>.py``,
set ``revision = "0002"`` and ``down_revision = "0001"``, and keep
``gateway.store.schema`` in step (the integration tests compare the two).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

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


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine, *, schema: str | None = None) -> None:
    """Bring the database to the head revision; safe to call from many replicas at once.

    `schema` (PostgreSQL only) is created first when it does not exist; the engine's
    connections must already have it first on their search_path.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            if schema is not None:
                exists = await conn.scalar(
                    text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :s)"),
                    {"s": schema},
                )
                # Only CREATE when missing: CREATE SCHEMA IF NOT EXISTS still needs
                # the CREATE privilege, which a locked-down role may not have.
                if not exists:
                    quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
                    await conn.execute(text(f"CREATE SCHEMA {quoted}"))
        await conn.run_sync(_upgrade_sync)
