"""Bad input is a client error with an ErrorInfo, never INTERNAL or UNKNOWN (issue 12).

Every case is sent over a real socket to the session's gateway by a default-configured
client (no raised message or metadata limits), as the fuzzer that found them did.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from dubbing.devstack import Stack
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.helpers import RichError, rich_error, segment, transcript_request

SERVICE = "/dubbing.v1.DubbingService"
FILE = "request.transcript.file"
TEXT = "request.transcript.script.segments[0].text"


async def refused(call: Awaitable[Any] | AsyncIterable[Any]) -> RichError:
    """The rich error a call ends with: awaited, or read to its end for a server stream."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if isinstance(call, AsyncIterable):
            async for _ in call:
                pass
        else:
            await call
    return await rich_error(caught.value)


def file_request(content: bytes, fmt: str, csv_fps: float = 0.0) -> pb.SubmitDubRequest:
    file = pb.TranscriptFile(content=content, format=fmt, csv_fps=csv_fps)
    return pb.SubmitDubRequest(
        request=pb.DubRequest(target_language="fr", transcript=pb.TranscriptDubbing(file=file))
    )


CSV_HEADER = b"speaker,start_time,end_time,transcription\n"
HOSTILE_FILES = {
    "nested_thousands_deep": (
        b'{"segments": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "json",
        0.0,
        "nested too deeply",
    ),
    "lone_surrogate": (
        b'{"segments": [{"start": 0, "end": 1, "text": "Bonjour \\ud800"}]}',
        "json",
        0.0,
        "lone surrogate",
    ),
    "time_too_large_for_a_float": (
        b'[{"start": 0, "end": 1' + b"0" * 400 + b', "text": "Bonjour"}]',
        "json",
        0.0,
        "too large",
    ),
    "integer_with_too_many_digits": (
        b'[{"start": 0, "end": 1' + b"0" * 5000 + b', "text": "Bonjour"}]',
        "json",
        0.0,
        "too many digits",
    ),
    "srt_hours_of_thousands_of_digits": (
        b"1\n" + b"9" * 5000 + b":00:00,000 --> 00:00:01,000\nHi\n",
        "srt",
        0.0,
        "bad timing line",
    ),
    "csv_seconds_beyond_a_float": (
        CSV_HEADER + b"A,0," + b"9" * 400 + b",Bonjour\n",
        "csv",
        0.0,
        "too large",
    ),
    "csv_fps_of_a_billion": (
        CSV_HEADER + b"A,0:00:00:00,0:00:01:00,Bonjour\n",
        "csv",
        1e9,
        "at most 240",
    ),
    "only_invisible_text": (b'[{"start": 0, "end": 1, "text": "\\u200b"}]', "json", 0.0, "no cues"),
    "nul_in_text": (b'[{"start": 0, "end": 1, "text": "a\\u0000"}]', "json", 0.0, "control"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
async def test_hostile_transcript_files_are_invalid_argument(
    stub: pb_grpc.DubbingServiceAsyncStub, case: str
) -> None:
    content, fmt, fps, says = HOSTILE_FILES[case]
    err = await refused(stub.SubmitDub(file_request(content, fmt, fps)))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    [(field, description)] = err.violations
    assert field.startswith(FILE) and says in description
    assert len(description) < 300  # never the whole input


@pytest.mark.parametrize("text", ["\u200b", "\t\n\r \u3000", "\x00", "Bon\x00jour"])
async def test_segment_text_needs_a_visible_character_and_no_control_characters(
    stub: pb_grpc.DubbingServiceAsyncStub, text: str
) -> None:
    request = transcript_request([segment(0.0, 1.0, text)])
    err = await refused(stub.SubmitDub(pb.SubmitDubRequest(request=request)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.fields == {TEXT}


# Random bytes; a truncated message (field 1 says 5 bytes follow, 2 do); invalid UTF-8 in
# field 1, a string in most of these requests (SubmitDub's is a message, and corrupt).
UNDECODABLE = {
    "random": b"\xff\xfe\xfd\xfc",
    "truncated": b"\x0a\x05ab",
    "bad_utf8": b"\x0a\x02\xc3\x28",
}
# No serializer, no deserializer: bytes go out as they are.
RAW = (None, None)
UNARY = ["SubmitDub", "GetJob", "CancelJob", "ListLanguages"]
SERVER_STREAMING = ["WatchJob", "DownloadResult"]


def nth_line(needle: str, n: int) -> Callable[[str], bool]:
    """A wait_for predicate true at the n-th log line (counting from the start) holding `needle`."""
    seen = 0

    def match(line: str) -> bool:
        nonlocal seen
        seen += needle in line
        return seen >= n

    return match


@pytest.mark.parametrize("body", sorted(UNDECODABLE))
async def test_undecodable_requests_are_invalid_argument_and_a_warning(
    stack: Stack, channel: grpc.aio.Channel, body: str
) -> None:
    data = UNDECODABLE[body]
    warned = stack.gateway.count("request_undecodable")
    failed = stack.gateway.count('"level": "error"')
    calls: list[tuple[str, Awaitable[Any] | AsyncIterable[Any]]] = []
    for method in UNARY:
        calls.append((method, channel.unary_unary(f"{SERVICE}/{method}", *RAW)(data)))
    for method in SERVER_STREAMING:
        calls.append((method, channel.unary_stream(f"{SERVICE}/{method}", *RAW)(data)))

    async def chunks() -> AsyncIterator[bytes]:
        yield pb.UploadAssetRequest(filename="a.wav", chunk=b"RIFF").SerializeToString()
        yield data

    calls.append(("UploadAsset", channel.stream_unary(f"{SERVICE}/UploadAsset", *RAW)(chunks())))
    if body != "bad_utf8":  # ListJobsRequest's field 1 is a number: those bytes decode
        calls.append(("ListJobs", channel.unary_unary(f"{SERVICE}/ListJobs", *RAW)(data)))
    for method, call in calls:
        err = await refused(call)
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
        assert err.metadata == {"method": f"{SERVICE}/{method}"}
    # One warning line per call, naming the peer; no error, no traceback.
    line = await asyncio.to_thread(
        stack.gateway.wait_for, nth_line("request_undecodable", warned + len(calls)), 10.0
    )
    assert '"level": "warning"' in line and '"peer": "ipv' in line
    assert stack.gateway.count('"level": "error"') == failed


async def test_an_unknown_method_is_still_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"{SERVICE}/NoSuchMethod", *RAW)(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


LONG_ID = "0" * 20_000


def calls_on(
    stub: pb_grpc.DubbingServiceAsyncStub, job_id: str
) -> list[Awaitable[Any] | AsyncIterable[Any]]:
    """One call of every RPC that takes a job id."""
    return [
        stub.GetJob(pb.GetJobRequest(job_id=job_id)),
        stub.CancelJob(pb.CancelJobRequest(job_id=job_id)),
        stub.WatchJob(pb.WatchJobRequest(job_id=job_id)),
        stub.DownloadResult(pb.DownloadResultRequest(job_id=job_id)),
    ]


async def test_job_ids_are_checked_by_format_before_any_lookup(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    # A 20 KB id used to be echoed into the ErrorInfo, past a default client's 16 KiB
    # metadata limit: RESOURCE_EXHAUSTED instead of the error.
    for job_id in (LONG_ID, "nope", "x" * 300):
        for call in calls_on(stub, job_id):
            err = await refused(call)
            assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
            assert err.fields == {"job_id"} and err.metadata == {}
    unknown = str(uuid.uuid4())
    for call in calls_on(stub, unknown):
        err = await refused(call)
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
        assert err.metadata == {"job_id": unknown}


async def test_list_states_and_views_that_do_not_exist_are_invalid_argument(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    for request in (
        pb.ListJobsRequest(states=[99]),  # type: ignore[list-item]
        pb.ListJobsRequest(states=[-1]),  # type: ignore[list-item]
        pb.ListJobsRequest(states=[pb.Job.State.STATE_UNSPECIFIED]),
        pb.ListJobsRequest(view=5),  # type: ignore[arg-type]
    ):
        err = await refused(stub.ListJobs(request))
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert err.fields <= {"states[0]", "view"} and err.fields


def bulky_request(label: str) -> pb.DubRequest:
    """A request of about 950 KB, under the size limit (what a NATS message carries)."""
    segments = [
        segment(
            i * 2.0, i * 2.0 + 1.5, f"Ligne {i:04d} " + "a" * 29, speaker=f"{i:04d}" + "s" * 116
        )
        for i in range(5000)
    ]
    request = transcript_request(segments)
    request.labels["batch"] = label
    return request


async def test_a_list_page_stays_under_a_default_clients_4_mib_in_either_view(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    # Five jobs of ~950 KB: one page of them in full is ~4.8 MB, over the 4 MiB a default
    # client receives. Cancelled at once: only their size matters here.
    label = str(uuid.uuid4())
    ours: list[str] = []
    for _ in range(5):
        response = await stub.SubmitDub(pb.SubmitDubRequest(request=bulky_request(label)))
        assert 900_000 < response.job.request.ByteSize() < 1_000_000
        ours.append(response.job.id)
        await stub.CancelJob(pb.CancelJobRequest(job_id=response.job.id))
    ours.reverse()  # newest first, as listed
    cancelled = [pb.Job.State.STATE_CANCELLED]

    basic = await stub.ListJobs(pb.ListJobsRequest(page_size=1000, states=cancelled))
    listed = [j for j in basic.jobs if j.request.labels.get("batch") == label]
    assert [j.id for j in listed] == ours  # all in one page: the basic view is small
    assert all(j.request.WhichOneof("work") is None for j in listed)
    assert basic.ByteSize() < 4 * 1024 * 1024

    full: list[pb.Job] = []
    pages: list[int] = []
    token = ""
    while True:
        page = await stub.ListJobs(
            pb.ListJobsRequest(
                page_size=1000, page_token=token, states=cancelled, view=pb.JOB_VIEW_FULL
            )
        )
        assert page.ByteSize() < 4 * 1024 * 1024
        full += page.jobs
        pages.append(len(page.jobs))
        token = page.next_page_token
        if len(full) >= len(ours) or not token:
            break
    assert [j.id for j in full[: len(ours)]] == ours  # cut by bytes, continued by token
    assert pages[0] < len(ours)
    assert all(len(j.request.transcript.script.segments) == 5000 for j in full[: len(ours)])
    got = await stub.GetJob(pb.GetJobRequest(job_id=ours[0]))
    assert got.job.request == full[0].request
