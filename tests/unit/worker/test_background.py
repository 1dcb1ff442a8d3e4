"""BackgroundFetcher against a real HTTP server on loopback, decoding with real ffmpeg."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from dubbing.devstack import free_port
from dubbing.v1 import dubbing_pb2 as pb
from worker.assembly import encode
from worker.background import (
    BackgroundError,
    BackgroundFetcher,
    BackgroundRejected,
    BackgroundUnavailable,
)


@dataclass(frozen=True)
class Route:
    status: int
    body: bytes
    # False: no Content-Length, the body runs until the connection closes.
    declare_length: bool = True


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, Route] = {}

    def do_GET(self) -> None:
        route = self.routes.get(self.path, Route(404, b"not found"))
        self.send_response(route.status)
        if route.declare_length:
            self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up on a large body is expected here


@dataclass(frozen=True)
class Files:
    base: str
    routes: dict[str, Route]

    def url(self, path: str) -> pb.BackgroundAudio:
        return pb.BackgroundAudio(url=self.base + path)


@pytest.fixture
def files() -> Iterator[Files]:
    """A real HTTP/1.0 server on a random loopback port serving `routes`."""
    routes: dict[str, Route] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Files(f"http://127.0.0.1:{server.server_address[1]}", routes)
    server.shutdown()
    server.server_close()
    thread.join()


def sine(seconds: float, rate: int, freq: float = 440.0) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


async def test_a_url_is_fetched_to_the_file(files: Files, tmp_path: Path) -> None:
    body = bytes(range(256)) * 5000
    files.routes["/a.bin"] = Route(200, body)
    files.routes["/b.bin"] = Route(200, body[:1000], declare_length=False)
    for fetcher in (BackgroundFetcher(None), BackgroundFetcher(None, http=httpx.AsyncClient())):
        await fetcher.fetch(files.url("/a.bin"), tmp_path / "a")
        assert (tmp_path / "a").read_bytes() == body
        await fetcher.fetch(files.url("/b.bin"), tmp_path / "b")
        assert (tmp_path / "b").read_bytes() == body[:1000]


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (404, BackgroundRejected, "BACKGROUND_FETCH_FAILED"),
        (403, BackgroundRejected, "BACKGROUND_FETCH_FAILED"),
        (503, BackgroundUnavailable, "BACKGROUND_UNAVAILABLE"),
        (429, BackgroundUnavailable, "BACKGROUND_UNAVAILABLE"),
    ],
)
async def test_http_errors(
    files: Files, tmp_path: Path, status: int, error: type[BackgroundError], reason: str
) -> None:
    files.routes["/x"] = Route(status, b"no")
    with pytest.raises(error) as caught:
        await BackgroundFetcher(None).fetch(files.url("/x"), tmp_path / "x")
    assert caught.value.reason == reason
    assert str(status) in caught.value.message


@pytest.mark.parametrize("declare_length", [True, False])
async def test_a_body_over_the_limit_is_too_large(
    files: Files, tmp_path: Path, declare_length: bool
) -> None:
    # Over the limit by a byte, declared up front or only found out while reading.
    files.routes["/big"] = Route(200, b"x" * 5001, declare_length)
    files.routes["/fits"] = Route(200, b"x" * 5000, declare_length)
    fetcher = BackgroundFetcher(None, max_bytes=5000)
    with pytest.raises(BackgroundRejected) as caught:
        await fetcher.fetch(files.url("/big"), tmp_path / "big")
    assert caught.value.reason == "BACKGROUND_TOO_LARGE"
    await fetcher.fetch(files.url("/fits"), tmp_path / "fits")
    assert (tmp_path / "fits").stat().st_size == 5000


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    source = pb.BackgroundAudio(url=f"http://127.0.0.1:{free_port()}/gone.wav")
    with pytest.raises(BackgroundUnavailable) as caught:
        await BackgroundFetcher(None).fetch(source, tmp_path / "x")
    assert caught.value.reason == "BACKGROUND_UNAVAILABLE"


async def test_no_source_and_no_asset_store(tmp_path: Path) -> None:
    with pytest.raises(BackgroundRejected) as rejected:
        await BackgroundFetcher(None).fetch(pb.BackgroundAudio(), tmp_path / "x")
    assert rejected.value.reason == "BACKGROUND_INVALID"
    with pytest.raises(BackgroundUnavailable):
        await BackgroundFetcher(None).fetch(pb.BackgroundAudio(asset="assets/a1"), tmp_path / "x")


async def test_prepare_refuses_what_is_not_audio(files: Files, tmp_path: Path) -> None:
    files.routes["/notes.txt"] = Route(200, b"these are not the samples you are looking for\n" * 50)
    with pytest.raises(BackgroundRejected) as caught:
        await BackgroundFetcher(None).prepare(files.url("/notes.txt"), tmp_path, 24_000)
    assert caught.value.reason == "BACKGROUND_UNREADABLE"
    assert not (tmp_path / "background.src").exists()


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac"])
async def test_prepare_decodes_to_the_requested_rate(
    files: Files, tmp_path: Path, fmt: str
) -> None:
    source_rate, seconds, rate = 22_050, 3.0, 24_000
    data = await encode(sine(seconds, source_rate), source_rate, fmt, source_rate)
    files.routes["/bg"] = Route(200, data)
    pcm = await BackgroundFetcher(None).prepare(files.url("/bg"), tmp_path, rate)
    assert pcm.sample_rate == rate
    assert pcm.samples == round(seconds * rate)
    assert pcm.path.stat().st_size == 4 * pcm.samples
    assert not (tmp_path / "background.src").exists()
    # It is the tone that was sent: 440 Hz at its level.
    x = pcm.read(0, pcm.samples)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) * rate / len(x) == pytest.approx(440.0, abs=1.0)
    level = float(np.sqrt(np.mean(np.square(x[rate:-rate]))))
    assert level == pytest.approx(0.3 / np.sqrt(2), rel=0.1 if fmt == "mp3" else 0.01)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.wav", "http://127.0.0.1:99999/x.wav"])
async def test_unusable_url_is_rejected_not_retried(tmp_path: Path, url: str) -> None:
    with pytest.raises(BackgroundRejected) as exc:
        await BackgroundFetcher(None).fetch(pb.BackgroundAudio(url=url), tmp_path / "bg")
    assert exc.value.reason == "BACKGROUND_FETCH_FAILED"
