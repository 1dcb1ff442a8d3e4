"""Properties of the gateway over a real socket: hostile input only ever gets client errors.

SubmitDub with requests drawn with hostile parts (any code point in texts, speakers and
labels, Durations of any seconds and nanos, transcript files from the readers' property
tests, frame rates of any float), and every RPC with arbitrary bytes for a body: each
call succeeds or fails with a client error code and exactly one ErrorInfo, read by a
default-configured client. Accepted jobs are cancelled at once.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dubbing import errors
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.helpers import rich_error
from tests.unit.dubbing.test_transcript_properties import FILES, TEXT

CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
}
OVER_THE_SOCKET = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Protobuf strings are UTF-8: a client cannot send a lone surrogate, so none are drawn here.
STRING = TEXT.map(lambda t: t.encode(errors="replace").decode())
DURATION = st.builds(
    duration_pb2.Duration,
    seconds=st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 30)),
    nanos=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 999_999_999)),
)
SEGMENT = st.builds(pb.Segment, start=DURATION, end=DURATION, text=STRING, speaker=STRING)
SEGMENTS = st.builds(pb.Transcript, segments=st.lists(SEGMENT, min_size=0, max_size=4))
FILE = st.builds(
    lambda file, fps, name: pb.TranscriptFile(
        content=file[1], format=file[0], csv_fps=fps, filename=name
    ),
    FILES,
    st.floats(allow_nan=True, allow_infinity=True),
    STRING,
)


def _transcript(source: pb.Transcript | pb.TranscriptFile) -> pb.TranscriptDubbing:
    if isinstance(source, pb.Transcript):
        return pb.TranscriptDubbing(script=source)
    return pb.TranscriptDubbing(file=source)


REQUEST = st.builds(
    lambda language, source, labels, request_id: pb.DubRequest(
        target_language=language,
        request_id=request_id,
        transcript=_transcript(source),
        labels=labels,
    ),
    st.one_of(st.just("fr"), STRING),
    st.one_of(SEGMENTS, FILE),
    st.dictionaries(STRING, STRING, max_size=3),
    st.one_of(st.just(""), STRING),
)


async def expect_client_error(call: Any) -> Any:
    """The call's result, or None after checking it failed as a client error should."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        err = await rich_error(exc)  # asserts exactly the rich status, with an ErrorInfo
        assert err.code in CLIENT_ERRORS, (err.code, exc.details())
        assert err.domain == errors.DOMAIN
        return None


@OVER_THE_SOCKET
@given(REQUEST)
async def test_submit_dub_answers_hostile_requests_with_client_errors(
    stub: pb_grpc.DubbingServiceAsyncStub, request: pb.DubRequest
) -> None:
    response = await expect_client_error(stub.SubmitDub(pb.SubmitDubRequest(request=request)))
    if response is not None:  # valid after all: only its answer mattered
        await expect_client_error(stub.CancelJob(pb.CancelJobRequest(job_id=response.job.id)))


METHODS = ["SubmitDub", "GetJob", "ListJobs", "CancelJob", "ListLanguages"]


@OVER_THE_SOCKET
@given(st.sampled_from(METHODS), st.binary(max_size=64))
async def test_any_body_gets_an_answer_or_a_client_error(
    channel: grpc.aio.Channel, method: str, body: bytes
) -> None:
    call = channel.unary_unary(f"/dubbing.v1.DubbingService/{method}", None, None)(body)
    response = await expect_client_error(call)
    if response is not None and method == "SubmitDub":
        job = pb.SubmitDubResponse.FromString(response).job
        await expect_client_error(channel_cancel(channel, job.id))


def channel_cancel(channel: grpc.aio.Channel, job_id: str) -> Any:
    return pb_grpc.DubbingServiceStub(channel).CancelJob(pb.CancelJobRequest(job_id=job_id))
