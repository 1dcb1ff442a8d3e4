"""Integration tests of gateway.store against real databases.

Every test runs on SQLite (a file in tmp_path) and on PostgreSQL. The PostgreSQL
cases need ``DUBBING_TEST_POSTGRES_DSN`` (e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``): unset, they are skipped;
set but unreachable, they fail, so CI (which sets it) cannot pass silently. Each
PostgreSQL test gets its own schema, created here and dropped afterwards, which
the store uses through its ``?schema=`` URL parameter (a search_path).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dubbing import jobstate
from dubbing.bus import EventType, JobEvent, JobKind, JobMessage, ResultInfo, RunRef
from dubbing.errors import Code, Reason
from dubbing.v1 import dubbing_pb2 as pb
from gateway.store import (
    Cursor,
    JobNotFound,
    JobStore,
    OutboxRow,
    RequestIdReused,
    StoreError,
    StoreUnavailable,
    migrate,
    new_job_id,
    open_store,
)
from gateway.store.schema import jobs, metadata

POSTGRES_DSN_ENV = "DUBBING_TEST_POSTGRES_DSN"
SKIP_POSTGRES = f"set {POSTGRES_DSN_ENV} to run PostgreSQL store tests"
State = pb.Job.State


@dataclass(frozen=True)
class Backend:
    """One database to test against: the store's URL and a way to reach it directly."""

    name: str  # "sqlite" | "postgres"
    url: str  # what open_store gets
    raw_url: str  # the same database for a plain SQLAlchemy engine
    schema: str | None = None

    async def open(self, policy: jobstate.AttemptPolicy | None = None) -> JobStore:
        return await open_store(self.url, connect_timeout=10.0, policy=policy)

    def raw_engine(self) -> AsyncEngine:
        """An engine on the same database (and schema) as the store, for direct SQL."""
        if self.schema is None:
            return create_async_engine(self.raw_url)
        return create_async_engine(
            self.raw_url, connect_args={"server_settings": {"search_path": self.schema}}
        )


@contextlib.asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    path = tmp_path / "store" / "jobs.db"  # the store creates the directory
    yield Backend("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}")


@contextlib.asynccontextmanager
async def postgres_backend() -> AsyncIterator[Backend]:
    dsn = os.environ.get(POSTGRES_DSN_ENV)
    if not dsn:
        pytest.skip(SKIP_POSTGRES)
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(dsn)
    try:
        # Fails (does not skip) when the DSN is set but the server is unreachable.
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(dsn).update_query_dict({"schema": schema})
        yield Backend("postgres", url.render_as_string(hide_password=False), dsn, schema=schema)
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen = sqlite_backend(tmp_path) if request.param == "sqlite" else postgres_backend()
    async with chosen as b:
        yield b


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[JobStore]:
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()


# ---------------------------------------------------------------------------
# Helpers


def make_job(
    request_id: str = "", *, now: float | None = None, job_id: str | None = None
) -> tuple[pb.Job, JobMessage]:
    request = pb.DubRequest(
        request_id=request_id,
        target_language="fr",
        provider="local",
        transcript=pb.TranscriptDubbing(
            script=pb.Transcript(segments=[pb.Segment(text="Bonjour", speaker="A")])
        ),
    )
    job = jobstate.new_job(job_id or new_job_id(), request, time.time() if now is None else now)
    message = JobMessage(job.id, JobKind.TRANSCRIPT, "local", request.SerializeToString())
    return job, message


async def submit(
    store: JobStore, request_id: str = "", *, request_hash: str = "h", now: float | None = None
) -> tuple[pb.Job, bool]:
    job, message = make_job(request_id, now=now)
    return await store.submit(job, request_hash=request_hash, message=message)


def event(
    job_id: str,
    attempt: int,
    seq: int,
    type_: EventType = EventType.PROGRESS,
    *,
    run_id: str = "",
    **kw: object,
) -> JobEvent:
    """An event of the run `run_id` ("": a worker from before runs had ids)."""
    return JobEvent(
        job_id=job_id,
        attempt=attempt,
        run_id=run_id,
        seq=seq,
        type=type_,
        worker_id=f"worker-{run_id or attempt}",
        time=time.time(),
        **kw,  # type: ignore[arg-type]
    )


