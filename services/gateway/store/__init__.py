"""Job persistence for the gateway: jobs, their history and the publish outbox.

SQLite (one file, the default) or PostgreSQL (several gateway replicas), through
SQLAlchemy's asyncio engine; the schema is created and upgraded by Alembic when
the store opens. See :mod:`gateway.store.store` for how writes are batched.
"""

from gateway.store.errors import JobNotFound, RequestIdReused, StoreError, StoreUnavailable
from gateway.store.ids import new_job_id
from gateway.store.store import Cursor, JobStore, OutboxRow, Waiting, WriterStats, open_store

__all__ = [
    "Cursor",
    "JobNotFound",
    "JobStore",
    "OutboxRow",
    "RequestIdReused",
    "StoreError",
    "StoreUnavailable",
    "Waiting",
    "WriterStats",
    "new_job_id",
    "open_store",
]
