"""The job state machine (dubbing.jobstate): transitions, fencing, idempotency, leases."""

from __future__ import annotations

import base64
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace

import google.rpc.code_pb2 as code_pb2
import pytest
from google.protobuf import timestamp_pb2

from dubbing import errors, jobstate
from dubbing.bus import (
    ErrorDetail,
    EventType,
    JobEvent,
    JobKind,
    JobMessage,
    ResultInfo,
    RunRef,
)
from dubbing.jobstate import (
    SUPERSEDED,
    Applied,
    AttemptPolicy,
    Dispatch,
    Ignored,
    JobAlreadyFinished,
    Run,
    State,
    Why,
)
from dubbing.v1 import dubbing_pb2 as pb

JOB_ID = "0b7f3c9e-8a41-4e52-9c1d-2f6a5b8e7d10"
# Whole and half seconds near this base are exact in float nanoseconds.
T0 = 1_700_000_000.0
# The gateway's clock when it applies an event (leases are dated by it, not by the
# event's time, which is the worker's).
NOW = T0 + 1000
POLICY = AttemptPolicy(lease_seconds=30.0, max_attempts=5)
TERMINAL = (State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED)

RESULT = ResultInfo(
    artifact=f"{JOB_ID}/attempt-1-run-a",
    format="mp3",
    sample_rate_hz=44100,
    duration_seconds=12.5,
    size_bytes=200_123,
    sha256="ab" * 32,
)


def request() -> pb.DubRequest:
    return pb.DubRequest(
        request_id="req-1",
        target_language="fr",
        provider="local",
        labels={"team": "qa"},
    )


def fresh(now: float = T0) -> pb.Job:
    return jobstate.new_job(JOB_ID, request(), now)


def event(
    type: EventType,
    *,
    attempt: int = 1,
    run_id: str = "run-a",
    seq: int = 1,
    time: float = T0 + 10,
    worker_id: str = "worker-a",
    stage: str = "",
    progress: float = 0.0,
    result: ResultInfo | None = None,
    error: ErrorDetail | None = None,
    generated_audio_seconds: float = 0.0,
    characters: int = 0,
    retry_after: float = 0.0,
) -> JobEvent:
    return JobEvent(
        job_id=JOB_ID,
        attempt=attempt,
        run_id=run_id,
        seq=seq,
        type=type,
        worker_id=worker_id,
        time=time,
        stage=stage,
        progress=progress,
        result=result,
        error=error,
        generated_audio_seconds=generated_audio_seconds,
        characters=characters,
        retry_after=retry_after,
    )


def any_event(type: EventType, **kw: object) -> JobEvent:
    """A well-formed event of `type` (succeeded carries a result, failed an error)."""
    ev = event(type)
    ev = replace(ev, **kw)  # type: ignore[arg-type]
    if type is EventType.SUCCEEDED:
        ev = replace(ev, result=RESULT)
    if type is EventType.FAILED:
        ev = replace(ev, error=ErrorDetail("INTERNAL", "INTERNAL", "boom"))
    return ev


def apply(
    job: pb.Job, run: Run, ev: JobEvent, *, now: float = NOW, policy: AttemptPolicy = POLICY
) -> Applied | Ignored:
    return jobstate.apply_event(job, run, ev, now=now, policy=policy)


def ts(seconds: float) -> timestamp_pb2.Timestamp:
    whole = int(seconds)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=round((seconds - whole) * 1e9))


def applied(result: Applied | Ignored) -> Applied:
    assert isinstance(result, Applied), result
    return result


def ignored_why(result: Applied | Ignored | Run) -> Why:
    assert isinstance(result, Ignored), result
    return result.why


def step(job: pb.Job, run: Run, ev: JobEvent, *, now: float = NOW) -> tuple[pb.Job, Run]:
    """Apply `ev`, which must be applied; the job and run the store would keep."""
    out = applied(apply(job, run, ev, now=now))
    return out.job, out.run


def started(
    *, attempt: int = 1, run_id: str = "run-a", seq: int = 1, stage: str = "synthesizing"
) -> tuple[pb.Job, Run]:
    """A fresh job whose `attempt` was claimed by `run_id` (issued, then STARTED)."""
    ev = event(EventType.STARTED, attempt=attempt, run_id=run_id, seq=seq, stage=stage)
    return step(fresh(), Run(attempt=attempt), ev)


def job_in(state: pb.Job.State.ValueType, *, attempt: int = 1, sequence: int = 7) -> pb.Job:
    job = fresh()
    job.state = state
    job.attempt = attempt
    job.sequence = sequence
    return job


def frozen(job: pb.Job) -> bytes:
    return job.SerializeToString(deterministic=True)


def reason(job: pb.Job) -> str:
    info = errors.error_info(job.error)
    assert info is not None
    assert info.domain == errors.DOMAIN
    return info.reason


# -- new_job, policy, run -------------------------------------------------------------


def test_new_job_fields() -> None:
    job = jobstate.new_job(JOB_ID, request(), T0 + 0.5)

    assert job.id == JOB_ID
    assert job.state == State.STATE_QUEUED
    assert job.stage == "queued"
    assert job.progress == 0.0
    assert job.attempt == 0
    assert job.sequence == 1
    assert job.worker_id == ""
    assert job.create_time == ts(T0 + 0.5)
    assert job.update_time == ts(T0 + 0.5)
    assert job.create_time.seconds == 1_700_000_000
    assert job.create_time.nanos == 500_000_000
    assert job.request == request()
    for unset in ("start_time", "end_time", "result", "usage", "error"):
        assert not job.HasField(unset), unset
    assert not jobstate.is_terminal(job)


def test_new_job_copies_the_request() -> None:
    req = request()
    job = jobstate.new_job(JOB_ID, req, T0)
    req.target_language = "de"
    assert job.request.target_language == "fr"


def test_a_new_jobs_run_is_its_first_attempt_unclaimed_without_a_lease() -> None:
    assert Run() == Run(attempt=1, run_id="", event_seq=0, lease_expires=0.0)


def test_default_attempt_policy() -> None:
    assert AttemptPolicy() == AttemptPolicy(lease_seconds=30.0, max_attempts=5)


def test_why_values_are_the_logged_strings() -> None:
    assert {w: str(w) for w in Why} == {
        Why.JOB_TERMINAL: "job_terminal",
        Why.STALE_ATTEMPT: "stale_attempt",
        Why.OTHER_RUN: "other_run",
        Why.DUPLICATE: "duplicate",
        Why.NOT_CLAIMED: "not_claimed",
        Why.UNKNOWN_ATTEMPT: "unknown_attempt",
        Why.NOT_RUNNING: "not_running",
        Why.NOT_QUEUED: "not_queued",
        Why.LEASE_LIVE: "lease_live",
        Why.ALREADY_CLAIMED: "already_claimed",
    }


def test_superseded_is_exactly_the_reasons_a_run_lost_its_attempt() -> None:
    assert frozenset({Why.JOB_TERMINAL, Why.STALE_ATTEMPT, Why.OTHER_RUN}) == SUPERSEDED


# -- job_kind and job_message -----------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "kind"),
    [
        (pb.DubRequest(transcript=pb.TranscriptDubbing()), JobKind.TRANSCRIPT),
        (pb.DubRequest(media=pb.MediaDubbing(source_url="https://x/a.mp4")), JobKind.MEDIA),
        (pb.DubRequest(), JobKind.TRANSCRIPT),
    ],
    ids=["transcript", "media", "neither"],
)
def test_job_kind_follows_the_requests_work_oneof(req: pb.DubRequest, kind: JobKind) -> None:
    assert jobstate.job_kind(req) is kind


