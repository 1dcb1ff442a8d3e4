"""The job store: jobs, their version history and the publish outbox, in SQL.

Writes go through one writer task per store (group commit): callers enqueue an
operation and await a future; the writer takes everything pending (up to
``MAX_BATCH`` operations), applies it in ONE transaction and resolves each future
only after the commit, so an accepted job is durable before its caller hears
about it, while a single fsync serves a whole batch. On SQLite this also means
the process has exactly one writing connection, so writers never contend for
the database lock. Reads (get, list, history, outbox) use a separate pool of
autocommit connections; SQLite in WAL mode lets them run beside the writer.
How each backend runs the (synchronous Core) transaction code: see ``database``.

Beside each job's document the row holds its ``jobstate.Run`` (attempt issued,
run that claimed it, last event seq, lease): every change goes through a pure
``jobstate`` function given both, so fencing is decided in one place. A change
that dispatches a new attempt writes that attempt's outbox row in the same
transaction.

PostgreSQL allows several gateway replicas on one database: job rows touched by
a batch are locked with ``SELECT ... FOR UPDATE`` (in id order, so two batches
cannot deadlock on them), and a batch that fails on a constraint (e.g. another
replica inserted the same request_id after this one looked) is retried one
operation per transaction, so one conflict never fails the whole batch.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Row

from dubbing import jobstate
from dubbing.bus import JobEvent, JobMessage, RunRef
from dubbing.errors import Code, Reason
from dubbing.jobstate import Applied, AttemptPolicy, Run
from dubbing.v1 import dubbing_pb2 as pb
from gateway.store import migrate
from gateway.store.database import (
    Backend,
    Database,
    Target,
    fail_future,
    resolve_future,
)
from gateway.store.errors import (
    JobNotFound,
    RequestIdReused,
    StoreError,
    StoreUnavailable,
    is_unavailable,
    one_line,
    translate,
)
from gateway.store.schema import job_history, jobs, outbox

log = structlog.get_logger("gateway.store")

# Largest number of operations committed in one transaction. Bigger batches add
# latency to the first caller in them without saving much more.
MAX_BATCH = 256
# A batch that fails on an IntegrityError is retried per operation; a submit that
# still conflicts (a concurrent replica won a race again) is retried this often.
_SUBMIT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A message to publish on the job bus, written in the same transaction as its job."""

    id: int
    job_id: str
    attempt: int
    subject: str
    headers: dict[str, str]
    payload: bytes


@dataclass(frozen=True, slots=True)
class Waiting:
    """A QUEUED job's dispatched attempt that no run has claimed, and where it was stored."""

    job_id: str
    attempt: int
    stream_seq: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the newest-first job listing: just after the job it names."""

    create_time_ns: int
    job_id: str

    @classmethod
    def after(cls, job: pb.Job) -> Cursor:
        """The cursor for the page that follows `job` (the last job of a page)."""
        return cls(job.create_time.ToNanoseconds(), job.id)


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of the writer task: transactions committed, operations they carried."""

    transactions: int
    operations: int


# ---------------------------------------------------------------------------
# Operations queued for the writer task.


@dataclass(eq=False, slots=True)
class _Op:
    future: asyncio.Future[Any]


@dataclass(eq=False, slots=True)
class _Submit(_Op):
    job: pb.Job
    snapshot: bytes
    request_id: str | None
    request_hash: str
    message: JobMessage


# Given the current job and its run, what to store (a job whose sequence did not
# change is not a new version), or None for "no change". May raise to fail just
# this operation (e.g. JobAlreadyFinished).
_MutateFn = Callable[[pb.Job, Run], Applied | None]


@dataclass(eq=False, slots=True)
class _Mutate(_Op):
    job_id: str
    fn: _MutateFn
    # Unknown job: raise JobNotFound (cancel) rather than answer None.
    must_exist: bool
    policy: AttemptPolicy
    # Set by the transaction when the change wrote an outbox row.
    dispatched: bool = False


@dataclass(eq=False, slots=True)
class _MarkPublished(_Op):
    # (outbox row id, JetStream stream sequence)
    rows: tuple[tuple[int, int], ...]
    now_ns: int


@dataclass(eq=False, slots=True)
class _RenewLeases(_Op):
    runs: tuple[RunRef, ...]
    now: float
    policy: AttemptPolicy


# (operation, its result, or the exception its caller gets)
_Outcome = tuple[_Op, Any, BaseException | None]

