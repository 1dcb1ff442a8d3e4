"""The public API over a real socket, against real gateway/worker/nats-server processes."""

from __future__ import annotations

import asyncio
import io
import uuid
import wave
from collections.abc import AsyncIterator

import grpc
import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
from google.protobuf import descriptor_pb2, duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.helpers import FRENCH_LINES, rich_error, segment, transcript_request

State = pb.Job.State


async def submit(stub: pb_grpc.DubbingServiceAsyncStub, request: pb.DubRequest) -> pb.Job:
    response: pb.SubmitDubResponse = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
    return response.job


async def watch_all(
    stub: pb_grpc.DubbingServiceAsyncStub, job_id: str, after: int = 0
) -> list[pb.Job]:
    return [
        r.job async for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_sequence=after))
    ]


async def download(
    stub: pb_grpc.DubbingServiceAsyncStub, job_id: str
) -> tuple[pb.DubResult, bytes]:
    result = None
    buf = bytearray()
    async for part in stub.DownloadResult(pb.DownloadResultRequest(job_id=job_id)):
        if part.HasField("result"):
            result = part.result
        buf += part.chunk
    assert result is not None
    return result, bytes(buf)


def read_wav(data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, w.getframerate()


def rms(x: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


async def test_transcript_job_end_to_end(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    request = transcript_request(request_id=str(uuid.uuid4()), sample_rate=22050)
    job = await submit(stub, request)
    assert job.state == State.STATE_QUEUED and job.sequence == 1

    history = await watch_all(stub, job.id)
    # The current snapshot comes first (the worker may already have started it).
    assert history[0].sequence >= job.sequence
    sequences = [j.sequence for j in history]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))  # no gaps
    stages = [j.stage for j in history]
    assert "synthesizing" in stages and "uploading" in stages
    final = history[-1]
    assert final.state == State.STATE_SUCCEEDED, final.error
    assert final.attempt == 1 and final.progress == 1.0
    assert final.usage.generated_audio_seconds > 0
    timing = final.result.timing
    assert [t.index for t in timing.segments] == [0, 1, 2, 3]
    assert timing.summary.segments == 4 and timing.summary.truncations == 0
    # Billed characters are what the provider was sent: each utterance once, with
    # stitched lines joined by a space.
    utterances = {tuple(sorted({t.index, *t.stitched_with})) for t in timing.segments}
    expected = sum(len(" ".join(FRENCH_LINES[i] for i in group)) for group in utterances)
    assert final.usage.characters == expected
    if len(utterances) < 4:
        assert timing.segments[0].stitched_with  # these lines are short, close, one speaker

    result, data = await download(stub, job.id)
    assert result.size_bytes == len(data) and result.format == pb.AUDIO_FORMAT_WAV
    audio, rate = read_wav(data)
    assert rate == 22050 == result.sample_rate_hz
    segments = request.transcript.script.segments
    last_end = segments[-1].end.ToNanoseconds() / 1e9
    assert len(audio) / rate >= last_end

    def seconds(d: duration_pb2.Duration) -> float:
        return d.ToNanoseconds() / 1e9

    # Where speech may be: each window; a stitched group's joint window; borrowed
    # silence up to the reported speech end. Measured on the decoded audio.
    allowed = np.zeros(len(audio), dtype=bool)
    for t in timing.segments:
        end = max(seconds(t.window_end), seconds(t.speech_end))
        allowed[int(seconds(t.window_start) * rate) : int(end * rate) + 1] = True
        # The report's speech position is where the audio has speech.
        a, b = int(seconds(t.speech_start) * rate), int(seconds(t.speech_end) * rate)
        assert rms(audio[a:b]) > 0.02, f"no speech where segment {t.index} is reported"
        assert abs(seconds(t.speech_start) - seconds(t.window_start)) < 0.05 or t.stitched_with
    for seg in segments:
        a = int(seg.start.ToNanoseconds() / 1e9 * rate)
        b = int(seg.end.ToNanoseconds() / 1e9 * rate)
        assert rms(audio[a:b]) > 0.02, f"no speech in window {seg.start.ToJsonString()}"
    total_energy = float(np.sum(audio * audio))
    assert float(np.sum(audio[~allowed] ** 2)) < 0.01 * total_energy
    # Loudness, measured on the decoded output: the default target is -16 LUFS.
    measured = pyloudnorm.Meter(rate).integrated_loudness(audio)
    assert abs(measured - (-16.0)) < 1.0
    assert abs(result.loudness_lufs - measured) < 0.3


async def test_broadcast_loudness_target(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    request = transcript_request()
    request.transcript.output.loudness_lufs = -23.0
    job = await submit(stub, request)
    final = (await watch_all(stub, job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED, final.error
    _, data = await download(stub, job.id)
    audio, rate = read_wav(data)
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(audio) - (-23.0)) < 1.0


async def test_watch_resumes_after_a_sequence(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    job = await submit(stub, transcript_request())
    full = await watch_all(stub, job.id)
    middle = full[len(full) // 2].sequence
    resumed = await watch_all(stub, job.id, after=middle)
    assert [j.sequence for j in resumed] == [j.sequence for j in full if j.sequence > middle]
    # Resuming after the terminal version ends at once with nothing to send.
    assert await watch_all(stub, job.id, after=full[-1].sequence) == []


@pytest.mark.parametrize(
    ("fmt", "magic"),
    [
        (pb.AUDIO_FORMAT_MP3, (b"ID3", b"\xff\xfb", b"\xff\xf3")),
        (pb.AUDIO_FORMAT_FLAC, (b"fLaC",)),
        (pb.AUDIO_FORMAT_OPUS, (b"OggS",)),
    ],
)
async def test_output_formats(
    stub: pb_grpc.DubbingServiceAsyncStub, fmt: int, magic: tuple[bytes, ...]
) -> None:
    job = await submit(stub, transcript_request([segment(0.0, 2.0, "Bonjour.")], output_format=fmt))
    final = (await watch_all(stub, job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED, final.error
    result, data = await download(stub, job.id)
    assert result.format == fmt
    assert data.startswith(magic)


async def test_submit_is_idempotent_by_request_id(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    rid = str(uuid.uuid4())
    first = await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request(request_id=rid)))
    again = await stub.SubmitDub(pb.SubmitDubRequest(request=transcript_request(request_id=rid)))
    assert first.created and not again.created
    assert again.job.id == first.job.id

    changed = transcript_request(request_id=rid, language="de")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SubmitDub(pb.SubmitDubRequest(request=changed))
    err = await rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "REQUEST_ID_REUSED" and err.domain == "dubbing.v1"
    assert "request.request_id" in err.fields
    assert err.metadata["job_id"] == first.job.id


def _with_segments(*segs: pb.Segment) -> pb.DubRequest:
    return transcript_request(list(segs))


SEGMENTS = "request.transcript.script.segments"

INVALID_REQUESTS = {
    "no_work": (pb.DubRequest(target_language="fr"), "request.work"),
    "empty_segments": (transcript_request([]), SEGMENTS),
    "end_before_start": (_with_segments(segment(2.0, 1.0, "Salut")), f"{SEGMENTS}[0].end"),
    "end_equals_start": (_with_segments(segment(1.0, 1.0, "Salut")), f"{SEGMENTS}[0].end"),
    "negative_start": (_with_segments(segment(-1.0, 1.0, "Salut")), f"{SEGMENTS}[0].start"),
    "overlapping": (
        _with_segments(segment(0.0, 2.0, "Un"), segment(1.5, 3.0, "Deux")),
        f"{SEGMENTS}[1].start",
    ),
    "unordered": (
        _with_segments(segment(3.0, 4.0, "Un"), segment(0.0, 1.0, "Deux")),
        f"{SEGMENTS}[1].start",
    ),
    "empty_text": (_with_segments(segment(0.0, 1.0, "   ")), f"{SEGMENTS}[0].text"),
    "bad_language": (transcript_request(language="not a language!"), "request.target_language"),
    "missing_language": (transcript_request(language=""), "request.target_language"),
    "unknown_provider": (transcript_request(provider="acme"), "request.provider"),
    "too_many_segments": (
        _with_segments(*[segment(i * 0.5, i * 0.5 + 0.4, "a") for i in range(5001)]),
        SEGMENTS,
    ),
    "too_many_characters": (
        _with_segments(*[segment(i * 1.0, i * 1.0 + 0.9, "x" * 4999) for i in range(101)]),
        SEGMENTS,
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_REQUESTS))
async def test_invalid_requests_name_the_field(
    stub: pb_grpc.DubbingServiceAsyncStub, case: str
) -> None:
    request, field = INVALID_REQUESTS[case]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await submit(stub, request)
    err = await rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_ARGUMENT"
    assert field in err.fields, err.violations


async def test_nobody_serves(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    cases = [
        (transcript_request(provider="elevenlabs"), "PROVIDER_UNAVAILABLE"),
        (
            transcript_request(language="xh"),
            "LANGUAGE_UNAVAILABLE",
        ),  # isiXhosa: well-formed, not spoken by espeak
        (
            pb.DubRequest(
                target_language="fr",
                media=pb.MediaDubbing(source_url="https://example.com/a.mp4"),
            ),
            "MEDIA_DUBBING_UNAVAILABLE",
        ),
    ]
    for request, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await submit(stub, request)
        err = await rich_error(exc.value)
        assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reason)


async def test_get_and_cancel_errors(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetJob(pb.GetJobRequest(job_id=str(uuid.uuid4())))
    err = await rich_error(exc.value)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetJob(pb.GetJobRequest(job_id="nope"))  # not an id the gateway gives
    err = await rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in err.fields

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetJob(pb.GetJobRequest(job_id=""))
    err = await rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in err.fields

    job = await submit(stub, transcript_request())
    final = (await watch_all(stub, job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.CancelJob(pb.CancelJobRequest(job_id=job.id))
    err = await rich_error(exc.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_ALREADY_FINISHED")


async def test_cancel_a_running_job(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    from tests.helpers import long_request

    job = await submit(stub, long_request(400))
    watch = stub.WatchJob(pb.WatchJobRequest(job_id=job.id))
    seen: list[pb.Job] = []
    async for response in watch:
        seen.append(response.job)
        if response.job.state == State.STATE_RUNNING and len(seen) == 2:
            cancelled = await stub.CancelJob(pb.CancelJobRequest(job_id=job.id))
            assert cancelled.job.state == State.STATE_CANCELLED
    assert seen[-1].state == State.STATE_CANCELLED
    got = (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).job
    assert got.state == State.STATE_CANCELLED and got.sequence == seen[-1].sequence
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await download(stub, job.id)
    assert (await rich_error(exc.value)).reason == "JOB_NOT_SUCCEEDED"


async def test_list_jobs_pagination(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    label = str(uuid.uuid4())
    created = []
    for _ in range(7):
        request = transcript_request()
        request.labels["batch"] = label
        created.append((await submit(stub, request)).id)

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListJobs(pb.ListJobsRequest(page_size=3, page_token=token))
        assert len(page.jobs) <= 3
        seen += [j.id for j in page.jobs]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert set(created) <= set(seen)
    # Newest first: our jobs appear in reverse submission order.
    ours = [j for j in seen if j in created]
    assert ours == list(reversed(created))

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListJobs(pb.ListJobsRequest(page_size=-1))
    err = await rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in err.fields

    first = await stub.ListJobs(pb.ListJobsRequest(page_size=1))
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListJobs(
            pb.ListJobsRequest(
                page_size=1, page_token=first.next_page_token, states=[State.STATE_FAILED]
            )
        )
    err = await rich_error(exc.value)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")

    queued_or_running = await stub.ListJobs(
        pb.ListJobsRequest(page_size=1000, states=[State.STATE_SUCCEEDED])
    )
    assert all(j.state == State.STATE_SUCCEEDED for j in queued_or_running.jobs)


async def test_list_languages_reflects_live_workers(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    response = await stub.ListLanguages(pb.ListLanguagesRequest())
    providers = {p.provider: p for p in response.providers}
    assert set(providers) == {"local"}
    local = providers["local"]
    assert local.live_workers == 1 and local.transcript_dubbing and not local.media_dubbing
    codes = {lang.code.split("-")[0] for lang in local.languages}
    assert {"en", "fr", "de", "es"} <= codes
    french = next(lang for lang in local.languages if lang.code == "fr")
    assert set(french.genders) == {pb.GENDER_FEMALE, pb.GENDER_MALE}
    only = await stub.ListLanguages(pb.ListLanguagesRequest(provider="minimax"))
    assert list(only.providers) == []


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "dubbing.v1.DubbingService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

    names: set[str] = set()
    async for response in refl.ServerReflectionInfo(
        _aiter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        names |= {s.name for s in response.list_services_response.service}
    assert "dubbing.v1.DubbingService" in names and "grpc.health.v1.Health" in names
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_answers_under_both_protocol_names(
    channel: grpc.aio.Channel, version: str
) -> None:
    """grpc-js and newer grpcurl ask grpc.reflection.v1 first; the messages are v1alpha's
    on the wire, so a client built from either proto reads the answer."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="dubbing.v1.DubbingService"
    )
    responses = [r async for r in call(_aiter([request]))]
    (response,) = responses
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.package == "dubbing.v1" and f.service for f in files)


async def _aiter(
    items: list[reflection_pb2.ServerReflectionRequest],
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    for item in items:
        yield item


async def test_many_watchers_see_the_same_changes(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    from tests.helpers import long_request

    job = await submit(stub, long_request(60))
    watchers = [watch_all(stub, job.id) for _ in range(40)]
    seen = await asyncio.gather(*watchers)
    histories = [[(j.sequence, j.state, j.stage) for j in h] for h in seen]
    reference = max(histories, key=len)  # the earliest to join saw the most
    assert reference[-1][1] == State.STATE_SUCCEEDED
    sequences = [x[0] for x in reference]
    assert sequences == list(range(sequences[0], sequences[-1] + 1))
    # A watcher may join later (its snapshot is newer); from there on it sees
    # exactly the same changes, in order, none missing or repeated.
    for history in histories:
        start = sequences.index(history[0][0])
        assert history == reference[start:]


SRT_FILE = (
    "1\n00:00:00,500 --> 00:00:03,000\nBonjour à tous.\n\n"
    "2\n00:00:02,800 --> 00:00:05,500\nMerci d'être <b>là</b>.\n"
).encode("utf-16")  # with a BOM, as Windows tools save it


async def test_transcript_file_through_the_api(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    request = pb.DubRequest(
        request_id=str(uuid.uuid4()),
        target_language="fr",
        transcript=pb.TranscriptDubbing(
            file=pb.TranscriptFile(content=SRT_FILE, filename="episode.srt")
        ),
    )
    first: pb.SubmitDubResponse = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
    assert first.created
    assert first.warnings == [
        "line 2: trimmed end from 00:00:03.000 to 00:00:02.800 to avoid overlapping line 6"
    ]
    stored = first.job.request.transcript
    assert stored.WhichOneof("source") == "script"  # workers get segments, not the file
    assert [s.text for s in stored.script.segments] == ["Bonjour à tous.", "Merci d'être là."]
    # A retry sends the same file: the same job.
    again: pb.SubmitDubResponse = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
    assert not again.created and again.job.id == first.job.id
    final = (await watch_all(stub, first.job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED, final.error


async def test_unreadable_transcript_file_names_the_line(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    broken = pb.TranscriptFile(content=b"1\n00:00:01,000 --> 00:00:0x,000\nHi\n", format="srt")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await submit(
            stub, pb.DubRequest(target_language="fr", transcript=pb.TranscriptDubbing(file=broken))
        )
    err = await rich_error(exc.value)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    [(field, description)] = err.violations
    assert field == "request.transcript.file.content" and "line 2" in description
