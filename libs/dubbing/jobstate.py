"""The job state machine: how a Job changes. Pure functions over ``dubbing.v1.Job``.

The gateway's store calls these inside a transaction; keeping them free of I/O
lets the rules (fencing, idempotency, terminal states, leases) be tested
exhaustively.

Beside each job the store keeps a :class:`Run`: the newest attempt the database
issued, the run that claimed it, the seq of that run's last applied event, and
its lease. Attempts are numbered here, never by the bus: JetStream's delivery
count restarts when nats-server loses its consumer state, so two runs could
otherwise call themselves "attempt 1".

Rules, in the order they are checked for a worker event (:func:`apply_event`):

1. A terminal job (SUCCEEDED, FAILED, CANCELLED) never changes again.
2. Fencing by attempt: an event from an attempt older than the one issued is
   ignored. A stalled worker can wake up and report after its job was given to
   another attempt; only the newest attempt may speak.
3. Fencing by run: the first run whose event is applied for an attempt claims
   it; any other run of that attempt (the same message delivered twice) is
   ignored. A worker from before run ids claims with the empty id.
4. Idempotency and order: within a run, an event whose ``seq`` is not greater
   than the last applied one is a duplicate or arrived late; ignored. Events
   carry the whole stage/progress, so skipping a late one loses nothing.
5. An event from an attempt newer than the one issued comes from a worker that
   numbered attempts itself (before the database issued them); it is applied
   and claims that attempt.

An applied event that leaves the job RUNNING gives its run a lease of
``AttemptPolicy.lease_seconds``; :func:`renew` extends it. A RUNNING job whose
lease ran out is taken back by :func:`reclaim`: dispatched as the next attempt,
or failed with MAX_DELIVERIES_EXCEEDED after the last. A RETRYING event
dispatches the next attempt the same way. Every applied change to the job
increments ``Job.sequence`` by one; watchers resume by it.
"""

from __future__ import annotations

import base64
import enum
import math
from dataclasses import dataclass, replace

from google.protobuf import duration_pb2, timestamp_pb2

from dubbing import errors
from dubbing.bus import EventType, JobEvent, JobKind, JobMessage, RunRef
from dubbing.v1 import dubbing_pb2 as pb

State = pb.Job.State
TERMINAL_STATES = frozenset({State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED})

FORMAT_BY_NAME = {
    "wav": pb.AUDIO_FORMAT_WAV,
    "mp3": pb.AUDIO_FORMAT_MP3,
    "opus": pb.AUDIO_FORMAT_OPUS,
    "flac": pb.AUDIO_FORMAT_FLAC,
}
NAME_BY_FORMAT = {v: k for k, v in FORMAT_BY_NAME.items()}


def is_terminal(job: pb.Job) -> bool:
    return job.state in TERMINAL_STATES


def timestamp(unix_seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(unix_seconds * 1e9))
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def seconds(d: duration_pb2.Duration) -> float:
    """The inverse of :func:`duration`."""
    return d.ToNanoseconds() / 1e9


def new_job(job_id: str, request: pb.DubRequest, now: float) -> pb.Job:
    ts = timestamp(now)
    return pb.Job(
        id=job_id,
        state=State.STATE_QUEUED,
        stage="queued",
        progress=0.0,
        attempt=0,
        create_time=ts,
        update_time=ts,
        request=request,
        sequence=1,
    )


@dataclass(frozen=True, slots=True)
class AttemptPolicy:
    """How long a run may stay silent, and how many attempts a job gets."""

    # A run that sends no event and no lease renewal for this long is presumed
    # dead and its job dispatched again. Workers renew every third of it, so two
    # lost renewals in a row still keep a live run. 30 s is JetStream's default
    # ack wait, which this replaces as the measure of "the worker went away".
    lease_seconds: float = 30.0
    # Attempts before a job fails for good (MAX_DELIVERIES_EXCEEDED): a transient
    # provider outage gets four retries; a job that kills every worker it meets
    # is stopped after five.
    max_attempts: int = 5


