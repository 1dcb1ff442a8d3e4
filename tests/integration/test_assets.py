"""UploadAsset and background audio over a real socket, against real gateway and nats-server.

What the worker does with the background is not checked here.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import uuid
import wave
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import nats
import pytest
from google.protobuf import json_format
from typer.testing import CliRunner

from dubbing import bus
from dubbing.cli import _app as cli_app
from dubbing.cli import app
from dubbing.client import DubbingClient, RetryPolicy
from dubbing.devstack import GATEWAY_READY, Stack
from dubbing.devstack import gateway as gateway_process
from dubbing.v1 import dubbing_pb2 as pb
from dubbing.v1 import dubbing_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.helpers import rich_error, transcript_request

MIB = 1024 * 1024
BACKGROUND = "request.transcript.background"
HOUR = 3600


async def requests(
    messages: Iterable[pb.UploadAssetRequest],
) -> AsyncIterator[pb.UploadAssetRequest]:
    for message in messages:
        yield message


def chunked(
    data: bytes, sizes: Iterable[int], *, filename: str = "", sha256: str = ""
) -> list[pb.UploadAssetRequest]:
    """`data` cut into pieces of the given sizes (the last piece takes the rest)."""
    messages = []
    offset = 0
    for size in sizes:
        messages.append(pb.UploadAssetRequest(chunk=data[offset : offset + size]))
        offset += size
    messages.append(pb.UploadAssetRequest(chunk=data[offset:]))
    messages[0].filename = filename
    messages[0].sha256 = sha256
    return messages


async def upload(
    stub: pb_grpc.DubbingServiceAsyncStub, messages: Iterable[pb.UploadAssetRequest]
) -> pb.Asset:
    response: pb.UploadAssetResponse = await stub.UploadAsset(requests(messages))
    return response.asset


async def stored(nats_url: str, asset: str) -> tuple[bytes, str]:
    """The object's content and description, read back from the assets bucket."""
    nc = await nats.connect(nats_url)
    try:
        store = await nc.jetstream().object_store(bus.ASSETS_BUCKET)
        result = await store.get(bus.asset_object_id(asset))
        assert result.data is not None and result.info is not None
        return result.data, result.info.description or ""
    finally:
        await nc.close()


def wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = int(seconds * rate)
        w.writeframes(
            b"".join(
                int(8000 * math.sin(2 * math.pi * 220 * i / rate)).to_bytes(
                    2, "little", signed=True
                )
                for i in range(frames)
            )
        )
    return buf.getvalue()


def with_background(background: pb.BackgroundAudio) -> pb.DubRequest:
    request = transcript_request(request_id=str(uuid.uuid4()))
    request.transcript.background.CopyFrom(background)
    return request


