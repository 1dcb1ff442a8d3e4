"""The signal processing the engine needs: silence detection, stretching, cutting to length.

All in-process numpy and Rubber Band (through pedalboard); nothing here starts a
process. Functions are synchronous and CPU-bound; the engine runs them off the
event loop.
"""

from __future__ import annotations

import numpy as np
import pedalboard

from worker.assembly import Samples

FRAME_SECONDS = 0.010
_FLOOR_DBFS = -80.0


def speech_bounds(x: Samples, sample_rate: int, threshold_db: float) -> tuple[int, int] | None:
    """[first, end) samples of the non-silent part of `x`, frame-accurate, or None.

    A 10 ms frame is speech when its RMS is within `threshold_db` of the loudest
    frame and above -80 dBFS.
    """
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    n = len(x) // frame
    if len(x) == 0:
        return None
    # The ragged tail becomes a frame of its own.
    padded = np.zeros((n + (1 if len(x) % frame else 0)) * frame, dtype=np.float32)
    padded[: len(x)] = x
    frames = padded.reshape(-1, frame)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    peak = float(rms.max())
    threshold = max(peak * 10.0 ** (threshold_db / 20.0), 10.0 ** (_FLOOR_DBFS / 20.0))
    loud = np.flatnonzero(rms > threshold)
    if len(loud) == 0:
        return None
    return int(loud[0]) * frame, min(len(x), (int(loud[-1]) + 1) * frame)


def stretch(x: Samples, sample_rate: int, ratio: float) -> Samples:
    """Rubber Band time-stretch: ratio > 1 shortens `x` to about len(x) / ratio samples.

    Pitch and formants are preserved. pedalboard's `stretch_factor` is a speed factor
    (2.0 halves the length), checked by the tests.
    """
    if len(x) == 0 or ratio == 1.0:
        return x.copy()
    out = pedalboard.time_stretch(
        x.reshape(1, -1), float(sample_rate), stretch_factor=float(ratio), high_quality=True
    )
    return np.ascontiguousarray(out[0], dtype=np.float32)


def fit_length(x: Samples, n: int) -> Samples:
    """Cut or zero-pad `x` to exactly `n` samples."""
    if len(x) >= n:
        return x[:n].copy()
    out = np.zeros(n, dtype=np.float32)
    out[: len(x)] = x
    return out
