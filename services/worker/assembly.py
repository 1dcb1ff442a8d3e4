"""Put synthesized segments on one track and encode it.

No bus, no RPC: numpy in, bytes out. Encoding and decoding go through the
ffmpeg binary that ships in the imageio-ffmpeg wheel, so the worker needs no
system packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]

FADE_OUT_SECONDS = 0.010

FORMATS = frozenset({"wav", "mp3", "opus", "flac"})

# Rates the Opus encoder accepts; Opus decoders play everything at 48 kHz anyway.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_STDERR_TAIL = 2000


class EncodeError(Exception):
    """ffmpeg failed to encode or decode; the message carries the tail of its stderr."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(f"{message}: {stderr}" if stderr else message)
        self.stderr = stderr


@dataclass(frozen=True)
class PlacedClip:
    """One utterance and where it starts on the output timeline."""

    start: float  # seconds
    samples: Samples
    sample_rate: int


@dataclass(frozen=True, slots=True)
class ClipPlacement:
    """Where one input clip ended up. Times are seconds, after rounding to samples."""

    index: int  # position in the sequence given to place_clips
    start: float
    end: float
    truncated: bool
    # Audio dropped by truncation, seconds.
    cut_off: float


@dataclass(frozen=True, slots=True)
class PlacementReport:
    sample_rate: int
    duration: float  # of the whole track, seconds
    clips: tuple[ClipPlacement, ...]  # in input order

    @property
    def truncated_clips(self) -> tuple[ClipPlacement, ...]:
        return tuple(c for c in self.clips if c.truncated)

    @property
    def truncated(self) -> int:
        """How many clips were cut short."""
        return sum(1 for c in self.clips if c.truncated)

    @property
    def speech_seconds(self) -> float:
        """Audio that made it onto the track, after truncation."""
        return sum(c.end - c.start for c in self.clips)


