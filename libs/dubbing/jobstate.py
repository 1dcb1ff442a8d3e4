"""The job state machine: how a Job changes. Pure functions over ``dubbing.v1.Job``.

The gateway's store calls these inside a transaction; keeping them free of I/O
lets the rules (fencing, idempotency, terminal states) be tested exhaustively.

Rules, in the order they are checked for a worker event:

1. A terminal job (SUCCEEDED, FAILED, CANCELLED) never changes again.
2. Fencing: an event from an attempt older than the job's current attempt is
   ignored. JetStream honours late acks, so a stalled worker can wake up and
   report after its job was redelivered; only the newest attempt may speak.
3. Idempotency and order: within an attempt, an event whose ``seq`` is not
   greater than the last applied one is a duplicate or arrived late; ignored.
   Events carry the whole stage/progress, so skipping a late one loses nothing.

Every applied change increments ``Job.sequence`` by one; watchers resume by it.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from dubbing import errors
from dubbing.bus import EventType, JobEvent
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
class Applied:
    job: pb.Job
    event_seq: int


@dataclass(frozen=True, slots=True)
class Ignored:
    why: str  # "job_terminal" | "stale_attempt" | "duplicate"


def apply_event(job: pb.Job, last_event_seq: int, event: JobEvent) -> Applied | Ignored:
    """The job after `event`, or why the event changes nothing.

    `last_event_seq` is the seq of the last event applied for ``job.attempt``.
    """
    if is_terminal(job):
        return Ignored("job_terminal")
    if event.attempt < job.attempt:
        return Ignored("stale_attempt")
    if event.attempt == job.attempt and event.seq <= last_event_seq:
        return Ignored("duplicate")

    new = pb.Job()
    new.CopyFrom(job)
    new.attempt = event.attempt
    new.worker_id = event.worker_id
    new.sequence = job.sequence + 1
    new.update_time.CopyFrom(timestamp(event.time))
    if event.type in (EventType.STARTED, EventType.PROGRESS):
        new.state = State.STATE_RUNNING
        if not new.HasField("start_time"):
            new.start_time.CopyFrom(timestamp(event.time))
        new.stage = event.stage or new.stage
        # min(1.0, nan) is 1.0: a NaN would claim completion; treat it as none.
        progress = 0.0 if math.isnan(event.progress) else event.progress
        new.progress = max(0.0, min(1.0, progress))
    elif event.type is EventType.RETRYING:
        new.state = State.STATE_QUEUED
        new.stage = "retrying"
        new.progress = 0.0
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
        new.state = State.STATE_FAILED
        new.stage = "failed"
        new.end_time.CopyFrom(timestamp(event.time))
        new.error.CopyFrom(
            errors.status(
                errors.code_value(detail.code if detail else "INTERNAL"),
                detail.reason if detail else errors.Reason.INTERNAL,
                detail.message if detail else "the worker reported a failure without detail",
                metadata=detail.metadata if detail else None,
            )
        )
        # A failed job is never billed: report no generated audio.
        new.ClearField("usage")
    elif event.type is EventType.CANCELLED:
        new.state = State.STATE_CANCELLED
        new.stage = "cancelled"
        new.end_time.CopyFrom(timestamp(event.time))
    return Applied(new, event.seq)


class JobAlreadyFinished(Exception):
    """The job is terminal, so it can no longer be cancelled or failed."""

    def __init__(self, job: pb.Job) -> None:
        super().__init__(f"job {job.id} already ended as {State.Name(job.state)}")
        self.job = job


def cancel(job: pb.Job, now: float) -> pb.Job:
    """The job cancelled by a client; raises JobAlreadyFinished when it already ended."""
    if is_terminal(job):
        raise JobAlreadyFinished(job)
    new = pb.Job()
    new.CopyFrom(job)
    new.state = State.STATE_CANCELLED
    new.stage = "cancelled"
    new.sequence = job.sequence + 1
    new.update_time.CopyFrom(timestamp(now))
    new.end_time.CopyFrom(timestamp(now))
    return new


def fail(job: pb.Job, now: float, *, code: str, reason: str, message: str) -> pb.Job:
    """The job failed by the gateway itself (e.g. its message hit max deliveries)."""
    if is_terminal(job):
        raise JobAlreadyFinished(job)
    new = pb.Job()
    new.CopyFrom(job)
    new.state = State.STATE_FAILED
    new.stage = "failed"
    new.sequence = job.sequence + 1
    new.update_time.CopyFrom(timestamp(now))
    new.end_time.CopyFrom(timestamp(now))
    new.error.CopyFrom(errors.status(errors.code_value(code), reason, message))
    new.ClearField("usage")
    return new
