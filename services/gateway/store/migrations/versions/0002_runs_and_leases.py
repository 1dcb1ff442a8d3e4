"""Runs and leases: the database issues attempts and keeps each run's lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``jobs.attempt`` now means the newest attempt issued (it was the newest one
reported); ``run_id`` is the run that claimed it and ``lease_expires_ns`` its
lease. The outbox row of each attempt records its attempt, the time it may be
published from (retries back off) and where JetStream stored it.

Jobs RUNNING when this migration runs were started by workers that did not
renew leases: they get one hour from their last change, after which the
reconciler dispatches them again if nothing reported meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUNNING = 2
_LEGACY_LEASE_NS = 3600 * 10**9


def upgrade() -> None:
    op.add_column("jobs", sa.Column("run_id", sa.String(), nullable=True))
    op.add_column("jobs", sa.Column("lease_expires_ns", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["lease_expires_ns"],
        postgresql_where=sa.text("lease_expires_ns IS NOT NULL"),
        sqlite_where=sa.text("lease_expires_ns IS NOT NULL"),
    )
    op.execute(
        sa.text(
            "UPDATE jobs SET lease_expires_ns = update_time_ns + :lease WHERE state = :running"
        ).bindparams(lease=_LEGACY_LEASE_NS, running=_RUNNING)
    )
    op.add_column("outbox", sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("outbox", sa.Column("not_before_ns", sa.BigInteger(), nullable=True))
    op.add_column("outbox", sa.Column("stream_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_outbox_job_attempt", "outbox", ["job_id", "attempt"])


def downgrade() -> None:
    op.drop_index("ix_outbox_job_attempt", "outbox")
    op.drop_column("outbox", "stream_seq")
    op.drop_column("outbox", "not_before_ns")
    op.drop_column("outbox", "attempt")
    op.drop_index("ix_jobs_lease", "jobs")
    op.drop_column("jobs", "lease_expires_ns")
    op.drop_column("jobs", "run_id")