@pytest.mark.parametrize(
    ("req", "kind"),
    [
        (
            pb.DubRequest(provider="elevenlabs", transcript=pb.TranscriptDubbing()),
            JobKind.TRANSCRIPT,
        ),
        (
            pb.DubRequest(provider="elevenlabs", media=pb.MediaDubbing(source_url="https://x/a")),
            JobKind.MEDIA,
        ),
    ],
    ids=["transcript", "media"],
)
@pytest.mark.parametrize("attempt", [1, 3])
def test_job_message_is_one_attempt_of_the_job(
    req: pb.DubRequest, kind: JobKind, attempt: int
) -> None:
    job = jobstate.new_job(JOB_ID, req, T0)
    msg = jobstate.job_message(job, attempt, AttemptPolicy(max_attempts=7))

    assert msg == JobMessage(
        job_id=JOB_ID,
        kind=kind,
        provider="elevenlabs",
        request=req.SerializeToString(),
        attempt=attempt,
        max_attempts=7,
    )
    assert msg.subject == f"dubbing.jobs.{kind.value}.elevenlabs"
    assert msg.headers() == {
        "Nats-Msg-Id": f"{JOB_ID}:{attempt}",
        "Dubbing-Job-Id": JOB_ID,
        "Dubbing-Attempt": str(attempt),
        "Dubbing-Max-Attempts": "7",
    }
    assert pb.DubRequest.FromString(msg.request) == req
    # What a worker decodes is what was built.
    assert JobMessage.decode(msg.subject, msg.headers(), msg.request, num_delivered=4) == msg


# -- apply_event: transitions ------------------------------------------------------------


def test_started_makes_the_job_running() -> None:
    job = fresh()
    ev = event(EventType.STARTED, stage="synthesizing", worker_id="w-7", run_id="run-7")
    result = applied(apply(job, Run(), ev))

    assert result.run == Run(
        attempt=1, run_id="run-7", event_seq=1, lease_expires=NOW + POLICY.lease_seconds
    )
    assert result.dispatch is None
    new = result.job
    assert new.state == State.STATE_RUNNING
    assert new.stage == "synthesizing"
    assert new.attempt == 1
    assert new.worker_id == "w-7"
    assert new.start_time == ts(T0 + 10)
    assert new.update_time == ts(T0 + 10)
    assert new.create_time == job.create_time
    assert new.sequence == job.sequence + 1
    assert not new.HasField("end_time")


def test_started_without_stage_keeps_the_previous_stage() -> None:
    new = applied(apply(fresh(), Run(), event(EventType.STARTED, stage=""))).job
    assert new.stage == "queued"


def test_start_time_is_set_once() -> None:
    job, run = step(fresh(), Run(), event(EventType.STARTED, seq=1, time=T0 + 10))
    job, run = step(job, run, event(EventType.PROGRESS, seq=2, time=T0 + 20, progress=0.5))
    job, run = step(job, run, event(EventType.RETRYING, seq=3, time=T0 + 25))
    # The second attempt starting later does not move start_time either.
    job, run = step(
        job, run, event(EventType.STARTED, attempt=2, run_id="run-b", seq=1, time=T0 + 30)
    )

    assert job.start_time == ts(T0 + 10)
    assert job.update_time == ts(T0 + 30)
    assert job.attempt == 2


def test_progress_updates_stage_and_progress() -> None:
    job, run = started()
    new = applied(
        apply(
            job, run, event(EventType.PROGRESS, seq=2, stage="mixing", progress=0.4, time=T0 + 11)
        )
    ).job
    assert new.state == State.STATE_RUNNING
    assert new.stage == "mixing"
    assert new.progress == pytest.approx(0.4)
    assert new.update_time == ts(T0 + 11)
    assert new.sequence == job.sequence + 1


def test_progress_as_first_event_also_starts_the_job() -> None:
    new = applied(apply(fresh(), Run(), event(EventType.PROGRESS, progress=0.1))).job
    assert new.state == State.STATE_RUNNING
    assert new.start_time == ts(T0 + 10)


@pytest.mark.parametrize(
    ("reported", "stored"),
    [
        (-5.0, 0.0),
        (-0.0001, 0.0),
        (0.0, 0.0),
        (0.25, 0.25),
        (1.0, 1.0),
        (1.0001, 1.0),
        (42.0, 1.0),
        (math.inf, 1.0),
        (-math.inf, 0.0),
        # min(1.0, nan) would be 1.0: a NaN must not claim completion.
        (math.nan, 0.0),
    ],
)
def test_progress_is_clamped_to_unit_interval(reported: float, stored: float) -> None:
    new = applied(apply(fresh(), Run(), event(EventType.PROGRESS, progress=reported))).job
    assert new.progress == stored


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("wav", pb.AUDIO_FORMAT_WAV),
        ("mp3", pb.AUDIO_FORMAT_MP3),
        ("opus", pb.AUDIO_FORMAT_OPUS),
        ("flac", pb.AUDIO_FORMAT_FLAC),
        ("aiff", pb.AUDIO_FORMAT_UNSPECIFIED),
        ("", pb.AUDIO_FORMAT_UNSPECIFIED),
    ],
)
def test_succeeded_maps_the_result_format(name: str, fmt: pb.AudioFormat.ValueType) -> None:
    ev = event(EventType.SUCCEEDED, result=replace(RESULT, format=name))
    new = applied(apply(fresh(), Run(), ev)).job
    assert new.result.format == fmt


def test_succeeded_records_result_usage_and_end() -> None:
    job, run = started()
    job, run = step(job, run, event(EventType.PROGRESS, seq=2, progress=0.7))
    ev = event(
        EventType.SUCCEEDED,
        seq=3,
        time=T0 + 60.5,
        result=replace(RESULT, loudness_lufs=-23.0, channels=2),
        generated_audio_seconds=12.5,
        characters=321,
    )
    result = applied(apply(job, run, ev))

    assert result.run == Run(attempt=1, run_id="run-a", event_seq=3, lease_expires=0.0)
    assert result.dispatch is None
    new = result.job
    assert new.state == State.STATE_SUCCEEDED
    assert new.stage == "done"
    assert new.progress == 1.0
    assert new.end_time == ts(T0 + 60.5)
    assert new.update_time == ts(T0 + 60.5)
    assert new.result.artifact == RESULT.artifact
    assert new.result.format == pb.AUDIO_FORMAT_MP3
    assert new.result.sample_rate_hz == 44100
    assert new.result.duration.seconds == 12
    assert new.result.duration.nanos == 500_000_000
    assert new.result.size_bytes == 200_123
    assert new.result.sha256 == "ab" * 32
    assert new.result.loudness_lufs == -23.0
    assert new.result.channels == 2
    assert not new.result.HasField("timing")
    assert new.usage.generated_audio_seconds == 12.5
    assert new.usage.characters == 321
    assert not new.HasField("error")
    assert jobstate.is_terminal(new)


def test_succeeded_event_carries_the_timing_report() -> None:
    report = pb.TimingReport(
        summary=pb.TimingSummary(segments=2, max_stretch=1.2, truncations=1),
        segments=[
            pb.SegmentTiming(
                index=1,
                stretch=1.2,
                remedies=[pb.TIMING_REMEDY_NATIVE_RATE, pb.TIMING_REMEDY_TRUNCATE],
            )
        ],
    )
    result = replace(RESULT, timing=base64.b64encode(report.SerializeToString()).decode())
    ev = event(EventType.SUCCEEDED, result=result)
    # Through the bus encoding, as the gateway receives it.
    received = JobEvent.decode(ev.encode())
    assert received == ev
    new = applied(apply(fresh(), Run(), received)).job
    assert new.result.timing == report


def test_succeeded_without_result_is_rejected() -> None:
    with pytest.raises(ValueError, match="result"):
        apply(fresh(), Run(), event(EventType.SUCCEEDED, result=None))


def test_failed_records_a_google_rpc_status() -> None:
    job = fresh()
    job.usage.generated_audio_seconds = 3.0  # anything billed so far must go
    job.usage.characters = 10
    ev = event(
        EventType.FAILED,
        time=T0 + 30,
        error=ErrorDetail(
            code="INVALID_ARGUMENT",
            reason=errors.Reason.LANGUAGE_NOT_SUPPORTED,
            message="no voice for xx",
            metadata={"language": "xx"},
        ),
        generated_audio_seconds=9.0,
    )
    result = applied(apply(job, Run(), ev))
    new = result.job

    assert new.state == State.STATE_FAILED
    assert new.stage == "failed"
    assert new.end_time == ts(T0 + 30)
    assert new.error.code == code_pb2.INVALID_ARGUMENT == 3
    assert new.error.message == "no voice for xx"
    info = errors.error_info(new.error)
    assert info is not None
    assert info.reason == "LANGUAGE_NOT_SUPPORTED"
    assert info.domain == errors.DOMAIN == "dubbing.v1"
    assert dict(info.metadata) == {"language": "xx"}
    assert not new.HasField("usage")
    assert not new.HasField("result")
    assert jobstate.is_terminal(new)
    assert result.run == Run(attempt=1, run_id="run-a", event_seq=1, lease_expires=0.0)
    assert result.dispatch is None