@dataclass(frozen=True, slots=True)
class Run:
    """Which run of which attempt may report on a job: the fencing token beside it."""

    attempt: int = 1  # the newest attempt issued; a new job's first is issued at submit
    run_id: str = ""  # the run that claimed it ("" for a worker from before run ids)
    event_seq: int = 0  # seq of the last event applied from that run; 0: not claimed
    lease_expires: float = 0.0  # unix seconds; 0 when the job is not RUNNING

    @property
    def claimed(self) -> bool:
        """Whether a run's event was applied for this attempt (the attempt is that run's)."""
        return bool(self.run_id) or self.event_seq > 0


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Publish this attempt of the job on the work queue, not before `not_before`."""

    attempt: int
    not_before: float  # unix seconds


@dataclass(frozen=True, slots=True)
class Applied:
    job: pb.Job
    run: Run
    dispatch: Dispatch | None = None


class Why(enum.StrEnum):
    """Why an event, renewal or reclaim changes nothing."""

    JOB_TERMINAL = "job_terminal"
    STALE_ATTEMPT = "stale_attempt"
    OTHER_RUN = "other_run"
    DUPLICATE = "duplicate"
    NOT_CLAIMED = "not_claimed"  # the run's first event is not applied yet
    UNKNOWN_ATTEMPT = "unknown_attempt"
    NOT_RUNNING = "not_running"
    NOT_QUEUED = "not_queued"
    LEASE_LIVE = "lease_live"
    ALREADY_CLAIMED = "already_claimed"


# A run told one of these has lost its attempt for good: it should stop.
SUPERSEDED = frozenset({Why.JOB_TERMINAL, Why.STALE_ATTEMPT, Why.OTHER_RUN})


@dataclass(frozen=True, slots=True)
class Ignored:
    why: Why


def job_kind(request: pb.DubRequest) -> JobKind:
    return JobKind.MEDIA if request.WhichOneof("work") == "media" else JobKind.TRANSCRIPT


def job_message(job: pb.Job, attempt: int, policy: AttemptPolicy) -> JobMessage:
    """The work-queue message for `attempt` of `job` (its request names the provider)."""
    return JobMessage(
        job_id=job.id,
        kind=job_kind(job.request),
        provider=job.request.provider,
        request=job.request.SerializeToString(),
        attempt=attempt,
        max_attempts=policy.max_attempts,
    )


def _next_version(job: pb.Job, now: float) -> pb.Job:
    new = pb.Job()
    new.CopyFrom(job)
    new.sequence = job.sequence + 1
    new.update_time.CopyFrom(timestamp(now))
    return new


def _lease(job: pb.Job, now: float, policy: AttemptPolicy) -> float:
    return now + policy.lease_seconds if job.state == State.STATE_RUNNING else 0.0


def apply_event(
    job: pb.Job, run: Run, event: JobEvent, *, now: float, policy: AttemptPolicy
) -> Applied | Ignored:
    """The job after `event`, or why the event changes nothing (see the module's rules).

    `now` (the gateway's clock) dates the lease; the job's times are the event's.
    """
    if is_terminal(job):
        return Ignored(Why.JOB_TERMINAL)
    if event.attempt < run.attempt:
        return Ignored(Why.STALE_ATTEMPT)
    if event.attempt == run.attempt:
        if run.claimed and event.run_id != run.run_id:
            return Ignored(Why.OTHER_RUN)
        if event.seq <= run.event_seq:
            return Ignored(Why.DUPLICATE)

    new = _next_version(job, event.time)
    new.attempt = event.attempt
    new.worker_id = event.worker_id
    dispatch: Dispatch | None = None
    if event.type in (EventType.STARTED, EventType.PROGRESS):
        new.state = State.STATE_RUNNING
        if not new.HasField("start_time"):
            new.start_time.CopyFrom(timestamp(event.time))
        new.stage = event.stage or new.stage
        # min(1.0, nan) is 1.0: a NaN would claim completion; treat it as none.
        progress = 0.0 if math.isnan(event.progress) else event.progress
        new.progress = max(0.0, min(1.0, progress))
    elif event.type is EventType.RETRYING:
        if event.attempt >= policy.max_attempts:
            detail = event.error
            _end_failed(
                new,
                event.time,
                code=errors.Code.UNAVAILABLE,
                reason=errors.Reason.MAX_DELIVERIES_EXCEEDED,
                message=f"attempt {event.attempt} of {policy.max_attempts} was handed back"
                + (f": {detail.message}" if detail and detail.message else ""),
            )
        else:
            new.state = State.STATE_QUEUED
            new.stage = "retrying"
            new.progress = 0.0
            retry_after = event.retry_after if math.isfinite(event.retry_after) else 0.0
            dispatch = Dispatch(event.attempt + 1, now + max(0.0, retry_after))
    elif event.type is EventType.SUCCEEDED:
        if event.result is None:
            raise ValueError("a succeeded event must carry a result")
        r = event.result
        new.state = State.STATE_SUCCEEDED
        new.stage = "done"
        new.progress = 1.0
        new.end_time.CopyFrom(timestamp(event.time))
        new.result.CopyFrom(
            pb.DubResult(
                artifact=r.artifact,
                format=FORMAT_BY_NAME.get(r.format, pb.AUDIO_FORMAT_UNSPECIFIED),
                sample_rate_hz=r.sample_rate_hz,
                duration=duration(r.duration_seconds),
                size_bytes=r.size_bytes,
                sha256=r.sha256,
                timing=(
                    pb.TimingReport.FromString(base64.b64decode(r.timing)) if r.timing else None
                ),
                loudness_lufs=r.loudness_lufs,
                channels=r.channels,
            )
        )
        new.usage.CopyFrom(
            pb.Usage(
                generated_audio_seconds=event.generated_audio_seconds,
                characters=event.characters,
            )
        )
    elif event.type is EventType.FAILED:
        detail = event.error
        _end_failed(
            new,
            event.time,
            code=detail.code if detail else errors.Code.INTERNAL,
            reason=detail.reason if detail else errors.Reason.INTERNAL,
            message=detail.message if detail else "the worker reported a failure without detail",
            metadata=detail.metadata if detail else None,
        )
    elif event.type is EventType.CANCELLED:
        new.state = State.STATE_CANCELLED
        new.stage = "cancelled"
        new.end_time.CopyFrom(timestamp(event.time))
    if dispatch is not None:
        next_run = Run(attempt=dispatch.attempt)
    else:
        next_run = Run(
            attempt=event.attempt,
            run_id=event.run_id,
            event_seq=event.seq,
            lease_expires=_lease(new, now, policy),
        )
    return Applied(new, next_run, dispatch)


def _end_failed(
    job: pb.Job,
    now: float,
    *,
    code: str,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
) -> None:
    job.state = State.STATE_FAILED
    job.stage = "failed"
    job.end_time.CopyFrom(timestamp(now))
    job.error.CopyFrom(errors.status(errors.code_value(code), reason, message, metadata=metadata))
    # A failed job is never billed: report no generated audio.
    job.ClearField("usage")


def renew(state: int, run: Run, ref: RunRef, *, now: float, policy: AttemptPolicy) -> Run | Ignored:
    """The run with its lease extended, if `ref` is the run that holds the job.

    `state` is the job's. Checked in order: a terminal job, an older attempt and
    another run of this attempt are :data:`SUPERSEDED` (the run should stop); a
    run whose first event is not applied yet, or a job no longer running, is
    left alone.
    """
    if state in TERMINAL_STATES:
        return Ignored(Why.JOB_TERMINAL)
    if ref.attempt < run.attempt:
        return Ignored(Why.STALE_ATTEMPT)
    if ref.attempt > run.attempt:
        return Ignored(Why.UNKNOWN_ATTEMPT)
    if not run.claimed:
        return Ignored(Why.NOT_CLAIMED)
    if ref.run_id != run.run_id:
        return Ignored(Why.OTHER_RUN)
    if state != State.STATE_RUNNING:
        return Ignored(Why.NOT_RUNNING)
    return replace(run, lease_expires=now + policy.lease_seconds)


def reclaim(job: pb.Job, run: Run, *, now: float, policy: AttemptPolicy) -> Applied | Ignored:
    """Take a RUNNING job back from a run whose lease ran out.

    The next attempt is dispatched at once (the job is QUEUED again, stage
    "retrying"); after the last attempt the job fails with MAX_DELIVERIES_EXCEEDED.
    A terminal job, a job not running, or a lease still live changes nothing.
    """
    if is_terminal(job):
        return Ignored(Why.JOB_TERMINAL)
    if job.state != State.STATE_RUNNING:
        return Ignored(Why.NOT_RUNNING)
    if run.lease_expires > now:
        return Ignored(Why.LEASE_LIVE)
    new = _next_version(job, now)
    if run.attempt >= policy.max_attempts:
        _end_failed(
            new,
            now,
            code=errors.Code.UNAVAILABLE,
            reason=errors.Reason.MAX_DELIVERIES_EXCEEDED,
            message=f"no worker completed the job in {run.attempt} attempts "
            f"(the last stopped reporting for over {policy.lease_seconds:g} s)",
        )
        return Applied(new, Run(attempt=run.attempt))
    new.state = State.STATE_QUEUED
    new.stage = "retrying"
    new.progress = 0.0
    dispatch = Dispatch(run.attempt + 1, now)
    return Applied(new, Run(attempt=dispatch.attempt), dispatch)


def redispatch(job: pb.Job, run: Run, *, now: float) -> Applied | Ignored:
    """Dispatch the next attempt of a QUEUED job whose message the bus lost.

    Only while no run has claimed the attempt: a claimed one is running (or its
    lease will say it is not). The job itself does not change (no new version).
    The lost attempt counts towards ``max_attempts`` like any other: attempt
    numbers must stay unique, and a worker gives up at the last one.
    """
    if is_terminal(job):
        return Ignored(Why.JOB_TERMINAL)
    if job.state != State.STATE_QUEUED:
        return Ignored(Why.NOT_QUEUED)
    if run.claimed:
        return Ignored(Why.ALREADY_CLAIMED)
    dispatch = Dispatch(run.attempt + 1, now)
    return Applied(job, Run(attempt=dispatch.attempt), dispatch)


class JobAlreadyFinished(Exception):
    """The job is terminal, so it can no longer be cancelled or failed."""

    def __init__(self, job: pb.Job) -> None:
        super().__init__(f"job {job.id} already ended as {State.Name(job.state)}")
        self.job = job


def cancel(job: pb.Job, run: Run, now: float) -> Applied:
    """The job cancelled by a client; raises JobAlreadyFinished when it already ended."""
    if is_terminal(job):
        raise JobAlreadyFinished(job)
    new = _next_version(job, now)
    new.state = State.STATE_CANCELLED
    new.stage = "cancelled"
    new.end_time.CopyFrom(timestamp(now))
    return Applied(new, replace(run, lease_expires=0.0))


def fail(
    job: pb.Job, run: Run, now: float, *, code: errors.Code, reason: errors.Reason, message: str
) -> Applied:
    """The job failed by the gateway itself; raises JobAlreadyFinished when it already ended."""
    if is_terminal(job):
        raise JobAlreadyFinished(job)
    new = _next_version(job, now)
    _end_failed(new, now, code=code, reason=reason, message=message)
    return Applied(new, replace(run, lease_expires=0.0))