def resample(samples: npt.ArrayLike, src_rate: int, dst_rate: int) -> Samples:
    """Linear-interpolation resampling, low-passed first when the rate goes down.

    Good enough for speech headed into a lossy encoder; not a mastering resampler.
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if src_rate == dst_rate or len(x) == 0:
        return x.copy()
    if dst_rate < src_rate:
        x = _lowpass(x, cutoff=0.5 * dst_rate / src_rate)
    n_out = round(len(x) * dst_rate / src_rate)
    positions = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    return np.interp(positions, np.arange(len(x), dtype=np.float64), x).astype(np.float32)


def _lowpass(x: Samples, cutoff: float, taps: int = 63) -> Samples:
    """Windowed-sinc FIR; `cutoff` is a fraction of the sample rate (0.5 = Nyquist)."""
    # Keep the transition band below the new Nyquist so the interpolation cannot fold
    # energy above it back into the audible band.
    fc = 0.9 * cutoff
    n = np.arange(taps, dtype=np.float64) - (taps - 1) / 2
    kernel = 2 * fc * np.sinc(2 * fc * n) * np.blackman(taps)
    kernel /= kernel.sum()
    # "full" then slice: mode="same" returns the kernel's length for inputs shorter than it.
    offset = (taps - 1) // 2
    return np.convolve(x, kernel)[offset : offset + len(x)].astype(np.float32)


def fade_out(x: Samples, n: int) -> Samples:
    """Linear fade over the last `n` samples, in place; returns `x`."""
    n = min(n, len(x))
    if n > 0:
        x[len(x) - n :] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return x


# Silence is handed to a track's sink in pieces of at most this many samples, so a
# long pause does not become one large allocation.
_SILENCE_PIECE = 1 << 20


class TrackWriter:
    """Clips in start order in, one mono track out, front to back.

    The streaming form of `place_clips`: each clip is held until the next one
    arrives, cut where that one starts if it would run into it (ending in a short
    fade so the cut does not click), and then handed to `sink` with the silence
    before it. At most one clip is held, so a programme of any length passes
    through in bounded memory.
    """

    def __init__(self, sample_rate: int, sink: Callable[[Samples], None]) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._sink = sink
        self._fade = max(1, round(FADE_OUT_SECONDS * sample_rate))
        self._held: tuple[int, int, Samples] | None = None  # (index, start, pcm)
        self._position = 0  # samples handed to the sink
        self._placements: list[ClipPlacement] = []
        self._count = 0

    def add(self, start: float, samples: npt.ArrayLike, *, index: int | None = None) -> None:
        """Place a clip (already at the track's rate) at `start` seconds."""
        if not math.isfinite(start) or start < 0:
            raise ValueError(
                f"clip {self._count} starts at {start}; starts must be finite and >= 0"
            )
        first = round(start * self.sample_rate)
        if self._held is not None:
            if first < self._held[1]:
                raise ValueError(f"clip {self._count} starts before the clip added before it")
            self._release(limit=first)
        pcm = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._held = (self._count if index is None else index, first, pcm)
        self._count += 1

    def close(self, total_duration: float) -> PlacementReport:
        """Hand over the last clip and pad the track to at least `total_duration` seconds."""
        if not math.isfinite(total_duration) or total_duration < 0:
            raise ValueError(f"total_duration must be a finite number >= 0, got {total_duration}")
        if self._held is not None:
            self._release(limit=None)
        # The epsilon keeps float noise (1.0 * 22050 -> 22050.000000001) from adding a sample.
        self._silence_until(math.ceil(total_duration * self.sample_rate - 1e-6))
        return PlacementReport(
            sample_rate=self.sample_rate,
            duration=self._position / self.sample_rate,
            clips=tuple(sorted(self._placements, key=lambda p: p.index)),
        )

    def _silence_until(self, end: int) -> None:
        while self._position < end:
            n = min(_SILENCE_PIECE, end - self._position)
            self._sink(np.zeros(n, dtype=np.float32))
            self._position += n

    def _release(self, limit: int | None) -> None:
        assert self._held is not None
        index, start, pcm = self._held
        self._held = None
        length = len(pcm)
        keep = length if limit is None else min(length, limit - start)
        if keep < length:
            pcm = fade_out(pcm[:keep].copy(), self._fade)
        self._silence_until(start)
        if keep:
            self._sink(pcm)
        self._position = start + keep
        self._placements.append(
            ClipPlacement(
                index=index,
                start=start / self.sample_rate,
                end=(start + keep) / self.sample_rate,
                truncated=keep < length,
                cut_off=(length - keep) / self.sample_rate,
            )
        )


def place_clips(
    clips: Sequence[PlacedClip], *, sample_rate: int, total_duration: float
) -> tuple[Samples, PlacementReport]:
    """Mix clips onto one mono track at `sample_rate`, in memory.

    The track lasts at least `total_duration` and always long enough for the last
    clip. A clip never overlaps the one starting after it: if it would run past that
    start it is cut there, ending in a short fade so the cut does not click.
    """
    for i, clip in enumerate(clips):
        if not math.isfinite(clip.start) or clip.start < 0:
            raise ValueError(f"clip {i} starts at {clip.start}; starts must be finite and >= 0")
    parts: list[Samples] = []
    writer = TrackWriter(sample_rate, parts.append)
    # Stable sort: clips sharing a start keep their input order, the earlier one is cut to nothing.
    order = sorted(range(len(clips)), key=lambda i: round(clips[i].start * sample_rate))
    for i in order:
        clip = clips[i]
        writer.add(clip.start, resample(clip.samples, clip.sample_rate, sample_rate), index=i)
    report = writer.close(total_duration)
    track = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return track, report


def _ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _encoder_args(fmt: str, out_sample_rate: int) -> tuple[list[str], str]:
    """ffmpeg output options and the file suffix for `fmt`."""
    if fmt == "wav":
        return ["-c:a", "pcm_s16le", "-ar", str(out_sample_rate), "-f", "wav"], "wav"
    if fmt == "flac":
        return ["-c:a", "flac", "-ar", str(out_sample_rate), "-f", "flac"], "flac"
    if fmt == "mp3":
        return [
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-ar",
            str(out_sample_rate),
            "-f",
            "mp3",
        ], "mp3"
    if fmt == "opus":
        # libopus refuses other rates; take the next one up so no bandwidth is lost.
        rate = next((r for r in _OPUS_RATES if r >= out_sample_rate), _OPUS_RATES[-1])
        return ["-c:a", "libopus", "-b:a", "64k", "-ar", str(rate), "-f", "ogg"], "ogg"
    raise ValueError(f"unknown audio format {fmt!r}; expected one of {sorted(FORMATS)}")


def _tail(stderr: bytes) -> str:
    return stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]