def test_failed_without_detail_is_an_internal_error() -> None:
    new = applied(apply(fresh(), Run(), event(EventType.FAILED, error=None))).job
    assert new.state == State.STATE_FAILED
    assert new.error.code == code_pb2.INTERNAL == 13
    assert new.error.message
    assert reason(new) == errors.Reason.INTERNAL


def test_cancelled_event_ends_the_job() -> None:
    job, run = started()
    result = applied(apply(job, run, event(EventType.CANCELLED, seq=2, time=T0 + 15)))
    new = result.job
    assert new.state == State.STATE_CANCELLED
    assert new.stage == "cancelled"
    assert new.end_time == ts(T0 + 15)
    assert new.sequence == job.sequence + 1
    assert jobstate.is_terminal(new)
    assert result.run == Run(attempt=1, run_id="run-a", event_seq=2, lease_expires=0.0)
    assert result.dispatch is None


@pytest.mark.parametrize(
    "ev",
    [
        event(EventType.STARTED, seq=1, stage="synthesizing"),
        event(EventType.PROGRESS, seq=1, progress=2.0),
        event(EventType.RETRYING, seq=1, retry_after=3.0),
        event(EventType.RETRYING, attempt=5, seq=1),
        event(EventType.SUCCEEDED, seq=1, result=RESULT, generated_audio_seconds=1.0),
        event(EventType.FAILED, seq=1, error=ErrorDetail("UNAVAILABLE", "PROVIDER_ERROR", "x")),
        event(EventType.CANCELLED, seq=1),
    ],
    ids=lambda e: f"{e.type.value}-{e.attempt}",
)
def test_apply_event_never_mutates_its_input(ev: JobEvent) -> None:
    job = fresh()
    job.usage.characters = 5
    before = frozen(job)
    result = applied(apply(job, Run(), ev))
    assert frozen(job) == before
    assert result.job is not job
    # And mutating the result does not reach back into the input.
    result.job.request.target_language = "zz"
    assert job.request.target_language == "fr"


# -- apply_event: the rules, in the order they are checked -------------------------------

# 1. A terminal job never changes again.


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
@pytest.mark.parametrize("type", list(EventType), ids=lambda t: t.value)
@pytest.mark.parametrize(
    ("attempt", "run_id"),
    [(1, "run-a"), (2, "run-a"), (2, "run-b"), (3, "run-c")],
    ids=["older", "same-run", "other-run", "newer"],
)
def test_terminal_jobs_ignore_every_event(
    state: pb.Job.State.ValueType, type: EventType, attempt: int, run_id: str
) -> None:
    job = job_in(state, attempt=2)
    before = frozen(job)
    ev = any_event(type, attempt=attempt, run_id=run_id, seq=99)
    run = Run(attempt=2, run_id="run-a", event_seq=3)
    assert ignored_why(apply(job, run, ev)) == Why.JOB_TERMINAL
    assert frozen(job) == before


# 2. Fencing by attempt.


@pytest.mark.parametrize("type", list(EventType), ids=lambda t: t.value)
@pytest.mark.parametrize("run_id", ["run-a", "run-z", ""], ids=["holder", "other", "legacy"])
def test_event_from_an_older_attempt_is_ignored(type: EventType, run_id: str) -> None:
    job = job_in(State.STATE_RUNNING, attempt=3)
    run = Run(attempt=3, run_id="run-a", event_seq=1, lease_expires=NOW + 5)
    # Even a seq far beyond the current run's does not get through, nor the run id
    # that holds the newer attempt.
    ev = any_event(type, attempt=2, run_id=run_id, seq=1000)
    assert ignored_why(apply(job, run, ev)) == Why.STALE_ATTEMPT


@pytest.mark.parametrize("attempt", [0, 1])
def test_an_attempt_older_than_the_issued_one_is_stale_even_before_anyone_claimed_it(
    attempt: int,
) -> None:
    # Attempt 2 was issued (a retry); nobody reported on it yet.
    job = job_in(State.STATE_QUEUED, attempt=1)
    ev = event(EventType.STARTED, attempt=attempt, seq=1)
    assert ignored_why(apply(job, Run(attempt=2), ev)) == Why.STALE_ATTEMPT


def test_an_event_of_attempt_zero_is_stale_on_a_new_job() -> None:
    # The database issues attempt 1 at submit; 0 is nobody's.
    assert ignored_why(apply(fresh(), Run(), event(EventType.STARTED, attempt=0))) == (
        Why.STALE_ATTEMPT
    )


# 3. Fencing by run.


@pytest.mark.parametrize("type", list(EventType), ids=lambda t: t.value)
@pytest.mark.parametrize("run_id", ["run-b", ""], ids=["other", "legacy"])
def test_another_run_of_a_claimed_attempt_is_ignored(type: EventType, run_id: str) -> None:
    job, run = started(run_id="run-a")
    # Even with a seq the holder has not reached.
    ev = any_event(type, run_id=run_id, seq=50)
    assert ignored_why(apply(job, run, ev)) == Why.OTHER_RUN


def test_the_first_applied_event_claims_the_attempt_for_its_run() -> None:
    # The same message delivered twice: two runs of attempt 1.
    job, run = fresh(), Run()
    job, run = step(job, run, event(EventType.STARTED, run_id="run-b", seq=1, worker_id="w-b"))
    assert run.run_id == "run-b"
    late = event(EventType.STARTED, run_id="run-a", seq=1, worker_id="w-a")
    assert ignored_why(apply(job, run, late)) == Why.OTHER_RUN
    job, run = step(job, run, event(EventType.PROGRESS, run_id="run-b", seq=2, worker_id="w-b"))
    assert job.worker_id == "w-b"


def test_an_issued_attempt_is_claimed_by_whichever_run_reports_first() -> None:
    job, run = started(run_id="run-a")
    job, run = step(job, run, event(EventType.RETRYING, run_id="run-a", seq=2))
    assert run == Run(attempt=2)
    job, run = step(job, run, event(EventType.STARTED, attempt=2, run_id="run-x", seq=1))
    assert run.run_id == "run-x"
    ev = event(EventType.STARTED, attempt=2, run_id="run-y", seq=1)
    assert ignored_why(apply(job, run, ev)) == Why.OTHER_RUN


def test_events_without_a_run_id_claim_the_attempt_for_the_empty_id() -> None:
    """Workers from before runs had ids: their attempt is fenced by seq, as before,
    and a run with an id cannot report on it too."""
    job, run = fresh(), Run()
    job, run = step(job, run, event(EventType.STARTED, run_id="", seq=1))
    assert run == Run(attempt=1, run_id="", event_seq=1, lease_expires=NOW + 30)
    assert run.claimed
    assert ignored_why(apply(job, run, event(EventType.PROGRESS, run_id="", seq=1))) == (
        Why.DUPLICATE
    )
    job, run = step(job, run, event(EventType.PROGRESS, run_id="", seq=2, progress=0.5))
    assert run.run_id == ""
    assert job.progress == 0.5
    newer = event(EventType.PROGRESS, run_id="run-b", seq=3, progress=0.9)
    assert ignored_why(apply(job, run, newer)) == Why.OTHER_RUN
    # And its renewals tell it to stop.
    ref = RunRef(JOB_ID, 1, "run-b")
    renewed = jobstate.renew(job.state, run, ref, now=NOW, policy=POLICY)
    assert ignored_why(renewed) == Why.OTHER_RUN


# 4. Idempotency and order within a run.


@pytest.mark.parametrize("seq", [0, 1, 4, 5])
def test_duplicate_or_late_seq_in_the_same_run_is_ignored(seq: int) -> None:
    job = job_in(State.STATE_RUNNING, attempt=2)
    run = Run(attempt=2, run_id="run-a", event_seq=5, lease_expires=NOW + 10)
    ev = event(EventType.PROGRESS, attempt=2, run_id="run-a", seq=seq, progress=0.9)
    assert ignored_why(apply(job, run, ev)) == Why.DUPLICATE


def test_next_seq_in_the_same_run_is_applied_even_with_a_gap() -> None:
    job = job_in(State.STATE_RUNNING, attempt=2)
    run = Run(attempt=2, run_id="run-a", event_seq=5, lease_expires=NOW + 10)
    result = applied(apply(job, run, event(EventType.PROGRESS, attempt=2, seq=9)))
    assert result.run == replace(run, event_seq=9, lease_expires=NOW + 30)


