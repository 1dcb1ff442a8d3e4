"""Requests at the documented limits are delivered, and never hold up the jobs behind them.

A real stack with NATS's default max_payload (1 MiB): a request larger than one
message travels through the requests bucket. Each large job is followed by a
small one; the small one must succeed while the large one is being worked on
(the large one is cancelled once its worker has loaded it and started: dubbing
hours of speech is not what these tests are about).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from dubbing.devstack import Stack
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from gateway.validation import MAX_REQUEST_BYTES
from tests.conftest import StackFactory
from tests.helpers import rich_error, segment, transcript_request

State = pb.Job.State


@pytest.fixture
async def stub(make_stack: StackFactory) -> AsyncIterator[pb_grpc.DubbingServiceAsyncStub]:
    stack: Stack = make_stack(workers=1, DUBBING_CONCURRENCY="2").start()
    # A default client: no raised message size limits.
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        yield pb_grpc.DubbingServiceStub(channel)


def transcript_of(texts: list[str], *, window: float = 4.0, speaker: str = "") -> pb.DubRequest:
    segments = [
        segment(window * i, window * i + window - 0.5, text, speaker=speaker)
        for i, text in enumerate(texts)
    ]
    return transcript_request(segments)


async def started_then_cancelled(stub: pb_grpc.DubbingServiceAsyncStub, job_id: str) -> pb.Job:
    """Wait until the job's first attempt is dubbing its segments (so its worker loaded
    the whole request), then cancel it."""
    async for response in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
        job = response.job
        assert job.state in (State.STATE_QUEUED, State.STATE_RUNNING), job
        assert job.attempt <= 1, job.error  # a worker that could not read it would retry
        if job.state == State.STATE_RUNNING and job.progress > 0:
            break
    cancelled: pb.CancelJobResponse = await stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    return cancelled.job


async def final(stub: pb_grpc.DubbingServiceAsyncStub, job_id: str) -> pb.Job:
    return [r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))][-1]


@pytest.mark.parametrize(
    ("texts", "what"),
    [
        (["é" * 100] * 4_900, "4,900 segments of 100 'é': 490,000 characters, ~1 MB"),
        (["😀" * 5_000] * 100, "100 segments of 5,000 '😀': the 500,000 characters, 2 MB"),
        (["a" * 100] * 5_000, "5,000 segments: the segment limit"),
    ],
    ids=["e-acute", "emoji-at-the-character-limit", "at-the-segment-limit"],
)
async def test_a_large_request_is_delivered_and_the_job_behind_it_runs(
    stub: pb_grpc.DubbingServiceAsyncStub, texts: list[str], what: str
) -> None:
    large_request = transcript_of(texts)
    assert large_request.ByteSize() <= MAX_REQUEST_BYTES, what
    large = (await stub.SubmitDub(pb.SubmitDubRequest(request=large_request))).job
    small = (await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request()))).job

    done = await final(stub, small.id)
    assert done.state == State.STATE_SUCCEEDED, done.error
    cancelled = await started_then_cancelled(stub, large.id)
    assert cancelled.state == State.STATE_CANCELLED
    # The whole request came back as it was sent (a default client receives it).
    stored = (await stub.GetJob(pb.GetJobRequest(job_id=large.id))).job
    assert len(stored.request.transcript.script.segments) == len(texts)
    assert stored.request.transcript.script.segments[-1].text == texts[-1]


def at_size(target: int) -> pb.DubRequest:
    """A valid request of exactly `target` serialized bytes: long speaker names of
    four-byte characters on 5,000 segments, then the last one trimmed to fit."""
    request = transcript_of(["𝄞" * 99] * 5_000, window=4.0, speaker="𝄞" * 128)
    segments = request.transcript.script.segments
    for i in reversed(range(len(segments))):
        excess = request.ByteSize() - target
        if excess <= 0:
            break
        segments[i].speaker = "𝄞" * max(0, 128 - -(-excess // 4))
    # Land on the exact byte with a one-byte-per-character tail on the last text.
    for pad in range(0, 64):
        segments[0].text = "𝄞" * 99 + "a" * pad
        if request.ByteSize() >= target:
            break
    assert request.ByteSize() == target, request.ByteSize()
    return request


async def test_a_request_at_exactly_the_byte_limit_is_delivered_one_byte_more_is_refused(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    over = at_size(MAX_REQUEST_BYTES + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitDub(pb.SubmitDubRequest(request=over))
    error = await rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in error.fields

    request = at_size(MAX_REQUEST_BYTES)
    large = (await stub.SubmitDub(pb.SubmitDubRequest(request=request))).job
    small = (await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request()))).job
    assert (await final(stub, small.id)).state == State.STATE_SUCCEEDED
    assert (await started_then_cancelled(stub, large.id)).state == State.STATE_CANCELLED
    stored = (await stub.GetJob(pb.GetJobRequest(job_id=large.id))).job
    sent = pb.DubRequest()
    sent.CopyFrom(request)
    sent.provider = "local"  # the gateway records the provider it chose
    assert stored.request == sent


def with_unknown_field(request: pb.DubRequest, size: int) -> pb.DubRequest:
    """`request` as a newer client would send it: plus a field this version does not know
    (number 9999, length-delimited, `size` bytes)."""
    tag = (9999 << 3) | 2
    extra = _varint(tag) + _varint(size) + b"x" * size
    return pb.DubRequest.FromString(request.SerializeToString() + extra)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def test_unknown_fields_are_not_stored_nor_counted(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    padded = with_unknown_field(transcript_request(), 1024 * 1024)
    assert padded.ByteSize() > 1024 * 1024
    job = (await stub.SubmitDub(pb.SubmitDubRequest(request=padded))).job
    stored = (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).job
    assert stored.request.ByteSize() < 10_000
    known = transcript_request()
    known.provider = "local"
    assert stored.request == known
    assert (await final(stub, job.id)).state == State.STATE_SUCCEEDED