_UPDATE_JOB = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("b_id"))
    .values(
        state=sa.bindparam("b_state"),
        update_time_ns=sa.bindparam("b_update_time_ns"),
        sequence=sa.bindparam("b_sequence"),
        attempt=sa.bindparam("b_attempt"),
        event_seq=sa.bindparam("b_event_seq"),
        snapshot=sa.bindparam("b_snapshot"),
        run_id=sa.bindparam("b_run_id"),
        lease_expires_ns=sa.bindparam("b_lease_expires_ns"),
    )
)
# A run's lease, extended only while the row still names that run.
_RENEW_LEASE = (
    jobs.update()
    .where(
        jobs.c.id == sa.bindparam("b_id"),
        jobs.c.attempt == sa.bindparam("b_attempt"),
        jobs.c.run_id == sa.bindparam("b_run_id"),
        jobs.c.state == int(jobstate.State.STATE_RUNNING),
    )
    .values(lease_expires_ns=sa.bindparam("b_lease_expires_ns"))
)
_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.id == sa.bindparam("b_id"), outbox.c.published_ns.is_(None))
    .values(published_ns=sa.bindparam("b_now_ns"), stream_seq=sa.bindparam("b_stream_seq"))
)


def _in_list(column: sa.ColumnElement[Any], name: str, backend: Backend) -> sa.ColumnElement[bool]:
    """`column IN (the list bound as parameter `name`)`; bind it with :func:`_list_param`.

    On SQLite the list is one JSON array parameter, unpacked by json_each (JSON1, part of
    SQLite since 3.38), so the SQL text is the same whatever the list's length. An
    expanding IN renders one placeholder per element: SQLAlchemy renders the string
    anew at every execution and sqlite3, whose statement cache is keyed by that
    text, prepares it again for every new length. PostgreSQL keeps the expanding IN.
    """
    if backend == "sqlite":
        return column.in_(
            sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam(name)))
        )
    return column.in_(sa.bindparam(name, expanding=True))


def _list_param(conn: Connection, values: Sequence[Any]) -> Any:
    """The value to bind to an :func:`_in_list` parameter on this connection."""
    return json.dumps(values) if conn.dialect.name == "sqlite" else values


_BACKENDS: tuple[Backend, ...] = ("sqlite", "postgresql")
# The writer's SELECTs and UPDATE that take a list, built once per backend and picked
# by dialect name: building a statement per batch cost more CPU than running it.
_OWNERS_OF_REQUEST_IDS: dict[str, sa.Executable] = {
    backend: sa.select(jobs.c.request_id, jobs.c.request_hash, jobs.c.id, jobs.c.snapshot).where(
        _in_list(jobs.c.request_id, "b_request_ids", backend)
    )
    for backend in _BACKENDS
}
# FOR UPDATE renders as nothing on SQLite (see _apply_mutations).
_RUN_COLUMNS = (jobs.c.attempt, jobs.c.run_id, jobs.c.event_seq, jobs.c.lease_expires_ns)
_LOCK_JOBS: dict[str, sa.Executable] = {
    backend: sa.select(jobs.c.id, jobs.c.snapshot, *_RUN_COLUMNS)
    .where(_in_list(jobs.c.id, "b_ids", backend))
    .order_by(jobs.c.id)
    .with_for_update()
    for backend in _BACKENDS
}
_RUNS_OF_JOBS: dict[str, sa.Executable] = {
    backend: sa.select(jobs.c.id, jobs.c.state, *_RUN_COLUMNS).where(
        _in_list(jobs.c.id, "b_ids", backend)
    )
    for backend in _BACKENDS
}


def _run(row: Row[Any]) -> Run:
    return Run(
        attempt=row.attempt,
        run_id=row.run_id or "",
        event_seq=row.event_seq,
        lease_expires=(row.lease_expires_ns or 0) / 1e9,
    )


def _lease_ns(run: Run) -> int | None:
    return round(run.lease_expires * 1e9) if run.lease_expires else None