def test_redelivered_duplicate_after_apply_is_ignored() -> None:
    ev = event(EventType.STARTED, seq=1)
    first = applied(apply(fresh(), Run(), ev))
    assert ignored_why(apply(first.job, first.run, ev)) == Why.DUPLICATE


# 5. A newer attempt than the one issued is applied and claims that attempt.


@pytest.mark.parametrize("seq", [1, 50])
def test_newer_attempt_resets_the_seq_window_and_claims_it(seq: int) -> None:
    job = job_in(State.STATE_RUNNING, attempt=1, sequence=60)
    run = Run(attempt=1, run_id="run-a", event_seq=70, lease_expires=NOW - 100)
    ev = event(EventType.STARTED, attempt=2, run_id="run-b", seq=seq, worker_id="worker-b")
    result = applied(apply(job, run, ev))

    assert result.run == Run(attempt=2, run_id="run-b", event_seq=seq, lease_expires=NOW + 30)
    assert result.job.attempt == 2
    assert result.job.worker_id == "worker-b"
    assert result.job.state == State.STATE_RUNNING
    assert result.job.sequence == 61
    # The attempt is now the claiming run's.
    other = event(EventType.PROGRESS, attempt=2, run_id="run-c", seq=seq + 1)
    assert ignored_why(apply(result.job, result.run, other)) == Why.OTHER_RUN
    older = event(EventType.PROGRESS, attempt=1, run_id="run-a", seq=71)
    assert ignored_why(apply(result.job, result.run, older)) == Why.STALE_ATTEMPT


def test_newer_attempt_can_skip_ahead_by_more_than_one() -> None:
    job = job_in(State.STATE_QUEUED, attempt=1)
    result = applied(apply(job, Run(attempt=2), event(EventType.STARTED, attempt=4, seq=1)))
    assert result.job.attempt == 4
    assert result.run.attempt == 4


@pytest.mark.parametrize(
    ("state", "run", "ev", "why"),
    [
        # terminal before stale
        (
            State.STATE_CANCELLED,
            Run(attempt=3, run_id="run-a", event_seq=5),
            event(EventType.PROGRESS, attempt=1, run_id="run-z", seq=1),
            Why.JOB_TERMINAL,
        ),
        # stale before other run and duplicate
        (
            State.STATE_RUNNING,
            Run(attempt=3, run_id="run-a", event_seq=5, lease_expires=NOW),
            event(EventType.PROGRESS, attempt=2, run_id="run-z", seq=1),
            Why.STALE_ATTEMPT,
        ),
        # other run before duplicate
        (
            State.STATE_RUNNING,
            Run(attempt=3, run_id="run-a", event_seq=5, lease_expires=NOW),
            event(EventType.PROGRESS, attempt=3, run_id="run-z", seq=2),
            Why.OTHER_RUN,
        ),
    ],
    ids=["terminal>stale", "stale>other-run", "other-run>duplicate"],
)
def test_the_rules_are_checked_in_order(
    state: pb.Job.State.ValueType, run: Run, ev: JobEvent, why: Why
) -> None:
    assert ignored_why(apply(job_in(state, attempt=3), run, ev)) == why


# -- leases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type", "lease"),
    [
        (EventType.STARTED, T0 + 500 + 7.5),
        (EventType.PROGRESS, T0 + 500 + 7.5),
        (EventType.RETRYING, 0.0),
        (EventType.SUCCEEDED, 0.0),
        (EventType.FAILED, 0.0),
        (EventType.CANCELLED, 0.0),
    ],
    ids=lambda v: v.value if isinstance(v, EventType) else None,
)
def test_an_applied_event_leases_the_run_iff_the_job_is_running(
    type: EventType, lease: float
) -> None:
    # The lease is dated by the gateway's clock, not the event's time.
    policy = AttemptPolicy(lease_seconds=7.5, max_attempts=5)
    job = job_in(State.STATE_RUNNING, attempt=2)
    run = Run(attempt=2, run_id="run-a", event_seq=1, lease_expires=T0 + 400)
    ev = any_event(type, attempt=2, seq=2, time=T0 + 10)
    result = applied(apply(job, run, ev, now=T0 + 500, policy=policy))
    assert result.run.lease_expires == lease
    assert (lease > 0) == (result.job.state == State.STATE_RUNNING)


def test_a_retry_at_the_last_attempt_leaves_no_lease() -> None:
    job, run = started(attempt=5)
    result = applied(apply(job, run, event(EventType.RETRYING, attempt=5, seq=2)))
    assert result.job.state == State.STATE_FAILED
    assert result.run.lease_expires == 0.0


# -- RETRYING -------------------------------------------------------------------------------


def test_retrying_hands_the_job_back_to_the_queue() -> None:
    job, run = started()
    job, run = step(job, run, event(EventType.PROGRESS, seq=2, progress=0.6))
    result = applied(apply(job, run, event(EventType.RETRYING, seq=3, time=T0 + 12)))
    new = result.job

    assert new.state == State.STATE_QUEUED
    assert new.stage == "retrying"
    assert new.progress == 0.0
    assert new.attempt == 1
    assert new.sequence == job.sequence + 1
    assert new.update_time == ts(T0 + 12)
    assert new.start_time == job.start_time
    assert not new.HasField("end_time")
    assert not new.HasField("error")
    assert not jobstate.is_terminal(new)
    # The next attempt is issued, unclaimed, and dispatched.
    assert result.run == Run(attempt=2)
    assert result.dispatch == Dispatch(attempt=2, not_before=NOW)


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        (0.0, 0.0),
        (2.5, 2.5),
        (600.0, 600.0),
        (-3.0, 0.0),
        (-0.0, 0.0),
        (math.nan, 0.0),
        (math.inf, 0.0),
        (-math.inf, 0.0),
    ],
)
def test_retrying_dispatches_the_next_attempt_after_its_backoff(
    retry_after: float, delay: float
) -> None:
    job, run = started(attempt=3)
    ev = event(EventType.RETRYING, attempt=3, seq=2, retry_after=retry_after)
    result = applied(apply(job, run, ev, now=T0 + 500))
    assert result.dispatch == Dispatch(attempt=4, not_before=T0 + 500 + delay)
    assert result.run == Run(attempt=4)


def test_retrying_of_a_newer_attempt_dispatches_the_one_after_it() -> None:
    job, run = started(attempt=1)
    ev = event(EventType.RETRYING, attempt=3, run_id="run-c", seq=1)
    result = applied(apply(job, run, ev))
    assert result.dispatch == Dispatch(attempt=4, not_before=NOW)
    assert result.run == Run(attempt=4)
    assert result.job.attempt == 3


def test_after_a_retry_the_retried_run_is_stale_and_the_next_attempt_is_open() -> None:
    job, run = started()
    job, run = step(job, run, event(EventType.RETRYING, seq=2))
    late = event(EventType.PROGRESS, seq=3, progress=0.9)
    assert ignored_why(apply(job, run, late)) == Why.STALE_ATTEMPT
    job, run = step(job, run, event(EventType.STARTED, attempt=2, run_id="run-b", seq=1))
    assert job.state == State.STATE_RUNNING
    assert run == Run(attempt=2, run_id="run-b", event_seq=1, lease_expires=NOW + 30)


@pytest.mark.parametrize(
    ("attempt", "max_attempts"), [(5, 5), (1, 1), (7, 5)], ids=["last", "only", "beyond"]
)
def test_retrying_at_the_last_attempt_fails_the_job(attempt: int, max_attempts: int) -> None:
    policy = AttemptPolicy(lease_seconds=30.0, max_attempts=max_attempts)
    job, run = started(attempt=attempt)
    job.usage.characters = 12  # nothing is billed for a failed job
    ev = event(
        EventType.RETRYING,
        attempt=attempt,
        seq=2,
        time=T0 + 40,
        retry_after=5.0,
        error=ErrorDetail("UNAVAILABLE", "PROVIDER_ERROR", "provider timed out"),
    )
    result = applied(apply(job, run, ev, policy=policy))
    new = result.job

    assert result.dispatch is None
    assert result.run == Run(attempt=attempt, run_id="run-a", event_seq=2, lease_expires=0.0)
    assert new.state == State.STATE_FAILED
    assert new.stage == "failed"
    assert new.attempt == attempt
    assert new.sequence == job.sequence + 1
    assert new.end_time == ts(T0 + 40)
    assert new.error.code == code_pb2.UNAVAILABLE
    assert reason(new) == errors.Reason.MAX_DELIVERIES_EXCEEDED
    # The worker's own account of the failure is kept.
    assert new.error.message == (
        f"attempt {attempt} of {max_attempts} was handed back: provider timed out"
    )
    assert not new.HasField("usage")
    assert jobstate.is_terminal(new)


