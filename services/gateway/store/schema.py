"""Table definitions used by the store's queries (SQLAlchemy Core).

The schema itself is created by the Alembic migrations in ``migrations/``; these
Table objects must describe the same thing (a test compares them with the
migrated database). A job's document is its serialized ``dubbing.v1.Job``
(``snapshot``); the other columns exist only to query and to fence updates.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    # NULL when the client sent no request_id (UNIQUE allows many NULLs).
    sa.Column("request_id", sa.String(), nullable=True),
    # Hash of the request's parameters: a reused request_id must match it.
    sa.Column("request_hash", sa.String(), nullable=False),
    sa.Column("state", sa.Integer(), nullable=False),
    sa.Column("create_time_ns", sa.BigInteger(), nullable=False),
    sa.Column("update_time_ns", sa.BigInteger(), nullable=False),
    sa.Column("sequence", sa.BigInteger(), nullable=False),
    # jobstate.Run, the fencing token: the newest attempt issued, the run that
    # claimed it (NULL until one did), the seq of that run's last applied event,
    # and its lease (NULL unless RUNNING).
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("event_seq", sa.Integer(), nullable=False),
    sa.Column("snapshot", sa.LargeBinary(), nullable=False),
    sa.Column("run_id", sa.String(), nullable=True),
    sa.Column("lease_expires_ns", sa.BigInteger(), nullable=True),
    sa.UniqueConstraint("request_id", name="uq_jobs_request_id"),
)
# ListJobs without a filter walks this newest first; the second serves a state filter.
sa.Index("ix_jobs_newest", jobs.c.create_time_ns.desc(), jobs.c.id.desc())
sa.Index("ix_jobs_state_created", jobs.c.state, jobs.c.create_time_ns, jobs.c.id)
# The reconciler looks for expired leases: only running jobs have one.
sa.Index(
    "ix_jobs_lease",
    jobs.c.lease_expires_ns,
    postgresql_where=jobs.c.lease_expires_ns.isnot(None),
    sqlite_where=jobs.c.lease_expires_ns.isnot(None),
)

job_history = sa.Table(
    "job_history",
    metadata,
    sa.Column("job_id", sa.String(), primary_key=True),
    sa.Column("sequence", sa.BigInteger(), primary_key=True),
    sa.Column("snapshot", sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_history_job", ondelete="CASCADE"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    # INTEGER PRIMARY KEY on SQLite (the rowid), BIGSERIAL on PostgreSQL.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("job_id", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    sa.Column("headers", sa.Text(), nullable=False),  # JSON object of str -> str
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("created_ns", sa.BigInteger(), nullable=False),
    sa.Column("published_ns", sa.BigInteger(), nullable=True),
    # The attempt this message is; a retry's row waits until not_before_ns.
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("not_before_ns", sa.BigInteger(), nullable=True),
    # Where JetStream stored it: the reconciler checks the message is still there.
    sa.Column("stream_seq", sa.BigInteger(), nullable=True),
)
# Partial index: the publisher only ever looks for unpublished rows, which are few.
sa.Index(
    "ix_outbox_pending",
    outbox.c.id,
    postgresql_where=outbox.c.published_ns.is_(None),
    sqlite_where=outbox.c.published_ns.is_(None),
)
sa.Index("ix_outbox_job_attempt", outbox.c.job_id, outbox.c.attempt)