class JobStore:
    """Persistence of jobs. Create it with :func:`open_store`; close it with :meth:`close`.

    Every method may raise :class:`StoreUnavailable` when the database cannot be
    reached, and :class:`StoreError` for other database failures.
    """

    def __init__(
        self, db: Database, *, max_batch: int = MAX_BATCH, policy: AttemptPolicy | None = None
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self.policy = policy or AttemptPolicy()
        self._pending: deque[_Op] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._disposed = False
        self._outbox_ready = asyncio.Event()
        self._transactions = 0
        self._operations = 0
        self._task = asyncio.get_running_loop().create_task(
            self._writer_loop(), name="job-store-writer"
        )

    # -- properties ---------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """Which database this store uses."""
        return self._db.backend

    @property
    def outbox_ready(self) -> asyncio.Event:
        """Set after every commit that added outbox rows (new jobs, new attempts).

        The publisher clears it, drains :meth:`pending_outbox`, then waits on it
        again (with a timeout, so rows left by a crashed process are still found).
        """
        return self._outbox_ready

    @property
    def stats(self) -> WriterStats:
        """How many transactions the writer committed and how many operations they held."""
        return WriterStats(self._transactions, self._operations)

    # -- writes (through the writer task) -----------------------------------

    async def submit(
        self, job: pb.Job, *, request_hash: str, message: JobMessage
    ) -> tuple[pb.Job, bool]:
        """Persist a new job and its outbox message; returns (job, created).

        `job` is a fresh QUEUED job (``jobstate.new_job``, sequence 1). When its
        ``request.request_id`` is set and a job with that request_id exists, nothing
        is written: the existing job is returned with created=False if
        `request_hash` matches, else :class:`RequestIdReused` is raised. Returns
        only once the job is committed.
        """
        op = _Submit(
            future=asyncio.get_running_loop().create_future(),
            job=job,
            snapshot=job.SerializeToString(),
            request_id=job.request.request_id or None,
            request_hash=request_hash,
            message=message,
        )
        result: tuple[pb.Job, bool] = await self._enqueue(op)
        return result

    async def apply_event(self, event: JobEvent) -> pb.Job | None:
        """Apply a worker event; returns the changed job, or None when it changes nothing.

        None covers an unknown job and every event the state machine ignores
        (terminal job, stale attempt, another run, duplicate or late seq). A
        RETRYING event also dispatches the next attempt (its outbox row).
        """
        policy = self.policy

        def change(job: pb.Job, run: Run) -> Applied | None:
            outcome = jobstate.apply_event(job, run, event, now=time.time(), policy=policy)
            if isinstance(outcome, jobstate.Ignored):
                log.debug(
                    "job_event_ignored",
                    job_id=event.job_id,
                    why=str(outcome.why),
                    event_type=str(event.type),
                    event_attempt=event.attempt,
                    event_run=event.run_id,
                    event_seq=event.seq,
                    attempt=run.attempt,
                    run_id=run.run_id,
                    last_event_seq=run.event_seq,
                )
                return None
            return outcome

        result: pb.Job | None = await self._mutate(event.job_id, change, must_exist=False)
        return result

    async def cancel(self, job_id: str, now: float) -> pb.Job:
        """Cancel a job on a client's behalf; returns the cancelled job.

        Raises :class:`JobNotFound`, or ``jobstate.JobAlreadyFinished`` when the job already ended.
        """

        def change(job: pb.Job, run: Run) -> Applied:
            return jobstate.cancel(job, run, now)

        result: pb.Job = await self._mutate(job_id, change, must_exist=True)
        return result

    async def fail(
        self, job_id: str, now: float, *, code: Code, reason: Reason, message: str
    ) -> pb.Job | None:
        """Fail a job on the gateway's own account (e.g. its message cannot be delivered).

        Returns the failed job, or None when the job is unknown or already ended.
        `code` is a google.rpc.Code name, `reason` an ErrorInfo reason.
        """

        def change(job: pb.Job, run: Run) -> Applied | None:
            if jobstate.is_terminal(job):
                return None
            return jobstate.fail(job, run, now, code=code, reason=reason, message=message)

        result: pb.Job | None = await self._mutate(job_id, change, must_exist=False)
        return result

    async def reclaim(self, job_id: str, attempt: int, now: float) -> pb.Job | None:
        """Take back a RUNNING job whose run's lease expired (``jobstate.reclaim``).

        Only if the job is still on `attempt` with the lease still expired, checked
        under the row lock: of several replicas reclaiming at once, one does it.
        Returns the changed job (QUEUED for its next attempt, or FAILED), or None.
        """
        policy = self.policy

        def change(job: pb.Job, run: Run) -> Applied | None:
            if run.attempt != attempt:
                return None
            outcome = jobstate.reclaim(job, run, now=now, policy=policy)
            return None if isinstance(outcome, jobstate.Ignored) else outcome

        result: pb.Job | None = await self._mutate(job_id, change, must_exist=False)
        return result

    async def redispatch(self, job_id: str, attempt: int, now: float) -> bool:
        """Dispatch the next attempt of a QUEUED job whose `attempt` message was lost.

        Only if that attempt is still the newest and unclaimed (``jobstate.redispatch``),
        checked under the row lock. Returns whether a new attempt was dispatched.
        """
        dispatched = False

        def change(job: pb.Job, run: Run) -> Applied | None:
            nonlocal dispatched
            if run.attempt != attempt:
                return None
            outcome = jobstate.redispatch(job, run, now=now)
            if isinstance(outcome, jobstate.Ignored):
                return None
            dispatched = True
            return outcome

        await self._mutate(job_id, change, must_exist=False)
        return dispatched

    async def renew_leases(self, runs: Sequence[RunRef], now: float) -> list[RunRef]:
        """Extend the leases of `runs`; returns those that lost their attempt for good.

        A returned run is superseded (another attempt or run holds the job, or
        the job ended) and should stop. A run whose first event is not applied
        yet is neither renewed nor returned: its STARTED will give it a lease.
        """
        if not runs:
            return []
        op = _RenewLeases(
            future=asyncio.get_running_loop().create_future(),
            runs=tuple(runs),
            now=now,
            policy=self.policy,
        )
        result: list[RunRef] = await self._enqueue(op)
        return result

    async def mark_published(self, rows: Sequence[tuple[int, int]], now: float) -> None:
        """Record that these outbox rows, given as (id, stream sequence), reached the bus.

        They leave :meth:`pending_outbox`; the sequence is where JetStream stored them.
        """
        if not rows:
            return
        op = _MarkPublished(
            future=asyncio.get_running_loop().create_future(),
            rows=tuple(rows),
            now_ns=round(now * 1e9),
        )
        await self._enqueue(op)

    # -- reads (pooled autocommit connections) ------------------------------

    async def get(self, job_id: str) -> pb.Job | None:
        """The job, or None when there is no such job."""
        rows = await self._read(
            "reading a job", sa.select(jobs.c.snapshot).where(jobs.c.id == job_id)
        )
        return pb.Job.FromString(rows[0].snapshot) if rows else None

    async def list_jobs(
        self, *, states: Sequence[int], limit: int, after: Cursor | None
    ) -> list[pb.Job]:
        """Up to `limit` jobs, newest first (create time, then id, descending).

        Only jobs in `states` when it is non-empty; only jobs strictly after
        `after` (see :meth:`Cursor.after`) when given.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        stmt = sa.select(jobs.c.snapshot)
        if states:
            stmt = stmt.where(jobs.c.state.in_([int(s) for s in states]))
        if after is not None:
            # Row-value comparison: (t, id) < (t0, id0) is exactly "after it in this order".
            stmt = stmt.where(
                sa.tuple_(jobs.c.create_time_ns, jobs.c.id)
                < sa.tuple_(
                    sa.literal(after.create_time_ns, sa.BigInteger()), sa.literal(after.job_id)
                )
            )
        stmt = stmt.order_by(jobs.c.create_time_ns.desc(), jobs.c.id.desc()).limit(limit)
        rows = await self._read("listing jobs", stmt)
        return [pb.Job.FromString(row.snapshot) for row in rows]

    async def history(self, job_id: str, after_sequence: int) -> list[pb.Job]:
        """Every stored version of the job with sequence > `after_sequence`, oldest first."""
        stmt = (
            sa.select(job_history.c.snapshot)
            .where(job_history.c.job_id == job_id, job_history.c.sequence > after_sequence)
            .order_by(job_history.c.sequence)
        )
        rows = await self._read("reading job history", stmt)
        return [pb.Job.FromString(row.snapshot) for row in rows]

    async def pending_outbox(self, limit: int, now: float | None = None) -> list[OutboxRow]:
        """Up to `limit` unpublished outbox rows that may go out at `now`, oldest first."""
        now_ns = time.time_ns() if now is None else round(now * 1e9)
        stmt = (
            sa.select(
                outbox.c.id,
                outbox.c.job_id,
                outbox.c.attempt,
                outbox.c.subject,
                outbox.c.headers,
                outbox.c.payload,
            )
            .where(
                outbox.c.published_ns.is_(None),
                sa.or_(outbox.c.not_before_ns.is_(None), outbox.c.not_before_ns <= now_ns),
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        rows = await self._read("reading the outbox", stmt)
        return [
            OutboxRow(
                id=row.id,
                job_id=row.job_id,
                attempt=row.attempt,
                subject=row.subject,
                headers=json.loads(row.headers),
                payload=bytes(row.payload),
            )
            for row in rows
        ]

    async def expired_leases(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` (job id, attempt) of running jobs whose lease ended before `now`."""
        stmt = (
            sa.select(jobs.c.id, jobs.c.attempt)
            .where(
                jobs.c.lease_expires_ns.isnot(None),
                jobs.c.lease_expires_ns < round(now * 1e9),
            )
            .order_by(jobs.c.lease_expires_ns)
            .limit(limit)
        )
        rows = await self._read("reading expired leases", stmt)
        return [(row.id, row.attempt) for row in rows]

    def _waiting_query(self, published_before: float) -> sa.Select[Any]:
        return (
            sa.select(jobs.c.id, jobs.c.attempt, outbox.c.stream_seq)
            .select_from(jobs)
            .join(outbox, sa.and_(outbox.c.job_id == jobs.c.id, outbox.c.attempt == jobs.c.attempt))
            .where(
                jobs.c.state == int(jobstate.State.STATE_QUEUED),
                jobs.c.run_id.is_(None),
                jobs.c.event_seq == 0,
                outbox.c.published_ns.isnot(None),
                outbox.c.published_ns < round(published_before * 1e9),
            )
        )

    async def count_waiting(self, published_before: float) -> int:
        """How many QUEUED jobs wait on an attempt published before `published_before`."""
        stmt = sa.select(sa.func.count()).select_from(
            self._waiting_query(published_before).subquery()
        )
        rows = await self._read("counting queued jobs", stmt)
        return int(rows[0][0])

    async def waiting(self, published_before: float, limit: int) -> list[Waiting]:
        """QUEUED jobs whose newest attempt was published before `published_before`,
        unclaimed, with where JetStream stored the message (oldest job first)."""
        stmt = self._waiting_query(published_before).order_by(jobs.c.create_time_ns).limit(limit)
        rows = await self._read("reading queued jobs", stmt)
        return [Waiting(row.id, row.attempt, int(row.stream_seq or 0)) for row in rows]

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers (for health checks)."""
        await self._read("pinging the database", sa.select(sa.literal(1)))

    # -- lifecycle ----------------------------------------------------------

    async def close(self) -> None:
        """Finish every queued write, then release all connections. Idempotent."""
        self._closed = True
        self._wakeup.set()
        try:
            await self._task
        finally:
            if not self._disposed:
                self._disposed = True
                await self._db.dispose()

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------

    async def _read(self, what: str, stmt: sa.Executable) -> list[Row[Any]]:
        if self._closed:
            raise StoreUnavailable("the job store is closed")
        try:
            return await self._db.read(functools.partial(_fetch, stmt))
        except Exception as exc:
            raise translate(exc, what) from exc

    async def _mutate(self, job_id: str, fn: _MutateFn, *, must_exist: bool) -> Any:
        op = _Mutate(
            future=asyncio.get_running_loop().create_future(),
            job_id=job_id,
            fn=fn,
            must_exist=must_exist,
            policy=self.policy,
        )
        return await self._enqueue(op)

    def _enqueue(self, op: _Op) -> asyncio.Future[Any]:
        if self._closed:
            raise StoreUnavailable("the job store is closed")
        if self._task.done():
            # Cannot happen unless the writer has a bug; never leave a caller hanging.
            raise StoreUnavailable("the job store writer stopped")
        self._pending.append(op)
        self._wakeup.set()
        return op.future

    async def _writer_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Op] = []
            while self._pending and len(batch) < self._max_batch:
                op = self._pending.popleft()
                # A caller that gave up (cancelled) no longer wants the write.
                if not op.future.done():
                    batch.append(op)
            if not batch:
                continue
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                gone = StoreUnavailable("the job store writer was cancelled")
                for op in (*batch, *self._pending):
                    fail_future(op.future, gone)
                self._pending.clear()
                raise
            except Exception as exc:
                # A bug in this module; fail the batch but keep serving later ones.
                log.exception("job_store_writer_error", ops=len(batch))
                for op in batch:
                    fail_future(op.future, exc)

    async def _process(self, batch: list[_Op]) -> None:
        try:
            outcomes = await self._transaction(batch)
        except Exception as exc:
            if is_unavailable(exc):
                self._fail_ops(batch, exc)
                return
            # One bad operation (typically a request_id that another replica inserted
            # meanwhile) must not fail the others: redo them one per transaction.
            log.info("job_store_batch_retried_per_op", ops=len(batch), error=one_line(exc))
            for op in batch:
                await self._process_one(op)
            return
        self._resolve(outcomes)

    async def _process_one(self, op: _Op) -> None:
        attempts = _SUBMIT_ATTEMPTS if isinstance(op, _Submit) else 1
        for attempt in range(1, attempts + 1):
            try:
                outcomes = await self._transaction([op])
            except sa_exc.IntegrityError as exc:
                # Lost a race for a request_id: the next attempt finds the winner's row.
                if attempt < attempts:
                    continue
                self._fail_ops([op], exc)
                return
            except Exception as exc:
                self._fail_ops([op], exc)
                return
            self._resolve(outcomes)
            return

    def _fail_ops(self, ops: list[_Op], exc: Exception) -> None:
        error = translate(exc, "writing jobs")
        if not isinstance(error, StoreUnavailable):
            log.error("job_store_write_failed", ops=len(ops), error=one_line(exc))
        for op in ops:
            fail_future(op.future, error)

    def _resolve(self, outcomes: list[_Outcome]) -> None:
        for op, value, error in outcomes:
            if error is not None:
                fail_future(op.future, error)
            else:
                resolve_future(op.future, value)

    async def _transaction(self, ops: list[_Op]) -> list[_Outcome]:
        """Apply `ops` in one transaction; the outcomes hold once this returns (committed)."""
        outcomes = await self._db.write(functools.partial(_apply, ops))
        self._transactions += 1
        self._operations += len(ops)
        if any(
            (isinstance(op, _Submit) and error is None and value[1])
            or (isinstance(op, _Mutate) and op.dispatched)
            for op, value, error in outcomes
        ):
            self._outbox_ready.set()
        return outcomes


# ---------------------------------------------------------------------------
# The writer's transaction: plain synchronous Core code, run by Database.write (in
# the SQLite writer thread, or through run_sync on PostgreSQL). It must not touch
# the futures: they belong to the event loop, which resolves them after the commit.


def _apply(ops: list[_Op], conn: Connection) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    mutations = [op for op in ops if isinstance(op, _Mutate)]
    submits = [op for op in ops if isinstance(op, _Submit)]
    if mutations:
        outcomes += _apply_mutations(conn, mutations)
    if submits:
        outcomes += _apply_submits(conn, submits)
    for op in ops:
        if isinstance(op, _MarkPublished):
            conn.execute(
                _MARK_PUBLISHED,
                [
                    {"b_id": row_id, "b_stream_seq": seq, "b_now_ns": op.now_ns}
                    for row_id, seq in op.rows
                ],
            )
            outcomes.append((op, None, None))
        elif isinstance(op, _RenewLeases):
            outcomes.append((op, _renew_leases(conn, op), None))
    return outcomes


def _renew_leases(conn: Connection, op: _RenewLeases) -> list[RunRef]:
    """Extend the leases `op` names; the runs that lost their attempt for good."""
    job_ids = sorted({ref.job_id for ref in op.runs})
    rows = conn.execute(_RUNS_OF_JOBS[conn.dialect.name], {"b_ids": _list_param(conn, job_ids)})
    current = {row.id: (row.state, _run(row)) for row in rows}
    renewed: list[dict[str, Any]] = []
    superseded: list[RunRef] = []
    for ref in op.runs:
        found = current.get(ref.job_id)
        if found is None:
            continue  # not a job of this database: nothing to fence, nothing to stop
        outcome = jobstate.renew(found[0], found[1], ref, now=op.now, policy=op.policy)
        if isinstance(outcome, jobstate.Ignored):
            if outcome.why in jobstate.SUPERSEDED:
                superseded.append(ref)
            continue
        renewed.append(
            {
                "b_id": ref.job_id,
                "b_attempt": ref.attempt,
                "b_run_id": ref.run_id,
                "b_lease_expires_ns": _lease_ns(outcome),
            }
        )
    if renewed:
        # Conditional on the row still naming the run: a reclaim committed by another
        # replica since the SELECT wins, and this run hears so at its next renewal.
        conn.execute(_RENEW_LEASE, renewed)
    return superseded


def _apply_submits(conn: Connection, ops: list[_Submit]) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    # request_id -> (request_hash, job id, snapshot) of the job that owns it: from the
    # database, then from earlier submits of this same batch.
    owners: dict[str, tuple[str, str, bytes]] = {}
    request_ids = sorted({op.request_id for op in ops if op.request_id is not None})
    if request_ids:
        rows = conn.execute(
            _OWNERS_OF_REQUEST_IDS[conn.dialect.name],
            {"b_request_ids": _list_param(conn, request_ids)},
        )
        for row in rows:
            owners[row.request_id] = (row.request_hash, row.id, bytes(row.snapshot))
    fresh: list[_Submit] = []
    for op in ops:
        if op.request_id is not None:
            owner = owners.get(op.request_id)
            if owner is not None:
                owner_hash, owner_id, owner_snapshot = owner
                if owner_hash == op.request_hash:
                    # A copy per caller: callers may modify what they get.
                    outcomes.append((op, (pb.Job.FromString(owner_snapshot), False), None))
                else:
                    outcomes.append((op, None, RequestIdReused(op.request_id, owner_id)))
                continue
            owners[op.request_id] = (op.request_hash, op.job.id, op.snapshot)
        fresh.append(op)
        outcomes.append((op, (op.job, True), None))
    if not fresh:
        return outcomes
    # Insert in request_id order: two replicas inserting overlapping request_ids then
    # take the unique-index locks in the same order and cannot deadlock each other.
    fresh.sort(key=lambda op: op.request_id or "")
    now_ns = time.time_ns()
    _insert_many(
        conn,
        jobs,
        _JOB_COLUMNS,
        [
            (
                op.job.id,
                op.request_id,
                op.request_hash,
                int(op.job.state),
                op.job.create_time.ToNanoseconds(),
                op.job.update_time.ToNanoseconds(),
                op.job.sequence,
                op.message.attempt,
                0,
                op.snapshot,
            )
            for op in fresh
        ],
    )
    _insert_many(
        conn,
        job_history,
        _HISTORY_COLUMNS,
        [(op.job.id, op.job.sequence, op.snapshot) for op in fresh],
    )
    _insert_many(
        conn,
        outbox,
        _OUTBOX_COLUMNS,
        [
            (
                op.job.id,
                op.message.subject,
                json.dumps(op.message.headers(), separators=(",", ":")),
                op.message.request,
                now_ns,
                op.message.attempt,
                None,
            )
            for op in fresh
        ],
    )
    return outcomes


def _apply_mutations(conn: Connection, ops: list[_Mutate]) -> list[_Outcome]:
    # Lock every job the batch touches with one statement, in id order so that two
    # replicas' batches cannot deadlock (FOR UPDATE renders as nothing on SQLite,
    # where the transaction already holds the database's write lock).
    job_ids = sorted({op.job_id for op in ops})
    rows = conn.execute(_LOCK_JOBS[conn.dialect.name], {"b_ids": _list_param(conn, job_ids)})
    current: dict[str, tuple[pb.Job, Run]] = {
        row.id: (pb.Job.FromString(row.snapshot), _run(row)) for row in rows
    }
    changed: dict[str, tuple[pb.Job, Run, bytes]] = {}
    versions: list[tuple[str, int, bytes]] = []
    dispatches: list[tuple[Any, ...]] = []
    outcomes: list[_Outcome] = []
    now_ns = time.time_ns()
    # In queue order: several changes to one job in a batch apply one after another.
    for op in ops:
        state = current.get(op.job_id)
        if state is None:
            log.debug("job_store_unknown_job", job_id=op.job_id)
            outcomes.append((op, None, JobNotFound(op.job_id) if op.must_exist else None))
            continue
        try:
            change = op.fn(*state)
        except Exception as exc:  # e.g. JobAlreadyFinished: for this caller only
            outcomes.append((op, None, exc))
            continue
        if change is None:
            outcomes.append((op, None, None))
            continue
        job, run = change.job, change.run
        new_version = job.sequence != state[0].sequence
        snapshot = job.SerializeToString()
        current[op.job_id] = (job, run)
        changed[op.job_id] = (job, run, snapshot)
        if new_version:
            versions.append((job.id, job.sequence, snapshot))
        if change.dispatch is not None:
            message = jobstate.job_message(job, change.dispatch.attempt, op.policy)
            dispatches.append(
                (
                    job.id,
                    message.subject,
                    json.dumps(message.headers(), separators=(",", ":")),
                    message.request,
                    now_ns,
                    message.attempt,
                    round(change.dispatch.not_before * 1e9),
                )
            )
            op.dispatched = True
        outcomes.append((op, job if new_version else None, None))
    if changed:
        conn.execute(
            _UPDATE_JOB,
            [
                {
                    "b_id": job_id,
                    "b_state": int(job.state),
                    "b_update_time_ns": job.update_time.ToNanoseconds(),
                    "b_sequence": job.sequence,
                    "b_attempt": run.attempt,
                    "b_event_seq": run.event_seq,
                    "b_snapshot": snapshot,
                    "b_run_id": run.run_id or None,
                    "b_lease_expires_ns": _lease_ns(run),
                }
                for job_id, (job, run, snapshot) in changed.items()
            ],
        )
    if versions:
        _insert_many(conn, job_history, _HISTORY_COLUMNS, versions)
    if dispatches:
        _insert_many(conn, outbox, _OUTBOX_COLUMNS, dispatches)
    return outcomes


# Column order of the positional rows given to _insert_many.
_JOB_COLUMNS = (
    "id",
    "request_id",
    "request_hash",
    "state",
    "create_time_ns",
    "update_time_ns",
    "sequence",
    "attempt",
    "event_seq",
    "snapshot",
)
_HISTORY_COLUMNS = ("job_id", "sequence", "snapshot")
_OUTBOX_COLUMNS = (
    "job_id",
    "subject",
    "headers",
    "payload",
    "created_ns",
    "attempt",
    "not_before_ns",
)
_insert_sql_cache: dict[tuple[str, str, str, tuple[str, ...]], str] = {}


def _insert_many(
    conn: Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """INSERT `rows` (tuples in `columns` order) with one executemany.

    The hot path of group commit: the INSERT is compiled once per dialect and the
    rows go to the driver as they are, skipping SQLAlchemy's per-row parameter
    processing (a third of a batch's CPU time when measured). Errors are still
    wrapped by SQLAlchemy (IntegrityError etc.), which the writer relies on.
    """
    dialect = conn.dialect
    key = (dialect.name, dialect.driver, table.name, columns)
    sql = _insert_sql_cache.get(key)
    if sql is None:
        compiled = table.insert().compile(
            dialect=dialect, column_keys=list(columns), for_executemany=True
        )
        if tuple(compiled.positiontup or ()) != columns:
            raise RuntimeError(
                f"unexpected parameter order for {table.name}: {compiled.positiontup}"
            )
        sql = _insert_sql_cache[key] = compiled.string
    conn.exec_driver_sql(sql, rows)


def _fetch(stmt: sa.Executable, conn: Connection) -> list[Row[Any]]:
    return list(conn.execute(stmt).all())


# ---------------------------------------------------------------------------
# Opening.


async def _wait_reachable(db: Database, limit: float) -> None:
    """Connect once, retrying PostgreSQL connection errors until `limit` seconds have passed.

    Retrying covers a database still starting next to the gateway (compose, k8s).
    SQLite errors (bad path, permissions) do not fix themselves: fail at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    delay = 0.1
    while True:
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                await db.read(functools.partial(_fetch, sa.select(sa.literal(1))))
            return
        except Exception as exc:
            retry = db.backend == "postgresql" and is_unavailable(exc)
            if not retry or deadline - loop.time() <= delay:
                reason = "timed out" if isinstance(exc, TimeoutError) else one_line(exc)
                raise StoreUnavailable(
                    f"cannot reach the {db.describe()} within {limit:g}s: {reason}"
                ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def open_store(
    url: str, *, connect_timeout: float = 10.0, policy: AttemptPolicy | None = None
) -> JobStore:
    """Connect to the database at `url`, migrate it to the current schema, return the store.

    `url` is ``sqlite:///PATH`` (the parent directory is created; any
    sqlite driver name is accepted, the standard library one is used) or
    ``postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB`` (``postgresql://`` works
    too). On PostgreSQL an extra query parameter ``schema=NAME`` (consumed here,
    not passed to the driver) puts every table in that schema, created if
    missing, by making it the connections' search_path.

    Raises :class:`StoreUnavailable`, naming the file or host, when the database
    cannot be reached within `connect_timeout` seconds; ValueError for an
    unsupported URL.
    """
    target = Target.parse(url)
    if target.backend == "sqlite":
        path = Path(target.url.database or "")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory of the {target.describe()}: {exc}"
            ) from exc
    db = target.connect(connect_timeout)
    try:
        await _wait_reachable(db, connect_timeout)
        try:
            await db.write(functools.partial(migrate.upgrade_sync, schema=target.schema))
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(
                    f"lost the {db.describe()} while migrating: {one_line(exc)}"
                ) from exc
            raise StoreError(f"migrating the {db.describe()} failed: {exc}") from exc
        store = JobStore(db, policy=policy)
    except BaseException:
        await db.dispose()
        raise
    log.info("job_store_opened", database=db.describe(), revision=migrate.head_revision())
    return store