def test_retrying_at_the_last_attempt_without_detail() -> None:
    job, run = started(attempt=5)
    new = applied(apply(job, run, event(EventType.RETRYING, attempt=5, seq=2))).job
    assert new.state == State.STATE_FAILED
    assert new.error.message == "attempt 5 of 5 was handed back"


def test_retrying_one_before_the_last_attempt_still_dispatches() -> None:
    job, run = started(attempt=4)
    result = applied(apply(job, run, event(EventType.RETRYING, attempt=4, seq=2)))
    assert result.job.state == State.STATE_QUEUED
    assert result.dispatch == Dispatch(attempt=5, not_before=NOW)


# -- renew -----------------------------------------------------------------------------------

HOLDER = Run(attempt=3, run_id="run-a", event_seq=4, lease_expires=NOW + 5)


@pytest.mark.parametrize(
    ("state", "run", "ref", "why"),
    [
        *[(state, HOLDER, RunRef(JOB_ID, 3, "run-a"), Why.JOB_TERMINAL) for state in TERMINAL],
        (State.STATE_FAILED, HOLDER, RunRef(JOB_ID, 1, "run-z"), Why.JOB_TERMINAL),
        (State.STATE_RUNNING, HOLDER, RunRef(JOB_ID, 2, "run-a"), Why.STALE_ATTEMPT),
        (State.STATE_RUNNING, HOLDER, RunRef(JOB_ID, 2, "run-z"), Why.STALE_ATTEMPT),
        (State.STATE_QUEUED, Run(attempt=3), RunRef(JOB_ID, 2, "run-a"), Why.STALE_ATTEMPT),
        (State.STATE_RUNNING, HOLDER, RunRef(JOB_ID, 4, "run-a"), Why.UNKNOWN_ATTEMPT),
        (State.STATE_QUEUED, Run(attempt=3), RunRef(JOB_ID, 4, "run-a"), Why.UNKNOWN_ATTEMPT),
        (State.STATE_QUEUED, Run(attempt=3), RunRef(JOB_ID, 3, "run-a"), Why.NOT_CLAIMED),
        (State.STATE_RUNNING, HOLDER, RunRef(JOB_ID, 3, "run-b"), Why.OTHER_RUN),
        (State.STATE_RUNNING, HOLDER, RunRef(JOB_ID, 3, ""), Why.OTHER_RUN),
        (State.STATE_QUEUED, HOLDER, RunRef(JOB_ID, 3, "run-a"), Why.NOT_RUNNING),
    ],
    ids=[
        "succeeded",
        "failed",
        "cancelled",
        "terminal-before-stale",
        "stale-same-run-id",
        "stale-other-run",
        "stale-unclaimed",
        "unknown-attempt",
        "unknown-attempt-unclaimed",
        "not-claimed",
        "other-run",
        "other-run-legacy",
        "not-running",
    ],
)
def test_renew_ignores_all_but_the_run_holding_a_running_job(
    state: pb.Job.State.ValueType, run: Run, ref: RunRef, why: Why
) -> None:
    result = jobstate.renew(state, run, ref, now=NOW, policy=POLICY)
    assert ignored_why(result) == why


@pytest.mark.parametrize(
    ("why", "stop"),
    [
        (Why.JOB_TERMINAL, True),
        (Why.STALE_ATTEMPT, True),
        (Why.OTHER_RUN, True),
        # The run may still be the one: its first event is on its way, or it runs
        # an attempt this gateway has not seen yet.
        (Why.NOT_CLAIMED, False),
        (Why.UNKNOWN_ATTEMPT, False),
        (Why.NOT_RUNNING, False),
    ],
)
def test_renewals_that_tell_a_run_to_stop(why: Why, stop: bool) -> None:
    assert (why in SUPERSEDED) is stop


@pytest.mark.parametrize("lease_expires", [NOW + 5, NOW, NOW - 100], ids=["live", "now", "out"])
def test_renew_extends_the_holders_lease_from_now(lease_expires: float) -> None:
    # A lease that ran out but was not reclaimed yet is still the holder's.
    run = replace(HOLDER, lease_expires=lease_expires)
    policy = AttemptPolicy(lease_seconds=12.0, max_attempts=5)
    result = jobstate.renew(
        State.STATE_RUNNING, run, RunRef(JOB_ID, 3, "run-a"), now=NOW + 1, policy=policy
    )
    assert result == Run(attempt=3, run_id="run-a", event_seq=4, lease_expires=NOW + 13)


def test_a_renewal_after_the_attempt_was_taken_back_is_superseded() -> None:
    job, run = started(attempt=2)
    reclaimed = applied(jobstate.reclaim(job, run, now=run.lease_expires, policy=POLICY))
    ref = RunRef(JOB_ID, 2, "run-a")
    result = jobstate.renew(reclaimed.job.state, reclaimed.run, ref, now=NOW, policy=POLICY)
    assert ignored_why(result) == Why.STALE_ATTEMPT
    assert Why.STALE_ATTEMPT in SUPERSEDED


# -- reclaim -----------------------------------------------------------------------------------


def running_job(*, attempt: int = 2, lease_expires: float = NOW - 1) -> tuple[pb.Job, Run]:
    job = job_in(State.STATE_RUNNING, attempt=attempt, sequence=7)
    job.stage = "mixing"
    job.progress = 0.7
    job.worker_id = "worker-a"
    job.start_time.CopyFrom(ts(T0 + 5))
    return job, Run(attempt=attempt, run_id="run-a", event_seq=4, lease_expires=lease_expires)


@pytest.mark.parametrize("lease_expires", [NOW + 0.5, NOW + 30], ids=["nearly-out", "fresh"])
def test_reclaim_leaves_a_live_lease_alone(lease_expires: float) -> None:
    job, run = running_job(lease_expires=lease_expires)
    assert ignored_why(jobstate.reclaim(job, run, now=NOW, policy=POLICY)) == Why.LEASE_LIVE


def test_reclaim_leaves_a_job_that_is_not_running_alone() -> None:
    job = job_in(State.STATE_QUEUED, attempt=1)
    result = jobstate.reclaim(job, Run(attempt=2), now=NOW, policy=POLICY)
    assert ignored_why(result) == Why.NOT_RUNNING


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
def test_reclaim_leaves_a_terminal_job_alone(state: pb.Job.State.ValueType) -> None:
    job = job_in(state, attempt=2)
    run = Run(attempt=2, run_id="run-a", event_seq=4, lease_expires=NOW - 100)
    assert ignored_why(jobstate.reclaim(job, run, now=NOW, policy=POLICY)) == Why.JOB_TERMINAL


@pytest.mark.parametrize("lease_expires", [NOW, NOW - 1, 0.0], ids=["just-out", "out", "none"])
def test_reclaim_dispatches_the_next_attempt_at_once(lease_expires: float) -> None:
    job, run = running_job(attempt=2, lease_expires=lease_expires)
    before = frozen(job)
    result = applied(jobstate.reclaim(job, run, now=NOW, policy=POLICY))
    new = result.job

    assert result.dispatch == Dispatch(attempt=3, not_before=NOW)
    assert result.run == Run(attempt=3)
    assert new.state == State.STATE_QUEUED
    assert new.stage == "retrying"
    assert new.progress == 0.0
    assert new.sequence == job.sequence + 1
    assert new.update_time == ts(NOW)
    assert new.start_time == ts(T0 + 5)
    assert new.attempt == 2  # the attempt that last reported, until the next one does
    assert new.worker_id == "worker-a"
    assert not new.HasField("end_time")
    assert not new.HasField("error")
    assert frozen(job) == before


def test_after_a_reclaim_the_silent_run_is_stale() -> None:
    job, run = running_job(attempt=2)
    reclaimed = applied(jobstate.reclaim(job, run, now=NOW, policy=POLICY))
    late = event(EventType.SUCCEEDED, attempt=2, run_id="run-a", seq=5, result=RESULT)
    assert ignored_why(apply(reclaimed.job, reclaimed.run, late)) == Why.STALE_ATTEMPT


