"""Loudness: ITU-R BS.1770-4 integrated loudness measured chunk by chunk, and a peak limiter.

pyloudnorm measures a whole programme at once, as a float64 copy: 4 GB for three
hours at 48 kHz. ``LoudnessMeter`` takes the same K-weighting filters from
pyloudnorm and the same gating, but keeps only the filters' state and one energy
per 100 ms (~1 MB for three hours), so a programme can be measured as it streams
past. Tests hold it to pyloudnorm's figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyloudnorm
import scipy.ndimage
import scipy.signal

Samples = npt.NDArray[np.float32]

DEFAULT_LOUDNESS_LUFS = -16.0
# Peaks are kept below this after the gain, so normalising never clips.
PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS
LIMITER_LOOKAHEAD_SECONDS = 0.005

_BLOCK_SECONDS = 0.4  # gating block
_STEP_SECONDS = 0.1  # 75% overlap
_SUB_BLOCKS = 4  # steps per block
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0


@dataclass(frozen=True, slots=True)
class Loudness:
    """What loudness normalisation did: measured before and after, in LUFS."""

    before: float
    after: float
    gain_db: float
    # True when the limiter had to hold peaks under the ceiling.
    peak_limited: bool


class LoudnessMeter:
    """Integrated loudness (BS.1770-4, mono) of everything passed to `add`, in order."""

    def __init__(self, sample_rate: int, channels: int = 1) -> None:
        if sample_rate <= 0 or (sample_rate * _STEP_SECONDS) % 1:
            raise ValueError(f"sample rate must be a positive multiple of 10 Hz, got {sample_rate}")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        filters = pyloudnorm.Meter(sample_rate)._filters.values()
        self._sos = np.vstack(
            [np.concatenate([f.passband_gain * np.asarray(f.b), np.asarray(f.a)]) for f in filters]
        )
        # Filter state per section (and channel: sosfilt along axis 0 of (frames, channels)).
        self._zi = np.zeros((len(self._sos), 2) if channels == 1 else (len(self._sos), 2, channels))
        self._step = round(sample_rate * _STEP_SECONDS)
        # The K-weighting filters ring for a few ms (their slowest pole decays by
        # e^-1 in ~4 ms); after 0.25 s of silence what is left is below 1e-20.
        self._settle = round(sample_rate * 0.25)
        self._steps: list[npt.NDArray[np.float64]] = []  # sum of squares per full 100 ms
        self._partial = np.zeros(0)  # squares of the unfinished 100 ms
        self.samples = 0  # frames
        self.peak = 0.0

    def add(self, x: npt.ArrayLike) -> None:
        """Measure the next frames: shape (n,) for mono, (n, channels) otherwise.

        Left and right (BS.1770's only channels here) weigh 1 each, so their
        K-weighted energies simply add up.
        """
        shape = (-1,) if self.channels == 1 else (-1, self.channels)
        chunk = np.asarray(x, dtype=np.float64).reshape(shape)
        if len(chunk) == 0:
            return
        self.samples += len(chunk)
        peak = float(np.abs(chunk).max())
        self.peak = max(self.peak, peak)
        if peak == 0.0 and len(chunk) > self._settle:
            # Silence (most of a dub's timeline): filter only until the filters'
            # ringing has died out; after that the output is zero too.
            head, _ = scipy.signal.sosfilt(self._sos, chunk[: self._settle], axis=0, zi=self._zi)
            self._zi = np.zeros_like(self._zi)
            y = np.concatenate([head, np.zeros((len(chunk) - self._settle, *head.shape[1:]))])
        else:
            y, self._zi = scipy.signal.sosfilt(self._sos, chunk, axis=0, zi=self._zi)
        energy = np.square(y) if y.ndim == 1 else np.square(y).sum(axis=1)
        squares = np.concatenate([self._partial, energy])
        full = len(squares) // self._step * self._step
        if full:
            self._steps.append(squares[:full].reshape(-1, self._step).sum(axis=1))
        self._partial = squares[full:]

    def step_energies(self) -> npt.NDArray[np.float64]:
        """Sum of K-weighted squares per 100 ms, the unfinished last one included."""
        parts = list(self._steps)
        if len(self._partial):
            parts.append(np.array([self._partial.sum()]))
        return np.concatenate(parts) if parts else np.zeros(0)

    def integrated(self) -> float:
        """Gated integrated loudness, LUFS; -inf for silence or under 0.4 s of audio."""
        return integrated_loudness(self.step_energies(), self.samples, self.sample_rate)


def integrated_loudness(steps: npt.NDArray[np.float64], samples: int, sample_rate: int) -> float:
    """BS.1770-4 gating over 400 ms blocks overlapping by 75%, from 100 ms energies."""
    duration = samples / sample_rate
    if duration < _BLOCK_SECONDS or len(steps) == 0:
        return -math.inf
    # As pyloudnorm counts blocks, so both meters agree on where the programme ends.
    n_blocks = round((duration - _BLOCK_SECONDS) / _STEP_SECONDS) + 1
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    starts = np.arange(n_blocks)
    ends = np.minimum(starts + _SUB_BLOCKS, len(steps))
    starts = np.minimum(starts, len(steps))
    z = (cumulative[ends] - cumulative[starts]) / (_BLOCK_SECONDS * sample_rate)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(z)
    gated = z[block_lufs >= _ABSOLUTE_GATE]
    if len(gated) == 0:
        return -math.inf
    relative = -0.691 + 10 * math.log10(float(gated.mean())) + _RELATIVE_GATE
    gated = z[(block_lufs > relative) & (block_lufs > _ABSOLUTE_GATE)]
    if len(gated) == 0:
        return -math.inf
    return -0.691 + 10 * math.log10(float(gated.mean()))


def limiter_reach(sample_rate: int) -> int:
    """Samples either side of a peak that the limiter's gain can touch."""
    return 2 * max(1, round(LIMITER_LOOKAHEAD_SECONDS * sample_rate)) + 1


def limit(track: Samples, sample_rate: int) -> Samples:
    """Hold peaks under -1 dBFS with a lookahead limiter, leaving the rest untouched.

    `track` is (n,) mono or (n, channels).

    The gain each sample needs is min(1, ceiling/|x|). A minimum filter spreads every
    dip over the lookahead on both sides, and a moving average half as wide smooths
    it: at a peak, every value averaged is already at most the gain the peak needs,
    so no peak gets through, and the gain moves over ~5 ms instead of clicking.
    Returns `track` itself when nothing exceeds the ceiling.

    Chunked use: output sample i depends on input within `limiter_reach` of i, so a
    chunk processed with that much context on both sides matches the whole-track result.
    """
    # Stereo is limited linked: one gain for both channels, so the image stays put.
    magnitude = np.abs(track) if track.ndim == 1 else np.abs(track).max(axis=1)
    if float(magnitude.max(initial=0.0)) <= PEAK_CEILING:
        return track
    needed = np.minimum(1.0, PEAK_CEILING / np.maximum(magnitude, 1e-12)).astype(np.float32)
    width = max(1, round(LIMITER_LOOKAHEAD_SECONDS * sample_rate))
    held = np.asarray(scipy.ndimage.minimum_filter1d(needed, size=2 * width + 1, mode="nearest"))
    smooth = np.asarray(scipy.ndimage.uniform_filter1d(held, size=width, mode="nearest"))
    gain = np.minimum(smooth, needed)
    limited: Samples = (track * (gain if track.ndim == 1 else gain[:, None])).astype(np.float32)
    return limited


def normalize_loudness(
    track: Samples, sample_rate: int, target_lufs: float
) -> tuple[Samples, Loudness]:
    """`track` (in memory) brought to `target_lufs`, peaks held under -1 dBFS.

    One gain for the whole programme, so relative levels between lines stay as the
    voice made them; where that gain would clip, the limiter holds the peaks, and the
    gain is corrected for what the limiter took off (a few rounds, to within 0.2 LU).
    A silent track is returned as is. Long programmes go through
    ``worker.mixdown`` instead, which does the same chunk by chunk.
    """
    meter = LoudnessMeter(sample_rate)
    meter.add(track)
    before = meter.integrated()
    if not math.isfinite(before):
        return track, Loudness(before, before, 0.0, False)
    gain_db = target_lufs - before
    limited = False
    out, after = track, before
    for _ in range(8):
        scaled = (track * 10 ** (gain_db / 20)).astype(np.float32)
        out = limit(scaled, sample_rate)
        limited = limited or out is not scaled
        check = LoudnessMeter(sample_rate)
        check.add(out)
        after = check.integrated()
        if abs(after - target_lufs) <= 0.2:
            break
        gain_db += target_lufs - after
    return out, Loudness(before, after, gain_db, limited)
