"""Every response fits in the 4 MiB a default gRPC client receives, at the documented maxima.

The largest job the gateway can hold is built here field by field: a request at the size
limit (the other limits allow more), a timing report for 5,000 segments with every field
set, an error and a result. GetJob, WatchJob, SubmitDub and a ListJobs page of it must
each stay under the limit, and so must ListJobs pages of 1,000 jobs in either view.
"""

from __future__ import annotations

import pytest

from dubbing import jobstate
from dubbing.errors import Reason, status
from dubbing.v1 import dubbing_pb2 as pb
from gateway import pagination
from gateway.servicer import _basic_view
from gateway.transcript_files import MAX_WARNINGS
from gateway.validation import (
    MAX_REQUEST_BYTES,
    MAX_SPEAKER_LENGTH,
    Limits,
    validate_dub_request,
)

CLIENT_LIMIT = 4 * 1024 * 1024
WIDE = "\U0001f600"  # four bytes in UTF-8
SEGMENTS = 5000


def documented_maxima() -> pb.DubRequest:
    """A request at every documented limit: 5,000 segments, 500,000 four-byte characters of
    text, speakers of 128 four-byte characters, 64 labels of 256."""
    segments = [
        pb.Segment(
            start=jobstate.duration(i * 4.3 + 0.123456789),
            end=jobstate.duration(i * 4.3 + 4.123456789),
            text=WIDE * 100,
            speaker=WIDE * MAX_SPEAKER_LENGTH,
        )
        for i in range(SEGMENTS)
    ]
    request = pb.DubRequest(
        request_id="r" * 128,
        target_language="fr",
        transcript=pb.TranscriptDubbing(script=pb.Transcript(segments=segments)),
    )
    for i in range(64):
        request.labels[f"k{i:02d}" + "a" * 60] = WIDE * 256
    return request


def at_the_size_limit() -> pb.DubRequest:
    """The documented maxima with speakers shortened until the request is just within the
    size limit: the largest request the gateway accepts."""
    request = documented_maxima()
    segments = request.transcript.script.segments
    for seg in segments:
        seg.speaker = ""
    wide = (MAX_REQUEST_BYTES - request.ByteSize()) // (SEGMENTS * len(WIDE.encode()))
    for length in range(wide, 0, -1):  # the length prefixes take a few bytes more
        for seg in segments:
            seg.speaker = WIDE * length
        if request.ByteSize() <= MAX_REQUEST_BYTES:
            break
    # Within one character per speaker of the limit.
    assert MAX_REQUEST_BYTES - SEGMENTS * 4 < request.ByteSize() <= MAX_REQUEST_BYTES
    return request


def largest_job(request: pb.DubRequest) -> pb.Job:
    job = jobstate.new_job("01a233e6-838d-735e-b5a4-15e1fdba9ca5", request, 1.0e9)
    job.worker_id = "w" * 255
    summary = pb.TimingSummary(
        segments=SEGMENTS,
        share_duration_error_over300ms=0.123456789,
        mean_stretch=1.23456789,
        max_stretch=1.4,
        truncations=SEGMENTS,
        max_start_offset=jobstate.duration(0.123456789),
        share_shorter_over300ms=0.1,
        share_longer_over300ms=0.02,
    )
    job.result.timing.summary.CopyFrom(summary)
    for i in range(SEGMENTS):
        start, end = i * 4.3 + 0.123456789, i * 4.3 + 4.123456789
        job.result.timing.segments.append(
            pb.SegmentTiming(
                index=i,
                window_start=jobstate.duration(start),
                window_end=jobstate.duration(end),
                speech_start=jobstate.duration(start + 0.012345678),
                speech_end=jobstate.duration(end + 0.312345678),
                speed=1.23456789,
                stretch=1.23456789,
                remedies=list(pb.TimingRemedy.values())[1:],
                overrun=jobstate.duration(0.123456789),
                stitched_with=[i + 1, i + 2, i + 3],
            )
        )
    job.result.artifact = "a" * 200
    job.result.sha256 = "f" * 64
    job.error.CopyFrom(status(13, Reason.INTERNAL, "x" * 4096))
    return job


def test_the_documented_maxima_alone_are_refused_for_their_size() -> None:
    violations = validate_dub_request(documented_maxima(), Limits())
    assert [field for field, _ in violations] == ["request"]


def test_the_largest_accepted_job_fits_every_response() -> None:
    request = at_the_size_limit()
    assert validate_dub_request(request, Limits()) == []
    job = largest_job(request)
    warnings = ["line 123456: trimmed end from 00:00:03.000 to 00:00:02.800 " + "x" * 200]
    responses = [
        pb.GetJobResponse(job=job),
        pb.WatchJobResponse(job=job),
        pb.CancelJobResponse(job=job),
        pb.SubmitDubResponse(job=job, warnings=warnings * MAX_WARNINGS),
        pb.ListJobsResponse(
            jobs=pagination.fill_page([job] * 1000, 1000), next_page_token="t" * 100
        ),
        pb.DownloadResultResponse(result=job.result, chunk=b"\0" * 64 * 1024),
    ]
    for response in responses:
        assert response.ByteSize() < CLIENT_LIMIT, type(response).__name__


@pytest.mark.parametrize("view", ["basic", "full"])
def test_a_page_of_1000_jobs_fits(view: str) -> None:
    job = largest_job(at_the_size_limit())
    if view == "basic":
        _basic_view(job)
        # Labels are in the basic view; at their limit they are ~70 KB a job.
        assert 60_000 < job.ByteSize() < 80_000
    page = pagination.fill_page([job] * 1000, 1000)
    assert 1 <= len(page) < 1000
    response = pb.ListJobsResponse(jobs=page, next_page_token="t" * 100)
    assert response.ByteSize() < CLIENT_LIMIT


def test_the_basic_view_drops_the_work_and_the_timing_report() -> None:
    job = largest_job(at_the_size_limit())
    _basic_view(job)
    assert job.request.WhichOneof("work") is None and not job.result.HasField("timing")
    assert job.request.target_language == "fr" and len(job.request.labels) == 64
    assert job.result.sha256 == "f" * 64 and job.error.code == 13
    queued = jobstate.new_job("01a233e6-838d-735e-b5a4-15e1fdba9ca5", pb.DubRequest(), 1.0)
    _basic_view(queued)
    assert not queued.HasField("result")