@pytest.mark.parametrize(
    ("attempt", "max_attempts"), [(5, 5), (1, 1), (6, 5)], ids=["last", "only", "beyond"]
)
def test_reclaim_after_the_last_attempt_fails_the_job(attempt: int, max_attempts: int) -> None:
    policy = AttemptPolicy(lease_seconds=30.0, max_attempts=max_attempts)
    job, run = running_job(attempt=attempt)
    job.usage.generated_audio_seconds = 4.0
    result = applied(jobstate.reclaim(job, run, now=NOW, policy=policy))
    new = result.job

    assert result.dispatch is None
    assert result.run == Run(attempt=attempt)
    assert new.state == State.STATE_FAILED
    assert new.stage == "failed"
    assert new.sequence == job.sequence + 1
    assert new.end_time == ts(NOW)
    assert new.update_time == ts(NOW)
    assert new.error.code == code_pb2.UNAVAILABLE
    assert reason(new) == errors.Reason.MAX_DELIVERIES_EXCEEDED
    assert new.error.message == (
        f"no worker completed the job in {attempt} attempts "
        "(the last stopped reporting for over 30 s)"
    )
    assert not new.HasField("usage")
    assert jobstate.is_terminal(new)


# -- redispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 4])
def test_redispatch_issues_the_next_attempt_of_a_queued_job_unchanged(attempt: int) -> None:
    job = job_in(State.STATE_QUEUED, attempt=attempt - 1)
    before = frozen(job)
    result = applied(jobstate.redispatch(job, Run(attempt=attempt), now=NOW))

    assert result.dispatch == Dispatch(attempt=attempt + 1, not_before=NOW)
    assert result.run == Run(attempt=attempt + 1)
    # No new version of the job: watchers see nothing.
    assert frozen(result.job) == before
    assert result.job.sequence == job.sequence


def test_after_a_redispatch_the_lost_attempt_is_stale() -> None:
    job = fresh()
    result = applied(jobstate.redispatch(job, Run(), now=NOW))
    found_late = event(EventType.STARTED, attempt=1, seq=1)
    assert ignored_why(apply(result.job, result.run, found_late)) == Why.STALE_ATTEMPT
    assert applied(apply(result.job, result.run, replace(found_late, attempt=2))).job.attempt == 2


@pytest.mark.parametrize(
    ("state", "run", "why"),
    [
        *[(state, Run(attempt=2), Why.JOB_TERMINAL) for state in TERMINAL],
        (State.STATE_RUNNING, Run(attempt=2, run_id="run-a", event_seq=1), Why.NOT_QUEUED),
        (State.STATE_QUEUED, Run(attempt=2, run_id="run-a", event_seq=1), Why.ALREADY_CLAIMED),
    ],
    ids=["succeeded", "failed", "cancelled", "running", "claimed"],
)
def test_redispatch_only_of_a_queued_unclaimed_job(
    state: pb.Job.State.ValueType, run: Run, why: Why
) -> None:
    job = job_in(state, attempt=2)
    assert ignored_why(jobstate.redispatch(job, run, now=NOW)) == why


# -- cancel and fail ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
def test_cancel_of_an_ended_job_raises(state: pb.Job.State.ValueType) -> None:
    job = job_in(state)
    before = frozen(job)
    with pytest.raises(JobAlreadyFinished) as info:
        jobstate.cancel(job, Run(), T0 + 100)
    assert info.value.job is job
    assert JOB_ID in str(info.value)
    assert State.Name(state) in str(info.value)
    assert frozen(job) == before


@pytest.mark.parametrize(
    ("state", "run"),
    [
        (State.STATE_QUEUED, Run(attempt=3)),
        (State.STATE_RUNNING, Run(attempt=2, run_id="run-a", event_seq=4, lease_expires=NOW)),
    ],
    ids=["queued", "running"],
)
def test_cancel_of_a_live_job(state: pb.Job.State.ValueType, run: Run) -> None:
    job = job_in(state, attempt=2, sequence=7)
    job.worker_id = "worker-a"
    before = frozen(job)
    result = jobstate.cancel(job, run, T0 + 100.5)
    new = result.job

    assert new.state == State.STATE_CANCELLED
    assert new.stage == "cancelled"
    assert new.sequence == 8
    assert new.end_time == ts(T0 + 100.5)
    assert new.update_time == ts(T0 + 100.5)
    assert new.attempt == 2
    assert new.worker_id == "worker-a"
    assert new.id == JOB_ID
    assert jobstate.is_terminal(new)
    assert frozen(job) == before
    # The run keeps its attempt and claim (its events are now ignored as terminal);
    # only the lease goes.
    assert result.run == replace(run, lease_expires=0.0)
    assert result.dispatch is None


def test_cancelled_job_ignores_later_worker_events() -> None:
    job, run = started()
    out = jobstate.cancel(job, run, T0 + 20)
    late = event(EventType.SUCCEEDED, seq=2, result=RESULT)
    assert ignored_why(apply(out.job, out.run, late)) == Why.JOB_TERMINAL


@pytest.mark.parametrize(
    ("state", "run"),
    [
        (State.STATE_QUEUED, Run(attempt=1)),
        (State.STATE_RUNNING, Run(attempt=1, run_id="run-a", event_seq=2, lease_expires=NOW)),
    ],
    ids=["queued", "running"],
)
def test_fail_of_a_live_job(state: pb.Job.State.ValueType, run: Run) -> None:
    job = job_in(state, sequence=4)
    job.usage.characters = 99
    before = frozen(job)
    result = jobstate.fail(
        job,
        run,
        T0 + 50,
        code=errors.Code.RESOURCE_EXHAUSTED,
        reason=errors.Reason.INVALID_JOB_MESSAGE,
        message="the job message cannot be published",
    )
    new = result.job

    assert new.state == State.STATE_FAILED
    assert new.stage == "failed"
    assert new.sequence == 5
    assert new.end_time == ts(T0 + 50)
    assert new.update_time == ts(T0 + 50)
    assert new.error.code == code_pb2.RESOURCE_EXHAUSTED == 8
    assert new.error.message == "the job message cannot be published"
    assert reason(new) == "INVALID_JOB_MESSAGE"
    assert not new.HasField("usage")
    assert frozen(job) == before
    assert result.run == replace(run, lease_expires=0.0)
    assert result.dispatch is None


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
def test_fail_of_an_ended_job_raises(state: pb.Job.State.ValueType) -> None:
    with pytest.raises(JobAlreadyFinished):
        jobstate.fail(
            job_in(state),
            Run(),
            T0,
            code=errors.Code.INTERNAL,
            reason=errors.Reason.INTERNAL,
            message="x",
        )


def test_fail_rejects_an_unknown_code_name() -> None:
    with pytest.raises(ValueError):
        # A peer's event carries the code as a string: an unknown one is refused at run time.
        jobstate.fail(
            fresh(),
            Run(),
            T0,
            code="NOT_A_CODE",  # type: ignore[arg-type]
            reason=errors.Reason.INTERNAL,
            message="x",
        )


# -- a realistic history --------------------------------------------------------------------