RESULT = ResultInfo(
    artifact="job/attempt-2",
    format="wav",
    sample_rate_hz=24000,
    duration_seconds=1.5,
    size_bytes=72044,
    sha256="0" * 64,
)


async def count_jobs(store: JobStore) -> int:
    return len(await store.list_jobs(states=[], limit=1000, after=None))


# ---------------------------------------------------------------------------
# Submit


async def test_submit_then_get_round_trip(store: JobStore) -> None:
    job, message = make_job("req-1")
    stored, created = await store.submit(job, request_hash="h1", message=message)

    assert created is True
    assert stored == job
    assert await store.get(job.id) == job
    assert await store.history(job.id, 0) == [job]
    assert await store.get("no-such-job") is None


async def test_submit_same_request_id_and_hash_returns_the_first_job(store: JobStore) -> None:
    first, created_first = await submit(store, "req-1", request_hash="h1")
    again, created_again = await submit(store, "req-1", request_hash="h1")

    assert created_first is True
    assert created_again is False
    assert again == first
    assert await count_jobs(store) == 1
    assert len(await store.pending_outbox(100)) == 1


async def test_submit_same_request_id_other_hash_is_rejected(store: JobStore) -> None:
    first, _ = await submit(store, "req-1", request_hash="h1")

    with pytest.raises(RequestIdReused) as caught:
        await submit(store, "req-1", request_hash="h2")

    assert caught.value.existing_job_id == first.id
    assert await count_jobs(store) == 1


async def test_submits_without_request_id_are_independent(store: JobStore) -> None:
    a, created_a = await submit(store)
    b, created_b = await submit(store)

    assert created_a and created_b
    assert a.id != b.id
    assert await count_jobs(store) == 2


async def test_concurrent_submits_are_group_committed_durable_with_one_outbox_row_each(
    backend: Backend, store: JobStore
) -> None:
    before = store.stats
    results = await asyncio.gather(*(submit(store, f"req-{i}") for i in range(200)))

    assert all(created for _, created in results)
    ids = {job.id for job, _ in results}
    assert len(ids) == 200
    # Group commit: far fewer transactions than submits.
    assert store.stats.transactions - before.transactions < 20
    await store.close()

    reopened = await backend.open()
    try:
        for job, _ in results:
            assert await reopened.get(job.id) == job
        rows = await reopened.pending_outbox(1000)
        per_job = collections.Counter(row.job_id for row in rows)
        assert set(per_job) == ids
        assert set(per_job.values()) == {1}
    finally:
        await reopened.close()