async def _run_ffmpeg(args: Sequence[str], stdin: bytes | None) -> bytes:
    """Run ffmpeg, feeding stdin (None: nothing, ffmpeg reads files) while draining
    stdout and stderr; return stdout."""
    proc = await asyncio.create_subprocess_exec(
        _ffmpeg(),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # communicate() writes and reads concurrently, so neither pipe can fill up and
        # stall the other; a BrokenPipe from an early exit is reported by the exit code.
        stdout, stderr = await proc.communicate(stdin)
    except BaseException:
        # Cancelled (or failed) mid-run: do not leave an orphan ffmpeg behind.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise EncodeError(f"ffmpeg exited with status {proc.returncode}", stderr=_tail(stderr))
    return stdout


class Encoder:
    """Streams mono float32 audio into ffmpeg, which encodes it to a file.

    Writes go to ffmpeg's stdin as they come, so a programme never needs to be in
    memory whole; `close` waits for ffmpeg and raises EncodeError if it failed.
    The output is a file, not a pipe: wav, flac and mp3 put the length in a header
    that ffmpeg can only fill in by seeking back once everything is encoded. Through
    a pipe they come out with unknown or wrong durations (and mp3 loses its gapless
    info).
    """

    def __init__(self, proc: asyncio.subprocess.Process, path: Path) -> None:
        self._proc = proc
        self.path = path
        # Read stderr all along: a chatty ffmpeg must not block on a full pipe.
        self._stderr = asyncio.create_task(self._read_stderr())

    async def _read_stderr(self) -> bytes:
        assert self._proc.stderr is not None
        tail = b""
        while chunk := await self._proc.stderr.read(65536):
            tail = (tail + chunk)[-4 * _STDERR_TAIL :]
        return tail

    @classmethod
    async def start(
        cls, path: Path, sample_rate: int, fmt: str, out_sample_rate: int, *, channels: int = 1
    ) -> Encoder:
        """`write` then takes (n,) mono or (n, channels) frames."""
        if sample_rate <= 0 or out_sample_rate <= 0:
            raise ValueError(
                f"sample rates must be positive, got {sample_rate} -> {out_sample_rate}"
            )
        args = encode_args("pipe:0", sample_rate, fmt, out_sample_rate, path, channels=channels)
        proc = await asyncio.create_subprocess_exec(
            _ffmpeg(),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, path)

    async def write(self, samples: npt.ArrayLike) -> None:
        pcm = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
        assert self._proc.stdin is not None
        self._proc.stdin.write(pcm.astype("<f4").tobytes())
        try:
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self._fail()

    async def close(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._proc.stdin.close()
            await self._proc.stdin.wait_closed()
        if await self._proc.wait() != 0:
            await self._fail()
        await self._stderr
        if not self.path.exists() or self.path.stat().st_size == 0:
            raise EncodeError(f"ffmpeg produced an empty {self.path.suffix[1:]} file")

    async def _fail(self) -> None:
        await self._proc.wait()
        stderr = await self._stderr
        raise EncodeError(
            f"ffmpeg exited with status {self._proc.returncode}", stderr=_tail(stderr)
        )

    async def abort(self) -> None:
        """Stop ffmpeg without waiting for it to finish (on errors and cancellation)."""
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        await self._proc.wait()
        await asyncio.gather(self._stderr, return_exceptions=True)


def encode_args(
    source: str,
    sample_rate: int,
    fmt: str,
    out_sample_rate: int,
    out_path: Path,
    *,
    channels: int = 1,
) -> list[str]:
    """ffmpeg arguments that encode raw float32 at `sample_rate` (`channels`
    interleaved) from `source` (a path, or "pipe:0") into `out_path` as the worker does."""
    codec_args, _ = _encoder_args(fmt, out_sample_rate)
    return [
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "f32le",
        "-ar",
        str(sample_rate),
        "-ac",
        str(channels),
        "-i",
        source,
        "-ac",
        str(channels),
        "-map_metadata",
        "-1",
        *codec_args,
        "-y",
        str(out_path),
    ]


def suffix_for(fmt: str) -> str:
    """The file suffix of an encoded `fmt` ("opus" lives in an Ogg file)."""
    return _encoder_args(fmt, 24_000)[1]


async def encode(track: npt.ArrayLike, sample_rate: int, fmt: str, out_sample_rate: int) -> bytes:
    """Encode a mono float32 track as wav (16-bit PCM), mp3, opus (in Ogg) or flac.

    ffmpeg resamples to `out_sample_rate` (for opus: the next rate Opus supports).
    """
    with tempfile.TemporaryDirectory(prefix="dubbing-encode-") as tmp:
        out = Path(tmp) / f"track.{suffix_for(fmt)}"
        encoder = await Encoder.start(out, sample_rate, fmt, out_sample_rate)
        try:
            await encoder.write(track)
            await encoder.close()
        except BaseException:
            await encoder.abort()
            raise
        return await asyncio.to_thread(out.read_bytes)


async def decode_to_file(source: Path, dest: Path, sample_rate: int, *, channels: int = 1) -> int:
    """Decode any audio or video file ffmpeg reads to raw float32 at `sample_rate`,
    `channels` interleaved (ffmpeg down- or upmixes as needed).

    Returns the number of frames written. ffmpeg reads and writes files itself, so
    nothing passes through this process.
    """
    args = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        str(source),
        "-vn",
        "-ac",
        str(channels),
        "-ar",
        str(sample_rate),
        "-map_metadata",
        "-1",
        "-f",
        "f32le",
        "-y",
        str(dest),
    ]
    await _run_ffmpeg(args, None)
    return (await asyncio.to_thread(dest.stat)).st_size // (4 * channels)


def _decode_args(sample_rate: int | None) -> list[str]:
    rate = ["-ar", str(sample_rate)] if sample_rate else []
    # WAV rather than raw PCM because its header tells us the rate ffmpeg decoded at.
    return [
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        "pipe:0",
        "-vn",
        "-ac",
        "1",
        *rate,
        "-c:a",
        "pcm_f32le",
        "-map_metadata",
        "-1",
        "-f",
        "wav",
        "pipe:1",
    ]


def _parse_float_wav(data: bytes) -> tuple[Samples, int]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EncodeError("ffmpeg did not produce a WAV stream")
    pos = 12
    rate: int | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt ":
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
        elif chunk_id == b"data":
            if rate is None:
                break
            # Written to a pipe, ffmpeg cannot go back to fill in the data size, so the
            # field is a placeholder; the samples run to the end of the stream.
            payload = data[body:]
            payload = payload[: len(payload) - len(payload) % 4]
            return np.frombuffer(payload, dtype="<f4").astype(np.float32), rate
        pos = body + size + (size & 1)
    raise EncodeError("ffmpeg's WAV stream has no fmt or data chunk")


async def decode(data: bytes, *, sample_rate: int | None = None) -> tuple[Samples, int]:
    """Decode any format ffmpeg reads to mono float32; resample if `sample_rate` is given."""
    out = await _run_ffmpeg(_decode_args(sample_rate), data)
    return _parse_float_wav(out)


def decode_to_pcm(data: bytes, *, sample_rate: int | None = None) -> tuple[Samples, int]:
    """Blocking twin of `decode`, for tests and scripts outside an event loop."""
    proc = subprocess.run(
        [_ffmpeg(), *_decode_args(sample_rate)], input=data, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise EncodeError(f"ffmpeg exited with status {proc.returncode}", stderr=_tail(proc.stderr))
    return _parse_float_wav(proc.stdout)