def test_sequence_counts_applied_changes_over_a_realistic_history() -> None:
    """Two runs of one attempt, a stalled worker, a reclaim, a retry, a lost message;
    only real changes count."""
    job, run, now = fresh(), Run(), NOW
    dispatches: list[Dispatch] = []

    def ev(attempt: int, run_id: str, seq: int, type: EventType, **kw: object) -> JobEvent:
        e = any_event(type, attempt=attempt, run_id=run_id, seq=seq, worker_id=f"w{run_id}")
        return replace(e, **kw)  # type: ignore[arg-type]

    history: list[tuple[str, JobEvent | float, Why | None]] = [
        ("event", ev(1, "a", 1, EventType.STARTED), None),
        ("event", ev(1, "a", 2, EventType.PROGRESS, progress=0.2), None),
        ("event", ev(1, "a", 2, EventType.PROGRESS, progress=0.2), Why.DUPLICATE),  # redelivered
        ("event", ev(1, "b", 1, EventType.STARTED), Why.OTHER_RUN),  # twice
        ("event", ev(1, "a", 4, EventType.PROGRESS, progress=0.4), None),
        ("event", ev(1, "a", 3, EventType.PROGRESS, progress=0.3), Why.DUPLICATE),  # late
        ("reclaim", 0.0, Why.LEASE_LIVE),
        ("wait", 31.0, None),  # worker a stalls past its lease
        ("reclaim", 0.0, None),
        ("event", ev(1, "a", 5, EventType.PROGRESS, progress=0.5), Why.STALE_ATTEMPT),
        ("event", ev(2, "c", 1, EventType.STARTED), None),
        ("event", ev(2, "c", 2, EventType.RETRYING, retry_after=5.0), None),
        ("wait", 60.0, None),
        ("redispatch", 0.0, None),  # attempt 3's message was lost
        ("event", ev(3, "d", 1, EventType.STARTED), Why.STALE_ATTEMPT),
        ("event", ev(4, "e", 1, EventType.STARTED), None),
        ("event", ev(4, "e", 2, EventType.PROGRESS, progress=0.9), None),
        ("event", ev(4, "e", 3, EventType.SUCCEEDED), None),
        ("event", ev(4, "e", 3, EventType.SUCCEEDED), Why.JOB_TERMINAL),
        ("event", ev(4, "e", 4, EventType.FAILED), Why.JOB_TERMINAL),
        ("reclaim", 0.0, Why.JOB_TERMINAL),
        ("redispatch", 0.0, Why.JOB_TERMINAL),
    ]
    changes = 0
    for i, (op, arg, why) in enumerate(history):
        result: Applied | Ignored
        if isinstance(arg, JobEvent):
            result = apply(job, run, replace(arg, time=now), now=now)
        elif op == "wait":
            now += arg
            continue
        elif op == "reclaim":
            result = jobstate.reclaim(job, run, now=now, policy=POLICY)
        else:
            result = jobstate.redispatch(job, run, now=now)
        if why is not None:
            assert ignored_why(result) == why, i
            continue
        out = applied(result)
        assert out.job.sequence - job.sequence == (0 if op == "redispatch" else 1), i
        changes += out.job.sequence - job.sequence
        if out.dispatch is not None:
            dispatches.append(out.dispatch)
        job, run = out.job, out.run

    assert dispatches == [
        Dispatch(2, NOW + 31),
        Dispatch(3, NOW + 31 + 5),
        Dispatch(4, NOW + 91),
    ]
    assert job.sequence == 1 + changes == 10
    assert job.state == State.STATE_SUCCEEDED
    assert job.attempt == 4
    assert job.worker_id == "we"
    assert job.start_time == ts(NOW)
    assert job.end_time == ts(NOW + 91)
    assert run == Run(attempt=4, run_id="e", event_seq=3, lease_expires=0.0)


# -- model-based test: random histories over the whole API ---------------------------------

MODEL_POLICY = AttemptPolicy(lease_seconds=30.0, max_attempts=4)
# What the test requires the histories to reach, over all seeds.
MODEL_OUTCOMES = {
    *(f"event:{t.value}" for t in EventType),
    "event:newer_attempt",
    "event:retry_dispatch",
    "event:retry_failed",
    *(f"event:{w}" for w in (Why.JOB_TERMINAL, Why.STALE_ATTEMPT, Why.OTHER_RUN, Why.DUPLICATE)),
    "renew:ok",
    *(
        f"renew:{w}"
        for w in (
            Why.JOB_TERMINAL,
            Why.STALE_ATTEMPT,
            Why.OTHER_RUN,
            Why.NOT_CLAIMED,
            Why.UNKNOWN_ATTEMPT,
        )
    ),
    "reclaim:dispatch",
    "reclaim:failed",
    *(f"reclaim:{w}" for w in (Why.JOB_TERMINAL, Why.NOT_RUNNING, Why.LEASE_LIVE)),
    "redispatch:dispatch",
    *(f"redispatch:{w}" for w in (Why.JOB_TERMINAL, Why.NOT_QUEUED)),
    "cancel:ok",
    "cancel:raised",
    "fail:ok",
}


@dataclass
class World:
    """The store's row (job and run) and what the workers and the bus have seen."""

    job: pb.Job
    run: Run = field(default_factory=Run)
    now: float = NOW
    changes: int = 0  # applied changes to the job
    claims: dict[int, str] = field(default_factory=dict)  # attempt -> run applied for it
    dispatched: list[int] = field(default_factory=lambda: [1])  # attempt 1 at submit
    sent: list[JobEvent] = field(default_factory=list)  # every event, for redeliveries
    seqs: dict[tuple[int, str], int] = field(default_factory=dict)  # last seq per run
    outcomes: Counter[str] = field(default_factory=Counter)


def random_event(rng: random.Random, w: World) -> JobEvent:
    if w.sent and rng.random() < 0.12:
        return rng.choice(w.sent)  # the bus delivers an event again
    attempt = max(1, w.run.attempt + rng.choice([-2, -1, 0, 0, 0, 0, 0, 0, 1]))
    run_id = f"{attempt}{rng.choice('aab')}"
    last = w.seqs.get((attempt, run_id), 0)
    seq = rng.randint(0, last) if last and rng.random() < 0.1 else last + rng.choice([1, 1, 2])
    w.seqs[(attempt, run_id)] = max(last, seq)
    type = rng.choices(list(EventType), weights=[4, 12, 3, 0.4, 0.4, 0.4])[0]
    ev = event(
        type,
        attempt=attempt,
        run_id=run_id,
        seq=seq,
        time=w.now - rng.choice([0, 0, 1, 3]),
        worker_id=f"w-{run_id}",
        stage=rng.choice(["", "synthesizing", "mixing"]),
        progress=math.nan if rng.random() < 0.05 else rng.uniform(-0.5, 1.5),
        result=RESULT if type is EventType.SUCCEEDED else None,
        error=(
            ErrorDetail(rng.choice(["INTERNAL", "UNAVAILABLE"]), "PROVIDER_ERROR", "x")
            if type in (EventType.FAILED, EventType.RETRYING) and rng.random() < 0.7
            else None
        ),
        generated_audio_seconds=rng.choice([0.0, 2.5]),
        characters=rng.choice([0, 40]),
        retry_after=rng.choice([0.0, 0.0, 2.5, -1.0, math.nan, math.inf]),
    )
    w.sent.append(ev)
    return ev


def expected_event_outcome(w: World, ev: JobEvent) -> Why | None:
    """The module's rules, restated: why `ev` is ignored, or None when it applies."""
    if jobstate.is_terminal(w.job):
        return Why.JOB_TERMINAL
    if ev.attempt < w.run.attempt:
        return Why.STALE_ATTEMPT
    if ev.attempt == w.run.attempt:
        if w.run.run_id and ev.run_id != w.run.run_id:
            return Why.OTHER_RUN
        if ev.seq <= w.run.event_seq:
            return Why.DUPLICATE
    return None


def check_event(w: World, ev: JobEvent, result: Applied | Ignored) -> str:
    why = expected_event_outcome(w, ev)
    if why is not None:
        assert ignored_why(result) == why
        return f"event:{why}"
    out = applied(result)
    new, policy = out.job, MODEL_POLICY
    assert new.attempt == ev.attempt
    assert new.worker_id == ev.worker_id
    assert new.update_time == ts(ev.time)
    assert 0.0 <= new.progress <= 1.0
    # At most one run ever gets events applied for an attempt.
    assert w.claims.setdefault(ev.attempt, ev.run_id) == ev.run_id
    label = f"event:{ev.type.value}"
    if ev.attempt > w.run.attempt:
        w.outcomes["event:newer_attempt"] += 1
    expected_state = {
        EventType.STARTED: State.STATE_RUNNING,
        EventType.PROGRESS: State.STATE_RUNNING,
        EventType.SUCCEEDED: State.STATE_SUCCEEDED,
        EventType.FAILED: State.STATE_FAILED,
        EventType.CANCELLED: State.STATE_CANCELLED,
    }
    if ev.type is EventType.RETRYING and ev.attempt < policy.max_attempts:
        retry_after = ev.retry_after if math.isfinite(ev.retry_after) else 0.0
        assert out.dispatch == Dispatch(ev.attempt + 1, w.now + max(0.0, retry_after))
        assert new.state == State.STATE_QUEUED
        assert new.stage == "retrying"
        assert new.progress == 0.0
        w.outcomes["event:retry_dispatch"] += 1
    elif ev.type is EventType.RETRYING:
        assert out.dispatch is None
        assert new.state == State.STATE_FAILED
        assert reason(new) == errors.Reason.MAX_DELIVERIES_EXCEEDED
        assert new.error.code == code_pb2.UNAVAILABLE
        if ev.error is not None:
            assert new.error.message.endswith(f": {ev.error.message}")
        w.outcomes["event:retry_failed"] += 1
    else:
        assert out.dispatch is None
        assert new.state == expected_state[ev.type]
    if out.dispatch is None:
        lease = w.now + policy.lease_seconds if new.state == State.STATE_RUNNING else 0.0
        assert out.run == Run(ev.attempt, ev.run_id, ev.seq, lease)
    if new.state in (State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED):
        assert new.HasField("end_time")
    return label


