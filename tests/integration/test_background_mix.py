"""A background track under the dub, end to end: uploaded or fetched from a URL by the
worker, ducked under the speech, measured on the decoded result."""

from __future__ import annotations

import http.server
import io
import threading
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest
import scipy.signal

from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.helpers import segment
from tests.integration.test_api import download, read_wav, submit, watch_all

State = pb.Job.State
TONE_HZ = 70.0  # below the female voice's fundamental (~200 Hz): speech barely touches it
BG_SECONDS = 9.0
RATE = 24_000


def tone_wav(seconds: float = BG_SECONDS, rate: int = 16_000, amplitude: float = 0.1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (amplitude * np.sin(2 * np.pi * TONE_HZ * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def tone_level(x: npt.NDArray[np.float64], rate: int, start: float, end: float) -> float:
    """dB of the TONE_HZ component in [start, end): a Hann-windowed DFT bin."""
    part = x[int(start * rate) : int(end * rate)]
    t = np.arange(len(part)) / rate
    window = np.hanning(len(part))
    amplitude = abs(np.sum(part * window * np.exp(-2j * np.pi * TONE_HZ * t))) * 2 / window.sum()
    return float(20 * np.log10(amplitude + 1e-12))


def request_with(background: pb.BackgroundAudio) -> pb.DubRequest:
    request = pb.DubRequest(
        request_id=str(uuid.uuid4()),
        target_language="fr",
        provider="local",
        transcript=pb.TranscriptDubbing(
            script=pb.Transcript(
                segments=[
                    segment(1.0, 3.5, "Bonjour et bienvenue dans notre studio."),
                    segment(5.5, 7.5, "Merci beaucoup."),
                ]
            ),
            voice=pb.Voice(gender=pb.GENDER_FEMALE),
            # Broadcast level leaves the limiter idle, so what is measured under the
            # speech is the ducking alone.
            output=pb.OutputOptions(
                format=pb.AUDIO_FORMAT_WAV, sample_rate_hz=RATE, loudness_lufs=-23.0
            ),
        ),
    )
    request.transcript.background.CopyFrom(background)
    return request


class _Files(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def files() -> Iterator[tuple[str, type[_Files]]]:
    """A real HTTP server on a random loopback port, serving `routes`."""
    handler = type("Files", (_Files,), {"routes": {}, "hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


async def run_job(
    stub: pb_grpc.DubbingServiceAsyncStub, request: pb.DubRequest
) -> tuple[pb.Job, npt.NDArray[np.float64] | None]:
    job = await submit(stub, request)
    final = (await watch_all(stub, job.id))[-1]
    if final.state != State.STATE_SUCCEEDED:
        return final, None
    _, data = await download(stub, job.id)
    audio, rate = read_wav(data)
    assert rate == RATE
    return final, audio


def speech_spans(job: pb.Job) -> list[tuple[float, float]]:
    spans = {
        (s.speech_start.ToTimedelta().total_seconds(), s.speech_end.ToTimedelta().total_seconds())
        for s in job.result.timing.segments
    }
    return sorted(spans)


async def test_uploaded_background_is_ducked_under_speech(
    stub: pb_grpc.DubbingServiceAsyncStub,
) -> None:
    async def chunks() -> AsyncIterator[pb.UploadAssetRequest]:
        data = tone_wav()
        yield pb.UploadAssetRequest(filename="tone.wav", chunk=data[: len(data) // 2])
        yield pb.UploadAssetRequest(chunk=data[len(data) // 2 :])

    uploaded: pb.UploadAssetResponse = await stub.UploadAsset(chunks())
    job, audio = await run_job(stub, request_with(pb.BackgroundAudio(asset=uploaded.asset.name)))
    assert job.state == State.STATE_SUCCEEDED, job.error
    assert audio is not None

    # The background is longer than the transcript: the output lasts as long as it.
    assert abs(len(audio) / RATE - BG_SECONDS) < 0.05
    assert abs(job.result.duration.ToTimedelta().total_seconds() - BG_SECONDS) < 0.05

    spans = speech_spans(job)
    assert len(spans) == 2
    # Inside speech (away from the ramps) against well clear of it: 12 dB by default.
    inside = [tone_level(audio, RATE, s + 0.2, e - 0.2) for s, e in spans]
    outside = [tone_level(audio, RATE, 0.0, spans[0][0] - 0.3), tone_level(audio, RATE, 8.2, 9.0)]
    for level in inside:
        assert abs((np.mean(outside) - level) - 12.0) < 1.5, (inside, outside)
    # The background outside speech keeps a steady level (both clear regions agree).
    assert abs(outside[0] - outside[1]) < 1.0

    measured = pyloudnorm.Meter(RATE).integrated_loudness(audio)
    assert abs(measured - (-23.0)) <= 1.0
    assert abs(job.result.loudness_lufs - measured) < 0.3
    assert float(np.max(np.abs(audio))) <= 10 ** (-1 / 20) + 1e-3


async def test_background_url_with_ducking_off_and_a_gain(
    stub: pb_grpc.DubbingServiceAsyncStub, files: tuple[str, type[_Files]]
) -> None:
    base, handler = files
    handler.routes["/tone.wav"] = (200, tone_wav())
    levels = {}
    for gain in (0.0, -6.0):
        background = pb.BackgroundAudio(url=f"{base}/tone.wav", gain_db=gain, ducking_db=0.0)
        job, audio = await run_job(stub, request_with(background))
        assert job.state == State.STATE_SUCCEEDED, job.error
        assert audio is not None
        spans = speech_spans(job)
        inside = [tone_level(audio, RATE, s + 0.2, e - 0.2) for s, e in spans]
        outside = tone_level(audio, RATE, 8.2, 9.0)
        # No ducking: the tone is as loud under speech as clear of it.
        for level in inside:
            assert abs(outside - level) < 1.0, (inside, outside)
        # The tone against the speech around it (the tone filtered out of the speech):
        # the dub is at the target before mixing.
        voice = scipy.signal.sosfilt(
            scipy.signal.butter(8, 150, "highpass", fs=RATE, output="sos"), audio
        )
        speech = float(
            np.sqrt(
                np.mean(
                    np.concatenate([voice[int(s * RATE) : int(e * RATE)] for s, e in spans]) ** 2
                )
            )
        )
        levels[gain] = outside - 20 * np.log10(speech)
    assert handler.hits.count("/tone.wav") == 2  # the worker fetched it, once per job
    # gain_db lowers the background against the dub by that much (the final gain
    # moves both together, and speech dominates the loudness).
    assert abs((levels[0.0] - levels[-6.0]) - 6.0) < 1.0, levels


@pytest.mark.parametrize(
    ("route", "status", "body", "reason"),
    [
        ("/missing.wav", 404, b"", "BACKGROUND_FETCH_FAILED"),
        ("/notes.txt", 200, b"this is not audio at all" * 100, "BACKGROUND_UNREADABLE"),
    ],
)
async def test_background_that_cannot_be_used_fails_the_job_with_the_reason(
    stub: pb_grpc.DubbingServiceAsyncStub,
    files: tuple[str, type[_Files]],
    route: str,
    status: int,
    body: bytes,
    reason: str,
) -> None:
    base, handler = files
    if status != 404:
        handler.routes[route] = (status, body)
    job, _ = await run_job(stub, request_with(pb.BackgroundAudio(url=base + route)))
    assert job.state == State.STATE_FAILED
    assert job.attempt == 1  # permanent: not retried
    from google.rpc import error_details_pb2

    infos = []
    for detail in job.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert [i.reason for i in infos] == [reason], job.error
    assert job.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_job_files_are_removed_when_the_attempt_ends(
    make_stack: StackFactory, files: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    base, handler = files
    handler.routes["/tone.wav"] = (200, tone_wav())
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    stack = make_stack(DUBBING_WORK_DIR=str(work_dir)).start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        ok, audio = await run_job(stub, request_with(pb.BackgroundAudio(url=f"{base}/tone.wav")))
        assert ok.state == State.STATE_SUCCEEDED and audio is not None
        assert list(work_dir.iterdir()) == []  # gone before SUCCEEDED was reported
        failed, _ = await run_job(stub, request_with(pb.BackgroundAudio(url=f"{base}/nope.wav")))
        assert failed.state == State.STATE_FAILED
        assert list(work_dir.iterdir()) == []
    # Both jobs got as far as fetching their background.
    assert handler.hits == ["/tone.wav", "/nope.wav"]


def stereo_wav(seconds: float = BG_SECONDS, rate: int = 16_000) -> bytes:
    """70 Hz on the left, 110 Hz on the right."""
    t = np.arange(int(seconds * rate)) / rate
    frames = np.stack([np.sin(2 * np.pi * TONE_HZ * t), np.sin(2 * np.pi * 110.0 * t)], axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.1 * frames * 32767).astype("<i2").tobytes())
    return buf.getvalue()


async def test_a_stereo_background_gives_a_stereo_result(
    stub: pb_grpc.DubbingServiceAsyncStub, files: tuple[str, type[_Files]]
) -> None:
    base, handler = files
    handler.routes["/stereo.wav"] = (200, stereo_wav())
    job = await submit(stub, request_with(pb.BackgroundAudio(url=f"{base}/stereo.wav")))
    final = (await watch_all(stub, job.id))[-1]
    assert final.state == State.STATE_SUCCEEDED, final.error
    assert final.result.channels == 2
    _, data = await download(stub, job.id)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, RATE)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2) / 32768.0
    left, right = frames[:, 0], frames[:, 1]
    # Each tone stays on its own side, clear of speech.
    assert tone_level(left, RATE, 8.2, 9.0) - tone_level(right, RATE, 8.2, 9.0) > 30
    # The voice is in the centre: the same in both channels once the tones are filtered out.
    high = scipy.signal.butter(8, 150, "highpass", fs=RATE, output="sos")
    spans = speech_spans(final)
    voice = [
        float(np.sqrt(np.mean(scipy.signal.sosfilt(high, ch)[int(s * RATE) : int(e * RATE)] ** 2)))
        for ch in (left, right)
        for s, e in spans[:1]
    ]
    assert 20 * np.log10(voice[0] / voice[1]) == pytest.approx(0.0, abs=0.2)
    measured = pyloudnorm.Meter(RATE).integrated_loudness(frames)
    assert abs(measured - (-23.0)) <= 1.0