async def invalid(call: object) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """Reason, violations and metadata of an INVALID_ARGUMENT the awaited call raised."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    err = await rich_error(exc.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert err.domain == "dubbing.v1"
    return err.reason, err.violations, err.metadata


# -- UploadAsset -------------------------------------------------------------------------


async def test_upload_round_trip(stack: Stack, stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    data = wav_bytes()
    sha = hashlib.sha256(data).hexdigest()
    asset = await upload(stub, chunked(data, [1000], filename="bed.wav", sha256=sha.upper()))

    assert asset.name.startswith("assets/") and len(asset.name) == len("assets/") + 32
    assert (asset.filename, asset.size_bytes, asset.sha256) == ("bed.wav", len(data), sha)
    lifetime = asset.expire_time.ToSeconds() - asset.create_time.ToSeconds()
    assert lifetime == 168 * HOUR  # the default DUBBING_ASSET_MAX_AGE_HOURS
    assert await stored(stack.nats.url, asset.name) == (data, "bed.wav")


async def test_upload_in_many_chunks(stack: Stack, stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    data = bytes(range(256)) * 12_000  # ~3 MiB
    sizes = [1, 0, 4095, MIB, 7, 65_536] * 4  # includes an empty message and 1 MiB exactly
    asset = await upload(stub, chunked(data, sizes))
    assert asset.size_bytes == len(data) and asset.filename == ""
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    content, _ = await stored(stack.nats.url, asset.name)
    assert content == data


async def test_client_uploads_a_file(stack: Stack, tmp_path: Path) -> None:
    data = bytes(range(251)) * 5000  # several 256 KiB chunks, the last one short
    path = tmp_path / "room tone.wav"
    path.write_bytes(data)
    async with DubbingClient(stack.listen) as client:
        asset = await client.upload_asset(path)
    assert (asset.filename, asset.size_bytes) == ("room tone.wav", len(data))
    assert await stored(stack.nats.url, asset.name) == (data, "room tone.wav")


async def test_sha256_mismatch(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    reason, violations, metadata = await invalid(
        upload(stub, chunked(b"the content", [3], sha256=wrong))
    )
    assert reason == "CHECKSUM_MISMATCH"
    assert [f for f, _ in violations] == ["sha256"]
    assert metadata == {"expected": wrong, "actual": hashlib.sha256(b"the content").hexdigest()}


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63])
async def test_malformed_sha256(stub: pb_grpc.DubbingServiceAsyncStub, sha: str) -> None:
    reason, violations, _ = await invalid(upload(stub, chunked(b"x", [], sha256=sha)))
    assert reason == "INVALID_ARGUMENT" and [f for f, _ in violations] == ["sha256"]


@pytest.mark.parametrize(
    "messages",
    [[], [pb.UploadAssetRequest(filename="a.wav")], [pb.UploadAssetRequest()] * 3],
    ids=["no_message", "metadata_only", "empty_chunks"],
)
async def test_empty_upload(
    stub: pb_grpc.DubbingServiceAsyncStub, messages: list[pb.UploadAssetRequest]
) -> None:
    reason, violations, _ = await invalid(upload(stub, messages))
    assert reason == "INVALID_ARGUMENT" and [f for f, _ in violations] == ["chunk"]


async def test_chunk_over_1_mib(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    messages = [
        pb.UploadAssetRequest(chunk=b"a" * 10),
        pb.UploadAssetRequest(chunk=b"b" * (MIB + 1)),
    ]
    reason, violations, _ = await invalid(upload(stub, messages))
    assert reason == "INVALID_ARGUMENT"
    [(field, description)] = violations
    assert field == "chunk" and str(MIB) in description


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        (
            [pb.UploadAssetRequest(chunk=b"a"), pb.UploadAssetRequest(chunk=b"b", filename="x")],
            "filename",
        ),
        ([pb.UploadAssetRequest(chunk=b"a"), pb.UploadAssetRequest(sha256="a" * 64)], "sha256"),
        ([pb.UploadAssetRequest(chunk=b"a", filename="a\nb.wav")], "filename"),
        ([pb.UploadAssetRequest(chunk=b"a", filename="a" * 256)], "filename"),
    ],
    ids=["late_filename", "late_sha256", "control_character", "long_filename"],
)
async def test_bad_upload_metadata(
    stub: pb_grpc.DubbingServiceAsyncStub, messages: list[pb.UploadAssetRequest], field: str
) -> None:
    reason, violations, _ = await invalid(upload(stub, messages))
    assert reason == "INVALID_ARGUMENT" and [f for f, _ in violations] == [field]


# -- background audio at SubmitDub ---------------------------------------------------------


async def test_submit_with_an_uploaded_asset(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    asset = await upload(stub, chunked(wav_bytes(), [], filename="bed.wav"))
    request = with_background(pb.BackgroundAudio(asset=asset.name, gain_db=-6.0, ducking_db=9.0))
    response: pb.SubmitDubResponse = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
    assert response.created
    got: pb.GetJobResponse = await stub.GetJob(pb.GetJobRequest(job_id=response.job.id))
    assert got.job.request.transcript.background == request.transcript.background


async def test_submit_with_a_missing_asset(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    name = "assets/" + uuid.uuid4().hex
    request = with_background(pb.BackgroundAudio(asset=name))
    reason, violations, metadata = await invalid(
        stub.SubmitDub(pb.SubmitDubRequest(request=request))
    )
    assert reason == "ASSET_NOT_FOUND" and metadata == {"asset": name}
    assert [f for f, _ in violations] == [f"{BACKGROUND}.asset"]


async def test_submit_with_a_background_url(stub: pb_grpc.DubbingServiceAsyncStub) -> None:
    # Not fetched at submit time: the worker fetches it.
    request = with_background(pb.BackgroundAudio(url="https://example.com/bed.mp3"))
    response: pb.SubmitDubResponse = await stub.SubmitDub(pb.SubmitDubRequest(request=request))
    assert response.job.request.transcript.background.url == "https://example.com/bed.mp3"


BAD_BACKGROUNDS = {
    "no_source": (pb.BackgroundAudio(gain_db=-3.0), f"{BACKGROUND}.source"),
    "ftp_url": (pb.BackgroundAudio(url="ftp://example.com/a.mp3"), f"{BACKGROUND}.url"),
    "no_host": (pb.BackgroundAudio(url="https:///a.mp3"), f"{BACKGROUND}.url"),
    "asset_name": (pb.BackgroundAudio(asset="assets/bed.wav"), f"{BACKGROUND}.asset"),
    "gain_high": (
        pb.BackgroundAudio(url="https://x.example/a", gain_db=21),
        f"{BACKGROUND}.gain_db",
    ),
    "gain_nan": (
        pb.BackgroundAudio(url="https://x.example/a", gain_db=math.nan),
        f"{BACKGROUND}.gain_db",
    ),
    "ducking_negative": (
        pb.BackgroundAudio(url="https://x.example/a", ducking_db=-1),
        f"{BACKGROUND}.ducking_db",
    ),
    "ducking_high": (
        pb.BackgroundAudio(url="https://x.example/a", ducking_db=41),
        f"{BACKGROUND}.ducking_db",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BACKGROUNDS))
async def test_bad_background_fields(stub: pb_grpc.DubbingServiceAsyncStub, case: str) -> None:
    background, field = BAD_BACKGROUNDS[case]
    request = with_background(background)
    reason, violations, _ = await invalid(stub.SubmitDub(pb.SubmitDubRequest(request=request)))
    assert reason == "INVALID_ARGUMENT" and [f for f, _ in violations] == [field]


# -- limits and settings, on a stack of their own ------------------------------------------


async def test_asset_limits_settings_and_nats_outage(make_stack: StackFactory) -> None:
    stack = make_stack(
        workers=0, DUBBING_MAX_ASSET_BYTES="1000", DUBBING_ASSET_MAX_AGE_HOURS="2"
    ).start()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        asset = await upload(stub, chunked(b"x" * 1000, [400]))  # exactly the limit
        assert asset.expire_time.ToSeconds() - asset.create_time.ToSeconds() == 2 * HOUR
        reason, violations, metadata = await invalid(upload(stub, chunked(b"x" * 1001, [600])))
        assert reason == "ASSET_TOO_LARGE" and metadata == {"max_bytes": "1000"}
        assert [f for f, _ in violations] == ["chunk"]
    assert await bucket_max_age(stack) == 2 * HOUR

    # A gateway configured with another age converges the existing bucket to it.
    stack.gateway.stop()
    stack.gateway = gateway_process(
        {**stack.env, "DUBBING_ASSET_MAX_AGE_HOURS": "3"}, log_file=stack.data_dir / "gw2.log"
    )
    stack.gateway.start().wait_for(GATEWAY_READY)
    assert await bucket_max_age(stack) == 3 * HOUR

    # Whether an asset exists cannot be told while NATS is down: UNAVAILABLE, not INTERNAL.
    stack.nats.stop()
    async with grpc.aio.insecure_channel(stack.listen) as channel:
        stub = pb_grpc.DubbingServiceStub(channel)
        request = with_background(pb.BackgroundAudio(asset=asset.name))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.SubmitDub(pb.SubmitDubRequest(request=request))
        err = await rich_error(exc.value)
        assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "BUS_UNAVAILABLE")


async def bucket_max_age(stack: Stack) -> float:
    nc = await nats.connect(stack.nats.url)
    try:
        info = await nc.jetstream().stream_info(f"OBJ_{bus.ASSETS_BUCKET}")
        return info.config.max_age or 0.0
    finally:
        await nc.close()


# -- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(cli_app, "RETRY", RetryPolicy(max_attempts=2, initial_backoff=0.1))
    monkeypatch.delenv("DUBBING_GATEWAY", raising=False)
    return CliRunner()


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transcript.json"


def test_cli_upload(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "bed.wav"
    path.write_bytes(wav_bytes())
    result = cli.invoke(app, ["--gateway", stack.listen, "upload", str(path)])
    assert result.exit_code == 0, result.output
    [name] = result.stdout.splitlines()
    assert name.startswith("assets/")

    as_json = cli.invoke(app, ["--gateway", stack.listen, "upload", str(path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    described = json.loads(as_json.stdout)
    assert described["filename"] == "bed.wav" and described["name"] != name
    assert described["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    missing = cli.invoke(app, ["--gateway", stack.listen, "upload", str(tmp_path / "nope.wav")])
    assert missing.exit_code == 2


def test_cli_submit_with_a_local_background(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "local.wav"
    path.write_bytes(wav_bytes())
    base = ["--gateway", stack.listen]
    result = cli.invoke(
        app,
        [
            *base,
            "submit",
            str(EXAMPLE),
            "--to",
            "fr",
            "--background",
            str(path),
            "--background-gain",
            "-3.5",
            "--ducking",
            "6",
            "--max-stretch",
            "1.3",
            "--no-stitching",
            "--precise",
            "--loudness",
            "-23",
            "--channels",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    [job_id] = result.stdout.splitlines()

    got = cli.invoke(app, [*base, "get", job_id, "--json"])
    assert got.exit_code == 0, got.output
    work = json_format.Parse(got.stdout, pb.Job()).request.transcript
    assert work.background.asset.startswith("assets/")
    assert (work.background.gain_db, work.background.ducking_db) == (-3.5, 6.0)
    assert work.timing.HasField("use_stitching") and not work.timing.use_stitching
    assert work.timing.use_precise_timing and work.timing.max_stretch_ratio == 1.3
    assert work.output.loudness_lufs == -23.0
    assert work.output.channels == 2


def test_cli_submit_background_url_leaves_unset_fields_unset(cli: CliRunner, stack: Stack) -> None:
    base = ["--gateway", stack.listen]
    url = "https://example.com/bed.mp3"
    result = cli.invoke(app, [*base, "submit", str(EXAMPLE), "--to", "fr", "--background", url])
    assert result.exit_code == 0, result.output
    got = cli.invoke(app, [*base, "get", result.stdout.strip(), "--json"])
    work = json_format.Parse(got.stdout, pb.Job()).request.transcript
    assert work.background.url == url and not work.background.HasField("ducking_db")
    assert not work.HasField("timing")


def test_cli_submit_background_errors(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    base = ["--gateway", stack.listen, "submit", str(EXAMPLE), "--to", "fr"]
    missing = cli.invoke(app, [*base, "--background", str(tmp_path / "nope.wav")])
    assert missing.exit_code == 2
    assert "no such file" in missing.stderr and "Traceback" not in missing.output

    unknown = cli.invoke(app, [*base, "--background", "assets/" + uuid.uuid4().hex])
    assert unknown.exit_code == 2
    assert "ASSET_NOT_FOUND" in unknown.stderr
    assert f"{BACKGROUND}.asset" in unknown.stderr

    no_source = cli.invoke(app, [*base, "--ducking", "6"])
    assert no_source.exit_code == 2 and "--background" in no_source.output