async def test_concurrent_duplicates_of_one_request_id_make_one_job(store: JobStore) -> None:
    # All in one batch: the dedupe happens inside the batch, with no failed insert
    # (which would show as a per-submit retry: 50 transactions).
    before = store.stats
    results = await asyncio.gather(*(submit(store, "req-dup") for _ in range(50)))
    assert store.stats.transactions - before.transactions == 1

    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert await count_jobs(store) == 1
    assert len(await store.pending_outbox(100)) == 1

    # Later batches, with a different hash, see the stored job.
    outcomes = await asyncio.gather(
        *(submit(store, "req-dup", request_hash="other") for _ in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(o, RequestIdReused) for o in outcomes)


async def test_mixed_hashes_for_one_request_id_in_one_batch(store: JobStore) -> None:
    outcomes = await asyncio.gather(
        submit(store, "req-mix", request_hash="a"),
        submit(store, "req-mix", request_hash="b"),
        submit(store, "req-mix", request_hash="a"),
        return_exceptions=True,
    )

    first, again, reused = outcomes[0], outcomes[2], outcomes[1]
    assert isinstance(first, tuple) and first[1] is True
    assert isinstance(again, tuple) and again == (first[0], False)
    assert isinstance(reused, RequestIdReused) and reused.existing_job_id == first[0].id


async def test_request_ids_match_exactly_whatever_their_characters(store: JobStore) -> None:
    # A batch's request_ids reach SQLite as one JSON array: quotes, escapes, non-ASCII
    # text and JSON-looking strings must come back out of it unchanged.
    odd = ['quo"te', "back\\slash", "naïve-日本-🎬", "[1, 2]", "null", " spaced ", "a\nb"]
    first = await asyncio.gather(*(submit(store, r) for r in odd))
    assert all(created for _, created in first)

    again = await asyncio.gather(*(submit(store, r) for r in odd))
    assert again == [(job, False) for job, _ in first]
    with pytest.raises(RequestIdReused):
        await submit(store, "naïve-日本-🎬", request_hash="other")
    # Near misses are other request_ids.
    assert (await submit(store, "naive-日本-🎬"))[1] is True
    assert await count_jobs(store) == len(odd) + 1


async def test_request_id_inserted_by_another_replica_mid_batch(
    backend: Backend, store: JobStore
) -> None:
    """Another writer holds an uncommitted job with our request_id while we submit.

    PostgreSQL: the batch does not see the row, blocks on the unique index, then
    fails with a unique violation when the other commits; the store must redo the
    batch one submit per transaction, so only the conflicting submit is affected
    (and it resolves to the other replica's job). SQLite: BEGIN IMMEDIATE waits for
    the other writer, then sees its row. Either way: same outcome.
    """
    other, _ = make_job("req-race")
    raw = backend.raw_engine()
    try:
        async with raw.begin() as conn:
            await conn.execute(
                jobs.insert().values(
                    id=other.id,
                    request_id="req-race",
                    request_hash="h",
                    state=int(other.state),
                    create_time_ns=other.create_time.ToNanoseconds(),
                    update_time_ns=other.update_time.ToNanoseconds(),
                    sequence=1,
                    attempt=0,
                    event_seq=0,
                    snapshot=other.SerializeToString(),
                )
            )
            before = store.stats
            pending = asyncio.gather(
                submit(store, "req-race"), *(submit(store, f"req-free-{i}") for i in range(5))
            )
            await asyncio.sleep(0.5)  # the batch is now blocked behind this transaction
            assert not pending.done()
        results = await asyncio.wait_for(pending, 10)
    finally:
        await raw.dispose()

    assert results[0] == (other, False)
    assert all(created for _, created in results[1:])
    assert await count_jobs(store) == 6
    if backend.name == "postgres":
        # The failed batch is not counted; its six submits were redone one by one.
        assert store.stats.transactions - before.transactions == 6


async def test_failed_insert_fails_only_its_own_submit(store: JobStore) -> None:
    taken, _ = await submit(store)
    clash, message = make_job(job_id=taken.id)  # same primary key, no request_id

    outcomes = await asyncio.gather(
        store.submit(clash, request_hash="h", message=message),
        *(submit(store) for _ in range(5)),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], StoreError)
    assert not isinstance(outcomes[0], StoreUnavailable)
    assert all(isinstance(o, tuple) and o[1] for o in outcomes[1:])
    # The writer survived: it keeps serving.
    assert (await submit(store))[1] is True
    assert await count_jobs(store) == 7


# ---------------------------------------------------------------------------
# Listing


