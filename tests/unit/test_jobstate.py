"""The job state machine (dubbing.jobstate): transitions, fencing, idempotency."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import google.rpc.code_pb2 as code_pb2
import pytest
from google.protobuf import timestamp_pb2

from dubbing import errors, jobstate
from dubbing.bus import TERMINAL_EVENTS, ErrorDetail, EventType, JobEvent, ResultInfo
from dubbing.jobstate import Applied, Ignored, JobAlreadyFinished, State
from dubbing.v1 import dubbing_pb2 as pb

JOB_ID = "0b7f3c9e-8a41-4e52-9c1d-2f6a5b8e7d10"
# Whole and half seconds near this base are exact in float nanoseconds.
T0 = 1_700_000_000.0
TERMINAL = (State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED)
NON_TERMINAL = (State.STATE_QUEUED, State.STATE_RUNNING)

RESULT = ResultInfo(
    artifact=f"{JOB_ID}/attempt-1",
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
    seq: int = 1,
    time: float = T0 + 10,
    worker_id: str = "worker-a",
    stage: str = "",
    progress: float = 0.0,
    result: ResultInfo | None = None,
    error: ErrorDetail | None = None,
    generated_audio_seconds: float = 0.0,
    characters: int = 0,
) -> JobEvent:
    return JobEvent(
        job_id=JOB_ID,
        attempt=attempt,
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
    )


def ts(seconds: float) -> timestamp_pb2.Timestamp:
    whole = int(seconds)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=round((seconds - whole) * 1e9))


def applied(result: Applied | Ignored) -> pb.Job:
    assert isinstance(result, Applied), result
    return result.job


def ignored_why(result: Applied | Ignored) -> str:
    assert isinstance(result, Ignored), result
    return result.why


def job_in(state: pb.Job.State.ValueType, *, attempt: int = 1, sequence: int = 7) -> pb.Job:
    job = fresh()
    job.state = state
    job.attempt = attempt
    job.sequence = sequence
    return job


def any_event(type: EventType, *, attempt: int, seq: int) -> JobEvent:
    """A well-formed event of `type` (succeeded carries a result, failed an error)."""
    return event(
        type,
        attempt=attempt,
        seq=seq,
        result=RESULT if type is EventType.SUCCEEDED else None,
        error=ErrorDetail("INTERNAL", "INTERNAL", "boom") if type is EventType.FAILED else None,
    )


# -- new_job ------------------------------------------------------------------------


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


# -- single transitions ---------------------------------------------------------------


def test_started_makes_the_job_running() -> None:
    job = fresh()
    result = jobstate.apply_event(
        job, 0, event(EventType.STARTED, attempt=1, seq=1, stage="synthesizing", worker_id="w-7")
    )

    assert isinstance(result, Applied)
    assert result.event_seq == 1
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
    new = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, stage="")))
    assert new.stage == "queued"


def test_start_time_is_set_once() -> None:
    job = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, seq=1, time=T0 + 10)))
    job = applied(
        jobstate.apply_event(job, 1, event(EventType.PROGRESS, seq=2, time=T0 + 20, progress=0.5))
    )
    # A second attempt starting later does not move start_time either.
    job = applied(
        jobstate.apply_event(job, 2, event(EventType.STARTED, attempt=2, seq=1, time=T0 + 30))
    )

    assert job.start_time == ts(T0 + 10)
    assert job.update_time == ts(T0 + 30)
    assert job.attempt == 2


def test_progress_updates_stage_and_progress() -> None:
    job = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, seq=1)))
    new = applied(
        jobstate.apply_event(
            job, 1, event(EventType.PROGRESS, seq=2, stage="mixing", progress=0.4, time=T0 + 11)
        )
    )
    assert new.state == State.STATE_RUNNING
    assert new.stage == "mixing"
    assert new.progress == pytest.approx(0.4)
    assert new.update_time == ts(T0 + 11)
    assert new.sequence == job.sequence + 1


def test_progress_as_first_event_also_starts_the_job() -> None:
    new = applied(jobstate.apply_event(fresh(), 0, event(EventType.PROGRESS, progress=0.1)))
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
        (float("inf"), 1.0),
        (float("-inf"), 0.0),
    ],
)
def test_progress_is_clamped_to_unit_interval(reported: float, stored: float) -> None:
    new = applied(jobstate.apply_event(fresh(), 0, event(EventType.PROGRESS, progress=reported)))
    assert new.progress == stored


def test_retrying_hands_the_job_back_to_the_queue() -> None:
    job = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, seq=1)))
    job = applied(jobstate.apply_event(job, 1, event(EventType.PROGRESS, seq=2, progress=0.6)))
    new = applied(jobstate.apply_event(job, 2, event(EventType.RETRYING, seq=3, time=T0 + 12)))

    assert new.state == State.STATE_QUEUED
    assert new.stage == "retrying"
    assert new.progress == 0.0
    assert new.attempt == 1
    assert new.update_time == ts(T0 + 12)
    assert new.start_time == job.start_time
    assert not new.HasField("end_time")
    assert not jobstate.is_terminal(new)


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
    new = applied(jobstate.apply_event(fresh(), 0, ev))
    assert new.result.format == fmt


def test_succeeded_records_result_usage_and_end() -> None:
    job = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, seq=1)))
    job = applied(jobstate.apply_event(job, 1, event(EventType.PROGRESS, seq=2, progress=0.7)))
    ev = event(
        EventType.SUCCEEDED,
        seq=3,
        time=T0 + 60.5,
        result=RESULT,
        generated_audio_seconds=12.5,
        characters=321,
    )
    result = jobstate.apply_event(job, 2, ev)

    assert isinstance(result, Applied)
    assert result.event_seq == 3
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
    assert new.usage.generated_audio_seconds == 12.5
    assert new.usage.characters == 321
    assert not new.HasField("error")
    assert jobstate.is_terminal(new)


def test_succeeded_without_result_is_rejected() -> None:
    with pytest.raises(ValueError, match="result"):
        jobstate.apply_event(fresh(), 0, event(EventType.SUCCEEDED, result=None))


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
    new = applied(jobstate.apply_event(job, 0, ev))

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


def test_failed_without_detail_is_an_internal_error() -> None:
    new = applied(jobstate.apply_event(fresh(), 0, event(EventType.FAILED, error=None)))
    assert new.state == State.STATE_FAILED
    assert new.error.code == code_pb2.INTERNAL == 13
    assert new.error.message
    info = errors.error_info(new.error)
    assert info is not None
    assert info.reason == errors.Reason.INTERNAL
    assert info.domain == errors.DOMAIN


def test_cancelled_event_ends_the_job() -> None:
    job = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, seq=1)))
    new = applied(jobstate.apply_event(job, 1, event(EventType.CANCELLED, seq=2, time=T0 + 15)))
    assert new.state == State.STATE_CANCELLED
    assert new.stage == "cancelled"
    assert new.end_time == ts(T0 + 15)
    assert new.sequence == job.sequence + 1
    assert jobstate.is_terminal(new)


# -- terminal, fencing, dedupe ---------------------------------------------------------


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
@pytest.mark.parametrize("type", list(EventType), ids=lambda t: t.value)
@pytest.mark.parametrize("attempt", [0, 1, 2], ids=["older", "same", "newer"])
def test_terminal_jobs_ignore_every_event(
    state: pb.Job.State.ValueType, type: EventType, attempt: int
) -> None:
    job = job_in(state, attempt=1)
    before = job.SerializeToString(deterministic=True)
    ev = any_event(type, attempt=attempt, seq=99)
    assert ignored_why(jobstate.apply_event(job, 3, ev)) == "job_terminal"
    assert job.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize("type", list(EventType), ids=lambda t: t.value)
def test_event_from_an_older_attempt_is_ignored(type: EventType) -> None:
    job = job_in(State.STATE_RUNNING, attempt=3)
    # Even a seq far beyond the current attempt's does not get through.
    ev = any_event(type, attempt=2, seq=1000)
    assert ignored_why(jobstate.apply_event(job, 1, ev)) == "stale_attempt"


@pytest.mark.parametrize("seq", [1, 4, 5])
def test_duplicate_or_late_seq_in_the_same_attempt_is_ignored(seq: int) -> None:
    job = job_in(State.STATE_RUNNING, attempt=2)
    ev = event(EventType.PROGRESS, attempt=2, seq=seq, progress=0.9)
    assert ignored_why(jobstate.apply_event(job, 5, ev)) == "duplicate"


def test_next_seq_in_the_same_attempt_is_applied_even_with_a_gap() -> None:
    job = job_in(State.STATE_RUNNING, attempt=2)
    result = jobstate.apply_event(job, 5, event(EventType.PROGRESS, attempt=2, seq=9))
    assert isinstance(result, Applied)
    assert result.event_seq == 9


def test_redelivered_duplicate_after_apply_is_ignored() -> None:
    ev = event(EventType.STARTED, seq=1)
    first = jobstate.apply_event(fresh(), 0, ev)
    assert isinstance(first, Applied)
    again = jobstate.apply_event(first.job, first.event_seq, ev)
    assert ignored_why(again) == "duplicate"


def test_newer_attempt_resets_the_seq_window() -> None:
    job = job_in(State.STATE_RUNNING, attempt=1, sequence=60)
    ev = event(EventType.STARTED, attempt=2, seq=1, worker_id="worker-b")
    result = jobstate.apply_event(job, 50, ev)

    assert isinstance(result, Applied)
    assert result.event_seq == 1
    assert result.job.attempt == 2
    assert result.job.worker_id == "worker-b"
    assert result.job.state == State.STATE_RUNNING
    assert result.job.sequence == 61


def test_newer_attempt_can_skip_ahead_by_more_than_one() -> None:
    job = job_in(State.STATE_QUEUED, attempt=1)
    new = applied(jobstate.apply_event(job, 3, event(EventType.STARTED, attempt=4, seq=1)))
    assert new.attempt == 4


@pytest.mark.parametrize(
    "ev",
    [
        event(EventType.STARTED, seq=1, stage="synthesizing"),
        event(EventType.PROGRESS, seq=1, progress=2.0),
        event(EventType.RETRYING, seq=1),
        event(EventType.SUCCEEDED, seq=1, result=RESULT, generated_audio_seconds=1.0),
        event(EventType.FAILED, seq=1, error=ErrorDetail("UNAVAILABLE", "PROVIDER_ERROR", "x")),
        event(EventType.CANCELLED, seq=1),
    ],
    ids=lambda e: e.type.value,
)
def test_apply_event_never_mutates_its_input(ev: JobEvent) -> None:
    job = fresh()
    job.usage.characters = 5
    before = job.SerializeToString(deterministic=True)
    result = jobstate.apply_event(job, 0, ev)
    assert isinstance(result, Applied)
    assert job.SerializeToString(deterministic=True) == before
    assert result.job is not job
    # And mutating the result does not reach back into the input.
    result.job.request.target_language = "zz"
    assert job.request.target_language == "fr"


def test_sequence_counts_applied_events_over_a_realistic_history() -> None:
    """Two attempts, redeliveries and a stale straggler; only real changes count."""
    job = fresh()
    last_seq = 0
    history: list[tuple[JobEvent, bool]] = [
        (event(EventType.STARTED, attempt=1, seq=1, worker_id="a"), True),
        (event(EventType.PROGRESS, attempt=1, seq=2, progress=0.2), True),
        (event(EventType.PROGRESS, attempt=1, seq=2, progress=0.2), False),  # redelivered
        (event(EventType.PROGRESS, attempt=1, seq=4, progress=0.4), True),
        (event(EventType.PROGRESS, attempt=1, seq=3, progress=0.3), False),  # late
        (event(EventType.STARTED, attempt=2, seq=1, worker_id="b"), True),  # a crash, redelivery
        (event(EventType.PROGRESS, attempt=1, seq=5, progress=0.5), False),  # stalled worker a
        (event(EventType.PROGRESS, attempt=2, seq=2, progress=0.5, worker_id="b"), True),
        (event(EventType.RETRYING, attempt=2, seq=3, worker_id="b"), True),
        (event(EventType.STARTED, attempt=3, seq=1, worker_id="c"), True),
        (event(EventType.PROGRESS, attempt=3, seq=2, progress=0.9, worker_id="c"), True),
        (event(EventType.SUCCEEDED, attempt=3, seq=3, result=RESULT, worker_id="c"), True),
        (event(EventType.SUCCEEDED, attempt=3, seq=3, result=RESULT, worker_id="c"), False),
        (event(EventType.FAILED, attempt=3, seq=4, worker_id="c"), False),  # after terminal
    ]
    for i, (ev, should_apply) in enumerate(history):
        result = jobstate.apply_event(job, last_seq, ev)
        assert isinstance(result, Applied) is should_apply, (i, ev, result)
        if isinstance(result, Applied):
            assert result.job.sequence == job.sequence + 1, i
            assert result.event_seq == ev.seq
            job, last_seq = result.job, result.event_seq

    applied_count = sum(1 for _, ok in history if ok)
    assert job.sequence == 1 + applied_count == 10
    assert job.state == State.STATE_SUCCEEDED
    assert job.attempt == 3
    assert job.worker_id == "c"
    assert job.start_time == ts(T0 + 10)


# -- cancel and fail --------------------------------------------------------------------


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
def test_cancel_of_an_ended_job_raises(state: pb.Job.State.ValueType) -> None:
    job = job_in(state)
    before = job.SerializeToString(deterministic=True)
    with pytest.raises(JobAlreadyFinished) as info:
        jobstate.cancel(job, T0 + 100)
    assert info.value.job is job
    assert JOB_ID in str(info.value)
    assert State.Name(state) in str(info.value)
    assert job.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize("state", NON_TERMINAL, ids=lambda s: State.Name(s))
def test_cancel_of_a_live_job(state: pb.Job.State.ValueType) -> None:
    job = job_in(state, attempt=2, sequence=7)
    job.worker_id = "worker-a"
    before = job.SerializeToString(deterministic=True)
    new = jobstate.cancel(job, T0 + 100.5)

    assert new.state == State.STATE_CANCELLED
    assert new.stage == "cancelled"
    assert new.sequence == 8
    assert new.end_time == ts(T0 + 100.5)
    assert new.update_time == ts(T0 + 100.5)
    assert new.attempt == 2
    assert new.worker_id == "worker-a"
    assert new.id == JOB_ID
    assert jobstate.is_terminal(new)
    assert job.SerializeToString(deterministic=True) == before


def test_cancelled_job_ignores_later_worker_events() -> None:
    job = applied(jobstate.apply_event(fresh(), 0, event(EventType.STARTED, seq=1)))
    job = jobstate.cancel(job, T0 + 20)
    late = event(EventType.SUCCEEDED, seq=2, result=RESULT)
    assert ignored_why(jobstate.apply_event(job, 1, late)) == "job_terminal"


@pytest.mark.parametrize("state", NON_TERMINAL, ids=lambda s: State.Name(s))
def test_fail_of_a_live_job(state: pb.Job.State.ValueType) -> None:
    job = job_in(state, sequence=4)
    job.usage.characters = 99
    before = job.SerializeToString(deterministic=True)
    new = jobstate.fail(
        job,
        T0 + 50,
        code="RESOURCE_EXHAUSTED",
        reason=errors.Reason.MAX_DELIVERIES_EXCEEDED,
        message="gave up after 5 deliveries",
    )

    assert new.state == State.STATE_FAILED
    assert new.stage == "failed"
    assert new.sequence == 5
    assert new.end_time == ts(T0 + 50)
    assert new.update_time == ts(T0 + 50)
    assert new.error.code == code_pb2.RESOURCE_EXHAUSTED == 8
    assert new.error.message == "gave up after 5 deliveries"
    info = errors.error_info(new.error)
    assert info is not None
    assert info.reason == "MAX_DELIVERIES_EXCEEDED"
    assert info.domain == errors.DOMAIN
    assert not new.HasField("usage")
    assert job.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize("state", TERMINAL, ids=lambda s: State.Name(s))
def test_fail_of_an_ended_job_raises(state: pb.Job.State.ValueType) -> None:
    with pytest.raises(JobAlreadyFinished):
        jobstate.fail(job_in(state), T0, code="INTERNAL", reason="INTERNAL", message="x")


def test_fail_rejects_an_unknown_code_name() -> None:
    with pytest.raises(ValueError):
        jobstate.fail(fresh(), T0, code="NOT_A_CODE", reason="INTERNAL", message="x")


# -- randomized property test ---------------------------------------------------------


@dataclass
class Model:
    """What the store keeps next to the job."""

    job: pb.Job
    last_seq: int = 0


def random_event(rng: random.Random, model: Model, step: int) -> JobEvent:
    current = model.job.attempt
    attempt = max(0, current + rng.choice([-2, -1, 0, 0, 0, 0, 1, 1, 2]))
    if attempt == current:
        seq = max(0, model.last_seq + rng.choice([-3, -1, 0, 1, 1, 1, 2, 5]))
    else:
        seq = rng.randint(0, 60)
    type = rng.choices(
        list(EventType),
        weights=[4, 10, 2, 1, 1, 1],  # STARTED, PROGRESS, RETRYING, SUCCEEDED, FAILED, CANCELLED
    )[0]
    return event(
        type,
        attempt=attempt,
        seq=seq,
        time=T0 + step,
        worker_id=f"w{attempt}",
        stage=rng.choice(["", "synthesizing", "mixing"]),
        progress=rng.uniform(-0.5, 1.5),
        result=RESULT if type is EventType.SUCCEEDED else None,
        error=(
            ErrorDetail(rng.choice(["INTERNAL", "UNAVAILABLE"]), "PROVIDER_ERROR", "x")
            if type is EventType.FAILED and rng.random() < 0.8
            else None
        ),
    )


@pytest.mark.parametrize("seed", range(300))
def test_random_histories_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    model = Model(fresh())
    applied_count = 0
    for step in range(rng.randint(1, 60)):
        job = model.job
        before = job.SerializeToString(deterministic=True)
        was_terminal = jobstate.is_terminal(job)

        if rng.random() < 0.03:
            if was_terminal:
                with pytest.raises(JobAlreadyFinished):
                    jobstate.cancel(job, T0 + step)
            else:
                model.job = jobstate.cancel(job, T0 + step)
                assert model.job.sequence == job.sequence + 1
                assert model.job.state == State.STATE_CANCELLED
                applied_count += 1
            continue

        ev = random_event(rng, model, step)
        result = jobstate.apply_event(job, model.last_seq, ev)
        assert job.SerializeToString(deterministic=True) == before

        if was_terminal:
            expected: str | None = "job_terminal"
        elif ev.attempt < job.attempt:
            expected = "stale_attempt"
        elif ev.attempt == job.attempt and ev.seq <= model.last_seq:
            expected = "duplicate"
        else:
            expected = None

        if expected is not None:
            assert ignored_why(result) == expected, (step, ev)
            continue

        assert isinstance(result, Applied), (step, ev, result)
        new = result.job
        assert new.sequence == job.sequence + 1
        assert new.attempt == ev.attempt >= job.attempt
        assert result.event_seq == ev.seq
        assert new.worker_id == ev.worker_id
        assert 0.0 <= new.progress <= 1.0
        assert new.update_time == ts(T0 + step)
        assert jobstate.is_terminal(new) == (ev.type in TERMINAL_EVENTS)
        if jobstate.is_terminal(new):
            assert new.HasField("end_time")
        model.job, model.last_seq = new, result.event_seq
        applied_count += 1

    assert model.job.sequence == 1 + applied_count


def test_succeeded_event_carries_the_timing_report() -> None:
    import base64
    import dataclasses

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
    encoded = base64.b64encode(report.SerializeToString()).decode()
    result = dataclasses.replace(RESULT, timing=encoded)
    job = jobstate.new_job(JOB_ID, pb.DubRequest(target_language="fr"), T0)
    applied = jobstate.apply_event(
        job,
        0,
        JobEvent(
            job_id=JOB_ID,
            attempt=1,
            seq=1,
            type=EventType.SUCCEEDED,
            worker_id="w",
            time=T0 + 1,
            result=result,
        ),
    )
    assert isinstance(applied, jobstate.Applied)
    assert applied.job.result.timing == report
    # And through the bus encoding, as the gateway receives it.
    event = JobEvent(
        job_id=JOB_ID,
        attempt=1,
        seq=1,
        type=EventType.SUCCEEDED,
        worker_id="w",
        time=T0,
        result=result,
    )
    assert JobEvent.decode(event.encode()).result == result