def expected_renew(w: World, ref: RunRef) -> Why | None:
    state, run = w.job.state, w.run
    if jobstate.is_terminal(w.job):
        return Why.JOB_TERMINAL
    if ref.attempt < run.attempt:
        return Why.STALE_ATTEMPT
    if ref.attempt > run.attempt:
        return Why.UNKNOWN_ATTEMPT
    if not run.claimed:
        return Why.NOT_CLAIMED
    if ref.run_id != run.run_id:
        return Why.OTHER_RUN
    if state != State.STATE_RUNNING:
        return Why.NOT_RUNNING
    return None


def random_step(rng: random.Random, w: World) -> None:
    job, run = w.job, w.run
    before, was_terminal = frozen(job), jobstate.is_terminal(job)
    op = rng.choices(
        ["event", "renew", "reclaim", "redispatch", "cancel", "fail"],
        weights=[24, 5, 4, 2, 0.5, 0.3],
    )[0]
    result: Applied | Ignored
    source = op
    if op == "event":
        ev = random_event(rng, w)
        result = jobstate.apply_event(job, run, ev, now=w.now, policy=MODEL_POLICY)
        label = check_event(w, ev, result)
        if ev.type is EventType.RETRYING:
            source = "retrying"
    elif op == "renew":
        if rng.random() < 0.5:
            ref = RunRef(JOB_ID, run.attempt, run.run_id or f"{run.attempt}a")
        else:
            attempt = max(1, run.attempt + rng.choice([-1, 0, 0, 1]))
            ref = RunRef(JOB_ID, attempt, f"{attempt}{rng.choice('ab')}")
        renewed = jobstate.renew(job.state, run, ref, now=w.now, policy=MODEL_POLICY)
        why = expected_renew(w, ref)
        if why is None:
            assert renewed == replace(run, lease_expires=w.now + MODEL_POLICY.lease_seconds)
            assert isinstance(renewed, Run)
            w.run = renewed
            label = "renew:ok"
        else:
            assert ignored_why(renewed) == why
            label = f"renew:{why}"
        assert frozen(job) == before
        w.outcomes[label] += 1
        check_invariants(w, run)
        return
    elif op == "reclaim":
        result = jobstate.reclaim(job, run, now=w.now, policy=MODEL_POLICY)
        if was_terminal:
            assert ignored_why(result) == Why.JOB_TERMINAL
        elif job.state != State.STATE_RUNNING:
            assert ignored_why(result) == Why.NOT_RUNNING
        elif run.lease_expires > w.now:
            assert ignored_why(result) == Why.LEASE_LIVE
        elif run.attempt >= MODEL_POLICY.max_attempts:
            out = applied(result)
            assert out.dispatch is None
            assert out.job.state == State.STATE_FAILED
            assert reason(out.job) == errors.Reason.MAX_DELIVERIES_EXCEEDED
        else:
            out = applied(result)
            assert out.dispatch == Dispatch(run.attempt + 1, w.now)
            assert out.job.state == State.STATE_QUEUED
            assert out.job.stage == "retrying"
            assert out.job.progress == 0.0
            assert out.job.update_time == ts(w.now)
        if isinstance(result, Ignored):
            label = f"reclaim:{result.why}"
        else:
            label = "reclaim:dispatch" if result.dispatch else "reclaim:failed"
    elif op == "redispatch":
        result = jobstate.redispatch(job, run, now=w.now)
        if was_terminal:
            assert ignored_why(result) == Why.JOB_TERMINAL
        elif job.state != State.STATE_QUEUED:
            assert ignored_why(result) == Why.NOT_QUEUED
        elif run.claimed:
            assert ignored_why(result) == Why.ALREADY_CLAIMED
        else:
            out = applied(result)
            assert out.dispatch == Dispatch(run.attempt + 1, w.now)
            assert frozen(out.job) == before
        label = "redispatch:" + (str(result.why) if isinstance(result, Ignored) else "dispatch")
    else:
        if was_terminal:
            with pytest.raises(JobAlreadyFinished):
                if op == "cancel":
                    jobstate.cancel(job, run, w.now)
                else:
                    jobstate.fail(
                        job,
                        run,
                        w.now,
                        code=errors.Code.INTERNAL,
                        reason=errors.Reason.INTERNAL,
                        message="x",
                    )
            assert frozen(job) == before
            w.outcomes[f"{op}:raised"] += 1
            return
        if op == "cancel":
            result = jobstate.cancel(job, run, w.now)
            assert result.job.state == State.STATE_CANCELLED
        else:
            result = jobstate.fail(
                job,
                run,
                w.now,
                code=errors.Code.UNAVAILABLE,
                reason=errors.Reason.BUS_UNAVAILABLE,
                message="x",
            )
            assert result.job.state == State.STATE_FAILED
        assert result.run == replace(run, lease_expires=0.0)
        label = f"{op}:ok"

    w.outcomes[label] += 1
    # Nothing changes its input.
    assert frozen(job) == before
    if isinstance(result, Ignored):
        return
    out = result
    # A terminal job never changes.
    assert not was_terminal
    # The sequence moves by exactly one per change to the job (a redispatch is none).
    grew = out.job.sequence - job.sequence
    if op == "redispatch":
        assert grew == 0
        assert frozen(out.job) == before
    else:
        assert grew == 1
        w.changes += 1
    # A dispatch is the attempt after the one given up on, only from a retry, a
    # reclaim or a redispatch; it is issued as the (unclaimed) run, and no attempt
    # is ever dispatched twice.
    if out.dispatch is not None:
        assert source in ("retrying", "reclaim", "redispatch")
        # (A retry of an attempt newer than the issued one, rule 5, gives up on that.)
        given_up = out.job.attempt if source == "retrying" else run.attempt
        assert out.dispatch.attempt == given_up + 1
        assert out.run == Run(attempt=out.dispatch.attempt)
        assert out.dispatch.attempt > w.dispatched[-1]
        assert out.dispatch.attempt not in w.claims
        assert out.dispatch.not_before >= w.now
        w.dispatched.append(out.dispatch.attempt)
    w.job, w.run = out.job, out.run
    check_invariants(w, run)


def check_invariants(w: World, previous: Run) -> None:
    job, run = w.job, w.run
    assert run.attempt >= previous.attempt
    assert job.attempt <= run.attempt
    assert job.sequence == 1 + w.changes
    # A lease is set iff the job is RUNNING (and then it was dated by a real clock).
    assert (run.lease_expires > 0) == (job.state == State.STATE_RUNNING)
    # RUNNING means a run holds the attempt; QUEUED means the issued attempt is open.
    if job.state == State.STATE_RUNNING:
        assert run.run_id
    if job.state == State.STATE_QUEUED:
        assert (run.run_id, run.event_seq) == ("", 0)
    # Usage is only ever reported on a succeeded job.
    if job.HasField("usage"):
        assert job.state == State.STATE_SUCCEEDED
    if job.state == State.STATE_FAILED:
        assert job.HasField("error")
        assert not job.HasField("usage")


def random_history(seed: int) -> World:
    rng = random.Random(seed)
    w = World(fresh())
    after_end = 0  # steps tried on the terminal job
    for _ in range(rng.randint(1, 150)):
        w.now += rng.choice([0, 0, 1, 2, 5, 10, 31])
        random_step(rng, w)
        after_end += jobstate.is_terminal(w.job)
        if after_end > 8:
            break
    return w


SEEDS = range(250)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_histories_keep_the_invariants(seed: int) -> None:
    random_history(seed)


def test_random_histories_reach_every_outcome() -> None:
    """The generator is not vacuous: over the seeds, every rule and branch is exercised."""
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        seen += random_history(seed).outcomes
    assert MODEL_OUTCOMES - set(seen) == set()