async def test_list_jobs_walks_every_job_once_newest_first(store: JobStore) -> None:
    base = 1_700_000_000.0
    created = [
        # Three jobs share each create time: the id breaks the tie.
        (await submit(store, now=base + i // 3))[0]
        for i in range(23)
    ]
    running = set()
    for job in created[::4]:
        changed = await store.apply_event(event(job.id, 1, 1, EventType.STARTED))
        assert changed is not None and changed.state == State.STATE_RUNNING
        running.add(job.id)

    def newest_first(ids: set[str]) -> list[str]:
        by_id = {j.id: j for j in created}
        return sorted(ids, key=lambda i: (by_id[i].create_time.ToNanoseconds(), i), reverse=True)

    async def walk(states: list[int], page: int) -> list[str]:
        seen: list[str] = []
        after: Cursor | None = None
        while True:
            jobs_page = await store.list_jobs(states=states, limit=page, after=after)
            seen += [j.id for j in jobs_page]
            if len(jobs_page) < page:
                return seen
            after = Cursor.after(jobs_page[-1])

    everything = await walk([], 4)
    assert everything == newest_first({j.id for j in created})
    assert await walk([State.STATE_RUNNING], 2) == newest_first(running)
    assert await walk([State.STATE_QUEUED, State.STATE_RUNNING], 5) == everything
    assert await walk([State.STATE_SUCCEEDED], 3) == []
    with pytest.raises(ValueError):
        await store.list_jobs(states=[], limit=0, after=None)


# ---------------------------------------------------------------------------
# Worker events, cancel, fail


async def test_apply_event_fencing_and_contiguous_history(store: JobStore) -> None:
    job, _ = await submit(store)

    started = await store.apply_event(event(job.id, 1, 1, EventType.STARTED, stage="synthesizing"))
    assert started is not None
    assert (started.state, started.sequence, started.attempt) == (State.STATE_RUNNING, 2, 1)
    assert await store.apply_event(event(job.id, 1, 1, EventType.STARTED)) is None  # duplicate

    progressed = await store.apply_event(event(job.id, 1, 2, progress=0.5))
    assert progressed is not None and progressed.progress == 0.5
    assert await store.apply_event(event(job.id, 1, 2, progress=0.9)) is None  # duplicate seq

    # Attempt 2 takes over; attempt 1 is fenced off from now on.
    retried = await store.apply_event(event(job.id, 2, 1, EventType.STARTED))
    assert retried is not None and retried.attempt == 2 and retried.worker_id == "worker-2"
    assert await store.apply_event(event(job.id, 1, 3, progress=0.99)) is None  # stale attempt

    # Several events of one job in one batch apply in order.
    changes = await asyncio.gather(
        *(store.apply_event(event(job.id, 2, seq, progress=seq / 10)) for seq in range(2, 6))
    )
    assert [c.sequence if c else None for c in changes] == [5, 6, 7, 8]

    done = await store.apply_event(event(job.id, 2, 6, EventType.SUCCEEDED, result=RESULT))
    assert done is not None and done.state == State.STATE_SUCCEEDED and done.sequence == 9
    assert await store.apply_event(event(job.id, 2, 7, progress=1.0)) is None  # terminal
    assert await store.apply_event(event("no-such-job", 1, 1)) is None

    assert await store.get(job.id) == done
    versions = await store.history(job.id, 0)
    assert [v.sequence for v in versions] == list(range(1, 10))
    assert versions[-1] == done
    assert [v.sequence for v in await store.history(job.id, 7)] == [8, 9]
    assert await store.history(job.id, 9) == []


async def test_event_that_breaks_the_state_machine_fails_only_its_caller(store: JobStore) -> None:
    job, _ = await submit(store)

    with pytest.raises(ValueError):  # a succeeded event must carry a result
        await store.apply_event(event(job.id, 1, 1, EventType.SUCCEEDED))

    # Nothing was written, and the writer still works.
    assert (await store.get(job.id)) == job
    assert await store.apply_event(event(job.id, 1, 1, EventType.STARTED)) is not None


async def test_cancel(store: JobStore) -> None:
    job, _ = await submit(store)

    cancelled = await store.cancel(job.id, time.time())
    assert cancelled.state == State.STATE_CANCELLED
    assert cancelled.sequence == 2
    assert await store.get(job.id) == cancelled

    with pytest.raises(jobstate.JobAlreadyFinished):
        await store.cancel(job.id, time.time())
    with pytest.raises(JobNotFound) as caught:
        await store.cancel("no-such-job", time.time())
    assert caught.value.job_id == "no-such-job"
    # A worker's late event cannot revive it.
    assert await store.apply_event(event(job.id, 1, 1, EventType.STARTED)) is None
    assert [v.sequence for v in await store.history(job.id, 0)] == [1, 2]


async def test_one_batch_of_changes_to_many_jobs(store: JobStore) -> None:
    jobs_ = [job for job, _ in await asyncio.gather(*(submit(store) for _ in range(40)))]
    before = store.stats
    now = time.time()

    outcomes = await asyncio.gather(
        *(store.cancel(job.id, now) for job in jobs_),
        store.cancel(jobs_[0].id, now),  # queued after the first: already cancelled
        store.cancel("no-such-job", now),
        return_exceptions=True,
    )

    assert store.stats.transactions - before.transactions == 1
    for job, cancelled in zip(jobs_, outcomes, strict=False):
        assert isinstance(cancelled, pb.Job) and cancelled.id == job.id
        assert cancelled.state == State.STATE_CANCELLED
        assert await store.get(job.id) == cancelled
    assert isinstance(outcomes[-2], jobstate.JobAlreadyFinished)
    assert isinstance(outcomes[-1], JobNotFound)


async def test_fail(store: JobStore) -> None:
    job, _ = await submit(store)

    failed = await store.fail(
        job.id,
        time.time(),
        code=Code.INTERNAL,
        reason=Reason.MAX_DELIVERIES_EXCEEDED,
        message="gave up",
    )
    assert failed is not None
    assert failed.state == State.STATE_FAILED
    assert failed.error.message == "gave up"
    assert await store.get(job.id) == failed

    again = await store.fail(
        job.id, time.time(), code=Code.INTERNAL, reason=Reason.INTERNAL, message="again"
    )
    assert again is None
    assert (
        await store.fail(
            "no-such-job", time.time(), code=Code.INTERNAL, reason=Reason.INTERNAL, message="m"
        )
        is None
    )


# ---------------------------------------------------------------------------
# Outbox


async def test_outbox_pending_and_mark_published(store: JobStore) -> None:
    store.outbox_ready.clear()
    submitted = [(await submit(store, f"req-{i}"))[0] for i in range(3)]
    assert store.outbox_ready.is_set()

    rows = await store.pending_outbox(10)
    assert [r.job_id for r in rows] == [j.id for j in submitted]  # oldest first
    assert rows[0].subject == "dubbing.jobs.transcript.local"
    assert rows[0].headers["Nats-Msg-Id"] == f"{submitted[0].id}:1"
    assert rows[0].headers["Dubbing-Job-Id"] == submitted[0].id
    assert rows[0].headers["Dubbing-Attempt"] == "1" and rows[0].attempt == 1
    assert pb.DubRequest.FromString(rows[0].payload) == submitted[0].request
    assert [r.job_id for r in await store.pending_outbox(2)] == [j.id for j in submitted[:2]]

    await store.mark_published([(rows[0].id, 11), (rows[1].id, 12)], time.time())
    assert [r.id for r in await store.pending_outbox(10)] == [rows[2].id]
    await store.mark_published([], time.time())  # no-op
    await store.mark_published([(rows[2].id, 13)], time.time())
    assert await store.pending_outbox(10) == []
    # Each published attempt is waiting, with where JetStream stored it.
    waiting = await store.waiting(time.time() + 1, 10)
    assert [(w.job_id, w.attempt, w.stream_seq) for w in waiting] == [
        (j.id, 1, seq) for j, seq in zip(submitted, (11, 12, 13), strict=True)
    ]
    assert await store.count_waiting(time.time() + 1) == 3
    assert await store.count_waiting(time.time() - 60) == 0  # none published that long ago


# ---------------------------------------------------------------------------
# Runs, leases and new attempts


async def publish_all(store: JobStore) -> list[OutboxRow]:
    """Mark every pending outbox row published (stream seq = row id), as the relay does."""
    rows = await store.pending_outbox(1000, now=time.time() + 3600)
    await store.mark_published([(r.id, r.id) for r in rows], time.time())
    return rows


async def test_first_run_of_an_attempt_claims_it_and_others_are_fenced(store: JobStore) -> None:
    job, _ = await submit(store)
    await publish_all(store)
    started = await store.apply_event(event(job.id, 1, 1, EventType.STARTED, run_id="a"))
    assert started is not None and started.state == State.STATE_RUNNING
    # The same message delivered again (e.g. after a nats-server crash): another run.
    assert await store.apply_event(event(job.id, 1, 1, EventType.STARTED, run_id="b")) is None
    assert (
        await store.apply_event(event(job.id, 1, 5, EventType.SUCCEEDED, run_id="b", result=RESULT))
        is None
    )
    # Run a goes on; its seq window is its own.
    assert await store.apply_event(event(job.id, 1, 2, run_id="a", progress=0.5)) is not None
    # Run b is told to stop, run a's lease is renewed.
    stop = await store.renew_leases([RunRef(job.id, 1, "a"), RunRef(job.id, 1, "b")], time.time())
    assert stop == [RunRef(job.id, 1, "b")]


async def test_retrying_dispatches_the_next_attempt_after_its_backoff(store: JobStore) -> None:
    job, _ = await submit(store)
    await publish_all(store)
    await store.apply_event(event(job.id, 1, 1, EventType.STARTED, run_id="a"))
    store.outbox_ready.clear()
    before = time.time()
    retried = await store.apply_event(
        event(job.id, 1, 2, EventType.RETRYING, run_id="a", retry_after=30.0)
    )
    assert retried is not None and retried.state == State.STATE_QUEUED
    assert store.outbox_ready.is_set()
    assert await store.pending_outbox(10) == []  # not before its backoff
    (row,) = await store.pending_outbox(10, now=before + 31)
    assert (row.job_id, row.attempt) == (job.id, 2)
    assert row.headers["Nats-Msg-Id"] == f"{job.id}:2"
    assert row.headers["Dubbing-Attempt"] == "2"
    assert row.headers["Dubbing-Max-Attempts"] == str(store.policy.max_attempts)
    assert pb.DubRequest.FromString(row.payload) == job.request
    # Attempt 1 is over: its late events and its renewals are fenced.
    assert await store.apply_event(event(job.id, 1, 3, run_id="a", progress=0.9)) is None
    assert await store.renew_leases([RunRef(job.id, 1, "a")], time.time()) == [
        RunRef(job.id, 1, "a")
    ]
    # Attempt 2's first run claims it.
    again = await store.apply_event(event(job.id, 2, 1, EventType.STARTED, run_id="c"))
    assert again is not None and again.attempt == 2 and again.state == State.STATE_RUNNING


async def test_retrying_at_the_last_attempt_fails_the_job(backend: Backend) -> None:
    store = await backend.open(policy=jobstate.AttemptPolicy(max_attempts=1))
    try:
        job, _ = await submit(store)
        await publish_all(store)
        await store.apply_event(event(job.id, 1, 1, EventType.STARTED, run_id="a"))
        failed = await store.apply_event(event(job.id, 1, 2, EventType.RETRYING, run_id="a"))
        assert failed is not None and failed.state == State.STATE_FAILED
        assert "MAX_DELIVERIES_EXCEEDED" in str(failed.error.details[0].value)
        assert await store.pending_outbox(10, now=time.time() + 3600) == []
    finally:
        await store.close()


async def test_leases_expire_and_the_job_is_reclaimed_once(
    store: JobStore, backend: Backend
) -> None:
    job, _ = await submit(store)
    await publish_all(store)
    lease = store.policy.lease_seconds
    # Not claimed yet: no lease, nothing to renew, nothing to stop.
    assert await store.renew_leases([RunRef(job.id, 1, "a")], time.time()) == []
    assert await store.expired_leases(time.time() + 10 * lease, 10) == []
    await store.apply_event(event(job.id, 1, 1, EventType.STARTED, run_id="a"))
    assert await store.expired_leases(time.time() + lease / 2, 10) == []
    later = time.time() + lease + 1
    assert await store.expired_leases(later, 10) == [(job.id, 1)]
    # A renewal moves the lease on.
    assert await store.renew_leases([RunRef(job.id, 1, "a")], later - lease / 2) == []
    assert await store.expired_leases(later, 10) == []
    assert await store.reclaim(job.id, 1, later) is None  # still live
    much_later = later + 2 * lease

    # Two replicas reconciling at once: one takes the job back, the other finds nothing to do.
    replica = await backend.open()
    try:
        first, second = await asyncio.gather(
            store.reclaim(job.id, 1, much_later), replica.reclaim(job.id, 1, much_later)
        )
    finally:
        await replica.close()
    reclaimed = [j for j in (first, second) if j is not None]
    assert len(reclaimed) == 1 and reclaimed[0].state == State.STATE_QUEUED
    assert reclaimed[0].stage == "retrying"
    rows = await store.pending_outbox(10, now=much_later)
    assert [(r.job_id, r.attempt) for r in rows] == [(job.id, 2)]
    assert await store.expired_leases(much_later, 10) == []
    # The silent run, should it wake, is stopped.
    assert await store.renew_leases([RunRef(job.id, 1, "a")], much_later) == [
        RunRef(job.id, 1, "a")
    ]


async def test_reclaim_after_the_last_attempt_fails_with_max_deliveries(backend: Backend) -> None:
    store = await backend.open(policy=jobstate.AttemptPolicy(lease_seconds=5.0, max_attempts=2))
    try:
        job, _ = await submit(store)
        await store.apply_event(event(job.id, 1, 1, EventType.STARTED, run_id="a"))
        assert (await store.reclaim(job.id, 1, time.time() + 10)).state == State.STATE_QUEUED  # type: ignore[union-attr]
        await store.apply_event(event(job.id, 2, 1, EventType.STARTED, run_id="b"))
        assert await store.reclaim(job.id, 1, time.time() + 20) is None  # not that attempt any more
        failed = await store.reclaim(job.id, 2, time.time() + 20)
        assert failed is not None and failed.state == State.STATE_FAILED
        assert failed.error.code == 14  # UNAVAILABLE
        assert "MAX_DELIVERIES_EXCEEDED" in str(failed.error.details[0].value)
        assert not failed.HasField("usage")
        assert await store.expired_leases(time.time() + 100, 10) == []
    finally:
        await store.close()


async def test_redispatch_of_a_lost_message_only_while_unclaimed(store: JobStore) -> None:
    job, _ = await submit(store)
    other, _ = await submit(store)
    await publish_all(store)
    assert await store.redispatch(job.id, 1, time.time())
    assert not await store.redispatch(job.id, 1, time.time())  # attempt 1 is no longer the newest
    assert (await store.get(job.id)) == job  # no new version: nothing a client sees changed
    rows = await store.pending_outbox(10)
    assert [(r.job_id, r.attempt) for r in rows] == [(job.id, 2)]
    # A claimed attempt is not lost: its lease tells whether it lives.
    await store.apply_event(event(other.id, 1, 1, EventType.STARTED, run_id="a"))
    assert not await store.redispatch(other.id, 1, time.time())


# ---------------------------------------------------------------------------
# Lifecycle


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    first = await backend.open()
    job, _ = await submit(first, "req-keep")
    started = await first.apply_event(event(job.id, 1, 1, EventType.STARTED))
    await first.close()

    second = await backend.open()
    try:
        assert await second.get(job.id) == started
        assert [v.sequence for v in await second.history(job.id, 0)] == [1, 2]
        # The fencing state (event_seq) survived too: the duplicate is still ignored.
        assert await second.apply_event(event(job.id, 1, 1, EventType.STARTED)) is None
        assert await submit(second, "req-keep") == (started, False)
        assert [r.job_id for r in await second.pending_outbox(10)] == [job.id]
    finally:
        await second.close()


async def test_close_drains_queued_writes_then_rejects(backend: Backend) -> None:
    first = await backend.open()
    tasks = [asyncio.create_task(submit(first)) for _ in range(100)]
    await asyncio.sleep(0)  # let them enqueue
    await first.close()
    results = await asyncio.gather(*tasks)
    assert all(created for _, created in results)
    with pytest.raises(StoreUnavailable):
        await submit(first)
    with pytest.raises(StoreUnavailable):
        await first.get(results[0][0].id)
    await first.close()  # idempotent

    second = await backend.open()
    try:
        assert await count_jobs(second) == 100
    finally:
        await second.close()


async def test_migrations_idempotent_concurrent_and_match_the_models(backend: Backend) -> None:
    # Replicas starting together on an empty database, then a restart.
    stores = await asyncio.gather(backend.open(), backend.open(), backend.open())
    for s in stores:
        await s.close()
    await (await backend.open()).close()

    raw = backend.raw_engine()
    try:
        async with raw.connect() as conn:
            assert await conn.run_sync(migrate.current_revision) == migrate.head_revision()
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
        assert diff == []
    finally:
        await raw.dispose()


async def test_upgrade_from_0001_gives_running_jobs_a_lease(backend: Backend) -> None:
    """Jobs RUNNING under workers that never renewed leases get one hour from their
    last change; queued and finished jobs get none."""
    from alembic import command

    if backend.name == "sqlite":  # the store would create its directory
        Path(backend.url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    raw = backend.raw_engine()
    t0_ns = 1_700_000_000 * 10**9
    try:
        async with raw.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(migrate.alembic_config(sync), "0001"))
            for job_id, state in (("running", 2), ("queued", 1), ("done", 3)):
                await conn.execute(
                    sa.text(
                        "INSERT INTO jobs (id, request_hash, state, create_time_ns, "
                        "update_time_ns, sequence, attempt, event_seq, snapshot) "
                        "VALUES (:id, 'h', :state, :t, :t, 2, 1, 1, :snap)"
                    ),
                    {"id": job_id, "state": state, "t": t0_ns, "snap": b""},
                )
        await (await backend.open()).close()
        async with raw.connect() as conn:
            rows = await conn.execute(sa.text("SELECT id, lease_expires_ns, run_id FROM jobs"))
            leases = {r.id: (r.lease_expires_ns, r.run_id) for r in rows}
    finally:
        await raw.dispose()
    assert leases == {
        "running": (t0_ns + 3600 * 10**9, None),
        "queued": (None, None),
        "done": (None, None),
    }


async def test_sqlite_commits_are_durable(tmp_path: Path) -> None:
    def pragmas(conn: sa.Connection) -> tuple[object, object]:
        return (
            conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            conn.exec_driver_sql("PRAGMA synchronous").scalar(),
        )

    # On the writer's own connection (internal API): WAL, and synchronous=FULL (2)
    # so that a job acknowledged to a client survives power loss.
    async with sqlite_backend(tmp_path) as backend:
        store = await backend.open()
        try:
            assert await store._db.write(pragmas) == ("wal", 2)
            assert await store._db.read(pragmas) == ("wal", 2)
        finally:
            await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_unreachable_database_raises_store_unavailable_quickly(
    kind: str, tmp_path: Path
) -> None:
    # No server needed for either case, so neither is skipped.
    if kind == "sqlite":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        url, where = f"sqlite:///{blocker}/jobs.db", str(blocker)
    else:
        url, where = "postgresql+asyncpg://postgres@127.0.0.1:1/test", "127.0.0.1:1"

    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url, connect_timeout=1.0)

    assert time.monotonic() - started < 5
    assert where in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "mysql://u@h/db"])
async def test_unsupported_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        await open_store(url)


@pytest.mark.postgres
async def test_reconnects_after_the_server_drops_connections() -> None:
    # Only a PostgreSQL server can drop a store's connections under it.
    async with postgres_backend() as backend:
        store = await backend.open()
        try:
            await _reconnects_after_drop(backend, store)
        finally:
            await store.close()


async def _reconnects_after_drop(backend: Backend, store: JobStore) -> None:
    job, _ = await submit(store)
    assert await store.get(job.id) == job

    # Only this store's connections (internal API), not those of anything else
    # sharing the server: the pools hold one writer and, used serially, one reader.
    def backend_pid(conn: sa.Connection) -> int:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    pids = [await store._db.write(backend_pid), await store._db.read(backend_pid)]
    raw = backend.raw_engine()
    try:
        async with raw.connect() as conn:
            for pid in pids:
                assert await conn.scalar(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    finally:
        await raw.dispose()

    # pool_pre_ping replaces the dead connections at checkout.
    assert await store.get(job.id) == job
    assert (await submit(store))[1] is True
