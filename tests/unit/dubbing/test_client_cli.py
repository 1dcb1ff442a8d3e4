"""The Python client and the ``dubbing`` CLI against a fake DubbingService over real gRPC.

The fake servicer below runs in a ``grpc.aio`` server on 127.0.0.1 (port 0) in its own
thread and event loop, so both the asyncio client (on the test loop) and the CLI (which
runs its own ``asyncio.run``) talk to it over a socket. It answers errors the way the
gateway must: ``abort_with_status`` with a ``google.rpc.Status`` carrying an ErrorInfo
and, for validation, BadRequest field violations. Jobs "run" instantly: each submitted
job has a scripted history (QUEUED, RUNNING x2, terminal) that WatchJob replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from typer.testing import CliRunner

from dubbing import errors
from dubbing.cli import _app as cli_app
from dubbing.cli import app
from dubbing.client import (
    UPLOAD_CHUNK_BYTES,
    DeadlineExceeded,
    DubbingClient,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    JobFailed,
    NotFound,
    RetryPolicy,
    TranscriptError,
    Unavailable,
    background_audio,
    load_transcript,
    parse_time,
)
from dubbing.jobstate import duration
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc

State = pb.Job.State
Context = grpc.aio.ServicerContext[Any, Any]

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.0, max_backoff=0.0, reconnect_timeout=5.0)
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "transcript.json"
BAD_SEGMENT = ("request.transcript.script.segments[2].end", "must be after start")


def rich(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    violations: Sequence[tuple[str, str]] = (),
    metadata: dict[str, str] | None = None,
) -> grpc.Status:
    st = errors.status(
        code.value[0], reason, message, metadata=metadata, field_violations=violations
    )
    return rpc_status.to_status(st)


async def abort(context: Context, status: grpc.Status) -> None:
    await context.abort_with_status(status)  # type: ignore[attr-defined]


class FakeDubbing(pb_grpc.DubbingServiceServicer):
    """A scripted DubbingService; the tests set the knobs, then read what it received."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.histories: dict[str, list[pb.Job]] = {}
        self.by_request_id: dict[str, str] = {}
        self.submits: list[pb.DubRequest] = []
        self.submit_errors: list[grpc.Status] = []  # answered, in order, before succeeding
        self.outcome: State.ValueType = State.STATE_SUCCEEDED
        self.watch_requests: list[int] = []
        self.watch_break_after: int | None = None  # abort UNAVAILABLE after n messages, once
        self.watch_replay_on_resume = False  # a sloppy gateway re-sending the resume point
        self.list_jobs = [pb.Job(id=f"listed-{i}", sequence=1) for i in range(5)]
        self.list_requests: list[pb.ListJobsRequest] = []
        self.audio = bytes(range(256)) * 40
        self.corrupt_download = False
        self.download_break_after: int | None = None  # abort UNAVAILABLE after n messages, once
        self.downloads = 0
        self.cancel_errors: list[grpc.Status] = []
        self.watch_hang = False  # send the snapshot, then nothing
        self.uploads: list[list[pb.UploadAssetRequest]] = []
        self.upload_errors: list[grpc.Status] = []  # answered, in order, before succeeding

    def _history(self, job_id: str, request: pb.DubRequest) -> list[pb.Job]:
        def snap(seq: int, state: State.ValueType, stage: str, progress: float) -> pb.Job:
            return pb.Job(
                id=job_id,
                request=request,
                state=state,
                stage=stage,
                progress=progress,
                attempt=0 if seq == 1 else 1,
                sequence=seq,
            )

        end = snap(4, self.outcome, "done", 1.0)
        if self.outcome == State.STATE_SUCCEEDED:
            end.result.CopyFrom(
                pb.DubResult(
                    artifact=f"results/{job_id}/1.wav",
                    format=pb.AUDIO_FORMAT_WAV,
                    sample_rate_hz=24000,
                    duration=duration(26.0),
                    size_bytes=len(self.audio),
                    sha256=hashlib.sha256(self.audio).hexdigest(),
                )
            )
        elif self.outcome == State.STATE_CANCELLED:
            end.stage = "cancelled"
        else:
            end.stage = "failed"
            end.error.CopyFrom(
                errors.status(
                    errors.code_value("UNAVAILABLE"),
                    errors.Reason.PROVIDER_ERROR,
                    "espeak crashed",
                )
            )
        return [
            snap(1, State.STATE_QUEUED, "queued", 0.0),
            snap(2, State.STATE_RUNNING, "synthesizing", 0.4),
            snap(3, State.STATE_RUNNING, "mixing", 0.8),
            end,
        ]

    async def _job(self, job_id: str, context: Context) -> list[pb.Job]:
        history = self.histories.get(job_id)
        if history is None:
            await abort(
                context,
                rich(
                    grpc.StatusCode.NOT_FOUND,
                    errors.Reason.JOB_NOT_FOUND,
                    f"no job {job_id}",
                    metadata={"job_id": job_id},
                ),
            )
            raise AssertionError("abort returns no more")
        return history

    async def SubmitDub(
        self, request: pb.SubmitDubRequest, context: Context
    ) -> pb.SubmitDubResponse:
        req = request.request
        self.submits.append(req)
        if self.submit_errors:
            await abort(context, self.submit_errors.pop(0))
        if req.target_language == "xx":
            await abort(
                context,
                rich(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    errors.Reason.INVALID_ARGUMENT,
                    "the request is invalid",
                    [("request.target_language", "unknown language 'xx'"), BAD_SEGMENT],
                ),
            )
        existing = self.by_request_id.get(req.request_id)
        if existing is not None:
            return pb.SubmitDubResponse(job=self.histories[existing][0], created=False)
        job_id = f"job-{len(self.histories) + 1}"
        self.by_request_id[req.request_id] = job_id
        self.histories[job_id] = self._history(job_id, req)
        return pb.SubmitDubResponse(job=self.histories[job_id][0], created=True)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        history = await self._job(request.job_id, context)
        return pb.GetJobResponse(job=history[-1])

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        self.list_requests.append(request)
        start = int(request.page_token or "0")
        size = request.page_size or 50
        page = self.list_jobs[start : start + size]
        more = start + size < len(self.list_jobs)
        return pb.ListJobsResponse(jobs=page, next_page_token=str(start + size) if more else "")

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        await self._job(request.job_id, context)
        if self.cancel_errors:
            await abort(context, self.cancel_errors.pop(0))
        await abort(
            context,
            rich(
                grpc.StatusCode.FAILED_PRECONDITION,
                errors.Reason.JOB_ALREADY_FINISHED,
                f"job {request.job_id} already ended",
            ),
        )
        raise AssertionError("abort returns no more")

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobResponse]:
        self.watch_requests.append(request.after_sequence)
        history = await self._job(request.job_id, context)
        sent = 0
        for job in history:
            resend = self.watch_replay_on_resume and job.sequence == request.after_sequence
            if job.sequence <= request.after_sequence and not resend:
                continue
            if self.watch_break_after is not None and sent == self.watch_break_after:
                self.watch_break_after = None
                await abort(
                    context,
                    rich(grpc.StatusCode.UNAVAILABLE, "GATEWAY_SHUTTING_DOWN", "restarting"),
                )
            yield pb.WatchJobResponse(job=job)
            sent += 1
            if self.watch_hang:
                await asyncio.Event().wait()

    async def ListLanguages(
        self, request: pb.ListLanguagesRequest, context: Context
    ) -> pb.ListLanguagesResponse:
        local = pb.ProviderSupport(
            provider="local",
            transcript_dubbing=True,
            languages=[
                pb.LanguageSupport(
                    code="fr", name="French", genders=[pb.GENDER_FEMALE, pb.GENDER_MALE]
                )
            ],
            live_workers=1,
        )
        providers = [local] if request.provider in ("", "local") else []
        return pb.ListLanguagesResponse(providers=providers)

    async def DownloadResult(
        self, request: pb.DownloadResultRequest, context: Context
    ) -> AsyncIterator[pb.DownloadResultResponse]:
        history = await self._job(request.job_id, context)
        job = history[-1]
        if job.state != State.STATE_SUCCEEDED:
            await abort(
                context,
                rich(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    errors.Reason.JOB_NOT_SUCCEEDED,
                    f"job {job.id} has no result",
                ),
            )
        chunks = [self.audio[i : i + 4096] for i in range(0, len(self.audio), 4096)]
        if self.corrupt_download:
            broken = bytearray(chunks[1])
            broken[10] ^= 0xFF
            chunks[1] = bytes(broken)
        self.downloads += 1
        messages = [pb.DownloadResultResponse(result=job.result, chunk=chunks[0])]
        messages += [pb.DownloadResultResponse(chunk=chunk) for chunk in chunks[1:]]
        for sent, message in enumerate(messages):
            if sent == self.download_break_after:
                self.download_break_after = None
                await abort(context, rich(grpc.StatusCode.UNAVAILABLE, "", "connection lost"))
            yield message

    async def UploadAsset(
        self, request_iterator: AsyncIterator[pb.UploadAssetRequest], context: Context
    ) -> pb.UploadAssetResponse:
        messages = [m async for m in request_iterator]
        self.uploads.append(messages)
        if self.upload_errors:
            await abort(context, self.upload_errors.pop(0))
        data = b"".join(m.chunk for m in messages)
        return pb.UploadAssetResponse(
            asset=pb.Asset(
                name=f"assets/{len(self.uploads):032x}",
                filename=messages[0].filename,
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )


class ServerThread:
    """A grpc.aio server with the fake, on its own event loop in a daemon thread."""

    def __init__(self, servicer: FakeDubbing) -> None:
        self.servicer = servicer
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        pb_grpc.add_DubbingServiceServicer_to_server(self.servicer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def start(self) -> int:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


_FAKE = FakeDubbing()


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    server = ServerThread(_FAKE)
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def fake(gateway: str) -> FakeDubbing:
    _FAKE.reset()
    return _FAKE


@pytest_asyncio.fixture
async def client(gateway: str, fake: FakeDubbing) -> AsyncIterator[DubbingClient]:
    async with DubbingClient(gateway, retry=FAST, timeout=10) as c:
        yield c


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def dub_request(target: str = "fr", request_id: str = "") -> pb.DubRequest:
    return pb.DubRequest(
        request_id=request_id,
        target_language=target,
        provider="local",
        transcript=pb.TranscriptDubbing(script=load_transcript(EXAMPLE)),
    )


# -- client ----------------------------------------------------------------------------


async def test_submit_sets_request_id_and_retries_unavailable_with_the_same_id(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    fake.submit_errors = [rich(grpc.StatusCode.UNAVAILABLE, "", "connection reset")]
    request = dub_request()

    job = await client.submit(request)

    assert len(fake.submits) == 2
    first, second = (r.request_id for r in fake.submits)
    assert first == second
    uuid.UUID(first)  # a UUID
    assert job.request.request_id == first
    assert job.state == State.STATE_QUEUED
    assert request.request_id == ""  # the caller's message is left alone


async def test_submit_retries_deadline_exceeded_and_keeps_a_given_request_id(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    fake.submit_errors = [rich(grpc.StatusCode.DEADLINE_EXCEEDED, "", "too slow")]
    job = await client.submit(dub_request(request_id="my-key"))
    assert [r.request_id for r in fake.submits] == ["my-key", "my-key"]
    again = await client.submit(dub_request(request_id="my-key"))
    assert again.id == job.id


async def test_unavailable_is_raised_after_the_retries(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    fake.submit_errors = [
        rich(grpc.StatusCode.UNAVAILABLE, errors.Reason.DATABASE_UNAVAILABLE, "db down")
    ] * 3
    with pytest.raises(Unavailable) as caught:
        await client.submit(dub_request())
    assert len(fake.submits) == FAST.max_attempts
    assert caught.value.reason == errors.Reason.DATABASE_UNAVAILABLE


async def test_invalid_argument_carries_reason_and_field_violations(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.submit(dub_request(target="xx"))
    exc = caught.value
    assert exc.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.reason == errors.Reason.INVALID_ARGUMENT
    assert exc.message == "the request is invalid"
    assert exc.field_violations == [
        ("request.target_language", "unknown language 'xx'"),
        BAD_SEGMENT,
    ]
    assert exc.status is not None and errors.error_info(exc.status) is not None
    assert len(fake.submits) == 1  # never retried


async def test_not_found_carries_reason_and_metadata(client: DubbingClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.get("nope")
    assert caught.value.reason == errors.Reason.JOB_NOT_FOUND
    assert caught.value.metadata == {"job_id": "nope"}


async def test_unreachable_gateway_is_unavailable_without_reason(closed_port: int) -> None:
    async with DubbingClient(f"127.0.0.1:{closed_port}", retry=FAST, timeout=5) as c:
        with pytest.raises(Unavailable) as caught:
            await c.get("job-1")
    assert caught.value.reason == ""


async def test_watch_resumes_after_unavailable_without_duplicates(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    job = await client.submit(dub_request())
    fake.watch_break_after = 2
    fake.watch_replay_on_resume = True

    seen = [j async for j in client.watch(job.id)]

    assert [j.sequence for j in seen] == [1, 2, 3, 4]
    assert fake.watch_requests == [0, 2]
    assert [j.stage for j in seen] == ["queued", "synthesizing", "mixing", "done"]
    assert seen[-1].state == State.STATE_SUCCEEDED


async def test_watch_gives_up_after_the_reconnect_timeout(closed_port: int) -> None:
    policy = RetryPolicy(initial_backoff=0.0, max_backoff=0.0, reconnect_timeout=0.0)
    async with DubbingClient(f"127.0.0.1:{closed_port}", retry=policy) as c:
        with pytest.raises(Unavailable):
            async for _ in c.watch("job-1"):
                pass


async def test_watch_after_sequence_skips_what_the_caller_saw(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    job = await client.submit(dub_request())
    seen = [j.sequence async for j in client.watch(job.id, after_sequence=job.sequence)]
    assert seen == [2, 3, 4]
    assert fake.watch_requests == [1]


async def test_wait_raises_job_failed_when_asked(client: DubbingClient, fake: FakeDubbing) -> None:
    fake.outcome = State.STATE_FAILED
    job = await client.submit(dub_request())
    ended = await client.wait(job.id)
    assert ended.state == State.STATE_FAILED
    with pytest.raises(JobFailed) as caught:
        await client.wait(job.id, raise_on_failure=True)
    assert caught.value.reason == errors.Reason.PROVIDER_ERROR
    assert caught.value.job.id == job.id


async def test_wait_timeout_is_deadline_exceeded(client: DubbingClient, fake: FakeDubbing) -> None:
    job = await client.submit(dub_request())
    fake.watch_hang = True
    with pytest.raises(DeadlineExceeded) as caught:
        await client.wait(job.id, timeout=0.2)
    assert caught.value.reason == "WAIT_TIMEOUT"
    assert isinstance(caught.value, TimeoutError)


async def test_cancel_retried_after_it_took_effect_returns_the_cancelled_job(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    fake.outcome = State.STATE_CANCELLED
    job = await client.submit(dub_request())
    fake.cancel_errors = [rich(grpc.StatusCode.UNAVAILABLE, "", "answer lost")]
    cancelled = await client.cancel(job.id)
    assert cancelled.state == State.STATE_CANCELLED
    fake.outcome = State.STATE_SUCCEEDED
    done = await client.submit(dub_request())
    with pytest.raises(FailedPrecondition) as caught:
        await client.cancel(done.id)
    assert caught.value.reason == errors.Reason.JOB_ALREADY_FINISHED


async def test_wait_polls_when_watch_is_unimplemented(
    client: DubbingClient, fake: FakeDubbing, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await client.submit(dub_request())

    async def unimplemented(
        request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobResponse]:
        fake.watch_requests.append(request.after_sequence)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        yield pb.WatchJobResponse()  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(fake, "WatchJob", unimplemented)
    ended = await client.wait(job.id, timeout=10)
    assert ended.state == State.STATE_SUCCEEDED
    assert fake.watch_requests == [0]


async def test_download_verifies_size_and_sha256(
    client: DubbingClient, fake: FakeDubbing, tmp_path: Path
) -> None:
    job = await client.submit(dub_request())
    buffer = io.BytesIO()
    result = await client.download(job.id, buffer)
    assert buffer.getvalue() == fake.audio
    assert result.sha256 == hashlib.sha256(fake.audio).hexdigest()

    target = tmp_path / "out.wav"
    await client.download(job.id, target)
    assert target.read_bytes() == fake.audio
    assert not (tmp_path / "out.wav.part").exists()


async def test_download_restarts_after_unavailable_mid_stream(
    client: DubbingClient, fake: FakeDubbing, tmp_path: Path
) -> None:
    job = await client.submit(dub_request())
    fake.download_break_after = 2
    target = tmp_path / "out.wav"
    await client.download(job.id, target)
    assert fake.downloads == 2
    assert target.read_bytes() == fake.audio

    fake.download_break_after = 1
    buffer = io.BytesIO(b"keep")
    buffer.seek(0, io.SEEK_END)
    await client.download(job.id, buffer)
    assert buffer.getvalue() == b"keep" + fake.audio


async def test_download_rejects_a_corrupt_chunk(
    client: DubbingClient, fake: FakeDubbing, tmp_path: Path
) -> None:
    job = await client.submit(dub_request())
    fake.corrupt_download = True
    target = tmp_path / "out.wav"
    with pytest.raises(IntegrityError) as caught:
        await client.download(job.id, target)
    assert caught.value.reason == "CHECKSUM_MISMATCH"
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []  # nor a .part


async def test_download_of_a_failed_job_is_failed_precondition(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    fake.outcome = State.STATE_FAILED
    job = await client.submit(dub_request())
    with pytest.raises(FailedPrecondition) as caught:
        await client.download(job.id, io.BytesIO())
    assert caught.value.reason == errors.Reason.JOB_NOT_SUCCEEDED


async def test_list_follows_page_tokens(client: DubbingClient, fake: FakeDubbing) -> None:
    states = [State.STATE_RUNNING, State.STATE_FAILED]
    jobs = [j.id async for j in client.list(states=states, page_size=2)]
    assert jobs == [f"listed-{i}" for i in range(5)]
    assert [r.page_token for r in fake.list_requests] == ["", "2", "4"]
    assert all(list(r.states) == states and r.page_size == 2 for r in fake.list_requests)
    assert all(r.view == pb.JOB_VIEW_BASIC for r in fake.list_requests)
    _ = [j async for j in client.list(view=pb.JOB_VIEW_FULL)]
    assert fake.list_requests[-1].view == pb.JOB_VIEW_FULL


async def test_languages(client: DubbingClient) -> None:
    providers = await client.languages()
    assert [p.provider for p in providers] == ["local"]
    assert await client.languages("elevenlabs") == []


# -- transcripts -----------------------------------------------------------------------


def write(tmp_path: Path, data: object, name: str = "t.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_transcript_accepts_both_shapes_and_clock_times(tmp_path: Path) -> None:
    segments = [
        {"start": 1.0, "end": 2.5, "text": "Bonjour", "speaker": "A"},
        {"start": "00:00:03.250", "end": "00:04.000", "text": "Salut"},
    ]
    for data in ({"segments": segments}, segments):
        transcript = load_transcript(write(tmp_path, data))
        assert [s.text for s in transcript.segments] == ["Bonjour", "Salut"]
        assert [s.speaker for s in transcript.segments] == ["A", ""]
        first, second = transcript.segments
        assert first.end.ToNanoseconds() == 2_500_000_000
        assert second.start.ToNanoseconds() == 3_250_000_000
        assert second.end.ToNanoseconds() == 4_000_000_000


def test_the_example_transcript_is_valid() -> None:
    transcript = load_transcript(EXAMPLE)
    assert 6 <= len(transcript.segments) <= 8
    assert {s.speaker for s in transcript.segments} == {"A", "B"}
    assert transcript.segments[-1].end.ToNanoseconds() <= 30 * 10**9


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            [{"start": 0, "end": 1, "text": "a"}, {"start": 1, "text": "b"}],
            "segment 1: missing 'end'",
        ),
        (
            [
                {"start": 0, "end": 1, "text": "a"},
                {"start": 1, "end": 2, "text": "b"},
                {"start": 3, "end": 2.5, "text": "c"},
            ],
            "segment 2: 'end' (2.5 s) must be after 'start' (3 s)",
        ),
        ([{"start": "1:2:3:4", "end": 2, "text": "a"}], "segment 0: 'start' must be seconds"),
        ([{"start": 0, "end": 1, "text": ""}], "segment 0: 'text' must not be empty"),
        ([{"start": -1, "end": 1, "text": "a"}], "segment 0: 'start' must be a finite"),
        ([{"start": 0, "end": "00:01:75", "text": "a"}], "segment 0: 'end' '00:01:75' has"),
        ([{"start": 0, "end": 1, "text": "a"}, "b"], "segment 1: must be an object"),
        ({"lines": []}, 'expected an object with a "segments" list'),
        ([], "no segments"),
    ],
)
def test_load_transcript_rejects_malformed_entries(
    tmp_path: Path, data: object, expected: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_load_transcript_rejects_unknown_extensions_and_bad_json(tmp_path: Path) -> None:
    # .srt, .vtt and .csv are read too now (tests/unit/dubbing/test_transcripts.py); .ass is not.
    ass = tmp_path / "t.ass"
    ass.write_text("[Script Info]\n", encoding="utf-8")
    with pytest.raises(
        TranscriptError, match=r"unsupported transcript format '\.ass'; supported: \.csv, \.json"
    ):
        load_transcript(ass)
    broken = tmp_path / "t.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(TranscriptError, match="not valid JSON"):
        load_transcript(broken)


def test_parse_time() -> None:
    assert parse_time(2) == 2.0
    assert parse_time("01:00:00.5") == 3600.5
    assert parse_time("00:00:01,250") == 1.25
    assert parse_time("12.5") == 12.5
    with pytest.raises(ValueError):
        parse_time(True)


async def test_upload_asset_streams_256_kib_chunks_with_the_sha256_first(
    client: DubbingClient, fake: FakeDubbing, tmp_path: Path
) -> None:
    content = bytes(range(256)) * (3 * 1024 + 7)  # 3 chunks of 256 KiB and a bit
    path = tmp_path / "music.flac"
    path.write_bytes(content)
    fake.upload_errors = [rich(grpc.StatusCode.UNAVAILABLE, "", "restarting")]

    asset = await client.upload_asset(path)

    assert asset.filename == "music.flac" and asset.size_bytes == len(content)
    # UNAVAILABLE: the whole file was sent again from the start.
    assert len(fake.uploads) == 2
    for messages in fake.uploads:
        assert [len(m.chunk) for m in messages] == [UPLOAD_CHUNK_BYTES] * 3 + [7 * 256]
        assert messages[0].filename == "music.flac"
        assert messages[0].sha256 == hashlib.sha256(content).hexdigest()
        assert all(not m.filename and not m.sha256 for m in messages[1:])
        assert b"".join(m.chunk for m in messages) == content


async def test_upload_asset_from_bytes(client: DubbingClient, fake: FakeDubbing) -> None:
    asset = await client.upload_asset(b"abc", filename="room.wav")
    [messages] = fake.uploads
    assert [(m.filename, m.chunk) for m in messages] == [("room.wav", b"abc")]
    assert asset.sha256 == hashlib.sha256(b"abc").hexdigest()
    await client.upload_asset(b"")
    assert [(m.filename, m.chunk, m.sha256) for m in fake.uploads[1]] == [
        ("", b"", hashlib.sha256(b"").hexdigest())
    ]


async def test_upload_asset_errors_are_the_error_tree(
    client: DubbingClient, fake: FakeDubbing
) -> None:
    fake.upload_errors = [
        rich(
            grpc.StatusCode.INVALID_ARGUMENT,
            errors.Reason.CHECKSUM_MISMATCH,
            "checksum",
            [("sha256", "does not match")],
        )
    ]
    with pytest.raises(InvalidArgument) as exc:
        await client.upload_asset(b"abc")
    assert exc.value.reason == "CHECKSUM_MISMATCH"
    assert exc.value.field_violations == [("sha256", "does not match")]


def test_background_audio_from_url_or_asset_name() -> None:
    assert background_audio("https://example.com/bed.mp3") == pb.BackgroundAudio(
        url="https://example.com/bed.mp3"
    )
    bg = background_audio("assets/" + "a" * 32, gain_db=-6.0, ducking_db=0.0)
    assert bg.asset == "assets/" + "a" * 32 and bg.gain_db == -6.0
    assert bg.HasField("ducking_db") and bg.ducking_db == 0.0
    assert not background_audio("http://x/y").HasField("ducking_db")
    with pytest.raises(ValueError, match="upload_asset"):
        background_audio("bed.wav")


# -- CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, gateway: str, fake: FakeDubbing) -> CliRunner:
    monkeypatch.setattr(cli_app, "RETRY", FAST)
    monkeypatch.delenv("DUBBING_GATEWAY", raising=False)
    return CliRunner()


def test_cli_submit_prints_the_job_id_first(
    cli: CliRunner, gateway: str, fake: FakeDubbing
) -> None:
    result = cli.invoke(
        app,
        [
            "--gateway",
            gateway,
            "submit",
            str(EXAMPLE),
            "--to",
            "fr",
            "--gender",
            "female",
            "--format",
            "mp3",
            "--sample-rate",
            "16000",
            "--label",
            "team=demo",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["job-1"]
    sent = fake.submits[0]
    assert sent.transcript.voice.gender == pb.GENDER_FEMALE
    assert sent.transcript.output.format == pb.AUDIO_FORMAT_MP3
    assert sent.transcript.output.sample_rate_hz == 16000
    assert dict(sent.labels) == {"team": "demo"}
    assert sent.request_id


def test_cli_submit_wait_exits_1_when_the_job_failed(
    cli: CliRunner, gateway: str, fake: FakeDubbing
) -> None:
    fake.outcome = State.STATE_FAILED
    result = cli.invoke(app, ["--gateway", gateway, "submit", str(EXAMPLE), "--to", "fr", "--wait"])
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0] == "job-1"
    assert "PROVIDER_ERROR" in result.stderr
    assert "espeak crashed" in result.stderr
    assert "Traceback" not in result.output


def test_cli_submit_watch_exits_0_when_the_job_failed(
    cli: CliRunner, gateway: str, fake: FakeDubbing
) -> None:
    fake.outcome = State.STATE_FAILED
    result = cli.invoke(
        app, ["--gateway", gateway, "submit", str(EXAMPLE), "--to", "fr", "--watch"]
    )
    assert result.exit_code == 0, result.output
    assert "RUNNING mixing 80% (attempt 1)" in result.stderr


def test_cli_submit_wait_output_downloads_the_result(
    cli: CliRunner, gateway: str, fake: FakeDubbing, tmp_path: Path
) -> None:
    target = tmp_path / "dub.wav"
    result = cli.invoke(
        app,
        ["--gateway", gateway, "submit", str(EXAMPLE), "--to", "fr", "--wait", "-o", str(target)],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "job-1"
    assert "job job-1 SUCCEEDED" in lines
    assert any("26.00 s" in line for line in lines)
    assert target.read_bytes() == fake.audio


def test_cli_invalid_argument_exits_2_with_the_fields(cli: CliRunner, gateway: str) -> None:
    result = cli.invoke(app, ["--gateway", gateway, "submit", str(EXAMPLE), "--to", "xx"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: INVALID_ARGUMENT (INVALID_ARGUMENT): the request is invalid"
    assert "  request.transcript.script.segments[2].end: must be after start" in lines
    assert "Traceback" not in result.output


def test_cli_malformed_transcript_exits_2(cli: CliRunner, gateway: str, tmp_path: Path) -> None:
    path = write(tmp_path, [{"start": 2, "end": 1, "text": "a"}])
    result = cli.invoke(app, ["--gateway", gateway, "submit", str(path), "--to", "fr"])
    assert result.exit_code == 2
    assert "segment 0: 'end' (1 s) must be after 'start' (2 s)" in result.stderr


def test_cli_bad_label_exits_2(cli: CliRunner, gateway: str) -> None:
    result = cli.invoke(
        app, ["--gateway", gateway, "submit", str(EXAMPLE), "--to", "fr", "--label", "oops"]
    )
    assert result.exit_code == 2
    assert "key=value" in result.output


def test_cli_unreachable_gateway_names_the_address(cli: CliRunner, closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    result = cli.invoke(app, ["get", "job-1"], env={"DUBBING_GATEWAY": address})
    assert result.exit_code == 1
    assert f"error: cannot reach the gateway at {address}" in result.stderr
    assert "Traceback" not in result.output


def test_cli_cancel_finished_job_exits_1(cli: CliRunner, gateway: str, fake: FakeDubbing) -> None:
    cli.invoke(app, ["--gateway", gateway, "submit", str(EXAMPLE), "--to", "fr"])
    result = cli.invoke(app, ["--gateway", gateway, "cancel", "job-1"])
    assert result.exit_code == 1
    assert "FAILED_PRECONDITION (JOB_ALREADY_FINISHED)" in result.stderr


def test_cli_get_list_languages_download_watch(
    cli: CliRunner, gateway: str, fake: FakeDubbing, tmp_path: Path
) -> None:
    base = ["--gateway", gateway]
    assert cli.invoke(app, [*base, "submit", str(EXAMPLE), "--to", "fr"]).exit_code == 0

    got = cli.invoke(app, [*base, "get", "job-1", "--json"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["state"] == "STATE_SUCCEEDED"
    shown = cli.invoke(app, [*base, "get", "job-1"])
    assert "SUCCEEDED" in shown.stdout and "results/job-1/1.wav" in shown.stdout

    listed = cli.invoke(app, [*base, "list", "--limit", "3", "--state", "running", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [
        "listed-0",
        "listed-1",
        "listed-2",
    ]
    assert list(fake.list_requests[0].states) == [State.STATE_RUNNING]
    table = cli.invoke(app, [*base, "list"])
    assert "listed-4" in table.stdout

    languages = cli.invoke(app, [*base, "languages"])
    assert languages.exit_code == 0
    assert "female, male" in languages.stdout
    as_json = cli.invoke(app, [*base, "languages", "--json"])
    assert json.loads(as_json.stdout)["providers"][0]["provider"] == "local"

    target = tmp_path / "r.wav"
    downloaded = cli.invoke(app, [*base, "download", "job-1", "-o", str(target)])
    assert downloaded.exit_code == 0, downloaded.output
    assert target.read_bytes() == fake.audio

    watched = cli.invoke(app, [*base, "watch", "job-1"])
    assert watched.exit_code == 0, watched.output
    assert "job job-1 SUCCEEDED" in watched.stdout
    assert "QUEUED queued 0%" in watched.stderr


def test_cli_submit_srt_prints_notes_as_warnings(
    cli: CliRunner, gateway: str, fake: FakeDubbing, tmp_path: Path
) -> None:
    path = tmp_path / "talk.srt"
    path.write_bytes(
        "1\r\n00:00:01,000 --> 00:00:03,000\r\n<i>Bonjour</i>\r\n\r\n"
        "2\r\n00:00:02,500 --> 00:00:04,000\r\nDéjà été\r\n".encode("cp1252")
    )
    result = cli.invoke(app, ["--gateway", gateway, "submit", str(path), "--to", "fr"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["job-1"]
    assert (
        f"warning: {path}: line 2: trimmed end from 00:00:03.000 to 00:00:02.500 "
        "to avoid overlapping line 6"
    ) in result.stderr
    sent = fake.submits[0].transcript.script
    assert [(s.text, s.end.ToMilliseconds()) for s in sent.segments] == [
        ("Bonjour", 2500),
        ("Déjà été", 4000),
    ]


def test_cli_submit_csv_fps_and_line_errors(
    cli: CliRunner, gateway: str, fake: FakeDubbing, tmp_path: Path
) -> None:
    path = tmp_path / "talk.csv"
    path.write_text(
        "speaker,start_time,end_time,transcription,translation\n"
        "Adam,0:00:01:00,0:00:02:12,Hello,Bonjour\n"
    )
    base = ["--gateway", gateway, "submit", str(path), "--to", "fr"]
    ambiguous = cli.invoke(app, base)
    assert ambiguous.exit_code == 2
    assert f"{path}: line 2: cannot infer the frame rate" in ambiguous.stderr
    assert fake.submits == []

    result = cli.invoke(app, [*base, "--csv-fps", "24"])
    assert result.exit_code == 0, result.output
    (segment,) = fake.submits[0].transcript.script.segments
    assert (segment.text, segment.speaker, segment.end.ToMilliseconds()) == (
        "Bonjour",
        "Adam",
        2500,
    )


def test_cli_shows_the_timing_report(cli: CliRunner, gateway: str, fake: FakeDubbing) -> None:
    def secs(x: float) -> duration_pb2.Duration:
        d = duration_pb2.Duration()
        d.FromNanoseconds(round(x * 1e9))
        return d

    report = pb.TimingReport(
        summary=pb.TimingSummary(
            segments=2,
            share_duration_error_over300ms=0.5,
            share_shorter_over300ms=0.5,
            mean_stretch=1.1,
            max_stretch=1.2,
            truncations=1,
            max_start_offset=secs(0.004),
        ),
        segments=[
            pb.SegmentTiming(
                index=0,
                window_start=secs(0.5),
                window_end=secs(3.0),
                speech_start=secs(0.5),
                speech_end=secs(2.9),
                speed=1.0,
                stretch=1.0,
            ),
            pb.SegmentTiming(
                index=1,
                window_start=secs(3.0),
                window_end=secs(4.0),
                speech_start=secs(3.0),
                speech_end=secs(4.0),
                speed=1.3,
                stretch=1.2,
                overrun=secs(0.25),
                remedies=[
                    pb.TIMING_REMEDY_NATIVE_RATE,
                    pb.TIMING_REMEDY_TIME_STRETCH,
                    pb.TIMING_REMEDY_TRUNCATE,
                ],
            ),
        ],
    )
    base = ["--gateway", gateway]
    assert cli.invoke(app, [*base, "submit", str(EXAMPLE), "--to", "fr"]).exit_code == 0
    fake.histories["job-1"][-1].result.timing.CopyFrom(report)

    shown = cli.invoke(app, [*base, "get", "job-1", "--timing"])
    assert shown.exit_code == 0, shown.output
    assert (
        "2 segments, 50% off by > 0.3 s (50% shorter, 0% longer), stretch mean 1.10 max 1.20, "
        "1 truncated" in shown.stdout
    )
    assert "start offset <= 4 ms" in shown.stdout
    assert "rate, stretch, truncate" in shown.stdout and "3.00-4.00" in shown.stdout
    plain = cli.invoke(app, [*base, "get", "job-1"])
    assert "rate, stretch, truncate" not in plain.stdout  # the table only with --timing
