"""The programme's last steps, in bounded memory: mix the background under the dub,
bring the mix to its loudness target, hold its peaks, encode.

Audio waits on disk as raw float32 (`PcmFile`) and moves through in chunks of 2^20
frames (44 s at 24 kHz), so a three-hour programme needs a few chunks of memory,
not the programme. The dub is mono; the programme is mono or stereo, with the
speech in the centre and a stereo background's image kept. The passes:

1. The caller writes the dub to a PcmFile, measuring it on the way (the fitting
   pass: `worker.transcript`).
2. With a background, the mix is measured: the dub brought to the target, the
   background at its gain, ducked under the speech. Without one, the dub's
   measurement stands.
3. If the gain that reaches the target would push peaks over -1 dBFS, the
   limiter's loss is estimated on every few chunks and the gain corrected for it.
4. The mix, gained and limited, is encoded, and measured on the way, so the
   loudness reported is that of what was encoded. Should it miss the target by more
   than 0.5 LU (the estimate of pass 3 was off), pass 4 runs once more with the
   gain corrected by what was measured.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from worker.assembly import Encoder
from worker.loudness import PEAK_CEILING, Loudness, LoudnessMeter, limit, limiter_reach

Samples = npt.NDArray[np.float32]

CHUNK = 1 << 20
# Pass 3 measures one chunk in this many (all of them in short programmes).
_ESTIMATE_EVERY = 5
_ESTIMATE_ROUNDS = 8
# Pass 4 is redone when the encoded programme misses the target by more than this.
_REDO_TOLERANCE_LU = 0.5


class PcmFile:
    """Raw float32 audio in a file (frames of `channels` interleaved samples):
    appended in order, then, once `finish`ed, read back by frame range. `create=False`
    opens a file something else wrote (e.g. ffmpeg)."""

    def __init__(
        self, path: Path, sample_rate: int, *, create: bool = True, channels: int = 1
    ) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self._out: BinaryIO | None = path.open("wb") if create else None
        self.samples = 0 if create else path.stat().st_size // (4 * channels)  # frames

    def append(self, x: npt.ArrayLike) -> None:
        if self._out is None:
            raise ValueError(f"{self.path} is open for reading only")
        data = np.asarray(x, dtype="<f4").reshape(-1)
        self._out.write(data.tobytes())
        self.samples += len(data) // self.channels

    def finish(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def read(self, start: int, end: int) -> Samples:
        """Frames [start, end), shape (n,) for mono and (n, channels) otherwise;
        zeros where the range lies outside the file."""
        ch = self.channels
        out = np.zeros((max(0, end - start), ch), dtype=np.float32)
        lo, hi = max(0, start), min(end, self.samples)
        if hi > lo:
            data = np.fromfile(self.path, dtype="<f4", count=(hi - lo) * ch, offset=4 * ch * lo)
            out[lo - start : hi - start] = data.reshape(-1, ch)
        return out[:, 0] if ch == 1 else out

    def is_dual_mono(self) -> bool:
        """True when every frame has the same value in each channel (e.g. a mono
        source decoded to stereo): such a track is mono in all but name."""
        for start in range(0, self.samples, CHUNK):
            frames = self.read(start, min(self.samples, start + CHUNK))
            if frames.ndim == 2 and not np.array_equal(frames[:, 0], frames[:, 1]):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Ducking:
    """How the background dips under speech. Seconds, except `depth_db`."""

    depth_db: float = 12.0
    attack: float = 0.15  # the dip starts this long before the speech
    release: float = 0.4  # and recovers over this long after it
    hold: float = 0.5  # pauses shorter than this stay ducked

    def __post_init__(self) -> None:
        if not (self.attack > 0 and self.release > 0 and self.hold >= 0):
            raise ValueError(f"ducking ramps must be positive: {self}")


class DuckingEnvelope:
    """Background gain over time, from where speech actually sits on the timeline."""

    def __init__(
        self, speech: Sequence[tuple[float, float]], ducking: Ducking, sample_rate: int
    ) -> None:
        merged: list[list[float]] = []
        for start, end in sorted((s, e) for s, e in speech if e > s):
            if merged and start - merged[-1][1] < ducking.hold:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._spans = [(s - ducking.attack, e + ducking.release) for s, e in merged]
        self._ends = [tail for _, tail in self._spans]
        self._ducking = ducking
        self._rate = sample_rate

    def gains(self, start: int, n: int) -> Samples:
        """Linear gain for samples [start, start + n)."""
        rate, d = self._rate, self._ducking
        depth = np.zeros(n, dtype=np.float32)  # 0 = full level, 1 = fully ducked
        t0, t1 = start / rate, (start + n) / rate
        for lead, tail in self._spans[bisect.bisect_right(self._ends, t0) :]:
            if lead >= t1:
                break
            i0 = max(0, math.floor(lead * rate) - start)
            i1 = min(n, math.ceil(tail * rate) - start)
            t = (np.arange(start + i0, start + i1, dtype=np.float64)) / rate
            rise, fall = (t - lead) / d.attack, (tail - t) / d.release
            shape = np.clip(np.minimum(rise, fall), 0.0, 1.0).astype(np.float32)
            np.maximum(depth[i0:i1], shape, out=depth[i0:i1])
        gains: Samples = np.power(10.0, -d.depth_db * depth / 20.0).astype(np.float32)
        return gains


@dataclass(frozen=True, slots=True)
class Background:
    pcm: PcmFile
    gain_db: float
    envelope: DuckingEnvelope | None  # None: no ducking


class _Mix:
    """The programme before the final gain: dub (+ background), read by frame range.

    The dub is mono; in a stereo programme it sits in the centre (the same in both
    channels). A background with more channels than the programme is downmixed
    (their mean), one with fewer is copied to each channel.
    """

    def __init__(
        self,
        dub: PcmFile,
        dub_gain: float,
        background: Background | None,
        channels: int = 1,
    ) -> None:
        self.dub = dub
        self.dub_gain = dub_gain
        self.background = background
        self.bg_gain = 10 ** (background.gain_db / 20) if background else 0.0
        self.channels = channels

    def read(self, start: int, end: int) -> Samples:
        x = self.dub.read(start, end)
        if self.dub_gain != 1.0:
            x *= self.dub_gain
        if self.channels > 1:
            x = np.repeat(x[:, None], self.channels, axis=1)
        bg = self.background
        if bg is not None:
            b = bg.pcm.read(start, end) * self.bg_gain
            if bg.envelope is not None:
                gains = bg.envelope.gains(start, end - start)
                b *= gains if b.ndim == 1 else gains[:, None]
            if b.ndim == 2 and self.channels == 1:
                b = b.mean(axis=1)
            elif b.ndim == 1 and self.channels > 1:
                b = b[:, None]
            x += b
        return x


def _measure(mix: _Mix, chunks: Sequence[int], length: int, gain: float = 1.0) -> LoudnessMeter:
    """Loudness of `chunks` of the mix (indexes of CHUNK-sized pieces), gained and limited."""
    meter = LoudnessMeter(mix.dub.sample_rate, mix.channels)
    for i in chunks:
        meter.add(_final_chunk(mix, i, length, gain))
    return meter


def _final_chunk(mix: _Mix, i: int, length: int, gain: float) -> Samples:
    """Chunk `i` of the finished programme: gained, peaks limited.

    The limiter looks a few ms either side, so the chunk is read with that much
    context and trimmed: chunk by chunk gives what the whole track at once would.
    """
    start, end = i * CHUNK, min(length, (i + 1) * CHUNK)
    reach = limiter_reach(mix.dub.sample_rate)
    lo, hi = max(0, start - reach), min(length, end + reach)
    x = mix.read(lo, hi)
    if gain != 1.0:
        x *= gain
    x = limit(x, mix.dub.sample_rate)
    return x[start - lo : start - lo + (end - start)]


async def render(
    dub: PcmFile,
    dub_meter: LoudnessMeter,
    *,
    target_lufs: float,
    out_path: Path,
    fmt: str,
    out_sample_rate: int,
    background: Background | None = None,
    channels: int = 1,
) -> Loudness:
    """Mix, normalise and encode the programme into `out_path`; see the module's passes.

    `dub` is mono and `dub_meter` has measured all of it. The programme has
    `channels` channels and lasts as long as the longer of `dub` and the background.
    """
    length = max(dub.samples, background.pcm.samples if background else 0)
    n_chunks = max(1, math.ceil(length / CHUNK))
    everything = range(n_chunks)
    # The same signal in each of n channels measures 10*log10(n) dB louder (BS.1770
    # adds the channels' energies).
    dub_lufs = dub_meter.integrated() + 10 * math.log10(channels)

    if background is None:
        mix = _Mix(dub, 1.0, None, channels)
        before, peak = dub_lufs, dub_meter.peak
    else:
        dub_gain = 10 ** ((target_lufs - dub_lufs) / 20) if math.isfinite(dub_lufs) else 1.0
        mix = _Mix(dub, dub_gain, background, channels)
        meter = await asyncio.to_thread(_measure_raw, mix, everything, length)
        before, peak = meter.integrated(), meter.peak

    gain_db = target_lufs - before if math.isfinite(before) else 0.0
    limited = math.isfinite(before) and peak * 10 ** (gain_db / 20) > PEAK_CEILING
    if limited:
        gain_db = await asyncio.to_thread(
            _correct_for_limiter, mix, length, n_chunks, before, gain_db, target_lufs
        )

    after = await _encode(
        mix, length, n_chunks, 10 ** (gain_db / 20), out_path, fmt, out_sample_rate
    )
    if math.isfinite(before) and abs(after - target_lufs) > _REDO_TOLERANCE_LU:
        gain_db += target_lufs - after
        after = await _encode(
            mix, length, n_chunks, 10 ** (gain_db / 20), out_path, fmt, out_sample_rate
        )
        limited = limited or peak * 10 ** (gain_db / 20) > PEAK_CEILING
    return Loudness(before=before, after=after, gain_db=gain_db, peak_limited=limited)


def _measure_raw(mix: _Mix, chunks: Sequence[int], length: int) -> LoudnessMeter:
    """Loudness of the mix as it is, no gain, no limiter."""
    meter = LoudnessMeter(mix.dub.sample_rate, mix.channels)
    for i in chunks:
        meter.add(mix.read(i * CHUNK, min(length, (i + 1) * CHUNK)))
    return meter


def _correct_for_limiter(
    mix: _Mix, length: int, n_chunks: int, before: float, gain_db: float, target: float
) -> float:
    """The gain that reaches `target` once the limiter has taken its share.

    Measured on one chunk in `_ESTIMATE_EVERY`: the limiter's loss there, in LU,
    stands for the programme's. Each round re-measures at the corrected gain.
    """
    sample = list(range(0, n_chunks, _ESTIMATE_EVERY if n_chunks > 2 * _ESTIMATE_EVERY else 1))
    plain = _measure_raw(mix, sample, length).integrated()
    if not math.isfinite(plain):
        return gain_db
    for _ in range(_ESTIMATE_ROUNDS):
        limited = _measure(mix, sample, length, 10 ** (gain_db / 20)).integrated()
        loss = plain + gain_db - limited
        corrected = target - before + loss
        if abs(corrected - gain_db) < 0.05:
            return corrected
        gain_db = corrected
    return gain_db


async def _encode(
    mix: _Mix,
    length: int,
    n_chunks: int,
    gain: float,
    out_path: Path,
    fmt: str,
    out_sample_rate: int,
) -> float:
    """Pass 4: encode the finished programme; returns its measured loudness.

    The next chunk is computed in a thread while ffmpeg takes the current one, so
    the encoder (the slowest part) is kept busy.
    """
    rate = mix.dub.sample_rate
    meter = LoudnessMeter(rate, mix.channels)
    encoder = await Encoder.start(out_path, rate, fmt, out_sample_rate, channels=mix.channels)

    def produce(i: int) -> Samples:
        chunk = _final_chunk(mix, i, length, gain)
        meter.add(chunk)
        return chunk

    try:
        if length == 0:
            await encoder.write(np.zeros((0, mix.channels), dtype=np.float32))
        else:
            upcoming = asyncio.ensure_future(asyncio.to_thread(produce, 0))
            for i in range(n_chunks):
                chunk = await upcoming
                if i + 1 < n_chunks:
                    upcoming = asyncio.ensure_future(asyncio.to_thread(produce, i + 1))
                await encoder.write(chunk)
        await encoder.close()
    except BaseException:
        await encoder.abort()
        raise
    return meter.integrated()
