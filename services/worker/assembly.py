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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import numpy.typing as npt
import pyloudnorm
import scipy.ndimage

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


def place_clips(
    clips: Sequence[PlacedClip], *, sample_rate: int, total_duration: float
) -> tuple[Samples, PlacementReport]:
    """Mix clips onto one mono track at `sample_rate`.

    The track lasts at least `total_duration` and always long enough for the last
    clip. A clip never overlaps the one starting after it: if it would run past that
    start it is cut there, ending in a short fade so the cut does not click.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not math.isfinite(total_duration) or total_duration < 0:
        raise ValueError(f"total_duration must be a finite number >= 0, got {total_duration}")
    for i, clip in enumerate(clips):
        if not math.isfinite(clip.start) or clip.start < 0:
            raise ValueError(f"clip {i} starts at {clip.start}; starts must be finite and >= 0")

    audio = [resample(c.samples, c.sample_rate, sample_rate) for c in clips]
    starts = [round(c.start * sample_rate) for c in clips]
    # Stable sort: clips sharing a start keep their input order, the earlier one is cut to nothing.
    order = sorted(range(len(clips)), key=lambda i: starts[i])

    ends = [starts[i] + len(audio[i]) for i in range(len(clips))]
    # The epsilon keeps float noise (1.0 * 22050 -> 22050.000000001) from adding a sample.
    length = max([math.ceil(total_duration * sample_rate - 1e-6), *ends])
    track = np.zeros(length, dtype=np.float32)
    fade_len = max(1, round(FADE_OUT_SECONDS * sample_rate))

    placements: dict[int, ClipPlacement] = {}
    for rank, i in enumerate(order):
        start, pcm = starts[i], audio[i]
        limit = starts[order[rank + 1]] if rank + 1 < len(order) else start + len(pcm)
        keep = min(len(pcm), limit - start)
        truncated = keep < len(pcm)
        if truncated:
            pcm = fade_out(pcm[:keep].copy(), fade_len)
        track[start : start + keep] = pcm
        placements[i] = ClipPlacement(
            index=i,
            start=start / sample_rate,
            end=(start + keep) / sample_rate,
            truncated=truncated,
            cut_off=(len(audio[i]) - keep) / sample_rate,
        )

    report = PlacementReport(
        sample_rate=sample_rate,
        duration=length / sample_rate,
        clips=tuple(placements[i] for i in range(len(clips))),
    )
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


async def _run_ffmpeg(args: Sequence[str], stdin: bytes) -> bytes:
    """Run ffmpeg, feeding stdin while draining stdout and stderr; return stdout."""
    proc = await asyncio.create_subprocess_exec(
        _ffmpeg(),
        *args,
        stdin=asyncio.subprocess.PIPE,
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


async def encode(track: npt.ArrayLike, sample_rate: int, fmt: str, out_sample_rate: int) -> bytes:
    """Encode a mono float32 track as wav (16-bit PCM), mp3, opus (in Ogg) or flac.

    ffmpeg resamples to `out_sample_rate` (for opus: the next rate Opus supports).
    """
    if sample_rate <= 0 or out_sample_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {sample_rate} -> {out_sample_rate}")
    codec_args, suffix = _encoder_args(fmt, out_sample_rate)
    pcm = np.clip(np.asarray(track, dtype=np.float32).reshape(-1), -1.0, 1.0)
    # Written to a file, not stdout: wav, flac and mp3 put the length in a header that
    # ffmpeg can only fill in by seeking back once everything is encoded. Through a pipe
    # they come out with unknown or wrong durations (and mp3 loses its gapless info).
    with tempfile.TemporaryDirectory(prefix="dubbing-encode-") as tmp:
        out = Path(tmp) / f"track.{suffix}"
        args = [
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "f32le",
            "-ar",
            str(sample_rate),
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-ac",
            "1",
            "-map_metadata",
            "-1",
            *codec_args,
            "-y",
            str(out),
        ]
        await _run_ffmpeg(args, pcm.astype("<f4").tobytes())
        data = await asyncio.to_thread(out.read_bytes)
    if not data:
        raise EncodeError(f"ffmpeg produced an empty {fmt} file")
    return data


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


DEFAULT_LOUDNESS_LUFS = -16.0
# Peaks are kept below this after the gain, so normalising never clips.
_PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS


@dataclass(frozen=True, slots=True)
class Loudness:
    """What loudness normalisation did: measured before and after, in LUFS."""

    before: float
    after: float
    gain_db: float
    # True when the limiter had to hold peaks under the ceiling.
    peak_limited: bool


_LIMITER_LOOKAHEAD_SECONDS = 0.005


def _limit(track: npt.NDArray[np.float32], sample_rate: int) -> npt.NDArray[np.float32]:
    """Hold peaks under -1 dBFS with a lookahead limiter, leaving the rest untouched.

    The gain each sample needs is min(1, ceiling/|x|). A minimum filter spreads every
    dip over the lookahead on both sides, and a moving average half as wide smooths
    it: at a peak, every value averaged is already at most the gain the peak needs,
    so no peak gets through, and the gain moves over ~5 ms instead of clicking.
    """
    magnitude = np.abs(track)
    if float(magnitude.max(initial=0.0)) <= _PEAK_CEILING:
        return track
    needed = np.minimum(1.0, _PEAK_CEILING / np.maximum(magnitude, 1e-12))
    width = max(1, round(_LIMITER_LOOKAHEAD_SECONDS * sample_rate))
    held = np.asarray(scipy.ndimage.minimum_filter1d(needed, size=2 * width + 1, mode="nearest"))
    smooth = np.asarray(scipy.ndimage.uniform_filter1d(held, size=width, mode="nearest"))
    limited: npt.NDArray[np.float32] = (track * np.minimum(smooth, needed)).astype(np.float32)
    return limited


def normalize_loudness(
    track: npt.NDArray[np.float32], sample_rate: int, target_lufs: float
) -> tuple[npt.NDArray[np.float32], Loudness]:
    """`track` brought to `target_lufs` integrated loudness (ITU-R BS.1770-4, pyloudnorm),
    peaks held under -1 dBFS.

    One gain for the whole programme, so relative levels between lines stay as the
    voice made them; where that gain would clip, a limiter holds the peaks, and the
    gain is corrected for what the limiter took off (a few rounds, to within 0.2 LU).
    A silent track (no gated block above -70 LUFS) is returned as is.
    """
    meter = pyloudnorm.Meter(sample_rate)
    before = float(meter.integrated_loudness(track.astype(np.float64)))
    if not np.isfinite(before):
        return track, Loudness(before, before, 0.0, False)
    gain_db = target_lufs - before
    limited = False
    out, after = track, before
    for _ in range(8):
        scaled = (track * 10 ** (gain_db / 20)).astype(np.float32)
        out = _limit(scaled, sample_rate)
        limited = limited or out is not scaled
        after = float(meter.integrated_loudness(out.astype(np.float64)))
        if abs(after - target_lufs) <= 0.2:
            break
        gain_db += target_lufs - after
    return out, Loudness(before, after, gain_db, limited)
