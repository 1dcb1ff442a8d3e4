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
from dubbing.bus import JobEvent, JobMessage
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
    subject: str
    headers: dict[str, str]
    payload: bytes


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


# Given the current job and its event_seq, the new (job, event_seq) to store, or
# None for "no change". May raise to fail just this operation (e.g. JobAlreadyFinished).
_MutateFn = Callable[[pb.Job, int], tuple[pb.Job, int] | None]


@dataclass(eq=False, slots=True)
class _Mutate(_Op):
    job_id: str
    fn: _MutateFn
    # Unknown job: raise JobNotFound (cancel) rather than answer None.
    must_exist: bool


@dataclass(eq=False, slots=True)
class _MarkPublished(_Op):
    ids: tuple[int, ...]
    now_ns: int


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
    )
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
_LOCK_JOBS: dict[str, sa.Executable] = {
    backend: sa.select(jobs.c.id, jobs.c.event_seq, jobs.c.snapshot)
    .where(_in_list(jobs.c.id, "b_ids", backend))
    .order_by(jobs.c.id)
    .with_for_update()
    for backend in _BACKENDS
}
_MARK_PUBLISHED: dict[str, sa.Executable] = {
    backend: outbox.update()
    .where(_in_list(outbox.c.id, "b_ids", backend), outbox.c.published_ns.is_(None))
    .values(published_ns=sa.bindparam("b_now_ns"))
    for backend in _BACKENDS
}


class JobStore:
    """Persistence of jobs. Create it with :func:`open_store`; close it with :meth:`close`.

    Every method may raise :class:`StoreUnavailable` when the database cannot be
    reached, and :class:`StoreError` for other database failures.
    """

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
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
        """Set after every commit that added outbox rows.

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
        (terminal job, stale attempt, duplicate or late seq).
        """

        def change(job: pb.Job, event_seq: int) -> tuple[pb.Job, int] | None:
            outcome = jobstate.apply_event(job, event_seq, event)
            if isinstance(outcome, jobstate.Ignored):
                log.debug(
                    "job_event_ignored",
                    job_id=event.job_id,
                    why=outcome.why,
                    event_type=str(event.type),
                    event_attempt=event.attempt,
                    event_seq=event.seq,
                    job_attempt=job.attempt,
                    last_event_seq=event_seq,
                )
                return None
            return outcome.job, outcome.event_seq

        result: pb.Job | None = await self._mutate(event.job_id, change, must_exist=False)
        return result

    async def cancel(self, job_id: str, now: float) -> pb.Job:
        """Cancel a job on a client's behalf; returns the cancelled job.

        Raises :class:`JobNotFound`, or ``jobstate.JobAlreadyFinished`` when the job already ended.
        """

        def change(job: pb.Job, event_seq: int) -> tuple[pb.Job, int]:
            return jobstate.cancel(job, now), event_seq

        result: pb.Job = await self._mutate(job_id, change, must_exist=True)
        return result

    async def fail(
        self, job_id: str, now: float, *, code: str, reason: str, message: str
    ) -> pb.Job | None:
        """Fail a job on the gateway's own account (e.g. max deliveries reached).

        Returns the failed job, or None when the job is unknown or already ended.
        `code` is a google.rpc.Code name, `reason` an ErrorInfo reason.
        """

        def change(job: pb.Job, event_seq: int) -> tuple[pb.Job, int] | None:
            if jobstate.is_terminal(job):
                return None
            return jobstate.fail(job, now, code=code, reason=reason, message=message), event_seq

        result: pb.Job | None = await self._mutate(job_id, change, must_exist=False)
        return result

    async def mark_published(self, ids: Sequence[int], now: float) -> None:
        """Record that these outbox rows reached the bus (they leave :meth:`pending_outbox`)."""
        if not ids:
            return
        op = _MarkPublished(
            future=asyncio.get_running_loop().create_future(),
            ids=tuple(ids),
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

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Up to `limit` unpublished outbox rows, oldest first."""
        stmt = (
            sa.select(
                outbox.c.id, outbox.c.job_id, outbox.c.subject, outbox.c.headers, outbox.c.payload
            )
            .where(outbox.c.published_ns.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        rows = await self._read("reading the outbox", stmt)
        return [
            OutboxRow(
                id=row.id,
                job_id=row.job_id,
                subject=row.subject,
                headers=json.loads(row.headers),
                payload=bytes(row.payload),
            )
            for row in rows
        ]

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
            isinstance(op, _Submit) and error is None and value[1] for op, value, error in outcomes
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
                _MARK_PUBLISHED[conn.dialect.name],
                {"b_ids": _list_param(conn, op.ids), "b_now_ns": op.now_ns},
            )
            outcomes.append((op, None, None))
    return outcomes


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
                op.job.attempt,
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
    current: dict[str, tuple[pb.Job, int]] = {
        row.id: (pb.Job.FromString(row.snapshot), row.event_seq) for row in rows
    }
    changed: dict[str, tuple[pb.Job, int, bytes]] = {}
    versions: list[tuple[str, int, bytes]] = []
    outcomes: list[_Outcome] = []
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
        job, event_seq = change
        snapshot = job.SerializeToString()
        current[op.job_id] = (job, event_seq)
        changed[op.job_id] = (job, event_seq, snapshot)
        versions.append((job.id, job.sequence, snapshot))
        outcomes.append((op, job, None))
    if changed:
        conn.execute(
            _UPDATE_JOB,
            [
                {
                    "b_id": job_id,
                    "b_state": int(job.state),
                    "b_update_time_ns": job.update_time.ToNanoseconds(),
                    "b_sequence": job.sequence,
                    "b_attempt": job.attempt,
                    "b_event_seq": event_seq,
                    "b_snapshot": snapshot,
                }
                for job_id, (job, event_seq, snapshot) in changed.items()
            ],
        )
        _insert_many(conn, job_history, _HISTORY_COLUMNS, versions)
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
_OUTBOX_COLUMNS = ("job_id", "subject", "headers", "payload", "created_ns")
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


async def open_store(url: str, *, connect_timeout: float = 10.0) -> JobStore:
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
        store = JobStore(db)
    except BaseException:
        await db.dispose()
        raise
    log.info("job_store_opened", database=db.describe(), revision=migrate.head_revision())
    return store
